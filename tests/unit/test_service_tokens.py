"""The pure parts of service tokens: the --grace durations and the cache's respect for expiry."""

from __future__ import annotations

import time

import pytest

from gateway.errors import ValidationError
from gateway.services import TokenCache, parse_grace, same_digest


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("30s", 30.0), ("15m", 900.0), ("1h", 3600.0), ("2d", 172_800.0), (" 1h ", 3600.0)],
)
def test_grace_durations(text: str, seconds: float) -> None:
    assert parse_grace(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "1y", "1.5h", "-5m", "h", "366d"])
def test_a_bad_grace_names_the_value(text: str) -> None:
    with pytest.raises(ValidationError, match="--grace"):
        parse_grace(text)


def test_a_cached_token_is_never_fresh_past_its_expiry() -> None:
    cache = TokenCache(size=4, seconds=60)
    cache.put("expired", "svc", expires_at=time.time() - 1)
    cache.put("later", "svc", expires_at=time.time() + 3600)
    cache.put("forever", "svc")

    assert [(p.service, p.fresh) for p in map(cache.get, ["expired", "later", "forever"]) if p] == [
        ("svc", False),
        ("svc", True),
        ("svc", True),
    ]


def test_same_digest() -> None:
    assert same_digest("ab" * 32, "ab" * 32)
    assert not same_digest("ab" * 32, "ab" * 31 + "ac")
