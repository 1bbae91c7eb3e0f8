"""UDP GSO send and GRO receive on loopback, the burst rule, and the fallbacks."""
from __future__ import annotations

import socket
import time

import pytest

from pktbench import engine, wire

from engine_support import ThreadedResponder

TOKEN = 0x0F1E2D3C4B5A6978
SO_NO_CHECK = 11  # a socket without UDP checksums cannot use GSO: the kernel says EINVAL


def test_burst_rule_releases_what_is_due_in_100_us_at_most_64():
    assert engine.burst_for(1_000) == 1  # a 1,000 pps step never goes out in bursts
    assert engine.burst_for(9_999) == 1
    assert engine.burst_for(10_000) == 1
    assert engine.burst_for(50_000) == 5
    assert engine.burst_for(100_000) == 10
    assert engine.burst_for(450_000) == 45
    assert engine.burst_for(2_000_000) == 64
    assert engine.burst_for(None) == 64  # unpaced: whole buffers
    assert engine.burst_for(450_000, 8) == 8  # --burst caps the rule
    assert engine.burst_for(1_000, 8) == 1  # and never raises it


def test_segments_per_buffer_fit_one_udp_payload():
    assert engine.gso_segments_for(64) == 64
    assert engine.gso_segments_for(1472) == 44
    assert engine.gso_segments_for(40_000) == 0  # one datagram a buffer: GSO cannot help


def _sink(server: socket.socket, client: socket.socket, gso: str) -> ThreadedResponder:
    loop = engine.ResponderLoop(server, peer=client.getsockname(), token=TOKEN,
                                command=wire.COMMAND_NONE, size_bytes=64, sink=True, gso=gso)
    return ThreadedResponder(loop, 10.0)


def _blast(udp_pair: tuple[socket.socket, socket.socket], gso: str, *, rate_pps: float | None,
           duration_s: float, warmup_s: float = 0.0
           ) -> tuple[engine.SenderOutcome, dict[str, object]]:
    server, client = udp_pair
    responder = _sink(server, client, gso)
    try:
        template = wire.build_request(wire.COMMAND_NONE, 64, token=TOKEN, seq=0, send_ns=0)
        outcome = engine.run_sender(client, template, rate_pps=rate_pps, duration_s=duration_s,
                                    warmup_s=warmup_s, expect_replies=False, gso=gso)
        time.sleep(0.1)  # the last datagrams reach the sink
    finally:
        responder.close()
    responder.loop.finish(outcome.sent)  # type: ignore[attr-defined]
    return outcome, responder.loop.counters()  # type: ignore[attr-defined]


def _compiled() -> None:
    if not engine.udp_offload_support()[0]:
        pytest.skip("needs the compiled engine on a kernel with UDP_SEGMENT/UDP_GRO")


def test_gso_blast_segments_are_counted_one_by_one_on_loopback(udp_pair):
    """Loopback keeps a GSO buffer whole up to the receiving socket: with UDP_GRO it
    arrives as one read, and each segment's header is checked and counted."""
    _compiled()
    outcome, served = _blast(udp_pair, "on", rate_pps=50_000, duration_s=0.4, warmup_s=0.1)
    figures = outcome.extra["engine"]
    assert isinstance(figures, dict)
    assert figures["udp_gso"] and figures["gso_buffers"] > 0
    assert figures["burst_packets"] == 5
    assert served["engine"]["udp_gro"] and served["engine"]["gro_reads"] > 0  # type: ignore[index]
    assert outcome.sent == 20_000
    # every segment counted, warm-up ones apart; drops only where the shared
    # machine let the socket buffer overflow
    assert served["received"] + served["rcvbuf_drops"] == outcome.sent
    assert served["warmup"] + served["rcvbuf_drops"] >= outcome.warmup_sent == 5_000
    assert served["duplicate"] == 0 and served["reordered"] == 0
    assert served["lost"] == served["rcvbuf_drops"]


