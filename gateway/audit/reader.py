"""The readers behind ``aigw audit tail|verify|report``: they read ``audit.log``, never Redis."""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.audit.chain import GENESIS_HASH, line_hash


def read_last_lines(path: Path, n: int, block_size: int = 64 * 1024) -> list[bytes]:
    """The last ``n`` complete lines (without newline), reading backwards from the end of the file.

    A trailing line with no newline yet (a write in progress) is not returned.
    """
    if n <= 0:
        return []
    with path.open("rb") as file:
        pos = file.seek(0, os.SEEK_END)
        buf, newlines = b"", 0
        while pos > 0 and newlines <= n + 1:
            step = min(block_size, pos)
            pos -= step
            file.seek(pos)
            chunk = file.read(step)
            newlines += chunk.count(b"\n")
            buf = chunk + buf
    lines = buf.split(b"\n")[:-1]  # what follows the last newline is empty or incomplete
    if pos > 0:
        lines = lines[1:]  # the first piece may start mid-line
    return lines[-n:]


def tail(path: Path, n: int) -> list[dict[str, Any]]:
    """The last ``n`` lines, parsed, oldest first."""
    return [json.loads(line) for line in read_last_lines(path, n)]


def follow(
    path: Path, *, from_start: bool = False, poll_s: float = 0.5, stop: threading.Event | None = None
) -> Iterator[dict[str, Any]]:
    """Yield lines as the writer appends them (``aigw audit tail -f``), until ``stop`` is set."""
    stop = stop or threading.Event()
    with path.open("rb") as file:
        if not from_start:
            file.seek(0, os.SEEK_END)
        pending = b""
        while not stop.is_set():
            chunk = file.readline()
            if not chunk:
                stop.wait(poll_s)
                continue
            pending += chunk
            if pending.endswith(b"\n"):
                yield json.loads(pending)
                pending = b""


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    lines: int
    first_bad_line: int | None
    reason: str


def verify(path: Path) -> VerifyReport:
    """Check the whole chain of one file and name the first line that breaks it (1-based)."""
    prev, count = GENESIS_HASH, 0
    bad: int | None = None
    reason = "chain intact"
    with path.open("rb") as file:
        for count, raw in enumerate(file, start=1):
            if bad is not None:
                continue  # keep counting lines
            problem, prev = _check_line(raw, prev, first=count == 1)
            if problem:
                bad, reason = count, problem
    return VerifyReport(ok=bad is None, lines=count, first_bad_line=bad, reason=reason)


def _check_line(raw: bytes, prev: str, *, first: bool) -> tuple[str, str]:
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
        where = "the start of the chain" if first else "the previous line's hash"
        return f"prev does not match {where} (a line was deleted, inserted or reordered)", prev
    return "", str(record["hash"])


@dataclass(frozen=True)
class ReportRow:
    """Usage of one model alias by one service. Tokens and cost add up every attempt (failed ones
    spend too); latency percentiles are over the attempts that have a provider latency."""

    service: str
    model: str | None
    count: int
    succeeded: int
    failed: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    p50_latency_ms: float | None
    p95_latency_ms: float | None


@dataclass
class _Totals:
    count: int = 0
    succeeded: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    costs: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def add(self, line: Mapping[str, Any]) -> None:
        self.count += 1
        self.succeeded += line["status"] == "succeeded"
        self.failed += line["status"] == "failed"
        self.input_tokens += line["input_tokens"]
        self.output_tokens += line["output_tokens"]
        self.costs.append(line["cost_usd"])
        if line.get("latency_ms") is not None:
            self.latencies.append(line["latency_ms"])


def report(path: Path, since: datetime | None = None) -> list[ReportRow]:
    """Aggregate the log by (service, model alias), optionally from ``since`` (naive means UTC)."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    groups: dict[tuple[str, str | None], _Totals] = {}
    with path.open("rb") as file:
        for raw in file:
            if not raw.endswith(b"\n"):
                break  # a write in progress
            line = json.loads(raw)
            if since is not None and datetime.fromisoformat(line["time"]) < since:
                continue
            groups.setdefault((line["service"], line["model"]), _Totals()).add(line)
    return [
        _row(key, totals) for key, totals in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
    ]


def _row(key: tuple[str, str | None], totals: _Totals) -> ReportRow:
    latencies = sorted(totals.latencies)
    return ReportRow(
        service=key[0],
        model=key[1],
        count=totals.count,
        succeeded=totals.succeeded,
        failed=totals.failed,
        input_tokens=totals.input_tokens,
        output_tokens=totals.output_tokens,
        cost_usd=math.fsum(totals.costs),
        p50_latency_ms=percentile(latencies, 0.50),
        p95_latency_ms=percentile(latencies, 0.95),
    )


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default, ``statistics`` "inclusive")."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)
