"""Authentication under attack (issue 10 §5): the per-address throttle, the bounded token cache,
the audit line of failures (never the token) and revocation within the cache's TTL."""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path

import httpx
import pytest
import redis
from fastapi import FastAPI

from gateway import keys
from gateway.services import ServiceRegistry
from gateway.status import stack_status
from tests.integration.harness import (
    SERVICE,
    Api,
    ConfigFactory,
    StartApi,
    audit_events,
    wait_until,
    with_api_settings,
)

ADDRESS = "127.0.0.1"  # the socket peer every test client connects from
NO_JOB = "/v1/jobs/no-such-job"  # an authenticated route: 404 with a valid token, 401 without


def _random_token() -> str:
    return "aigw_" + secrets.token_urlsafe(32)


def _get(api: Api, token: str) -> httpx.Response:
    with api.client(token) as client:
        return client.get(NO_JOB)


def _fail(api: Api, times: int) -> list[str]:
    """Send ``times`` random tokens, each refused with 401; returns them."""
    tokens = [_random_token() for _ in range(times)]
    with api.client() as client:
        for token in tokens:
            assert client.get(NO_JOB, headers={"Authorization": f"Bearer {token}"}).status_code == 401
    return tokens


def _registry(api: Api) -> ServiceRegistry:
    app = api.server.config.app
    assert isinstance(app, FastAPI)
    registry = app.state.gateway.services
    assert isinstance(registry, ServiceRegistry)
    return registry


def _assert_throttled(response: httpx.Response) -> None:
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "too_many_auth_failures"
    assert 1 <= int(response.headers["Retry-After"]) <= 61


def test_auth_failures_past_the_limit_get_429_with_retry_after(
    gateway_config: ConfigFactory, start_api: StartApi
) -> None:
    api = start_api(gateway_config())
    limit = api.config.gateway.api.auth_failures_per_minute

    _fail(api, limit)

    _assert_throttled(_get(api, _random_token()))
    with httpx.Client(base_url=api.url) as anonymous:  # no token at all is a failure too
        _assert_throttled(anonymous.get(NO_JOB))


@pytest.mark.parametrize("cache_seconds", [5.0, 0.0], ids=["cached", "looked-up-every-time"])
def test_auth_throttle_lets_valid_tokens_through_proven_or_not(
    config_dir: Path,
    gateway_config: ConfigFactory,
    start_api: StartApi,
    redis_client: redis.Redis,
    cache_seconds: float,
) -> None:
    api = start_api(with_api_settings(config_dir, gateway_config, token_cache_seconds=cache_seconds))
    assert _get(api, api.token).status_code == 404  # proven valid before the attack
    unproven = ServiceRegistry(redis_client, api.config).create_token(SERVICE)

    _fail(api, api.config.gateway.api.auth_failures_per_minute)

    assert _get(api, api.token).status_code == 404  # the real service on the same address works
    assert _get(api, unproven).status_code == 404  # valid, never seen by this process: looked up
    _assert_throttled(_get(api, _random_token()))  # an unknown one is still refused


def test_a_token_created_after_the_throttle_works_from_the_throttled_address(
    gateway_config: ConfigFactory, start_api: StartApi, redis_client: redis.Redis
) -> None:
    """After a restart, on another API process, after eviction or for a new service: a valid
    token this process never saw is not locked out by someone else's guesses from its NAT."""
    config = gateway_config()
    first, second = start_api(config), start_api(config)
    _fail(first, config.gateway.api.auth_failures_per_minute)
    _assert_throttled(_get(second, _random_token()))

    brand_new = ServiceRegistry(redis_client, config).create_token(SERVICE)

    assert _get(second, brand_new).status_code == 404
    assert _get(first, brand_new).status_code == 404
    with httpx.Client(base_url=second.url) as anonymous:  # a missing token is still throttled
        _assert_throttled(anonymous.get(NO_JOB))
    _assert_throttled(_get(second, _random_token()))


