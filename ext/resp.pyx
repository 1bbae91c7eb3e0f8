# The RESP over TCP loops: the framing (how long the next complete reply or
# command in a buffer is), the open-loop client over N non-blocking
# connections with a pipeline window of P requests each, and the responder
# that answers PING, GET and SET the way Redis does. Included by _engine.pyx.
#
# Latency is measured from the *scheduled* send time: a request that falls
# due while its connection's window is full waits, and the wait is part of
# its latency (no coordinated omission). Replies on one connection come back
# in request order (RESP has no request ids), which is how a reply finds its
# request. The parsers never read past the bytes they are given and consume
# at least three bytes per element, so no input makes them crash or spin.

# --------------------------------------------------------------------------
# RESP framing (RESP2, https://redis.io/docs/latest/develop/reference/protocol-spec/)
# --------------------------------------------------------------------------

cdef enum:
    CR = 13
    LF = 10
    # Redis' own limits: proto-max-bulk-len and the inline/multibulk sizes.
    RESP_MAX_BULK_BYTES = 512 * 1024 * 1024
    RESP_MAX_LINE_BYTES = 65536
    RESP_MAX_PENDING = 1 << 24    # elements still owed by one (nested) reply
    RESP_MAX_ARGS = 1 << 20       # arguments of one command


cdef inline Py_ssize_t line_end(const uint8_t *p, Py_ssize_t pos, Py_ssize_t n) noexcept nogil:
    """Index just past the CRLF ending the line that starts at `pos`.

    0 when the line is not all here yet, -1 when it is malformed (a CR not
    followed by LF, or longer than any RESP header line may be).
    """
    if pos >= n:
        return 0
    cdef const uint8_t *cr = <const uint8_t *>memchr(p + pos, CR, <size_t>(n - pos))
    if cr == NULL:
        return -1 if n - pos > RESP_MAX_LINE_BYTES else 0
    cdef Py_ssize_t at = cr - p
    if at - pos > RESP_MAX_LINE_BYTES:
        return -1
    if at + 1 >= n:
        return 0
    if p[at + 1] != LF:
        return -1
    return at + 2


cdef inline bint parse_int(const uint8_t *p, Py_ssize_t start, Py_ssize_t stop,
                           int64_t *out) noexcept nogil:
    """Decimal integer in p[start:stop], optional '-'; at most 18 digits."""
    cdef bint negative = False
    cdef int64_t value = 0
    cdef Py_ssize_t i
    if start < stop and p[start] == 45:  # '-'
        negative = True
        start += 1
    if start >= stop or stop - start > 18:
        return False
    for i in range(start, stop):
        if p[i] < 48 or p[i] > 57:
            return False
        value = value * 10 + (p[i] - 48)
    out[0] = -value if negative else value
    return True


cdef Py_ssize_t resp_value_end(const uint8_t *p, Py_ssize_t n, uint8_t *kind) noexcept nogil:
    """Length of the complete RESP2 value at the start of p[:n].

    0 when more bytes are needed, -1 when the bytes are not RESP. `kind`
    gets the value's type byte ('+', '-', ':', '$' or '*'). Nested arrays
    need no stack: a counter of elements still owed grows by an array's
    length and shrinks by one per element read.
    """
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t end
    cdef int64_t pending = 1
    cdef int64_t value
    cdef uint8_t t
    if n <= 0:
        return 0
    kind[0] = p[0]
    while pending > 0:
        if pos >= n:
            return 0
        t = p[pos]
        end = line_end(p, pos + 1, n)
        if end <= 0:
            return end
        pending -= 1
        if t == 43 or t == 45:  # '+' simple string, '-' error
            pass
        elif t == 58:  # ':' integer
            if not parse_int(p, pos + 1, end - 2, &value):
                return -1
        elif t == 36:  # '$' bulk string
            if not parse_int(p, pos + 1, end - 2, &value):
                return -1
            if value >= 0:
                if value > RESP_MAX_BULK_BYTES:
                    return -1
                if end + value + 2 > n:
                    return 0
                if p[end + value] != CR or p[end + value + 1] != LF:
                    return -1
                end += <Py_ssize_t>value + 2
            elif value != -1:
                return -1
        elif t == 42:  # '*' array
            if not parse_int(p, pos + 1, end - 2, &value) or value < -1:
                return -1
            if value > 0:
                pending += value
                if pending > RESP_MAX_PENDING:
                    return -1
        else:
            return -1
        pos = end
    return pos


cdef inline bint name_is(const uint8_t *name, Py_ssize_t length, const char *upper) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(length):
        if upper[i] == 0 or (name[i] & 0xDF) != <uint8_t>upper[i]:
            return False
    return upper[length] == 0


