"""Running a fleet: preflight, one `serve` per host, the rounds, saving, resuming.

Owns: the run's life cycle and its directory (`--out DIR`): `manifest.json`
(what was planned, the preflight, the state) and `pairs/SRC/DST.json`, one
per test, written atomically as each test ends, so an interrupted run loses
no finished test and `--resume DIR` runs only what is not `ok` yet.

Invariants:
- One SSH connection per host for the whole run.
- One `serve` per reachable host, started before the first round with a
  fresh random token of its own (sent on stdin), stopped at the end.
- Within a round no host is in two tests (see schedule); the next round
  starts when every test of this one has ended.
- Whatever ends the run (success, error, Ctrl-C, SIGTERM), every remote
  process it started is stopped by PID and every run directory removed.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pktbench._version import __version__
from pktbench.errors import ConfigError, PktbenchError
from pktbench.fleet import FLEET_SCHEMA_VERSION, install, schedule
from pktbench.fleet.inventory import Host
from pktbench.fleet.remote import RemoteError, RemoteHost, SshPolicy, connect, last_line, run_json
from pktbench.results import upgrade_document

Log = Callable[[str], None]
PAIR_KIND = "pktbench-fleet-pair"
MANIFEST_KIND = "pktbench-fleet-run"
_VERSION_RE = re.compile(r"\b(\d+\.\d+(?:\.\d+)?[\w.+-]*)")
BULK_ARGS = ("--streams", "4", "--duration", "2", "--warmup", "0.5")


@dataclass(frozen=True)
class FleetOptions:
    """What to run. `pairs` set means --pairs FILE instead of the mesh."""

    inventory: str
    profile: str = "default"
    pairs: tuple[schedule.Pair, ...] | None = None
    sample: int | None = None
    bulk: bool = False
    parallel: int | None = None
    out_dir: str | None = None
    resume: bool = False
    ssh: SshPolicy = field(default_factory=SshPolicy)
    serve_port: int = 7425
    outlier_fraction: float = 0.2
    install: str | None = None  # a pktbench wheel to install on each host first
    fan: tuple[str, str] | None = None  # ("to" | "from", HOST): fan-in / fan-out at once


@dataclass
class _Profile:
    name: str
    text: str | None  # a profile file's contents, shipped to each host
    expected_s: float  # the longest a sweep should take


def _load_profile(name: str) -> _Profile:
    from pktbench import config

    profile = config.load_profile(name)
    path = Path(name)
    text = path.read_text(encoding="utf-8") if path.suffix == ".toml" and path.is_file() else None
    per_step = profile.warmup_s + profile.duration_s + profile.drain_s + 0.5
    trials = profile.step_count * profile.repeat + 12 * len(profile.search)
    return _Profile(name=name, text=text, expected_s=per_step * trials)


class RunStore:
    """The --out directory: manifest plus one file per finished test."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)

    def _write(self, path: Path, doc: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def pair_path(self, src: str, dst: str) -> Path:
        return self.dir / "pairs" / src / f"{dst}.json"

    def save_pair(self, doc: dict[str, Any]) -> None:
        self._write(self.pair_path(doc["src"], doc["dst"]), doc)

    def save_manifest(self, doc: dict[str, Any]) -> None:
        self._write(self.dir / "manifest.json", doc)

    def manifest(self) -> dict[str, Any]:
        path = self.dir / "manifest.json"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"--resume {self.dir}: no manifest.json there (not a fleet "
                              "run directory)") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"--resume {self.dir}: manifest.json unreadable: {exc}") from None
        if doc.get("kind") != MANIFEST_KIND:
            raise ConfigError(f"--resume {self.dir}: manifest.json is not a fleet run manifest")
        return dict(doc)

    def pairs(self) -> dict[schedule.Pair, dict[str, Any]]:
        found: dict[schedule.Pair, dict[str, Any]] = {}
        for path in sorted((self.dir / "pairs").glob("*/*.json")):
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue  # a torn file is a test to run again
            if doc.get("kind") == PAIR_KIND:
                found[(doc["src"], doc["dst"])] = doc
        return found


