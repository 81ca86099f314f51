"""Budgets and rate limits through the real API and workers, including several worker processes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
import redis

from gateway.config import BudgetRule, Config
from gateway.limits import SpendLedger
from gateway.services import ServiceRegistry
from tests.fakes.provider import FakeProvider
from tests.integration.harness import Api, ConfigFactory, SpawnWorker, StartApi, StartStack, StartWorker


def budget_policy(limit_usd: float) -> dict[str, Any]:
    return {"name": "daily", "rule": "budget", "limit_usd": limit_usd, "period": "day"}


def spent_usd(connection: redis.Redis, config: Config, service: str = "svc-a") -> float:
    policy = config.policies.policies[0]
    assert isinstance(policy.params, BudgetRule)
    return SpendLedger(connection).state(f"daily:{service}", "day", policy.params.limit_usd).spent_usd


def final_views(api: Api, ids: list[str]) -> list[dict[str, Any]]:
    with api.client() as client:
        views = [client.get(f"/v1/jobs/{i}", params={"wait": 30}).json() for i in ids]
    assert all(v["status"] in ("succeeded", "failed") for v in views), [v["status"] for v in views]
    return views


def test_budget_counts_real_cost_and_refuses_at_the_door_once_spent(
    stack: StartStack, redis_client: redis.Redis
) -> None:
    # claude-fake costs $3 / $15 per million tokens; a 10-token answer cap costs at most ~$0.0002
    api = stack(policies=[budget_policy(0.001)]).api
    costs: list[float] = []
    refused: httpx.Response | None = None
    with api.client() as client:
        for i in range(60):
            response = client.post(
                "/v1/jobs", params={"wait": 10}, json={"prompt": f"count to {i} please", "max_tokens": 10}
            )
            if response.status_code == 429:
                refused = response
                break
            assert response.json()["status"] == "succeeded", response.text
            costs.append(response.json()["result"]["cost_usd"])
    assert refused is not None, "the budget never refused a job"
    error = refused.json()["error"]
    assert error["type"] == "budget_exceeded" and "resets at" in error["message"]
    assert 0 < int(refused.headers["Retry-After"]) <= 86_400
    assert len(costs) >= 3 and all(c > 0 for c in costs)
    spent = spent_usd(redis_client, api.config)
    assert abs(spent - sum(costs)) < 1e-6 * len(costs)  # real usage x price, counted once each
    assert spent <= 0.001


def test_budget_holds_under_concurrent_load_from_several_worker_processes(
    gateway_config: ConfigFactory,
    start_api: StartApi,
    spawn_worker: SpawnWorker,
    fake: FakeProvider,
    redis_client: redis.Redis,
) -> None:
    limit = 0.003
    config = gateway_config(policies=[budget_policy(limit)], jobs={"max_attempts": 1})
    api = start_api(config)
    fake.latency = 0.2  # calls overlap across the two processes
    with api.client() as client:  # all admitted: nothing is spent yet
        ids = [
            client.post("/v1/jobs", json={"prompt": f"job {i}", "max_tokens": 20}).json()["id"]
            for i in range(40)
        ]
    spawn_worker(config, 20)
    spawn_worker(config, 20)
    views = final_views(api, ids)
    succeeded = [v for v in views if v["status"] == "succeeded"]
    refused = [v for v in views if v["status"] == "failed"]
    assert succeeded and refused
    assert {v["error"]["type"] for v in refused} == {"budget_exceeded"}
    spent = spent_usd(redis_client, config)
    assert spent <= limit
    assert abs(spent - sum(v["result"]["cost_usd"] for v in succeeded)) < 1e-6 * len(succeeded)
    assert fake.count() == len(succeeded)  # a refused job never called the provider


def test_requests_per_minute_is_exact_across_api_processes(
    gateway_config: ConfigFactory, start_api: StartApi, redis_client: redis.Redis
) -> None:
    config = gateway_config(
        policies=[{"name": "rpm", "rule": "rate_limit", "requests_per_minute": 7}],
    )
    apis = [start_api(config), start_api(config)]  # two API servers, one Redis

    def post(i: int) -> httpx.Response:
        with apis[i % 2].client() as client:
            return client.post("/v1/jobs", json={"prompt": f"r{i}"})

    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(post, range(20)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(202) == 7 and codes.count(429) == 13
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.json()["error"]["type"] == "rate_limit_exceeded"
    assert 1 <= int(limited.headers["Retry-After"]) <= 61  # a window plus one bucket at most
    other = ServiceRegistry(redis_client, config).create_token("svc-b")
    with apis[0].client(other) as client:  # each service has its own window
        assert client.post("/v1/jobs", json={"prompt": "mine"}).status_code == 202


def test_tokens_per_minute_refuses_once_the_window_is_used(stack: StartStack) -> None:
    api = stack(policies=[{"name": "tpm", "rule": "rate_limit", "tokens_per_minute": 5}]).api
    with api.client() as client:
        first = client.post("/v1/jobs", params={"wait": 10}, json={"prompt": "a prompt of some tokens"})
        assert first.json()["status"] == "succeeded"
        second = client.post("/v1/jobs", json={"prompt": "another"})
    assert second.status_code == 429
    assert "tokens in the last minute" in second.json()["error"]["message"]


def test_concurrent_jobs_limit_holds_jobs_back_and_loses_none(
    gateway_config: ConfigFactory, start_api: StartApi, start_worker: StartWorker, fake: FakeProvider
) -> None:
    config = gateway_config(policies=[{"name": "two", "rule": "rate_limit", "concurrent_jobs": 2}])
    api = start_api(config)
    start_worker(config, concurrency=50)
    fake.latency = 0.3
    with api.client() as client:
        ids = [client.post("/v1/jobs", json={"prompt": f"c{i}"}).json()["id"] for i in range(6)]
    views = final_views(api, ids)
    assert all(v["status"] == "succeeded" for v in views)
    spans = [(_at(v["started_at"]), _at(v["ended_at"])) for v in views]
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _t, step in edges:
        running += step
        peak = max(peak, running)
    assert peak == 2  # never more than the limit at once, and the limit is used


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_an_idempotent_retry_is_not_counted_again(gateway_config: ConfigFactory, start_api: StartApi) -> None:
    config = gateway_config(policies=[{"name": "rpm", "rule": "rate_limit", "requests_per_minute": 2}])
    api = start_api(config)
    with api.client() as client:
        first = [
            client.post("/v1/jobs", json={"prompt": "pay invoice 7", "idempotency_key": "inv-7"})
            for _ in range(4)
        ]
        assert {r.status_code for r in first} == {202} and len({r.json()["id"] for r in first}) == 1
        assert client.post("/v1/jobs", json={"prompt": "another"}).status_code == 202  # the 2nd of 2
        assert client.post("/v1/jobs", json={"prompt": "one more"}).status_code == 429
