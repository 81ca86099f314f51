"""Policies end to end: API -> real worker -> fake provider, and the fake's record as proof.

The fake provider records every body it receives, per model: that record is what shows a value
never reached a cloud model (claude-fake, gpt-fake), only the local one (llama-fake).
"""

from __future__ import annotations

import json
from typing import Any

import redis

from gateway.redis_server import free_port
from gateway.services import ServiceRegistry
from tests.fakes.provider import FakeProvider, Fault
from tests.integration.harness import (
    ConfigFactory,
    StartApi,
    StartStack,
    StartWorker,
    audit_events,
    fake_models,
    submit,
)

LOCAL = "llama-fake"
PII_JOBS: list[tuple[dict[str, Any], str]] = [
    ({"prompt": "Write to jane.doe@example.com about the renewal"}, "jane.doe@example.com"),
    ({"prompt": "Summarise", "system": "Customer card: 4111 1111 1111 1111"}, "4111 1111 1111 1111"),
    (
        {
            "model": "openai",
            "messages": [
                {"role": "user", "content": "Who is this?"},
                {"role": "assistant", "content": "Their IBAN is GB82 WEST 1234 5698 7654 32"},
                {"role": "user", "content": "Draft a payment reminder"},
            ],
        },
        "GB82 WEST 1234 5698 7654 32",
    ),
    ({"task": "classification", "prompt": "SSN 078-05-1120 on file; classify"}, "078-05-1120"),
    ({"prompt": "Call me on +44 20 7946 0958 tomorrow"}, "+44 20 7946 0958"),
]


def cloud_bodies(fake: FakeProvider) -> str:
    return json.dumps([r.body for r in fake.requests if r.model != LOCAL])


def test_seed_policies_keep_pii_local_in_every_field_and_audit_categories_only(
    stack: StartStack, fake: FakeProvider, redis_client: redis.Redis
) -> None:
    api = stack().api  # the shipped policies.yaml: the seed article's three
    clean = submit(api, {"prompt": "Summarise the quarterly plan"}).json()
    assert clean["result"]["model"] == "general" and clean["result"]["provider"] == "anthropic"
    jobs = [submit(api, body).json() for body, _value in PII_JOBS]
    for job, (_body, value) in zip(jobs, PII_JOBS, strict=True):
        assert job["status"] == "succeeded", job
        assert (job["result"]["model"], job["result"]["provider"]) == ("sensitive", "ollama")
        assert value in json.dumps(fake.bodies_for(LOCAL))
        assert value not in cloud_bodies(fake)
        routed = next(d for d in job["result"]["policy"] if d["rule"].startswith("if_context"))
        assert routed["outcome"] == "route" and routed["findings"]
        assert value not in json.dumps(job["result"]["policy"])
    assert fake.count("claude-fake") == 1 and fake.count("gpt-fake") == 0  # only the clean job
    events = {e["job_id"]: e for e in audit_events(redis_client)}
    for job, (_body, value) in zip(jobs, PII_JOBS, strict=True):
        event = events[job["id"]]
        assert event["request"]["messages"] and event["response"]["output"]  # audit_everything
        assert value not in json.dumps(event)  # bodies are logged with PII masked by category
        assert any(d.get("findings") for d in event["policy"])
    # all_outputs_are_drafts: every result waits for review
    assert clean["result"]["draft"] is True and clean["review"] == {"state": "pending"}


def test_a_failing_sensitive_model_fails_closed_with_no_cloud_fallback(
    stack: StartStack, fake: FakeProvider
) -> None:
    api = stack(jobs={"max_attempts": 2, "retry_intervals": [0]}).api
    fake.script(*[Fault.status(503)] * 5, model=LOCAL)
    job = submit(api, {"model": "general", "prompt": "Invoice for jane.doe@example.com"}).json()
    assert job["status"] == "failed", job
    assert job["error"]["type"] == "provider_unavailable"
    assert fake.count(LOCAL) == 2  # one call per attempt, both local
    assert fake.count("claude-fake") == 0 and fake.count("gpt-fake") == 0
    assert "jane.doe" not in cloud_bodies(fake)


