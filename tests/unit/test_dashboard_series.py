"""``gateway/dashboard/series.py``: the dashboard's history read from a real audit log on disk,
incrementally, across a rotation, with times derived from the clock."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from gateway.dashboard.series import BUCKETS, AuditWindow, bucket_of, bucket_value, quantile
from tests.fakes.audit_events import make_event, write_log

PRICED = frozenset({"offline-1"})


def _at(seconds_ago: float) -> datetime:
    return datetime.fromtimestamp(time.time() - seconds_ago, UTC)


def _minute_of(window: AuditWindow, moment: datetime, service: str | None = None) -> dict[str, object]:
    label = moment.strftime("%Y-%m-%dT%H:%MZ")
    return next(m for m in window.snapshot(service)["minutes"] if m["minute"] == label)


def test_the_last_hour_minute_by_minute_and_costs_by_service_and_model(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    recent = _at(120)
    write_log(
        log,
        [
            make_event("a", time=recent, service="billing", cost_usd=0.25, latency_ms=100.0, total_ms=110.0),
            make_event("b", time=recent, service="billing", status="failed", cost_usd=0.0),
            make_event("c", time=recent, service="search", cost_usd=0.5),
            make_event("d", time=recent, service="search", status="retrying", cost_usd=0.0),
            # unpriced: tokens billed at a deployment nobody priced
            make_event("e", time=recent, service="search", deployment="nowhere/0:openai", cost_usd=0.0),
            make_event("old", time=_at(3 * 86400), service="billing", cost_usd=1.0),  # in 7d, not today
            make_event("ancient", time=_at(9 * 86400), service="billing", cost_usd=100.0),  # past 7 days
        ],
    )
    window = AuditWindow(log, PRICED)
    window.refresh()
    everyone = _minute_of(window, recent)
    assert everyone["requests"] == 4 and everyone["failures"] == 1  # the retrying line is no request
    assert _minute_of(window, recent, "billing")["requests"] == 2
    p50 = _minute_of(window, recent, "billing")["latency_p50_ms"]
    assert isinstance(p50, float)
    assert 12.5 * 0.95 <= p50 <= 100 * 1.05
    assert len(window.snapshot(None)["minutes"]) == 60
    cost = window.snapshot(None)["cost"]
    week = {(r["service"], r["model"]): r for r in cost["7d"]}
    assert Decimal(week[("billing", "fast")]["cost_usd"]) == Decimal("1.25")  # the 9-day-old line is out
    assert Decimal(week[("search", "fast")]["cost_usd"]) == Decimal("0.5")
    assert week[("search", "fast")]["unpriced"] == 1
    today = {(r["service"], r["model"]): r for r in cost["today"]}
    if recent.date() == datetime.now(UTC).date():  # two minutes ago may be yesterday just after midnight
        assert Decimal(today[("billing", "fast")]["cost_usd"]) == Decimal("0.25")
    only_search = window.snapshot("search")["cost"]["7d"]
    assert {r["service"] for r in only_search} == {"search"}


def test_only_new_lines_are_read_and_a_rotation_is_followed(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    recent = _at(60)
    prev = write_log(log, [make_event(f"first-{i}", time=recent) for i in range(3)])
    window = AuditWindow(log, PRICED)
    window.refresh()
    assert window.lines_read == 3
    prev = write_log(log, [make_event("second", time=recent)], prev)
    with log.open("ab") as file:
        file.write(b'{"time": "half a line')  # the writer mid-line: left for the next refresh
    window.refresh()
    assert window.lines_read == 4
    # the writer finishes nothing more in this file and rotates it; new lines go to a new live file
    with log.open("ab") as file:
        file.write(b'"}\n')  # (the half line completed: no audit line, skipped, not counted)
    os.rename(log, tmp_path / "audit.log.000001")
    write_log(log, [make_event("third", time=recent)], prev)
    window.refresh()
    assert window.lines_read == 5
    assert _minute_of(window, recent)["requests"] == 5
    window.refresh()  # nothing new: nothing read again
    assert window.lines_read == 5


def test_no_log_yet_then_one_appears(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    window = AuditWindow(log, PRICED)
    window.refresh()
    assert all(m["requests"] == 0 for m in window.snapshot(None)["minutes"])
    write_log(log, [make_event("late", time=_at(30))])
    window.refresh()
    assert _minute_of(window, _at(30))["requests"] == 1


def test_buckets_keep_percentiles_within_five_percent() -> None:
    for value in (0.02, 0.7, 3.0, 48.0, 812.4, 30_000.0):
        assert abs(bucket_value(bucket_of(value)) - value) <= 0.05 * value
    counts = [0] * BUCKETS
    for value in range(1, 101):
        counts[bucket_of(float(value))] += 1
    p95 = quantile(counts, 0.95)
    assert p95 is not None and abs(p95 - 95) <= 0.05 * 95
    assert quantile([0] * BUCKETS, 0.5) is None
