"""Multi-core UDP steps: N client worker processes, N flows, N server sockets.

Owns both ends of a UDP step (rr or blast) with StepParams.streams = N > 1:

- client: a WorkerPool of N processes (multiprocessing "spawn" context),
  started once per control session (kept by StepClient.reuse). Each worker opens its own connected UDP
  data socket (its own source port, so its own flow) and runs the engine's
  paced sender on it for every step, at rate_pps / N, with the header's
  stream_id = its index. The one control session asks for the step with the
  list of the workers' ports (StepRequest "client_ports"); the results are
  merged (counters summed, extremes taken, histograms added bucket-wise)
  into one SenderOutcome, summarized by step.summarize_step, so the step
  dict keeps its keys; per-worker figures go under step["workers"].
- server: StreamResponders, per step N UDP sockets bound to the data port
  with SO_REUSEPORT, each connect()ed to one client port. Linux delivers a
  datagram to the connected socket matching its exact 4-tuple before any
  unconnected one, so each flow lands on its own socket and its own engine
  Responder, served by its own thread (the engine drops the GIL).

Invariants:
- The data token of a step is the same on every flow (session.data_token).
- A worker never outlives its pool: the pool is closed with the session, and
  workers are daemons that also exit when their pipe closes.
- A server socket of a step is closed when its step ends, and never while
  its responder thread runs.
- streams == 1 never comes here: that is the single-flow path of workloads.udp.

Must not: touch the Client's own data socket, or run a step's traffic
outside the step's deadline (each worker runs engine.run_sender, bounded).
"""
from __future__ import annotations

import errno
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pktbench import engine, errors, nic, wire
from pktbench.errors import ConfigError, PktbenchError, RemoteProtocolError
from pktbench.protocol import StepParams
from pktbench.results import interface_for
from pktbench.step import StepResult, summarize_step
from pktbench.workloads.base import ArmedStep, StepClient, drive_step

WORKER_START_TIMEOUT_S = 60.0  # a spawned interpreter imports numpy and the engine
START_DELAY_S = 0.1  # every worker starts its schedule at the same instant, this far ahead
_MIN_COUNTERS = ("lat_min_ns", "actual_min_ns")
_MAX_COUNTERS = ("lat_max_ns", "actual_max_ns", "lag_max_ns", "loss_max_run")


# --------------------------------------------------------------------------
# Splitting a step and merging what the workers measured
# --------------------------------------------------------------------------

def split_outstanding(outstanding: int | None, workers: int) -> list[int | None]:
    """Each worker's share of a closed loop's requests in flight (None: open loop)."""
    if outstanding is None:
        return [None] * workers
    if outstanding < workers:
        raise ConfigError(f"outstanding {outstanding} is fewer requests in flight than "
                          f"{workers} workers: give at least one each (--outstanding "
                          f">= {workers}) or fewer workers")
    return [outstanding // workers + (1 if i < outstanding % workers else 0)
            for i in range(workers)]


def merge_outcomes(outcomes: Sequence[engine.SenderOutcome],
                   offered_pps: float | None) -> engine.SenderOutcome:
    """One SenderOutcome for the whole step: counts and histograms summed,
    extremes taken; the send span is the longest worker's (they share t0)."""
    if not outcomes:
        raise ValueError("no outcomes to merge")
    counters: dict[str, int] = {}
    for name in outcomes[0].counters:
        values = [o.counters[name] for o in outcomes]
        if name in _MIN_COUNTERS:
            counters[name] = min(values)
        elif name in _MAX_COUNTERS:
            counters[name] = max(values)
        else:
            counters[name] = sum(values)

    def added(attribute: str) -> Any:
        total = np.zeros_like(getattr(outcomes[0], attribute))
        for outcome in outcomes:
            total += getattr(outcome, attribute)
        return total

    return engine.SenderOutcome(
        counters=counters,
        latency_hist=added("latency_hist"),
        actual_latency_hist=added("actual_latency_hist"),
        send_lag_hist=added("send_lag_hist"),
        offered_pps=offered_pps,
        duration_s=max(o.duration_s for o in outcomes),
        send_span_s=max(o.send_span_s for o in outcomes),
        cpu_s=sum(o.cpu_s for o in outcomes),
        stopped_early=any(o.stopped_early for o in outcomes),
        warmup_sent=sum(o.warmup_sent for o in outcomes),
        extra={"engine": engine.merge_engine_figures(
            [figures for figures in (o.extra.get("engine") for o in outcomes)
             if isinstance(figures, dict)])},
    )


def check_sent_per_stream(value: object, streams: int) -> list[int]:
    """The per-flow sent counts of a StepStop, or RemoteProtocolError."""
    if (not isinstance(value, list) or len(value) != streams
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                       for v in value)):
        raise RemoteProtocolError(f"StepStop without valid 'sent_per_stream' counts "
                                  f"(one per stream, {streams})")
    return list(value)


