"""Which tests run together: every ordered pair in the fewest rounds.

Owns: the round-robin tournament (the circle method) over n hosts, its
second half with every pair reversed, `--sample K` (the first K rounds of
each half), `--parallel` caps and scheduling a subset of pairs (a resume).

Invariants: no host takes part in two tests of one round (so tests never
share an endpoint, and one host's CPU or NIC never serves two tests at once);
every requested ordered pair appears exactly once.

Arithmetic: a host is in 2(n-1) ordered pairs (n-1 out, n-1 in) and in at
most one per round, so 2(n-1) rounds is the least possible; the circle method
reaches it for even n. For odd n a round holds at most (n-1)/2 tests, so
n(n-1) tests need at least 2n rounds: one phantom host is added and whoever
meets it sits the round out (a bye), which gives exactly 2n rounds.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

Pair = tuple[str, str]  # (source, destination): the source runs the sweep
Round = tuple[Pair, ...]


def _circle(names: Sequence[str]) -> list[list[tuple[str, str]]]:
    """The circle method: n-1 rounds (n even) of n/2 unordered pairs each."""
    players: list[str | None] = list(names)
    if len(players) % 2:
        players.append(None)  # the bye
    n = len(players)
    fixed, rest = players[0], players[1:]
    rounds: list[list[tuple[str, str]]] = []
    for r in range(n - 1):
        rot = rest[r:] + rest[:r]
        line = [fixed, *rot]
        matches: list[tuple[str, str]] = []
        for i in range(n // 2):
            a, b = line[i], line[n - 1 - i]
            if a is None or b is None:
                continue
            # Alternate orientation so each host starts about half its tests.
            matches.append((a, b) if (r + i) % 2 == 0 else (b, a))
        rounds.append(matches)
    return rounds


def mesh_rounds(names: Sequence[str], *, sample: int | None = None) -> list[Round]:
    """Every ordered pair of `names` in 2(n-1) rounds (n even) or 2n (n odd).

    With `sample` K, only the first K rounds of each half run: every host
    meets K peers (K-1 where its bye falls among them), out and in.
    """
    if len(set(names)) != len(names):
        raise ValueError("host names must be unique")
    if len(names) < 2:
        return []
    half = _circle(names)
    if sample is not None:
        if sample < 1:
            raise ValueError(f"sample must be at least 1 (got {sample})")
        half = half[:sample]
    first = [tuple(matches) for matches in half]
    second = [tuple((b, a) for a, b in matches) for matches in half]
    return [r for r in first + second if r]


def cap_rounds(rounds: Iterable[Round], parallel: int | None) -> list[Round]:
    """Split rounds so at most `parallel` tests run at once (None: no cap)."""
    if parallel is not None and parallel < 1:
        raise ValueError(f"parallel must be at least 1 (got {parallel})")
    out: list[Round] = []
    for r in rounds:
        if parallel is None or len(r) <= parallel:
            out.append(r)
        else:
            out.extend(r[i:i + parallel] for i in range(0, len(r), parallel))
    return out


def restrict(rounds: Iterable[Round], wanted: Iterable[Pair]) -> list[Round]:
    """Keep only the `wanted` pairs (the rest are done or impossible)."""
    keep = set(wanted)
    out = [tuple(p for p in r if p in keep) for r in rounds]
    return [r for r in out if r]


def pair_rounds(pairs: Sequence[Pair]) -> list[Round]:
    """An arbitrary pair list (--pairs FILE) packed greedily into rounds.

    Each round takes, in order, every pair whose two hosts are still free in it.
    Not always the fewest rounds for arbitrary lists, but never two tests on
    one host at once.
    """
    todo = list(dict.fromkeys(pairs))
    rounds: list[Round] = []
    while todo:
        busy: set[str] = set()
        taken: list[Pair] = []
        later: list[Pair] = []
        for src, dst in todo:
            if src in busy or dst in busy:
                later.append((src, dst))
            else:
                busy.update((src, dst))
                taken.append((src, dst))
        rounds.append(tuple(taken))
        todo = later
    return rounds


def least_rounds(n: int) -> int:
    """The fewest rounds any schedule of a full n-host mesh can have."""
    if n < 2:
        return 0
    return 2 * (n - 1) if n % 2 == 0 else 2 * n
