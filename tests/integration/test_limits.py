"""Spend ledger and rate counters against a real Redis, including races between OS processes."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import pytest
import redis

from gateway import keys
from gateway.limits import MICRO, Period, RateCounter, SpendLedger, period_window

SCOPE = "svc:billing:budget:daily"
# The races: for each of RACE_SCOPES budgets (or rate limits) in turn, PROCESSES processes released
# together by a barrier make RACE_ATTEMPTS attempts each, twice what fits, so all of them are at the
# scope's edge at once; a lost update anywhere shows as one success too many.
PROCESSES = 4
RACE_SCOPES = 20
RACE_ATTEMPTS = 10
RACE_LIMIT_USD = 0.2
RACE_AMOUNT_USD = 0.01  # 20 fit in a budget
RACE_RATE_LIMIT = 20


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def noon_today(days_ahead: int = 0) -> float:
    """Noon UTC of today (from the clock, never a calendar constant): Redis expires ledgers by its
    own clock, so a ``now`` in the past would make a ledger vanish as soon as it is written; noon
    keeps every offset a test adds inside one day."""
    today = datetime.fromtimestamp(time.time(), UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    return (today + timedelta(days=days_ahead)).timestamp()


def day_id(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def month_id(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m")


NOW = noon_today()


@pytest.fixture
def ledger(redis_client: redis.Redis) -> SpendLedger:
    return SpendLedger(redis_client)


@pytest.fixture
def counter(redis_client: redis.Redis) -> RateCounter:
    return RateCounter(redis_client, window_seconds=60.0)


# -- period_window ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "now", "expected_id", "expected_reset"),
    [
        ("day", ts(2026, 11, 24, 0, 0, 0), "2026-11-24", ts(2026, 11, 25)),
        ("day", ts(2026, 11, 24, 23, 59, 59) + 0.999, "2026-11-24", ts(2026, 11, 25)),
        ("day", ts(2026, 12, 31, 18, 30), "2026-12-31", ts(2027, 1, 1)),
        ("day", ts(2028, 2, 28, 9), "2028-02-28", ts(2028, 2, 29)),
        ("day", ts(2028, 2, 29, 9), "2028-02-29", ts(2028, 3, 1)),
        ("day", ts(2027, 2, 28, 9), "2027-02-28", ts(2027, 3, 1)),
        ("month", ts(2026, 11, 1), "2026-11", ts(2026, 12, 1)),
        ("month", ts(2026, 11, 30, 23, 59, 59), "2026-11", ts(2026, 12, 1)),
        ("month", ts(2026, 12, 15), "2026-12", ts(2027, 1, 1)),
        ("month", ts(2028, 2, 29, 23), "2028-02", ts(2028, 3, 1)),
        ("month", ts(2027, 1, 31, 12), "2027-01", ts(2027, 2, 1)),
    ],
)
def test_period_window_utc_boundaries(
    period: Period, now: float, expected_id: str, expected_reset: float
) -> None:
    assert period_window(period, now) == (expected_id, expected_reset)


def test_period_window_rejects_unknown_period() -> None:
    with pytest.raises(ValueError, match="week"):
        period_window("week", NOW)  # type: ignore[arg-type]


# -- SpendLedger -----------------------------------------------------------------------------------


def test_ledger_reserve_then_commit_moves_hold_to_spend(
    ledger: SpendLedger, redis_client: redis.Redis
) -> None:
    granted, state = ledger.reserve(SCOPE, "day", 1.0, "job-1", 0.30, hold_seconds=60, now=NOW)
    assert granted
    assert (state.spent_usd, state.held_usd, state.remaining_usd) == (0.0, 0.30, 0.70)

    with redis_client.pipeline(transaction=True) as pipe:
        ledger.commit(pipe, SCOPE, "day", "job-1", 0.123456, now=NOW + 5)
        pipe.execute()

    after = ledger.state(SCOPE, "day", 1.0, now=NOW + 5)
    assert (after.spent_usd, after.held_usd, after.remaining_usd) == (0.123456, 0.0, 0.876544)
    assert after.resets_at == noon_today(1) - 12 * 3600  # next midnight UTC


def test_ledger_commits_accumulate_in_integer_micro_usd(
    ledger: SpendLedger, redis_client: redis.Redis
) -> None:
    for i in range(10):
        assert ledger.reserve(SCOPE, "day", 1.0, f"job-{i}", 0.1, hold_seconds=60, now=NOW)[0]
        with redis_client.pipeline(transaction=True) as pipe:
            ledger.commit(pipe, SCOPE, "day", f"job-{i}", 0.1, now=NOW)
            pipe.execute()

    assert ledger.state(SCOPE, "day", 1.0, now=NOW).spent_usd == 1.0  # ten float 0.1s would not sum to 1.0
    assert int(redis_client.hget(keys.spend_ledger(SCOPE, day_id(NOW)), "spent") or 0) == MICRO
    assert not ledger.reserve(SCOPE, "day", 1.0, "one-more", 0.000001, hold_seconds=60, now=NOW)[0]


def test_ledger_denial_changes_nothing(ledger: SpendLedger) -> None:
    assert ledger.reserve(SCOPE, "day", 1.0, "a", 0.70, hold_seconds=60, now=NOW)[0]
    before = ledger.state(SCOPE, "day", 1.0, now=NOW)

    granted, state = ledger.reserve(SCOPE, "day", 1.0, "b", 0.31, hold_seconds=60, now=NOW)

    assert not granted
    assert state == before == ledger.state(SCOPE, "day", 1.0, now=NOW)
    assert ledger.reserve(SCOPE, "day", 1.0, "c", 0.30, hold_seconds=60, now=NOW)[0]  # exactly fills it


def test_ledger_denied_rereserve_keeps_the_earlier_hold(ledger: SpendLedger) -> None:
    assert ledger.reserve(SCOPE, "day", 1.0, "a", 0.40, hold_seconds=60, now=NOW)[0]

    granted, state = ledger.reserve(SCOPE, "day", 1.0, "a", 1.50, hold_seconds=60, now=NOW)

    assert not granted
    assert state.held_usd == 0.40


def test_ledger_rereserve_by_same_holder_replaces_its_hold(ledger: SpendLedger) -> None:
    assert ledger.reserve(SCOPE, "day", 1.0, "a", 0.60, hold_seconds=60, now=NOW)[0]

    granted, state = ledger.reserve(SCOPE, "day", 1.0, "a", 0.90, hold_seconds=60, now=NOW)

    assert granted  # 0.60 + 0.90 would not fit: the new hold replaced the old one
    assert state.held_usd == 0.90
    assert ledger.state(SCOPE, "day", 1.0, now=NOW).held_usd == 0.90


def test_ledger_expired_hold_frees_itself(ledger: SpendLedger) -> None:
    assert ledger.reserve(SCOPE, "day", 1.0, "crashed", 0.80, hold_seconds=30, now=NOW)[0]

    assert not ledger.reserve(SCOPE, "day", 1.0, "next", 0.30, hold_seconds=30, now=NOW + 29)[0]
    assert ledger.state(SCOPE, "day", 1.0, now=NOW + 30).held_usd == 0.0
    granted, state = ledger.reserve(SCOPE, "day", 1.0, "next", 0.30, hold_seconds=30, now=NOW + 30)
    assert granted
    assert state.held_usd == 0.30


def test_ledger_release_drops_hold_without_spending(ledger: SpendLedger) -> None:
    assert ledger.reserve(SCOPE, "month", 1.0, "a", 0.90, hold_seconds=60, now=NOW)[0]

    ledger.release(SCOPE, "month", "a", now=NOW + 1)

    state = ledger.state(SCOPE, "month", 1.0, now=NOW + 1)
    assert (state.spent_usd, state.held_usd) == (0.0, 0.0)
    assert ledger.reserve(SCOPE, "month", 1.0, "b", 1.0, hold_seconds=60, now=NOW + 1)[0]


def test_ledger_commit_joins_the_callers_transaction(ledger: SpendLedger, redis_client: redis.Redis) -> None:
    assert ledger.reserve(SCOPE, "month", 5.0, "job-7", 2.0, hold_seconds=60, now=NOW)[0]

    with redis_client.pipeline(transaction=True) as pipe:
        pipe.set("aigw:test:result:job-7", "done")
        ledger.commit(pipe, SCOPE, "month", "job-7", 1.25, now=NOW)
        pipe.execute()

    assert redis_client.get("aigw:test:result:job-7") == b"done"
    state = ledger.state(SCOPE, "month", 5.0, now=NOW)
    assert (state.spent_usd, state.held_usd) == (1.25, 0.0)
    ledger_key = keys.spend_ledger(SCOPE, month_id(NOW))
    _, month_end = period_window("month", NOW)
    assert redis_client.expiretime(ledger_key) == month_end + 86400  # the period's end plus a day


def test_ledger_commit_only_queues_on_the_pipeline(ledger: SpendLedger, redis_client: redis.Redis) -> None:
    assert ledger.reserve(SCOPE, "day", 1.0, "job-1", 0.5, hold_seconds=60, now=NOW)[0]

    with redis_client.pipeline(transaction=True) as pipe:
        ledger.commit(pipe, SCOPE, "day", "job-1", 0.5, now=NOW)
        pipe.reset()  # the caller's transaction is abandoned: nothing may have been written

    state = ledger.state(SCOPE, "day", 1.0, now=NOW)
    assert (state.spent_usd, state.held_usd) == (0.0, 0.5)


def test_ledger_periods_and_scopes_are_separate(ledger: SpendLedger, redis_client: redis.Redis) -> None:
    _, next_month = period_window("month", NOW)
    last_of_month = next_month - 60
    assert ledger.reserve(SCOPE, "day", 1.0, "job-1", 1.0, hold_seconds=600, now=last_of_month)[0]
    with redis_client.pipeline(transaction=True) as pipe:
        ledger.commit(pipe, SCOPE, "day", "job-1", 1.0, now=last_of_month)
        pipe.execute()

    assert not ledger.reserve(SCOPE, "day", 1.0, "job-2", 0.01, hold_seconds=60, now=last_of_month)[0]
    assert ledger.reserve(SCOPE, "day", 1.0, "job-2", 0.01, hold_seconds=60, now=next_month)[0]
    assert ledger.reserve("svc:other", "day", 1.0, "job-3", 1.0, hold_seconds=60, now=last_of_month)[0]
    assert ledger.state(SCOPE, "month", 1.0, now=last_of_month).spent_usd == 0.0


def test_ledger_holds_a_year_ahead_of_today(ledger: SpendLedger, redis_client: redis.Redis) -> None:
    later = noon_today(365)
    assert ledger.reserve(SCOPE, "day", 1.0, "job-1", 0.4, hold_seconds=60, now=later)[0]
    with redis_client.pipeline(transaction=True) as pipe:
        ledger.commit(pipe, SCOPE, "day", "job-1", 0.25, now=later)
        pipe.execute()

    state = ledger.state(SCOPE, "day", 1.0, now=later)
    assert (state.spent_usd, state.held_usd) == (0.25, 0.0)
    assert ledger.state(SCOPE, "day", 1.0, now=NOW).spent_usd == 0.0  # today's period is another ledger
    ledger_key = keys.spend_ledger(SCOPE, day_id(later))
    assert redis_client.expiretime(ledger_key) == period_window("day", later)[1] + 86400


def test_ledger_rejects_negative_amounts(ledger: SpendLedger, redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="amount_usd"):
        ledger.reserve(SCOPE, "day", 1.0, "a", -0.5, hold_seconds=60, now=NOW)
    with redis_client.pipeline(transaction=True) as pipe, pytest.raises(ValueError, match="actual_usd"):
        ledger.commit(pipe, SCOPE, "day", "a", -0.5, now=NOW)


def _reserve_and_commit(url: str, barrier: Barrier, results: Queue[list[int]], now: float) -> None:
    """One racing process: reserve and commit small amounts on each budget until its attempts run out."""
    connection = redis.Redis.from_url(url)
    ledger = SpendLedger(connection)
    granted = [0] * RACE_SCOPES
    for n in range(RACE_SCOPES):
        barrier.wait(timeout=60)
        for attempt in range(RACE_ATTEMPTS):
            holder = f"{os.getpid()}:{attempt}"
            scope = f"svc:race:{n}"
            ok, _ = ledger.reserve(scope, "day", RACE_LIMIT_USD, holder, RACE_AMOUNT_USD, 600, now=now)
            if ok:
                with connection.pipeline(transaction=True) as pipe:
                    ledger.commit(pipe, scope, "day", holder, RACE_AMOUNT_USD, now=now)
                    pipe.execute()
                granted[n] += 1
    connection.close()
    results.put(granted)


def test_ledger_processes_racing_never_overspend_or_lose_updates(ledger: SpendLedger, redis_url: str) -> None:
    reports = _race(_reserve_and_commit, redis_url, NOW)

    for n in range(RACE_SCOPES):
        granted = sum(report[n] for report in reports)
        state = ledger.state(f"svc:race:{n}", "day", RACE_LIMIT_USD, now=NOW)
        assert granted == round(RACE_LIMIT_USD / RACE_AMOUNT_USD)  # the budget fills, exactly
        assert state.spent_usd == pytest.approx(granted * RACE_AMOUNT_USD, abs=1e-9)
        assert state.spent_usd <= RACE_LIMIT_USD
        assert state.held_usd == 0.0


# -- RateCounter -----------------------------------------------------------------------------------


def test_rate_hit_allows_up_to_limit_then_denies(counter: RateCounter) -> None:
    decisions = [counter.hit("svc:a:rpm", limit=5, now=1000.0 + i) for i in range(7)]

    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.count for d in decisions] == [1, 2, 3, 4, 5, 5, 5]
    assert all(d.retry_after == 0 for d in decisions[:5])
    assert all(0 < d.retry_after <= 60 for d in decisions[5:])


def test_rate_retry_after_is_when_the_hit_fits(counter: RateCounter) -> None:
    for i in range(3):
        assert counter.hit("svc:a:rpm", limit=3, now=1000.0 + 10 * i).allowed
    denied = counter.hit("svc:a:rpm", limit=3, now=1025.0)
    assert not denied.allowed
    assert 35 <= denied.retry_after <= 36  # the hit at 1000 leaves the window at 1060 (+1 s bucket)

    assert not counter.hit("svc:a:rpm", limit=3, now=1025.0 + denied.retry_after - 0.5).allowed
    assert counter.hit("svc:a:rpm", limit=3, now=1025.0 + denied.retry_after).allowed


def test_rate_window_slides_rather_than_resetting_on_the_minute(counter: RateCounter) -> None:
    for _ in range(10):
        assert counter.hit("svc:a:rpm", limit=10, now=1250.0).allowed  # late in the minute 1200..1260

    assert not counter.hit("svc:a:rpm", limit=10, now=1265.0).allowed  # a fixed window would have reset
    assert not counter.peek("svc:a:rpm", limit=10, now=1309.0).allowed
    after = counter.hit("svc:a:rpm", limit=10, now=1311.0)
    assert after.allowed
    assert after.count == 1


def test_rate_tokens_peek_then_add_after_the_call(counter: RateCounter, redis_client: redis.Redis) -> None:
    assert counter.hit("svc:a:tpm", limit=100, amount=90, now=1000.0).allowed
    assert not counter.hit("svc:a:tpm", limit=100, amount=30, now=1001.0).allowed
    peek = counter.peek("svc:a:tpm", limit=100, now=1001.0)
    assert (peek.allowed, peek.count) == (True, 90)  # 90 < 100: one more call may start

    with redis_client.pipeline(transaction=True) as pipe:
        pipe.set("aigw:test:result", "done")
        counter.add(pipe, "svc:a:tpm", 45, now=1002.0)
        pipe.execute()

    after = counter.peek("svc:a:tpm", limit=100, now=1003.0)
    assert (after.allowed, after.count) == (False, 135)  # add ignores the limit: tokens are already spent
    assert 0 < after.retry_after <= 61
    assert counter.peek("svc:a:tpm", limit=100, now=1003.0 + after.retry_after).allowed


def test_rate_amount_over_the_limit_never_fits(counter: RateCounter) -> None:
    decision = counter.hit("svc:a:tpm", limit=100, amount=101, now=1000.0)

    assert not decision.allowed
    assert decision.count == 0
    assert decision.retry_after == counter.window_seconds


def test_rate_peek_changes_nothing(counter: RateCounter) -> None:
    for _ in range(3):
        counter.peek("svc:a:rpm", limit=3, now=1000.0)

    assert counter.hit("svc:a:rpm", limit=3, amount=3, now=1000.0).allowed


def test_rate_scopes_and_windows_are_separate(counter: RateCounter, redis_client: redis.Redis) -> None:
    assert counter.hit("svc:a:rpm", limit=1, now=1000.0).allowed
    assert counter.hit("svc:b:rpm", limit=1, now=1000.0).allowed
    assert RateCounter(redis_client, window_seconds=1.0).hit("svc:a:rpm", limit=1, now=1000.0).allowed
    assert not counter.hit("svc:a:rpm", limit=1, now=1000.0).allowed


def test_rate_old_buckets_are_pruned(counter: RateCounter, redis_client: redis.Redis) -> None:
    for second in range(0, 600, 5):
        counter.peek("svc:a:tpm", limit=100, now=1000.0 + second)
        with redis_client.pipeline(transaction=True) as pipe:
            counter.add(pipe, "svc:a:tpm", 1, now=1000.0 + second)
            pipe.execute()

    assert redis_client.hlen(keys.rate_window("svc:a:tpm", 60.0)) <= RateCounter.BUCKETS + 1
    assert counter.peek("svc:a:tpm", limit=100, now=1600.0).count == 12  # one add per 5 s for 60 s


def _hammer(url: str, barrier: Barrier, results: Queue[list[int]], now: float) -> None:
    """One racing process: hit each shared rate limit, every attempt inside the same window."""
    connection = redis.Redis.from_url(url)
    counter = RateCounter(connection, window_seconds=60.0)
    allowed = [0] * RACE_SCOPES
    for n in range(RACE_SCOPES):
        barrier.wait(timeout=60)
        for attempt in range(RACE_ATTEMPTS):
            decision = counter.hit(f"svc:race:{n}", limit=RACE_RATE_LIMIT, now=now + attempt * 0.1)
            allowed[n] += decision.allowed
    connection.close()
    results.put(allowed)


def test_rate_processes_racing_allow_exactly_the_limit(counter: RateCounter, redis_url: str) -> None:
    reports = _race(_hammer, redis_url, NOW)

    for n in range(RACE_SCOPES):
        assert sum(report[n] for report in reports) == RACE_RATE_LIMIT
        assert counter.peek(f"svc:race:{n}", limit=RACE_RATE_LIMIT, now=NOW + 10).count == RACE_RATE_LIMIT


def _race(target: Callable[..., None], redis_url: str, now: float) -> list[list[int]]:
    """Run ``target`` in PROCESSES spawned OS processes sharing one barrier; each reports a list."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    results: Queue[list[int]] = context.Queue()
    processes = [
        context.Process(target=target, args=(redis_url, barrier, results, now)) for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        reports = [results.get(timeout=60) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
        results.close()
        results.join_thread()
    assert [process.exitcode for process in processes] == [0] * PROCESSES
    return reports
