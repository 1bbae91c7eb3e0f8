# The TCP bulk pump: bytes on many streams from one thread. Included by
# _engine.pyx.

# --------------------------------------------------------------------------
# Bulk pump
# --------------------------------------------------------------------------

MAX_STREAMS = 1024

# Per-stream state (BulkPump.status): open, finished by the peer (EOF), or
# -errno of the call that failed.
cdef enum:
    S_OPEN = 0
    S_EOF = 1
    # writes on one ready socket before the next gets its turn: enough to
    # fill a socket buffer, few enough that no stream starves
    PUMP_WRITE_BURST = 16
    # A reader takes one read per ready stream per round and lets epoll
    # (level-triggered) bring it back, so every ready stream is read in
    # turn; the wake-up mark below already makes each read a large one.
    PUMP_READ_BURST = 1
    PUMP_DRAIN_CALLS = 64  # at a window edge: everything queued, within reason
    PUMP_MAX_WAIT_MS = 20
    # A receiving stream is woken only once it holds about LOWAT_HOLD_NS of
    # its own recent rate (SO_RCVLOWAT), at least LOWAT_MIN and at most
    # LOWAT_MAX bytes. Each wake-up costs the sending host a cross-CPU
    # interrupt; on loopback that host is the same machine and pays for it
    # in throughput. The mark follows the rate every LOWAT_TICK_NS, so a
    # stream that slows or stalls is read within a tick, and every window
    # edge reads what is held, so no byte is counted in the wrong window.
    LOWAT_HOLD_NS = 1000000
    LOWAT_TICK_NS = 10000000
    LOWAT_MIN = 16384
    LOWAT_MAX = 262144

PUMP_OPEN = S_OPEN
PUMP_EOF = S_EOF


