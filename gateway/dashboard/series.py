"""The dashboard's history, read from the audit log: per-minute throughput, latency and gateway
overhead over the last hour, and cost by service and model per UTC day over the last 7 days.

Why the audit log and not counters of our own: it already holds one line per attempt with every
number the charts need (``time``, ``status``, ``latency_ms``, ``total_ms``, ``queue_wait_ms``,
``cost_usd``), written by the audit writer off the job path, so the dashboard adds nothing to a
job. And why it stays cheap: an :class:`AuditWindow` reads the 7 days once (the first time a
dashboard asks, in a thread), then on each refresh only the bytes appended since, following the
live file across a rotation by its inode. It keeps aggregates, never lines: 60 minutes of
buckets per service and 8 days of sums per (day, service, model), so its memory does not grow
with the log. Latency percentiles come from log-spaced buckets (each 10 % wide), so they are
within 5 % of the exact value.

The log must be on this host (``audit.path``): an API on another machine shows no history.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.audit.anomalies import anomalies
from gateway.audit.files import AuditFiles, complete_lines
from gateway.audit.report import FAILURES, cost_known

MINUTES = 60
DAYS = 7
#: bucket ``i`` holds values in [BASE * RATIO**(i-1), BASE * RATIO**i) milliseconds; 0 below BASE
BASE_MS = 0.01
RATIO = 1.1
BUCKETS = 200  # 0.01 ms to 0.01 * 1.1**199 (about 17 hours); above, the last bucket
#: anomalies read 15 days of the log: recomputed at most this often per API process
ANOMALIES_SECONDS = 60.0


def bucket_of(ms: float) -> int:
    if ms < BASE_MS:
        return 0
    return min(BUCKETS - 1, 1 + int(math.log(ms / BASE_MS, RATIO)))


def bucket_value(index: int) -> float:
    """A bucket's representative value: its geometric middle (0 for the lowest)."""
    if index == 0:
        return 0.0
    return float(BASE_MS * RATIO ** (index - 0.5))


def quantile(counts: list[int], q: float) -> float | None:
    total = sum(counts)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return round(bucket_value(index), 3)
    return None  # (unreachable: seen reaches total)


@dataclass
class _Minute:
    requests: int = 0
    failures: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    overhead: list[int] = field(default_factory=lambda: [0] * BUCKETS)


@dataclass
class _Spend:
    requests: int = 0
    cost_usd: Decimal = Decimal(0)
    unpriced: int = 0


