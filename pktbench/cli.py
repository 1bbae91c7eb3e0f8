"""Command-line shell over the pktbench library.

Each command parses options, builds a config, calls one library function and
hands the result to a reporter. Heavy imports (the engine, scapy, matplotlib)
happen inside the commands so `pktbench --help` stays fast. PktbenchError
becomes a one-line error (exit 1); bad options exit 2; Ctrl-C exits 130.
"""
from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pktbench import rates
from pktbench._version import __version__
from pktbench.cli_files import WIDE, read_secret, table_format
from pktbench.errors import ConfigError, PktbenchError


class _Group(click.Group):
    """Turns library errors into one line on stderr, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PktbenchError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("pktbench: interrupted", err=True)
            sys.exit(130)


def _choose_engine(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # Eager and before any engine import: pktbench/engine.py reads this once, when imported.
    if value == "python":
        os.environ["PKTBENCH_PUREPYTHON"] = "1"
    elif value == "cython":
        os.environ["PKTBENCH_PUREPYTHON"] = "0"
        from pktbench import engine
        if engine.ENGINE_NAME != "cython":
            raise click.BadParameter("the compiled engine is not available in this install",
                                     ctx=ctx, param=param)
    return value


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from pktbench.engine import engine_environment
    from pktbench.report.text import version_line

    click.echo(version_line(__version__, engine_environment()))
    ctx.exit()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--engine", type=click.Choice(["cython", "python"]), default=None, is_eager=True,
              expose_value=False, callback=_choose_engine,
              help="Packet engine: the compiled one (default when built) or pure Python "
                   "(also PKTBENCH_PUREPYTHON=1).")
@click.option("--version", is_flag=True, is_eager=True, expose_value=False,
              callback=_print_version, help="Show the version and the engine, then exit.")
def main() -> None:
    """Find a network path's packets-per-second knee and throughput ceiling."""


# -- shared option parsing ----------------------------------------------------

def parse_rate(text: str) -> float | None:
    """'max' -> None; '20000', '20k', '1.5M' -> pps (the grammar of pktbench.rates)."""
    try:
        return rates.parse_pps_or_max(text)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


class RateType(click.ParamType):  # type: ignore[type-arg]
    """A pps option. `step`: the rate of a step (run, sweep), at most rates.MAX_STEP_PPS."""

    name = "PPS|max"

    def __init__(self, step: bool = False, allow_max: bool = True) -> None:
        self.step = step
        self.allow_max = allow_max
        if not allow_max:
            self.name = "PPS"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float | None:
        if value is None or isinstance(value, float):
            return value
        try:
            if not self.allow_max:
                return rates.check_step_pps(rates.parse_pps(str(value)), str(value))
            rate = parse_rate(str(value))
            if rate is not None and self.step:
                rates.check_step_pps(rate, str(value))
            return rate
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


class RateListType(click.ParamType):  # type: ignore[type-arg]
    """A comma-separated list of step rates (sweep --rates), checked as run --rate is."""

    name = "LIST"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str | None:
        if value is None:
            return None
        try:
            rates.parse_pps_list(str(value))
            for part in str(value).split(","):
                if part.strip():
                    rates.check_step_pps(rates.parse_pps(part), part)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)
        return str(value)


_SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


class SizeType(click.ParamType):  # type: ignore[type-arg]
    """Bytes, with an optional K, M or G suffix (powers of 1024)."""

    name = "BYTES[K|M|G]"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("IB").removesuffix("B")
        suffix = text[-1:] if text[-1:] in _SIZE_SUFFIXES else ""
        try:
            number = float(text[:len(text) - len(suffix)])
        except ValueError:
            self.fail(f"{value!r} is not a size (e.g. 268435456, 256M, 1G)", param, ctx)
        size = number * _SIZE_SUFFIXES[suffix]
        if not 1 << 20 <= size <= 1 << 40:
            self.fail(f"{value!r} must be from 1M to 1024G", param, ctx)
        return int(size)


def token_options(func: Any) -> Any:
    func = click.option("--token-file", metavar="FILE",
                        help="File holding the shared secret.")(func)
    return click.option("--token", metavar="SECRET", envvar="PKTBENCH_TOKEN",
                        help="Shared secret (HMAC challenge-response; never sent).")(func)


# -J: iperf3's "JSON to stdout", the same as --json -.
JSON_STDOUT = click.option("-J", "json_stdout", is_flag=True,
                           help="The JSON document on stdout (same as --json -); the table "
                                "goes to stderr.")


def _json_target(json_path: str | None, json_stdout: bool) -> str | None:
    if json_stdout:
        if json_path not in (None, "-"):
            raise click.UsageError("give -J (JSON on stdout) or --json FILE, not both")
        return "-"
    return json_path


# -- rr-tcp and redis:// targets -----------------------------------------------------

def tcp_options(func: Any) -> Any:
    func = click.option("--redis-password", metavar="PASSWORD",
                        envvar="PKTBENCH_REDIS_PASSWORD",
                        help="AUTH password of a redis:// target (or put it in the URL: "
                             "redis://:PASSWORD@HOST:PORT).")(func)
    func = click.option("--pipeline", type=click.IntRange(1, 1024), default=None,
                        help="rr-tcp: requests in flight per connection [default: 1].")(func)
    return click.option("--connections", type=click.IntRange(1, 128), default=None,
                        help="rr-tcp: TCP connections the rate is spread over "
                             "[default: 1].")(func)


def resolve_tcp(target: str | None, workload: str | None, connections: int | None,
                pipeline: int | None, redis_password: str | None) -> tuple[Any, Any, Any]:
    """(Target or None, TcpOptions or None, RedisAuth or None) from the options.

    A redis:// target always runs rr-tcp; --connections/--pipeline need it.
    """
    from pktbench import api
    from pktbench.address import Target
    from pktbench.workloads.redis import RedisAuth, parse_redis_url
    from pktbench.workloads.resp import TcpOptions

    auth: RedisAuth | None = None
    resolved: Target | None
    if target is not None and target.strip().lower().startswith("redis://"):
        resolved, auth = parse_redis_url(target)
        if workload not in (None, "rr", "rr-tcp"):
            raise click.UsageError(f"a redis:// target runs request/response only, not "
                                   f"--workload {workload}")
        workload = "rr-tcp"
    else:
        resolved = api.as_target(target)
        if redis_password is not None:
            raise click.UsageError("--redis-password needs a redis://HOST:PORT target")
    if redis_password is not None:
        auth = RedisAuth(redis_password, auth.username if auth else None)
    if workload != "rr-tcp":
        if connections is not None or pipeline is not None:
            raise click.UsageError("--connections and --pipeline need --workload rr-tcp "
                                   "or a redis:// target")
        return resolved, None, auth
    return resolved, TcpOptions(connections or 1, pipeline or 1), auth


# -- serve ------------------------------------------------------------------------

