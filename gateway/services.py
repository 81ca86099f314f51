"""Service tokens: who is calling. Tokens are shown once and stored only as SHA-256 hashes.

Redis holds ``hash -> service`` for every token valid without an expiry (so every API replica
sees a new or revoked token at once, in one HGET), each token's record (:func:`keys.token_record`:
service, created, last used, expiry) and each service's set of hashes for rotation;
services.yaml may also declare hashes (compose stacks). ``rotate --grace`` moves the old hashes
out of ``hash -> service`` and gives their records a Redis TTL, so they stop working on time
with no aigw process running. The API keeps the hashes it found valid in a bounded LRU
(:class:`TokenCache`): an entry answers without Redis for ``api.token_cache_seconds`` (never past
the token's expiry), so a revoked token stops working within that. Invalid tokens are never
cached: a flood of random tokens costs lookups, never memory. The API's throttle
(gateway/auth_failures.py) refuses an address's unknown tokens with 429 once it failed too often,
and still lets any valid token through.

Tokens are found by their SHA-256, never compared with ``==``: a caller controls the token, not
its digest, so the time a hash-table probe takes says nothing about a stored token. A digest
checked against a stored one goes through :func:`same_digest` (constant time).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from gateway import keys
from gateway.config import Config
from gateway.errors import AuthError, NotFoundError, ValidationError

TOKEN_PREFIX = "aigw_"
#: how often, at most, one API process writes one token's ``last_used_at``: the last use shown
#: is approximate to this (it rides on a cache refresh, never a write per request)
LAST_USED_SECONDS = 60.0
#: the longest ``rotate --grace`` (a forgotten old token should not live on for years)
MAX_GRACE_SECONDS = 365 * 86_400
#: how many hex digits of a token's SHA-256 are its public id (never the whole hash)
ID_LENGTH = 8

_GRACE = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}

#: the lookup behind every cache miss or refresh, one round trip: a live token's service, else
#: a token in its grace (service and expiry from its record); when ARGV[2] is set, the token's
#: last use is noted in the same call, and only if the token is valid.
_LOOKUP = """
local service = redis.call('HGET', KEYS[1], ARGV[1])
local expires = false
if not service then
  local record = redis.call('HMGET', KEYS[2], 'service', 'expires_at')
  service = record[1]
  expires = record[2]
  if not service then return false end
