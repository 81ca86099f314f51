"""Atomic spend and rate counters in Redis: the primitives behind the `budget` and `rate_limit` rules.

Every check-and-update is one Lua script (or plain commands queued on the caller's MULTI), so API
processes and workers on many hosts can share a budget or a rate limit without lost updates.

Time comes from the caller (``now``, default ``time.time()``), not from Redis's TIME, so tests can
drive it. Hosts are expected to be NTP-synced; a host whose clock is off by ``s`` seconds sees
holds expire ``s`` seconds early or late, may bill a call near midnight to the neighbouring
period, and sees a rate window shifted by ``s``. Key TTLs are set by Redis's own clock and are
generous enough (a day past a period, two windows for a rate) that such skew never expires live data.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import redis
from redis.client import Pipeline

from gateway import keys

#: Money is counted in integer micro-USD (HINCRBY), never floats in Redis.
MICRO = 1_000_000

#: The most one commit adds to a counter. HINCRBY is signed 64-bit (about 9.2e18) and fails on
#: overflow *inside* the result's MULTI, which applies every other command (MULTI does not roll
#: back): so amounts are checked before the transaction. 10^15 micro-USD is $1e9 for one call; a
#: counter then takes over 9,000 such calls in one period to overflow.
MAX_INCREMENT = 10**15

Period = Literal["day", "month"]

_SPENT_FIELD = "spent"
_DAY = 86_400

# One ledger hash per (scope, period): "spent" -> committed micro-USD and "hold:<holder>" ->
# "<micro> <expires_at>". Holds live in the same key as the spend so that commit can remove a hold
# and add the spend with plain commands, and expire together with the period. Summing the holds is
# O(open holds), which is bounded by the calls in flight against one budget.
_READ_LEDGER_LUA = """
local function read_ledger(key, now, own_field)
  local spent, held, own, expired = 0, 0, 0, {}
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do
    local field, value = flat[i], flat[i + 1]
    if field == 'spent' then
      spent = tonumber(value)
    else
      local micro, expires_at = string.match(value, '^(%d+) (%S+)$')
      if tonumber(expires_at) <= now then
        expired[#expired + 1] = field
      else
        held = held + tonumber(micro)
        if field == own_field then own = tonumber(micro) end
      end
    end
  end
  return spent, held, own, expired
end
"""

# KEYS[1] ledger; ARGV: now. Read-only: expired holds are left for the next reserve to drop.
_STATE_LUA = (
    _READ_LEDGER_LUA
    + """
local spent, held = read_ledger(KEYS[1], tonumber(ARGV[1]), '')
return {spent, held}
"""
)

# KEYS[1] ledger; ARGV: now, hold field, amount micro, limit micro, hold expires at, ledger expires at.
# The holder's own earlier hold is left out of the check because the new hold replaces it.
_RESERVE_LUA = (
    _READ_LEDGER_LUA
    + """
local key, field = KEYS[1], ARGV[2]
local amount, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local spent, held, own, expired = read_ledger(key, tonumber(ARGV[1]), field)
for _, stale in ipairs(expired) do redis.call('HDEL', key, stale) end
if spent + held - own + amount > limit then
  return {0, spent, held}
end
redis.call('HSET', key, field, ARGV[3] .. ' ' .. ARGV[5])
redis.call('EXPIREAT', key, ARGV[6])
return {1, spent, held - own + amount}
"""
)

# KEYS[1] counter hash (bucket number -> amount); ARGV: oldest counted bucket, current bucket, limit,
# amount, mode, TTL seconds. Mode "hit" adds the amount if it fits, "add" adds it regardless, "peek"
# adds nothing. Returns {allowed, count, bucket}: when denied, bucket is the oldest bucket whose
# departure makes room (false if the amount alone is over the limit).
_RATE_LUA = """
local key, current = KEYS[1], ARGV[2]
local oldest, limit, amount, mode = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local count, live = 0, {}
local flat = redis.call('HGETALL', key)
for i = 1, #flat, 2 do
  local bucket, n = tonumber(flat[i]), tonumber(flat[i + 1])
  if bucket < oldest then
    redis.call('HDEL', key, flat[i])
  else
    count = count + n
    live[#live + 1] = {bucket, n}
  end
end
local fits = count + amount <= limit
if mode == 'add' or (mode == 'hit' and fits) then
  redis.call('HINCRBY', key, current, amount)
  redis.call('EXPIRE', key, ARGV[6])
  return {1, count + amount, false}
end
if fits then return {1, count, false} end
if amount > limit then return {0, count, false} end
table.sort(live, function(a, b) return a[1] < b[1] end)
local freed = 0
for _, entry in ipairs(live) do
  freed = freed + entry[2]
  if count - freed + amount <= limit then return {0, count, entry[1]} end
end
return {0, count, false}
"""


def period_window(period: Period, now: float) -> tuple[str, float]:
    """(period id like '2026-11-24' or '2026-11', unix time when it resets) in UTC."""
    moment = datetime.fromtimestamp(now, UTC)
    if period == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%d"), (start + timedelta(days=1)).timestamp()
    if period == "month":
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        if start.month == 12:
            following = start.replace(year=start.year + 1, month=1)
        else:
            following = start.replace(month=start.month + 1)
        return start.strftime("%Y-%m"), following.timestamp()
    raise ValueError(f"period must be 'day' or 'month', not {period!r}")


def fits_increment(amount: float) -> bool:
    """Whether ``amount`` (micro-USD or tokens) may be added by one commit: finite, 0 to MAX_INCREMENT."""
    return math.isfinite(amount) and 0 <= amount <= MAX_INCREMENT


def to_micro(usd: float) -> int:
    """USD as integer micro-USD (rounded to the nearest micro-dollar)."""
    return round(usd * MICRO)


@dataclass(frozen=True)
class SpendState:
    spent_usd: float  # committed real spend in this period
    held_usd: float  # open reservations (in-flight calls' worst-case cost)
    limit_usd: float
    resets_at: float  # unix time

    @property
    def remaining_usd(self) -> float:
        """limit - spent - held, floored at 0."""
        remaining = to_micro(self.limit_usd) - to_micro(self.spent_usd) - to_micro(self.held_usd)
        return max(0, remaining) / MICRO


class SpendLedger:
    """Budgets: reserve a worst-case cost before a provider call, commit the real cost after.

    The limit is enforced at reservation: spent + held + amount never exceeds it at the moment a hold
    is granted. A commit always records the real cost (the money is gone), so a call that costs
    more than it reserved, or commits after its hold expired, can take spend past the limit; later
    reservations are then denied until the period resets.
    """

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection
        self._state = connection.register_script(_STATE_LUA)
        self._reserve = connection.register_script(_RESERVE_LUA)

    def state(self, scope: str, period: Period, limit_usd: float, now: float | None = None) -> SpendState:
        now = _now(now)
        period_id, resets_at = period_window(period, now)
        spent, held = self._state(keys=[keys.spend_ledger(scope, period_id)], args=[now])
        return SpendState(spent / MICRO, held / MICRO, limit_usd, resets_at)

    def reserve(
        self,
        scope: str,
        period: Period,
        limit_usd: float,
        holder: str,
        amount_usd: float,
        hold_seconds: float,
        now: float | None = None,
    ) -> tuple[bool, SpendState]:
        """Hold ``amount_usd`` for ``holder`` if it fits under the limit; (granted, state after)."""
        _check_non_negative(limit_usd=limit_usd, amount_usd=amount_usd)
        if hold_seconds <= 0:
            raise ValueError(f"hold_seconds must be positive, not {hold_seconds}")
        now = _now(now)
        period_id, resets_at = period_window(period, now)
        key = keys.spend_ledger(scope, period_id)
        amount, limit = to_micro(amount_usd), to_micro(limit_usd)
        args: list[float | str] = [
            now,
            _hold_field(holder),
            amount,
            limit,
            now + hold_seconds,
            _ledger_expiry(resets_at),
        ]
        granted, spent, held = self._reserve(keys=[key], args=args)
        return bool(granted), SpendState(spent / MICRO, held / MICRO, limit_usd, resets_at)

    def commit(
        self,
        pipe: Pipeline,
        scope: str,
        period: Period,
        holder: str,
        actual_usd: float,
        now: float | None = None,
    ) -> None:
        """Queue on the caller's MULTI: drop the holder's hold and add the real cost to the spend.

        The period is the one ``now`` falls in; pass the reservation's time to keep a call that
        straddles a reset in the period it reserved in (otherwise its old hold lapses on its own).
        """
        _check_non_negative(actual_usd=actual_usd)
        if not fits_increment(actual_usd * MICRO):
            raise ValueError(f"actual_usd {actual_usd} is more than one commit may add")
        period_id, resets_at = period_window(period, _now(now))
        key = keys.spend_ledger(scope, period_id)
        pipe.hdel(key, _hold_field(holder))
        pipe.hincrby(key, _SPENT_FIELD, to_micro(actual_usd))
        pipe.expireat(key, _ledger_expiry(resets_at))

    def release(self, scope: str, period: Period, holder: str, now: float | None = None) -> None:
        """Drop a hold without spending (the call failed or was never made)."""
        period_id, _ = period_window(period, _now(now))
        self.connection.hdel(keys.spend_ledger(scope, period_id), _hold_field(holder))


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    count: float  # what the window holds after this decision (requests or tokens)
    limit: int
    retry_after: float  # seconds until the request would fit (0 when allowed)


class RateCounter:
    """Sliding-window counters per minute (requests per minute, tokens per minute).

    The window is kept as 60 buckets of window/60 seconds (one hash per scope, constant memory
    whatever the rate). A hit counts the current bucket and the 60 before it, so everything from
    the last full window is always counted: the limit is never exceeded within any window-long
    span, and a hit is forgotten between 1 and 61/60 windows after it happened (up to one second
    late for a minute). ``retry_after`` is exact for this scheme, rounded up to the millisecond; it
    is at most window + window/60, and the window length when the amount alone exceeds the limit
    (it never fits).
    """

    BUCKETS = 60

    def __init__(self, connection: redis.Redis, window_seconds: float = 60.0) -> None:
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, not {window_seconds}")
        self.connection = connection
        self.window_seconds = window_seconds
        self._bucket_seconds = window_seconds / self.BUCKETS
        self._ttl = math.ceil(2 * window_seconds) + 1
        self._script = connection.register_script(_RATE_LUA)

    def hit(self, scope: str, limit: int, amount: int = 1, now: float | None = None) -> RateDecision:
        """Add ``amount`` and allow if the window's count + amount fits under ``limit``; else deny."""
        return self._run("hit", scope, limit, amount, _now(now))

    def peek(self, scope: str, limit: int, now: float | None = None) -> RateDecision:
        """Would one more unit fit (count < limit)? Changes no count."""
        return self._run("peek", scope, limit, 1, _now(now))

    def add(self, pipe: Pipeline, scope: str, amount: int, now: float | None = None) -> None:
        """Queue an unconditional add on the caller's MULTI (tokens are known only after the call)."""
        _check_non_negative(amount=amount)
        if not fits_increment(amount):
            raise ValueError(f"amount {amount} is more than one commit may add")
        self._script(keys=[self._key(scope)], args=self._args(_now(now), 0, amount, "add"), client=pipe)

    def _run(self, mode: str, scope: str, limit: int, amount: int, now: float) -> RateDecision:
        _check_non_negative(limit=limit, amount=amount)
        args = self._args(now, limit, amount, mode)
        allowed, count, bucket = self._script(keys=[self._key(scope)], args=args)
        retry_after = 0.0 if allowed else self._retry_after(bucket, now)
        return RateDecision(bool(allowed), float(count), limit, retry_after)

    def _key(self, scope: str) -> str:
        return keys.rate_window(scope, self.window_seconds)

    def _args(self, now: float, limit: int, amount: int, mode: str) -> list[str | int]:
        current = math.floor(now / self._bucket_seconds)
        return [current - self.BUCKETS, current, limit, amount, mode, self._ttl]

    def _retry_after(self, bucket: int | None, now: float) -> float:
        if bucket is None:
            return self.window_seconds
        leaves_at = (bucket + self.BUCKETS + 1) * self._bucket_seconds
        return math.ceil((leaves_at - now) * 1000) / 1000


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _hold_field(holder: str) -> str:
    return f"hold:{holder}"


def _ledger_expiry(resets_at: float) -> int:
    """A period's ledger outlives its reset by a day, so late commits and reports still find it."""
    return int(resets_at) + _DAY


def _check_non_negative(**values: float) -> None:
    for name, value in values.items():
        if value < 0 or math.isnan(value):
            raise ValueError(f"{name} must not be negative, not {value}")
