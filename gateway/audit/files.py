"""The set of files one audit log is made of: the live ``audit.log`` and its rotated predecessors.

Rotated files are numbered, never timestamped: ``audit.log.000001`` is the oldest, each rotation
renames the live file to the next number (one atomic ``rename``; nothing else is renamed), and a
number is never reused. So the chain reads the numbers in order and then the live file, a gap
between two numbers is a missing file, and a first number above 1 means older files were deleted
(``audit.keep``). Only names of exactly this shape belong to the set: a copy an operator made by
hand (``audit.log.1``, ``audit.log.bak``) and ``audit.log.rejected`` are not read.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

#: digits of a rotated file's number (more once past 999,999)
_WIDTH = 6
#: a rotated file whose last change is this long before ``since`` holds nothing from ``since`` on:
#: every line's time (its attempt's start, on a worker's clock) precedes its write (on the
#: writer's); the margin covers clocks that disagree
CLOCK_MARGIN = timedelta(days=1)


@dataclass(frozen=True)
class AuditFiles:
    """The files of the log whose live file is ``live``."""

    live: Path

    def rotated(self) -> list[tuple[int, Path]]:
        """(number, path) of every rotated file, oldest first."""
        pattern = re.compile(re.escape(self.live.name) + rf"\.(\d{{{_WIDTH},}})")
        try:
            names = os.listdir(self.live.parent)
        except FileNotFoundError:
            return []
        found = [
            (int(m.group(1)), self.live.parent / name) for name in names if (m := pattern.fullmatch(name))
        ]
        return sorted(found)

    def chain(self) -> list[Path]:
        """Every file of the chain in order, oldest first: rotated ones, then the live one if it exists."""
        files = [path for _, path in self.rotated()]
        return [*files, self.live] if self.live.exists() else files

    def newest_first(self) -> list[Path]:
        return list(reversed(self.chain()))

    def numbered(self, number: int) -> Path:
        """The rotated file of that number (it may not exist)."""
        return self.live.with_name(f"{self.live.name}.{number:0{_WIDTH}d}")

    def next_rotated(self) -> Path:
        """The name the live file gets at the next rotation."""
        rotated = self.rotated()
        return self.numbered(rotated[-1][0] + 1 if rotated else 1)

    def last_lines(self, n: int) -> list[tuple[Path, bytes]]:
        """The last ``n`` complete lines of the log (without newline) and their files, oldest first,
        reaching back from the live file into the rotated ones as far as needed."""
        found: list[tuple[Path, bytes]] = []
        for path in self.newest_first():
            for raw in lines_backwards(path):
                if len(found) >= n:
                    return found[::-1]
                found.append((path, raw))
        return found[::-1]

    def since(self, since: datetime | None) -> list[Path]:
        """The files that may hold lines from ``since`` on, oldest first (see :data:`CLOCK_MARGIN`)."""
        if since is None:
            return self.chain()
        cutoff = (since - CLOCK_MARGIN).timestamp()
        return [path for path in self.chain() if path == self.live or _mtime(path) >= cutoff]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # deleted by the writer (audit.keep) while we looked
        return float("-inf")


def complete_lines(path: Path) -> Iterator[bytes]:
    """The lines of one file with their newline, front to back; a last line still being written
    (no newline yet) is left out. A file deleted meanwhile (``audit.keep``) yields nothing."""
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return
    with file:
        for raw in file:
            if raw.endswith(b"\n"):
                yield raw


def lines_backwards(path: Path, block_size: int = 64 * 1024, end: int | None = None) -> Iterator[bytes]:
    """The complete lines of one file (without newline), last first, read in blocks from the end
    (or from offset ``end``). What follows the last newline (a write in progress) is not returned.
    """
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return
    with file:
        pos = file.seek(0, os.SEEK_END)
        pos = pos if end is None else min(pos, end)
        carry = b""  # the start of a line whose beginning is in an earlier block
        tail_dropped = False  # what follows the file's last newline, once that newline is found
        while pos > 0:
            step = min(block_size, pos)
            pos -= step
            file.seek(pos)
            pieces = (file.read(step) + carry).split(b"\n")
            carry, rest = pieces[0], pieces[1:]
            if rest and not tail_dropped:
                rest.pop()
                tail_dropped = True
            yield from reversed(rest)
        if tail_dropped:
            yield carry  # the file's first line


def scan(live: Path, since: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Every line of the log from ``since`` on, oldest file first, one at a time (never the whole
    log in memory). Numbers with a fraction are read as ``Decimal``, so costs add up exactly; lines
    that are not JSON objects with a readable ``time`` are skipped (``verify`` reports them)."""
    for path in AuditFiles(live).since(since):
        for raw in complete_lines(path):
            try:
                line = json.loads(raw, parse_float=Decimal)
                moment = datetime.fromisoformat(line["time"])
            except (ValueError, TypeError, KeyError):
                continue
            if since is None or moment >= since:
                line["time"] = moment
                yield line
