"""Rotating service tokens with a grace period, and a listing that shows tokens without revealing
them (issue 16): against a real Redis, real API processes and the aigw command."""

from __future__ import annotations

import json
import time
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from gateway import keys
from gateway.cli import app
from gateway.services import ServiceRegistry, hash_token, new_token
from tests.integration.harness import SERVICE, Api, ConfigFactory, StartApi, wait_until, with_api_settings

runner = CliRunner()
WIDE = {"COLUMNS": "200"}  # rich tables fold long cells at the default 80 columns
NO_JOB = "/v1/jobs/no-such-job"  # an authenticated route: 404 with a valid token, 401 without
CACHE_SECONDS = 0.5


@pytest.fixture
def cli_env(redis_url: str, config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("AIGW_CONFIG", str(config_dir))


def _status(api: Api, token: str) -> int:
    with api.client(token) as client:
        return client.get(NO_JOB).status_code


def _refused(api: Api, token: str) -> bool:
    return _status(api, token) == 401


def _rotate(*args: str) -> str:
    result = runner.invoke(app, ["service", "rotate", SERVICE, *args])
    assert result.exit_code == 0, result.output
    return result.output.strip()


def _listed() -> list[dict[str, Any]]:
    result = runner.invoke(app, ["service", "list", "--json"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def _unix(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_rotate_with_grace_keeps_the_old_token_until_the_grace_ends_on_every_api_process(
    cli_env: None, config_dir: Path, gateway_config: ConfigFactory, start_api: StartApi
) -> None:
    config = with_api_settings(config_dir, gateway_config, token_cache_seconds=CACHE_SECONDS)
    first, second = start_api(config), start_api(config)
    old = first.token
    assert _status(first, old) == _status(second, old) == 404  # cached on both

    grace = 3.0
    ends = time.time() + grace
    new = _rotate("--grace", "3s")

    in_grace = [_status(api, token) for api in (first, second) for token in (old, new)]
    assert time.time() < ends, "four requests took the whole grace: nothing was shown"
    assert in_grace == [404] * 4

    for api in (first, second):
        wait_until(partial(_refused, api, old), "the old token refused", grace + CACHE_SECONDS + 5)
        assert _status(api, new) == 404
    assert time.time() >= ends  # refused once the grace was over, not before
    with first.client(old) as client:
        refused = client.get(NO_JOB)
    assert refused.json()["error"]["type"] == "authentication_error"  # the API's error envelope
    assert _status(second, second.token) == 401  # the other old token of the service went too


def test_rotate_without_grace_revokes_the_old_token_within_the_cache_seconds(
    cli_env: None, config_dir: Path, gateway_config: ConfigFactory, start_api: StartApi
) -> None:
    api = start_api(with_api_settings(config_dir, gateway_config, token_cache_seconds=CACHE_SECONDS))
    assert _status(api, api.token) == 404  # cached now

    revoked_at = time.monotonic()
    new = _rotate()

    wait_until(lambda: _status(api, api.token) == 401, "the rotated token refused", CACHE_SECONDS + 2)
    assert time.monotonic() - revoked_at <= CACHE_SECONDS + 2
    assert _status(api, new) == 404


def test_service_list_shows_ids_times_and_expiry_and_never_a_token_or_its_hash(
    cli_env: None, gateway_config: ConfigFactory, start_api: StartApi
) -> None:
    before = time.time()
    api = start_api(gateway_config())
    (entry,) = [t for t in _listed() if t["service"] == SERVICE]
    assert entry["id"] == hash_token(api.token)[:8]
    assert before - 1 <= _unix(entry["created_at"]) <= time.time() + 1
    assert entry["last_used_at"] is None and entry["expires_at"] is None

    used_at = time.time()
    assert _status(api, api.token) == 404
    (entry,) = [t for t in _listed() if t["service"] == SERVICE]
    assert used_at - 1 <= _unix(entry["last_used_at"]) <= time.time() + 1

    rotated_at = time.time()
    new = _rotate("--grace", "1h")
    listed = {t["id"]: t for t in _listed() if t["service"] == SERVICE}
    old_id, new_id = hash_token(api.token)[:8], hash_token(new)[:8]
    assert set(listed) == {old_id, new_id}
    assert rotated_at + 3600 - 1 <= _unix(listed[old_id]["expires_at"]) <= time.time() + 3600 + 1
    assert listed[new_id]["expires_at"] is None

    table = runner.invoke(app, ["service", "list"], env=WIDE).output
    assert old_id in table and new_id in table and "never" in table
    raw = table + runner.invoke(app, ["service", "list", "--json"]).output
    for token in (api.token, new):
        assert token not in raw and token[len("aigw_") :][:12] not in raw
        assert hash_token(token) not in raw and hash_token(token)[:12] not in raw


def test_a_token_made_before_records_still_works_and_is_listed_with_unknown_creation(
    cli_env: None, gateway_config: ConfigFactory, start_api: StartApi, redis_client: redis.Redis
) -> None:
    api = start_api(gateway_config())
    legacy = new_token()
    digest = hash_token(legacy)
    redis_client.hset(keys.TOKENS, digest, "legacy")  # what `service add` wrote before this change
    redis_client.sadd(keys.service_tokens("legacy"), digest)

    assert _status(api, legacy) == 404
    (entry,) = [t for t in _listed() if t["service"] == "legacy"]
    assert entry["id"] == digest[:8] and entry["created_at"] is None and entry["last_used_at"] is not None
    assert "unknown" in runner.invoke(app, ["service", "list"], env=WIDE).output

    assert runner.invoke(app, ["service", "rotate", "legacy", "--grace", "1h"]).exit_code == 0
    assert _status(api, legacy) == 404  # in its grace now
    assert ServiceRegistry(redis_client, api.config).remove("legacy") == 2
    wait_until(lambda: _status(api, legacy) == 401, "the removed token refused", 10)


@pytest.mark.parametrize("value", ["soon", "1y", "-5m", "1.5h", "400d"])
def test_a_bad_grace_is_one_line_naming_it_and_rotates_nothing(
    cli_env: None, gateway_config: ConfigFactory, start_api: StartApi, value: str
) -> None:
    api = start_api(gateway_config())

    result = runner.invoke(app, ["service", "rotate", SERVICE, f"--grace={value}"])

    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and repr(value) in lines[0], result.output
    assert _status(api, api.token) == 404
    assert len([t for t in _listed() if t["service"] == SERVICE]) == 1