def planned_pairs(names: Sequence[str], options: FleetOptions) -> list[schedule.Pair]:
    if options.pairs is not None:
        return list(options.pairs)
    return [p for r in schedule.mesh_rounds(names, sample=options.sample) for p in r]


def _pair_doc(src: str, dst: str, status: str, reason: str | None, **extra: Any
              ) -> dict[str, Any]:
    return {"schema_version": FLEET_SCHEMA_VERSION, "kind": PAIR_KIND, "src": src, "dst": dst,
            "status": status, "reason": reason, **extra}


class FleetRun:
    """One run of the fleet; `await run()` gives the material for the result."""

    def __init__(self, hosts: Sequence[Host], options: FleetOptions, log: Log) -> None:
        self.hosts = {h.name: h for h in hosts}
        self.options = options
        self.log = log
        self.profile = _load_profile(options.profile)
        self.wheel = install.load_wheel(options.install) if options.install else None
        self.store = RunStore(options.out_dir) if options.out_dir else None
        self.remotes: dict[str, RemoteHost] = {}
        self.preflight: dict[str, dict[str, Any]] = {}
        self.serve_ports: dict[str, int] = {}
        self.serve_tokens: dict[str, str] = {}
        self.profile_paths: dict[str, str] = {}
        self.results: dict[schedule.Pair, dict[str, Any]] = {}
        self.timing: dict[str, Any] = {}
        self.rounds: list[schedule.Round] = []
        self.state = "starting"
        self.manifest: dict[str, Any] = {}

    # -- preflight -------------------------------------------------------------

    async def _preflight_one(self, host: Host) -> None:
        started = time.monotonic()
        entry: dict[str, Any] = {"reachable": False, "reason": None}
        self.preflight[host.name] = entry
        try:
            conn = await connect(host, self.options.ssh)
        except RemoteError as exc:
            entry["reason"] = str(exc)
            return
        remote = RemoteHost(host, conn)
        self.remotes[host.name] = remote
        try:
            entry["ssh_connect_s"] = round(time.monotonic() - started, 4)
            if self.wheel is not None:
                entry["install"] = await install.install(remote, self.wheel)
            asked = time.monotonic()
            status, out, err = await remote.run(f"{remote.words} --version; "
                                                "getconf _NPROCESSORS_ONLN", timeout_s=60.0)
            # How long the host takes to start pktbench: a synchronized start
            # (--to/--from) must leave the slowest host that much and more.
            entry["pktbench_start_s"] = round(time.monotonic() - asked, 4)
            lines = out.strip().splitlines()
            # "pktbench 0.1.0 (engine: ...)" or click's "pktbench, version 0.1.0"
            found = _VERSION_RE.search(lines[0]) if lines and "pktbench" in lines[0] else None
            if status != 0 or len(lines) < 2 or found is None:
                raise RemoteError(f"pktbench not runnable as `{remote.words}`: "
                                  f"{last_line(err) or last_line(out) or f'exit {status}'}")
            version = found.group(1)
            entry["pktbench_version"] = version
            entry["cpus"] = int(lines[1]) if lines[1].strip().isdigit() else None
            if version.split(".")[:2] != __version__.split(".")[:2]:
                raise RemoteError(f"pktbench {version} there, {__version__} here: versions "
                                  "differ in major.minor")
            offset, rtt = await remote.clock_offset()
            entry["clock_offset_ms"] = round(offset, 3)
            entry["ssh_rtt_ms"] = round(rtt, 3)
            await remote.make_run_dir()
            if self.profile.text is not None:
                self.profile_paths[host.name] = await remote.put_text("profile.toml",
                                                                      self.profile.text)
            entry["reachable"] = True
        except RemoteError as exc:
            entry["reason"] = str(exc).removeprefix(f"{host.name}: ")
        entry["preflight_s"] = round(time.monotonic() - started, 4)

    async def start_serve_on(self, name: str, port: int) -> tuple[int, str]:
        """Start a `serve` on host `name` at `port` (0: any), with a fresh token.

        Returns (the port it listens on, its token).

        Raises:
            RemoteError: it did not start (the reason is its last line).
        """
        remote = self.remotes[name]
        host = remote.host
        token = secrets.token_hex(32)
        try:
            proc = await remote.start("serve", ["--bind", host.test_address or host.address,
                                                "--port", str(port), "--quiet"], token)
            line = await asyncio.wait_for(proc.process.stdout.readline(), 60.0)
            if not line.startswith("listening on "):
                err = await asyncio.wait_for(proc.process.stderr.read(), 5.0)
                raise RemoteError(f"serve did not start: {last_line(err) or 'no output'}")
            return int(line.strip().rsplit(":", 1)[1]), token
        except (asyncio.TimeoutError, TimeoutError, ValueError) as exc:
            raise RemoteError(f"serve did not start: {str(exc) or 'no listening line in 60 s'}") from None

    async def _start_serve(self, name: str) -> None:
        try:
            port, token = await self.start_serve_on(name, self.options.serve_port)
            self.serve_ports[name] = port
            self.serve_tokens[name] = token
        except RemoteError as exc:
            entry = self.preflight[name]
            entry["reachable"] = False
            entry["reason"] = str(exc).removeprefix(f"{name}: ") or "serve did not start"

    # -- tests ------------------------------------------------------------------

    async def _run_pair(self, src: str, dst: str, round_index: int) -> dict[str, Any]:
        remote = self.remotes[src]
        target = f"{self.hosts[dst].target}:{self.serve_ports[dst]}"
        profile = self.profile_paths.get(src, self.profile.name)
        args = [target, "--profile", profile, "--json", "-", "--quiet"]
        limit = 3 * self.profile.expected_s + 60
        started = time.monotonic()
        stamp = time.time()
        try:
            sweep = await run_json(remote, "sweep", args, self.serve_tokens[dst], limit_s=limit)
            sweep_wall = time.monotonic() - started
            bulk = None
            if self.options.bulk:
                bulk = await self._run_bulk(remote, target, self.serve_tokens[dst])
        except RemoteError as exc:
            return _pair_doc(src, dst, "failed", str(exc).removeprefix(f"{src}: "),
                             round=round_index, started=stamp,
                             wall_s=round(time.monotonic() - started, 4))
        traffic = sum(float(s.get("warmup_s") or 0) + float(s.get("duration_s") or 0)
                      for s in sweep.get("steps", []))
        traffic += float(sweep.get("config", {}).get("drain_s") or 0) * len(sweep.get("steps", []))
        return _pair_doc(src, dst, "ok", None, round=round_index, started=stamp,
                         wall_s=round(time.monotonic() - started, 4),
                         sweep_wall_s=round(sweep_wall, 4), traffic_s=round(traffic, 4),
                         overhead_s=round(sweep_wall - traffic, 4), sweep=sweep, bulk=bulk)

    async def _run_bulk(self, remote: RemoteHost, target: str, token: str) -> dict[str, Any]:
        doc = await run_json(remote, "bulk", [target, *BULK_ARGS, "--json", "-", "--quiet"],
                             token, limit_s=120)
        try:  # a host with an older pktbench writes an older schema
            doc = upgrade_document(doc, f"{remote.host.name} bulk")
        except ConfigError as exc:
            raise RemoteError(str(exc)) from None
        ceiling = doc.get("ceiling") or {}
        return {"ceiling_bps": ceiling.get("goodput_bps"),
                "ceiling_wire_bps": ceiling.get("wire_bps"),
                "ceiling": ceiling or None}

    # -- the run ----------------------------------------------------------------

    def _manifest(self, planned: Sequence[schedule.Pair]) -> dict[str, Any]:
        return {"schema_version": FLEET_SCHEMA_VERSION, "kind": MANIFEST_KIND,
                "tool": {"name": "pktbench", "version": __version__},
                "created": self.manifest.get("created", time.time()),
                "inventory": self.options.inventory,
                "hosts": [h.to_dict() for h in self.hosts.values()],
                "mode": "pairs" if self.options.pairs is not None else "mesh",
                "sample": self.options.sample, "bulk": self.options.bulk,
                "profile": {"name": self.profile.name, "text": self.profile.text},
                "planned": [list(p) for p in planned],
                "rounds": [[list(p) for p in r] for r in self.rounds],
                "preflight": self.preflight, "state": self.state}

    def _check_resume(self, previous: dict[str, Any]) -> None:
        old = previous.get("profile") or {}
        if old.get("text") != self.profile.text or (
                self.profile.text is None and old.get("name") != self.profile.name):
            raise ConfigError(f"--resume {self.options.out_dir}: that run used profile "
                              f"{old.get('name')!r} with other settings; resume with the same "
                              "profile")
        if bool(previous.get("bulk")) != self.options.bulk:
            raise ConfigError(f"--resume {self.options.out_dir}: that run was "
                              f"{'with' if previous.get('bulk') else 'without'} --bulk")

    async def run(self) -> None:
        t0 = time.monotonic()
        planned = planned_pairs(list(self.hosts), self.options)
        unknown = [n for p in planned for n in p if n not in self.hosts]
        if unknown:
            raise ConfigError(f"--pairs: host {unknown[0]} is not in the inventory")
        done: dict[schedule.Pair, dict[str, Any]] = {}
        if self.store is not None and self.options.resume:
            self.manifest = self.store.manifest()
            self._check_resume(self.manifest)
            done = {p: d for p, d in self.store.pairs().items() if d.get("status") == "ok"}
        self.results.update({p: d for p, d in done.items() if p in set(planned)})
        todo = [p for p in planned if p not in done]
        needed = sorted({n for p in todo for n in p}, key=list(self.hosts).index)
        self.log(f"fleet: {len(self.hosts)} hosts, {len(planned)} tests planned, "
                 f"{len(todo)} to run")
        try:
            await asyncio.gather(*(self._preflight_one(self.hosts[n]) for n in needed))
            for name in needed:
                entry = self.preflight[name]
                if entry["reachable"]:
                    self.log(preflight_line(name, entry))
            t_pre = time.monotonic()
            await asyncio.gather(*(self._start_serve(n) for n in needed
                                   if self.preflight[n]["reachable"]))
            for name in needed:
                if not self.preflight[name]["reachable"]:
                    self.log(f"  {name}: unreachable: {self.preflight[name]['reason']}")
            t_serve = time.monotonic()
            up = [n for n in needed if self.preflight[n]["reachable"]]
            runnable = [p for p in todo if p[0] in up and p[1] in up]
            for src, dst in todo:
                if (src, dst) not in set(runnable):
                    bad = src if src not in up else dst
                    doc = _pair_doc(src, dst, "unreachable",
                                    f"{bad}: {self.preflight[bad]['reason']}")
                    self.results[(src, dst)] = doc
                    if self.store is not None:
                        self.store.save_pair(doc)
            if self.options.pairs is not None:
                base = schedule.pair_rounds(runnable)
            else:
                base = schedule.mesh_rounds(up, sample=None)
            self.rounds = schedule.cap_rounds(schedule.restrict(base, runnable),
                                              self.options.parallel)
            self.state = "running"
            if self.store is not None:
                self.store.save_manifest(self._manifest(planned))
            round_times = []
            for index, pairs in enumerate(self.rounds):
                r0 = time.monotonic()
                docs = await asyncio.gather(*(self._run_pair(s, d, index) for s, d in pairs))
                round_times.append(time.monotonic() - r0)
                for doc in docs:
                    self.results[(doc["src"], doc["dst"])] = doc
                    if self.store is not None:
                        self.store.save_pair(doc)
                    self.log(_pair_line(index, len(self.rounds), doc))
            t_end = time.monotonic()
            self.state = "complete"
            tests = [d["wall_s"] for p, d in self.results.items()
                     if d.get("status") == "ok" and p not in done]
            per_test = statistics.median(tests) if tests else None
            mesh_s = t_end - t_serve
            overheads = [d["overhead_s"] for p, d in self.results.items()
                         if d.get("status") == "ok" and p not in done and "overhead_s" in d]
            self.timing = {
                "wall_s": round(t_end - t0, 3), "preflight_s": round(t_pre - t0, 3),
                "serve_start_s": round(t_serve - t_pre, 3), "mesh_s": round(mesh_s, 3),
                "rounds": len(self.rounds), "round_s": [round(t, 3) for t in round_times],
                "per_test_median_s": None if per_test is None else round(per_test, 3),
                "rounds_x_per_test_s": None if per_test is None
                else round(per_test * len(self.rounds), 3),
                "mesh_over_rounds_x_per_test": None if not per_test or not self.rounds
                else round(mesh_s / (per_test * len(self.rounds)), 3),
                "test_overhead_median_s": round(statistics.median(overheads), 3)
                if overheads else None,
                "ssh_connect_median_s": _median([e.get("ssh_connect_s")
                                                 for e in self.preflight.values()]),
            }
        except BaseException:
            self.state = "interrupted"
            raise
        finally:
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._cleanup())
            if self.store is not None:
                with contextlib.suppress(OSError):
                    self.store.save_manifest(self._manifest(planned))

    async def _cleanup(self) -> None:
        await asyncio.gather(*(r.cleanup() for r in self.remotes.values()),
                             return_exceptions=True)
        for remote in self.remotes.values():
            remote.close()