def test_gso_paced_rate_is_exact(udp_pair):
    _compiled()
    outcome, served = _blast(udp_pair, "on", rate_pps=200_000, duration_s=0.5)
    # the whole schedule, unless this shared machine stalled the sender past its grace
    assert outcome.sent == 100_000 or outcome.stopped_early or outcome.sent >= 98_000
    if outcome.sent == 100_000:
        assert abs(outcome.sent_pps / 200_000 - 1) < 0.005
    assert served["received"] + served["rcvbuf_drops"] == outcome.sent


def test_a_send_gso_refuses_falls_back_to_one_datagram_per_message(udp_pair):
    _compiled()
    udp_pair[1].setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    outcome, served = _blast(udp_pair, "on", rate_pps=None, duration_s=0.2)
    figures = outcome.extra["engine"]
    assert isinstance(figures, dict)
    assert figures["gso_fallback"] == "EINVAL" and not figures["udp_gso"]
    assert figures["gso_segments"] == 0
    assert outcome.sent > 0
    assert served["received"] + served["rcvbuf_drops"] == outcome.sent


def test_the_pure_python_engine_takes_the_gso_options_and_reports_no_gso(udp_pair,
                                                                         monkeypatch):
    from pktbench import _fallback

    monkeypatch.setattr(engine, "loops", _fallback)
    assert engine.udp_offload_support() == (False, False)
    with pytest.raises(engine.errors.ConfigError, match="pure-Python"):
        engine.check_gso_mode("on")
    outcome, served = _blast(udp_pair, "auto", rate_pps=2_000, duration_s=0.2)
    figures = outcome.extra["engine"]
    assert isinstance(figures, dict)
    assert not figures["udp_gso"] and not figures["udp_gro"]
    assert not served["engine"]["udp_gro"]  # type: ignore[index]
    assert served["received"] == outcome.sent == 400
    sender = _fallback.PacedSender(udp_pair[1].fileno(), bytes(64), rate_pps=1000,
                                   expect_replies=False, gso_segments=64, burst=8)
    assert sender.gso_segments == 0 and sender.burst == 8


@pytest.mark.parametrize("gso", ["auto", "off"])
def test_rr_counts_every_reply_with_and_without_gso(udp_pair, gso):
    server, client = udp_pair
    loop = engine.ResponderLoop(server, peer=client.getsockname(), token=TOKEN,
                                command=wire.COMMAND_PING, size_bytes=64, sink=False, gso=gso)
    responder = ThreadedResponder(loop, 10.0)
    try:
        template = wire.build_request(wire.COMMAND_PING, 64, token=TOKEN, seq=0, send_ns=0)
        outcome = engine.run_sender(client, template, rate_pps=20_000, duration_s=0.3,
                                    drain_s=0.3, expect_replies=True, gso=gso, burst=16)
    finally:
        responder.close()
    c = outcome.counters
    assert c["sent"] >= 0.9 * 6_000  # a shared machine may stall the sender past its grace
    assert c["received"] + c["lost"] == c["sent"] and c["duplicate"] == 0
    assert c["received"] >= 0.99 * c["sent"]
    figures = outcome.extra["engine"]
    assert isinstance(figures, dict)
    assert figures["burst_packets"] == 2  # 20k pps: 2 due in 100 us, under --burst 16
    assert figures["udp_gso"] == (gso == "auto" and engine.udp_offload_support()[0])


def test_profiles_carry_gso_and_burst_to_the_step():
    from pktbench import config
    from pktbench.errors import ConfigError
    from pktbench.sweeper import step_params_for

    rates = "\n[rates]\nlist_pps = [1000]\n"
    profile = config.profile_from_toml('workload = "blast"\ngso = "off"\nburst = 8\n' + rates,
                                       "t.toml")
    step = step_params_for(profile, 50_000.0)
    assert (step.gso, step.burst) == ("off", 8)
    assert step_params_for(config.load_profile("default"), 1000.0).gso == "auto"
    with pytest.raises(ConfigError, match="gso must be one of"):
        config.profile_from_toml('gso = "maybe"\n' + rates, "t.toml")
    with pytest.raises(ConfigError, match="burst"):
        config.profile_from_toml("burst = 65\n" + rates, "t.toml")
