"""Shared fixtures: loopback socket pairs and a threaded engine responder."""
from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

# Two shared cores: generation time swings with whatever else runs, so time
# limits would fail tests for the machine's load rather than for the code.
settings.register_profile("pktbench", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pktbench")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces, nftables, tc)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def udp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(server, client) UDP sockets on 127.0.0.1; the client is connected."""
    from pktbench import engine

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        server.bind(("127.0.0.1", 0))
        client.bind(("127.0.0.1", 0))
        engine.tune_socket(server)
        engine.tune_socket(client)
        client.connect(server.getsockname())
        yield server, client
    finally:
        server.close()
        client.close()


@pytest.fixture(params=["cython", "python"])
def engine_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> object:
    """Each engine in turn behind pktbench.engine: the same test body runs against both."""
    from pktbench import _fallback, engine

    if request.param == "cython":
        if engine.ENGINE_NAME != "cython":
            if os.environ.get("PKTBENCH_PUREPYTHON", "") not in ("", "0"):
                pytest.skip("PKTBENCH_PUREPYTHON=1 selects the pure-Python engine only")
            pytest.skip("the compiled engine is not built here")
        return engine.loops
    monkeypatch.setattr(engine, "loops", _fallback)
    monkeypatch.setattr(engine, "ENGINE_NAME", "python")
    monkeypatch.setattr(engine, "ENGINE_BUILD", "pure")
    return _fallback