cdef inline int command_id(const uint8_t *name, Py_ssize_t length, int64_t argc) noexcept nogil:
    """WIRE_COMMAND_* for a command we answer, WIRE_COMMAND_NONE otherwise."""
    if name_is(name, length, b"PING") and argc <= 2:
        return WIRE_COMMAND_PING
    if name_is(name, length, b"GET") and argc == 2:
        return WIRE_COMMAND_GET
    if name_is(name, length, b"SET") and argc >= 3:
        return WIRE_COMMAND_SET
    return WIRE_COMMAND_NONE


cdef Py_ssize_t resp_command_end(const uint8_t *p, Py_ssize_t n, int *command) noexcept nogil:
    """Length of the complete command (an array of bulk strings) at p[:n].

    0 when more bytes are needed, -1 when it is not such an array (inline
    commands are not served). `command` gets the WIRE_COMMAND_* it names.
    """
    cdef Py_ssize_t pos, end
    cdef Py_ssize_t name_at = 0
    cdef Py_ssize_t name_len = 0
    cdef int64_t argc, length, i
    if n <= 0:
        return 0
    if p[0] != 42:
        return -1
    end = line_end(p, 1, n)
    if end <= 0:
        return end
    if not parse_int(p, 1, end - 2, &argc) or argc < 1 or argc > RESP_MAX_ARGS:
        return -1
    pos = end
    for i in range(argc):
        if pos >= n:
            return 0
        if p[pos] != 36:
            return -1
        end = line_end(p, pos + 1, n)
        if end <= 0:
            return end
        if not parse_int(p, pos + 1, end - 2, &length) or length < 0 \
                or length > RESP_MAX_BULK_BYTES:
            return -1
        if end + length + 2 > n:
            return 0
        if p[end + length] != CR or p[end + length + 1] != LF:
            return -1
        if i == 0:
            name_at = end
            name_len = <Py_ssize_t>length
        pos = end + <Py_ssize_t>length + 2
    command[0] = command_id(p + name_at, name_len, argc)
    return pos


_STATUS = {0: "incomplete", -1: "malformed"}


def parse_replies(bytes data):
    """Split `data` into complete RESP values, as the client loop does.

    Returns ([(length, kind), ...], status): kind is the type byte as a
    one-character str; status is "complete" when every byte was consumed,
    "incomplete" when a value is cut short, "malformed" when the rest is not
    RESP.
    """
    cdef const uint8_t *p = <const uint8_t *><const char *>data
    cdef Py_ssize_t n = len(data)
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t used
    cdef uint8_t kind = 0
    values = []
    while pos < n:
        with nogil:
            used = resp_value_end(p + pos, n - pos, &kind)
        if used <= 0:
            return values, _STATUS[used]
        values.append((used, chr(kind)))
        pos += used
    return values, "complete"


def parse_commands(bytes data):
    """Split `data` into complete RESP commands, as the responder does.

    Returns ([(length, command), ...], status) with command a
    wire.COMMAND_* value (COMMAND_NONE: a command we would refuse) and
    status as in parse_replies.
    """
    cdef const uint8_t *p = <const uint8_t *><const char *>data
    cdef Py_ssize_t n = len(data)
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t used
    cdef int command = 0
    commands = []
    while pos < n:
        with nogil:
            used = resp_command_end(p + pos, n - pos, &command)
        if used <= 0:
            return commands, _STATUS[used]
        commands.append((used, command))
        pos += used
    return commands, "complete"


# --------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------

# Client counters (C_*, CLIENT_COUNTERS, from _wire.pxi) begin with the
# sender's, so a TCP step is summarised like a UDP one and shares its Meter.

cdef enum:
    EPOLL_SPIN_NS = 20000

MAX_CONNECTIONS = 4096
MAX_PIPELINE = 4096


cdef struct ClientConn:
    int fd
    bint want_out
    uint64_t written      # requests queued on this connection, every phase
    uint64_t replied      # replies read, every phase
    uint64_t phase_base   # `written` when the phase began: older replies are not counted
    uint64_t issued       # requests of this phase queued
    uint64_t waited       # requests of this phase already counted as waiting for the window
    uint64_t loss_run
    Py_ssize_t tx_pending # bytes queued but not yet accepted by the socket
    Py_ssize_t tx_off     # how much of the first pending request is already sent
    Py_ssize_t rx_len
    uint8_t *rx
    # rings of `pipeline` slots: request t of the connection uses slot t % pipeline
    uint64_t *due         # its scheduled send time
    uint64_t *sent_at     # when it was queued on the socket
    uint64_t *freed_at    # when the reply that freed its slot arrived


