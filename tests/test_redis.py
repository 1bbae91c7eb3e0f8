"""A real redis-server as the target: steps, a short sweep, AUTH, errors, the CLI.

The fixtures start redis-server on 127.0.0.1 and a free port, with nothing
saved to disk, as a subprocess of the test, and stop it by its PID. The
tests skip with a reason where redis-server is not installed
(apt-get install redis-server).
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner

from pktbench import api, config, wire
from pktbench.workloads import redis as redis_target
from pktbench.cli import main
from pktbench.errors import AuthError, ConfigError, ConnectError
from pktbench.protocol import StepParams
from pktbench.workloads.redis import RedisAuth, RedisClient, parse_redis_url
from pktbench.report import write_report
from pktbench.workloads.resp import TcpOptions

REDIS = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed "
                                                      "(apt-get install redis-server)")
PASSWORD = "s3cret:with@odd/chars"


@dataclass
class Redis:
    port: int
    process: subprocess.Popen[bytes]
    password: str | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def call(self, *args: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            if self.password:
                redis_target.call(sock, b"AUTH", self.password.encode(), where="test")
            return redis_target.call(sock, *args, where="test")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(password: str | None) -> Iterator[Redis]:
    assert REDIS is not None
    port = _free_port()
    args = [REDIS, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
            "--appendonly", "no", "--daemonize", "no"]
    if password:
        args += ["--requirepass", password]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start on port {port}")
                time.sleep(0.05)
        yield Redis(port, process, password)
    finally:
        process.terminate()  # by PID: only the server this fixture started
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def redis() -> Iterator[Redis]:
    yield from _start(None)


@pytest.fixture(scope="module")
def redis_auth() -> Iterator[Redis]:
    yield from _start(PASSWORD)


def step(command: str = "get", **overrides: Any) -> StepParams:
    values: dict[str, Any] = {"workload": "rr-tcp", "command": command, "rate_pps": 1000.0,
                              "duration_s": 0.5, "warmup_s": 0.1, "drain_s": 1.0,
                              "timeout_s": 1.0, "size_bytes": 96}
    values.update(overrides)
    return StepParams(**values)


def test_get_counts_exact_at_low_rate(redis: Redis) -> None:
    result = redis_target.run_step(redis.url, step(connections=2, pipeline=2))
    assert result["workload"] == "rr" and result["command"] == "get"
    assert result["sent_packets"] == result["received_packets"] == 500
    assert result["loss_ratio"] == 0.0
    assert result["sender"]["resp_errors"] == 0
    assert result["receiver"]["server"].startswith("redis ")
    # every reply was the value the client SET first, under the benchmark key only
    reply = b"$%d\r\n" % wire.get_value_bytes(96)
    assert result["received_bps"] == pytest.approx(
        500 * (len(reply) + wire.get_value_bytes(96) + 2) * 8 / 0.5)
    assert redis.call(b"EXISTS", wire.KEY) == b":0\r\n"  # deleted on close


def test_set_and_ping(redis: Redis) -> None:
    for command in ("set", "ping"):
        result = redis_target.run_step(redis.url, step(command, size_bytes=300, rate_pps=2000.0))
        assert result["sent_packets"] == result["received_packets"] == 1000, command


def test_resp_error_replies_count_as_errors(redis: Redis) -> None:
    assert redis.call(b"CONFIG", b"SET", b"maxmemory", b"1") == b"+OK\r\n"
    try:
        result = redis_target.run_step(redis.url, step("set", rate_pps=500.0))
    finally:
        assert redis.call(b"CONFIG", b"SET", b"maxmemory", b"0") == b"+OK\r\n"
    assert result["sent_packets"] == 250
    assert result["sender"]["resp_errors"] == 250  # -OOM for every SET
    assert result["received_packets"] == 0
    assert result["loss_ratio"] == 1.0
    assert result["error_requests"] == 250
    assert result["late_requests"] == result["unanswered_requests"] == 0


def test_short_sweep_has_a_knee_table(redis: Redis) -> None:
    profile = config.apply_overrides(config.load_profile("redis-get-small"), source="test",
                                     rates_pps="1k,3k,9k", duration_s=0.5, warmup_s=0.1)
    result = api.sweep(redis.url, profile, tcp=TcpOptions(2, 1),
                         early_stop=False)
    # a busy machine may fail the top rate, which earns it a confirming retrial
    assert sorted({s["offered_pps"] for s in result.steps}) == [1000.0, 3000.0, 9000.0]
    for s in result.steps:
        assert s["sent_packets"] == round(s["offered_pps"] * 0.5)
        assert s["received_packets"] > 0 and s["latency_us"] is not None
        assert s["sender"]["connections"] == 2
    assert result.config["transport"] == "tcp"
    assert result.config["target"] == redis.url
    import io

    table = io.StringIO()
    write_report("wide", result, table)
    text = table.getvalue()
    # requests are counted in req/s, late apart from unanswered, the path in packets
    for header in ("offered req/s", "answered req/s", "late %", "unanswered %",
                   "to server pkt/s", "back pkt/s", "retrans"):
        assert header in text, header
    assert "offered pps" not in text and "9,000" in text
    for s in result.steps:
        assert s["offered_rps"] == s["offered_pps"] and s["requests"] == s["sent_packets"]
        path = s["path"]
        assert path is not None and path["connections"] == 2
        assert path["toward_server_packets"] > 0 and path["back_packets"] > 0
    # pipeline 1 over loopback at a rate a loaded machine keeps: a request and its
    # reply are a segment each
    low = min(result.steps, key=lambda s: s["offered_rps"])
    assert low["path"]["toward_server_pps"] == pytest.approx(low["answered_rps"], rel=0.1)
    assert low["path"]["back_pps"] == pytest.approx(low["answered_rps"], rel=0.1)


def test_auth_from_url_and_option(redis_auth: Redis) -> None:
    from urllib.parse import quote

    url = f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:{redis_auth.port}"
    target, auth = parse_redis_url(url)
    assert auth == RedisAuth(PASSWORD) and PASSWORD not in str(target) + repr(auth)
    assert redis_target.run_step(url, step("ping"))["received_packets"] == 500
    result = redis_target.run_step(redis_auth.url, step("ping"), auth=RedisAuth(PASSWORD))
    assert result["received_packets"] == 500


def test_wrong_or_missing_password(redis_auth: Redis) -> None:
    with pytest.raises(AuthError, match=r"refused AUTH: WRONGPASS") as wrong:
        redis_target.run_step(redis_auth.url, step("ping"), auth=RedisAuth("nope"))
    with pytest.raises(AuthError, match="requires a password: pass --redis-password") as missing:
        redis_target.run_step(redis_auth.url, step("ping"))
    for error in (wrong, missing):
        assert "\n" not in str(error.value) and "nope" not in str(error.value)


def test_cli_run_and_errors(redis_auth: Redis) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["run", redis_auth.url, "--redis-password", PASSWORD,
                              "--command", "get", "--rate", "2k", "--duration", "0.3",
                              "--connections", "2", "--pipeline", "4"])
    assert ok.exit_code == 0, ok.output
    assert "2,000 req/s (600 requests)" in ok.output and "pps" not in ok.output
    wrong = runner.invoke(main, ["run", redis_auth.url, "--redis-password", "nope",
                                 "--duration", "0.3"])
    assert wrong.exit_code == 1
    assert wrong.output.strip().count("\n") == 0 and "refused AUTH" in wrong.output
    blast = runner.invoke(main, ["run", redis_auth.url, "--workload", "blast"])
    assert blast.exit_code == 2 and "request/response only" in blast.output


def test_nothing_listening() -> None:
    with pytest.raises(ConnectError, match="is redis-server running there"):
        redis_target.run_step(f"redis://127.0.0.1:{_free_port()}", step("ping"))


@pytest.mark.parametrize("url, message", [
    ("redis://user@127.0.0.1", "write credentials as"),
    ("redis://:@127.0.0.1", "write credentials as"),
    ("http://127.0.0.1", "not a redis:// URL"),
])
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_redis_url(url)


def test_acl_user_in_url() -> None:
    target, auth = parse_redis_url("redis://bench:pw@[::1]:7000")
    assert (target.host, target.port, target.redis) == ("::1", 7000, True)
    assert auth == RedisAuth("pw", "bench")


def test_client_refuses_udp_workloads(redis: Redis) -> None:
    with RedisClient(parse_redis_url(redis.url)[0]) as client:
        with pytest.raises(ConfigError, match="TCP only"):
            client.run_step(StepParams(workload="rr", command="ping"))


def test_cli_sweep_writes_steps(redis: Redis, tmp_path: Any) -> None:
    import json

    out = tmp_path / "sweep.json"
    result = CliRunner().invoke(main, [
        "sweep", redis.url, "--profile", "redis-ping", "--rates", "1k,2k", "--duration", "0.3",
        "--warmup", "0", "--connections", "3", "--pipeline", "2", "--quiet", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "knee" in result.output
    document = json.loads(out.read_text())
    assert document["config"]["connections"] == 3 and document["config"]["pipeline"] == 2
    assert [s["sent_packets"] for s in document["steps"]] == [300, 600]