@main.command()
@click.option("--bind", default="0.0.0.0", show_default=True,
              help="Address to listen on (use :: for IPv6 and IPv4).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="TCP control and UDP data port [default: 7425]; 0 picks a free one.")
@token_options
@click.option("--max-rate", type=RateType(), default=None,
              help="Refuse steps above this many pps (each step is answered at most at its rate).")
@click.option("--max-duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Refuse steps longer than this (warm-up included), seconds.")
@click.option("--max-step-memory", type=SizeType(), default="256M", show_default=True,
              help="Refuse steps whose server buffers would take more than this.")
@click.option("--stats-file", metavar="FILE", default=None,
              help="Keep the server's counters here as JSON: written at start, after every "
                   "session and on SIGUSR1 (which also logs them).")
@click.option("--once", is_flag=True, help="Exit after the first session.")
@click.option("--quiet", is_flag=True, help="No per-session log lines.")
@click.option("--pid-file", metavar="FILE", default=None,
              help="Write the process id here once listening; removed on exit.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Log lines as text or one JSON object per line.")
@click.option("--print-systemd-unit", is_flag=True,
              help="Print a systemd unit that runs this serve as a service, then exit.")
def serve(bind: str, port: int | None, token: str | None, token_file: str | None,
          max_rate: float | None, max_duration: float | None, max_step_memory: int,
          stats_file: str | None, once: bool, quiet: bool,
          pid_file: str | None, log_format: str, print_systemd_unit: bool) -> None:
    """Answer pktbench clients (the far end of every test)."""
    from pktbench import service, wire
    from pktbench.session import Server, ServerConfig

    if print_systemd_unit:
        click.echo(service.systemd_unit(), nl=False)
        return
    config = ServerConfig(bind=bind, port=wire.DEFAULT_PORT if port is None else port,
                          secret=read_secret(token, token_file), max_rate_pps=max_rate,
                          max_duration_s=max_duration, once=once,
                          max_step_buffer_bytes=max_step_memory, stats_file=stats_file)
    log = service.logger(log_format, quiet)
    with Server(config, log=log) as server:
        signal.signal(signal.SIGUSR1, lambda signum, frame: server.request_stats())
        host, chosen = server.address
        with service.pid_file(pid_file):
            service.announce(log_format, host, chosen)
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass
            finally:
                stats = server.stats
                if not quiet:
                    service.log_stats(log_format, stats)


# -- verdicts for CI ---------------------------------------------------------------

# The path failed what --fail-on asked for: distinct from 1 (an error) and 2
# (bad usage), so CI can tell a bad path from a broken run.
EXIT_PATH_FAILED = 3

FAIL_ON = click.option(
    "--fail-on", "fail_on", type=click.Choice(["knee", "loss", "latency", "delivery"]),
    multiple=True,
    help=f"Exit {EXIT_PATH_FAILED} when the path fails: knee (a sweep found one, or the run's "
         "step failed), or a step failed that criterion. Repeatable.")


def _exit_on_failure(judgement: dict[str, Any] | None, fail_on: tuple[str, ...]) -> None:
    """Exit EXIT_PATH_FAILED when the result's judgement fails what `fail_on` names."""
    if not fail_on or judgement is None:
        return
    failed = list(judgement.get("failed_criteria") or [])
    if judgement.get("verdict") == "fail":
        failed.insert(0, "knee")
    hit = [name for name in fail_on if name in failed]
    if hit:
        from pktbench.report.text import fail_on_line

        click.echo(fail_on_line(hit, fail_on), err=True)
        sys.exit(EXIT_PATH_FAILED)


# -- run --------------------------------------------------------------------------

# What `run` sends without --profile (with one, the profile's values).
RUN_DEFAULTS = {"workload": "rr", "command": "ping", "duration_s": 3.0, "warmup_s": 0.0,
                "size_bytes": 64, "timeout_s": 1.0, "busy_poll": False}


def _with_port(target: str | None, port: int | None) -> str | None:
    """HOST plus -p PORT, as iperf3 takes them; a port in HOST:PORT must agree."""
    if port is None:
        return target
    if target is None:
        raise click.UsageError("-p/--port names the server's port: give HOST too "
                               "(without HOST the embedded server picks its own)")
    if target.strip().lower().startswith("redis://"):
        raise click.UsageError("-p/--port is for a pktbench server; put a Redis port in "
                               "the URL (redis://HOST:PORT)")
    from pktbench.address import Target, parse_target

    parsed = parse_target(target, default_port=port)
    if parsed.port != port:
        raise click.UsageError(f"{target} names port {parsed.port} and -p says {port}: "
                               "give one")
    return str(Target(parsed.host, port))


PORT_OPTION = click.option("-p", "--port", "port", type=click.IntRange(1, 65535), default=None,
                           help="The server's port (same as HOST:PORT) [default: 7425].")
QUIET_OPTION = click.option("-q", "--quiet", is_flag=True,
                            help="No progress or interval lines (the table and files stay).")


def _outputs(json_path: str | None, csv_path: str | None = None,
             plot_path: str | None = None) -> dict[str, str | None]:
    from pktbench.report import check_output_path

    outputs = {"json": json_path, "csv": csv_path, "plot": plot_path}
    for kind, path in outputs.items():
        if path:
            check_output_path(path, kind)
    if sum(1 for path in outputs.values() if path == "-") > 1:
        raise click.UsageError("only one output can go to stdout ('-')")
    return outputs


def _interval_option(default_words: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "-i", "--interval", "interval", type=click.FloatRange(min=0), default=None,
        help=f"Report each step every S seconds while it runs, live on stderr and kept in "
             f"the JSON (the step's intervals); 0 turns it off [default: {default_words}].")


JSON_STREAM_OPTION = click.option(
    "--json-stream", "json_stream", is_flag=True,
    help="One JSON object per line on stdout as things happen (start, each interval, each "
         "step, end with the whole result); tables go to stderr.")


class _Live:
    """-i interval lines, --json-stream events, and the intervals each step keeps."""

    def __init__(self, interval_s: float | None, json_stream: bool, quiet: bool, kind: str,
                 command: str) -> None:
        from pktbench.intervals import MAX_INTERVAL_S, MIN_INTERVAL_S, IntervalReporter
        from pktbench.report.stream import JsonStream

        if interval_s is not None and interval_s != 0 and not (
                MIN_INTERVAL_S <= interval_s <= MAX_INTERVAL_S):  # NaN fails both
            raise click.BadParameter(f"{interval_s:g} s is {'too short' if interval_s < 1 else 'not an interval'}: "
                                     f"give {MIN_INTERVAL_S:g} to {MAX_INTERVAL_S:g} s, or 0 "
                                     "for none", param_hint="-i/--interval")
        self.quiet = quiet
        self.stream = JsonStream(sys.stdout, kind, command) if json_stream else None
        self.reporter = (IntervalReporter(interval_s, self._interval)
                         if interval_s else None)
        self.kept: list[list[dict[str, Any]] | None] = []  # per measured step, in order
        self.pending: list[dict[str, Any]] = []  # a --bidir step's other direction

    def __enter__(self) -> _Live:
        if self.reporter is not None:
            self.reporter.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.reporter is not None:
            self.reporter.__exit__(None, None, None)

    def _interval(self, item: dict[str, Any]) -> None:
        from pktbench.report.stream import interval_line

        if not self.quiet:
            click.echo("  " + interval_line(item), err=True)
        if self.stream is not None:
            self.stream.interval(item)

    def step_done(self, step: dict[str, Any]) -> None:
        intervals = None
        if self.reporter is not None:
            self.pending += self.reporter.take()
            if step.get("bidir"):  # both directions' pumps closed together: split them
                intervals = [i for i in self.pending if i.get("direction") == step["direction"]]
                self.pending = [i for i in self.pending
                                if i.get("direction") != step["direction"]]
            else:
                intervals, self.pending = self.pending, []
        if not step.get("search_trial"):
            self.kept.append(intervals)
        if self.stream is not None:
            self.stream.step({**step, "intervals": intervals} if intervals is not None
                             else step)

    def finish(self, result: Any) -> Any:
        """`result` with each step's intervals in it (when -i was on)."""
        import dataclasses

        for step in result.steps[len(self.kept):]:  # a run: its one step had no callback
            self.step_done(dict(step))
        if self.reporter is not None:
            steps = tuple({**step, "intervals": kept} if kept is not None else step
                          for step, kept in zip(result.steps, self.kept))
            result = dataclasses.replace(result, steps=steps + tuple(result.steps[len(steps):]))
        return result

    def end(self, result: Any) -> None:
        if self.stream is not None:
            self.stream.end(result.to_dict())


def _check_stream(json_stream: bool, outputs: dict[str, str | None]) -> None:
    if json_stream and "-" in outputs.values():
        raise click.UsageError("--json-stream writes stdout: send the other output to a file")


def _write_results(result: Any, outputs: dict[str, str | None], table_kind: str | None,
                   stopper: Any, live: _Live | None = None) -> Any:
    """The table and every output file of `result`, marked interrupted when a signal came.

    Returns the result as written. After an interrupt the caller exits with
    `stopper.exit_code` once this returns.
    """
    import dataclasses
    import signal

    from pktbench.report import write_report

    if stopper.interrupted:
        result = dataclasses.replace(result, interrupted=True)
        name = signal.Signals(stopper.signum).name
        click.echo(f"pktbench: interrupted by {name}: {len(result.steps)} finished "
                   f"step(s) reported{', written' if any(outputs.values()) else ''}", err=True)
    to_stdout = "-" in outputs.values() or (live is not None and live.stream is not None)
    write_report(table_format(), result, sys.stderr if to_stdout else sys.stdout,
                 kind=table_kind)
    for kind, path in outputs.items():
        if path:
            write_report(kind, result, path)
    if live is not None:
        live.end(result)
    return result


@main.command()
@click.argument("target", required=False, metavar="[HOST[:PORT] | redis://HOST[:PORT]]")
@click.option("--profile", "profile_name", default=None, metavar="NAME|FILE",
              help="Take workload, command, size, duration, warm-up, timeout and criteria "
                   "from this profile (as sweep does); options given here win "
                   "[default: run's own defaults, judged by the default profile].")
@click.option("--workload", type=click.Choice(["rr", "blast", "rr-tcp"]), default=None,
              help="rr: UDP request/response; blast: one-way UDP; rr-tcp: RESP over TCP "
                   "(always, against redis://) [default: rr].")
@click.option("--command", "command", type=click.Choice(["ping", "get", "set"]), default=None,
              help="RESP command carried by rr requests [default: ping].")
@click.option("--rate", type=RateType(step=True), default="10000", show_default=True,
              help="Offered packets per second, or 'max'.")
@click.option("-t", "--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Measured window, seconds [default: 3].")
@click.option("--warmup", type=click.FloatRange(min=0), default=None,
              help="Traffic before the window that is not counted, seconds [default: 0].")
@click.option("-l", "--size", type=click.IntRange(min=1), default=None,
              help="UDP payload bytes per packet, header included [default: 64].")
@click.option("--busy-poll/--no-busy-poll", default=None,
              help="Spin on the sockets at both ends instead of sleeping (lower latency).")
@click.option("--outstanding", type=click.IntRange(1, 65536), default=None,
              help="rr: at most N requests in flight (1 = ping-pong); default open loop.")
@click.option("--gso", type=click.Choice(["auto", "on", "off"]), default=None,
              help="UDP: send datagrams due together as GSO buffers and receive them "
                   "coalesced (GRO) where the kernel has it; on: fail where it has not; "
                   "off: one datagram per message [default: the profile's, else auto].")
@click.option("--burst", type=click.IntRange(1, 64), default=None,
              help="UDP with GSO: at most N datagrams leave at once [default: those due in "
                   "100 us, at most 64; rr: 1].")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="A response later than this counts as lost, seconds [default: 1].")
