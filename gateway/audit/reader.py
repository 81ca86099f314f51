"""The readers behind ``aigw audit tail|verify``: they read the log's files, never Redis.

They read every file of the log (``files.py``): ``tail`` walks back from the live file into the
rotated ones, ``follow`` moves on to the new live file when the writer rotates, ``verify``
checks the chain from the oldest rotated file through the live one.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any

from gateway.audit.chain import GENESIS_HASH, line_hash
from gateway.audit.files import AuditFiles, lines_backwards
from gateway.audit.query import LineFilter


def read_last_lines(path: Path, n: int, block_size: int = 64 * 1024) -> list[bytes]:
    """The last ``n`` complete lines of one file (without newline), oldest first.

    A trailing line with no newline yet (a write in progress) is not returned.
    """
    if n <= 0:
        return []
    return list(islice(lines_backwards(path, block_size), n))[::-1]


def tail(
    path: Path, n: int, where: LineFilter | None = None, *, live_end: int | None = None
) -> list[dict[str, Any]]:
    """The last ``n`` lines of the log (the rotated files too) that ``where`` accepts, oldest first;
    ``live_end`` reads the live file only up to that offset (where a ``follow`` then starts).

    Lines that are not JSON are skipped: ``verify`` is the reader that reports them.
    """
    since = where.since if where is not None else None
    found: list[dict[str, Any]] = []
    for file in reversed(AuditFiles(path).since(since)):
        for raw in lines_backwards(file, end=live_end if file == path else None):
            if len(found) >= n:
                return found[::-1]
            line = _parsed(raw)
            if line is not None and (where is None or where(line)):
                found.append(line)
    return found[::-1]


def _parsed(raw: bytes) -> dict[str, Any] | None:
    try:
        line = json.loads(raw)
    except ValueError:
        return None
    return line if isinstance(line, dict) else None


def follow(
    path: Path,
    *,
    from_start: bool = False,
    offset: int | None = None,
    opened: IO[bytes] | None = None,
    poll_s: float = 0.5,
    stop: threading.Event | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield lines as the writer appends them (``aigw audit tail -f``), until ``stop`` is set.

    Starts at the end of the live file (or its start, or ``offset``; in ``opened``, the live file
    the caller already opened, if given). When the writer rotates, the rest of the old file is
    read, then the new live file from its start: nothing is skipped.
    """
    stop = stop or threading.Event()
    start = 0 if from_start else offset
    target = path
    while not stop.is_set():
        try:
            file = opened or target.open("rb")
        except FileNotFoundError:  # between the rotation's rename and the new file
            target = path
            stop.wait(poll_s)
            continue
        opened = None
        with file:
            file.seek(0, os.SEEK_END) if start is None else file.seek(start)
            yield from _follow_one(file, path, poll_s, stop)
            target = _successor(path, os.fstat(file.fileno()))
        start = 0


def _successor(live: Path, done: os.stat_result) -> Path:
    """The file after the one just read to its end: the next rotated one if the writer rotated
    more than once meanwhile, else the live file."""
    for number, rotated in AuditFiles(live).rotated():
        try:
            same = os.path.samestat(os.stat(rotated), done)
        except FileNotFoundError:
            continue
        if same:
            after = AuditFiles(live).numbered(number + 1)
            return after if after.exists() else live
    return live


def _follow_one(
    file: IO[bytes], path: Path, poll_s: float, stop: threading.Event
) -> Iterator[dict[str, Any]]:
    """The lines of one open file, waiting for more, until the live path names another file."""
    pending = b""
    while not stop.is_set():
        chunk = file.readline()
        if chunk:
            pending += chunk
            if pending.endswith(b"\n"):
                if (line := _parsed(pending)) is not None:
                    yield line
                pending = b""
        elif _replaced(path, file):
            # renamed away: the writer wrote its last line before the rename, so read to its end
            for raw in file:
                if (line := _parsed(pending + raw)) is not None:
                    yield line
                pending = b""
            return
        else:
            stop.wait(poll_s)


def _replaced(path: Path, file: IO[bytes]) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return True
    mine = os.fstat(file.fileno())
    return (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino)


@dataclass(frozen=True)
class VerifyReport:
    """The chain over every file of the log. ``first_bad_line`` counts from 1 within ``bad_file``."""

    ok: bool
    lines: int
    first_bad_line: int | None
    reason: str
    bad_file: Path | None = None
    files: tuple[Path, ...] = ()
    #: what the check could not cover: older files deleted (``audit.keep``)
    note: str = ""


def verify(path: Path) -> VerifyReport:
    """Check the chain across every file of the log whose live file is ``path``, oldest first, and
    name the file and line (1-based) of the first that breaks it. Lines are counted to the end."""
    audit_files = AuditFiles(path)
    rotated = audit_files.rotated()
    files = tuple(audit_files.chain())
    prev, total, note = GENESIS_HASH, 0, ""
    bad: tuple[Path, int, str] | None = None
    expected_number = rotated[0][0] if rotated else 1
    numbers = dict((p, n) for n, p in rotated)
    for index, file in enumerate(files):
        number = numbers.get(file)
        if number is not None and number != expected_number and bad is None:
            missing = audit_files.numbered(expected_number)
            bad = (file, 1, f"{missing.name} is missing: the files before and after it do not join")
        expected_number = (number or expected_number) + 1
        start_anywhere = index == 0 and number is not None and number > 1
        if start_anywhere:
            note = f"the chain starts in {file.name}: the files before it were deleted (audit.keep)"
        count, prev, problem = _verify_file(file, prev, files[index - 1] if index else None, start_anywhere)
        if problem is not None and bad is None:
            bad = (file, problem[0], problem[1])
        total += count
    if bad is None:
        return VerifyReport(True, total, None, "chain intact", files=files, note=note)
    return VerifyReport(False, total, bad[1], bad[2], bad_file=bad[0], files=files, note=note)


def _verify_file(
    file: Path, prev: str, before: Path | None, start_anywhere: bool
) -> tuple[int, str, tuple[int, str] | None]:
    """(lines, the last line's hash, (line, problem) of the first bad line or None)."""
    count, problem = 0, None
    with file.open("rb") as lines:
        for count, raw in enumerate(lines, start=1):
            if problem is not None:
                continue  # keep counting lines
            if count == 1 and start_anywhere:
                prev = _prev_of(raw) or prev
            if count == 1:
                where = f"the last line of {before.name}" if before else "the start of the chain"
            else:
                where = "the previous line's hash"
            reason, prev = _check_line(raw, prev, where)
            if reason:
                problem = (count, reason)
    return count, prev, problem


def _prev_of(raw: bytes) -> str | None:
    line = _parsed(raw)
    value = line.get("prev") if line is not None else None
    return value if isinstance(value, str) else None


def _check_line(raw: bytes, prev: str, where: str) -> tuple[str, str]:
    """(problem or "", this line's hash)."""
    if not raw.endswith(b"\n"):
        return "incomplete last line (torn write)", prev
    try:
        record = json.loads(raw)
    except ValueError:
        return "not valid JSON", prev
    if not isinstance(record, dict) or not isinstance(record.get("hash"), str):
        return "not a chained audit line (no hash)", prev
    if line_hash(record) != record["hash"]:
        return "hash does not match the line's content (line edited)", prev
    if record.get("prev") != prev:
        return f"prev does not match {where} (a line was deleted, inserted or reordered)", prev
    return "", str(record["hash"])