end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], 'last_used_at', ARGV[2]) end
return {service, expires}
"""

#: puts one old token into its grace: out of the live hash, its record given the expiry (the
#: earlier one, if a previous rotation already gave it one) and a TTL. 0: it was already gone.
_RETIRE = """
local live = redis.call('HDEL', KEYS[1], ARGV[1]) == 1
local current = redis.call('HGET', KEYS[2], 'expires_at')
if not live and not current then return 0 end
local ends = tonumber(ARGV[3])
if current and tonumber(current) < ends then ends = tonumber(current) end
redis.call('HSET', KEYS[2], 'service', ARGV[2], 'expires_at', string.format('%.3f', ends))
redis.call('PEXPIREAT', KEYS[2], math.ceil(ends * 1000))
return 1
"""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def same_digest(a: str, b: str) -> bool:
    """Whether two hex digests are equal, in time that does not depend on where they differ."""
    return hmac.compare_digest(a.encode(), b.encode())


def parse_grace(text: str) -> float:
    """``30s``, ``15m``, ``1h``, ``2d`` or ``0`` as seconds; a bad value raises ValidationError
    with a message that can be shown as is."""
    value = text.strip()
    if value == "0":
        return 0.0
    match = _GRACE.fullmatch(value)
    if match is None:
        raise ValidationError(
            f"--grace {text!r}: give a duration like 30s, 15m, 1h or 2d (0 revokes at once)"
        )
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > MAX_GRACE_SECONDS:
        raise ValidationError(f"--grace {text!r}: at most 365d")
    return float(seconds)


@dataclass(frozen=True)
class TokenInfo:
    """What ``aigw service list`` shows of one token: never the token, never its whole hash.

    Times are unix seconds; ``created_at`` is None for a token made before records existed (or
    declared in services.yaml), ``last_used_at`` None until an API process notes a use.
    """

    service: str
    id: str
    created_at: float | None
    last_used_at: float | None
    expires_at: float | None
    declared: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "id": self.id,
            "created_at": _iso(self.created_at),
            "last_used_at": _iso(self.last_used_at),
            "expires_at": _iso(self.expires_at),
            "declared": self.declared,
        }


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _stamp(wall: float) -> str:
    return f"{wall:.3f}"


def _number(value: bytes | str | None) -> float | None:
    text = keys.text(value)
    return float(text) if text else None


@dataclass(frozen=True)
class Proven:
    """A token hash a lookup found valid: ``fresh`` while it may answer without a new lookup;
    ``noted_at`` (monotonic) is when this process last wrote its last use."""

    service: str
    fresh: bool
    noted_at: float


class TokenCache:
    """A bounded LRU of token hashes proven valid (never of invalid ones).

    An entry answers without Redis for ``seconds``, and never past the token's expiry; after
    that the next use looks it up again (and drops it if it was revoked or expired).
    """

    def __init__(self, size: int, seconds: float) -> None:
        if size < 1 or seconds < 0:
            raise ValueError(f"a token cache needs size >= 1 and seconds >= 0, not {size}, {seconds}")
        self.size = size
        self.seconds = seconds
        #: digest -> (service, fresh until, last use noted at), both times monotonic
        self._entries: OrderedDict[str, tuple[str, float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: str) -> Proven | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        self._entries.move_to_end(digest)
        return Proven(entry[0], entry[1] > time.monotonic(), entry[2])

    def put(
        self, digest: str, service: str, *, expires_at: float | None = None, noted_at: float = 0.0
    ) -> None:
        """Prove ``digest`` valid for ``seconds``, or until ``expires_at`` (unix time) if sooner."""
        now = time.monotonic()
        seconds = (
            self.seconds if expires_at is None else min(self.seconds, max(0.0, expires_at - time.time()))
        )
        self._entries[digest] = (service, now + seconds, noted_at)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def discard(self, digest: str) -> None:
        self._entries.pop(digest, None)


class ServiceRegistry:
    def __init__(self, connection: redis.Redis, config: Config) -> None:
        self.connection = connection
        self.config = config
        self._declared = {h: name for name, svc in config.services.services.items() for h in svc.token_sha256}
        api = config.gateway.api
        #: public so that operators' tools and tests can see it stays bounded (``len(cache)``)
        self.cache = TokenCache(api.token_cache_size, api.token_cache_seconds)
        self._lookup = connection.register_script(_LOOKUP)
        self._retire = connection.register_script(_RETIRE)

    def authenticate(self, token: str | None) -> str:
        """The service a token belongs to, or AuthError (never says which part was wrong).

        A token proven valid less than ``api.token_cache_seconds`` ago (and not past its expiry)
        answers from memory, one dict lookup; any other is looked up in Redis (one script call)
        or the hashes services.yaml declares. A lookup notes the token's last use when this
        process has not done so for ``LAST_USED_SECONDS``.
        """
        if not token:
            raise AuthError("missing service token: send 'Authorization: Bearer <token>' or 'x-api-key'")
        digest = hash_token(token)
        proven = self.cache.get(digest)
        if proven is not None and proven.fresh:
            return proven.service
        now = time.monotonic()
        noted_at = proven.noted_at if proven is not None else None
        note = noted_at is None or now - noted_at >= LAST_USED_SECONDS
        found = self._find(digest, note)
        if found is None:
            self.cache.discard(digest)
            raise AuthError("invalid service token")
        service, expires_at = found
        self.cache.put(
            digest, service, expires_at=expires_at, noted_at=now if note or noted_at is None else noted_at
        )
        return service

    def _find(self, digest: str, note: bool) -> tuple[str, float | None] | None:
        """(service, expiry) of a valid token's digest, noting its last use if ``note``; else None."""
        wall = time.time()
        declared = self._declared.get(digest)
        if declared is not None:
            if note:
                with contextlib.suppress(redis.RedisError):  # best effort: it works without Redis
                    self.connection.hset(keys.token_record(digest), "last_used_at", _stamp(wall))
            return declared, None
        reply = self._lookup(
            keys=[keys.TOKENS, keys.token_record(digest)], args=[digest, _stamp(wall) if note else ""]
        )
        if not reply:
            return None
        expires_at = _number(reply[1])
        if expires_at is not None and expires_at <= wall:
            return None
        return str(keys.text(reply[0])), expires_at

    def create_token(self, service: str) -> str:
        """A new token for ``service`` (which may already have others); returns it once."""
        check_service_name(service)
        token = new_token()
        digest = hash_token(token)
        with self.connection.pipeline() as pipe:
            pipe.hset(keys.TOKENS, digest, service)
            pipe.hset(
                keys.token_record(digest), mapping={"service": service, "created_at": _stamp(time.time())}
            )
            pipe.sadd(keys.service_tokens(service), digest)
            pipe.execute()
        return token

    def has_tokens(self, service: str) -> bool:
        declared = any(name == service for name in self._declared.values())
        return declared or bool(self.connection.scard(keys.service_tokens(service)))

    def rotate(self, service: str, grace: float = 0.0) -> str:
        """A fresh token for ``service``; its Redis-held tokens stop working ``grace`` seconds
        from now (at once with 0; a token already in an earlier grace keeps the sooner end).

        Like ``remove``, a service with no tokens at all is refused: a typo must not create a
        service. One declared only in services.yaml gets its first Redis token.
        """
        if not self.has_tokens(service):
            raise NotFoundError(
                f"service {service!r} has no tokens (`aigw service add {service}` creates one)"
            )
        if grace <= 0:
            self.remove(service, missing_ok=True)
            return self.create_token(service)
        old = self._digests(service)
        token = self.create_token(service)  # first: a failure below leaves the old ones working
        fresh = hash_token(token)
        ends = _stamp(time.time() + grace)
        for digest in old:
            if same_digest(digest, fresh):
                continue
            record = keys.token_record(digest)
            if not self._retire(keys=[keys.TOKENS, record], args=[digest, service, ends]):
                self.connection.srem(keys.service_tokens(service), digest)  # its grace is over
        return token

    def remove(self, service: str, *, missing_ok: bool = False) -> int:
        """Revoke every Redis-held token of ``service`` at once, in a grace or not; how many."""
        digests = self._digests(service)
        if not digests and not missing_ok:
            raise NotFoundError(
                f"service {service!r} has no tokens (`aigw service add {service}` creates one)"
            )
        live = len([t for t in self._infos(service, digests, time.time()) if not t.declared])
        with self.connection.pipeline() as pipe:
            if digests:
                pipe.hdel(keys.TOKENS, *digests)
                pipe.delete(*(keys.token_record(d) for d in digests))
            pipe.delete(keys.service_tokens(service))
            pipe.execute()
        return live

    def tokens(self) -> list[TokenInfo]:
        """Every valid token (Redis-held and declared), by service then creation."""
        now = time.time()
        services = {str(keys.text(s)) for s in self.connection.hvals(keys.TOKENS)} | set(
            self.config.services.services
        )
        found: list[TokenInfo] = []
        for service in services:
            found += self._infos(service, self._digests(service), now)
        declared = list(self._declared.items())
        with self.connection.pipeline(transaction=False) as pipe:
            for digest, _ in declared:
                pipe.hget(keys.token_record(digest), "last_used_at")
            used = pipe.execute()
        for (digest, service), last in zip(declared, used, strict=True):
            found.append(TokenInfo(service, digest[:ID_LENGTH], None, _number(last), None, declared=True))
        return sorted(found, key=lambda t: (t.service, t.created_at or 0.0, t.id))

    def _digests(self, service: str) -> list[str]:
        return [str(keys.text(d)) for d in self.connection.smembers(keys.service_tokens(service))]

    def _infos(self, service: str, digests: list[str], now: float) -> list[TokenInfo]:
        """The still valid tokens among a service's digests (a grace that ended is skipped)."""
        with self.connection.pipeline(transaction=False) as pipe:
            for digest in digests:
                pipe.hexists(keys.TOKENS, digest)
                pipe.hmget(keys.token_record(digest), "created_at", "last_used_at", "expires_at")
            replies = pipe.execute()
        infos = []
        for i, digest in enumerate(digests):
            live, (created, used, expires) = replies[2 * i], replies[2 * i + 1]
            expires_at = None if live else _number(expires)
            if not live and (expires_at is None or expires_at <= now):
                continue
            infos.append(TokenInfo(service, digest[:ID_LENGTH], _number(created), _number(used), expires_at))
        return infos


def check_service_name(service: str) -> None:
    """ValidationError unless ``service`` can name a service (it becomes part of Redis keys)."""
    if not service or not all(c.isalnum() or c in "-_." for c in service) or len(service) > 64:
        raise ValidationError("a service name is 1-64 letters, digits, '-', '_' or '.'")