# --------------------------------------------------------------------------
# Client: worker processes
# --------------------------------------------------------------------------

def _flush(sock: socket.socket) -> None:
    while True:
        try:
            sock.recv(65536, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            continue  # a queued ICMP error from an earlier step


def _worker_main(conn: Any, index: int, server: tuple[str, int], buffer_bytes: int,
                 cpu: int | None, stop: Any) -> None:
    """One worker: its own data socket, then one run_sender per step message."""
    # Ctrl-C reaches the whole process group; the parent decides, not us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        buffers = engine.tune_socket(sock, buffer_bytes)
        sock.connect(server)
    except BaseException as exc:  # reported to the parent, which raises it
        conn.send(("error", type(exc).__name__, str(exc)))
        return
    conn.send(("ready", sock.getsockname()[1], buffers.rcvbuf_bytes, buffers.sndbuf_bytes))
    try:
        while True:
            try:
                job = conn.recv()
            except (EOFError, OSError):
                return
            if job is None:
                return
            try:
                _flush(sock)
                conn.send(("ok", engine.run_sender(sock, stop=stop, **job)))
            except BaseException as exc:
                conn.send(("error", type(exc).__name__, str(exc)))
    finally:
        sock.close()


def _raise_worker_error(index: int, kind: str, message: str) -> None:
    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, PktbenchError):
        raise cls(message)
    raise PktbenchError(f"worker {index} failed: {kind}: {message}")


@dataclass(frozen=True)
class WorkerInfo:
    index: int
    client_port: int
    cpu: int | None
    rcvbuf_bytes: int
    sndbuf_bytes: int


class WorkerPool:
    """N sender processes, each with its own data socket to `server`."""

    def __init__(self, count: int, server: tuple[str, int], *,
                 buffer_bytes: int = engine.DEFAULT_BUFFER_BYTES,
                 cpus: Sequence[int] = ()) -> None:
        if count < 1:
            raise ConfigError(f"workers must be >= 1 (got {count})")
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._jobs: list[tuple[Any, Any]] = []
        self.workers: list[WorkerInfo] = []
        try:
            for index in range(count):
                cpu = cpus[index % len(cpus)] if cpus else None
                parent, child = context.Pipe()
                process = context.Process(
                    target=_worker_main, args=(child, index, server, buffer_bytes, cpu,
                                               self._stop),
                    daemon=True, name=f"pktbench-worker-{index}")
                process.start()
                child.close()
                self._jobs.append((process, parent))
            for index, (process, parent) in enumerate(self._jobs):
                if not parent.poll(WORKER_START_TIMEOUT_S):
                    raise PktbenchError(f"worker {index} did not start within "
                                        f"{WORKER_START_TIMEOUT_S:g} s")
                reply = parent.recv()
                if reply[0] != "ready":
                    _raise_worker_error(index, reply[1], reply[2])
                cpu = cpus[index % len(cpus)] if cpus else None
                self.workers.append(WorkerInfo(index, reply[1], cpu, reply[2], reply[3]))
        except BaseException:
            self.close()
            raise

    @property
    def count(self) -> int:
        return len(self._jobs)

    @property
    def ports(self) -> list[int]:
        return [w.client_port for w in self.workers]

    def run(self, jobs: Sequence[dict[str, Any]], *, timeout_s: float,
            stop: threading.Event | None = None) -> list[engine.SenderOutcome]:
        """Give worker i jobs[i] (run_sender's arguments); their outcomes, in order."""
        self._stop.clear()
        for (_, parent), job in zip(self._jobs, jobs):
            parent.send(job)
        pending: dict[Any, int] = {parent: index for index, (_, parent) in enumerate(self._jobs)}
        outcomes: dict[int, engine.SenderOutcome] = {}
        failure: tuple[int, str, str] | None = None
        deadline = time.monotonic() + timeout_s
        while pending:
            if stop is not None and stop.is_set():
                self._stop.set()  # the workers stop at their next chunk and report
            if time.monotonic() > deadline:
                self.close()
                raise PktbenchError(f"{len(pending)} worker(s) did not finish the step within "
                                    f"{timeout_s:g} s")
            for ready in multiprocessing.connection.wait(list(pending), timeout=0.05):
                index = pending.pop(ready)
                connection: Any = ready
                try:
                    reply: Any = connection.recv()
                except (EOFError, OSError):
                    self.close()
                    raise PktbenchError(f"worker {index} exited in the middle of a step") from None
                if reply[0] == "ok":
                    outcomes[index] = reply[1]
                elif failure is None:
                    failure = (index, reply[1], reply[2])
        if failure is not None:
            _raise_worker_error(*failure)
        return [outcomes[i] for i in range(len(self._jobs))]

    def close(self) -> None:
        for _, parent in self._jobs:
            try:
                parent.send(None)
            except OSError:
                pass
        for process, parent in self._jobs:
            process.join(timeout=2.0)
            if process.is_alive():
                process.kill()
                process.join()
            parent.close()
        self._jobs = []


