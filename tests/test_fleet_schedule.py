"""The mesh schedule: every ordered pair once, no host twice in a round, fewest rounds."""
from __future__ import annotations

import itertools

import pytest

from pktbench.fleet import schedule


def _names(n: int) -> list[str]:
    return [f"h{i}" for i in range(1, n + 1)]


@pytest.mark.parametrize("n", range(2, 65))
def test_mesh_is_every_ordered_pair_once_in_the_fewest_rounds(n: int) -> None:
    names = _names(n)
    rounds = schedule.mesh_rounds(names)
    pairs = [p for r in rounds for p in r]
    assert sorted(pairs) == sorted(itertools.permutations(names, 2))
    for r in rounds:
        hosts = [h for p in r for h in p]
        assert len(hosts) == len(set(hosts)), r
    assert len(rounds) == (2 * (n - 1) if n % 2 == 0 else 2 * n)
    # The bound no schedule can beat: a host is in 2(n-1) tests, one per round,
    # and a round holds at most n // 2 tests.
    bound = max(2 * (n - 1), -(-n * (n - 1) // (n // 2)))
    assert len(rounds) == bound == schedule.least_rounds(n)


def test_odd_count_gives_each_host_two_byes() -> None:
    names = _names(7)
    rounds = schedule.mesh_rounds(names)
    for host in names:
        idle = sum(1 for r in rounds if all(host not in p for p in r))
        assert idle == 2


@pytest.mark.parametrize("n,k", [(6, 2), (10, 3), (11, 4), (64, 5)])
def test_sample_covers_every_host_in_and_out(n: int, k: int) -> None:
    names = _names(n)
    rounds = schedule.mesh_rounds(names, sample=k)
    assert len(rounds) == 2 * k
    pairs = [p for r in rounds for p in r]
    assert len(pairs) == len(set(pairs))
    for host in names:
        outs = {d for s, d in pairs if s == host}
        ins = {s for s, d in pairs if d == host}
        assert len(outs) >= k - 1 and len(ins) >= k - 1 and outs and ins
    for r in rounds:
        hosts = [h for p in r for h in p]
        assert len(hosts) == len(set(hosts))


def test_parallel_cap_and_restrict() -> None:
    rounds = schedule.mesh_rounds(_names(8))
    capped = schedule.cap_rounds(rounds, 2)
    assert all(len(r) <= 2 for r in capped)
    assert sorted(p for r in capped for p in r) == sorted(p for r in rounds for p in r)
    assert len(capped) == 14 * 2
    left = schedule.restrict(rounds, [("h1", "h2"), ("h2", "h1")])
    assert sorted(p for r in left for p in r) == [("h1", "h2"), ("h2", "h1")]
    with pytest.raises(ValueError):
        schedule.cap_rounds(rounds, 0)


def test_pair_list_rounds_never_share_a_host() -> None:
    pairs = [("a", "b"), ("a", "c"), ("c", "b"), ("d", "e"), ("b", "a")]
    rounds = schedule.pair_rounds(pairs)
    assert sorted(p for r in rounds for p in r) == sorted(pairs)
    for r in rounds:
        hosts = [h for p in r for h in p]
        assert len(hosts) == len(set(hosts))
