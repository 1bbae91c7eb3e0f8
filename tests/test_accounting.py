"""Loss episodes (runs of consecutive losses) from a received mask."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pktbench.accounting import loss_episodes
from pktbench.errors import ConfigError


def reference(mask: list[bool]) -> dict[str, float]:
    runs: list[int] = []
    run = 0
    for received in mask:
        if received:
            if run:
                runs.append(run)
            run = 0
        else:
            run += 1
    if run:
        runs.append(run)
    if not runs:
        return {"count": 0, "max_length": 0, "mean_length": 0.0}
    return {"count": len(runs), "max_length": max(runs), "mean_length": sum(runs) / len(runs)}


def test_known_pattern() -> None:
    mask = np.array([1, 0, 0, 1, 0, 1, 1, 0, 0, 0], dtype=bool)
    assert loss_episodes(mask) == {"count": 3, "max_length": 3, "mean_length": 2.0}


@pytest.mark.parametrize("mask, expected", [
    ([], {"count": 0, "max_length": 0, "mean_length": 0.0}),
    ([True] * 5, {"count": 0, "max_length": 0, "mean_length": 0.0}),
    ([False] * 4, {"count": 1, "max_length": 4, "mean_length": 4.0}),
    ([False, True], {"count": 1, "max_length": 1, "mean_length": 1.0}),
    ([True, False], {"count": 1, "max_length": 1, "mean_length": 1.0}),
    ([0, 1, 0, 1, 0], {"count": 3, "max_length": 1, "mean_length": 1.0}),
])
def test_edges(mask: list[bool], expected: dict[str, float]) -> None:
    assert loss_episodes(mask) == expected


def test_types_are_plain_python() -> None:
    result = loss_episodes(np.array([True, False, False]))
    assert type(result["count"]) is int and type(result["max_length"]) is int
    assert type(result["mean_length"]) is float


def test_input_is_not_modified() -> None:
    mask = np.array([True, False, True])
    loss_episodes(mask)
    assert mask.tolist() == [True, False, True]


@pytest.mark.parametrize("bad", [np.zeros((2, 2), dtype=bool), [0, 2, 1]])
def test_bad_masks(bad: object) -> None:
    with pytest.raises(ConfigError, match="received_mask"):
        loss_episodes(bad)  # type: ignore[arg-type]


@given(st.lists(st.booleans(), max_size=300))
def test_matches_reference(mask: list[bool]) -> None:
    assert loss_episodes(np.array(mask, dtype=bool)) == reference(mask)