def test_a_pii_job_failing_locally_says_why_and_masks_the_jobs_values_not_the_gateways_urls(
    stack: StartStack, fake: FakeProvider
) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # the local model's server is not running
    models: Any = fake_models(fake.base_url)
    models["models"]["sensitive"]["api_base"] = down
    api = stack(models=models, jobs={"max_attempts": 1}).api
    job = submit(api, {"model": "general", "prompt": "Invoice for jane.doe@example.com"}).json()

    assert job["status"] == "failed", job
    message = job["error"]["message"]
    assert "kept on the local model `sensitive` because of PII (email)" in message
    assert f"talking to {down}/api/chat" in message and "IP_ADDRESS" not in message  # aigw's own URL
    assert "jane.doe" not in json.dumps(job)
    assert [c["deployment"] for c in job["calls"]] == ["sensitive/0:ollama"]
    assert job["calls"][-1]["error"]["message"] in message  # the call's record says what the error says


def test_a_provider_error_quoting_the_prompt_is_masked_in_the_job_and_its_calls(
    stack: StartStack, fake: FakeProvider
) -> None:
    api = stack(policies=[], jobs={"max_attempts": 1}).api
    fake.script(Fault.status(400, message="bad request near 'jane.doe@example.com'"), model="claude-fake")
    job = submit(api, {"model": "general", "prompt": "Invoice for jane.doe@example.com"}).json()

    assert job["status"] == "failed", job
    assert job["error"]["type"] == "provider_bad_request"
    assert "jane.doe" not in json.dumps(job) and "[EMAIL_1]" in job["error"]["message"]


def test_pii_with_no_sensitive_model_allowed_is_refused_at_the_door(
    gateway_config: ConfigFactory, start_api: StartApi, fake: FakeProvider
) -> None:
    config = gateway_config(
        policies=[
            {"name": "pii", "rule": "if_context_contains_pii_use_sensitive_model"},
            {"name": "cloud_only", "rule": "allow_models", "models": ["general", "openai"]},
        ]
    )
    api = start_api(config)
    response = submit(api, {"prompt": "Mail jane.doe@example.com"}, wait=0)
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["type"] == "policy_denied" and "no sensitive model" in error["message"]
    assert "jane.doe" not in response.text and fake.count() == 0


def test_redact_pii_masks_for_the_cloud_and_restores_the_answer(
    stack: StartStack, fake: FakeProvider
) -> None:
    api = stack(policies=[{"name": "mask", "rule": "redact_pii"}]).api
    prompt = "Email jane.doe@example.com, then jane.doe@example.com again, and call +1 (415) 555-2671"
    job = submit(api, {"prompt": prompt}).json()
    assert job["status"] == "succeeded", job
    sent = fake.bodies_for("claude-fake")[0]["messages"][-1]["content"]
    assert sent == "Email [EMAIL_1], then [EMAIL_1] again, and call [PHONE_1]"
    assert job["result"]["output"] == f"echo: {prompt}"  # the fake echoes; placeholders restored
    decision = job["result"]["policy"][0]
    assert decision["outcome"] == "redact" and {f["category"] for f in decision["findings"]} == {
        "email",
        "phone",
    }


def test_block_secrets_refuses_credentials_and_monitor_mode_only_records(
    gateway_config: ConfigFactory, start_api: StartApi, start_worker: StartWorker, fake: FakeProvider
) -> None:
    secret = "AKIA" + "Z7QW3RT5YU8IO2PL"
    config = gateway_config(policies=[{"name": "no_keys", "rule": "block_secrets"}])
    api = start_api(config)
    refused = submit(api, {"prompt": f"use aws key {secret} to upload"}, wait=0)
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "policy_denied"
    assert "api_key in prompt" in refused.text and secret not in refused.text
    monitor = gateway_config(policies=[{"name": "no_keys", "rule": "block_secrets", "enforce": False}])
    api = start_api(monitor)
    start_worker(monitor)
    job = submit(api, {"prompt": f"use aws key {secret} to upload"}).json()
    assert job["status"] == "succeeded"
    assert job["result"]["policy"][0] | {"reason": ""} == {
        "policy": "no_keys",
        "rule": "block_secrets",
        "outcome": "deny",
        "enforced": False,
        "reason": "",
        "findings": [{"category": "api_key", "where": "prompt", "count": 1}],
    }