cdef class BulkPump:
    """Moves bulk bytes on up to `capacity` TCP streams from the calling thread.

    Sending, every stream writes `buffer_bytes` at a time (zeros) as fast as
    its socket takes them; receiving, every stream reads and discards. One
    epoll set, level-triggered, MSG_DONTWAIT: a stream that would block waits
    for epoll, the others go on. `bytes` holds each stream's running byte
    count (`byte_counts`) and `status` PUMP_OPEN, PUMP_EOF or -errno; a stream that is not
    open is no longer watched. Streams may be added while `run` is pumping
    (from another thread). The pump never closes a caller's socket.
    """
    cdef int epfd
    cdef int capacity
    cdef int count        # changed by `add` only
    cdef int n_done       # changed by `run` only: the two may be on different threads
    cdef bint sending
    cdef Py_ssize_t buf_len
    cdef uint8_t *buf
    cdef int *fds
    cdef int *lowat        # each receiving stream's SO_RCVLOWAT (1: the default)
    cdef uint64_t *marked  # its byte count at the last tick
    cdef uint64_t tick_ns
    cdef uint64_t total     # bytes moved on every stream together
    cdef uint64_t limit     # `run` stops moving bytes once `total` reaches it
    cdef epoll_event *events
    cdef uint64_t[::1] b
    cdef int64_t[::1] s
    cdef readonly object byte_counts
    cdef readonly object status
    cdef readonly uint64_t first_ns

    def __cinit__(self, int capacity, bint sending, Py_ssize_t buffer_bytes):
        if capacity < 1 or capacity > MAX_STREAMS:
            raise ValueError(f"capacity must be 1..{MAX_STREAMS} (got {capacity})")
        if buffer_bytes < 1024:
            raise ValueError("buffer_bytes must be at least 1024")
        self.epfd = -1
        self.capacity = capacity
        self.sending = sending
        self.buf_len = buffer_bytes
        self.limit = 0xFFFFFFFFFFFFFFFF
        self.buf = <uint8_t *>calloc(<size_t>buffer_bytes, 1)
        self.fds = <int *>calloc(capacity, sizeof(int))
        self.lowat = <int *>calloc(capacity, sizeof(int))
        self.marked = <uint64_t *>calloc(capacity, sizeof(uint64_t))
        self.events = <epoll_event *>calloc(capacity, sizeof(epoll_event))
        if not (self.buf and self.fds and self.lowat and self.marked and self.events):
            raise MemoryError()
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, "epoll_create1 failed")
        self.byte_counts = np.zeros(capacity, dtype=np.uint64)
        self.status = np.zeros(capacity, dtype=np.int64)
        self.b = self.byte_counts
        self.s = self.status

    def __dealloc__(self):
        if self.epfd >= 0:
            close(self.epfd)
        free(self.buf)
        free(self.fds)
        free(self.lowat)
        free(self.marked)
        free(self.events)

    @property
    def streams(self):
        return self.count

    @property
    def open_streams(self):
        return self.count - self.n_done

    def add(self, int fd):
        """Pump a connected socket; returns its index, or -1 when full."""
        if self.count >= self.capacity:
            return -1
        cdef int i = self.count
        self.fds[i] = fd
        self.lowat[i] = 1
        self.marked[i] = 0
        cdef epoll_event ev
        ev.events = EPOLLOUT if self.sending else EPOLLIN
        ev.data.u32 = <uint32_t>i
        # The slot is complete before epoll can report it to the pumping thread.
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
            raise OSError(errno, "cannot watch the stream")
        self.count += 1
        return i

    @property
    def total_bytes(self):
        return self.total

    def run(self, uint64_t until_ns, uint64_t byte_limit=0xFFFFFFFFFFFFFFFF):
        """Pump until `until_ns`, until no stream is open, or until the
        streams together have moved `byte_limit` bytes (a rate cap: no call
        moves a byte past it).

        Returns 0 at `until_ns` or at the limit, 1 when every stream added
        is finished, or -errno of epoll.
        """
        cdef int rc
        self.limit = byte_limit
        with nogil:
            rc = self._run(until_ns)
        return rc

    cdef int _run(self, uint64_t until_ns) noexcept nogil:
        cdef uint64_t now
        cdef int got, k, timeout_ms
        cdef int max_wait_ms = PUMP_MAX_WAIT_MS if self.sending else LOWAT_TICK_NS // 1000000
        if self.tick_ns == 0:
            self.tick_ns = now_ns()
        while True:
            if self.count > 0 and self.n_done >= self.count:
                return 1
            now = now_ns()
            if not self.sending and now >= self.tick_ns + LOWAT_TICK_NS:
                self._retune(now)
            if now >= until_ns:
                if not self.sending:
                    self._collect_held()
                return 0
            if self.total >= self.limit:
                return 0
            timeout_ms = <int>((until_ns - now + 999999) // 1000000)
            if timeout_ms > max_wait_ms:
                timeout_ms = max_wait_ms
            got = epoll_wait(self.epfd, self.events, self.capacity, timeout_ms)
            if got < 0:
                if errno == EINTR:
                    continue
                return -errno
            for k in range(got):
                self._move(<int>self.events[k].data.u32,
                           PUMP_WRITE_BURST if self.sending else PUMP_READ_BURST)

    # i < count by construction
    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef void _retune(self, uint64_t now) noexcept nogil:
        """Set each receiving stream's wake-up mark from its rate since the last tick."""
        cdef int i, mark
        cdef uint64_t moved, target
        cdef uint64_t elapsed = now - self.tick_ns
        for i in range(self.count):
            if self.s[i] != S_OPEN:
                continue
            moved = self.b[i] - self.marked[i]
            self.marked[i] = self.b[i]
            target = moved * <uint64_t>LOWAT_HOLD_NS // elapsed
            # powers of two, so a steady rate does not move the mark every tick
            if target < LOWAT_MIN:
                mark = 1
            elif target >= LOWAT_MAX:
                mark = LOWAT_MAX
            else:
                mark = 1 << (63 - __builtin_clzll(target))
            if mark != self.lowat[i]:
                # lowering it wakes the reader at once if enough is queued
                if setsockopt(self.fds[i], SOL_SOCKET, SO_RCVLOWAT, &mark, sizeof(int)) == 0:
                    self.lowat[i] = mark
        self.tick_ns = now

    cdef void _collect_held(self) noexcept nogil:
        """Read what streams hold below their wake-up mark (a window edge)."""
        cdef int i
        for i in range(self.count):
            if self.lowat[i] > 1:
                self._move(i, PUMP_DRAIN_CALLS)

    # i comes from an epoll event this object registered, always < count
    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef void _move(self, int i, int max_calls) noexcept nogil:
        """Write (or read) on stream i until its socket would block, or max_calls are made."""
        cdef ssize_t moved
        cdef int calls
        cdef size_t want
        cdef int fd = self.fds[i]
        if self.s[i] != S_OPEN:
            return
        for calls in range(max_calls):
            if self.total >= self.limit:
                return
            want = <size_t>self.buf_len
            if self.limit - self.total < want:
                want = <size_t>(self.limit - self.total)
            if self.sending:
                moved = send(fd, self.buf, want, MSG_DONTWAIT | MSG_NOSIGNAL)
            else:
                moved = recv(fd, self.buf, want, MSG_DONTWAIT)
            if moved > 0:
                if self.first_ns == 0:
                    self.first_ns = now_ns()
                self.b[i] += <uint64_t>moved
                self.total += <uint64_t>moved
                if <size_t>moved < want:
                    return  # the socket buffer is full (or drained): epoll says when to go on
                continue
            if moved < 0 and (errno == EAGAIN or errno == EINTR):
                return
            self.s[i] = S_EOF if moved == 0 else -errno
            epoll_ctl(self.epfd, EPOLL_CTL_DEL, fd, NULL)
            self.n_done += 1
            return
