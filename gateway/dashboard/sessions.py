"""Who is looking at the dashboard: one-time login links and the sessions they open.

``aigw dashboard`` asks for a link (:func:`create_login`): a random token whose SHA-256 alone is
kept in Redis, for a few minutes. The page posts it back once (:func:`redeem_login`, a GETDEL, so
a second use finds nothing) and gets a session: another random value, sent to the browser as an
HttpOnly cookie and kept in Redis only as its hash, with a TTL. A service may also open a session
with its own token, which then sees only that service's jobs. Neither value is ever logged or put
in a page.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass

import redis

from gateway import keys
from gateway.errors import AuthError

LINK_PREFIX = "aigwl_"
#: the one-time link lives this long unless ``api.dashboard_link_seconds`` says otherwise
DEFAULT_LINK_SECONDS = 300.0


@dataclass(frozen=True)
class Viewer:
    """Whose session it is: the operator (``service`` None, sees everything) or one service."""

    service: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.service is None

    def describe(self) -> dict[str, str | None]:
        return {"role": "operator" if self.is_operator else "service", "service": self.service}


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _expiry_ms(seconds: float) -> int:
    if seconds <= 0:
        raise ValueError(f"a dashboard link or session lasts more than 0 seconds, not {seconds}")
    return max(1, int(seconds * 1000))


def create_login(connection: redis.Redis, seconds: float = DEFAULT_LINK_SECONDS) -> str:
    """A new one-time operator login token, valid ``seconds``; only its hash is stored."""
    token = LINK_PREFIX + secrets.token_urlsafe(32)
    record = {"role": "operator", "expires_at": time.time() + seconds}
    connection.set(keys.dashboard_login(_digest(token)), json.dumps(record), px=_expiry_ms(seconds))
    return token


def redeem_login(connection: redis.Redis, token: str) -> Viewer:
    """The viewer a login token was made for, once: the record is deleted as it is read."""
    raw = connection.getdel(keys.dashboard_login(_digest(token))) if token.startswith(LINK_PREFIX) else None
    record = json.loads(raw) if raw else None
    # Redis expires the key; the recorded expiry also holds should a key outlive its TTL (a restore)
    if not isinstance(record, dict) or float(record.get("expires_at", 0)) <= time.time():
        raise AuthError(
            "this dashboard link was used already or has expired: "
            "`aigw dashboard --print-url` prints a new one"
        )
    return Viewer()


def open_session(connection: redis.Redis, viewer: Viewer, seconds: float) -> str:
    """A new session for ``viewer``: the cookie value, of which Redis keeps only the hash."""
    session = secrets.token_urlsafe(32)
    record = {"service": viewer.service, "expires_at": time.time() + seconds}
    connection.set(keys.dashboard_session(_digest(session)), json.dumps(record), px=_expiry_ms(seconds))
    return session


def session_viewer(connection: redis.Redis, session: str | None) -> Viewer | None:
    """Whose live session the cookie value is, or None."""
    if not session or len(session) > 128:
        return None
    raw = connection.get(keys.dashboard_session(_digest(session)))
    record = json.loads(raw) if raw else None
    if not isinstance(record, dict) or float(record.get("expires_at", 0)) <= time.time():
        return None
    service = record.get("service")
    return Viewer(str(service) if service is not None else None)


def close_session(connection: redis.Redis, session: str | None) -> None:
    if session and len(session) <= 128:
        connection.delete(keys.dashboard_session(_digest(session)))