def test_allow_models_and_max_tokens_shape_what_reaches_the_provider(
    stack: StartStack, fake: FakeProvider
) -> None:
    api = stack(
        jobs={"max_attempts": 1},
        policies=[
            {"name": "only_general", "rule": "allow_models", "models": ["general"]},
            {"name": "short", "rule": "max_tokens", "limit": 64},
        ],
    ).api
    refused = submit(api, {"prompt": "hi", "model": "openai"}, wait=0)
    assert refused.status_code == 403 and "may not use model openai" in refused.json()["error"]["message"]
    fake.script(Fault.status(503), model="claude-fake")  # general fails; offline is not allowed
    failed = submit(api, {"prompt": "hi", "max_tokens": 500}).json()
    assert [c["deployment"] for c in failed.get("calls", [])] == ["general/0:anthropic"]
    job = submit(api, {"prompt": "hi again", "max_tokens": 500}).json()
    assert job["status"] == "succeeded"
    assert fake.bodies_for("claude-fake")[-1]["max_tokens"] == 64


def test_drafts_are_reviewed_once_by_their_service_or_a_listed_reviewer(
    stack: StartStack, redis_client: redis.Redis
) -> None:
    api = stack(policies=[{"name": "drafts", "rule": "all_outputs_are_drafts", "reviewers": ["legal"]}]).api
    registry = ServiceRegistry(redis_client, api.config)
    legal, stranger = registry.create_token("legal"), registry.create_token("stranger")
    first = submit(api, {"prompt": "draft a reply"}).json()
    second = submit(api, {"prompt": "draft another"}).json()
    assert first["result"]["draft"] and first["review"] == {"state": "pending"}
    with api.client(stranger) as client:
        hidden = client.post(f"/v1/jobs/{first['id']}/review", json={"decision": "approve"})
        assert client.get(f"/v1/jobs/{first['id']}").status_code == 404
    assert hidden.status_code == 404
    with api.client() as client:
        approved = client.post(
            f"/v1/jobs/{first['id']}/review", json={"decision": "approve", "comment": "ok"}
        )
        assert approved.status_code == 200, approved.text
        assert approved.json()["review"]["state"] == "approved" and approved.json()["review"]["by"] == "svc-a"
        again = client.post(f"/v1/jobs/{first['id']}/review", json={"decision": "reject"})
        assert again.status_code == 409 and "already approved by svc-a" in again.json()["error"]["message"]
        bad = client.post(f"/v1/jobs/{first['id']}/review", json={"decision": "maybe"})
        assert bad.status_code == 422
        assert client.get(f"/v1/jobs/{first['id']}").json()["review"]["state"] == "approved"
    with api.client(legal) as client:
        assert client.get(f"/v1/jobs/{second['id']}").json()["result"]["output"]  # a reviewer reads first
        rejected = client.post(f"/v1/jobs/{second['id']}/review", json={"decision": "reject"})
    assert rejected.status_code == 200 and rejected.json()["review"]["by"] == "legal"


def test_response_cache_is_opt_in_and_never_crosses_services(
    stack: StartStack, fake: FakeProvider, redis_client: redis.Redis
) -> None:
    api = stack(policies=[], services={"svc-a": {"cache": True}}).api
    first = submit(api, {"prompt": "what is 2+2"}).json()
    second = submit(api, {"prompt": "what is 2+2"}).json()
    assert (first["result"]["cached"], second["result"]["cached"]) == (False, True)
    assert second["result"]["output"] == first["result"]["output"] and second["result"]["cost_usd"] == 0
    assert fake.count("claude-fake") == 1
    opted_out = submit(api, {"prompt": "what is 2+2", "cache": False}).json()
    assert opted_out["result"]["cached"] is False and fake.count("claude-fake") == 2
    other = ServiceRegistry(redis_client, api.config).create_token("svc-b")
    theirs = submit(api, {"prompt": "what is 2+2", "cache": True}, token=other).json()
    assert theirs["result"]["cached"] is False and fake.count("claude-fake") == 3


