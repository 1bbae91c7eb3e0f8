# The stream-socket and epoll calls of the TCP loops (resp.pyx, bulk.pyx); only
# what it calls. The datagram calls and ppoll live in netapi.pxd.
from libc.stdint cimport uint32_t, uint64_t


cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64

    cdef struct epoll_event:
        uint32_t events
        epoll_data_t data

    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    enum:
        EPOLLIN
        EPOLLOUT
        EPOLLERR
        EPOLLHUP
        EPOLL_CTL_ADD
        EPOLL_CTL_MOD
        EPOLL_CTL_DEL
        EPOLL_CLOEXEC


cdef extern from "<sys/socket.h>" nogil:
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    int setsockopt(int fd, int level, int name, const void *value, unsigned int length)
    int shutdown(int fd, int how)
    enum:
        MSG_NOSIGNAL
        SHUT_RDWR
        SOL_SOCKET
        SO_RCVLOWAT


cdef extern from "<unistd.h>" nogil:
    int close(int fd)
