"""The watch's JSON Lines file: written as it goes, rotated, read back whole.

Owns: `JsonlWriter` (one JSON object per line, flushed at once, fsync'd on
request; rotated by size or at UTC midnight by renaming the file to
FILE.YYYYMMDDTHHMMSSZ and starting FILE afresh, so a reader can keep tailing
FILE) and `read_records` (every record of several files, oldest file first;
a torn last line, as a killed writer can leave, is skipped and counted).

Invariants: a line is written with one write() of the complete line, so
every line that is in the file parses, except possibly a torn last one.
"""
from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from pktbench.errors import ConfigError

DEFAULT_ROTATE_BYTES = 64 * 1024 * 1024


class JsonlWriter:
    def __init__(self, path: str, *, rotate_bytes: int = DEFAULT_ROTATE_BYTES,
                 rotate_daily: bool = True) -> None:
        self.path = path
        self.rotate_bytes = rotate_bytes
        self.rotate_daily = rotate_daily
        self.part = 0
        self.bytes_written = 0
        self.lines_written = 0
        self._handle: IO[bytes] | None = None
        self._day = 0
        self._open()

    def _open(self) -> None:
        try:
            self._handle = open(self.path, "ab", buffering=0)  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"cannot write {self.path}: {exc.strerror}") from None
        self._size = self._handle.tell()
        self._day = int(time.time() // 86400)

    def _rotate(self) -> None:
        assert self._handle is not None
        os.fsync(self._handle.fileno())
        self._handle.close()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = f"{self.path}.{stamp}"
        suffix = 0
        while os.path.exists(target):
            suffix += 1
            target = f"{self.path}.{stamp}-{suffix}"
        os.replace(self.path, target)
        self.part += 1
        self._open()

    def write(self, record: dict[str, Any], *, sync: bool = False) -> None:
        if self._handle is None:
            return
        line = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()
        if self._size and (self._size + len(line) > self.rotate_bytes
                           or (self.rotate_daily and int(time.time() // 86400) != self._day)):
            self._rotate()
        self._handle.write(line)
        self._size += len(line)
        self.bytes_written += len(line)
        self.lines_written += 1
        if sync:
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None


@dataclass
class Loaded:
    records: list[dict[str, Any]]
    files: list[str]
    torn_lines: int  # lines that did not parse (a writer killed mid-line)


def expand(paths: Sequence[str]) -> list[str]:
    """Files named, with their rotated parts (FILE.*) when FILE itself is named."""
    found: list[str] = []
    for path in paths:
        matches = sorted(glob.glob(path)) or [path]
        for match in matches:
            found.extend(sorted(p for p in glob.glob(glob.escape(match) + ".*")
                                if p[len(match) + 1:][:1].isdigit()))
            found.append(match)
    unique: list[str] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def _lines(path: str) -> Iterable[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            yield from handle
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def read_records(paths: Sequence[str]) -> Loaded:
    files = expand(paths)
    chunks: list[tuple[float, list[dict[str, Any]]]] = []
    torn = 0
    for path in files:
        records: list[dict[str, Any]] = []
        for line in _lines(path):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                torn += 1
                continue
            if isinstance(record, dict) and isinstance(record.get("type"), str):
                records.append(record)
        first = next((float(r["start_s"]) for r in records
                      if isinstance(r.get("start_s"), (int, float))), 0.0)
        chunks.append((first, records))
    chunks.sort(key=lambda item: item[0])
    merged = [record for _, records in chunks for record in records]
    if not merged:
        raise ConfigError(f"no watch records in {', '.join(files) or 'the files given'}")
    return Loaded(merged, files, torn)
