"""Service tokens: who is calling. Tokens are shown once and stored only as SHA-256 hashes.

Redis holds ``hash -> service`` (so every API replica sees a new or revoked token at once) plus
each service's set of hashes for rotation; services.yaml may also declare hashes (compose
stacks). The API keeps the hashes it found valid in a bounded LRU (:class:`TokenCache`): an entry
answers without Redis for ``api.token_cache_seconds``, so a revoked token stops working within
that. Invalid tokens are never cached: a flood of random tokens costs lookups, never memory. The
API's throttle (gateway/auth_failures.py) refuses an address's unknown tokens with 429 once it
failed too often, and still lets any valid token through.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

import redis

from gateway import keys
from gateway.config import Config
from gateway.errors import AuthError, NotFoundError, ValidationError

TOKEN_PREFIX = "aigw_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Proven:
    """A token hash a lookup found valid: ``fresh`` while it may answer without a new lookup."""

    service: str
    fresh: bool


class TokenCache:
    """A bounded LRU of token hashes proven valid (never of invalid ones).

    An entry answers without Redis for ``seconds``; after that the next use looks it up again
    (and drops it if it was revoked).
    """

    def __init__(self, size: int, seconds: float) -> None:
        if size < 1 or seconds < 0:
            raise ValueError(f"a token cache needs size >= 1 and seconds >= 0, not {size}, {seconds}")
        self.size = size
        self.seconds = seconds
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: str) -> Proven | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        self._entries.move_to_end(digest)
        return Proven(entry[0], entry[1] > time.monotonic())

    def put(self, digest: str, service: str) -> None:
        self._entries[digest] = (service, time.monotonic() + self.seconds)
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

    def authenticate(self, token: str | None) -> str:
        """The service a token belongs to, or AuthError (never says which part was wrong).

        A token proven valid less than ``api.token_cache_seconds`` ago answers from memory; any
        other is looked up in Redis (one HGET) or the hashes services.yaml declares.
        """
        if not token:
            raise AuthError("missing service token: send 'Authorization: Bearer <token>' or 'x-api-key'")
        digest = hash_token(token)
        proven = self.cache.get(digest)
        if proven is not None and proven.fresh:
            return proven.service
        service = self._declared.get(digest) or keys.text(self.connection.hget(keys.TOKENS, digest))
        if service is None:
            self.cache.discard(digest)
            raise AuthError("invalid service token")
        self.cache.put(digest, service)
        return service

    def create_token(self, service: str) -> str:
        """A new token for ``service`` (which may already have others); returns it once."""
        _check_name(service)
        token = new_token()
        digest = hash_token(token)
        with self.connection.pipeline() as pipe:
            pipe.hset(keys.TOKENS, digest, service)
            pipe.sadd(keys.service_tokens(service), digest)
            pipe.execute()
        return token

    def has_tokens(self, service: str) -> bool:
        declared = any(name == service for name in self._declared.values())
        return declared or bool(self.connection.scard(keys.service_tokens(service)))

    def rotate(self, service: str) -> str:
        """Revoke every Redis-held token of ``service`` and return a fresh one.

        Like ``remove``, a service with no tokens at all is refused: a typo must not create a
        service. One declared only in services.yaml gets its first Redis token.
        """
        if not self.has_tokens(service):
            raise NotFoundError(
                f"service {service!r} has no tokens (`aigw service add {service}` creates one)"
            )
        self.remove(service, missing_ok=True)
        return self.create_token(service)

    def remove(self, service: str, *, missing_ok: bool = False) -> int:
        digests = [str(keys.text(d)) for d in self.connection.smembers(keys.service_tokens(service))]
        if not digests and not missing_ok:
            raise NotFoundError(
                f"service {service!r} has no tokens (`aigw service add {service}` creates one)"
            )
        with self.connection.pipeline() as pipe:
            if digests:
                pipe.hdel(keys.TOKENS, *digests)
            pipe.delete(keys.service_tokens(service))
            pipe.execute()
        return len(digests)

    def list(self) -> dict[str, int]:
        """Service name -> number of live tokens (configured services with none show 0)."""
        counts = {name: 0 for name in self.config.services.services}
        for service in self.connection.hvals(keys.TOKENS):
            name = str(keys.text(service))
            counts[name] = counts.get(name, 0) + 1
        for name in self._declared.values():
            counts[name] = counts.get(name, 0) + 1
        return counts


def _check_name(service: str) -> None:
    if not service or not all(c.isalnum() or c in "-_." for c in service) or len(service) > 64:
        raise ValidationError("a service name is 1-64 letters, digits, '-', '_' or '.'")