@click.option("--workers", type=click.IntRange(1, 128), default=1, show_default=True,
              help="rr/blast over UDP: sender processes, one flow (source port) each, "
                   "the rate split evenly.")
@click.option("--cpus", "cpus_text", metavar="LIST", default=None,
              help="Pin the worker processes to these CPUs, round-robin, e.g. 0,1.")
@click.option("--max-loss", type=click.FloatRange(0, 1), default=None,
              help="Loss ratio above this fails the step (default: the profile's).")
@click.option("--min-delivery", type=click.FloatRange(0, 1), default=None,
              help="Received below this fraction of offered fails (default: the profile's).")
@FAIL_ON
@click.option("--json", "json_path", metavar="FILE", help="Write the result as JSON ('-' = stdout).")
@JSON_STDOUT
@click.option("--csv", "csv_path", metavar="FILE", help="Write the step as a CSV row.")
@QUIET_OPTION
@_interval_option("1 when --duration is over 10 s, else off")
@JSON_STREAM_OPTION
@PORT_OPTION
@WIDE
@token_options
@tcp_options
def run(target: str | None, workload: str | None, command: str | None, rate: float | None,
        duration: float | None, warmup: float | None, size: int | None,
        busy_poll: bool | None, outstanding: int | None, timeout: float | None,
        profile_name: str | None, max_loss: float | None, min_delivery: float | None,
        fail_on: tuple[str, ...], json_path: str | None, json_stdout: bool,
        csv_path: str | None, quiet: bool, port: int | None,
        token: str | None, token_file: str | None,
        connections: int | None, pipeline: int | None, redis_password: str | None,
        workers: int, cpus_text: str | None, interval: float | None = None,
        json_stream: bool = False, gso: str | None = None,
        burst: int | None = None) -> None:
    """Measure one step. Without HOST, a server is started on this machine.

    SIGINT or SIGTERM ends the step early: its counts are reported and
    written (marked interrupted), then the exit status is 130 or 143.
    """
    from pktbench import api, config
    from pktbench.interrupts import StopOnSignal

    outputs = _outputs(_json_target(json_path, json_stdout), csv_path)
    target = _with_port(target, port)
    profile = config.load_profile(profile_name or "default")
    base: dict[str, Any] = dict(RUN_DEFAULTS)
    if profile_name is not None:
        base = {"workload": profile.workload, "command": profile.command,
                "duration_s": profile.duration_s, "warmup_s": profile.warmup_s,
                "size_bytes": profile.size_bytes, "timeout_s": profile.timeout_s,
                "busy_poll": profile.busy_poll}
    if workload is not None and command is None and workload != base["workload"]:
        base["command"] = "ping"  # another workload than the profile's: its default command
    chosen_workload = workload or base["workload"]
    over_tcp = chosen_workload == "rr-tcp" or (target or "").strip().lower().startswith(
        "redis://")
    if profile_name is not None and profile.workload == "rr":
        # the profile's loop options, each where its transport runs
        if over_tcp:
            connections = connections if connections is not None else profile.connections
            pipeline = pipeline if pipeline is not None else profile.pipeline
        elif chosen_workload == "rr" and outstanding is None:
            outstanding = profile.outstanding
    resolved, tcp, auth = resolve_tcp(target, chosen_workload, connections, pipeline,
                                      redis_password)
    chosen_workload = "rr-tcp" if tcp is not None else chosen_workload
    cpus = _worker_cpus(workers, cpus_text, chosen_workload)
    timeout_s = timeout if timeout is not None else base["timeout_s"]
    drain_s = max(profile.drain_s, timeout_s) if profile_name is not None else None
    chosen_command = command or base["command"]
    params = api.step_params(workload=chosen_workload,
                             command=chosen_command if chosen_workload in ("rr", "rr-tcp")
                             else "none",
                             rate_pps=rate,
                             duration_s=duration if duration is not None else base["duration_s"],
                             warmup_s=warmup if warmup is not None else base["warmup_s"],
                             drain_s=drain_s,
                             size_bytes=size if size is not None else base["size_bytes"],
                             busy_poll=busy_poll if busy_poll is not None else base["busy_poll"],
                             timeout_s=timeout_s,
                             outstanding=outstanding if chosen_workload == "rr" else None,
                             connections=tcp.connections if tcp else None,
                             pipeline=tcp.pipeline if tcp else None, streams=workers,
                             gso=gso or (profile.gso if profile_name is not None else "auto"),
                             burst=burst if burst is not None or profile_name is None
                             else profile.burst)
    if tcp is None:
        api.check_gso_mode(params.gso)
    criteria = config.apply_overrides(profile, source="command line",
                                      max_loss_ratio=max_loss,
                                      min_delivery_ratio=min_delivery).criteria
    secret = read_secret(token, token_file)
    _check_stream(json_stream, outputs)
    if interval is None and params.duration_s > 10:
        interval = 1.0  # a long step says how it goes, as iperf3 does
    if interval and workers > 1:
        interval = None  # the senders' meters are in the worker processes
    with _Live(interval, json_stream, quiet, "run", "run") as live, StopOnSignal() as stopper:
        result = api.run(resolved, params, secret=secret, redis_auth=auth, worker_cpus=cpus,
                         criteria=criteria, stop=stopper.stop)
    result = _write_results(live.finish(result), outputs, "run", stopper, live)
    if stopper.interrupted:
        sys.exit(stopper.exit_code)
    _exit_on_failure(result.judgement, fail_on)