def test_forged_x_forwarded_for_does_not_escape_the_throttle(
    gateway_config: ConfigFactory, start_api: StartApi, redis_client: redis.Redis
) -> None:
    api = start_api(gateway_config())
    limit = api.config.gateway.api.auth_failures_per_minute
    statuses = []
    with api.client() as client:
        for i in range(limit + 5):
            forged = {"Authorization": f"Bearer {_random_token()}", "X-Forwarded-For": f"198.51.100.{i + 1}"}
            statuses.append(client.get(NO_JOB, headers=forged).status_code)

    assert statuses == [401] * limit + [429] * 5
    lines = [e for e in audit_events(redis_client) if e["error_type"] == "auth_failed"]
    assert len(lines) == 1 and ADDRESS in lines[0]["error_message"]  # the socket peer, one line


def test_x_forwarded_for_is_the_client_address_behind_a_trusted_proxy(
    config_dir: Path, gateway_config: ConfigFactory, start_api: StartApi
) -> None:
    api = start_api(with_api_settings(config_dir, gateway_config, trusted_proxies=[ADDRESS]))
    limit = api.config.gateway.api.auth_failures_per_minute

    def get(client_address: str) -> int:
        with api.client() as client:
            headers = {"Authorization": f"Bearer {_random_token()}", "X-Forwarded-For": client_address}
            return client.get(NO_JOB, headers=headers).status_code

    assert [get("203.0.113.7") for _ in range(limit)] == [401] * limit
    assert get("203.0.113.7") == 429
    assert get("203.0.113.8") == 401  # another client behind the same proxy


def test_auth_throttle_holds_across_api_processes(gateway_config: ConfigFactory, start_api: StartApi) -> None:
    config = gateway_config()
    first, second = start_api(config), start_api(config)

    _fail(first, config.gateway.api.auth_failures_per_minute)

    _assert_throttled(_get(second, _random_token()))


def test_token_cache_stays_bounded_under_random_tokens(
    config_dir: Path, gateway_config: ConfigFactory, start_api: StartApi, redis_client: redis.Redis
) -> None:
    size = 4
    config = with_api_settings(
        config_dir, gateway_config, token_cache_size=size, auth_failures_per_minute=10_000
    )
    api = start_api(config)
    registry = _registry(api)

    _fail(api, 300)
    assert len(registry.cache) == 0  # invalid tokens are never cached

    tokens = [ServiceRegistry(redis_client, config).create_token(SERVICE) for _ in range(size + 3)]
    for token in tokens:
        assert _get(api, token).status_code == 404
    assert len(registry.cache) == size


def test_failed_authentication_is_audited_once_per_window_without_the_token(
    gateway_config: ConfigFactory, start_api: StartApi, redis_client: redis.Redis
) -> None:
    api = start_api(gateway_config())
    tokens = _fail(api, 10)

    lines = [e for e in audit_events(redis_client) if e["error_type"] == "auth_failed"]
    assert len(lines) == 1  # ten failures in one window: one line
    assert lines[0]["status"] == "refused"
    assert ADDRESS in lines[0]["error_message"] and NO_JOB in lines[0]["error_message"]

    redis_client.delete(keys.auth_audit_marker(ADDRESS))  # the window ends
    tokens += _fail(api, 1)
    lines = [e for e in audit_events(redis_client) if e["error_type"] == "auth_failed"]
    assert len(lines) == 2
    assert lines[1]["error_message"].startswith("10 failed authentication(s)")  # 9 unwritten + this

    raw = repr(redis_client.xrange(keys.AUDIT_STREAM))
    for token in tokens:
        digest = hashlib.sha256(token.encode()).hexdigest()
        assert token not in raw and token[5:17] not in raw
        assert digest[:12] not in raw
    assert stack_status(redis_client, api.config)["auth_failures_last_hour"]["refused"] == 11


def test_revoked_token_stops_working_within_the_cache_ttl(
    config_dir: Path, gateway_config: ConfigFactory, start_api: StartApi, redis_client: redis.Redis
) -> None:
    ttl = 1.0
    api = start_api(with_api_settings(config_dir, gateway_config, token_cache_seconds=ttl))
    assert _get(api, api.token).status_code == 404  # cached now

    revoked_at = time.monotonic()
    ServiceRegistry(redis_client, api.config).remove(SERVICE)

    wait_until(lambda: _get(api, api.token).status_code == 401, "the revoked token refused", ttl + 1.0)
    assert time.monotonic() - revoked_at <= ttl + 1.0
