"""Provider answers the worker does not trust: a Retry-After past any sane wait, usage counts that are
negative or absurd, and a cost the spend counters cannot take (issue 10, item 3)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from rq.queue import Queue

from gateway import keys
from gateway.limits import period_window
from tests.fakes.provider import FakeProvider, Fault
from tests.integration.harness import Api, StartStack, audit_events, fake_models, wait_until

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