# -- sweep ------------------------------------------------------------------------

@main.command()
@click.argument("target", required=False, metavar="[HOST[:PORT] | redis://HOST[:PORT]]")
@click.option("--profile", "profile_name", default="default", show_default=True,
              metavar="NAME|FILE", help="Built-in profile name or a .toml file.")
@click.option("--workload", type=click.Choice(["rr", "blast", "rr-tcp", "bulk"]), default=None,
              help="Override the profile's workload (rr-tcp: its rr steps as RESP over TCP; "
                   "bulk: throughput over --streams or --gbps, as `pktbench bulk`).")
@click.option("--streams", "bulk_streams", metavar="LIST", default=None,
              help="bulk: one step per TCP stream count, e.g. 1,2,4,8.")
@click.option("--gbps", "bulk_gbps", metavar="LIST", default=None,
              help="bulk --udp: one step per offered rate in Gbit/s, e.g. 1,2,5.")
@click.option("-u", "--udp", "bulk_udp", is_flag=True,
              help="bulk: large UDP datagrams instead of TCP streams.")
@click.option("--workers", type=click.IntRange(1, 128), default=1, show_default=True,
              help="rr/blast over UDP: sender processes, one flow (source port) each, "
                   "the rate split evenly.")
@click.option("--cpus", "cpus_text", metavar="LIST", default=None,
              help="Pin the worker processes to these CPUs, round-robin, e.g. 0,1.")
@click.option("--command", "command", type=click.Choice(["ping", "get", "set"]), default=None,
              help="Override the RESP command of rr requests.")
@click.option("--rates", type=RateListType(), default=None,
              help="Explicit offered rates, e.g. 1k,2k,5k,10k.")
@click.option("--from", "from_pps", type=RateType(step=True, allow_max=False), default=None,
              help="Lowest offered rate.")
@click.option("--to", "to_pps", type=RateType(step=True, allow_max=False), default=None,
              help="Highest offered rate.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Number of rates.")
@click.option("--scale", type=click.Choice(["log", "linear"]), default=None,
              help="Spacing of --from..--to.")
@click.option("--search", "search_goals", metavar="ndr,pdr", default=None,
              help="Also search NDR and/or PDR after the sweep.")
@click.option("--pdr-loss", type=click.FloatRange(0, 1), default=None,
              help="Loss ratio PDR accepts (default 0.005).")