cdef class RespClient:
    """Open-loop RESP requests over N connected, non-blocking TCP sockets.

    Request i of a phase is due at t0 + i * period and belongs to connection
    i % N, so the rate is spread evenly. Each connection has at most
    `pipeline` requests outstanding; a due request waits for a free slot and
    its latency counts from its due time. With rate_pps 0 every connection
    keeps its window full and latency counts from the actual send.

    The send-lag histogram holds only the client's own lateness: the time
    from max(due, slot freed) to the send, so a busy client shows here and a
    slow server does not.
    """
    cdef int epfd
    cdef int n_conns
    cdef int pipeline
    cdef bint busy_poll
    cdef bint warmup
    cdef Py_ssize_t req_len
    cdef Py_ssize_t rx_cap
    cdef uint8_t *tx_ring
    cdef uint8_t *rx_bufs
    cdef uint64_t *rings
    cdef ClientConn *conns
    cdef epoll_event *events
    cdef double period_ns
    cdef uint64_t t0_ns
    cdef uint64_t limit
    cdef uint64_t n_scheduled
    cdef uint64_t issued_total
    cdef uint64_t timeout_ns
    cdef uint64_t[::1] c
    cdef Meter meter
    cdef readonly object counters
    cdef readonly object latency_hist
    cdef readonly object actual_latency_hist
    cdef readonly object send_lag_hist

    def __cinit__(self, fds, bytes request, *, double rate_pps, int pipeline,
                  double timeout_s=1.0, bint busy_poll=False, Py_ssize_t rx_bytes=65536):
        cdef int n = len(fds)
        if n < 1 or n > MAX_CONNECTIONS:
            raise ValueError(f"connections must be 1..{MAX_CONNECTIONS} (got {n})")
        if pipeline < 1 or pipeline > MAX_PIPELINE:
            raise ValueError(f"pipeline must be 1..{MAX_PIPELINE} (got {pipeline})")
        if len(request) < 1:
            raise ValueError("request must not be empty")
        if rx_bytes < 64:
            raise ValueError("rx_bytes must be at least 64")
        self.epfd = -1
        self.n_conns = n
        self.pipeline = pipeline
        self.busy_poll = busy_poll
        self.req_len = len(request)
        self.rx_cap = rx_bytes
        self.period_ns = 1e9 / rate_pps if rate_pps > 0 else 0.0
        self.timeout_ns = <uint64_t>(timeout_s * 1e9)
        # P copies back to back: whatever is pending on a connection is one
        # contiguous run of this ring, starting inside its first request.
        self.tx_ring = <uint8_t *>calloc(pipeline, self.req_len)
        self.rx_bufs = <uint8_t *>calloc(n, rx_bytes)
        self.rings = <uint64_t *>calloc(<size_t>n * pipeline * 3, sizeof(uint64_t))
        self.conns = <ClientConn *>calloc(n, sizeof(ClientConn))
        self.events = <epoll_event *>calloc(n, sizeof(epoll_event))
        if not (self.tx_ring and self.rx_bufs and self.rings and self.conns and self.events):
            raise MemoryError()
        cdef int i
        for i in range(pipeline):
            memcpy(self.tx_ring + i * self.req_len, <const char *>request, self.req_len)
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, "epoll_create1 failed")
        cdef epoll_event ev
        cdef ClientConn *conn
        for i in range(n):
            conn = &self.conns[i]
            conn.fd = fds[i]
            conn.rx = self.rx_bufs + <size_t>i * rx_bytes
            conn.due = self.rings + <size_t>i * pipeline * 3
            conn.sent_at = conn.due + pipeline
            conn.freed_at = conn.sent_at + pipeline
            ev.events = EPOLLIN
            ev.data.u32 = <uint32_t>i
            if epoll_ctl(self.epfd, EPOLL_CTL_ADD, conn.fd, &ev) < 0:
                raise OSError(errno, f"cannot watch connection {i}")
        self.counters = np.zeros(C_COUNTERS, dtype=np.uint64)
        self.latency_hist = np.zeros(HIST_BUCKETS, dtype=np.uint64)
        self.actual_latency_hist = np.zeros(HIST_BUCKETS, dtype=np.uint64)
        self.send_lag_hist = np.zeros(HIST_BUCKETS, dtype=np.uint64)
        self.c = self.counters
        cdef uint64_t[::1] h
        self.meter.c = &self.c[0]
        self.meter.n_counters = C_COUNTERS
        h = self.latency_hist
        self.meter.h_sched = &h[0]
        h = self.actual_latency_hist
        self.meter.h_actual = &h[0]
        h = self.send_lag_hist
        self.meter.h_lag = &h[0]

    def __dealloc__(self):
        if self.epfd >= 0:
            close(self.epfd)
        free(self.tx_ring)
        free(self.rx_bufs)
        free(self.rings)
        free(self.conns)
        free(self.events)

    def begin(self, uint64_t t0_ns, uint64_t limit, bint warmup):
        """Start a phase of `limit` requests due from t0_ns; counters cleared.

        Replies still owed for an earlier phase are read and discarded
        (counted as warmup_replies) but keep their window slots until then.
        """
        self.t0_ns = t0_ns
        self.limit = limit
        self.n_scheduled = 0
        self.issued_total = 0
        self.warmup = warmup
        cdef int i
        for i in range(self.n_conns):
            self.conns[i].phase_base = self.conns[i].written
            self.conns[i].issued = 0
            self.conns[i].waited = 0
            self.conns[i].loss_run = 0
        meter_begin(&self.meter)

    def stop_issuing(self):
        """At rate 0, queue no more requests. A paced phase needs no stop: its
        last request fell due before its window ended, and one the loop had
        not reached yet still goes out (late) while draining."""
        if self.period_ns <= 0:
            self.limit = self.n_scheduled

    @property
    def scheduled(self):
        """Requests of this phase whose time has come (rate 0: queued)."""
        return self.n_scheduled

    @property
    def done(self):
        """Every request of the phase is queued and every queued one answered."""
        return self._done()

    def run(self, uint64_t until_ns):
        """Send what is due and read replies until `until_ns`.

        Returns 0, or -errno: -ECONNRESET when the server closed a
        connection, -EPROTO when it sent something that is not RESP,
        -EMSGSIZE when one reply is larger than the receive buffer.
        """
        cdef int rc
        with nogil:
            prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
            rc = self._run(until_ns)
        return rc

    cdef inline uint64_t share(self, uint64_t total, int i) noexcept nogil:
        """How many of requests 0..total-1 belong to connection i."""
        if total <= <uint64_t>i:
            return 0
        return (total - <uint64_t>i - 1) // <uint64_t>self.n_conns + 1

    cdef bint _done(self) noexcept nogil:
        cdef int i
        for i in range(self.n_conns):
            if self.period_ns > 0 and self.conns[i].issued < self.share(self.limit, i):
                return False
            if self.conns[i].replied < self.conns[i].written:
                return False
        return self.period_ns > 0 or self.issued_total >= self.limit

    cdef int _run(self, uint64_t until_ns) noexcept nogil:
        cdef uint64_t now, wake
        cdef int got, queued, wait_ms
        # Without a schedule only a reply (or a writable socket) makes new
        # work, so a blocking client waits in the epoll_wait that returns it:
        # one syscall per wake-up, as redis-benchmark's event loop makes.
        cdef bint wait_in_epoll = self.period_ns <= 0 and not self.busy_poll
        # ...but it polls for EPOLL_SPIN_NS after each piece of work first:
        # under load the next reply is closer than that, and every sleep
        # would cost the server's CPU an interrupt to wake this thread.
        cdef uint64_t spin_until = 0
        while True:
            now = now_ns()
            if now >= until_ns:
                return 0
            queued = self._issue_all(now)
            if queued < 0:
                return queued
            if queued > 0:
                spin_until = now + EPOLL_SPIN_NS
            wait_ms = 0
            if wait_in_epoll and now >= spin_until and until_ns - now >= 1000000:
                # whole milliseconds only; the last one is slept with ppoll below
                wait_ms = <int>((until_ns - now) // 1000000)
            got = epoll_wait(self.epfd, self.events, self.n_conns, wait_ms)
            if got < 0:
                if errno == EINTR:
                    continue
                return -errno
            if got > 0:
                queued = self._handle(got)
                if queued < 0:
                    return queued
                spin_until = now_ns() + EPOLL_SPIN_NS
                continue
            if queued > 0 or self.busy_poll or (wait_in_epoll and now < spin_until):
                continue
            if self.period_ns > 0 and self.n_scheduled < self.limit:
                wake = self.t0_ns + <uint64_t>(<double>self.n_scheduled * self.period_ns)
                if wake > until_ns:
                    wake = until_ns
            else:
                wake = until_ns
            now = now_ns()
            if wake > now + SPIN_MARGIN_NS:
                sleep_until(self.epfd, True, wake - SPIN_MARGIN_NS)

    # indices are enum counters and hist_index(), in range by construction
    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef int _issue_all(self, uint64_t now) noexcept nogil:
        """Queue every due request that has a window slot; returns how many."""
        cdef uint64_t due_count, backlog, room, m, first_waiting
        cdef uint64_t total = 0
        cdef int i, rc
        cdef ClientConn *conn
        if self.period_ns > 0 and now >= self.t0_ns:
            due_count = <uint64_t>(<double>(now - self.t0_ns) / self.period_ns) + 1
            if due_count > self.limit:
                due_count = self.limit
            if due_count > self.n_scheduled:
                self.n_scheduled = due_count
                self.c[C_SENT] = due_count
        for i in range(self.n_conns):
            conn = &self.conns[i]
            room = <uint64_t>self.pipeline - (conn.written - conn.replied)
            if self.period_ns > 0:
                backlog = self.share(self.n_scheduled, i) - conn.issued
                m = backlog
                if backlog > room:
                    m = room
                    # count each request once, when it first has to wait
                    first_waiting = conn.issued + room
                    if conn.waited < first_waiting:
                        conn.waited = first_waiting
                    if conn.issued + backlog > conn.waited:
                        self.c[C_WINDOW_WAITS] += conn.issued + backlog - conn.waited
                        conn.waited = conn.issued + backlog
            else:
                # Without a schedule, a connection sends its whole pipeline at
                # once and waits for every reply before the next batch, as
                # redis-benchmark -P does: topping up one request per reply
                # would cost a write and a server wake-up per request.
                m = room if conn.written == conn.replied else 0
                if m > self.limit - self.issued_total:
                    m = self.limit - self.issued_total
            if m > 0:
                # stamped per connection: the sends before this one took time
                self._queue(conn, i, m, now_ns())
                total += m
            if conn.tx_pending > 0 and not conn.want_out:
                rc = self._flush(conn, i)
                if rc < 0:
                    return rc
        return <int>total

    # indices are enum counters and hist_index(), in range by construction
    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef void _queue(self, ClientConn *conn, int i, uint64_t m, uint64_t now) noexcept nogil:
        cdef uint64_t j, slot, seq, due, ready, lag
        for j in range(m):
            slot = (conn.written + j) % <uint64_t>self.pipeline
            if self.period_ns > 0:
                seq = (conn.issued + j) * <uint64_t>self.n_conns + <uint64_t>i
                due = self.t0_ns + <uint64_t>(<double>seq * self.period_ns)
                ready = due if due > conn.freed_at[slot] else conn.freed_at[slot]
                lag = now - ready if now > ready else 0
                meter_lag(&self.meter, lag)
                conn.due[slot] = due
            else:
                conn.due[slot] = now
            conn.sent_at[slot] = now
        conn.written += m
        conn.issued += m
        conn.tx_pending += <Py_ssize_t>m * self.req_len
        self.issued_total += m
        self.c[C_WRITTEN] += m
        self.c[C_SENT_BYTES] += m * <uint64_t>self.req_len
        if self.period_ns <= 0:
            self.n_scheduled = self.issued_total
            self.c[C_SENT] = self.issued_total

    cdef int _watch(self, ClientConn *conn, int i, bint out) noexcept nogil:
        cdef epoll_event ev
        ev.events = EPOLLIN | EPOLLOUT if out else EPOLLIN
        ev.data.u32 = <uint32_t>i
        conn.want_out = out
        if epoll_ctl(self.epfd, EPOLL_CTL_MOD, conn.fd, &ev) < 0:
            return -errno
        return 0

    cdef int _flush(self, ClientConn *conn, int i) noexcept nogil:
        cdef ssize_t sent = send(conn.fd, self.tx_ring + conn.tx_off, <size_t>conn.tx_pending,
                                 MSG_DONTWAIT | MSG_NOSIGNAL)
        self.c[C_SEND_CALLS] += 1
        if sent < 0:
            if errno == EAGAIN or errno == EINTR:
                if errno == EAGAIN:
                    self.c[C_EAGAIN] += 1
                return self._watch(conn, i, True)
            return -errno
        conn.tx_pending -= sent
        conn.tx_off = (conn.tx_off + sent) % self.req_len
        if conn.tx_pending > 0:
            return self._watch(conn, i, True)
        return 0

    cdef int _handle(self, int got) noexcept nogil:
        cdef int k, i, rc
        cdef uint32_t events
        cdef ClientConn *conn
        for k in range(got):
            i = <int>self.events[k].data.u32
            events = self.events[k].events
            conn = &self.conns[i]
            if events & EPOLLOUT:
                rc = self._watch(conn, i, False)
                if rc == 0 and conn.tx_pending > 0:
                    rc = self._flush(conn, i)
                if rc < 0:
                    return rc
            if events & (EPOLLIN | EPOLLHUP | EPOLLERR):
                rc = self._read(conn)
                if rc < 0:
                    return rc
        return 0

    cdef int _read(self, ClientConn *conn) noexcept nogil:
        cdef ssize_t got = recv(conn.fd, conn.rx + conn.rx_len, <size_t>(self.rx_cap - conn.rx_len),
                                MSG_DONTWAIT)
        self.c[C_RECV_CALLS] += 1
        if got == 0:
            return -ECONNRESET
        if got < 0:
            if errno == EAGAIN or errno == EINTR:
                return 0
            return -errno
        cdef uint64_t rx = now_ns()
        conn.rx_len += got
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t used
        cdef uint8_t kind = 0
        while pos < conn.rx_len:
            used = resp_value_end(conn.rx + pos, conn.rx_len - pos, &kind)
            if used == 0:
                break
            if used < 0:
                return -EPROTO
            self._reply(conn, kind, used, rx)
            pos += used
        if pos > 0:
            memmove(conn.rx, conn.rx + pos, <size_t>(conn.rx_len - pos))
            conn.rx_len -= pos
        if conn.rx_len == self.rx_cap:
            return -EMSGSIZE
        return 0

    cdef inline void _lose(self, ClientConn *conn, uint64_t count) noexcept nogil:
        """Extend this connection's run of lost requests (RFC 3357 episodes)."""
        if count == 0:
            return
        if conn.loss_run == 0:
            self.c[C_LOSS_EPISODES] += 1
        conn.loss_run += count
        if conn.loss_run > self.c[C_LOSS_MAX_RUN]:
            self.c[C_LOSS_MAX_RUN] = conn.loss_run

    # indices are enum counters and hist_index(), in range by construction
    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef void _reply(self, ClientConn *conn, uint8_t kind, Py_ssize_t length,
                     uint64_t rx) noexcept nogil:
        if conn.replied >= conn.written:
            self.c[C_BOGUS] += 1
            return
        cdef uint64_t t = conn.replied
        cdef uint64_t slot = t % <uint64_t>self.pipeline
        conn.replied += 1
        conn.freed_at[slot] = rx
        if t < conn.phase_base:
            self.c[C_WARMUP_REPLIES] += 1
            return
        cdef uint64_t due = conn.due[slot]
        cdef uint64_t sched_lat = rx - due if rx > due else 0
        cdef uint64_t actual_lat = rx - conn.sent_at[slot] if rx > conn.sent_at[slot] else 0
        if kind == 45:  # '-': the server refused the command
            self.c[C_RESP_ERRORS] += 1
            self._lose(conn, 1)
            return
        if sched_lat > self.timeout_ns:
            self.c[C_LATE] += 1
            self._lose(conn, 1)
            return
        conn.loss_run = 0
        meter_reply(&self.meter, <uint64_t>length, sched_lat, actual_lat)

    def snapshot(self):
        """The meter now, readable from another thread while `run` goes on (_meter.pxi)."""
        return meter_snapshot(&self.meter)

    def finish(self):
        """Close the phase's books (call after draining).

        Requests still unanswered, and requests that fell due but never got
        a window slot, are lost; `sent` is every request the schedule asked
        for, whether or not a slot ever freed for it.
        """
        cdef int i
        cdef uint64_t expected, owed
        cdef ClientConn *conn
        for i in range(self.n_conns):
            conn = &self.conns[i]
            expected = self.share(self.n_scheduled, i) if self.period_ns > 0 else conn.issued
            owed = conn.written - conn.replied
            if owed > conn.issued:
                owed = conn.issued
            self._lose(conn, owed + (expected - conn.issued))
        self.c[C_SENT] = self.n_scheduled
        self.c[C_LOST] = self.n_scheduled - self.c[C_RECEIVED]


# --------------------------------------------------------------------------
# Responder
# --------------------------------------------------------------------------

# Server counters (V_*, SERVER_COUNTERS) come from _wire.pxi.

cdef const char *PONG = b"+PONG\r\n"
cdef const char *OK = b"+OK\r\n"
cdef const char *UNKNOWN = b"-ERR unknown command or wrong number of arguments\r\n"
cdef const char *BAD_PROTOCOL = b"-ERR Protocol error: expected an array of bulk strings\r\n"


cdef struct ServerConn:
    int fd
    bint open
    bint want_out
    bint throttled     # over the step's rate: neither read nor answered until tokens refill
    Py_ssize_t rx_len
    Py_ssize_t tx_len
    Py_ssize_t tx_off
    uint8_t *rx
    uint8_t *tx


cdef class RespServer:
    """Answers RESP PING, GET and SET on up to `capacity` connections.

    PING gets +PONG, SET gets +OK, GET (any key) gets the bulk `get_reply`
    given; any other command gets an -ERR line, and bytes that are not RESP
    commands get -ERR Protocol error and the connection is shut down, as
    Redis does. Connections may be added while `run` is serving.

    With `max_rate_pps` the commands of all connections together are
    answered at most at that rate, from a token bucket of `burst`: a
    connection past it is left unread (TCP pushes back on its sender) until
    the bucket refills, so a client cannot pipeline past the step's rate.
    """
    cdef int epfd
    cdef int capacity
    cdef int count
    cdef bint busy_poll
    cdef Py_ssize_t rx_cap
    cdef Py_ssize_t tx_cap
    cdef Py_ssize_t reply_room
    cdef ServerConn *conns
    cdef uint8_t *buffers
    cdef epoll_event *events
    cdef uint8_t *get_reply
    cdef Py_ssize_t get_reply_len
    cdef uint64_t[::1] c
    cdef readonly object counters
    cdef double rate_per_ns
    cdef double tokens
    cdef double burst
    cdef uint64_t refill_ns
    cdef int throttled_count
    cdef int release_from       # where the next release starts: every connection gets its turn

    def __cinit__(self, int capacity, bytes get_reply, *, Py_ssize_t rx_bytes=65536,
                  bint busy_poll=False, double max_rate_pps=0.0, double burst=0.0):
        if capacity < 1 or capacity > MAX_CONNECTIONS:
            raise ValueError(f"capacity must be 1..{MAX_CONNECTIONS} (got {capacity})")
        if rx_bytes < 64:
            raise ValueError("rx_bytes must be at least 64")
        if max_rate_pps < 0 or (max_rate_pps > 0 and burst < 1):
            raise ValueError("max_rate_pps must be >= 0, and burst >= 1 with a rate")
        self.epfd = -1
        self.rate_per_ns = max_rate_pps / 1e9
        self.burst = burst
        self.tokens = burst
        self.capacity = capacity
        self.busy_poll = busy_poll
        self.get_reply_len = len(get_reply)
        self.reply_room = self.get_reply_len if self.get_reply_len > 128 else 128
        self.rx_cap = rx_bytes
        self.tx_cap = 4 * self.reply_room if 4 * self.reply_room > 65536 else 65536
        self.conns = <ServerConn *>calloc(capacity, sizeof(ServerConn))
        self.events = <epoll_event *>calloc(capacity, sizeof(epoll_event))
        self.buffers = <uint8_t *>calloc(capacity, <size_t>(self.rx_cap + self.tx_cap))
        self.get_reply = <uint8_t *>calloc(self.get_reply_len + 1, 1)
        if not (self.conns and self.events and self.buffers and self.get_reply):
            raise MemoryError()
        memcpy(self.get_reply, <const char *>get_reply, self.get_reply_len)
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, "epoll_create1 failed")
        self.counters = np.zeros(V_COUNTERS, dtype=np.uint64)
        self.c = self.counters

    def __dealloc__(self):
        if self.epfd >= 0:
            close(self.epfd)
        free(self.conns)
        free(self.events)
        free(self.buffers)
        free(self.get_reply)

    def add(self, int fd):
        """Serve a connected non-blocking socket; False when full."""
        if self.count >= self.capacity:
            return False
        cdef ServerConn *conn = &self.conns[self.count]
        conn.fd = fd
        conn.rx = self.buffers + <size_t>self.count * (self.rx_cap + self.tx_cap)
        conn.tx = conn.rx + self.rx_cap
        conn.open = True
        cdef epoll_event ev
        ev.events = EPOLLIN
        ev.data.u32 = <uint32_t>self.count
        # The slot is complete before epoll can report it to the serving thread.
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
            conn.open = False
            raise OSError(errno, "cannot watch the connection")
        self.count += 1
        self.c[V_CONNECTIONS] += 1
        return True

    def run(self, uint64_t until_ns):
        """Serve until `until_ns`; returns 0 or -errno of epoll."""
        cdef int rc
        with nogil:
            rc = self._run(until_ns)
        return rc

    cdef int _run(self, uint64_t until_ns) noexcept nogil:
        cdef uint64_t now
        cdef int got, k, timeout_ms
        cdef uint32_t events
        cdef ServerConn *conn
        while True:
            now = now_ns()
            if now >= until_ns:
                return 0
            timeout_ms = 0
            if not self.busy_poll:
                timeout_ms = <int>((until_ns - now + 999999) // 1000000)
                if timeout_ms > 20:
                    timeout_ms = 20
                if self.throttled_count > 0 and timeout_ms > 1:
                    timeout_ms = 1 + <int>((1.0 - self.tokens) / self.rate_per_ns / 1e6) \
                        if self.tokens < 1.0 else 0
                    if timeout_ms > 20:
                        timeout_ms = 20
            got = epoll_wait(self.epfd, self.events, self.capacity, timeout_ms)
            if got < 0:
                if errno == EINTR:
                    continue
                return -errno
            for k in range(got):
                conn = &self.conns[self.events[k].data.u32]
                events = self.events[k].events
                if not conn.open:
                    continue
                if events & EPOLLOUT:
                    self._flush(conn)
                    if conn.open and not conn.want_out:
                        self._serve(conn)
                if conn.open and not conn.want_out and not conn.throttled \
                        and events & (EPOLLIN | EPOLLHUP | EPOLLERR):
                    self._read(conn)
            if self.throttled_count > 0:
                self._release()

    cdef inline void _refill(self) noexcept nogil:
        cdef uint64_t now = now_ns()
        if self.refill_ns != 0 and now > self.refill_ns:
            self.tokens += <double>(now - self.refill_ns) * self.rate_per_ns
            if self.tokens > self.burst:
                self.tokens = self.burst
        self.refill_ns = now

    cdef inline void _watch(self, ServerConn *conn) noexcept nogil:
        """Point epoll at what the connection waits for now."""
        cdef epoll_event ev
        ev.events = EPOLLOUT if conn.want_out else (0 if conn.throttled else EPOLLIN)
        ev.data.u32 = <uint32_t>(conn - self.conns)
        epoll_ctl(self.epfd, EPOLL_CTL_MOD, conn.fd, &ev)

    cdef void _throttle(self, ServerConn *conn) noexcept nogil:
        conn.throttled = True
        self.throttled_count += 1
        self.c[V_THROTTLED] += 1
        self._watch(conn)

    cdef void _release(self) noexcept nogil:
        """Serve the throttled connections again, in turn, while tokens last."""
        cdef int k, i
        cdef ServerConn *conn
        self._refill()
        for k in range(self.count):
            if self.tokens < 1.0:
                return
            i = (self.release_from + k) % self.count
            conn = &self.conns[i]
            if not conn.throttled:
                continue
            conn.throttled = False
            self.throttled_count -= 1
            self.release_from = i + 1
            if not conn.open:
                continue
            self._watch(conn)
            self._serve(conn)

    cdef void _close(self, ServerConn *conn) noexcept nogil:
        epoll_ctl(self.epfd, EPOLL_CTL_DEL, conn.fd, NULL)
        shutdown(conn.fd, SHUT_RDWR)
        conn.open = False
        if conn.throttled:
            conn.throttled = False
            self.throttled_count -= 1

    cdef void _protocol_error(self, ServerConn *conn) noexcept nogil:
        cdef Py_ssize_t length = <Py_ssize_t>strlen(BAD_PROTOCOL)
        self.c[V_PROTOCOL_ERRORS] += 1
        if self.tx_cap - conn.tx_len >= length:
            self._append(conn, <const uint8_t *>BAD_PROTOCOL, length)
        self._flush(conn)
        if conn.open:
            self._close(conn)

    cdef inline void _append(self, ServerConn *conn, const uint8_t *data,
                             Py_ssize_t length) noexcept nogil:
        memcpy(conn.tx + conn.tx_len, data, <size_t>length)
        conn.tx_len += length
        self.c[V_REPLIES] += 1
        self.c[V_REPLY_BYTES] += <uint64_t>length

    cdef void _read(self, ServerConn *conn) noexcept nogil:
        if conn.rx_len == self.rx_cap:
            self._protocol_error(conn)
            return
        cdef ssize_t got = recv(conn.fd, conn.rx + conn.rx_len,
                                <size_t>(self.rx_cap - conn.rx_len), MSG_DONTWAIT)
        if got == 0:
            self.c[V_PEER_CLOSED] += 1
            self._close(conn)
            return
        if got < 0:
            if errno != EAGAIN and errno != EINTR:
                self.c[V_PEER_CLOSED] += 1
                self._close(conn)
            return
        conn.rx_len += got
        self.c[V_RECEIVED_BYTES] += <uint64_t>got
        self._serve(conn)
        if conn.open and not conn.throttled and conn.rx_len == self.rx_cap:
            # one command larger than the whole buffer: not one of ours
            self._protocol_error(conn)

    cdef void _serve(self, ServerConn *conn) noexcept nogil:
        """Answer every complete command buffered, as far as the send buffer allows."""
        cdef Py_ssize_t pos, used, before
        cdef int command = 0
        while conn.open:
            before = conn.rx_len
            pos = 0
            while pos < conn.rx_len and self.tx_cap - conn.tx_len >= self.reply_room:
                used = resp_command_end(conn.rx + pos, conn.rx_len - pos, &command)
                if used == 0:
                    break
                if used < 0:
                    self._protocol_error(conn)
                    return
                if self.rate_per_ns > 0:
                    if self.tokens < 1.0:
                        self._refill()
                    if self.tokens < 1.0:
                        self._throttle(conn)
                        break
                    self.tokens -= 1.0
                self.c[V_COMMANDS] += 1
                if command == WIRE_COMMAND_PING:
                    self._append(conn, <const uint8_t *>PONG, 7)
                elif command == WIRE_COMMAND_SET:
                    self._append(conn, <const uint8_t *>OK, 5)
                elif command == WIRE_COMMAND_GET:
                    self._append(conn, self.get_reply, self.get_reply_len)
                else:
                    self.c[V_UNKNOWN_COMMANDS] += 1
                    self._append(conn, <const uint8_t *>UNKNOWN, <Py_ssize_t>strlen(UNKNOWN))
                pos += used
            if pos > 0:
                memmove(conn.rx, conn.rx + pos, <size_t>(conn.rx_len - pos))
                conn.rx_len -= pos
            self._flush(conn)
            if not conn.open or conn.want_out or conn.throttled or conn.rx_len == 0 \
                    or conn.rx_len == before:
                return

    cdef void _flush(self, ServerConn *conn) noexcept nogil:
        """Send what is buffered; on a full socket wait for EPOLLOUT, reading nothing."""
        cdef ssize_t sent
        cdef epoll_event ev
        while conn.tx_off < conn.tx_len:
            sent = send(conn.fd, conn.tx + conn.tx_off, <size_t>(conn.tx_len - conn.tx_off),
                        MSG_DONTWAIT | MSG_NOSIGNAL)
            if sent < 0:
                if errno == EINTR:
                    continue
                if errno == EAGAIN:
                    self.c[V_EAGAIN] += 1
                    if not conn.want_out:
                        conn.want_out = True
                        ev.events = EPOLLOUT
                        ev.data.u32 = <uint32_t>(conn - self.conns)
                        epoll_ctl(self.epfd, EPOLL_CTL_MOD, conn.fd, &ev)
                    return
                self.c[V_SEND_ERRORS] += 1
                self._close(conn)
                return
            conn.tx_off += sent
        conn.tx_len = 0
        conn.tx_off = 0
        if conn.want_out:
            conn.want_out = False
            self._watch(conn)
