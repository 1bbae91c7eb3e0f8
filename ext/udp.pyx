# The UDP loops: the paced sender (which also collects responses for
# request/response) and the responder/sink. Included by _engine.pyx, which
# holds the cimports, the wire layout and the clock.

# A "blocking" receive that returns EAGAIN sooner than this did not block:
# the socket is non-blocking (someone set a Python timeout on it), so fall
# back to ppoll instead of spinning.
cdef enum:
    NONBLOCKING_NS = 1000000
    CTRL_BYTES = 128
    # UDP GSO/GRO (udp(7), Linux 4.18 / 5.0): the option numbers, so the
    # build does not depend on the C library's headers knowing them.
    SOL_UDP_LEVEL = 17
    UDP_SEGMENT_OPT = 103
    UDP_GRO_OPT = 104
    # GSO buffers one sendmmsg carries: enough to amortise the call when a
    # late wake-up or an unpaced step has many datagrams due.
    GSO_BUFFERS = 8
    # With UDP_GRO one read may return a coalesced train of up to 64 KiB.
    GRO_SLOT = 65536
    # SO_TIMESTAMPNS_NEW (Linux 5.1) stamps with a 64-bit timespec on every
    # architecture; the old option (35) is the fallback. The control message
    # type equals the option number.
    SO_TIMESTAMPNS_NEW_OPT = 64
    SO_TIMESTAMPNS_OLD_OPT = 35

# Counter enums (S_*, R_*) and their names come from _wire.pxi.