class AuditWindow:
    """The aggregates of the audit log whose live file is ``live``; :meth:`refresh` reads what is new."""

    def __init__(self, live: Path, priced: frozenset[str]) -> None:
        self.live = live
        self.priced = priced
        self._lock = threading.Lock()
        self._minutes: dict[tuple[str, int], _Minute] = {}
        self._days: dict[tuple[str, str, str], _Spend] = {}
        self._started = False
        self._inode: int | None = None
        self._offset = 0
        #: lines read so far (for the docs' measurements and the page's "read N lines")
        self.lines_read = 0

    def refresh(self, now: float | None = None) -> None:
        """Read what was appended since the last call (the whole 7 days on the first)."""
        now = time.time() if now is None else now
        with self._lock:
            if not self._started:
                self._first_read(now)
                self._started = True
            else:
                self._read_new(now)
            self._prune(now)

    def _first_read(self, now: float) -> None:
        since = datetime.fromtimestamp(now, UTC) - timedelta(days=DAYS + 1)
        stat = _stat(self.live)
        for path in AuditFiles(self.live).since(since):
            if path != self.live:
                self._add_lines(complete_lines(path), now)
        if stat is not None:
            self._inode = stat.st_ino
            self._offset = self._read_from(self.live, 0, stat.st_size, now)

    def _read_new(self, now: float) -> None:
        stat = _stat(self.live)
        if self._inode is not None and (stat is None or stat.st_ino != self._inode):
            rotated = self._rotated_file(self._inode)  # the writer renamed our file: finish it
            if rotated is not None:
                self._read_from(rotated, self._offset, None, now)
            self._inode, self._offset = None, 0
        if stat is None:
            return
        if self._inode is None or stat.st_size < self._offset:  # a new live file (or truncated)
            self._inode, self._offset = stat.st_ino, 0
        self._offset = self._read_from(self.live, self._offset, stat.st_size, now)

    def _rotated_file(self, inode: int) -> Path | None:
        for _number, path in reversed(AuditFiles(self.live).rotated()[-3:]):
            stat = _stat(path)
            if stat is not None and stat.st_ino == inode:
                return path
        return None

    def _read_from(self, path: Path, offset: int, end: int | None, now: float) -> int:
        """Add the complete lines of ``path`` between ``offset`` and ``end``; the offset after them."""
        try:
            file = path.open("rb")
        except FileNotFoundError:
            return offset
        with file:
            file.seek(offset)
            data = file.read() if end is None else file.read(max(0, end - offset))
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for next time
        self._add_lines(iter(complete.splitlines()), now)
        return offset + len(complete)

    def _add_lines(self, raws: Iterator[bytes], now: float) -> None:
        oldest_day = _day(now - DAYS * 86400)
        oldest_minute = int(now // 60) - MINUTES
        for raw in raws:
            try:
                line = json.loads(raw, parse_float=Decimal)
                moment = datetime.fromisoformat(line["time"]).timestamp()
            except (ValueError, TypeError, KeyError):
                continue  # not a line of ours (``aigw audit verify`` reports it)
            if not isinstance(line, dict):
                continue
            self.lines_read += 1
            day = _day(moment)
            if day < oldest_day:
                continue
            self._add(line, day, int(moment // 60), oldest_minute)

    def _add(self, line: dict[str, Any], day: str, minute: int, oldest_minute: int) -> None:
        service, model = str(line.get("service")), str(line.get("model") or "none")
        status = line.get("status")
        spend = self._days.setdefault((day, service, model), _Spend())
        spend.requests += status != "retrying"
        if cost_known(line, self.priced):
            spend.cost_usd += Decimal(line.get("cost_usd") or 0)
        else:
            spend.unpriced += 1
        if minute < oldest_minute:
            return
        stats = self._minutes.setdefault((service, minute), _Minute())
        stats.requests += status != "retrying"
        stats.failures += status in FAILURES
        latency = line.get("latency_ms")
        if latency is not None and line.get("calls") and not line.get("cached"):
            stats.latency[bucket_of(float(latency))] += 1
        if status == "succeeded":  # as /metrics' aigw_gateway_overhead_seconds counts it
            worker_ms = float(line.get("total_ms") or 0) - float(line.get("queue_wait_ms") or 0)
            stats.overhead[bucket_of(max(0.0, worker_ms - float(latency or 0)))] += 1

    def _prune(self, now: float) -> None:
        oldest_minute = int(now // 60) - MINUTES
        for minute_key in [k for k in self._minutes if k[1] < oldest_minute]:
            del self._minutes[minute_key]
        oldest_day = _day(now - DAYS * 86400)
        for day_key in [k for k in self._days if k[0] < oldest_day]:
            del self._days[day_key]

    def snapshot(self, service: str | None, now: float | None = None) -> dict[str, Any]:
        """The last hour minute by minute and the costs, of one service or (None) of all."""
        now = time.time() if now is None else now
        with self._lock:
            return {"minutes": self._series(service, now), "cost": self._costs(service, now)}

    def _series(self, service: str | None, now: float) -> list[dict[str, Any]]:
        current = int(now // 60)
        merged: dict[int, _Minute] = {}
        for (name, at), stats in self._minutes.items():
            if service is not None and name != service:
                continue
            into = merged.get(at)
            if into is None:
                copy = _Minute(stats.requests, stats.failures, list(stats.latency), list(stats.overhead))
                merged[at] = copy
                continue
            into.requests += stats.requests
            into.failures += stats.failures
            into.latency = [a + b for a, b in zip(into.latency, stats.latency, strict=True)]
            into.overhead = [a + b for a, b in zip(into.overhead, stats.overhead, strict=True)]
        rows = []
        for minute in range(current - MINUTES + 1, current + 1):
            stats = merged.get(minute, _Minute())
            rows.append(
                {
                    "minute": datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%dT%H:%MZ"),
                    "requests": stats.requests,
                    "failures": stats.failures,
                    "latency_p50_ms": quantile(stats.latency, 0.5),
                    "latency_p95_ms": quantile(stats.latency, 0.95),
                    "overhead_p50_ms": quantile(stats.overhead, 0.5),
                    "overhead_p95_ms": quantile(stats.overhead, 0.95),
                }
            )
        return rows

    def _costs(self, service: str | None, now: float) -> dict[str, list[dict[str, Any]]]:
        today = _day(now)
        periods: dict[str, dict[tuple[str, str], _Spend]] = {"today": {}, "7d": {}}
        for (day, name, model), spend in self._days.items():
            if service is not None and name != service:
                continue
            for period in ("today", "7d") if day == today else ("7d",):
                total = periods[period].setdefault((name, model), _Spend())
                total.requests += spend.requests
                total.cost_usd += spend.cost_usd
                total.unpriced += spend.unpriced
        return {
            period: [
                {
                    "service": name,
                    "model": model,
                    "requests": spend.requests,
                    # a string: the exact sum, as `aigw audit report` prints it; unknown when unpriced
                    "cost_usd": None if spend.unpriced and not spend.cost_usd else str(spend.cost_usd),
                    "unpriced": spend.unpriced,
                }
                for (name, model), spend in sorted(rows.items())
            ]
            for period, rows in periods.items()
        }


@dataclass
class History:
    """What one API process keeps for its dashboards: the audit window and the anomalies' cache."""

    audit_log: Path
    window: AuditWindow
    _anomalies: tuple[float, dict[str, Any]] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(cls, audit_log: Path, priced: frozenset[str]) -> History:
        return cls(audit_log, AuditWindow(audit_log, priced))

    def anomalies(self) -> dict[str, Any]:
        """``aigw audit anomalies`` over the last 24 hours, as JSON, at most ANOMALIES_SECONDS old."""
        with self._lock:
            now = time.time()
            if self._anomalies is None or now - self._anomalies[0] >= ANOMALIES_SECONDS:
                moment = datetime.fromtimestamp(now, UTC)
                findings = anomalies(self.audit_log, moment, priced=self.window.priced)
                found = [
                    {
                        "service": a.service,
                        "kind": a.kind,
                        "hour": a.hour.strftime("%Y-%m-%dT%H:00Z"),
                        "observed": a.observed,
                        "baseline": a.baseline,
                        "reason": a.reason,
                    }
                    for a in findings.anomalies
                ]
                self._anomalies = (now, {"anomalies": found, "notes": findings.notes})
            return self._anomalies[1]


def _day(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).date().isoformat()


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None
