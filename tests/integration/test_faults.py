"""Provider faults: retries by requeue, Retry-After, failover, the call bound, the breaker, cancel."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import yaml

from gateway.config import load_config
from tests.fakes.provider import FakeProvider, Fault
from tests.integration.harness import (
    Api,
    ConfigFactory,
    StartApi,
    StartStack,
    StartWorker,
    audit_events,
    fake_models,
    wait_until,
)


def _status(api: Api, job_id: str) -> dict[str, object]:
    with api.client() as client:
        body = client.get(f"/v1/jobs/{job_id}").json()
    assert isinstance(body, dict)
    return body


def test_retry_after_delays_the_requeue(stack: StartStack, fake: FakeProvider) -> None:
    fake.script(Fault.status(429, retry_after=2), model="gpt-fake")
    api = stack(jobs={"max_attempts": 3, "retry_intervals": [0]}).api
    submitted = time.monotonic()
    with api.client() as client:
        job_id = client.post("/v1/jobs", json={"prompt": "x", "model": "openai"}).json()["id"]
    wait_until(lambda: _status(api, job_id)["status"] == "retrying", "job retrying")
    retrying = _status(api, job_id)
    due = datetime.fromisoformat(str(retrying["next_attempt_at"]).replace("Z", "+00:00"))
    assert (due - datetime.now(UTC)).total_seconds() > 1.0
    assert isinstance(retrying["error"], dict) and retrying["error"]["type"] == "rate_limited"
    with api.client() as client:
        done = client.get(f"/v1/jobs/{job_id}", params={"wait": 15}).json()
    assert done["status"] == "succeeded"
    assert time.monotonic() - submitted >= 2.0
    assert done["attempts"] == 2
    assert [c["outcome"] for c in done["result"]["calls"]] == ["error", "ok"]
    assert fake.count(model="gpt-fake") == 2


def test_provider_calls_never_exceed_the_bound(stack: StartStack, fake: FakeProvider) -> None:
    fake.script(*[Fault.status(500)] * 20, model="gpt-fake")
    api = stack(jobs={"max_attempts": 6, "retry_intervals": [0], "max_provider_calls": 3}).api
    with api.client() as client:
        job_id = client.post("/v1/jobs", json={"prompt": "x", "model": "openai"}).json()["id"]
        job = client.get(f"/v1/jobs/{job_id}", params={"wait": 15}).json()
    assert job["status"] == "failed"
    assert job["error"]["type"] == "call_bound_reached"
    assert fake.count(model="gpt-fake") == 3
    assert [c["outcome"] for c in job["calls"]] == ["error", "error", "error"]


@pytest.mark.parametrize(
    "fault",
    [Fault.status(500), Fault.status(529), Fault.reset(), Fault.timeout(5), Fault.garbage()],
    ids=["500", "529", "reset", "timeout", "garbage"],
)
def test_transient_fault_ends_in_success_by_requeue(
    stack: StartStack, fake: FakeProvider, fault: Fault
) -> None:
    fake.script(fault, model="gpt-fake")
    models = fake_models(fake.base_url)
    models["models"]["openai"]["timeouts"] = {"connect": 1, "read": 0.5, "total": 1}  # type: ignore[index]
    api = stack(models=models, jobs={"max_attempts": 2, "retry_intervals": [0]}).api
    with api.client() as client:
        job = client.post("/v1/jobs", params={"wait": 15}, json={"prompt": "x", "model": "openai"}).json()
    if fault.kind == "garbage":  # a malformed answer is not retried: it fails with its own type
        assert job["status"] == "failed" and job["error"]["type"] == "bad_provider_response"
        assert fake.count(model="gpt-fake") == 1
        return
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert fake.count(model="gpt-fake") == 2


def test_sensitive_job_never_fails_over_to_a_cloud_model(stack: StartStack, fake: FakeProvider) -> None:
    models = fake_models(fake.base_url)
    models["models"]["sensitive"]["fallbacks"] = ["general", "openai", "offline"]  # type: ignore[index]
    fake.script(*[Fault.status(503)] * 5, model="llama-fake")
    api = stack(models=models, jobs={"max_attempts": 1}).api
    with api.client() as client:
        job = client.post(
            "/v1/jobs", params={"wait": 15}, json={"prompt": "secret", "model": "sensitive"}
        ).json()
    assert job["status"] == "succeeded"
    assert job["result"]["provider"] == "offline"  # local, like the sensitive model
    assert fake.count(model="claude-fake") == 0 and fake.count(model="gpt-fake") == 0


def test_circuit_breaker_skips_a_failing_deployment_for_every_worker(
    gateway_config: ConfigFactory,
    start_api: StartApi,
    start_worker: StartWorker,
    fake: FakeProvider,
    redis_client: redis.Redis,
) -> None:
    fake.script(*[Fault.status(500)] * 20, model="claude-fake")
    config = gateway_config(jobs={"max_attempts": 1})
    config = config.model_copy(
        update={
            "gateway": config.gateway.model_copy(
                update={"breaker": config.gateway.breaker.model_copy(update={"failures": 2, "cooldown": 60})}
            )
        }
    )
    api = start_api(config)
    start_worker(config)
    start_worker(config)
    outcomes = []
    with api.client() as client:
        for _ in range(5):
            job = client.post(
                "/v1/jobs", params={"wait": 15}, json={"prompt": "x", "model": "general"}
            ).json()
            assert job["status"] == "succeeded"  # the offline fallback answers
            outcomes.append(job["result"]["calls"][0])
    assert fake.count(model="claude-fake") == 2
    skipped = [c for c in outcomes if c["outcome"] == "skipped"]
    assert len(skipped) == 3
    assert all("circuit open" in c["error"]["reason"] for c in skipped)
    assert redis_client.pttl("aigw:breaker:general/0:anthropic:open") > 0


def test_cancel_a_retrying_job(stack: StartStack, fake: FakeProvider, redis_client: redis.Redis) -> None:
    fake.script(Fault.status(429, retry_after=30), model="gpt-fake")
    api = stack(jobs={"max_attempts": 3}).api
    with api.client() as client:
        job_id = client.post("/v1/jobs", json={"prompt": "x", "model": "openai"}).json()["id"]
        wait_until(lambda: _status(api, job_id)["status"] == "retrying", "job retrying")
        canceled = client.delete(f"/v1/jobs/{job_id}").json()
    assert canceled["status"] == "canceled"
    assert redis_client.zscore("rq:scheduled:interactive", job_id) is None
    assert fake.count(model="gpt-fake") == 1


def test_a_job_past_its_queue_timeout_fails_and_is_audited_as_such(
    gateway_config: ConfigFactory, stack: StartStack, fake: FakeProvider, redis_client: redis.Redis
) -> None:
    config = gateway_config(jobs={"max_attempts": 1}, policies=[])
    gateway_file = Path(config.directory) / "gateway.yaml"
    settings = yaml.safe_load(gateway_file.read_text())
    settings["queues"]["interactive"]["timeout"] = 1
    gateway_file.write_text(yaml.safe_dump(settings))
    api = stack(load_config(config.directory)).api
    fake.script(Fault.timeout(5), model="claude-fake")
    with api.client() as client:
        job = client.post("/v1/jobs", params={"wait": 10}, json={"prompt": "slow"}).json()
    assert job["status"] == "failed" and job["error"]["type"] == "job_timeout"
    (event,) = audit_events(redis_client)
    assert (event["status"], event["error_type"]) == ("failed", "job_timeout")
