"""``gateway/audit/anomalies.py`` on synthetic logs (real files, times relative to now): a quiet
log flags nothing, and each injected spike is found, with its reason and numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.audit import AuditEvent, Findings, anomalies
from gateway.audit.anomalies import binomial_tail
from tests.fakes.audit_events import BUSINESS_HOURS, hour_events, quiet_traffic, write_log

WINDOW = timedelta(hours=24)


def _complete_window_hours(now: datetime) -> list[datetime]:
    """The 24 whole hours of the window, oldest first (every hour of the day once)."""
    start = (now - WINDOW).replace(minute=0, second=0, microsecond=0)
    return [start + timedelta(hours=i) for i in range(24) if start + timedelta(hours=i + 1) <= now]


def _replace_hour(
    events: list[AuditEvent], service: str, hour: datetime, new: list[AuditEvent]
) -> list[AuditEvent]:
    """``events`` with ``service``'s lines of ``hour`` replaced by ``new``."""

    def inside(event: AuditEvent) -> bool:
        moment = datetime.fromisoformat(event.time)
        return event.service == service and hour <= moment < hour + timedelta(hours=1)

    return [e for e in events if not inside(e)] + new


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC)


def _findings(tmp_path: Path, events: list[AuditEvent], now: datetime) -> Findings:
    path = tmp_path / "audit.log"
    write_log(path, sorted(events, key=lambda e: e.time))
    return anomalies(path, now, WINDOW, timedelta(days=14), priced=frozenset({"offline-1"}))


def test_anomalies_quiet_log_flags_nothing(tmp_path: Path, now: datetime) -> None:
    findings = _findings(tmp_path, quiet_traffic(now), now)

    assert findings.anomalies == []
    assert findings.notes == []


def test_anomalies_finds_each_injected_spike_with_its_reason(tmp_path: Path, now: datetime) -> None:
    hours = _complete_window_hours(now)
    busy = [h for h in hours if h.hour in BUSINESS_HOURS]
    night = next(h for h in hours if h.hour == 3)
    events = quiet_traffic(now)
    # a retry loop answered from the cache: volume, not cost
    events += hour_events("billing", busy[0], 300, cached=True, input_tokens=0, output_tokens=0, cost_usd=0.0)
    # the usual volume, each call 40 times as long an answer
    events = _replace_hour(events, "billing", busy[2], hour_events("billing", busy[2], 30, output_tokens=6000,
                                                                     cost_usd=0.0912))  # fmt: skip
    failing = hour_events("search", busy[4], 20)
    failing = [e.model_copy(update={"status": "failed"}) if i % 2 else e for i, e in enumerate(failing)]
    events = _replace_hour(events, "search", busy[4], failing)
    events += hour_events("search", busy[6], 3, model="gpt-big")
    events += hour_events("billing", night, 5)

    findings = _findings(tmp_path, events, now)

    flagged = {(a.service, a.kind, a.hour) for a in findings.anomalies}
    assert flagged == {
        ("billing", "volume", busy[0]),
        ("billing", "cost", busy[2]),
        ("search", "failure_rate", busy[4]),
        ("search", "new_model", busy[6]),
        ("billing", "unusual_hour", night),
    }
    why = {a.kind: a for a in findings.anomalies}
    assert why["volume"].observed.startswith("3") and "robust z" in why["volume"].reason
    assert "median" in why["cost"].baseline and "$2.736000 spent in the hour" in why["cost"].reason
    assert why["failure_rate"].observed == "10/20 (50%)" and "P = " in why["failure_rate"].reason
    assert (
        "model gpt-big used 3 times" in why["new_model"].reason and "fast, smart" in why["new_model"].reason
    )
    assert "no traffic from billing on any of the" in why["unusual_hour"].reason


def test_anomalies_skip_a_service_without_enough_history_and_say_so(tmp_path: Path, now: datetime) -> None:
    hours = _complete_window_hours(now)
    young = [h - timedelta(days=1) for h in hours[-5:]]  # five hours of history, the day before
    events = quiet_traffic(now) + [e for h in young for e in hour_events("newbie", h, 10)]
    events += hour_events("newbie", hours[-1], 500)

    findings = _findings(tmp_path, events, now)

    assert [a for a in findings.anomalies if a.service == "newbie"] == []
    assert findings.notes == ["newbie: 5 baseline hours with traffic, 24 needed: not checked"]


def test_anomalies_ignore_lines_before_the_baseline(tmp_path: Path, now: datetime) -> None:
    events = quiet_traffic(now)
    long_ago = (now - timedelta(days=40)).replace(minute=0, second=0, microsecond=0)
    events += hour_events("billing", long_ago, 5, model="legacy")
    last_busy = [h for h in _complete_window_hours(now) if h.hour in BUSINESS_HOURS][-1]
    events += hour_events("billing", last_busy, 2, model="legacy")

    kinds = {(a.kind, a.observed) for a in _findings(tmp_path, events, now).anomalies}

    assert kinds == {("new_model", "legacy x2")}  # used 40 days ago: outside the 14-day baseline


def test_binomial_tail_matches_the_exact_sum() -> None:
    from math import comb

    exact = sum(comb(20, k) * 0.1**k * 0.9 ** (20 - k) for k in range(5, 21))

    assert binomial_tail(20, 5, 0.1) == pytest.approx(exact, rel=1e-9)
    assert binomial_tail(20, 0, 0.1) == 1.0
    assert binomial_tail(100_000, 2_000, 0.01) < 1e-100
