# The clock, the sleep policy and the latency histogram geometry of every
# loop in pktbench._engine, so all its histograms are the same 4096 buckets
# pktbench/histogram.py reads.
#
# Included once, by _engine.pyx, which must first cimport uint64_t,
# timespec, clock_gettime, CLOCK_MONOTONIC, pollfd, ppoll, POLLIN and
# __builtin_clzll (see ext/netapi.pxd). Changing the geometry here means
# changing pktbench/histogram.py too.

# Log-linear histogram: 2**HIST_SUB_BITS linear sub-buckets per power of two,
# so a bucket is at most 1/128 of its value wide (< 1% relative error); values
# are ns and clamp at 2**38 ns (~275 s), beyond the 60 s the design needs.
cdef enum:
    HIST_SUB_BITS = 7
    HIST_MAX_SHIFT = 30
    HIST_BUCKETS = (HIST_MAX_SHIFT + 2) << HIST_SUB_BITS

cdef uint64_t HIST_MAX_VALUE = (<uint64_t>1 << (HIST_MAX_SHIFT + HIST_SUB_BITS + 1)) - 1

# Spin instead of sleeping when the next send is this close: a sleep on this
# class of VM wakes up 50-80 us late, which would skew the schedule.
cdef enum:
    SPIN_MARGIN_NS = 120000


cdef inline uint64_t now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec


cdef inline Py_ssize_t hist_index(uint64_t value) noexcept nogil:
    if value > HIST_MAX_VALUE:
        value = HIST_MAX_VALUE
    cdef int shift = 63 - __builtin_clzll(value | 1) - HIST_SUB_BITS
    if shift < 0:
        shift = 0
    return (<Py_ssize_t>shift << HIST_SUB_BITS) + <Py_ssize_t>(value >> shift)


cdef inline void sleep_until(int fd, bint watch_fd, uint64_t deadline_ns) noexcept nogil:
    """Sleep until `deadline_ns` or until `fd` is readable (if watched).

    ppoll, not epoll_wait: its timeout has ns resolution, and an epoll fd is
    itself pollable, so one call serves a UDP socket and an epoll set alike.
    """
    cdef uint64_t now = now_ns()
    if deadline_ns <= now:
        return
    cdef uint64_t wait = deadline_ns - now
    cdef timespec ts
    ts.tv_sec = wait // 1000000000ULL
    ts.tv_nsec = wait % 1000000000ULL
    cdef pollfd pfd
    pfd.fd = fd
    pfd.events = POLLIN
    pfd.revents = 0
    ppoll(&pfd, 1 if watch_fd else 0, &ts, NULL)
