"""One step's numbers, as the reports and the knee finder read them.

Owns the step result (StepResult below, documented in docs/step-result.md,
which `python -m pktbench.step` renders from STEP_FIELDS): it combines what
the sender measured with the counters the receiver sent back over the
control channel. It is built here, in `summarize_step`, and nowhere else;
what a workload knows beyond the common figures comes in as arguments, and
readers that annotate a step (the knee finder) annotate a copy. Every key
names its unit. Pure computation, no I/O.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from pktbench import engine
from pktbench.protocol import StepParams

# A sender that delivered less than this share of its schedule was the
# bottleneck itself; the step says nothing about the path.
SENDER_BOUND_RATIO = 0.99


class LossEpisodes(TypedDict):
    count: float
    max_length: float
    mean_length: float


class SenderFigures(TypedDict, total=False):
    eagain: int
    enobufs: int
    rcvbuf_drops: int
    cpu_percent: float
    stopped_early: bool
    interface: str | None
    socket_buffers_bytes: dict[str, int]
    nic: dict[str, Any] | None
    workers: int
    transport: str
    connections: int
    pipeline: int
    written_requests: int
    warmup_requests: int
    window_waits: int
    resp_errors: int
    late_replies: int
    engine: dict[str, Any] | None


class EngineFigures(TypedDict):
    udp_gso: bool
    udp_gro: bool
    gso_segments: int
    gso_segments_mean: float
    burst_packets: int
    gso_fallback: str | None


class InterfacePackets(TypedDict):
    """The client's egress device's own packet counters over the measured window."""

    name: str
    tx_packets: int
    rx_packets: int
    tx_pps: float
    rx_pps: float


class PathFigures(TypedDict):
    """The packets that crossed the path during a request/response step's window.

    TCP_INFO of our connections (segments both ways, retransmits), and the
    egress device's counters when the client can read them (they also count
    every other packet on that device: the control connection, other hosts'
    traffic).
    """

    source: str
    window_s: float
    connections: int
    toward_server_packets: int
    back_packets: int
    toward_server_pps: float
    back_pps: float
    packets_per_request: float
    offered_toward_server_pps: float
    retransmits: int
    retransmits_pps: float
    interface: InterfacePackets | None


class RequestFigures(TypedDict):
    """A request/response step over TCP counted in requests (rr-tcp, redis://)."""

    offered_rps: float
    sent_rps: float
    answered_rps: float
    requests: int
    answered_requests: int
    late_requests: int
    unanswered_requests: int
    unsent_requests: int
    error_requests: int
    timeout_s: float


class _StepResultOptional(TypedDict, total=False):
    # NotRequired is 3.11+; a total=False base gives the same on 3.10.
    workers: list[dict[str, Any]]
    search_trial: bool
    intervals: list[dict[str, Any]]
    engine: EngineFigures
    offered_rps: float
    sent_rps: float
    answered_rps: float
    requests: int
    answered_requests: int
    late_requests: int
    unanswered_requests: int
    unsent_requests: int
    error_requests: int
    timeout_s: float
    path: PathFigures | None


class StepResult(_StepResultOptional):
    index: int
    repeat: int
    workload: str
    command: str
    offered_pps: float
    rate_max: bool
    sent_pps: float
    received_pps: float
    sent_packets: int
    received_packets: int
    lost_packets: int
    loss_ratio: float
    late_packets: int
    duplicate_packets: int
    reordered_packets: int
    size_bytes: int
    duration_s: float
    warmup_s: float
    sent_bps: float
    received_bps: float
    latency_us: dict[str, float] | None
    latency_actual_us: dict[str, float] | None
    send_lag_us: dict[str, float] | None
    jitter_us: float | None
    latency_mode: str
    sender_bound: bool
    sender: SenderFigures
    receiver: dict[str, Any]
    loss_episodes: LossEpisodes
    attribution: str
    failures: list[str]


# key -> what it holds, in words with its unit; docs/step-result.md is rendered from this.
STEP_FIELDS: dict[str, str] = {
    "index": "position of the step in its sweep, from 0",
    "repeat": "repetition of this rate, from 0",
    "workload": "rr, blast, rr-tcp (a redis:// target is rr-tcp too)",
    "command": "RESP command of rr requests (ping, get, set), none for one-way",
    "offered_pps": "rate the schedule asked for, packets/s (the sent rate when rate_max)",
    "rate_max": "true when the step ran as fast as the sender could",
    "sent_pps": "rate that left the sender over the measured window, packets/s",
    "received_pps": "rate the receiver counted (rr: responses), packets/s",
    "sent_packets": "packets sent in the measured window",
    "received_packets": "packets counted at the receiver (rr: responses back)",
    "lost_packets": "sent minus received (rr: requests without a response in time)",
    "loss_ratio": "lost_packets / sent_packets",
    "late_packets": "responses after their timeout (blast: stale datagrams)",
    "duplicate_packets": "packets counted more than once",
    "reordered_packets": "packets that arrived after a later sequence number (blast)",
    "size_bytes": "UDP payload (or TCP request) size, bytes",
    "duration_s": "span the sender actually sent over, seconds",
    "warmup_s": "traffic before the window that was not counted, seconds",
    "sent_bps": "payload bits sent per second, bit/s",
    "received_bps": "payload bits received per second, bit/s",
    "latency_us": "rr: round trip from the scheduled send time (p50, p90, p99, p999, min, "
                  "mean, max), microseconds; null for one-way",
    "latency_actual_us": "rr: round trip from the actual send time, same keys; null for one-way",
    "send_lag_us": "how late sends left against their schedule, same keys, microseconds",
    "jitter_us": "blast: RFC 3550 interarrival jitter, microseconds; null for rr",
    "latency_mode": "busy-poll or blocking: how both ends waited",
    "sender_bound": "the sender could not keep its schedule: the step says nothing about the "
                    "path",
    "sender": "the sender's own figures (SenderFigures: eagain, enobufs, rcvbuf_drops, "
              "cpu_percent, stopped_early; interface, socket_buffers_bytes, nic where known; "
              "workers for multi-flow steps; transport, connections, pipeline, "
              "written_requests, warmup_requests, window_waits, resp_errors, late_replies "
              "for rr-tcp)",
    "receiver": "the counters the far end sent back, as it sent them",
    "loss_episodes": "runs of consecutive losses: count, max_length, mean_length (packets)",
    "attribution": "where lost packets went (ok until the knee finder looks)",
    "failures": "knee criteria the step failed, in words (empty until the knee finder looks)",
    "workers": "multi-flow steps only: one entry per sender process and flow",
    "engine": "UDP steps: which datagram path ran (EngineFigures): udp_gso (the sender's "
              "datagrams left as UDP GSO buffers), udp_gro (the receiving socket read "
              "coalesced trains, UDP_GRO), gso_segments (datagrams a GSO buffer carried at "
              "most; 0 without GSO), gso_segments_mean (datagrams per GSO buffer sent), "
              "burst_packets (datagrams a paced send released at once), gso_fallback (the "
              "errno that turned GSO off mid-step, else null)",
    "search_trial": "NDR/PDR search trials only: true",
    "intervals": "with -i/--interval only: the window every S seconds as it ran (start_s, "
                 "end_s from t0; sent_packets, received_packets, sent_pps, received_pps, "
                 "latency_p50_us, latency_p99_us; received and latency null for one-way); "
                 "see pktbench/intervals.py",
    "offered_rps": "rr-tcp and redis:// steps only: requests/s the schedule asked for "
                   "(offered_pps holds the same number: the schedule axis every step shares)",
    "sent_rps": "rr-tcp and redis://: requests written to the connections per second",
    "answered_rps": "rr-tcp and redis://: requests answered within timeout_s, per second",
    "requests": "rr-tcp and redis://: requests the measured window scheduled",
    "answered_requests": "rr-tcp and redis://: requests answered within timeout_s",
    "late_requests": "rr-tcp and redis://: requests answered after timeout_s (TCP delivered "
                     "them: late, not lost)",
    "unanswered_requests": "rr-tcp and redis://: requests never answered by the end of the "
                           "drain, unsent_requests included",
    "unsent_requests": "rr-tcp and redis://: requests never written because their "
                       "connection's pipeline window stayed full",
    "error_requests": "rr-tcp and redis://: requests answered with a RESP error",
    "timeout_s": "rr-tcp and redis://: how long a reply may take to count as answered, seconds",
    "path": "rr-tcp and redis://: the packets that crossed the path in the measured window "
            "(PathFigures: source, window_s, connections, toward_server_packets, "
            "back_packets, toward_server_pps, back_pps, retransmits, retransmits_pps from "
            "TCP_INFO tcpi_segs_out, tcpi_segs_in, tcpi_total_retrans summed over our "
            "connections; packets_per_request: toward_server_packets less retransmits per "
            "request written in the window; offered_toward_server_pps: offered_rps x "
            "packets_per_request, what the schedule asked the path to carry; interface: the "
            "egress device's name, tx_packets, rx_packets, tx_pps, rx_pps where the client "
            "can read them, else null); null when TCP_INFO is unreadable",
}


def render_doc() -> str:
    """docs/step-result.md, from STEP_FIELDS."""
    optional = StepResult.__optional_keys__
    rows = "\n".join(f"| `{key}` | {'only some steps' if key in optional else 'always'} | "
                      f"{text} |" for key, text in STEP_FIELDS.items())
    return ("# The step result\n\n"
            "<!-- rendered by `python -m pktbench.step` from pktbench/step.py; "
            "a test fails when they differ -->\n\n"
            "Every step a sweep, a run or a search measures is one `StepResult`\n"
            "(`pktbench/step.py`): a mapping with the keys below, built once by\n"
            "`summarize_step` and never changed afterwards. The JSON result's `steps` are\n"
            "these mappings, annotated by the knee finder (`failures`, `attribution`).\n"
            "Every key that carries a number names its unit, as a suffix: `_pps`\n"
            "packets/s, `_bps` bits/s, `_bytes`, `_packets`, `_s` seconds, `_ms`\n"
            "milliseconds, `_us` microseconds, `_ns` nanoseconds, `_percent`, `_ratio`\n"
            "(0 to 1). The same holds for every result kind (sweep, bulk, fleet).\n\n"
            "| key | present | what it holds |\n|---|---|---|\n" + rows + "\n")


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole > 0 else 0.0


def summarize_step(params: StepParams, sender: engine.SenderOutcome, receiver: dict[str, Any],
                   *, index: int = 0, repeat: int = 0,
                   sender_figures: Mapping[str, Any] | None = None,
                   sender_bound: bool = False,
                   workers: Sequence[dict[str, Any]] | None = None,
                   requests: RequestFigures | None = None,
                   path: PathFigures | None = None) -> StepResult:
    """The step result for one measured window.

    `sender_figures`: what the workload's client knows beyond the engine's
    counters (see SenderFigures); `sender_bound`: the workload's own reason
    to call the sender the bottleneck, beside the delivered-rate rule;
    `workers`: a multi-flow step's per-flow figures; `requests` and `path`:
    a request/response step over TCP counted in requests, and the packets
    its connections put on the path.
    """
    c = sender.counters
    duration_s = sender.send_span_s
    sent = c["sent"]
    rr = params.workload == "rr"
    if rr:
        received = c["received"]
        received_bytes = c["received_bytes"]
        lost = sent - received
        episodes: dict[str, float] = {"count": c["loss_episodes"],
                                      "max_length": c["loss_max_run"]}
        reordered = 0
        duplicates = c["duplicate"]
        late = c["late"]
    else:
        received = int(receiver.get("received", 0))
        received_bytes = int(receiver.get("received_bytes", 0))
        lost = max(sent - received, 0)
        episodes = {"count": int(receiver.get("loss_episodes", 0)),
                    "max_length": int(receiver.get("loss_max_run", 0))}
        reordered = int(receiver.get("reordered", 0))
        duplicates = int(receiver.get("duplicate", 0))
        late = int(receiver.get("stale", 0))
    episodes["mean_length"] = _ratio(lost, episodes["count"]) if episodes["count"] else 0.0
    offered = params.rate_pps
    sent_pps = sender.sent_pps
    sender_bound = sender_bound or (offered is not None
                                    and sent_pps < SENDER_BOUND_RATIO * offered)
    summaries = engine.latency_summaries(sender)
    figures: SenderFigures = {
        "eagain": c["eagain"],
        "enobufs": c["enobufs"],
        "rcvbuf_drops": c["rcvbuf_drops"],
        "cpu_percent": 100.0 * _ratio(sender.cpu_s, duration_s),
        "stopped_early": sender.stopped_early,
    }
    figures.update(sender_figures or {})  # type: ignore[typeddict-item]
    result: StepResult = {
        "index": index,
        "repeat": repeat,
        "workload": params.workload,
        "command": params.command,
        "offered_pps": float(offered) if offered is not None else sent_pps,
        "rate_max": offered is None,
        "sent_pps": sent_pps,
        "received_pps": _ratio(received, duration_s),
        "sent_packets": sent,
        "received_packets": received,
        "lost_packets": lost,
        "loss_ratio": _ratio(lost, sent),
        "late_packets": late,
        "duplicate_packets": duplicates,
        "reordered_packets": reordered,
        "size_bytes": params.size_bytes,
        "duration_s": duration_s,
        "warmup_s": params.warmup_s,
        "sent_bps": c["sent_bytes"] * 8 / duration_s if duration_s else 0.0,
        "received_bps": received_bytes * 8 / duration_s if duration_s else 0.0,
        "latency_us": summaries["latency_us"] if rr else None,
        "latency_actual_us": summaries["latency_actual_us"] if rr else None,
        "send_lag_us": summaries["send_lag_us"],
        "jitter_us": receiver.get("jitter_us") if not rr else None,
        "latency_mode": "busy-poll" if params.busy_poll else "blocking",
        "sender_bound": sender_bound,
        "sender": figures,
        "receiver": receiver,
        "loss_episodes": {"count": episodes["count"], "max_length": episodes["max_length"],
                          "mean_length": episodes["mean_length"]},
        "attribution": "ok",
        "failures": [],
    }
    if workers is not None:
        result["workers"] = list(workers)
    datagrams = figures.get("engine")
    if isinstance(datagrams, dict):
        far = receiver.get("engine")
        far_gro = bool(far.get("udp_gro")) if isinstance(far, dict) else False
        result["engine"] = {
            "udp_gso": bool(datagrams.get("udp_gso")),
            # blast: the receiver's socket; rr: both ends read replies/requests coalesced
            "udp_gro": far_gro and (not rr or bool(datagrams.get("udp_gro"))),
            "gso_segments": int(datagrams.get("gso_segments", 0)),
            "gso_segments_mean": float(datagrams.get("gso_segments_mean", 0.0)),
            "burst_packets": int(datagrams.get("burst_packets", 1)),
            "gso_fallback": datagrams.get("gso_fallback"),
        }
    if requests is not None:
        result.update(requests)  # type: ignore[typeddict-item]
        result["path"] = path
    return result


def counts_requests(step: Mapping[str, Any]) -> bool:
    """True for a step counted in requests (rr-tcp, redis://), which has RequestFigures."""
    return "offered_rps" in step


if __name__ == "__main__":
    sys.stdout.write(render_doc())
