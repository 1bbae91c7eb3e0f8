"""One errno mapper: an engine's -errno becomes the OSError subclass Python itself picks."""
from __future__ import annotations

import errno
import socket

import pytest

from pktbench import engine, errors, wire
from pktbench.errors import ConnectError, EngineError, PktbenchError


@pytest.mark.parametrize("code", sorted(errno.errorcode))
def test_every_errno_maps_to_its_builtin_subclass(code: int) -> None:
    exc = errors.errno_error(code, "sending")
    assert isinstance(exc, type(OSError(code, ""))) and isinstance(exc, EngineError)
    assert exc.errno == code
    assert str(exc).count("\n") == 0 and "sending: " in str(exc)


def test_counts_pass_and_hints_replace_the_system_text() -> None:
    errors.check_rc(0, "sending")
    errors.check_rc(7, "sending")
    with pytest.raises(ConnectionResetError, match="the peer hung up"):
        errors.check_rc(-errno.ECONNRESET, "sending", {errno.ECONNRESET: "the peer hung up"})
    with pytest.raises(PermissionError, match="Operation not permitted"):
        errors.check_rc(-errno.EPERM, "sending")


def test_a_refused_udp_port_raises_connection_refused(udp_pair) -> None:
    """A real ICMP port unreachable: the sender's socket reports ECONNREFUSED."""
    server, client = udp_pair
    server.close()  # nothing listens on that port any more
    template = wire.build_request(wire.COMMAND_PING, 64, token=1, seq=0, send_ns=0)
    with pytest.raises(ConnectionRefusedError) as raised:
        engine.run_sender(client, template, rate_pps=2000, duration_s=0.2, expect_replies=True)
    exc = raised.value
    assert isinstance(exc, ConnectError) and isinstance(exc, PktbenchError)
    assert exc.errno == errno.ECONNREFUSED
    assert "pktbench serve" in str(exc)


def test_a_reset_tcp_connection_raises_connection_reset() -> None:
    """The RESP client on a connection the server resets (RST) sees ECONNRESET."""
    from pktbench.workloads import resp as tcp_rr
    from pktbench.protocol import StepParams

    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname(), timeout=5)
    conn, _ = listener.accept()
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()  # linger 0: the close sends RST
        client.setblocking(False)
        params = StepParams(workload="rr-tcp", command="ping", rate_pps=1000.0, duration_s=0.3,
                            drain_s=0.2, timeout_s=0.2)
        with pytest.raises((ConnectionResetError, BrokenPipeError)) as raised:
            tcp_rr.drive([client], params, peer="127.0.0.1")
        assert isinstance(raised.value, ConnectError)
        assert "closed a connection mid-step" in str(raised.value)
    finally:
        client.close()
        listener.close()
