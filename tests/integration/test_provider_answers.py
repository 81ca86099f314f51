"""Provider answers the worker does not trust: a Retry-After past any sane wait, usage counts that are
negative or absurd, and a cost the spend counters cannot take (issue 10, item 3); half a surrogate
pair, JSON nested past the decoder, an answer without end, and any error nobody expected (the
security review's provider findings)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis
from redis.client import Pipeline
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.serializers import JSONSerializer

from gateway import keys
from gateway.errors import GatewayError
from gateway.limits import period_window
from tests.fakes.provider import FakeProvider, Fault
from tests.integration.harness import Api, StartStack, audit_events, fake_models, wait_until
from workers.worker import AsyncWorker, Outcome

CAP = 3  # jobs.max_retry_after in these tests, seconds
BUDGET = {"name": "daily", "rule": "budget", "limit_usd": 1.0, "period": "day"}
TOKENS = {"name": "tpm", "rule": "rate_limit", "tokens_per_minute": 1_000_000}


def _view(api: Api, job_id: str, wait: float = 0) -> dict[str, Any]:
    with api.client() as client:
        body = client.get(f"/v1/jobs/{job_id}", params={"wait": wait}).json()
    assert isinstance(body, dict)
    return body


def _submit(api: Api, body: dict[str, Any]) -> str:
    with api.client() as client:
        job_id = client.post("/v1/jobs", json=body).json()["id"]
    assert isinstance(job_id, str)
    return job_id


def _openai_answer(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "model": "gpt-fake",
        "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }


def _ledger(connection: redis.Redis) -> dict[bytes, bytes]:
    period_id, _ = period_window("day", time.time())
    return connection.hgetall(keys.spend_ledger("daily:svc-a", period_id))  # type: ignore[return-value]


def _assert_failed_and_uncharged(api: Api, job_id: str, connection: redis.Redis) -> dict[str, Any]:
    """Failed as a bad answer, with its audit line, no hold left, nothing spent, no tokens counted."""
    job = _view(api, job_id, wait=15)
    assert job["status"] == "failed", job
    assert job["error"]["type"] == "bad_provider_response"
    assert "pydantic" not in job["error"]["message"]
    events = [e for e in audit_events(connection) if e["job_id"] == job_id]
    assert [(e["status"], e["error_type"]) for e in events] == [("failed", "bad_provider_response")]
    assert events[0]["cost_usd"] == 0.0
    ledger = _ledger(connection)
    assert not [f for f in ledger if f.startswith(b"hold:")], ledger
    assert int(ledger.get(b"spent", 0)) == 0
    assert not connection.exists(keys.rate_window("tpm:tpm:svc-a", 60))  # _tokens_scope of TOKENS
    return job


@pytest.mark.parametrize(
    "retry_after", ["1e12", "Fri, 31 Dec 9999 23:59:59 GMT"], ids=["1e12-seconds", "year-9999"]
)
def test_retry_after_past_the_cap_is_capped_and_said_in_the_view(
    stack: StartStack, fake: FakeProvider, redis_client: redis.Redis, retry_after: str
) -> None:
    fake.script(Fault.status(429, retry_after=retry_after), model="gpt-fake")
    api = stack(jobs={"max_attempts": 2, "retry_intervals": [0], "max_retry_after": CAP}).api
    job_id = _submit(api, {"prompt": "x", "model": "openai"})
    wait_until(lambda: _view(api, job_id)["status"] == "retrying", "job retrying")
    due = redis_client.zscore(
        Queue("interactive", connection=redis_client).scheduled_job_registry.key, job_id
    )
    seconds, micros = redis_client.time()
    assert due is not None and 0 < due - (seconds + micros / 1e6) <= CAP + 1  # RQ rounds up to a second
    error = _view(api, job_id)["error"]
    assert error["type"] == "rate_limited"
    assert error["retry_after"] == CAP and error["retry_after_capped"] is True
    assert "jobs.max_retry_after" in error["message"]
    done = _view(api, job_id, wait=15)
    assert done["status"] == "succeeded", done
    assert done["result"]["calls"][0]["error"]["retry_after_capped"] is True


@pytest.mark.parametrize(
    "usage", [(-5, 3), (3, 10**30)], ids=["negative-prompt-tokens", "1e30-completion-tokens"]
)
def test_usage_out_of_bounds_fails_the_job_uncharged(
    stack: StartStack, fake: FakeProvider, redis_client: redis.Redis, usage: tuple[int, int]
) -> None:
    fake.script(Fault.json(_openai_answer(*usage)), model="gpt-fake")
    api = stack(policies=[BUDGET, TOKENS], jobs={"max_attempts": 2}).api
    job_id = _submit(api, {"prompt": "x", "model": "openai"})
    job = _assert_failed_and_uncharged(api, job_id, redis_client)
    assert "usage" in job["error"]["message"] and "whole numbers from 0" in job["error"]["message"]
    assert fake.count(model="gpt-fake") == 1  # a bad answer is not retried (like any bad body)


def test_cost_too_large_to_count_fails_before_the_result_is_stored(
    stack: StartStack, fake: FakeProvider, redis_client: redis.Redis
) -> None:
    # valid usage, but at these prices its micro-USD would overflow HINCRBY inside the result's
    # MULTI, which would still store the result and the audit line (MULTI does not roll back)
    models = fake_models(fake.base_url)
    price = {"input_per_mtok": 1e19, "output_per_mtok": 1e19}
    models["models"]["openai"]["pricing"] = price  # type: ignore[index]
    budget = {**BUDGET, "limit_usd": 1e30}
    api = stack(models=models, policies=[budget, TOKENS], jobs={"max_attempts": 1}).api
    job_id = _submit(api, {"prompt": "x", "model": "openai", "max_tokens": 16})
    job = _assert_failed_and_uncharged(api, job_id, redis_client)
    assert "pricing" in job["error"]["message"]
    assert job.get("result") is None


def _audit_of(connection: redis.Redis, job_id: str) -> list[tuple[str, str | None]]:
    return [(e["status"], e.get("error_type")) for e in audit_events(connection) if e["job_id"] == job_id]


# a lone high surrogate, as a JSON escape: what a model sends when an emoji is cut in half
_LONE = rb"\ud800"


def _openai_raw(content: bytes, model: bytes = b"gpt-fake", reason: bytes = b"stop") -> bytes:
    return (
        b'{"id": "chatcmpl-' + _LONE + b'", "model": "' + model + b'", "choices": [{"message": '
        b'{"role": "assistant", "content": "' + content + b'"}, "finish_reason": "' + reason + b'"}], '
        b'"usage": {"prompt_tokens": 1, "completion_tokens": 1}}'
    )


def test_a_lone_surrogate_in_the_answer_becomes_a_replacement_character(
    stack: StartStack, fake: FakeProvider, redis_client: redis.Redis
) -> None:
    # before: UnicodeEncodeError storing the result killed the job's task; it stayed "running"
    fake.script(Fault.raw(_openai_raw(_LONE + b"x", model=b"gpt-" + _LONE, reason=_LONE)), model="gpt-fake")
    api = stack(policies=[BUDGET, TOKENS], jobs={"max_attempts": 1}).api
    job_id = _submit(api, {"prompt": "x", "model": "openai"})
    job = _view(api, job_id, wait=8)
    assert job["status"] == "succeeded", job
    assert job["result"]["output"] == "\ufffdx"
    assert job["result"]["provider_model"] == "gpt-\ufffd"
    assert _audit_of(redis_client, job_id) == [("succeeded", None)]
    assert not [f for f in _ledger(redis_client) if f.startswith(b"hold:")]


def test_a_lone_surrogate_in_a_provider_error_message_is_replaced_too(
    stack: StartStack, fake: FakeProvider, redis_client: redis.Redis
) -> None:
    body = b'{"error": {"message": "no ' + _LONE + b' here", "type": "invalid_request_error"}}'
    fake.script(Fault.raw(body, code=400), model="gpt-fake")
    api = stack(jobs={"max_attempts": 1}).api
    job_id = _submit(api, {"prompt": "x", "model": "openai"})
    job = _view(api, job_id, wait=8)
    assert job["status"] == "failed", job
    assert job["error"]["type"] == "provider_bad_request"
    assert "no \ufffd here" in job["error"]["message"]
    assert _audit_of(redis_client, job_id) == [("failed", "provider_bad_request")]


def test_deeply_nested_json_is_a_bad_answer(
    stack: StartStack, fake: FakeProvider, redis_client: redis.Redis
) -> None:
    # before: RecursionError from the JSON decoder, a gateway_error with no audit line
    fake.script(Fault.raw(b"[" * 200_000 + b"]" * 200_000), model="gpt-fake")
    api = stack(policies=[BUDGET, TOKENS], jobs={"max_attempts": 2}).api
    job_id = _submit(api, {"prompt": "x", "model": "openai"})
    job = _assert_failed_and_uncharged(api, job_id, redis_client)
    assert "nested too deeply" in job["error"]["message"]


def test_an_unexpected_error_in_the_pipeline_fails_the_job_audited_with_its_holds_released(
    stack: StartStack, fake: FakeProvider, redis_client: redis.Redis
) -> None:
    # Ollama's "message" as a list trips an AttributeError (``.get`` on a list) that no parser
    # catches: the path any bug in the pipeline takes. Before: failed with no audit line, its budget
    # hold kept.
    fake.script(Fault.json({"message": ["hi"], "eval_count": 1}), model="llama-fake")
    api = stack(policies=[BUDGET, TOKENS], jobs={"max_attempts": 2}).api
    job_id = _submit(api, {"prompt": "x", "model": "sensitive"})
    job = _view(api, job_id, wait=8)
    assert job["status"] == "failed", job
    assert job["error"]["type"] == "gateway_error"
    assert job["error"]["message"].startswith("unexpected error: AttributeError: "), job["error"]
    assert "Traceback" not in job["error"]["message"]
    assert _audit_of(redis_client, job_id) == [("failed", "gateway_error")]
    ledger = _ledger(redis_client)
    assert not [f for f in ledger if f.startswith(b"hold:")], ledger
    assert fake.count(model="llama-fake") == 1  # not retried: nothing says another try would differ


def test_an_answer_past_max_response_bytes_fails_and_the_worker_goes_on(
    stack: StartStack, fake: FakeProvider, redis_client: redis.Redis
) -> None:
    cap = 1_000_000
    fake.script(Fault.huge(200_000_000), model="gpt-fake")  # chunked, generated as it is sent
    api = stack(policies=[BUDGET, TOKENS], jobs={"max_attempts": 2, "max_response_bytes": cap}).api
    began = time.monotonic()
    job_id = _submit(api, {"prompt": "x", "model": "openai"})
    job = _assert_failed_and_uncharged(api, job_id, redis_client)
    assert f"answer larger than {cap:,} bytes" in job["error"]["message"]
    assert "jobs.max_response_bytes" in job["error"]["message"]
    assert time.monotonic() - began < 10  # stopped at the cap, not after reading 200 MB
    follow_up = _view(api, _submit(api, {"prompt": "again", "model": "openai"}), wait=10)
    assert follow_up["status"] == "succeeded", follow_up
    assert follow_up["result"]["output"] == "echo: again"


def test_a_result_redis_cannot_encode_fails_the_job_through_the_failure_path(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # The original surrogate bug, one level down: a finish transaction holding a text that redis-py
    # cannot encode (the provider fix above removes the one known source). Before: the exception
    # left _succeed, the job stayed "running" and nobody audited it.
    failures: list[GatewayError] = []

    def commit(pipe: Pipeline) -> None:
        pipe.set("aigw:test:unstorable", "half an emoji: \ud83d")

    async def runner(job: Job) -> Outcome:
        return Outcome({"output": "fine"}, commit=commit, failed=failures.append)

    queue = Queue("interactive", connection=redis_client, serializer=JSONSerializer)
    job = queue.enqueue("workers.pipeline.run_job", {}, retry=None)
    worker = AsyncWorker("interactive", connection=redis_client, redis_url=redis_url, runner=runner)
    asyncio.run(asyncio.wait_for(worker.run(burst=True), timeout=20))
    job.refresh()
    assert job.get_status() == JobStatus.FAILED
    assert [e.type for e in failures] == ["gateway_error"]  # the runner audited it (the pipeline does)
    assert failures[0].message.startswith("unexpected error: UnicodeEncodeError: ")
    assert not redis_client.exists("aigw:test:unstorable")
    assert job.id not in queue.started_job_registry