def test_weighted_deployments_share_the_load(stack: StartStack, fake: FakeProvider) -> None:
    models: dict[str, Any] = fake_models(fake.base_url)
    deployment = {
        "provider": "openai",
        "api_base": f"{fake.base_url}/v1",
        "api_key_env": "AIGW_TEST_OPENAI_KEY",
    }
    models["models"]["pool"] = {
        "balance": "weighted",
        "deployments": [{**deployment, "model": "gpt-a", "weight": 3}, {**deployment, "model": "gpt-b"}],
    }
    api = stack(models=models, policies=[]).api
    with api.client() as client:
        ids = [
            client.post("/v1/jobs", json={"prompt": f"n{i}", "model": "pool"}).json()["id"] for i in range(80)
        ]
        views = [client.get(f"/v1/jobs/{i}", params={"wait": 15}).json() for i in ids]
    assert all(v["status"] == "succeeded" for v in views)
    share = fake.count("gpt-a")
    assert share + fake.count("gpt-b") == 80
    assert 45 <= share <= 75  # 3:1 weights: 60 expected; outside this band is a < 1e-4 chance


def test_a_refusal_at_the_door_is_audited_without_the_secret(
    gateway_config: ConfigFactory, start_api: StartApi, redis_client: redis.Redis
) -> None:
    secret = "ghp_" + "k3J9sQ2mX8vL5nB7cR1tY4wZ6pD0fH2gA9eU"
    config = gateway_config(policies=[{"name": "no_keys", "rule": "block_secrets"}])
    api = start_api(config)
    assert submit(api, {"prompt": f"push with {secret}"}, wait=0).status_code == 403
    (event,) = audit_events(redis_client)
    assert (event["status"], event["service"], event["error_type"]) == ("refused", "svc-a", "policy_denied")
    assert event["policy"][0]["outcome"] == "deny" and event["calls"] == 0
    assert secret not in json.dumps(event)


def test_a_budget_refusal_is_audited_with_its_decision(
    gateway_config: ConfigFactory, start_api: StartApi, redis_client: redis.Redis
) -> None:
    config = gateway_config(policies=[{"name": "tiny", "rule": "budget", "limit_usd": 0.000001}])
    api = start_api(config)
    response = submit(api, {"prompt": "any prompt at all"}, wait=0)
    message = response.json()["error"]["message"]
    assert response.status_code == 403 and "more than the whole daily budget of $0.000001" in message
    assert "lower max_tokens" in message and "Retry-After" not in response.headers  # no reset would help
    (event,) = audit_events(redis_client)
    assert event["status"] == "refused" and event["error_type"] == "policy_denied"
    assert [(d["policy"], d["outcome"]) for d in event["policy"]] == [("tiny", "deny")]


def test_a_reviewer_reads_only_drafts_of_the_services_it_reviews(
    stack: StartStack, start_worker: StartWorker, redis_client: redis.Redis
) -> None:
    api = stack(
        policies=[
            {
                "name": "batch_drafts",
                "rule": "all_outputs_are_drafts",
                "reviewers": ["legal"],
                "applies_to": {"queues": ["batch"]},
            }
        ]
    ).api
    start_worker(api.config, queue="batch")
    legal = ServiceRegistry(redis_client, api.config).create_token("legal")
    final = submit(api, {"prompt": "not a draft"}).json()
    draft = submit(api, {"prompt": "a draft", "queue": "batch"}).json()
    assert final["result"]["draft"] is False and draft["result"]["draft"] is True
    with api.client(legal) as client:
        assert client.get(f"/v1/jobs/{final['id']}").status_code == 404
        assert client.post(f"/v1/jobs/{final['id']}/review", json={"decision": "approve"}).status_code == 404
        assert client.get(f"/v1/jobs/{draft['id']}").status_code == 200
