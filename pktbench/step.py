"""One step's numbers, as the reports and the knee finder read them.

Owns the step dict (see the keys below): it combines what the sender
measured with the counters the receiver sent back over the control channel.
Every key names its unit. Pure computation, no I/O.
"""
from __future__ import annotations

from typing import Any

from pktbench import engine
from pktbench.protocol import StepParams

# A sender that delivered less than this share of its schedule was the
# bottleneck itself; the step says nothing about the path.
SENDER_BOUND_RATIO = 0.99


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole > 0 else 0.0


def summarize_step(params: StepParams, sender: engine.SenderOutcome, receiver: dict[str, Any],
                   *, index: int = 0, repeat: int = 0) -> dict[str, Any]:
    """The step dict for one measured window."""
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
    sender_bound = offered is not None and sent_pps < SENDER_BOUND_RATIO * offered
    summaries = engine.latency_summaries(sender)
    return {
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
        "sent_mbps": c["sent_bytes"] * 8 / duration_s / 1e6 if duration_s else 0.0,
        "received_mbps": received_bytes * 8 / duration_s / 1e6 if duration_s else 0.0,
        "latency_us": summaries["latency_us"] if rr else None,
        "latency_actual_us": summaries["latency_actual_us"] if rr else None,
        "send_lag_us": summaries["send_lag_us"],
        "jitter_us": receiver.get("jitter_us") if not rr else None,
        "latency_mode": "busy-poll" if params.busy_poll else "blocking",
        "sender_bound": sender_bound,
        "sender": {
            "eagain": c["eagain"],
            "enobufs": c["enobufs"],
            "rcvbuf_drops": c["rcvbuf_drops"],
            "cpu_percent": 100.0 * _ratio(sender.cpu_s, duration_s),
            "stopped_early": sender.stopped_early,
        },
        "receiver": receiver,
        "loss_episodes": episodes,
        "attribution": "ok",
        "failures": [],
    }
