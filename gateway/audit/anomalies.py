"""``aigw audit anomalies``: each service's recent hours against its own baseline.

The log is cut into UTC hours. The *window* is the hours from ``now - window`` (floored to the
hour) on; the *baseline* is the ``baseline`` before it. Per service, every hour of the window
with traffic is checked, and each flag says why, with both numbers. The rules, all deterministic:

- **volume** and **cost**: the hour's audit lines (attempts) and known cost against the
  service's baseline hours that had traffic, by robust z-score: ``z = (x - median) / s`` with
  ``s = 1.4826 x MAD`` (the median absolute deviation, scaled to a standard deviation), floored
  at 10 % of the median and at one line (one cent for cost), so that a perfectly steady baseline
  does not turn one extra request into a flag. Flagged when ``z > 3.5`` (Iglewicz and Hoaglin's
  cut-off). Only rises are flagged: a drop is not misuse, and an outage shows as failures.
- **failure_rate**: an hour with at least 10 requests and 3 failures (``failed`` or ``refused``;
  ``retrying`` lines are not requests) whose failures are improbable at the baseline's rate
  (floored at 1 %): binomial ``P(X >= failures) < 1e-4``.
- **new_model**: a model alias the service used in the window and never in its baseline.
- **unusual_hour**: traffic at an hour of the day (UTC) at which the service had none on any
  day of its baseline.

A service needs 24 baseline hours with traffic for the first four rules and a baseline that
spans 7 days for the last; one with less gets a note instead of flags.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from gateway.audit.files import scan
from gateway.audit.report import FAILURES, cost_known

Kind = Literal["volume", "cost", "failure_rate", "new_model", "unusual_hour"]

Z_LIMIT = 3.5
MAD_SCALE = 1.4826
MIN_ACTIVE_HOURS = 24
MIN_BASELINE_SPAN = timedelta(days=7)
MIN_REQUESTS_FOR_RATE = 10
MIN_FAILURES = 3
RATE_FLOOR = 0.01
P_LIMIT = 1e-4
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Anomaly:
    service: str
    kind: Kind
    hour: datetime  # the start of the UTC hour it was seen in (the first, for a new model)
    observed: str
    baseline: str
    reason: str


@dataclass(frozen=True)
class Findings:
    window_start: datetime
    baseline_start: datetime
    anomalies: list[Anomaly]
    #: services that could not be checked (too little history), in words
    notes: list[str]


@dataclass
class _Hour:
    lines: int = 0
    requests: int = 0
    failures: int = 0
    cost: Decimal = Decimal(0)


@dataclass
class _Service:
    hours: dict[datetime, _Hour] = field(default_factory=dict)
    baseline_models: set[str] = field(default_factory=set)
    #: model -> (first hour seen, lines) of models used in the window
    window_models: dict[str, tuple[datetime, int]] = field(default_factory=dict)


def anomalies(
    path: Path,
    now: datetime,
    window: timedelta = timedelta(hours=24),
    baseline: timedelta = timedelta(days=14),
    priced: frozenset[str] = frozenset(),
) -> Findings:
    """The anomalies of the log whose live file is ``path`` (see the module docstring)."""
    window_start = _floor_hour(now - window)
    baseline_start = window_start - baseline
    lines = scan(path, baseline_start)
    return detect(lines, window_start, baseline_start, priced)


def detect(
    lines: Iterable[Mapping[str, Any]],
    window_start: datetime,
    baseline_start: datetime,
    priced: frozenset[str],
) -> Findings:
    """The anomalies of ``lines`` (``time`` a datetime, as ``files.scan`` yields them)."""
    services: dict[str, _Service] = {}
    for line in lines:
        if line["time"] < baseline_start:
            continue
        _count(services.setdefault(str(line.get("service")), _Service()), line, window_start, priced)
    found: list[Anomaly] = []
    notes: list[str] = []
    for name in sorted(services):
        flags, note = _check(name, services[name], window_start)
        found += flags
        notes += [note] if note else []
    found.sort(key=lambda a: (a.hour, a.service, a.kind))
    return Findings(window_start, baseline_start, found, notes)


def _count(
    service: _Service, line: Mapping[str, Any], window_start: datetime, priced: frozenset[str]
) -> None:
    hour = _floor_hour(line["time"])
    stats = service.hours.setdefault(hour, _Hour())
    stats.lines += 1
    stats.requests += line.get("status") != "retrying"
    stats.failures += line.get("status") in FAILURES
    if cost_known(line, priced):
        stats.cost += Decimal(line.get("cost_usd") or 0)
    model = line.get("model")
    if model is None:
        return
    if hour < window_start:
        service.baseline_models.add(str(model))
    else:
        first, count = service.window_models.get(str(model), (hour, 0))
        service.window_models[str(model)] = (min(first, hour), count + 1)


def _check(name: str, service: _Service, window_start: datetime) -> tuple[list[Anomaly], str]:
    baseline = {h: s for h, s in service.hours.items() if h < window_start}
    window = {h: s for h, s in sorted(service.hours.items()) if h >= window_start}
    if len(baseline) < MIN_ACTIVE_HOURS:
        return [], (
            f"{name}: {len(baseline)} baseline hours with traffic, {MIN_ACTIVE_HOURS} needed: not checked"
        )
    flags: list[Anomaly] = []
    volumes = [float(s.lines) for s in baseline.values()]
    costs = [float(s.cost) for s in baseline.values()]
    requests = sum(s.requests for s in baseline.values())
    rate = max(sum(s.failures for s in baseline.values()) / requests if requests else 0.0, RATE_FLOOR)
    for hour, stats in window.items():
        flags += _spike(name, "volume", hour, float(stats.lines), volumes, floor=1.0)
        flags += _spike(name, "cost", hour, float(stats.cost), costs, floor=0.01)
        flags += _failures(name, hour, stats, rate)
    flags += _new_models(name, service, len(baseline))
    first_day = min(baseline)
    if window_start - first_day < MIN_BASELINE_SPAN:
        days = (window_start - first_day) / timedelta(days=1)
        return flags, f"{name}: a baseline of {days:.1f} days, 7 needed for unusual hours: not checked"
    flags += _unusual_hours(name, baseline, window, (window_start - first_day).days)
    return flags, ""


def _spike(name: str, kind: Kind, hour: datetime, x: float, base: list[float], floor: float) -> list[Anomaly]:
    median = statistics.median(base)
    mad = statistics.median(abs(v - median) for v in base)
    scale = max(MAD_SCALE * mad, 0.1 * median, floor)
    z = (x - median) / scale
    if z <= Z_LIMIT:
        return []
    if kind == "volume":
        observed, usual = f"{x:.0f} lines", f"median {median:g}, MAD {mad:g}"
        what = f"{x:.0f} audit lines in the hour, against a median of {median:g} (MAD {mad:g})"
    else:
        observed, usual = f"${x:.6f}", f"median ${median:.6f}, MAD ${mad:.6f}"
        what = f"${x:.6f} spent in the hour, against a median of ${median:.6f} (MAD ${mad:.6f})"
    reason = f"{what} per baseline hour with traffic: robust z {z:.1f} > {Z_LIMIT}"
    return [Anomaly(name, kind, hour, observed, usual, reason)]


def _failures(name: str, hour: datetime, stats: _Hour, rate: float) -> list[Anomaly]:
    n, f = stats.requests, stats.failures
    if n < MIN_REQUESTS_FOR_RATE or f < MIN_FAILURES:
        return []
    chance = binomial_tail(n, f, rate)
    if chance >= P_LIMIT:
        return []
    reason = (
        f"{f} of {n} requests failed ({f / n:.0%}) against {rate:.1%} in the baseline: "
        f"P = {chance:.1e} of that many by chance (< {P_LIMIT:g})"
    )
    return [Anomaly(name, "failure_rate", hour, f"{f}/{n} ({f / n:.0%})", f"{rate:.1%}", reason)]


def _new_models(name: str, service: _Service, hours: int) -> list[Anomaly]:
    flags = []
    known = ", ".join(sorted(service.baseline_models)) or "none"
    for model, (first, count) in sorted(service.window_models.items()):
        if model not in service.baseline_models:
            reason = (
                f"model {model} used {count} times from {first:%Y-%m-%d %H}:00 UTC; never in the "
                f"baseline ({hours} hours with traffic; models then: {known})"
            )
            flags.append(Anomaly(name, "new_model", first, f"{model} x{count}", known, reason))
    return flags


def _unusual_hours(
    name: str, baseline: dict[datetime, _Hour], window: dict[datetime, _Hour], days: int
) -> list[Anomaly]:
    active = {hour.hour for hour in baseline}
    flags = []
    for hour, stats in window.items():
        if hour.hour not in active:
            reason = (
                f"{stats.lines} audit lines at {hour:%H}:00 UTC, an hour of the day with no traffic "
                f"from {name} on any of the {days} baseline days"
            )
            flags.append(Anomaly(name, "unusual_hour", hour, f"{stats.lines} lines", "0 lines", reason))
    return flags


def binomial_tail(n: int, k: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space (exact enough for any n)."""
    if k <= 0:
        return 1.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k, n + 1):
        log_term = (
            math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        )
        term = math.exp(log_term)
        total += term
        if i > n * p and term < total * 1e-17:
            break  # past the mode the terms only shrink
    return min(total, 1.0)


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)