def _pool_for(client: StepClient, count: int) -> WorkerPool:
    """The session's pool of `count` workers, started on first use."""
    return client.reuse(
        "multiflow.workers", lambda pool: isinstance(pool, WorkerPool) and pool.count == count,
        lambda: WorkerPool(count, client.server_address, buffer_bytes=client.buffer_bytes,
                           cpus=client.worker_cpus))


def run_client_step(client: StepClient, params: StepParams, *, index: int = 0, repeat: int = 0,
                    stop: threading.Event | None = None) -> StepResult:
    """Run one rr or blast step over params.streams worker flows; its step result."""
    count = params.streams
    outstanding = split_outstanding(params.outstanding if params.workload == "rr" else None,
                                     count)
    pool = _pool_for(client, count)
    interface = interface_for(client.server_address[0])
    nic_before = nic.read_counters(interface)
    share_pps = params.rate_pps / count if params.rate_pps is not None else None

    def send(armed: ArmedStep) -> list[engine.SenderOutcome]:
        start_ns = engine.monotonic_ns() + int(START_DELAY_S * 1e9)
        jobs = [{
            "template": wire.build_request(wire.COMMANDS[params.command], params.size_bytes,
                                           token=armed.token, seq=0, send_ns=0, stream_id=i),
            "rate_pps": share_pps, "duration_s": params.duration_s, "warmup_s": params.warmup_s,
            "drain_s": params.drain_s, "expect_replies": params.workload == "rr",
            "busy_poll": params.busy_poll, "timeout_s": params.timeout_s,
            "outstanding": outstanding[i], "start_ns": start_ns,
            "gso": params.gso, "burst": params.burst,
        } for i in range(count)]
        limit_s = (START_DELAY_S + params.warmup_s + params.duration_s * 1.1 + params.drain_s
                   + params.timeout_s + 15.0)
        return pool.run(jobs, timeout_s=limit_s, stop=stop)

    outcomes, receiver = drive_step(
        client, params, send,
        lambda outcomes: {"sent": sum(o.counters["sent"] for o in outcomes),
                          "sent_per_stream": [o.counters["sent"] for o in outcomes]},
        client_ports=pool.ports)
    merged = merge_outcomes(outcomes, params.rate_pps)
    per_stream = receiver.get("streams") or [{}] * count
    flows = [_worker_figures(params, info, outcome, per_stream[i] if i < len(per_stream) else {})
             for i, (info, outcome) in enumerate(zip(pool.workers, outcomes))]
    figures = {
        "workers": count,
        "interface": interface,
        "socket_buffers_bytes": {"rcvbuf": pool.workers[0].rcvbuf_bytes,
                                 "sndbuf": pool.workers[0].sndbuf_bytes},
        "nic": nic.deltas(nic_before, nic.read_counters(interface)),
        "engine": merged.extra.get("engine"),
    }
    return summarize_step(params, merged, receiver, index=index, repeat=repeat,
                          sender_figures=figures, workers=flows)


def _worker_figures(params: StepParams, info: WorkerInfo, outcome: engine.SenderOutcome,
                    stream: dict[str, Any]) -> dict[str, Any]:
    c = outcome.counters
    rr = params.workload == "rr"
    received = c["received"] if rr else int(stream.get("received", 0))
    summaries = engine.latency_summaries(outcome)
    return {
        "worker": info.index,
        "stream_id": info.index,
        "client_port": info.client_port,
        "cpu": info.cpu,
        "offered_pps": params.rate_pps / params.streams if params.rate_pps else None,
        "sent_packets": c["sent"],
        "received_packets": received,
        "sent_pps": outcome.sent_pps,
        "loss_ratio": (c["sent"] - received) / c["sent"] if c["sent"] else 0.0,
        "latency_us": summaries["latency_us"] if rr else None,
        "send_lag_us": summaries["send_lag_us"],
        "cpu_percent": 100.0 * outcome.cpu_s / outcome.send_span_s if outcome.send_span_s else 0.0,
        "stopped_early": outcome.stopped_early,
        "server_received_packets": int(stream.get("received", 0)),
    }


# --------------------------------------------------------------------------
# Server: one connected socket and responder per flow
# --------------------------------------------------------------------------

