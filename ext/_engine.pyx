# cython: language_level=3, embedsignature=True
"""The packet and stream loops of pktbench, as one extension module.

Owns: the paced UDP sender and the UDP responder/sink (udp.pyx), the RESP
over TCP client and responder (resp.pyx), the TCP bulk pump (bulk.pyx), and
the log-linear histogram. Each workload's loops are an included file, so
they are compiled into this one module and can share cdef types; the clock,
the sleep policy and the histogram geometry (_timing.pxi) and the wire
layout (_wire.pxi, rendered from pktbench/wire.py) are included once, here.
The C calls are declared in netapi.pxd (datagrams, ppoll) and tcpapi.pxd
(streams, epoll).

Invariants:
- No Python object is touched inside a loop: buffers, message vectors,
  connections and counters are C memory or typed memoryviews taken before
  `with nogil`.
- Every loop runs until a deadline the caller gives (`until_ns`) and returns;
  Python checks stop requests and signals between calls.
- Memory is allocated once per object: a step of any length uses the same
  buffers, histograms, rings and sequence windows.
- Socket calls return counts or -errno; EAGAIN and ENOBUFS are counters,
  other errors go back to Python as -errno. No loop closes a caller's socket.
"""
cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.string cimport memcpy, memcmp, memmove, memchr, memset, strlen
from libc.stdlib cimport calloc, free
from libc.math cimport floor
from libc.errno cimport errno, EAGAIN, ENOBUFS, EINTR, ECONNRESET, EPROTO, EMSGSIZE, EIO, EINVAL
from posix.time cimport timespec, clock_gettime, CLOCK_MONOTONIC, CLOCK_REALTIME

from netapi cimport (
    iovec, msghdr, mmsghdr, cmsghdr, sockaddr_storage, socklen_t, pollfd,
    sendmmsg, recvmmsg, ppoll, prctl, CMSG_FIRSTHDR, CMSG_NXTHDR, CMSG_DATA, CMSG_SPACE, CMSG_LEN,
    MSG_DONTWAIT, MSG_WAITFORONE, MSG_TRUNC, SOL_SOCKET, SO_RXQ_OVFL, AF_INET, AF_INET6, POLLIN,
    PR_SET_TIMERSLACK, htobe64, be64toh, htobe16, be16toh, __builtin_clzll,
)
from tcpapi cimport (
    epoll_event, epoll_create1, epoll_ctl, epoll_wait, send, recv, setsockopt, shutdown, close,
    EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLL_CTL_ADD, EPOLL_CTL_MOD, EPOLL_CTL_DEL,
    EPOLL_CLOEXEC, MSG_NOSIGNAL, SHUT_RDWR, SO_RCVLOWAT,
)

import numpy as np

include "_wire.pxi"
include "_timing.pxi"
include "_meter.pxi"

HISTOGRAM_BUCKETS = HIST_BUCKETS
HISTOGRAM_SUB_BITS = HIST_SUB_BITS
# The UDP loops have the GSO send and GRO receive paths (udp.pyx).
UDP_OFFLOAD = True


def monotonic_ns():
    """CLOCK_MONOTONIC in ns, the clock every engine timestamp uses."""
    return now_ns()


def hist_record(uint64_t[::1] hist, uint64_t[::1] values):
    """Add `values` (ns) to `hist`, exactly as the packet loops do."""
    if hist.shape[0] != HIST_BUCKETS:
        raise ValueError(f"histogram must have {HIST_BUCKETS} buckets")
    cdef Py_ssize_t i
    with nogil:
        for i in range(values.shape[0]):
            hist[hist_index(values[i])] += 1


include "udp.pyx"
include "resp.pyx"
include "bulk.pyx"
