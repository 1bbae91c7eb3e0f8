# Only the POSIX/Linux calls the engine makes; nothing else is declared.
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from posix.time cimport timespec


cdef extern from "<sys/uio.h>" nogil:
    cdef struct iovec:
        void *iov_base
        size_t iov_len


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t

    cdef struct sockaddr_storage:
        unsigned short ss_family

    cdef struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags

    cdef struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len

    cdef struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type

    int sendmmsg(int fd, mmsghdr *msgvec, unsigned int vlen, int flags)
    int recvmmsg(int fd, mmsghdr *msgvec, unsigned int vlen, int flags, timespec *timeout)
    cmsghdr *CMSG_FIRSTHDR(msghdr *msg)
    cmsghdr *CMSG_NXTHDR(msghdr *msg, cmsghdr *cmsg)
    unsigned char *CMSG_DATA(cmsghdr *cmsg)
    size_t CMSG_SPACE(size_t length)
    size_t CMSG_LEN(size_t length)
    enum:
        MSG_DONTWAIT
        MSG_WAITFORONE
        MSG_TRUNC
        SOL_SOCKET
        SO_RXQ_OVFL
        AF_INET
        AF_INET6


cdef extern from "<poll.h>" nogil:
    ctypedef unsigned long nfds_t
    cdef struct pollfd:
        int fd
        short events
        short revents
    enum:
        POLLIN
    int ppoll(pollfd *fds, nfds_t nfds, const timespec *timeout, const void *sigmask)


cdef extern from "<sys/prctl.h>" nogil:
    enum:
        PR_SET_TIMERSLACK
    int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4,
              unsigned long arg5)


cdef extern from "<endian.h>" nogil:
    uint64_t htobe64(uint64_t x)
    uint64_t be64toh(uint64_t x)
    uint16_t htobe16(uint16_t x)
    uint16_t be16toh(uint16_t x)


cdef extern from *:
    int __builtin_clzll(unsigned long long x) nogil
