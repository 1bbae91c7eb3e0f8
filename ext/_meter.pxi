# The meter both request/response loops keep: the UDP PacedSender and the
# RESP client. Their counters arrays share the SENDER_COUNTERS layout up to
# S_COUNTERS (CLIENT_COUNTERS extends it, see pktbench/wire.py), so one
# record path fills the latency and send-lag histograms and the min/max
# counters the same way for both, and a TCP step reads like a UDP one.
#
# Included once, by _engine.pyx, after _wire.pxi and _timing.pxi.

# Raw pointers into the owner's numpy arrays, which it allocates once and
# only ever clears in place, so they stay valid for the owner's lifetime.
cdef struct Meter:
    uint64_t *c          # counters, n_counters long, SENDER_COUNTERS first
    Py_ssize_t n_counters
    uint64_t *h_sched    # reply time minus scheduled send time
    uint64_t *h_actual   # reply time minus actual send time
    uint64_t *h_lag      # actual send time minus scheduled send time


cdef inline void meter_begin(Meter *m) noexcept nogil:
    """A new phase: every counter and bucket zero, the minima at their ceiling."""
    memset(m.c, 0, <size_t>m.n_counters * sizeof(uint64_t))
    memset(m.h_sched, 0, HIST_BUCKETS * sizeof(uint64_t))
    memset(m.h_actual, 0, HIST_BUCKETS * sizeof(uint64_t))
    memset(m.h_lag, 0, HIST_BUCKETS * sizeof(uint64_t))
    m.c[S_LAT_MIN_NS] = <uint64_t>-1
    m.c[S_ACTUAL_MIN_NS] = <uint64_t>-1


cdef inline void meter_reply(Meter *m, uint64_t nbytes, uint64_t sched_lat,
                             uint64_t actual_lat) noexcept nogil:
    """One reply counted as received, with both of its latencies."""
    cdef uint64_t *c = m.c
    c[S_RECEIVED] += 1
    c[S_RECEIVED_BYTES] += nbytes
    m.h_sched[hist_index(sched_lat)] += 1
    m.h_actual[hist_index(actual_lat)] += 1
    if sched_lat < c[S_LAT_MIN_NS]:
        c[S_LAT_MIN_NS] = sched_lat
    if sched_lat > c[S_LAT_MAX_NS]:
        c[S_LAT_MAX_NS] = sched_lat
    if actual_lat < c[S_ACTUAL_MIN_NS]:
        c[S_ACTUAL_MIN_NS] = actual_lat
    if actual_lat > c[S_ACTUAL_MAX_NS]:
        c[S_ACTUAL_MAX_NS] = actual_lat


cdef inline void meter_lag(Meter *m, uint64_t lag) noexcept nogil:
    """How late one request left against its schedule."""
    m.h_lag[hist_index(lag)] += 1
    if lag > m.c[S_LAG_MAX_NS]:
        m.c[S_LAG_MAX_NS] = lag


cdef object meter_snapshot(Meter *m):
    """(monotonic ns, counters copy, reply-latency histogram copy), taken now.

    Meant for a Python thread reading a loop that runs without the GIL in
    another thread (interval reports): the owner's arrays are never
    reallocated, and each aligned 64-bit word is copied whole, so a
    snapshot is at worst a few packets behind, never garbage. A reader
    subtracts two snapshots of one phase; `begin` zeroes the counters, so a
    sent count lower than the previous snapshot's means a new phase.
    """
    counters = np.empty(m.n_counters, dtype=np.uint64)
    hist = np.empty(HIST_BUCKETS, dtype=np.uint64)
    cdef uint64_t[::1] cv = counters
    cdef uint64_t[::1] hv = hist
    cdef uint64_t t = now_ns()
    memcpy(&cv[0], m.c, <size_t>m.n_counters * sizeof(uint64_t))
    memcpy(&hv[0], m.h_sched, HIST_BUCKETS * sizeof(uint64_t))
    return t, counters, hist