def preflight_line(name: str, entry: dict[str, Any]) -> str:
    """The progress line of a host that passed preflight."""
    installed = entry.get("install")
    how = ""
    if installed:
        how = (f" (installed {installed['file']} in {installed['venv']}, "
               + ("already there" if installed["reused"] else
                  f"copy {installed['copy_s']:.1f} s, pip {installed['install_s']:.1f} s") + ")")
    return (f"  {name}: ok, pktbench {entry['pktbench_version']}{how}, {entry['cpus']} CPUs, "
            f"clock {entry['clock_offset_ms']:+.1f} ms (rtt {entry['ssh_rtt_ms']:.1f} ms)")


def _median(values: Sequence[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, (int, float))]
    return round(statistics.median(nums), 4) if nums else None


def _pair_line(index: int, rounds: int, doc: dict[str, Any]) -> str:
    head = f"round {index + 1}/{rounds} {doc['src']} -> {doc['dst']}:"
    if doc["status"] != "ok":
        return f"{head} {doc['status']}: {doc['reason']}"
    knee = (doc.get("sweep") or {}).get("knee")
    if knee:
        return (f"{head} knee {knee['offered_pps']:,.0f} pps (last good "
                f"{knee.get('last_good_pps') or 0:,.0f}) in {doc['wall_s']:.1f} s")
    return f"{head} no knee in {doc['wall_s']:.1f} s"


def run_fleet(hosts: Sequence[Host], options: FleetOptions, log: Log,
              run_class: type[FleetRun] | None = None) -> FleetRun:
    """Run the fleet to the end; Ctrl-C or SIGTERM stops every remote process first.

    `run_class`: a FleetRun of another kind (fanin.FanRun for --to/--from).

    Raises:
        KeyboardInterrupt: interrupted (after the clean-up; finished tests kept).
        PktbenchError: the run could not be set up.
    """
    fleet = (run_class or FleetRun)(hosts, options, log)
    interrupted = False

    async def main() -> None:
        nonlocal interrupted
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop() -> None:
            nonlocal interrupted
            if not interrupted:
                interrupted = True
                log("fleet: interrupted, stopping remote processes")
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop)
        try:
            await fleet.run()
        except asyncio.CancelledError:
            if not interrupted:
                raise
    asyncio.run(main())
    if interrupted:
        raise KeyboardInterrupt
    return fleet


__all__ = ["FleetOptions", "FleetRun", "RunStore", "run_fleet", "PktbenchError"]
