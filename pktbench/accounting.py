"""Loss accounting on per-packet arrays (pure numpy).

Owns the reference definitions of the loss statistics pktbench reports; the
engine computes the same figures in C while it runs, and the tests compare
the two against these.

Invariants: inputs are never modified; empty input gives zero counts.
Must not: do I/O, read clocks, or keep state between calls.
"""
from __future__ import annotations

from typing import TypedDict

import numpy as np
import numpy.typing as npt

from pktbench.errors import ConfigError

__all__ = ["LossEpisodes", "loss_episodes"]


class LossEpisodes(TypedDict):
    count: int
    max_length: int
    mean_length: float


def loss_episodes(received_mask: npt.ArrayLike) -> LossEpisodes:
    """Loss episodes: runs of consecutive lost packets (RFC 3357 style).

    RFC 3357 calls a maximal run of consecutive losses a "loss period"; its
    length tells bursty loss (a queue overflowing, a receiver descheduled)
    from scattered loss (random drops) at the same loss ratio.

    Args:
        received_mask: 1-D booleans in sequence-number order, True where the
            packet arrived. Integer 0/1 arrays are accepted.

    Returns:
        {"count": number of episodes, "max_length": longest run of losses,
         "mean_length": mean run length (0.0 when nothing was lost)}.

    Raises:
        ConfigError: the mask is not 1-D or holds values other than 0/1.
    """
    mask = np.asarray(received_mask)
    if mask.ndim != 1:
        raise ConfigError(f"loss_episodes: received_mask must be 1-D (got shape {mask.shape})")
    if mask.dtype != np.bool_:
        if mask.size and not np.isin(mask, (0, 1)).all():
            raise ConfigError("loss_episodes: received_mask must hold booleans or 0/1 values")
        mask = mask.astype(bool)
    lost = np.concatenate(([0], (~mask).astype(np.int8), [0]))
    edges = np.diff(lost)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    if starts.size == 0:
        return {"count": 0, "max_length": 0, "mean_length": 0.0}
    lengths = ends - starts
    return {"count": int(lengths.size), "max_length": int(lengths.max()),
            "mean_length": float(lengths.mean())}
