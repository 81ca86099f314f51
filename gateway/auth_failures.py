"""Failed authentications at the API: the per-address throttle, the audit line and the count.

Every failure from a client address (the socket peer, or the client a trusted proxy names:
``api.trusted_proxies``) counts in a one-minute :class:`~gateway.limits.RateCounter` window in
Redis, so every API process shares it. Once an address has ``api.auth_failures_per_minute``
failures in the window, a request from it whose token is missing or unknown gets 429 and
``Retry-After`` instead of 401. The token is still looked up (one HGET), so a valid one passes,
whether or not this API process has seen it: a real service behind the same NAT or proxy as an
attacker keeps working. So the throttle does not cap guesses (a right one works even from a
throttled address); it caps the 401s, the audit lines and the work per failure. Guessing a
256-bit token (``aigw service add``) is out of reach however fast; a hash declared in
services.yaml is only as strong as the token behind it.

The audit log gets at most one line per address per window: the first failure writes one and says
how many failures it stands for since that address's previous line. Every failure and every
throttled request is also counted per minute (``keys.auth_failure_counts``), which
``aigw gateway status`` sums. Neither ever holds the token or any part of its hash.
"""

from __future__ import annotations

import math
import time
import uuid

import redis

from gateway import keys
from gateway.audit import AuditEvent, append_event, request_sha256
from gateway.errors import AuthError, TooManyAuthFailuresError
from gateway.limits import RateCounter

WINDOW_SECONDS = 60.0
#: the audit ``service`` of a failed authentication: not a valid service name, so never a real one
UNAUTHENTICATED = "(unauthenticated)"
_COUNTS_TTL = 2 * 3600  # per-minute counts outlive the hour `aigw gateway status` sums
_UNWRITTEN_TTL = 86_400
_MAX_PATH_CHARS = 200

# KEYS[1] failures not yet in an audit line, KEYS[2] "a line was written this window";
# ARGV: window seconds, TTL of the unwritten count. Returns how many failures a line written now
# stands for (this one included), or 0 when the window already has its line.
_NOTE_LUA = """
local unwritten = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return unwritten
end
return 0
"""


class AuthFailures:
    """What the API does with a failed authentication; one per API process, state in Redis."""

    def __init__(self, connection: redis.Redis, limit_per_minute: int) -> None:
        self.connection = connection
        self.limit = limit_per_minute
        self._window = RateCounter(connection, WINDOW_SECONDS)
        self._note = connection.register_script(_NOTE_LUA)

    def check(self, address: str) -> None:
        """Refuse (TooManyAuthFailuresError) an address that used up its failures in the window."""
        decision = self._window.peek(_scope(address), self.limit)
        if decision.allowed:
            return
        self._count("throttled")
        wait = max(1, math.ceil(decision.retry_after))
        raise TooManyAuthFailuresError(
            f"too many failed authentications from {address} in the last minute; try again in {wait} s",
            retry_after=decision.retry_after,
        )

    def record(self, address: str, method: str, path: str, error: AuthError) -> None:
        """Count one failure; write an audit line if the address has none in this window yet."""
        self._window.hit(_scope(address), self.limit)
        self._count("refused")
        note_keys = [keys.auth_audit_unwritten(address), keys.auth_audit_marker(address)]
        failures = int(self._note(keys=note_keys, args=[int(WINDOW_SECONDS), _UNWRITTEN_TTL]))
        if failures:
            append_event(self.connection, failure_event(address, method, path, error, failures))

    def _count(self, outcome: str) -> None:
        key = keys.auth_failure_counts(_minute(time.time()))
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.hincrby(key, outcome, 1)
            pipe.expire(key, _COUNTS_TTL)
            pipe.execute()


def failure_event(address: str, method: str, path: str, error: AuthError, failures: int) -> AuditEvent:
    """The audit line of failed authentications: who (the address), where, why; never the token."""
    path = path[:_MAX_PATH_CHARS]
    where = f"{method} {path}"
    return AuditEvent(
        job_id=f"auth-failed-{uuid.uuid4().hex}",
        attempt=1,
        service=UNAUTHENTICATED,
        model=None,
        provider=None,
        provider_model=None,
        deployment=None,
        status="refused",
        queue="",
        queue_wait_ms=0,
        latency_ms=None,
        total_ms=0,
        request_sha256=request_sha256({"method": method, "path": path}),
        error_type="auth_failed",
        error_message=(
            f"{failures} failed authentication(s) from {address} since this address's last such line;"
            f" this one: {where}: {error.message}"
        ),
        calls=0,
    )


def recent_counts(connection: redis.Redis, minutes: int = 60, now: float | None = None) -> dict[str, int]:
    """Failed ("refused") and throttled authentications over the last ``minutes``, all addresses."""
    last = _minute(time.time() if now is None else now)
    with connection.pipeline(transaction=False) as pipe:
        for minute in range(last - minutes + 1, last + 1):
            pipe.hgetall(keys.auth_failure_counts(minute))
        per_minute: list[dict[bytes, bytes]] = pipe.execute()
    totals = {"refused": 0, "throttled": 0}
    for counts in per_minute:
        for outcome, value in counts.items():
            name = str(keys.text(outcome))
            totals[name] = totals.get(name, 0) + int(value)
    return totals


def _scope(address: str) -> str:
    return f"auth-failures:{address}"


def _minute(now: float) -> int:
    return math.floor(now / 60)
