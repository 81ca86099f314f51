"""API -> Redis -> real async worker -> fake provider -> result -> audit, for every provider kind."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import redis

from gateway import keys
from gateway.audit import AuditWriter, tail
from gateway.services import ServiceRegistry
from tests.fakes.provider import FakeProvider, Fault
from tests.integration.harness import ConfigFactory, StartApi, StartStack, StartWorker, run_burst, wait_until


@pytest.mark.parametrize(
    ("alias", "provider", "provider_model", "path"),
    [
        ("general", "anthropic", "claude-fake", "/v1/messages"),
        ("openai", "openai", "gpt-fake", "/v1/chat/completions"),
        ("sensitive", "ollama", "llama-fake", "/api/chat"),
    ],
)
def test_job_round_trip_per_provider_kind(
    stack: StartStack,
    fake: FakeProvider,
    redis_client: redis.Redis,
    tmp_path: Path,
    alias: str,
    provider: str,
    provider_model: str,
    path: str,
) -> None:
    api = stack(policies=[]).api  # no log_all_requests_and_responses: the audit has no bodies
    with api.client() as client:
        response = client.post(
            "/v1/jobs", params={"wait": 10}, json={"prompt": "ping the model", "model": alias}
        )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded"
    result = job["result"]
    assert result["output"] == "echo: ping the model"
    assert (result["model"], result["provider"], result["provider_model"]) == (
        alias,
        provider,
        provider_model,
    )
    assert result["offline"] is False
    usage = result["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    pricing = api.config.models.models[alias].deployments[0].pricing
    assert result["cost_usd"] == pytest.approx(pricing.cost(usage["input_tokens"], usage["output_tokens"]))
    assert job["attempts"] == 1 and result["attempt"] == 1
    assert set(result["timings"]) >= {"queue_wait_ms", "provider_latency_ms"}
    received = [r for r in fake.requests if r.path == path]
    assert len(received) == 1
    if provider != "ollama":  # Ollama has no key
        assert received[0].key_ok

    audit_path = tmp_path / "audit.log"
    AuditWriter(redis_client, audit_path, consumer="test").run_once(block_ms=100)
    (line,) = tail(audit_path, 10)
    assert line["job_id"] == job["id"]
    assert (line["service"], line["model"], line["provider"], line["status"]) == (
        "svc-a",
        alias,
        provider,
        "succeeded",
    )
    assert line["input_tokens"] == usage["input_tokens"] and line["output_tokens"] == usage["output_tokens"]
    assert line["cost_usd"] == pytest.approx(result["cost_usd"])
    assert len(line["request_sha256"]) == 64
    assert "ping the model" not in audit_path.read_text()  # no prompt text unless a policy asks


def test_offline_provider_answers_without_keys(
    stack: StartStack, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIGW_TEST_ANTHROPIC_KEY")
    api = stack().api
    with api.client() as client:
        job = client.post("/v1/jobs", params={"wait": 10}, json={"prompt": "hello"}).json()
    assert job["status"] == "succeeded"
    result = job["result"]
    assert result["offline"] is True and result["provider"] == "offline"
    assert "offline" in result["output"]
    skipped = result["calls"][0]
    assert skipped["outcome"] == "skipped" and "AIGW_TEST_ANTHROPIC_KEY" in skipped["error"]["reason"]
    assert fake.count() == 0


def test_get_long_poll_returns_the_finished_job(
    gateway_config: ConfigFactory,
    start_api: StartApi,
    start_worker: StartWorker,
    fake: FakeProvider,
) -> None:
    config = gateway_config()
    api = start_api(config)
    with api.client() as client:
        queued = client.post("/v1/jobs", json={"prompt": "later", "model": "openai"})
        assert queued.status_code == 202
        assert queued.json()["status"] == "queued"
        job_id = queued.json()["id"]
        start_worker(config)
        finished = client.get(f"/v1/jobs/{job_id}", params={"wait": 10})
    assert finished.status_code == 200
    assert finished.json()["status"] == "succeeded"
    assert finished.json()["result"]["output"] == "echo: later"


def test_post_wait_answers_202_when_not_done_in_time(
    gateway_config: ConfigFactory, start_api: StartApi
) -> None:
    api = start_api(gateway_config())
    with api.client() as client:
        started = time.monotonic()
        response = client.post("/v1/jobs", params={"wait": 0.3}, json={"prompt": "nobody is working"})
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert time.monotonic() - started >= 0.3


def test_worker_runs_many_jobs_concurrently(
    gateway_config: ConfigFactory,
    start_api: StartApi,
    fake: FakeProvider,
    redis_url: str,
) -> None:
    fake.latency = 0.5
    config = gateway_config()
    api = start_api(config)
    with api.client() as client:
        ids = [
            client.post("/v1/jobs", json={"prompt": f"job {i}", "model": "openai"}).json()["id"]
            for i in range(100)
        ]
    started = time.monotonic()
    run_burst(config, redis_url, concurrency=100)
    elapsed = time.monotonic() - started
    # serially this is 100 x 0.5 s = 50 s; one process with 100 slots overlaps the waits
    assert elapsed < 10, f"100 jobs of 0.5 s took {elapsed:.1f}s"
    with api.client() as client:
        states = {client.get(f"/v1/jobs/{job_id}").json()["status"] for job_id in ids}
    assert states == {"succeeded"}
    assert fake.count(model="gpt-fake") == 100


def test_service_sees_only_its_own_jobs(
    gateway_config: ConfigFactory, start_api: StartApi, redis_client: redis.Redis
) -> None:
    config = gateway_config()
    api = start_api(config)
    other = ServiceRegistry(redis_client, config).create_token("svc-b")
    with api.client() as client:
        job_id = client.post("/v1/jobs", json={"prompt": "mine"}).json()["id"]
    with api.client(token=other) as client:
        seen = client.get(f"/v1/jobs/{job_id}")
        canceled = client.delete(f"/v1/jobs/{job_id}")
    assert seen.status_code == 404 and canceled.status_code == 404
    assert seen.json()["error"]["type"] == "not_found"


@pytest.mark.parametrize(
    ("body", "headers", "status", "error_type", "needle"),
    [
        (b"{not json", None, 400, "invalid_json", "not valid JSON"),
        (json.dumps({"prompt": "x", "colour": "red"}).encode(), None, 422, "invalid_request", "colour"),
        (json.dumps({"prompt": "   "}).encode(), None, 422, "invalid_request", "prompt"),
        (json.dumps({}).encode(), None, 422, "invalid_request", "prompt"),
        (json.dumps({"prompt": "x" * 200_001}).encode(), None, 413, "payload_too_large", "200000"),
        (json.dumps({"prompt": "x", "model": "gpt-9"}).encode(), None, 404, "model_not_found", "gpt-9"),
        (json.dumps({"prompt": "x", "task": "juggling"}).encode(), None, 422, "invalid_request", "juggling"),
        (json.dumps({"prompt": "x", "queue": "bulk"}).encode(), None, 422, "invalid_request", "queue"),
        (json.dumps({"messages": []}).encode(), None, 422, "invalid_request", "messages"),
        (json.dumps({"prompt": "x"}).encode(), {}, 401, "authentication_error", "missing"),
        (
            json.dumps({"prompt": "x"}).encode(),
            {"Authorization": "Bearer nope"},
            401,
            "authentication_error",
            "",
        ),
    ],
)
def test_bad_input_is_refused_and_nothing_is_enqueued(
    gateway_config: ConfigFactory,
    start_api: StartApi,
    redis_client: redis.Redis,
    body: bytes,
    headers: dict[str, str] | None,
    status: int,
    error_type: str,
    needle: str,
) -> None:
    api = start_api(gateway_config())
    sent_headers = {"Authorization": f"Bearer {api.token}"} if headers is None else headers
    response = httpx.post(f"{api.url}/v1/jobs", content=body, headers=sent_headers)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == error_type
    assert needle in error["message"]
    assert redis_client.llen("rq:queue:interactive") == 0


def test_x_api_key_header_authenticates(gateway_config: ConfigFactory, start_api: StartApi) -> None:
    api = start_api(gateway_config())
    response = httpx.post(f"{api.url}/v1/jobs", json={"prompt": "hi"}, headers={"x-api-key": api.token})
    assert response.status_code == 202


def test_idempotency_key_returns_the_same_job(
    gateway_config: ConfigFactory, start_api: StartApi, redis_client: redis.Redis
) -> None:
    api = start_api(gateway_config())
    with api.client() as client:
        first = client.post("/v1/jobs", json={"prompt": "once", "idempotency_key": "order-42"}).json()
        second = client.post("/v1/jobs", json={"prompt": "once", "idempotency_key": "order-42"}).json()
        third = client.post("/v1/jobs", json={"prompt": "once", "idempotency_key": "order-43"}).json()
    assert first["id"] == second["id"] != third["id"]
    assert redis_client.llen("rq:queue:interactive") == 2


def test_idempotency_key_with_another_body_is_refused_not_answered_with_the_first_job(
    gateway_config: ConfigFactory, start_api: StartApi, redis_client: redis.Redis
) -> None:
    api = start_api(gateway_config())
    with api.client() as client:
        body = {"prompt": "refund order 42", "metadata": {"a": "1", "b": "2"}, "idempotency_key": "order-42"}
        first = client.post("/v1/jobs", json=body).json()
        reordered = {
            "idempotency_key": "order-42",
            "metadata": {"b": "2", "a": "1"},
            "prompt": "refund order 42",
        }
        same = client.post("/v1/jobs", json=reordered)
        other = client.post("/v1/jobs", json={**body, "prompt": "refund order 43"})

    assert same.status_code == 202 and same.json()["id"] == first["id"]  # the same request, reordered
    assert other.status_code == 422
    error = other.json()["error"]
    assert error["type"] == "idempotency_key_reused"
    assert "order-42" in error["message"] and first["id"] in error["message"]
    assert redis_client.llen("rq:queue:interactive") == 1  # nothing second was enqueued


def test_cancel_queued_job_never_reaches_the_provider(
    gateway_config: ConfigFactory, start_api: StartApi, fake: FakeProvider, redis_url: str
) -> None:
    config = gateway_config()
    api = start_api(config)
    with api.client() as client:
        job_id = client.post("/v1/jobs", json={"prompt": "never mind", "model": "openai"}).json()["id"]
        canceled = client.delete(f"/v1/jobs/{job_id}")
        assert canceled.status_code == 200
        assert canceled.json()["status"] == "canceled"
        run_burst(config, redis_url)
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "canceled"
    assert fake.count() == 0


def test_cancel_running_job_stops_it(stack: StartStack, fake: FakeProvider) -> None:
    fake.latency = 20
    api = stack().api
    with api.client() as client:
        job_id = client.post("/v1/jobs", json={"prompt": "slow", "model": "openai"}).json()["id"]
        wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "running", "job running")
        started = time.monotonic()
        canceled = client.delete(f"/v1/jobs/{job_id}").json()
    assert canceled["status"] == "canceled"
    assert time.monotonic() - started < 10


def test_non_retryable_provider_error_fails_the_job_at_once(stack: StartStack, fake: FakeProvider) -> None:
    fake.script(Fault.status(400, message="max_tokens too large"), model="gpt-fake")
    api = stack().api
    with api.client() as client:
        job = client.post("/v1/jobs", params={"wait": 10}, json={"prompt": "x", "model": "openai"}).json()
    assert job["status"] == "failed"
    assert job["error"]["type"] == "provider_bad_request"
    assert fake.count(model="gpt-fake") == 1


def test_retryable_error_fails_over_to_the_next_deployment(stack: StartStack, fake: FakeProvider) -> None:
    fake.script(Fault.status(503), model="claude-fake")
    api = stack().api
    with api.client() as client:
        job = client.post("/v1/jobs", params={"wait": 10}, json={"prompt": "x", "model": "general"}).json()
    assert job["status"] == "succeeded"
    assert job["result"]["provider"] == "offline"
    outcomes = [(c["deployment"], c["outcome"]) for c in job["result"]["calls"]]
    assert outcomes == [("general/0:anthropic", "error"), ("offline/0:offline", "ok")]
    assert job["result"]["calls"][0]["error"]["type"] == "provider_unavailable"


def test_garbage_provider_answer_fails_with_a_clear_type(stack: StartStack, fake: FakeProvider) -> None:
    fake.script(Fault.garbage(), model="gpt-fake")
    api = stack(jobs={"max_attempts": 1}).api
    with api.client() as client:
        job = client.post("/v1/jobs", params={"wait": 10}, json={"prompt": "x", "model": "openai"}).json()
    assert job["status"] == "failed"
    assert job["error"]["type"] == "bad_provider_response"


def test_retryable_failure_is_requeued_and_succeeds(stack: StartStack, fake: FakeProvider) -> None:
    fake.script(Fault.status(500), Fault.status(502), model="gpt-fake")
    api = stack(jobs={"max_attempts": 3, "retry_intervals": [0]}).api
    with api.client() as client:
        job = client.post("/v1/jobs", params={"wait": 10}, json={"prompt": "x", "model": "openai"}).json()
    assert job["status"] == "succeeded"
    assert job["attempts"] == 3 and job["result"]["attempt"] == 3
    assert fake.count(model="gpt-fake") == 3


def test_readyz_reports_missing_workers(
    gateway_config: ConfigFactory, start_api: StartApi, start_worker: StartWorker
) -> None:
    config = gateway_config()
    api = start_api(config)
    assert httpx.get(f"{api.url}/healthz").status_code == 200
    not_ready = httpx.get(f"{api.url}/readyz")
    assert not_ready.status_code == 503
    start_worker(config, "interactive")
    start_worker(config, "batch")
    ready = httpx.get(f"{api.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["workers"] == {"interactive": 1, "batch": 1}


def test_openapi_documents_the_job_request(gateway_config: ConfigFactory, start_api: StartApi) -> None:
    api = start_api(gateway_config())
    schema = httpx.get(f"{api.url}/openapi.json").json()
    assert "prompt" in schema["components"]["schemas"]["JobRequest"]["properties"]
    assert "/v1/jobs/{job_id}" in schema["paths"]


def test_audit_stream_records_failed_jobs(
    stack: StartStack, fake: FakeProvider, redis_client: redis.Redis
) -> None:
    fake.script(Fault.status(401), model="gpt-fake")
    api = stack().api
    with api.client() as client:
        job = client.post("/v1/jobs", params={"wait": 10}, json={"prompt": "x", "model": "openai"}).json()
    assert job["error"]["type"] == "provider_auth_error"
    assert "AIGW_TEST_OPENAI_KEY" in job["error"]["message"]
    entries = redis_client.xrange(keys.AUDIT_STREAM) or []
    assert len(entries) == 1
    raw = json.dumps([{str(k): str(v) for k, v in (fields or {}).items()} for _id, fields in entries])
    assert "provider_auth_error" in raw
    assert "sk-test-fake-key" not in raw


def test_unknown_route_and_method_use_the_error_envelope(
    gateway_config: ConfigFactory, start_api: StartApi
) -> None:
    api = start_api(gateway_config())
    with api.client() as client:
        missing = client.get("/v1/nothing")
        wrong_method = client.put("/v1/jobs")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["type"] == "method_not_allowed"
