"""``aigw audit report``: usage grouped by service, model alias and (optionally) UTC day, read
from every file of the log in range, one line at a time.

Money is ``Decimal``, read from the line's own digits (``files.scan``), so a group's cost is the
exact sum of its lines and the total the exact sum of the groups. A line's cost is *unknown*
when the call used tokens, was not answered offline, and cost 0 at a deployment whose
``pricing`` models.yaml does not set: unpriced, not free. A group with only such lines has no
cost (``None``); a group with some says how many (``unpriced``). Set ``pricing`` to 0 for a
deployment that is free (a local model) and its lines count as $0.

Counts: ``attempts`` is audit lines (one per attempt); ``requests`` leaves out the ``retrying``
ones, so a job counts once, at its last attempt (a job interrupted by a shutdown and run again
also has its ``canceled`` line); ``failures`` is ``failed`` and ``refused`` lines. Latency
percentiles are over attempts that called a provider and were not answered from the cache;
they keep one float per such attempt, the only memory that grows with the log.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from gateway.audit.files import scan
from gateway.config import ModelsFile

GroupKey = Literal["service", "model", "day"]
GROUP_KEYS: tuple[GroupKey, ...] = ("service", "model", "day")
FAILURES = frozenset({"failed", "refused"})


def parse_group_by(text: str) -> tuple[GroupKey, ...]:
    """``service,model[,day]`` and any other order or subset; a bad value raises ``ValueError``."""
    keys = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [k for k in keys if k not in GROUP_KEYS]
    if not keys or unknown or len(set(keys)) != len(keys):
        raise ValueError(f"--by {text!r}: a comma-separated list of {', '.join(GROUP_KEYS)}, each once")
    return keys  # type: ignore[return-value]


def priced_deployments(models: ModelsFile) -> frozenset[str]:
    """The deployments whose cost is known: those with a ``pricing`` and the offline stand-in.

    Names as the worker writes them (``gateway.config.deployment_name``).
    """
    return frozenset(
        name
        for name, deployment in models.named_deployments()
        if "pricing" in deployment.model_fields_set or deployment.provider == "offline"
    )


def cost_known(line: Mapping[str, Any], priced: frozenset[str]) -> bool:
    """Whether the line's ``cost_usd`` is a price, not the 0 of a deployment nobody priced."""
    if line.get("cost_usd") or line.get("offline"):
        return True
    if not line.get("input_tokens") and not line.get("output_tokens"):
        return True  # nothing was billed: refused, cached, or no call finished
    return line.get("deployment") in priced


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default, ``statistics`` "inclusive")."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


@dataclass
class Usage:
    """The sums of one group (or of all of them: the total)."""

    attempts: int = 0
    requests: int = 0
    failures: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    #: lines whose cost is unknown (see the module docstring); their cost is not in ``cost_usd``
    unpriced: int = 0
    latencies: array[float] = field(default_factory=lambda: array("d"))

    def add(self, line: Mapping[str, Any], priced: frozenset[str]) -> None:
        self.attempts += 1
        self.requests += line.get("status") != "retrying"
        self.failures += line.get("status") in FAILURES
        self.input_tokens += int(line.get("input_tokens") or 0)
        self.output_tokens += int(line.get("output_tokens") or 0)
        if cost_known(line, priced):
            self.cost_usd += Decimal(line.get("cost_usd") or 0)
        else:
            self.unpriced += 1
        latency = line.get("latency_ms")
        if latency is not None and line.get("calls", 1) and not line.get("cached"):
            self.latencies.append(float(latency))

    def merge(self, other: Usage) -> None:
        self.attempts += other.attempts
        self.requests += other.requests
        self.failures += other.failures
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd
        self.unpriced += other.unpriced
        self.latencies.extend(other.latencies)


@dataclass(frozen=True)
class ReportRow:
    """One group. ``cost_usd`` is ``None`` when no line of it has a known cost."""

    group: dict[str, str | None]
    attempts: int
    requests: int
    failures: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal | None
    unpriced: int
    p50_latency_ms: float | None
    p95_latency_ms: float | None

    @classmethod
    def of(cls, group: dict[str, str | None], usage: Usage) -> ReportRow:
        latencies = sorted(usage.latencies)
        all_unpriced = usage.unpriced == usage.attempts and usage.attempts > 0
        return cls(
            group=group,
            attempts=usage.attempts,
            requests=usage.requests,
            failures=usage.failures,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=None if all_unpriced else usage.cost_usd,
            unpriced=usage.unpriced,
            p50_latency_ms=percentile(latencies, 0.50),
            p95_latency_ms=percentile(latencies, 0.95),
        )


@dataclass(frozen=True)
class Report:
    by: tuple[GroupKey, ...]
    rows: list[ReportRow]
    total: ReportRow


def report(
    path: Path,
    by: Sequence[GroupKey] = ("service", "model"),
    since: datetime | None = None,
    priced: frozenset[str] = frozenset(),
) -> Report:
    """Usage of the log whose live file is ``path`` from ``since`` on, grouped ``by``."""
    return summarize(scan(path, since), by, priced)


def summarize(lines: Iterable[Mapping[str, Any]], by: Sequence[GroupKey], priced: frozenset[str]) -> Report:
    """The report of ``lines`` whose ``time`` is a datetime (as ``files.scan`` yields them)."""
    groups: dict[tuple[str | None, ...], Usage] = {}
    for line in lines:
        key = tuple(_group_value(line, k) for k in by)
        groups.setdefault(key, Usage()).add(line, priced)
    total = Usage()
    rows = []
    for key in sorted(groups, key=lambda k: tuple(v or "" for v in k)):
        rows.append(ReportRow.of(dict(zip(by, key, strict=True)), groups[key]))
        total.merge(groups[key])
    return Report(tuple(by), rows, ReportRow.of({k: None for k in by}, total))


def _group_value(line: Mapping[str, Any], key: GroupKey) -> str | None:
    if key == "day":
        moment: datetime = line["time"]
        return moment.date().isoformat()  # files.scan reads times in UTC ("Z")
    value = line.get(key)
    return None if value is None else str(value)