@click.option("--precision", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Search precision, relative width (default from the profile).")
@click.option("-t", "--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Measured seconds per step.")
@click.option("--warmup", type=click.FloatRange(min=0), default=None,
              help="Uncounted seconds before each step.")
@click.option("--repeat", type=click.IntRange(min=1), default=None, help="Runs per rate.")
@click.option("-l", "--size", type=click.IntRange(min=1), default=None,
              help="UDP payload bytes.")
@click.option("--busy-poll/--no-busy-poll", default=None,
              help="Spin on the sockets at both ends (lower latency, burns CPUs).")
@click.option("--max-loss", type=click.FloatRange(0, 1), default=None,
              help="Knee criterion: loss ratio above this fails a step.")
@click.option("--latency-factor", type=click.FloatRange(min=1, min_open=True), default=None,
              help="Knee criterion: p99 above this many times the baseline p99 fails.")
@click.option("--min-delivery", type=click.FloatRange(0, 1), default=None,
              help="Knee criterion: received below this fraction of offered fails.")
@click.option("--no-early-stop", is_flag=True, help="Run every rate even past the knee.")
@FAIL_ON
@click.option("--outstanding", type=click.IntRange(1, 65536), default=None,
              help="rr over UDP: at most N requests in flight (1 = ping-pong); "
                   "default from the profile, else open loop.")
@click.option("--start-at", "start_at", type=click.FloatRange(min=0), default=None,
              metavar="EPOCH_S", help="Start step k at EPOCH_S + k x --step-period (this "
              "host's wall clock, seconds since 1970), so several sources step together; "
              "runs every planned step.")
@click.option("--step-period", "step_period", type=click.FloatRange(min=0, min_open=True),
              default=None, metavar="SECONDS", help="Seconds between clocked step starts.")
@click.option("--gso", type=click.Choice(["auto", "on", "off"]), default=None,
              help="UDP: send datagrams due together as GSO buffers and receive them "
                   "coalesced (GRO) where the kernel has it; on: fail where it has not; "
                   "off: one datagram per message [default: the profile's, else auto].")
@click.option("--burst", type=click.IntRange(1, 64), default=None,
              help="UDP with GSO: at most N datagrams leave at once [default: those due in "
                   "100 us, at most 64; rr: 1].")
@click.option("--json", "json_path", metavar="FILE", help="Write the result as JSON ('-' = stdout).")
@JSON_STDOUT
@click.option("--csv", "csv_path", metavar="FILE", help="Write one CSV row per step.")
@click.option("--plot", "plot_path", metavar="FILE", help="Write a PNG or SVG plot.")
@QUIET_OPTION
@_interval_option("off")
@JSON_STREAM_OPTION
@PORT_OPTION
@WIDE
@token_options
@tcp_options
def sweep(target: str | None, profile_name: str, workload: str | None, command: str | None,
          rates: str | None, from_pps: float | None, to_pps: float | None, steps: int | None,
          scale: str | None, search_goals: str | None, pdr_loss: float | None,
          precision: float | None, duration: float | None, warmup: float | None,
          repeat: int | None, size: int | None, busy_poll: bool | None, max_loss: float | None,
          latency_factor: float | None, min_delivery: float | None, no_early_stop: bool,
          fail_on: tuple[str, ...], outstanding: int | None, json_path: str | None, csv_path: str | None,
          plot_path: str | None, quiet: bool, token: str | None, token_file: str | None,
          connections: int | None, pipeline: int | None, redis_password: str | None,
          bulk_streams: str | None, bulk_gbps: str | None, bulk_udp: bool, workers: int,
          cpus_text: str | None, json_stdout: bool = False, port: int | None = None,
          interval: float | None = None, json_stream: bool = False,
          gso: str | None = None, burst: int | None = None, start_at: float | None = None,
          step_period: float | None = None) -> None:
    """Sweep offered rates and print the knee table. Without HOST, on this machine.

    With --workload bulk, sweep stream counts (--streams) or offered Gbit/s
    (--udp --gbps) instead and print the throughput table of `pktbench bulk`.

    SIGINT or SIGTERM stops the sweep: the table of the finished steps is
    printed and --json/--csv/--plot written (marked interrupted), the
    embedded server is stopped, and the exit status is 130 or 143.
    """
    from pktbench import api, config
    from pktbench.interrupts import StopOnSignal
    from pktbench.report import Progress, step_line

    json_path = _json_target(json_path, json_stdout)
    target = _with_port(target, port)
    if workload == "bulk":
        ctx = click.get_current_context()
        rr_only = [name for name in ("profile_name", "command", "rates", "from_pps", "to_pps",
                                     "steps", "scale", "search_goals", "pdr_loss", "precision",
                                     "repeat", "busy_poll", "max_loss", "latency_factor",
                                     "min_delivery", "no_early_stop", "outstanding", "csv_path",
                                     "plot_path", "connections", "pipeline", "redis_password",
                                     "gso", "burst", "start_at", "step_period")
                   if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if rr_only:
            option = next(p for p in ctx.command.params if p.name == rr_only[0])
            raise click.UsageError(f"{option.opts[-1]} does not apply to --workload bulk "
                                   "(it takes --streams, or --udp with --gbps)")
        _sweep_bulk(target, bulk_streams, bulk_gbps, bulk_udp, duration, warmup, size,
                    json_path, quiet, read_secret(token, token_file), workers,
                    _worker_cpus(1, cpus_text, "bulk"))
        return
    if bulk_streams is not None or bulk_gbps is not None or bulk_udp:
        raise click.UsageError("--streams, --gbps and --udp need --workload bulk")

    outputs = _outputs(json_path, csv_path, plot_path)
    resolved, tcp, auth = resolve_tcp(target, workload, connections, pipeline, redis_password)
    if tcp is not None and outstanding is not None:
        raise click.UsageError("--outstanding is for rr over UDP; over TCP use --pipeline")
    if workload == "rr-tcp":
        workload = "rr"  # a profile's rr steps, carried over TCP
    profile = config.apply_overrides(
        config.load_profile(profile_name), source="command line",
        workload=workload, command=command, rates_pps=rates, from_pps=from_pps, to_pps=to_pps,
        steps=steps, scale=scale, search=search_goals, pdr_loss_ratio=pdr_loss,
        precision=precision, duration_s=duration, warmup_s=warmup, repeat=repeat,
        size_bytes=size, busy_poll=busy_poll, max_loss_ratio=max_loss,
        latency_factor=latency_factor, min_delivery_ratio=min_delivery,
        connections=connections, pipeline=pipeline, outstanding=outstanding, gso=gso,
        burst=burst)
    if tcp is None:
        api.check_gso_mode(profile.gso)
    if tcp is not None:
        from pktbench.sweeper import tcp_options_for

        tcp = tcp_options_for(profile)  # the command line's values, else the profile's
    cpus = _worker_cpus(workers, cpus_text, "rr-tcp" if tcp is not None else profile.workload)
    if (start_at is None) != (step_period is None):
        raise click.UsageError("--start-at and --step-period go together")
    clock = None
    if start_at is not None and step_period is not None:
        from pktbench.sweeper import StepClock

        clock = StepClock(start_at, step_period)
    secret = read_secret(token, token_file)
    _check_stream(json_stream, outputs)
    with (_Live(interval if workers == 1 else None, json_stream, quiet, "sweep", "sweep")
          as live, StopOnSignal() as stopper,
          Progress(profile.step_count, quiet=quiet) as progress):

        def show(step: dict[str, Any], done: int, planned: int) -> None:
            live.step_done(step)
            if step.get("search_trial"):
                progress.message("search " + step_line(step))
            else:
                progress.step_done(step)

        result = api.sweep(resolved, profile, secret=secret, early_stop=not no_early_stop,
                           on_step=show, tcp=tcp, redis_auth=auth, workers=workers, cpus=cpus,
                           stop=stopper.stop, clock=clock)
    result = _write_results(live.finish(result), outputs, None, stopper, live)
    if stopper.interrupted:
        sys.exit(stopper.exit_code)
    _exit_on_failure(result.judgement, fail_on)


@main.command("profiles")
def profiles_command() -> None:
    """List the built-in workload profiles."""
    from pktbench import config
    from pktbench.report import write_report

    write_report("table", config.list_profiles(), sys.stdout, kind="profiles")


@main.command()
@click.argument("old", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@click.option("--json", "json_path", metavar="FILE",
              help="Write the comparison as JSON ('-' = stdout, the table then goes to "
                   "stderr).")
@JSON_STDOUT
@click.option("--plot", "plot_path", metavar="FILE",
              help="Write both sweeps overlaid on one plot (PNG or SVG).")
@WIDE
def compare(old: str, new: str, json_path: str | None, json_stdout: bool,
            plot_path: str | None) -> None:
    """Compare two result files (old environment vs new) side by side.

    Two rate sweeps compare knee, NDR/PDR and latency at matching rates; two
    bulk tests their ceilings and the Gbit/s of matching steps.
    """
    from pktbench.comparison import compare_files
    from pktbench.fleet.result import is_fleet_file
    from pktbench.report import check_output_path, write_report

    json_path = _json_target(json_path, json_stdout)
    if json_path:
        check_output_path(json_path, "json")
    if plot_path:
        check_output_path(plot_path, "plot")
    if is_fleet_file(old) or is_fleet_file(new):
        if plot_path:
            raise click.UsageError("--plot overlays two sweeps; fleet results plot with "
                                   "`pktbench fleet --plot`")
        from pktbench.report.fleet import compare_fleet_files

        text = compare_fleet_files(old, new, json_path)
        click.echo(text, err=json_path == "-")
        return
    from pktbench.cli_files import sweeps_to_plot

    sweeps = sweeps_to_plot(old, new) if plot_path else None
    comparison = compare_files(old, new)
    write_report(table_format(), comparison, sys.stderr if json_path == "-" else sys.stdout,
                 kind="compare")
    if json_path:
        write_report("json", comparison, json_path, kind="compare")
    if sweeps is not None and plot_path:
        from pktbench.report.plot import write_compare_plot

        write_compare_plot(*sweeps, plot_path, (comparison["a"]["label"],
                                                comparison["b"]["label"]))


# --- decode: per-flow statistics of a packet capture -------------------------

@main.command()
@click.argument("capture", type=click.Path(dir_okay=False, path_type=str))
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Count only pktbench packets to or from this UDP port.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of a table.")
@WIDE
def decode(capture: str, port: int | None, as_json: bool) -> None:
    """Per-flow packets, rate, loss, duplicates and reordering in CAPTURE (pcap/pcapng)."""
    from pktbench.decode import decode_pcap
    from pktbench.report import write_decode_error, write_report

    try:
        result = decode_pcap(capture, port=port)
    except PktbenchError as exc:
        if as_json:
            # stdout stays one valid JSON document, errors included.
            write_decode_error(str(exc), sys.stdout)
            raise click.exceptions.Exit(1) from None
        raise click.ClickException(str(exc)) from None
    write_report("json" if as_json else table_format(), result, sys.stdout, kind="decode")


# ---------------------------------------------------------------- testbed
# `pktbench testbed ...`: thin shell over pktbench.testbed (root only).


@main.group("testbed")
def testbed_group() -> None:
    """Two network namespaces on this machine, shaped to have a known knee (root)."""


_testbed_prefix_option = click.option(
    "--prefix", default="pktb", show_default=True,
    help="Namespace name prefix: namespaces are PREFIX-a and PREFIX-b.")


def _testbed_rate(ctx: click.Context, param: click.Parameter,
                  value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(rates.parse_bps(value, "rate cap"))
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


@testbed_group.command("up")
@_testbed_prefix_option
@click.option("--paths", type=click.IntRange(1, 2), default=1, show_default=True,
              help="veth pairs between a and b (2: bond or ECMP over both).")
@click.option("--rate-cap", callback=_testbed_rate, metavar="RATE",
              help="Bit rate cap per path, e.g. 1gbit, 500mbit.")
@click.option("--rate-cap-qdisc", type=click.Choice(["tbf", "htb"]), default="tbf",
              show_default=True, help="tbf drops over the cap; htb queues and pushes back.")
@click.option("--pps-limit", type=click.IntRange(min=1), help="Packets/s policer (nftables).")
@click.option("--pps-burst", type=click.IntRange(min=1), default=100, show_default=True,
              help="Policer burst in packets (at least 100).")
@click.option("--delay-ms", type=click.FloatRange(min=0), default=0.0,
              help="Added one-way delay (needs tc netem).")
@click.option("--mtu", type=click.IntRange(68, 65535), default=1500, show_default=True)
@click.option("--both-directions", is_flag=True, help="Shape b->a like a->b.")
@click.option("--allow-degraded", is_flag=True,
              help="Build even without netem, leaving the delay out (and saying so).")
@click.option("--mechanism", type=click.Choice(["auto", "ecmp", "bond"]), default="auto",
              show_default=True, help="How two paths are joined.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option("--force", is_flag=True,
              help="Rebuild a different testbed even with processes inside (they are killed).")
@click.option("--hosts", type=click.IntRange(2, 64), default=None,
              help="A fleet instead: N host namespaces on one bridge (see `testbed sshd`).")
@click.option("--host-pps-limit", "host_pps_limits", multiple=True, metavar="NAME=PPS",
              help="With --hosts: UDP ingress policer at host NAME (h1..hN), repeatable.")
def testbed_up(prefix: str, paths: int, rate_cap: int | None, rate_cap_qdisc: str,
               pps_limit: int | None, pps_burst: int, delay_ms: float, mtu: int,
               both_directions: bool, allow_degraded: bool, mechanism: str,
               as_json: bool, force: bool = False, hosts: int | None = None,
               host_pps_limits: tuple[str, ...] = ()) -> None:
    """Create (or keep, if identical) the namespace testbed.

    A different testbed under the prefix is rebuilt, and what differed is
    said; while processes run inside it that is refused unless --force.
    """
    from pktbench import api, testbed
    from pktbench.report import write_report, write_testbed_error

    if hosts is not None:
        from pktbench.fleet.command import testbed_hosts_up

        return testbed_hosts_up(prefix, hosts, host_pps_limits, pps_burst, as_json)
    if host_pps_limits:
        raise click.UsageError("--host-pps-limit needs --hosts N")

    try:
        config = testbed.TestbedConfig(
            prefix=prefix, paths=paths, rate_cap_bps=rate_cap,
            rate_cap_qdisc=rate_cap_qdisc,  # type: ignore[arg-type]
            pps_limit=pps_limit, pps_burst=pps_burst, delay_ms=delay_ms, mtu=mtu,
            both_directions=both_directions, allow_degraded=allow_degraded,
            mechanism=mechanism)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        status = api.testbed_up(config, force=force)
    except PktbenchError as exc:
        if as_json:
            write_testbed_error(str(exc), sys.stdout)
            raise SystemExit(1) from None
        raise click.ClickException(str(exc)) from None
    write_report("json" if as_json else "table", status, sys.stdout, kind="testbed")


@testbed_group.command("down")
@_testbed_prefix_option
def testbed_down(prefix: str) -> None:
    """Remove the testbed (namespaces, veths, qdiscs, nft rules). Fine if none."""
    from pktbench import api
    from pktbench.fleet import testbed as fleet_testbed
    from pktbench.report import write_report

    removal = api.testbed_down(prefix)
    if fleet_testbed.down(prefix):  # the namespaces of `testbed up --hosts N`
        removal = api.TestbedRemoval(prefix, True)
    write_report("table", removal, sys.stdout, kind="testbed-down")


@testbed_group.command("status")
@_testbed_prefix_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def testbed_status(prefix: str, as_json: bool) -> None:
    """Show addresses, shaping, mechanism and counters; exit 1 if not up."""
    from pktbench import api
    from pktbench.report import write_report, write_testbed_error

    try:
        status = api.testbed_status(prefix)
    except PktbenchError as exc:
        if as_json:
            write_testbed_error(str(exc), sys.stdout)
            raise SystemExit(1) from None
        raise click.ClickException(str(exc)) from None
    write_report("json" if as_json else "table", status, sys.stdout, kind="testbed")
    if not status.up:
        raise SystemExit(1)


@testbed_group.command("probe")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def testbed_probe(as_json: bool) -> None:
    """Say which kernel features (netem, bonding, tbf, htb, nft, ECMP hash) work here."""
    from pktbench import api
    from pktbench.report import write_report

    write_report("json" if as_json else "table", api.testbed_probe(), sys.stdout, kind="probe")


@testbed_group.command(
    "exec", context_settings={"ignore_unknown_options": True,
                              "allow_interspersed_args": False})
@_testbed_prefix_option
@click.argument("side", type=click.Choice(["a", "b"]))
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def testbed_exec(prefix: str, side: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside namespace a or b; exits with its exit code.

    Example: pktbench testbed exec b -- pktbench serve
    """
    from pktbench import testbed

    argv = list(command[1:] if command[0] == "--" else command)
    if not argv:
        raise click.UsageError("testbed exec needs a command after --")
    try:
        proc = testbed.exec_in(side, argv, prefix=prefix)  # type: ignore[arg-type]
    except FileNotFoundError:
        raise click.ClickException(f"command not found: {argv[0]}") from None
    raise SystemExit(proc.returncode)


# -- validate: crafted good and bad datagrams against a server -------------------

@main.command("validate")
@click.argument("target", required=False, metavar="[HOST[:PORT]]")
@click.option("--case", "case_names", multiple=True, metavar="NAME",
              help="Run only this case (repeatable); names as in the table.")
@click.option("--json", "json_path", metavar="FILE",
              help="Write the report as JSON ('-' = stdout, the table then goes to stderr).")
@JSON_STDOUT
@WIDE
@token_options
def validate_command(target: str | None, case_names: tuple[str, ...], json_path: str | None,
                     token: str | None, token_file: str | None,
                     json_stdout: bool = False) -> None:
    """Check a server against crafted packets: valid requests answered exactly,
    malformed ones dropped and counted by reason, still serving afterwards.

    Without HOST, a server is started on this machine. Exit 0 when no case
    failed (cases that need root are skipped without it), 1 otherwise.
    """
    from pktbench import api
    from pktbench.report import check_output_path, write_report, write_validation_error

    json_path = _json_target(json_path, json_stdout)
    if json_path:
        check_output_path(json_path, "json")
    try:
        report = api.validate_server(target, read_secret(token, token_file),
                                    cases=case_names or None)
    except PktbenchError as exc:
        if json_path:
            # stdout stays one valid JSON document, errors included.
            write_validation_error(target, str(exc), json_path)
        raise click.ClickException(str(exc)) from None
    write_report(table_format(), report, sys.stderr if json_path == "-" else sys.stdout,
                 kind="validate")
    if json_path:
        write_report("json", report, json_path, kind="validate")
    if not report.ok:
        raise SystemExit(1)


# ---------------------------------------------------------------- bulk
# `pktbench bulk ...`: throughput of N TCP streams (or UDP bulk) and the ceiling.

def _bulk_list(parse: Any) -> Any:
    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return ()
        try:
            return parse(value)
        except ConfigError as exc:
            raise click.BadParameter(str(exc)) from None
    return convert


def _bulk_speed(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return rates.parse_bps(value, param.name.replace("_", " ") if param.name else "bit rate")
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def _bulk_rate(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """bulk --rate: bit/s with a unit; a bare number could mean pps (as run's --rate) or bit/s."""
    if value is None:
        return None
    if rates.is_bare_number(value):
        raise click.BadParameter(
            f"{value.strip()!r} has no unit: bulk rates are bit/s, so say which, e.g. "
            f"{value.strip()}M or {value.strip()}G (or -b {value.strip()} for plain bit/s, "
            "as iperf3 reads it)")
    return _bulk_speed(ctx, param, value)


def _bulk_names(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def _bulk_ports(text: str) -> tuple[int, ...]:
    from pktbench.flows import parse_count_list

    return parse_count_list(text, "ports")


def _bulk_counts(text: str) -> tuple[int, ...]:
    from pktbench.flows import parse_count_list

    return parse_count_list(text)


def _bulk_cpus(text: str) -> tuple[int, ...]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(part.isdigit() for part in parts):
        raise ConfigError(f"cpus {text!r} must be a comma-separated list of CPU numbers, e.g. 0,1")
    return tuple(int(part) for part in parts)


def _bulk_rates(text: str) -> tuple[float, ...]:
    return rates.parse_bps_list(text, bare_scale="g")  # a bare number is Gbit/s


@main.command()
@click.argument("target", required=False, metavar="[HOST[:PORT]]")
@click.option("-P", "--streams", type=click.IntRange(1, 128), default=1, show_default=True,
              help="Parallel TCP streams, each on its own source port.")
@click.option("-t", "--duration", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, help="Measured seconds per step.")
@click.option("--warmup", type=click.FloatRange(min=0), default=0.5, show_default=True,
              help="Seconds of traffic before the window (slow start), not counted.")
@click.option("-u", "--udp", is_flag=True,
              help="UDP bulk: large datagrams instead of TCP streams.")
@click.option("--size", type=click.IntRange(min=1), default=None,
              help="UDP payload bytes per datagram [default: fits the path MTU].")
@click.option("-l", "--length", "length", type=click.IntRange(min=1), default=None,
              help="As iperf3 -l: the UDP datagram size with -u (--size), else the TCP "
                   "write size (--write-size).")
@click.option("--rate", "rate", callback=_bulk_rate, metavar="BITRATE", default=None,
              help="UDP offered bit rate with its unit, e.g. 5G, 800M, 2x10G "
                   "[default: as fast as possible].")
@click.option("-b", "--bitrate", "bitrate", callback=_bulk_speed, metavar="BITRATE",
              default=None, help="As --rate, and a bare number is bit/s (iperf3 -b).")
@click.option("-R", "--reverse", is_flag=True,
              help="The server sends, this end receives (TCP).")
@click.option("--bidir", is_flag=True,
              help="Both directions at once (TCP): --streams each way, reported per "
                   "direction.")
@click.option("--write-size", "write_size", type=click.IntRange(1024, 16 * 1024 * 1024),
              default=None, help="Bytes per TCP write [default: 1048576] (iperf3 -l).")
@click.option("--link-speed", callback=_bulk_speed, metavar="SPEED", default=None,
              help="Line rate to compare the ceiling with, e.g. 10G, 2x10G.")
@click.option("--link-model", type=click.Choice(["auto", "l1", "l2"]), default="auto",
              show_default=True,
              help="What the link speed limits: l1 a physical link (preamble and gap count), "
                   "l2 a shaper such as tbf/htb (frame bytes); auto: l1 unless the traffic "
                   "exceeded what such a link carries.")
@click.option("--paths", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Plan source ports so the streams spread evenly over this many paths.")
@click.option("--path-ifaces", callback=_bulk_names, metavar="IF,IF",
              help="The paths' interfaces here (bond members, ECMP next hops): their byte "
                   "counters show where each flow went and the bytes per path.")
@click.option("--ports", callback=_bulk_list(_bulk_ports), metavar="LIST",
              help="Source ports to use, one per stream (e.g. from an earlier plan).")
@click.option("--sweep-streams", callback=_bulk_list(_bulk_counts), metavar="LIST",
              help="One step per stream count, e.g. 1,2,4,8 (TCP).")
@click.option("--sweep-rates", callback=_bulk_list(_bulk_rates), metavar="LIST",
              help="One step per offered rate in Gbit/s, e.g. 1,2,5 (UDP).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Client processes the streams are split over.")
@click.option("--cpus", callback=_bulk_list(_bulk_cpus),
              metavar="LIST", help="Pin the workers to these CPUs, round-robin.")
@click.option("--json", "json_path", metavar="FILE", help="Write the result as JSON ('-' = stdout).")
@JSON_STDOUT
@QUIET_OPTION
@_interval_option("off; TCP only, with --workers 1")
@JSON_STREAM_OPTION
@PORT_OPTION
@WIDE
@token_options
def bulk(target: str | None, streams: int, duration: float, warmup: float, udp: bool,
         size: int | None, rate: float | None, reverse: bool, link_speed: float | None,
         link_model: str, paths: int, path_ifaces: tuple[str, ...], ports: tuple[int, ...],
         sweep_streams: tuple[int, ...], sweep_rates: tuple[float, ...], workers: int,
         cpus: tuple[int, ...], json_path: str | None, quiet: bool, token: str | None,
         token_file: str | None, write_size: int | None, json_stdout: bool = False,
         port: int | None = None, length: int | None = None,
         bitrate: float | None = None, json_stream: bool = False, bidir: bool = False,
         interval: float | None = None) -> None:
    """Bulk throughput: per-stream and aggregate Gbit/s, on-wire, and the ceiling.

    Without HOST, a server is started on this machine. SIGINT or SIGTERM
    ends the step in progress at once, measured up to that moment (marked
    stopped_early); the table is printed and --json written (marked
    interrupted), then the exit status is 130 or 143.
    """
    from pktbench.workloads import bulk as bulk_mod

    outputs = _outputs(_json_target(json_path, json_stdout))
    target = _with_port(target, port)
    if rate is not None and bitrate is not None:
        raise click.UsageError("give --rate or -b/--bitrate, not both")
    rate = rate if rate is not None else bitrate
    if length is not None:
        if udp and size is not None or not udp and write_size is not None:
            raise click.UsageError("-l/--length is --size with -u, else --write-size: "
                                   "give one of them")
        if udp:
            size = length
        elif not 1024 <= length <= 16 * 1024 * 1024:
            raise click.BadParameter(f"{length} is not in the range 1024<=x<=16777216 "
                                     "(TCP write bytes)", param_hint="-l/--length")
        else:
            write_size = length
    try:
        config = bulk_mod.BulkConfig(
            streams=streams, duration_s=duration, warmup_s=warmup, udp=udp, size_bytes=size,
            rate_bps=rate, reverse=reverse, bidir=bidir, link_speed_bps=link_speed,
            link_model=link_model, paths=paths,
            path_ifaces=path_ifaces, ports=ports, workers=workers, cpus=cpus,
            sweep_streams=sweep_streams, sweep_rates_bps=sweep_rates,
            write_bytes=write_size or bulk_mod.DEFAULT_WRITE_BYTES)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if interval and (udp or workers > 1):
        raise click.UsageError("-i/--interval reports TCP bulk pumped in this process: "
                               "drop --udp or --workers")
    _bulk_run(target, config, outputs, quiet, read_secret(token, token_file), json_stream,
              interval)


def _bulk_run(target: str | None, config: Any, outputs: dict[str, str | None], quiet: bool,
              secret: bytes | None, json_stream: bool = False,
              interval: float | None = None) -> None:
    from pktbench import api
    from pktbench.interrupts import StopOnSignal
    from pktbench.report import bulk_step_line

    _check_stream(json_stream, outputs)
    with (_Live(interval, json_stream, quiet, "bulk", "bulk") as live,
          StopOnSignal() as stopper):

        def progress(step: dict[str, Any]) -> None:
            live.step_done(step)
            if not quiet:
                click.echo(bulk_step_line(step), err=True)

        result = api.run_bulk(target, config, secret=secret, on_step=progress,
                              stop=stopper.stop)
    _write_results(live.finish(result), outputs, None, stopper, live)
    if stopper.interrupted:
        sys.exit(stopper.exit_code)


# ---------------------------------------------------------------- sweep --workload bulk
# `pktbench sweep --workload bulk`: the stream-count or offered-Gbit/s sweep of
# pktbench.api.run_bulk, with the same table and JSON as `pktbench bulk`.

def _sweep_bulk(target: str | None, streams: str | None, gbps: str | None, udp: bool,
                duration: float | None, warmup: float | None, size: int | None,
                json_path: str | None, quiet: bool, secret: bytes | None, workers: int = 1,
                cpus: tuple[int, ...] = ()) -> None:
    from pktbench.flows import parse_count_list
    from pktbench.workloads import bulk as bulk_mod

    outputs = _outputs(json_path)
    if target is not None and target.strip().lower().startswith("redis://"):
        raise click.UsageError("a redis:// target runs request/response only, not --workload bulk")
    if streams is None and gbps is None:
        raise click.UsageError("--workload bulk sweeps --streams LIST (TCP) or --gbps LIST "
                               "(with --udp)")
    try:
        stream_counts = parse_count_list(streams) if streams is not None else ()
        rates_bps = rates.parse_bps_list(gbps, "--gbps", bare_scale="g") if gbps is not None else ()
        defaults = bulk_mod.BulkConfig()
        config = bulk_mod.BulkConfig(
            streams=stream_counts[0] if stream_counts else 1,
            duration_s=duration if duration is not None else defaults.duration_s,
            warmup_s=warmup if warmup is not None else defaults.warmup_s,
            udp=udp, size_bytes=size, sweep_streams=stream_counts, sweep_rates_bps=rates_bps,
            workers=workers, cpus=cpus)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    _bulk_run(target, config, outputs, quiet, secret)


# ---------------------------------------------------------------- --workers / --cpus
# `run` and `sweep` over several sender processes (pktbench.workloads.multiflow).

def _worker_cpus(workers: int, cpus_text: str | None, workload: str) -> tuple[int, ...]:
    """The --cpus list, checked against this machine and the workload."""
    import os

    if workers > 1 and workload not in ("rr", "blast", "bulk"):
        raise click.UsageError("--workers splits rr and blast over UDP; over TCP spread the "
                               "rate with --connections")
    if cpus_text is None:
        return ()
    try:
        cpus = _bulk_cpus(cpus_text)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--cpus") from None
    count = os.cpu_count() or 1
    unknown = [cpu for cpu in cpus if cpu >= count]
    if unknown:
        raise click.BadParameter(f"CPU {unknown[0]} does not exist here (CPUs 0..{count - 1})",
                                 param_hint="--cpus")
    return cpus


# ---------------------------------------------------------------- fleet
# `pktbench fleet INVENTORY` and `pktbench testbed sshd`: see pktbench.fleet.

def _add_fleet_commands() -> None:
    from pktbench.fleet.command import fleet_command, sshd_group

    main.add_command(fleet_command)
    testbed_group.add_command(sshd_group)


_add_fleet_commands()


def _add_file_commands() -> None:
    from pktbench.cli_files import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_add_file_commands()


def _add_watch_commands() -> None:
    from pktbench.watch.command import watch_command, watch_report_command

    main.add_command(watch_command)
    main.add_command(watch_report_command)


_add_watch_commands()
