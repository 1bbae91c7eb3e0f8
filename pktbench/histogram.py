"""Reading the engine's log-linear latency histograms.

Owns the bucket geometry (it mirrors hist_index in ext/_timing.pxi: values
below 2**SUB_BITS ns have a bucket each; above, every power of two is cut
into 2**SUB_BITS equal buckets), percentiles and summaries. A reported value
is its bucket's midpoint, so it is within half a bucket (< 0.4%) of the
true value. Pure numpy, no I/O.
"""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

SUB_BITS = 7
MAX_SHIFT = 30
BUCKETS = (MAX_SHIFT + 2) << SUB_BITS

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}

Counts = npt.NDArray[np.uint64]


def bucket_index(values_ns: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Bucket of each value; the same arithmetic as the engine."""
    values = np.minimum(np.asarray(values_ns, dtype=np.uint64),
                        np.uint64((1 << (MAX_SHIFT + SUB_BITS + 1)) - 1))
    msb = np.zeros(values.shape, dtype=np.int64)
    nonzero = values > 0
    msb[nonzero] = np.floor(np.log2(values[nonzero].astype(np.float64))).astype(np.int64)
    # log2 of a float can round up just below a power of two; correct it.
    too_high = (np.uint64(1) << msb.astype(np.uint64)) > values
    msb[too_high & nonzero] -= 1
    shift = np.maximum(msb - SUB_BITS, 0)
    return (shift << SUB_BITS) + (values >> shift.astype(np.uint64)).astype(np.int64)


def bucket_bounds() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Lower bound and width (ns) of every bucket."""
    index = np.arange(BUCKETS, dtype=np.int64)
    shift = np.maximum((index >> SUB_BITS) - 1, 0)
    lower = ((index - (shift << SUB_BITS)) << shift).astype(np.float64)
    width = (np.int64(1) << shift).astype(np.float64)
    return lower, width


_LOWER, _WIDTH = bucket_bounds()
_MID = _LOWER + (_WIDTH - 1) / 2.0


def percentile_ns(counts: Counts, percent: float) -> float | None:
    """Value at `percent` (0-100] of the recorded samples, or None if empty."""
    total = int(counts.sum())
    if total == 0:
        return None
    rank = max(1, int(np.ceil(percent / 100.0 * total)))
    index = int(np.searchsorted(np.cumsum(counts, dtype=np.uint64), rank))
    return float(_MID[index])


def mean_ns(counts: Counts) -> float | None:
    total = int(counts.sum())
    if total == 0:
        return None
    return float(np.dot(counts.astype(np.float64), _MID) / total)


def summary_us(counts: Counts, *, min_ns: int | None = None,
               max_ns: int | None = None) -> dict[str, float] | None:
    """min/mean/p50/p90/p99/p999/max in microseconds, or None if empty.

    min_ns/max_ns are the exact extremes when the caller tracked them.
    """
    if int(counts.sum()) == 0:
        return None
    result: dict[str, float] = {}
    nonzero = np.flatnonzero(counts)
    lowest = float(min_ns) if min_ns is not None else float(_MID[nonzero[0]])
    highest = float(max_ns) if max_ns is not None else float(_MID[nonzero[-1]])
    result["min"] = lowest / 1000.0
    result["mean"] = (mean_ns(counts) or 0.0) / 1000.0
    for name, percent in PERCENTILES.items():
        value = percentile_ns(counts, percent) or 0.0
        result[name] = min(max(value, lowest), highest) / 1000.0
    result["max"] = highest / 1000.0
    return result
