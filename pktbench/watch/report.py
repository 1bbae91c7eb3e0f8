"""The watch summary: from the records alone (the live watch and `watch-report` share it).

Owns: `summarize(records)` (availability, totals, the outage list, latency
per hour, knee checks over time, sessions and pauses), `render_text` (the
summary in lines), and `plot` (latency band, loss, outages shaded, knee
checks as points; matplotlib, the `plot` extra).

Invariants: computes only from records as written to the JSONL file, so a
summary of the files equals the one the watch printed when it ended.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pktbench.errors import ConfigError

Record = dict[str, Any]


def _iso(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    millis = int(epoch * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{millis:03d}Z"


class IntervalDigest:
    """What the summary needs of the interval records, kept in bounded memory
    (per hour, not per interval), so a days-long watch can summarize itself."""

    def __init__(self) -> None:
        self.count = 0
        self.sent = 0
        self.received = 0
        self.late = 0
        # rr's one-way split of the loss; lost without a known way is neither
        self.lost_up = 0
        self.lost_down = 0
        self.split = False  # some interval carried the split (rr)
        self.last_end: float | None = None
        self._hours: dict[int, list[Any]] = {}  # hour -> [sent, received, p50s, worst p99, max]

    def add(self, iv: Record) -> None:
        sent, received = int(iv.get("sent_packets", 0)), int(iv.get("received_packets", 0))
        self.count += 1
        self.sent += sent
        self.received += received
        self.late += int(iv.get("late_packets", 0))
        if "lost_up_packets" in iv:
            self.split = True
            self.lost_up += int(iv.get("lost_up_packets") or 0)
            self.lost_down += int(iv.get("lost_down_packets") or 0)
        self.last_end = float(iv.get("end_s") or iv["start_s"])
        hour = self._hours.setdefault(int(float(iv["start_s"]) // 3600), [0, 0, [], None, None])
        hour[0] += sent
        hour[1] += received
        lat = iv.get("latency_us")
        if lat:
            hour[2].append(float(lat["p50"]))
            hour[3] = max(hour[3] or 0.0, float(lat["p99"]))
            hour[4] = max(hour[4] or 0.0, float(lat["max"]))

    def hours(self) -> dict[int, Record]:
        """An hour's latency when no "hour" record closed it (the watch was killed):
        the median of the intervals' p50 and the worst p99 (marked approximate)."""
        result: dict[int, Record] = {}
        for hour, (sent, received, p50s, p99, most) in self._hours.items():
            p50s = sorted(p50s)
            result[hour] = {
                "start_s": hour * 3600, "sent_packets": sent, "received_packets": received,
                "loss_ratio": round((sent - received) / sent, 6) if sent else None,
                "latency_us": ({"p50": p50s[len(p50s) // 2], "p99": p99, "max": most}
                               if p50s else None),
                "approximate": True}
        return result


def summarize(records: Sequence[Record], digest: IntervalDigest | None = None) -> Record:
    """The summary of a watch's records; `digest` stands in for its interval
    records when the caller kept only that (a live watch)."""
    if digest is None:
        digest = IntervalDigest()
        for record in records:
            if record["type"] == "interval":
                digest.add(record)
    starts = [r for r in records if r["type"] == "start"]
    if not starts:
        raise ConfigError("not a watch file: no start record")
    outages = [r for r in records if r["type"] == "outage"]
    ended = {(r.get("first_lost_seq"), r.get("session")) for r in outages}
    open_outages = [r for r in records if r["type"] == "outage_start"
                    and (r.get("first_lost_seq"), r.get("session")) not in ended]
    pauses = [r for r in records if r["type"] == "resume"]
    knees = [r for r in records if r["type"] == "knee"]
    sessions = [r for r in records if r["type"] == "session"]
    lost_sessions = [r for r in records if r["type"] == "session_lost"]
    steps = [r for r in records if r["type"] == "step"]
    ends = [r for r in records if r["type"] == "end"]
    first = float(starts[0]["start_s"])
    last_candidates = [float(r.get("end_s") or r.get("start_s") or first) for r in records
                       if r["type"] in ("end", "outage", "step")]
    if digest.last_end is not None:
        last_candidates.append(digest.last_end)
    last = max(last_candidates, default=first)
    paused_s = sum(float(r.get("paused_s", 0.0)) for r in pauses)
    outage_s = sum(float(r.get("duration_s", 0.0)) for r in outages)
    watched_s = max(last - first - paused_s, 0.0)
    sent, received, late = digest.sent, digest.received, digest.late
    hours: dict[int, Record] = digest.hours()
    for r in records:
        if r["type"] == "hour":
            kept = ("start_s", "sent_packets", "received_packets", "loss_ratio", "latency_us")
            hours[int(float(r["start_s"]) // 3600)] = {k: r[k] for k in kept if k in r}
    targets = sorted({str(r["target"]) for r in records if "target" in r})
    return {
        "kind": "watch-summary",
        "targets": targets,
        "workload": starts[0].get("workload"),
        "rate_pps": starts[0].get("rate_pps"),
        "interval_s": starts[0].get("interval_s"),
        "start_s": first, "end_s": last,
        "watched_s": round(watched_s, 3), "paused_s": round(paused_s, 3),
        "availability": round(1.0 - outage_s / watched_s, 6) if watched_s > 0 else None,
        "intervals": digest.count, "sent_packets": sent, "received_packets": received,
        "lost_packets": sent - received, "late_packets": late,
        "lost_up_packets": digest.lost_up if digest.split else None,
        "lost_down_packets": digest.lost_down if digest.split else None,
        "loss_ratio": round((sent - received) / sent, 6) if sent else None,
        "outage_s": round(outage_s, 6),
        "outages": [{k: o.get(k) for k in ("start_s", "end_s", "duration_s", "lost_packets",
                                            "direction", "control", "session", "resolution")
                     if k in o} for o in outages],
        "open_outages": [{"start_s": o.get("start_s"), "session": o.get("session")}
                         for o in open_outages],
        "sessions": len(sessions), "sessions_lost": [
            {"at_s": r.get("start_s"), "reason": r.get("reason")} for r in lost_sessions],
        "steps": len(steps),
        "hours": [hours[h] for h in sorted(hours)],
        "knees": [{"at_s": k.get("start_s"), "knee_pps": k.get("knee_pps"),
                   "error": k.get("error")} for k in knees],
        "ended": ends[-1].get("reason") if ends else "no end record (the watcher was killed)",
    }


def _split(summary: Record) -> str:
    """The one-way split after a loss figure (rr), with what could not be split."""
    up, down = summary.get("lost_up_packets"), summary.get("lost_down_packets")
    if up is None or down is None:
        return ""
    unknown = int(summary["lost_packets"]) - up - down
    return f" (up {up}, down {down}" + (f", way unknown {unknown})" if unknown > 0 else ")")


def render_text(summary: Record) -> list[str]:
    s = summary
    avail = s["availability"]
    lines = [
        f"watch {', '.join(s['targets'])}: {s['workload']} at {s['rate_pps']:g} pps, "
        f"{_iso(s['start_s'])} .. {_iso(s['end_s'])} ({s['watched_s']:.1f} s watched, "
        f"{s['paused_s']:.1f} s paused)",
        f"  availability {avail * 100:.4f} %" if avail is not None else "  availability -",
        f"  sent {s['sent_packets']}  received {s['received_packets']}  "
        f"lost {s['lost_packets']}{_split(s)}  late {s['late_packets']}"
        f"  in {s['intervals']} intervals; {s['sessions']} sessions, {s['steps']} steps; "
        f"ended: {s['ended']}",
        f"  outages: {len(s['outages'])} ({s['outage_s']:.3f} s)",
    ]
    for o in s["outages"]:
        lines.append(f"    {_iso(o.get('start_s'))} .. {_iso(o.get('end_s'))}  "
                     f"{float(o.get('duration_s') or 0):.3f} s  lost {o.get('lost_packets')}  "
                     f"direction {o.get('direction', '-')}")
        for note in o.get("control") or []:
            lines.append(f"      control: {note}")
    for o in s["open_outages"]:
        lines.append(f"    {_iso(o.get('start_s'))} .. (no end recorded)")
    if s["hours"]:
        lines.append("  hour (UTC)            sent      loss      p50 us    p99 us")
        for h in s["hours"]:
            lat = h.get("latency_us") or {}
            loss = h.get("loss_ratio")
            mark = " ~" if h.get("approximate") else ""
            lines.append(f"    {_iso(h['start_s'])[:16]}  {h['sent_packets']:>9}  "
                         f"{(loss or 0) * 100:>7.3f} %  {lat.get('p50', float('nan')):>8.1f}  "
                         f"{lat.get('p99', float('nan')):>8.1f}{mark}")
    for k in s["knees"]:
        knee = k.get("knee_pps")
        lines.append(f"  knee check {_iso(k.get('at_s'))}: "
                     + (f"{knee:,.0f} pps" if knee is not None else
                        f"none found{(' (' + k['error'] + ')') if k.get('error') else ''}"))
    return lines


def plot(records: Sequence[Record], path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'pktbench[plot]'") from None
    intervals = [r for r in records if r["type"] == "interval"]
    if not intervals:
        raise ConfigError("nothing to plot: no interval records")
    t0 = float(intervals[0]["start_s"])
    xs = [(float(r["start_s"]) - t0) for r in intervals]
    lat = [r.get("latency_us") or {} for r in intervals]
    nan = float("nan")
    p50 = [x.get("p50", nan) for x in lat]
    p99 = [x.get("p99", nan) for x in lat]
    lo = [x.get("min", nan) for x in lat]
    loss = [100.0 * float(r["loss_ratio"]) if r.get("loss_ratio") is not None else nan
            for r in intervals]
    fig, (ax_lat, ax_loss) = plt.subplots(2, 1, sharex=True, figsize=(11, 6))
    ax_lat.fill_between(xs, lo, p99, alpha=0.3, label="min .. p99", step="post")
    ax_lat.plot(xs, p50, drawstyle="steps-post", label="p50")
    ax_lat.set_ylabel("latency (us)")
    ax_loss.plot(xs, loss, drawstyle="steps-post", color="tab:red", label="loss")
    if any(r.get("lost_up_packets") is not None for r in intervals):
        for key, style, name in (("lost_up_packets", "--", "up"),
                                 ("lost_down_packets", ":", "down")):
            ys = [100.0 * int(r[key]) / int(r["sent_packets"])
                  if r.get(key) is not None and r.get("sent_packets") else nan
                  for r in intervals]
            ax_loss.plot(xs, ys, style, drawstyle="steps-post", label=name)
        ax_loss.legend(loc="upper left")
    ax_loss.set_ylabel("loss (%)")
    ax_loss.set_xlabel(f"seconds since {_iso(t0)}")
    for o in (r for r in records if r["type"] == "outage"):
        for ax in (ax_lat, ax_loss):
            ax.axvspan(float(o["start_s"]) - t0, float(o["end_s"]) - t0, color="tab:red",
                       alpha=0.2)
    for p in (r for r in records if r["type"] == "pause"):
        resume = next((r for r in records if r["type"] == "resume"
                       and float(r["start_s"]) >= float(p["start_s"])), None)
        if resume is not None:
            for ax in (ax_lat, ax_loss):
                ax.axvspan(float(p["start_s"]) - t0, float(resume["start_s"]) - t0, color="grey",
                           alpha=0.2)
    knees = [r for r in records if r["type"] == "knee" and r.get("knee_pps") is not None]
    if knees:
        ax_knee = ax_lat.twinx()
        ax_knee.plot([float(k["start_s"]) - t0 for k in knees], [k["knee_pps"] for k in knees],
                     "o", color="tab:green", label="knee")
        ax_knee.set_ylabel("knee (pps)")
    ax_lat.legend(loc="upper left")
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        plt.close(fig)