class StreamResponders:
    """The server side of one multi-flow UDP step (a base.UdpResponder)."""

    own_sockets = True  # fresh sockets: their drop counters are this step's

    def __init__(self, main: socket.socket, *, local_ip: str, peers: Sequence[tuple[str, int]],
                 token: int, command: int, size_bytes: int, sink: bool,
                 busy_poll: bool = False, buffer_bytes: int = engine.DEFAULT_BUFFER_BYTES,
                 cpus: Sequence[int] = (), seq_limit: int = (1 << 64) - 1,
                 rate_cap: tuple[float, float] | None = None, gso: str = "off") -> None:
        self.peers = list(peers)
        self.cpus = tuple(cpus)
        self.cpu_s = 0.0
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        port = main.getsockname()[1]
        try:
            for peer in self.peers:
                sock = socket.socket(main.family, socket.SOCK_DGRAM)
                self._sockets.append(sock)
                if main.family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind((local_ip, port))
                sock.connect(peer)
                engine.tune_socket(sock, buffer_bytes)
        except OSError as exc:
            self.close()
            raise ConfigError(f"cannot open a data socket per flow on {local_ip}:{port}: "
                              f"{exc.strerror or exc} (the data socket needs SO_REUSEPORT)"
                              ) from None
        self.loops = [engine.ResponderLoop(sock, peer=peer, token=token, command=command,
                                           size_bytes=size_bytes, sink=sink, busy_poll=busy_poll,
                                           seq_limit=seq_limit, rate_cap=rate_cap, gso=gso,
                                           flows=len(self.peers))
                      for sock, peer in zip(self._sockets, self.peers)]

    def _serve_one(self, index: int, until_ns: int, stop: threading.Event | None) -> None:
        if self.cpus:
            try:
                os.sched_setaffinity(0, {self.cpus[index % len(self.cpus)]})  # this thread
            except OSError:
                pass
        before = engine.thread_cpu_s()
        loop = self.loops[index]
        chunk_ns = int(engine.CHUNK_S * 1e9)
        try:
            while True:
                now = engine.monotonic_ns()
                if now >= until_ns or (stop is not None and stop.is_set()):
                    return
                rc = loop.engine.run(min(until_ns, now + chunk_ns))
                if rc == -errno.ECONNREFUSED:  # a peer's ICMP error: no reason to stop serving
                    continue
                engine.check_rc(rc, "serving")
        finally:
            with self._lock:
                self.cpu_s += engine.thread_cpu_s() - before

    def serve_until(self, until_ns: int, stop: threading.Event | None = None) -> None:
        """Serve every flow in its own thread until `until_ns` or `stop`."""
        self._threads = [threading.Thread(target=self._serve_one, args=(i, until_ns, stop),
                                          daemon=True, name=f"pktbench-flow-{i}")
                         for i in range(len(self.loops))]
        try:
            for thread in self._threads:
                thread.start()
        finally:
            for thread in self._threads:
                if thread.ident is not None:
                    thread.join()
            self.close()  # counters and finish need the engines, not the sockets

    def bin_counts(self, lo: int, hi: int) -> list[int] | None:
        return None  # bins are for single-flow rr steps (StepParams refuses the rest)

    def check_stop(self, sender: dict[str, Any]) -> object:
        return check_sent_per_stream(sender.get("sent_per_stream"), len(self.loops))

    def finish(self, sent_per_stream: object) -> None:
        assert isinstance(sent_per_stream, list)
        for loop, sent in zip(self.loops, sent_per_stream):
            loop.finish(sent)

    def counters(self) -> dict[str, object]:
        """ResponderLoop.counters summed over the flows, plus "streams": each
        flow's own (its client port, what it received and dropped)."""
        streams: list[dict[str, Any]] = []
        for index, (loop, peer) in enumerate(zip(self.loops, self.peers)):
            own: dict[str, Any] = dict(loop.counters())
            own["stream_id"] = index
            own["client_port"] = peer[1]
            streams.append(own)
        merged: dict[str, Any] = {}
        for name in streams[0]:
            if name in ("drops", "jitter_us", "stream_id", "client_port", "engine"):
                continue
            values = [s[name] for s in streams]
            merged[name] = max(values) if name == "loss_max_run" else sum(values)
        merged["drops"] = {reason: sum(s["drops"][reason] for s in streams)
                           for reason in streams[0]["drops"]}
        jitters = [s["jitter_us"] for s in streams if s["jitter_us"] is not None]
        merged["jitter_us"] = max(jitters) if jitters else None  # the worst flow's
        merged["engine"] = engine.merge_engine_figures([s["engine"] for s in streams])
        merged["streams"] = streams
        result: dict[str, object] = merged
        return result

    def close(self) -> None:
        if any(thread.is_alive() for thread in self._threads):
            return  # a responder still runs on these sockets; serve_until's end closes them
        for sock in self._sockets:
            sock.close()
        self._sockets = []
