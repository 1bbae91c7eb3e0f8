"""The pure-Python engine agrees with the compiled one, byte for byte and bucket for bucket.

Differential tests: the same input to both engines' parsers and histogram.
The end-to-end behaviour of both engines is tested in test_engine.py (every
test there runs once per engine).
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pktbench import _fallback, wire
from test_tcp_rr import encode_command, resp_values

compiled_engine = pytest.importorskip("pktbench._engine", reason="the compiled engine is not built")

# RESP-shaped noise: mostly valid framing with some damage, so both engines'
# malformed/incomplete paths are reached, not only "malformed at byte 0".
_damaged = st.tuples(st.lists(resp_values, max_size=4), st.binary(max_size=12)).map(
    lambda parts: b"".join(parts[0]) + parts[1])


@given(st.one_of(st.binary(max_size=400), _damaged))
def test_reply_parser_matches_the_compiled_one(data: bytes) -> None:
    assert _fallback.parse_replies(data) == compiled_engine.parse_replies(data)


@given(st.one_of(
    st.binary(max_size=400),
    st.lists(st.lists(st.sampled_from([b"GET", b"set", b"Ping", b"k", b"", b"FLUSHALL"]),
                      min_size=1, max_size=4), min_size=1, max_size=4)
    .map(lambda cmds: b"".join(encode_command(*args) for args in cmds)),
    _damaged,
))
def test_command_parser_matches_the_compiled_one(data: bytes) -> None:
    assert _fallback.parse_commands(data) == compiled_engine.parse_commands(data)


@given(st.lists(st.integers(0, 2**40), max_size=200))
def test_histogram_buckets_match_the_compiled_one(values: list[int]) -> None:
    samples = np.array(values, dtype=np.uint64)
    ours = np.zeros(_fallback.HISTOGRAM_BUCKETS, dtype=np.uint64)
    theirs = np.zeros(compiled_engine.HISTOGRAM_BUCKETS, dtype=np.uint64)
    _fallback.hist_record(ours, samples)
    compiled_engine.hist_record(theirs, samples)
    assert ours.tolist() == theirs.tolist()


def test_same_names_and_counters_as_the_compiled_module() -> None:
    public = {name for name in dir(compiled_engine) if not name.startswith("_")}
    missing = public - set(dir(_fallback))
    assert not missing, missing
    for name in ("SENDER_COUNTERS", "RESPONDER_COUNTERS", "HISTOGRAM_BUCKETS",
                 "HISTOGRAM_SUB_BITS", "CLIENT_COUNTERS", "SERVER_COUNTERS", "MAX_CONNECTIONS",
                 "MAX_PIPELINE", "MAX_STREAMS", "PUMP_OPEN", "PUMP_EOF"):
        assert getattr(_fallback, name) == getattr(compiled_engine, name), name


def test_the_clock_is_the_compiled_engines_clock() -> None:
    before = compiled_engine.monotonic_ns()
    ours = _fallback.monotonic_ns()
    after = compiled_engine.monotonic_ns()
    assert before <= ours <= after


def test_bad_constructor_arguments_are_refused_alike() -> None:
    template = wire.build_request(wire.COMMAND_PING, 64, token=1, seq=0, send_ns=0)
    for module in (compiled_engine, _fallback):
        with pytest.raises(ValueError):
            module.PacedSender(0, template[:10], rate_pps=1.0, expect_replies=False)
        with pytest.raises(ValueError):
            module.Responder(0, peer=b"x", token=1, command=1, sink=True, max_size=64)
    for module in (compiled_engine, _fallback):
        with pytest.raises(ValueError):
            module.RespServer(0, b"$1\r\nx\r\n")
        with pytest.raises(ValueError):
            module.BulkPump(1, True, 10)


def test_parsers_stay_linear_on_hostile_input() -> None:
    started = time.monotonic()
    for data in (b"*16777216\r\n" + b"*1\r\n" * 200_000, b"$536870912\r\n" + b"v" * 1_000_000,
                 b"+" + b"x" * 1_000_000):
        for parse in (_fallback.parse_replies, _fallback.parse_commands):
            assert parse(data)[1] in ("incomplete", "malformed")
    assert time.monotonic() - started < 10.0