cdef inline uint64_t load_be64(const uint8_t *p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return be64toh(v)


cdef inline void store_be64(uint8_t *p, uint64_t v) noexcept nogil:
    v = htobe64(v)
    memcpy(p, &v, 8)


cdef inline uint16_t load_be16(const uint8_t *p) noexcept nogil:
    cdef uint16_t v
    memcpy(&v, p, 2)
    return be16toh(v)


cdef inline uint32_t rxq_overflow(msghdr *msg) noexcept nogil:
    """The socket's cumulative receive-queue drop count (SO_RXQ_OVFL), or 0."""
    cdef cmsghdr *cm = CMSG_FIRSTHDR(msg)
    cdef uint32_t dropped = 0
    while cm != NULL:
        if cm.cmsg_level == SOL_SOCKET and cm.cmsg_type == SO_RXQ_OVFL:
            memcpy(&dropped, CMSG_DATA(cm), 4)
        cm = CMSG_NXTHDR(msg, cm)
    return dropped


cdef inline uint64_t kernel_rx_realtime_ns(msghdr *msg) noexcept nogil:
    """The kernel's CLOCK_REALTIME arrival stamp of a datagram (SO_TIMESTAMPNS), or 0."""
    cdef cmsghdr *cm = CMSG_FIRSTHDR(msg)
    cdef int64_t wide[2]
    cdef int32_t narrow[2]
    while cm != NULL:
        if cm.cmsg_level == SOL_SOCKET and (cm.cmsg_type == SO_TIMESTAMPNS_NEW_OPT
                                            or cm.cmsg_type == SO_TIMESTAMPNS_OLD_OPT):
            if cm.cmsg_len >= CMSG_LEN(16):
                memcpy(&wide[0], CMSG_DATA(cm), 16)
                return <uint64_t>wide[0] * 1000000000ULL + <uint64_t>wide[1]
            if cm.cmsg_len >= CMSG_LEN(8):  # 32-bit time_t of the old option
                memcpy(&narrow[0], CMSG_DATA(cm), 8)
                return <uint64_t>narrow[0] * 1000000000ULL + <uint64_t>narrow[1]
        cm = CMSG_NXTHDR(msg, cm)
    return 0


cdef inline int gro_segment_size(msghdr *msg) noexcept nogil:
    """The segment size of a coalesced read (the UDP_GRO message), or 0."""
    cdef cmsghdr *cm = CMSG_FIRSTHDR(msg)
    cdef int size = 0
    while cm != NULL:
        if cm.cmsg_level == SOL_UDP_LEVEL and cm.cmsg_type == UDP_GRO_OPT:
            memcpy(&size, CMSG_DATA(cm), sizeof(int))
        cm = CMSG_NXTHDR(msg, cm)
    return size


cdef inline void set_gso_control(msghdr *msg, uint8_t *ctrl, uint16_t segment) noexcept nogil:
    """Attach UDP_SEGMENT = `segment` to a message (its control buffer is `ctrl`)."""
    msg.msg_control = ctrl
    msg.msg_controllen = CMSG_SPACE(sizeof(uint16_t))
    cdef cmsghdr *cm = CMSG_FIRSTHDR(msg)
    cm.cmsg_level = SOL_UDP_LEVEL
    cm.cmsg_type = UDP_SEGMENT_OPT
    cm.cmsg_len = CMSG_LEN(sizeof(uint16_t))
    memcpy(CMSG_DATA(cm), &segment, sizeof(uint16_t))


cdef inline bint gso_unusable(int err) noexcept nogil:
    """A send error that says this path cannot segment, not that the peer failed:
    EIO (the device has no checksum offload), EINVAL or EMSGSIZE (a segment over
    the path MTU, or a socket without UDP checksums)."""
    return err == EIO or err == EINVAL or err == EMSGSIZE


cdef class _SeqWindow:
    """Which of the last `size` sequence numbers were seen; flat memory.

    A sequence number is final once the window has moved past it; final
    misses are counted as lost, in runs (RFC 3357 loss episodes).
    """
    cdef uint8_t *bits
    cdef uint64_t mask
    cdef uint64_t final_end      # every seq below this is final
    cdef uint64_t run_length

    def __cinit__(self, uint64_t size_bits):
        cdef uint64_t size = 1
        while size < size_bits:
            size <<= 1
        self.mask = size - 1
        self.bits = <uint8_t *>calloc(size // 8 + 1, 1)
        if self.bits == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.bits)

    cdef inline uint64_t size(self) noexcept nogil:
        return self.mask + 1

    cdef void reset(self) noexcept nogil:
        memset(self.bits, 0, (self.mask + 1) // 8 + 1)
        self.final_end = 0
        self.run_length = 0

    cdef inline bint test(self, uint64_t seq) noexcept nogil:
        cdef uint64_t slot = seq & self.mask
        return (self.bits[slot >> 3] >> (slot & 7)) & 1

    cdef inline void set(self, uint64_t seq) noexcept nogil:
        cdef uint64_t slot = seq & self.mask
        self.bits[slot >> 3] |= <uint8_t>(1 << (slot & 7))

    cdef inline void clear(self, uint64_t seq) noexcept nogil:
        cdef uint64_t slot = seq & self.mask
        self.bits[slot >> 3] &= <uint8_t>~(1 << (slot & 7))

    cdef void finalize_to(self, uint64_t end, uint64_t *counters, int lost,
                          int episodes, int max_run) noexcept nogil:
        """Count losses in [final_end, end) and clear those slots for reuse.

        Work is bounded by the window, not by the range: past one window's
        worth nothing can have been recorded, so the rest is one run of
        misses, counted at once (a peer's seq may jump by 2^63)."""
        cdef uint64_t stop = end
        cdef uint64_t gap
        if end - self.final_end > self.mask + 1:
            stop = self.final_end + self.mask + 1
        while self.final_end < stop:
            if self.test(self.final_end):
                self.run_length = 0
            else:
                counters[lost] += 1
                if self.run_length == 0:
                    counters[episodes] += 1
                self.run_length += 1
                if self.run_length > counters[max_run]:
                    counters[max_run] = self.run_length
            self.clear(self.final_end)
            self.final_end += 1
        if self.final_end < end:
            gap = end - self.final_end
            counters[lost] += gap
            if self.run_length == 0:
                counters[episodes] += 1
            self.run_length += gap
            if self.run_length > counters[max_run]:
                counters[max_run] = self.run_length
            self.final_end = end


cdef class PacedSender:
    """Open-loop paced UDP sender on a connected socket.

    Packet i of a phase is due at t0 + i * period. Sends go out in sendmmsg
    batches of whatever is due, so a late wake-up is caught up at once and
    the average rate stays exact. When replies are expected, responses are
    read between sends and their latency is measured from the scheduled send
    time (no coordinated omission) and from the actual send time.

    With `gso_segments` > 1, datagrams due together leave as UDP_SEGMENT
    buffers of up to that many equal datagrams (each with its own header),
    several buffers a sendmmsg; a send that fails with EIO or EINVAL turns
    GSO off for good and is retried one datagram per message. `burst` > 1
    holds a paced send until that many datagrams are due (or the phase's
    last ones are). `gro` reads replies coalesced (the socket has UDP_GRO).
    """
    cdef int fd
    cdef int batch
    cdef int cap
    cdef int burst_n
    cdef int gso_segs
    cdef mmsghdr *gso_msgs
    cdef iovec *gso_iov
    cdef uint8_t *gso_ctrl
    cdef readonly uint64_t gso_buffers
    cdef readonly uint64_t gso_datagrams
    cdef readonly int gso_errno
    cdef readonly bint gro
    cdef readonly uint64_t gro_reads
    cdef Py_ssize_t size
    cdef uint8_t *tx_buf
    cdef mmsghdr *tx_msgs
    cdef iovec *tx_iov
    cdef Py_ssize_t rx_slot
    cdef uint8_t *rx_buf
    cdef mmsghdr *rx_msgs
    cdef iovec *rx_iov
    cdef uint8_t *rx_ctrl
    cdef double period_ns
    cdef uint64_t t0_ns
    cdef uint64_t next_seq
    cdef uint64_t limit
    cdef uint64_t token
    cdef uint64_t timeout_ns
    cdef bint expect_replies
    cdef bint busy_poll
    cdef bint warmup
    cdef uint64_t max_outstanding
    cdef uint64_t last_send_ns
    cdef _SeqWindow window
    cdef uint32_t *reply_ring    # per seq slot: 0 unanswered, else scheduled latency ns + 1
    cdef uint32_t *lag_ring      # per seq slot: actual send time minus scheduled, ns
    cdef uint64_t spin_ns        # the last stretch before a due time is spun, not slept
    cdef bint lazy_reads         # kernel-stamped replies, read at the next send's wake-up
    cdef uint64_t[::1] c
    cdef Meter meter
    cdef readonly object counters
    cdef readonly object latency_hist
    cdef readonly object actual_latency_hist
    cdef readonly object send_lag_hist

    def __cinit__(self, int fd, bytes template, *, double rate_pps, bint expect_replies,
                  bint busy_poll=False, double timeout_s=1.0, int batch=64,
                  uint64_t max_outstanding=0, int gso_segments=0, int burst=1,
                  bint gro=False, bint keep_replies=False, bint spin=True,
                  bint kernel_timestamps=False):
        if len(template) < WIRE_HEADER_SIZE:
            raise ValueError("template shorter than the header")
        if batch < 1 or batch > 1024:
            raise ValueError("batch must be 1..1024")
        if gso_segments < 0 or gso_segments > 64:
            raise ValueError("gso_segments must be 0..64")
        if gso_segments > 1 and gso_segments * len(template) > 65507:
            raise ValueError("gso_segments * datagram size must fit in one UDP payload")
        if burst < 1 or burst > 4096:
            raise ValueError("burst must be 1..4096")
        self.fd = fd
        self.batch = batch
        self.size = len(template)
        self.gso_segs = gso_segments if gso_segments > 1 else 0
        self.cap = batch
        if self.gso_segs and GSO_BUFFERS * self.gso_segs > self.cap:
            self.cap = GSO_BUFFERS * self.gso_segs
        self.burst_n = burst if burst < self.cap else self.cap
        self.gro = gro
        self.period_ns = 1e9 / rate_pps if rate_pps > 0 else 0.0
        self.expect_replies = expect_replies
        self.busy_poll = busy_poll
        self.max_outstanding = max_outstanding if expect_replies else 0
        self.timeout_ns = <uint64_t>(timeout_s * 1e9)
        self.token = load_be64(<const uint8_t *><const char *>template + WIRE_OFF_TOKEN)
        # Datagrams sit back to back, so a GSO buffer is a run of them.
        self.tx_buf = <uint8_t *>calloc(self.cap, self.size)
        self.tx_msgs = <mmsghdr *>calloc(batch, sizeof(mmsghdr))
        self.tx_iov = <iovec *>calloc(batch, sizeof(iovec))
        self.gso_msgs = <mmsghdr *>calloc(GSO_BUFFERS, sizeof(mmsghdr))
        self.gso_iov = <iovec *>calloc(GSO_BUFFERS, sizeof(iovec))
        self.gso_ctrl = <uint8_t *>calloc(GSO_BUFFERS, CTRL_BYTES)
        # Replies are never longer than requests; one spare byte shows
        # truncation. A coalesced read needs room for a whole train.
        self.rx_slot = GRO_SLOT if gro else self.size + 1
        self.rx_buf = <uint8_t *>calloc(batch, self.rx_slot)
        self.rx_msgs = <mmsghdr *>calloc(batch, sizeof(mmsghdr))
        self.rx_iov = <iovec *>calloc(batch, sizeof(iovec))
        self.rx_ctrl = <uint8_t *>calloc(batch, CTRL_BYTES)
        if not (self.tx_buf and self.tx_msgs and self.tx_iov and self.rx_buf and self.rx_msgs
                and self.rx_iov and self.rx_ctrl and self.gso_msgs and self.gso_iov
                and self.gso_ctrl):
            raise MemoryError()
        cdef int i
        for i in range(self.cap):
            memcpy(self.tx_buf + i * self.size, <const char *>template, self.size)
        for i in range(GSO_BUFFERS):
            if self.gso_segs:
                self.gso_iov[i].iov_base = self.tx_buf + i * self.gso_segs * self.size
                self.gso_msgs[i].msg_hdr.msg_iov = &self.gso_iov[i]
                self.gso_msgs[i].msg_hdr.msg_iovlen = 1
                set_gso_control(&self.gso_msgs[i].msg_hdr, self.gso_ctrl + i * CTRL_BYTES,
                                <uint16_t>self.size)
        for i in range(batch):
            self.tx_iov[i].iov_base = self.tx_buf + i * self.size
            self.tx_iov[i].iov_len = self.size
            self.tx_msgs[i].msg_hdr.msg_iov = &self.tx_iov[i]
            self.tx_msgs[i].msg_hdr.msg_iovlen = 1
            self.rx_iov[i].iov_base = self.rx_buf + i * self.rx_slot
            self.rx_iov[i].iov_len = self.rx_slot
            self.rx_msgs[i].msg_hdr.msg_iov = &self.rx_iov[i]
            self.rx_msgs[i].msg_hdr.msg_iovlen = 1
            self.rx_msgs[i].msg_hdr.msg_control = self.rx_ctrl + i * CTRL_BYTES
        # The window must outlive the timeout at this rate, or a slow reply
        # would land in a recycled slot.
        cdef double in_flight = 2.0 * timeout_s * (rate_pps if rate_pps > 0 else 2e6)
        if in_flight > 67108864.0:
            in_flight = 67108864.0
        self.window = _SeqWindow(<uint64_t>in_flight if in_flight > 65536.0 else 65536)
        # Spinning the last 120 us keeps send lag in the tens of ns; sleeping
        # all the way costs the kernel's wake-up latency instead, and a tenth
        # of the CPU at low rates (a steady probe that runs for days).
        self.spin_ns = SPIN_MARGIN_NS if spin else 0
        # A sleeping sender that timestamps each reply when it wakes for it
        # wakes twice per request; with the kernel's arrival stamp the reply
        # waits in the socket until the next send's wake-up, and its latency
        # stays that of the path (a steady probe at 1,000 pps halves its
        # wake-ups). Only when the kernel takes the option.
        cdef int on = 1
        self.lazy_reads = False
        if kernel_timestamps and expect_replies and not spin and not busy_poll:
            self.lazy_reads = (
                setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS_NEW_OPT, &on, sizeof(int)) == 0
                or setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS_OLD_OPT, &on, sizeof(int)) == 0)
        if keep_replies:
            if timeout_s > 4.0:
                raise ValueError("keep_replies holds latencies up to 4 s: timeout_s must be <= 4")
            self.reply_ring = <uint32_t *>calloc(self.window.size(), sizeof(uint32_t))
            self.lag_ring = <uint32_t *>calloc(self.window.size(), sizeof(uint32_t))
            if self.reply_ring == NULL or self.lag_ring == NULL:
                raise MemoryError()
        self.counters = np.zeros(S_COUNTERS, dtype=np.uint64)
        self.latency_hist = np.zeros(HIST_BUCKETS, dtype=np.uint64)
        self.actual_latency_hist = np.zeros(HIST_BUCKETS, dtype=np.uint64)
        self.send_lag_hist = np.zeros(HIST_BUCKETS, dtype=np.uint64)
        self.c = self.counters
        cdef uint64_t[::1] h
        self.meter.c = &self.c[0]
        self.meter.n_counters = S_COUNTERS
        h = self.latency_hist
        self.meter.h_sched = &h[0]
        h = self.actual_latency_hist
        self.meter.h_actual = &h[0]
        h = self.send_lag_hist
        self.meter.h_lag = &h[0]

    def __dealloc__(self):
        free(self.tx_buf)
        free(self.tx_msgs)
        free(self.tx_iov)
        free(self.gso_msgs)
        free(self.gso_iov)
        free(self.gso_ctrl)
        free(self.rx_buf)
        free(self.rx_msgs)
        free(self.rx_iov)
        free(self.rx_ctrl)
        free(self.reply_ring)
        free(self.lag_ring)

    @property
    def gso_segments(self):
        """Datagrams per GSO buffer at most; 0 once GSO is off (or never on)."""
        return self.gso_segs

    @property
    def burst(self):
        """Datagrams a paced send waits for (1 = each as it falls due)."""
        return self.burst_n

    @property
    def kernel_timestamps(self):
        """Replies carry the kernel's arrival stamp and are read at send wake-ups."""
        return self.lazy_reads

    def begin(self, uint64_t t0_ns, uint64_t limit, bint warmup):
        """Start a phase: seq restarts at 0, due at t0_ns; counters cleared."""
        self.t0_ns = t0_ns
        self.next_seq = 0
        self.limit = limit
        self.warmup = warmup
        self.window.reset()
        meter_begin(&self.meter)
        cdef int i
        for i in range(self.cap):
            self.tx_buf[i * self.size + WIRE_OFF_FLAGS] = WIRE_FLAG_WARMUP if warmup else 0

    @property
    def next_due_ns(self):
        """When the next packet of this phase is scheduled."""
        return self.due_ns(self.next_seq)

    @property
    def sent(self):
        return self.next_seq

    @property
    def window_size(self):
        return self.window.size()

    def replies(self, uint64_t lo, uint64_t hi):
        """Per request lo..hi-1 of this phase (keep_replies only): 0 if it has
        no reply (yet), else its latency from the scheduled send time in ns
        plus 1, as a uint32 array. A slot is reused one window later, so only
        requests within the last window_size sent can be read; a reply that
        came after timeout_s is late and never lands here."""
        return self._ring_slice(self.reply_ring, lo, hi)

    def send_lags(self, uint64_t lo, uint64_t hi):
        """Per request lo..hi-1 (keep_replies only): how late it left against
        its schedule, ns (at most 2^32 - 1), as a uint32 array; the same
        window rule as `replies`."""
        return self._ring_slice(self.lag_ring, lo, hi)

    cdef object _ring_slice(self, uint32_t *ring, uint64_t lo, uint64_t hi):
        if ring == NULL:
            raise ValueError("this sender was made without keep_replies")
        if hi < lo or hi > self.next_seq or self.next_seq - lo > self.window.mask + 1:
            raise ValueError(f"requests {lo}..{hi} are not all within the last window "
                             f"({self.next_seq} sent, window {self.window.mask + 1})")
        out = np.empty(hi - lo, dtype=np.uint32)
        cdef uint32_t[::1] view = out
        cdef uint64_t seq
        for seq in range(lo, hi):
            view[seq - lo] = ring[seq & self.window.mask]
        return out

    cdef inline uint64_t due_ns(self, uint64_t seq) noexcept nogil:
        return self.t0_ns + <uint64_t>(<double>seq * self.period_ns)

    def run(self, uint64_t until_ns, bint send=True):
        """Send what is due and read replies until `until_ns` or the limit.

        Returns 0, or -errno for a socket error that is not a counter. While
        `send` is false only replies are read, and it returns early once
        every request sent has been answered or timed out.
        """
        cdef int rc
        with nogil:
            prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
            rc = self._run(until_ns, send)
        return rc

    # Hot loop: indices are enum counters, batch slots and hist_index(), in
    # range by construction; the checks were on while the tests were written.
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.initializedcheck(False)
    @cython.cdivision(True)
    cdef int _run(self, uint64_t until_ns, bint send) noexcept nogil:
        cdef uint64_t now, due, wake
        cdef uint64_t n_due, left, ahead
        cdef int n, sent, rc
        cdef bint window_full
        # A blocking closed loop has nothing to read until its reply is due:
        # a non-blocking read after each send would only fail, one wasted
        # syscall per round trip on top of netperf's two.
        cdef bint waits_for_replies = self.max_outstanding > 0 and not self.busy_poll
        # Without the spin, reads wait for ppoll to say a reply is there: a
        # read right after a send, or after a read that emptied the socket,
        # would only fail, and at a low rate those are most of the syscalls.
        cdef bint sleepy = self.spin_ns == 0 and not self.busy_poll
        cdef bint just_sent = False
        cdef bint woke = True  # lazy reads: what arrived while asleep is read first
        while True:
            if woke and self.lazy_reads:
                woke = False
                rc = self._receive(MSG_DONTWAIT)
                if rc < 0:
                    return rc
                if rc == self.batch:
                    woke = True  # more may be queued
                    continue
            now = now_ns()
            if now >= until_ns:
                return 0
            window_full = False
            if send and self.next_seq < self.limit:
                if self.period_ns > 0:
                    n_due = <uint64_t>((<double>(now - self.t0_ns)) / self.period_ns) + 1 \
                        if now >= self.t0_ns else 0
                    n_due = n_due - self.next_seq if n_due > self.next_seq else 0
                else:
                    n_due = self.cap
                left = self.limit - self.next_seq
                if n_due > left:
                    n_due = left
                if n_due < <uint64_t>self.burst_n and n_due < left and self.period_ns > 0:
                    n_due = 0  # a burst goes out whole: wait for its last datagram
                if self.max_outstanding > 0 and n_due > 0:
                    n_due = self._window_room(now, n_due)
                    window_full = n_due == 0
                if n_due > 0:
                    n = <int>n_due if n_due < <uint64_t>self.cap else self.cap
                    sent = self._send(n, now)
                    if sent < 0:
                        return sent
                    if self.expect_replies and not waits_for_replies and not sleepy:
                        rc = self._receive(MSG_DONTWAIT)
                        if rc < 0:
                            return rc
                    just_sent = True
                    continue
            elif not self.expect_replies:
                return 0
            elif not send and self.c[S_RECEIVED] >= self.next_seq:
                return 0
            if self.expect_replies and not (window_full and waits_for_replies) \
                    and not (sleepy and just_sent):
                rc = self._receive(MSG_DONTWAIT)
                if rc < 0:
                    return rc
                if rc > 0 and not (sleepy and send and rc < self.batch):
                    continue
            just_sent = False
            if self.busy_poll:
                continue
            if window_full:
                # Closed loop: sleep until the reply arrives, or until the
                # timeout frees the slot of a request whose reply was lost.
                wake = self.last_send_ns + self.timeout_ns
                if wake > until_ns:
                    wake = until_ns
                rc = self._receive(MSG_WAITFORONE)
                if rc < 0:
                    return rc
                if rc == 0 and now_ns() < now + NONBLOCKING_NS:
                    sleep_until(self.fd, True, wake)  # the socket does not block
                continue
            if send and self.next_seq < self.limit:
                ahead = <uint64_t>self.burst_n - 1
                if ahead > self.limit - self.next_seq - 1:
                    ahead = self.limit - self.next_seq - 1
                due = self.due_ns(self.next_seq + ahead)
            else:
                due = until_ns
            if due > until_ns:
                due = until_ns
            now = now_ns()
            if due > now + self.spin_ns:
                # Lazy reads leave the socket unwatched while there is more to
                # send; a drain still wakes for each reply so it can end early.
                sleep_until(self.fd, self.expect_replies and not (
                    self.lazy_reads and send and self.next_seq < self.limit),
                    due - self.spin_ns)
                woke = True

    # Hot loop: indices are enum counters, batch slots and hist_index(), in
    # range by construction; the checks were on while the tests were written.
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.initializedcheck(False)
    @cython.cdivision(True)
    cdef inline uint64_t _window_room(self, uint64_t now, uint64_t n_due) noexcept nogil:
        """Closed-loop cap: at most max_outstanding requests unanswered.

        A request unanswered for longer than the timeout no longer holds its
        slot (it will count as lost), so a lost reply cannot stall the loop.
        """
        cdef uint64_t answered = self.c[S_RECEIVED] + self.c[S_LATE]
        cdef uint64_t in_flight = self.next_seq - answered if self.next_seq > answered else 0
        if in_flight >= self.max_outstanding:
            if now - self.last_send_ns < self.timeout_ns:
                return 0
            return 1
        if n_due > self.max_outstanding - in_flight:
            return self.max_outstanding - in_flight
        return n_due

    # Hot loop: indices are enum counters, batch slots and hist_index(), in
    # range by construction; the checks were on while the tests were written.
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.initializedcheck(False)
    @cython.cdivision(True)
    cdef int _send(self, int n, uint64_t now) noexcept nogil:
        cdef int i
        cdef uint8_t *pkt
        cdef uint64_t seq, lag, due
        for i in range(n):
            pkt = self.tx_buf + i * self.size
            store_be64(pkt + WIRE_OFF_SEQ, self.next_seq + i)
            store_be64(pkt + WIRE_OFF_SEND_NS, now)
        cdef int sent = 0
        cdef bint plain = True
        if self.gso_segs and n > 1:
            sent = self._send_gso(n)
            self.c[S_SEND_CALLS] += 1
            plain = False
            if sent < 0 and gso_unusable(errno):
                # This path cannot segment: per-datagram from here on.
                self.gso_errno = errno
                self.gso_segs = 0
                self.cap = self.batch
                if self.burst_n > self.cap:
                    self.burst_n = self.cap
                if n > self.batch:
                    n = self.batch
                plain = True
        if plain:
            sent = sendmmsg(self.fd, self.tx_msgs, n, MSG_DONTWAIT)
            self.c[S_SEND_CALLS] += 1
        if sent < 0:
            if errno == EAGAIN:
                self.c[S_EAGAIN] += 1
                return 0
            if errno == ENOBUFS:
                self.c[S_ENOBUFS] += 1
                return 0
            if errno == EINTR:
                return 0
            return -errno
        for i in range(sent):
            seq = self.next_seq + i
            if self.reply_ring != NULL:
                self.reply_ring[seq & self.window.mask] = 0
            if self.expect_replies:
                if seq > self.window.mask:
                    self.window.finalize_to(seq - self.window.mask, &self.c[0], S_LOST,
                                            S_LOSS_EPISODES, S_LOSS_MAX_RUN)
            if self.period_ns > 0:
                due = self.due_ns(seq)
                lag = now - due if now > due else 0
                meter_lag(&self.meter, lag)
                if self.lag_ring != NULL:
                    self.lag_ring[seq & self.window.mask] = \
                        <uint32_t>(lag if lag < <uint64_t>0xFFFFFFFF else 0xFFFFFFFF)
        self.next_seq += sent
        self.last_send_ns = now
        self.c[S_SENT] += sent
        self.c[S_SENT_BYTES] += <uint64_t>sent * <uint64_t>self.size
        return sent

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.initializedcheck(False)
    @cython.cdivision(True)
    cdef int _send_gso(self, int n) noexcept nogil:
        """Datagrams 0..n-1 of tx_buf as GSO buffers; how many went, or -1 (errno)."""
        cdef int m = (n + self.gso_segs - 1) // self.gso_segs
        cdef int j, k
        for j in range(m):
            k = n - j * self.gso_segs
            if k > self.gso_segs:
                k = self.gso_segs
            self.gso_iov[j].iov_len = <size_t>k * <size_t>self.size
        cdef int r = sendmmsg(self.fd, self.gso_msgs, m, MSG_DONTWAIT)
        if r < 0:
            return -1
        self.gso_buffers += <uint64_t>r
        # Only the last buffer can be short, so r < m buffers are all full.
        k = n if r == m else r * self.gso_segs
        self.gso_datagrams += <uint64_t>k
        return k

    # Hot loop: indices are enum counters, batch slots and hist_index(), in
    # range by construction; the checks were on while the tests were written.
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.initializedcheck(False)
    @cython.cdivision(True)
    cdef int _receive(self, int flags) noexcept nogil:
        """Read one batch of replies; returns how many, or -errno.

        MSG_WAITFORONE sleeps in the kernel until the first reply (or the
        socket's SO_RCVTIMEO): one syscall per wake-up instead of a poll
        and a read, which is what a blocking round trip costs in netperf.
        """
        cdef int i, got
        for i in range(self.batch):
            self.rx_msgs[i].msg_hdr.msg_controllen = CTRL_BYTES
            self.rx_msgs[i].msg_hdr.msg_flags = 0
        got = recvmmsg(self.fd, self.rx_msgs, self.batch, flags, NULL)
        if got < 0:
            if errno == EAGAIN or errno == EINTR:
                return 0
            # A refused port (ICMP) surfaces here; Python names it.
            return -errno
        cdef uint64_t rx = now_ns()
        cdef uint64_t read_at = rx
        cdef uint64_t stamp
        cdef timespec wall
        cdef int64_t wall_minus_mono = 0
        if self.lazy_reads:
            clock_gettime(CLOCK_REALTIME, &wall)
            wall_minus_mono = (<int64_t>wall.tv_sec * 1000000000 + <int64_t>wall.tv_nsec
                               - <int64_t>read_at)
        cdef uint8_t *pkt
        cdef uint32_t dropped
        cdef Py_ssize_t length, seg, off
        cdef bint truncated
        for i in range(got):
            if self.lazy_reads:
                # The stamp is CLOCK_REALTIME; the offset to MONOTONIC is taken
                # at this read, so a clock step can only move one batch, and a
                # stamp from the future or more than a second old is not used.
                stamp = kernel_rx_realtime_ns(&self.rx_msgs[i].msg_hdr)
                rx = <uint64_t>(<int64_t>stamp - wall_minus_mono) if stamp else read_at
                if rx > read_at or rx + 1000000000ULL < read_at:
                    rx = read_at
            pkt = self.rx_buf + i * self.rx_slot
            length = self.rx_msgs[i].msg_len
            truncated = (self.rx_msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0
            seg = gro_segment_size(&self.rx_msgs[i].msg_hdr) if self.gro else 0
            if seg <= 0 or seg >= length or truncated:
                self._reply(pkt, length, truncated, rx)
                continue
            # A coalesced train: every segment is a reply of its own.
            self.gro_reads += 1
            off = 0
            while off < length:
                self._reply(pkt + off, seg if length - off > seg else length - off, False, rx)
                off += seg
        dropped = rxq_overflow(&self.rx_msgs[got - 1].msg_hdr)
        if dropped > self.c[S_RCVBUF_DROPS]:
            self.c[S_RCVBUF_DROPS] = dropped
        return got

    # Hot loop: indices are enum counters and hist_index(), in range by
    # construction; the checks were on while the tests were written.
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.initializedcheck(False)
    @cython.cdivision(True)
    cdef void _reply(self, const uint8_t *pkt, Py_ssize_t length, bint truncated,
                     uint64_t rx) noexcept nogil:
        """Check and count one reply (a datagram, or one segment of a train)."""
        cdef uint64_t seq, sched_lat, actual_lat, sent_at
        # A reply is never longer than its request: the receive slot, larger
        # for coalesced reads, does not truncate a longer one, so say it here.
        if length < WIRE_HEADER_SIZE or length > self.size \
                or load_be16(pkt + WIRE_OFF_MAGIC) != WIRE_MAGIC \
                or pkt[WIRE_OFF_VERSION] != WIRE_VERSION \
                or pkt[WIRE_OFF_KIND] != WIRE_KIND_RESPONSE \
                or load_be64(pkt + WIRE_OFF_TOKEN) != self.token \
                or truncated:
            self.c[S_BOGUS] += 1
            return
        if (pkt[WIRE_OFF_FLAGS] & WIRE_FLAG_WARMUP) != self.warmup:
            self.c[S_WARMUP_REPLIES] += 1
            return
        seq = load_be64(pkt + WIRE_OFF_SEQ)
        if seq >= self.next_seq:
            self.c[S_BOGUS] += 1
            return
        if seq < self.window.final_end:
            self.c[S_LATE] += 1
            return
        if self.window.test(seq):
            self.c[S_DUPLICATE] += 1
            return
        sent_at = load_be64(pkt + WIRE_OFF_SEND_NS)
        if self.lazy_reads and rx < sent_at:
            rx = now_ns()  # a kernel stamp from before the request left is not its arrival
        actual_lat = rx - sent_at if rx > sent_at else 0
        if self.period_ns > 0:
            sched_lat = rx - self.due_ns(seq) if rx > self.due_ns(seq) else 0
        else:
            sched_lat = actual_lat  # "as fast as possible" has no schedule
        if sched_lat > self.timeout_ns:
            self.c[S_LATE] += 1
            return
        self.window.set(seq)
        if self.reply_ring != NULL:
            if sched_lat >= <uint64_t>0xFFFFFFFE:
                sched_lat = <uint64_t>0xFFFFFFFE
            self.reply_ring[seq & self.window.mask] = <uint32_t>(sched_lat + 1)
        meter_reply(&self.meter, <uint64_t>length, sched_lat, actual_lat)

    def snapshot(self):
        """The meter now, readable from another thread while `run` goes on (_meter.pxi)."""
        return meter_snapshot(&self.meter)

    def finish(self):
        """Count every request still unanswered as lost (call after draining)."""
        if self.expect_replies:
            self.window.finalize_to(self.next_seq, &self.c[0], S_LOST, S_LOSS_EPISODES,
                                    S_LOSS_MAX_RUN)


cdef enum:
    MODE_REPLY = 1
    MODE_SINK = 2
    # Per-interval bins of received requests (rr steps that ask for them):
    # a power of two, so a bin's slot is one mask; the client reads bins a
    # second or so after they close, far inside 256 of its intervals.
    BIN_RING_SIZE = 256

BIN_RING = BIN_RING_SIZE


cdef class Responder:
    """Answers (MODE_REPLY) or counts (MODE_SINK) one session's datagrams.

    Only datagrams with the live token from the session's peer address are
    valid; everything else is dropped and counted by reason. A reply is the
    request's header with kind RESPONSE plus a fixed RESP reply, and is
    never longer than the datagram it answers.

    With `gro` the socket has UDP_GRO: a read may be a coalesced train, and
    each of its segments is checked and counted as a datagram of its own.
    With `gso_segments` > 1 the replies of one read (all to the one peer)
    leave as UDP_SEGMENT buffers; EIO or EINVAL turns that off for good.
    """
    cdef int fd
    cdef int batch
    cdef int gso_segs
    cdef mmsghdr *gso_msgs
    cdef iovec *gso_iov
    cdef uint8_t *gso_ctrl
    cdef readonly uint64_t gso_buffers
    cdef readonly int gso_errno
    cdef readonly bint gro
    cdef readonly uint64_t gro_reads
    cdef int mode
    cdef bint busy_poll
    cdef uint64_t token
    cdef int command
    cdef Py_ssize_t rx_slot
    cdef Py_ssize_t max_size
    cdef Py_ssize_t min_size
    cdef uint8_t *rx_buf
    cdef mmsghdr *rx_msgs
    cdef iovec *rx_iov
    cdef uint8_t *rx_ctrl
    cdef sockaddr_storage *rx_names
    cdef uint8_t *tx_buf
    cdef mmsghdr *tx_msgs
    cdef iovec *tx_iov
    cdef uint8_t peer[28]
    cdef int peer_len
    cdef uint8_t *prefix
    cdef Py_ssize_t prefix_len
    cdef uint8_t *reply
    cdef Py_ssize_t reply_len
    cdef _SeqWindow window
    cdef uint64_t highest_seq_plus1
    cdef uint64_t seq_limit
    # Token bucket over valid datagrams: rate_per_ns tokens a nanosecond, at
    # most `burst` saved up; a datagram without a token is neither answered
    # nor counted (R_OVER_RATE). rate_per_ns 0: no cap.
    cdef double rate_per_ns
    cdef double burst
    cdef double tokens
    cdef uint64_t refill_ns
    cdef int64_t last_transit_ns
    cdef bint have_transit
    cdef double jitter_ns
    # Bins: request seq s counts in bin floor((s + bin_phase) / bin_packets)
    # (the client computes the same double expression, so both ends agree
    # on every request's bin); bin_packets 0: no bins. A slot holds the
    # count of the bin whose number + 1 is its tag.
    cdef double bin_phase
    cdef double bin_packets
    cdef uint64_t *bin_tags
    cdef uint64_t *bin_count
    cdef uint64_t bin_end_  # highest bin counted + 1
    cdef uint64_t[::1] c
    cdef uint64_t[::1] d
    cdef readonly object counters
    cdef readonly object drops

    def __cinit__(self, int fd, *, bytes peer, uint64_t token, int command, bint sink,
                  Py_ssize_t max_size, bytes prefix=b"", bytes reply=b"",
                  bint busy_poll=False, int batch=64, uint64_t window_bits=1 << 20,
                  uint64_t seq_limit=0xFFFFFFFFFFFFFFFF, double max_rate_pps=0.0,
                  double burst=0.0, bint gro=False, int gso_segments=0,
                  double bin_phase=0.0, double bin_packets=0.0):
        if gso_segments < 0 or gso_segments > 64:
            raise ValueError("gso_segments must be 0..64")
        if bin_packets != 0.0 and (sink or not 1.0 <= bin_packets <= 1e12
                                   or not 0.0 <= bin_phase < bin_packets
                                   or seq_limit > (1 << 53)):
            raise ValueError("bins are for rr: bin_packets 1..1e12, 0 <= bin_phase < "
                             "bin_packets, seq_limit at most 2**53")
        if len(peer) > 28 or len(peer) < 8:
            raise ValueError("peer must be a packed sockaddr_in or sockaddr_in6")
        if max_rate_pps < 0 or burst < 0 or (max_rate_pps > 0 and burst < 1):
            raise ValueError("max_rate_pps and burst must be >= 0, burst >= 1 with a rate")
        if not sink and WIRE_HEADER_SIZE + len(reply) > max_size:
            raise ValueError("reply would be longer than the requests it answers")
        self.fd = fd
        self.batch = batch
        self.gro = gro
        self.mode = MODE_SINK if sink else MODE_REPLY
        self.seq_limit = seq_limit
        self.rate_per_ns = max_rate_pps / 1e9
        self.burst = burst
        self.tokens = burst
        self.refill_ns = 0
        self.busy_poll = busy_poll
        self.token = token
        self.command = command
        self.max_size = max_size
        self.prefix_len = len(prefix)
        self.reply_len = len(reply)
        self.min_size = WIRE_HEADER_SIZE + self.prefix_len
        if not sink and self.min_size < WIRE_HEADER_SIZE + self.reply_len:
            self.min_size = WIRE_HEADER_SIZE + self.reply_len
        memset(self.peer, 0, 28)
        memcpy(self.peer, <const char *>peer, len(peer))
        self.peer_len = len(peer)
        self.rx_slot = GRO_SLOT if gro and GRO_SLOT > max_size + 1 else max_size + 1
        self.gso_segs = gso_segments if gso_segments > 1 and not sink else 0
        if self.gso_segs * (WIRE_HEADER_SIZE + self.reply_len) > 65507:
            self.gso_segs = 65507 // (WIRE_HEADER_SIZE + self.reply_len)
            if self.gso_segs < 2:
                self.gso_segs = 0
        self.gso_msgs = <mmsghdr *>calloc(batch, sizeof(mmsghdr))
        self.gso_iov = <iovec *>calloc(batch, sizeof(iovec))
        self.gso_ctrl = <uint8_t *>calloc(batch, CTRL_BYTES)
        self.rx_buf = <uint8_t *>calloc(batch, self.rx_slot)
        self.rx_msgs = <mmsghdr *>calloc(batch, sizeof(mmsghdr))
        self.rx_iov = <iovec *>calloc(batch, sizeof(iovec))
        self.rx_ctrl = <uint8_t *>calloc(batch, CTRL_BYTES)
        self.rx_names = <sockaddr_storage *>calloc(batch, sizeof(sockaddr_storage))
        self.tx_buf = <uint8_t *>calloc(batch, WIRE_HEADER_SIZE + self.reply_len)
        self.tx_msgs = <mmsghdr *>calloc(batch, sizeof(mmsghdr))
        self.tx_iov = <iovec *>calloc(batch, sizeof(iovec))
        self.prefix = <uint8_t *>calloc(self.prefix_len + 1, 1)
        self.reply = <uint8_t *>calloc(self.reply_len + 1, 1)
        if not (self.rx_buf and self.rx_msgs and self.rx_iov and self.rx_ctrl and self.rx_names
                and self.tx_buf and self.tx_msgs and self.tx_iov and self.prefix and self.reply
                and self.gso_msgs and self.gso_iov and self.gso_ctrl):
            raise MemoryError()
        memcpy(self.prefix, <const char *>prefix, self.prefix_len)
        memcpy(self.reply, <const char *>reply, self.reply_len)
        cdef int i
        cdef Py_ssize_t reply_size = WIRE_HEADER_SIZE + self.reply_len
        for i in range(batch):
            self.rx_iov[i].iov_base = self.rx_buf + i * self.rx_slot
            self.rx_iov[i].iov_len = self.rx_slot
            self.rx_msgs[i].msg_hdr.msg_iov = &self.rx_iov[i]
            self.rx_msgs[i].msg_hdr.msg_iovlen = 1
            self.rx_msgs[i].msg_hdr.msg_name = &self.rx_names[i]
            self.rx_msgs[i].msg_hdr.msg_control = self.rx_ctrl + i * CTRL_BYTES
            memcpy(self.tx_buf + i * reply_size + WIRE_HEADER_SIZE, self.reply, self.reply_len)
            self.tx_iov[i].iov_base = self.tx_buf + i * reply_size
            self.tx_iov[i].iov_len = reply_size
            self.tx_msgs[i].msg_hdr.msg_iov = &self.tx_iov[i]
            self.tx_msgs[i].msg_hdr.msg_iovlen = 1
            # Replies go to the one peer only, so a GSO buffer's address is its.
            self.gso_iov[i].iov_base = self.tx_buf + i * reply_size
            self.gso_msgs[i].msg_hdr.msg_iov = &self.gso_iov[i]
            self.gso_msgs[i].msg_hdr.msg_iovlen = 1
            self.gso_msgs[i].msg_hdr.msg_name = self.peer
            self.gso_msgs[i].msg_hdr.msg_namelen = self.peer_len
            set_gso_control(&self.gso_msgs[i].msg_hdr, self.gso_ctrl + i * CTRL_BYTES,
                            <uint16_t>reply_size)
        self.window = _SeqWindow(window_bits)
        self.counters = np.zeros(R_COUNTERS, dtype=np.uint64)
        self.drops = np.zeros(WIRE_DROP_REASONS, dtype=np.uint64)
        self.c = self.counters
        self.d = self.drops
        self.bin_phase = bin_phase
        self.bin_packets = bin_packets
        if bin_packets != 0.0:
            self.bin_tags = <uint64_t *>calloc(BIN_RING_SIZE, sizeof(uint64_t))
            self.bin_count = <uint64_t *>calloc(BIN_RING_SIZE, sizeof(uint64_t))
            if not (self.bin_tags and self.bin_count):
                raise MemoryError()

    def __dealloc__(self):
        free(self.bin_tags)
        free(self.bin_count)
        free(self.rx_buf)
        free(self.rx_msgs)
        free(self.rx_iov)
        free(self.rx_ctrl)
        free(self.rx_names)
        free(self.tx_buf)
        free(self.tx_msgs)
        free(self.tx_iov)
        free(self.prefix)
        free(self.reply)
        free(self.gso_msgs)
        free(self.gso_iov)
        free(self.gso_ctrl)

    @property
    def gso_segments(self):
        """Replies per GSO buffer at most; 0 once GSO is off (or never on)."""
        return self.gso_segs

    @property
    def jitter_ns(self):
        """RFC 3550 interarrival jitter of the measured blast packets."""
        return self.jitter_ns

    def run(self, uint64_t until_ns):
        """Serve until `until_ns`; returns 0 or -errno."""
        cdef int rc
        with nogil:
            rc = self._run(until_ns)
        return rc

    # Hot loop: indices are enum counters, batch slots and hist_index(), in
    # range by construction; the checks were on while the tests were written.
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.initializedcheck(False)
    @cython.cdivision(True)
    cdef int _run(self, uint64_t until_ns) noexcept nogil:
        cdef int got, i, n_replies
        cdef uint32_t dropped
        cdef uint64_t rx
        cdef uint8_t *pkt
        cdef Py_ssize_t length, seg, off
        cdef bint truncated
        while True:
            rx = now_ns()
            if rx >= until_ns:
                return 0
            for i in range(self.batch):
                self.rx_msgs[i].msg_hdr.msg_controllen = CTRL_BYTES
                self.rx_msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
                self.rx_msgs[i].msg_hdr.msg_flags = 0
            # Blocking mode waits inside recvmmsg (one syscall per wake-up);
            # the socket's SO_RCVTIMEO bounds the wait so the deadline holds.
            got = recvmmsg(self.fd, self.rx_msgs, self.batch,
                           MSG_DONTWAIT if self.busy_poll else MSG_WAITFORONE, NULL)
            if got < 0:
                if errno == EAGAIN or errno == EINTR:
                    if not self.busy_poll and now_ns() < rx + NONBLOCKING_NS:
                        sleep_until(self.fd, True, until_ns)  # the socket does not block
                    continue
                return -errno
            rx = now_ns()
            if self.rate_per_ns > 0:
                self._refill(rx)
            n_replies = 0
            for i in range(got):
                pkt = self.rx_buf + i * self.rx_slot
                length = self.rx_msgs[i].msg_len
                truncated = (self.rx_msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0
                seg = gro_segment_size(&self.rx_msgs[i].msg_hdr) if self.gro else 0
                if seg <= 0 or seg >= length or truncated:
                    seg = length
                else:
                    self.gro_reads += 1
                # Each segment of a coalesced train is a datagram of its own.
                off = 0
                while True:
                    if self._accept(pkt + off, seg if length - off > seg else length - off,
                                    truncated, i, rx) and self.mode == MODE_REPLY:
                        self._prepare_reply(pkt + off, i, n_replies)
                        n_replies += 1
                        if n_replies == self.batch:
                            self._flush(n_replies)
                            n_replies = 0
                    off += seg
                    if off >= length:
                        break
            dropped = rxq_overflow(&self.rx_msgs[got - 1].msg_hdr)
            if dropped > self.c[R_RCVBUF_DROPS]:
                self.c[R_RCVBUF_DROPS] = dropped
            if n_replies > 0:
                self._flush(n_replies)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.initializedcheck(False)
    @cython.cdivision(True)
    cdef void _flush(self, int n) noexcept nogil:
        """Send the n replies prepared in tx_buf; count what went and what did not."""
        cdef Py_ssize_t reply_size = WIRE_HEADER_SIZE + self.reply_len
        cdef int sent = -1
        cdef int m, j, k
        if self.gso_segs and n > 1:
            m = (n + self.gso_segs - 1) // self.gso_segs
            for j in range(m):
                k = n - j * self.gso_segs
                if k > self.gso_segs:
                    k = self.gso_segs
                self.gso_iov[j].iov_base = self.tx_buf + j * self.gso_segs * reply_size
                self.gso_iov[j].iov_len = <size_t>k * <size_t>reply_size
            sent = sendmmsg(self.fd, self.gso_msgs, m, MSG_DONTWAIT)
            if sent >= 0:
                self.gso_buffers += <uint64_t>sent
                sent = n if sent == m else sent * self.gso_segs
            elif gso_unusable(errno):
                self.gso_errno = errno
                self.gso_segs = 0
        if sent < 0 and not (self.gso_segs and n > 1):
            sent = sendmmsg(self.fd, self.tx_msgs, n, MSG_DONTWAIT)
        if sent < 0:
            if errno == EAGAIN or errno == ENOBUFS:
                self.c[R_REPLY_EAGAIN] += n
            else:
                self.c[R_REPLY_ERRORS] += n
        else:
            self.c[R_REPLIED] += sent
            self.c[R_REPLY_BYTES] += <uint64_t>sent * <uint64_t>reply_size
            if sent < n:
                self.c[R_REPLY_EAGAIN] += n - sent

    cdef inline void _refill(self, uint64_t rx) noexcept nogil:
        if self.refill_ns != 0 and rx > self.refill_ns:
            self.tokens += <double>(rx - self.refill_ns) * self.rate_per_ns
            if self.tokens > self.burst:
                self.tokens = self.burst
        self.refill_ns = rx

    cdef inline bint _from_peer(self, int i) noexcept nogil:
        cdef const uint8_t *name = <const uint8_t *>&self.rx_names[i]
        if self.rx_names[i].ss_family != (<const uint16_t *>self.peer)[0]:
            return False
        if self.rx_names[i].ss_family == AF_INET:
            # family, port, IPv4 address
            return memcmp(name, self.peer, 8) == 0
        # family and port, then the IPv6 address after the flow label
        return memcmp(name, self.peer, 4) == 0 and memcmp(name + 8, self.peer + 8, 16) == 0

    # Hot loop: indices are enum counters, batch slots and hist_index(), in
    # range by construction; the checks were on while the tests were written.
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.initializedcheck(False)
    @cython.cdivision(True)
    cdef bint _accept(self, const uint8_t *pkt, Py_ssize_t length, bint truncated, int i,
                      uint64_t rx) noexcept nogil:
        """Validate one datagram (or segment) of read i; count it by outcome.
        True when it is valid."""
        cdef int expected_kind = WIRE_KIND_BLAST if self.mode == MODE_SINK else WIRE_KIND_REQUEST
        if truncated or length > self.max_size:
            self.d[WIRE_DROP_OVERSIZED] += 1
            return False
        if length < WIRE_HEADER_SIZE:
            self.d[WIRE_DROP_TOO_SHORT] += 1
            return False
        if load_be16(pkt + WIRE_OFF_MAGIC) != WIRE_MAGIC:
            self.d[WIRE_DROP_BAD_MAGIC] += 1
            return False
        if pkt[WIRE_OFF_VERSION] != WIRE_VERSION:
            self.d[WIRE_DROP_BAD_VERSION] += 1
            return False
        if pkt[WIRE_OFF_KIND] != expected_kind:
            self.d[WIRE_DROP_BAD_KIND] += 1
            return False
        if load_be64(pkt + WIRE_OFF_TOKEN) != self.token:
            self.d[WIRE_DROP_BAD_TOKEN] += 1
            return False
        if not self._from_peer(i):
            self.d[WIRE_DROP_BAD_SOURCE] += 1
            return False
        if length < self.min_size or pkt[WIRE_OFF_COMMAND] != self.command \
                or memcmp(pkt + WIRE_HEADER_SIZE, self.prefix, self.prefix_len) != 0:
            self.d[WIRE_DROP_BAD_PAYLOAD] += 1
            return False
        if self.mode == MODE_SINK and load_be64(pkt + WIRE_OFF_SEQ) >= self.seq_limit:
            self.d[WIRE_DROP_BAD_SEQ] += 1  # beyond what the step can send: not trusted
            return False
        if self.rate_per_ns > 0:
            if self.tokens < 1.0:
                self.c[R_OVER_RATE] += 1  # past the step's rate: the limit is on the traffic
                return False
            self.tokens -= 1.0
        if pkt[WIRE_OFF_FLAGS] & WIRE_FLAG_WARMUP:
            self.c[R_WARMUP] += 1
            return self.mode == MODE_REPLY
        self.c[R_RECEIVED] += 1
        self.c[R_RECEIVED_BYTES] += <uint64_t>length
        if self.mode == MODE_SINK:
            self._account(pkt, rx)
        elif self.bin_count != NULL:
            self._bin(load_be64(pkt + WIRE_OFF_SEQ))
        return True

    @cython.cdivision(True)
    cdef inline void _bin(self, uint64_t seq) noexcept nogil:
        """Count one valid request in its bin; a seq the step cannot reach is not binned."""
        cdef uint64_t b, slot
        if seq >= self.seq_limit:
            return
        b = <uint64_t>floor((<double>seq + self.bin_phase) / self.bin_packets)
        slot = b & (BIN_RING_SIZE - 1)
        if self.bin_tags[slot] != b + 1:
            if b + 1 < self.bin_tags[slot]:
                return  # a straggler of a bin whose slot a later bin took
            if b + 1 > self.bin_end_:
                self.bin_end_ = b + 1  # first, so a reader sees the eviction
            self.bin_tags[slot] = b + 1
            self.bin_count[slot] = 0
        self.bin_count[slot] += 1

    @property
    def bin_end(self):
        """The highest bin counted + 1 (0: none yet, or no bins)."""
        return self.bin_end_

    def bin_counts(self, uint64_t lo, uint64_t hi):
        """Requests received in bins lo..hi-1: a list, -1 for a bin no longer
        held (more than BIN_RING bins before the newest). Read from another
        thread while `run` goes on: exact for bins whose requests are all in."""
        if self.bin_count == NULL:
            raise ValueError("this responder counts no bins")
        if hi < lo or hi - lo > BIN_RING_SIZE:
            raise ValueError(f"at most {BIN_RING_SIZE} bins at a time")
        out = []
        cdef uint64_t b, slot, tag, count
        for b in range(lo, hi):
            slot = b & (BIN_RING_SIZE - 1)
            tag = self.bin_tags[slot]
            count = self.bin_count[slot]
            if b + BIN_RING_SIZE < self.bin_end_ or tag > b + 1:
                out.append(-1)
            else:
                out.append(count if tag == b + 1 else 0)
        return out

    # Hot loop: indices are enum counters, batch slots and hist_index(), in
    # range by construction; the checks were on while the tests were written.
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.initializedcheck(False)
    @cython.cdivision(True)
    cdef void _account(self, const uint8_t *pkt, uint64_t rx) noexcept nogil:
        """Sequence and jitter accounting for one valid blast packet."""
        cdef uint64_t seq = load_be64(pkt + WIRE_OFF_SEQ)
        cdef int64_t transit, delta
        if seq < self.window.final_end:
            self.c[R_STALE] += 1
            return
        if seq >= self.highest_seq_plus1:
            if seq >= self.window.final_end + self.window.size():
                self.window.finalize_to(seq - self.window.size() + 1, &self.c[0], R_LOST,
                                        R_LOSS_EPISODES, R_LOSS_MAX_RUN)
            self.highest_seq_plus1 = seq + 1
            self.c[R_SEQ_END] = self.highest_seq_plus1
        elif self.window.test(seq):
            self.c[R_DUPLICATE] += 1
            self.c[R_RECEIVED] -= 1
            return
        else:
            self.c[R_REORDERED] += 1
        self.window.set(seq)
        # RFC 3550 section 6.4.1 / A.8: J += (|D| - J) / 16 over transit deltas.
        transit = <int64_t>rx - <int64_t>load_be64(pkt + WIRE_OFF_SEND_NS)
        if self.have_transit:
            delta = transit - self.last_transit_ns
            if delta < 0:
                delta = -delta
            self.jitter_ns += (<double>delta - self.jitter_ns) / 16.0
        self.last_transit_ns = transit
        self.have_transit = True

    cdef inline void _prepare_reply(self, const uint8_t *pkt, int i, int slot) noexcept nogil:
        cdef uint8_t *out = self.tx_buf + slot * (WIRE_HEADER_SIZE + self.reply_len)
        memcpy(out, pkt, WIRE_HEADER_SIZE)
        out[WIRE_OFF_KIND] = WIRE_KIND_RESPONSE
        self.tx_msgs[slot].msg_hdr.msg_name = &self.rx_names[i]
        self.tx_msgs[slot].msg_hdr.msg_namelen = self.rx_msgs[i].msg_hdr.msg_namelen

    def finish(self, uint64_t sent_packets):
        """Close the sink's accounting: everything below `sent_packets` is final."""
        if self.mode == MODE_SINK:
            if sent_packets > self.highest_seq_plus1:
                self.highest_seq_plus1 = sent_packets
            self.window.finalize_to(self.highest_seq_plus1, &self.c[0], R_LOST, R_LOSS_EPISODES,
                                    R_LOSS_MAX_RUN)
