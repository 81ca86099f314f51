"""The policy engine, rule by rule, enforced and in monitor mode (no sockets: plans only)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import Config, load_config
from gateway.errors import ConfigError
from gateway.jobs import JobRequest
from gateway.policies import Plan, PolicyEngine, Subject

EMAIL = "Please reply to jane.doe@example.com before Friday."
CLEAN = "Summarise the quarterly roadmap in three bullet points."
KEY = "deploy with sk-ant-api03-" + "Zx8Qm2Lr7Vt4Np9Kc3Hs6Jd1Fb5Gw0Ye" + " now"

Make = Callable[..., Config]


@pytest.fixture
def make(config_dir: Path) -> Make:
    """The shipped models (general, openai = cloud; sensitive, offline = local) with given policies."""

    def build(*policies: dict[str, Any]) -> Config:
        named = [{"name": f"p{i}", **p} for i, p in enumerate(policies)]
        (config_dir / "policies.yaml").write_text(yaml.safe_dump({"policies": named}))
        return load_config(config_dir)

    return build


def plan_for(config: Config, text: str = CLEAN, service: str = "svc", **request: Any) -> Plan:
    job = JobRequest.model_validate({"prompt": text, **request})
    return PolicyEngine(config).plan(Subject.from_request(service, "interactive", job))


def decision(plan: Plan, policy: str = "p0") -> dict[str, Any]:
    return next(d for d in plan.record() if d["policy"] == policy)


# --- the seed article's three --------------------------------------------------------------------------


def test_shipped_policies_route_pii_local_mark_drafts_and_log_bodies(config_dir: Path) -> None:
    config = load_config(config_dir)
    clean = plan_for(config, CLEAN)
    assert (clean.alias, clean.sensitive_only, clean.draft) == ("general", False, True)
    assert clean.audit_bodies is not None
    pii = plan_for(config, EMAIL)
    assert (pii.alias, pii.sensitive_only) == ("sensitive", True)
    routed = decision(pii, "sensitive_data_local")
    assert routed["outcome"] == "route" and routed["enforced"] is True
    assert routed["findings"] == [{"category": "email", "where": "prompt", "count": 1}]
    assert "jane.doe" not in str(pii.record())


# --- if_context_contains_pii_use_sensitive_model ------------------------------------------------


@pytest.mark.parametrize(
    ("request_fields", "where"),
    [
        ({"prompt": EMAIL}, "prompt"),
        ({"prompt": CLEAN, "system": f"The customer is {EMAIL}"}, "system"),
        (
            {"messages": [{"role": "user", "content": CLEAN}, {"role": "assistant", "content": EMAIL}]},
            "messages[1].content",
        ),
    ],
)
def test_pii_in_any_field_routes_to_a_sensitive_model(
    make: Make, request_fields: dict[str, Any], where: str
) -> None:
    config = make({"rule": "if_context_contains_pii_use_sensitive_model"})
    job = JobRequest.model_validate({"model": "openai", **request_fields})
    plan = PolicyEngine(config).plan(Subject.from_request("svc", "interactive", job))
    assert plan.alias == "sensitive" and plan.sensitive_only
    assert decision(plan)["findings"][0]["where"] == where


def test_pii_rule_in_monitor_mode_records_but_keeps_the_cloud_model(make: Make) -> None:
    config = make({"rule": "if_context_contains_pii_use_sensitive_model", "enforce": False})
    plan = plan_for(config, EMAIL)
    assert plan.alias == "general" and not plan.sensitive_only
    assert decision(plan)["outcome"] == "route" and decision(plan)["enforced"] is False


def test_pii_with_no_allowed_sensitive_model_fails_closed(make: Make) -> None:
    config = make(
        {"rule": "if_context_contains_pii_use_sensitive_model"},
        {"rule": "allow_models", "models": ["general", "openai"]},
    )
    plan = plan_for(config, EMAIL)
    assert plan.denial is not None and plan.denial.type == "policy_denied"
    assert "no sensitive model" in plan.denial.message and "jane.doe" not in plan.denial.message
    assert plan_for(config, CLEAN).denial is None


def test_pii_route_to_and_task_pick_the_sensitive_alias(make: Make) -> None:
    config = make({"rule": "if_context_contains_pii_use_sensitive_model", "route_to": "offline"})
    assert plan_for(config, EMAIL).alias == "offline"
    by_task = make({"rule": "if_context_contains_pii_use_sensitive_model"})
    assert plan_for(by_task, EMAIL, task="customer_data").alias == "sensitive"


# --- redact_pii --------------------------------------------------------------------------------


def test_redact_masks_before_a_cloud_call_and_restores_the_answer(make: Make) -> None:
    config = make({"rule": "redact_pii"}, {"rule": "if_context_contains_pii_use_sensitive_model"})
    plan = plan_for(config, EMAIL)
    assert plan.alias == "general" and not plan.sensitive_only  # masked, so nothing left to route
    assert plan.redactors
    sent = plan.outgoing(EMAIL)
    assert "jane.doe@example.com" not in sent and "[EMAIL_1]" in sent
    assert plan.restore(f"I wrote to {sent.split()[3]}") == "I wrote to jane.doe@example.com"
    assert decision(plan, "p0")["outcome"] == "redact" and decision(plan, "p1")["outcome"] == "allow"


def test_two_redact_policies_each_mask_their_categories(make: Make) -> None:
    config = make(
        {"rule": "redact_pii", "categories": ["email"]}, {"rule": "redact_pii", "categories": ["phone"]}
    )
    plan = plan_for(config, "mail jane.doe@example.com or call +44 20 7946 0958")
    sent = plan.outgoing("mail jane.doe@example.com or call +44 20 7946 0958")
    assert sent == "mail [EMAIL_1] or call [PHONE_1]"
    assert plan.restore(sent) == "mail jane.doe@example.com or call +44 20 7946 0958"


def test_a_params_key_is_checked_like_any_other_parameter(config_dir: Path) -> None:
    (config_dir / "policies.yaml").write_text(
        yaml.safe_dump({"policies": [{"name": "b", "rule": "budget", "limit_usd": 1, "params": {}}]})
    )
    with pytest.raises(ConfigError, match="params: unknown parameter"):
        load_config(config_dir)


def test_redact_leaves_a_sensitive_model_alone_and_monitor_masks_nothing(make: Make) -> None:
    config = make({"rule": "redact_pii"})
    assert not plan_for(config, EMAIL, model="sensitive").redactors
    monitor = make({"rule": "redact_pii", "enforce": False})
    plan = plan_for(monitor, EMAIL)
    assert not plan.redactors and plan.outgoing(EMAIL) == EMAIL
    assert decision(plan)["outcome"] == "redact" and decision(plan)["enforced"] is False


# --- block_secrets, allow_*, max_tokens ---------------------------------------------------------


def test_block_secrets_refuses_credentials_without_echoing_them(make: Make) -> None:
    config = make({"rule": "block_secrets"})
    plan = plan_for(config, KEY)
    assert plan.denial is not None and "api_key in prompt" in plan.denial.message
    assert "Zx8Qm2" not in plan.denial.message and "Zx8Qm2" not in str(plan.record())
    assert plan_for(config, CLEAN).denial is None
    monitor = plan_for(make({"rule": "block_secrets", "enforce": False}), KEY)
    assert monitor.denial is None and decision(monitor)["outcome"] == "deny"


def test_allow_models_refuses_other_models_and_narrows_fallbacks(make: Make) -> None:
    config = make({"rule": "allow_models", "models": ["general"], "applies_to": {"services": ["svc"]}})
    plan = plan_for(config, CLEAN)
    assert plan.denial is None and plan.allows("general") and not plan.allows("offline")
    refused = plan_for(config, CLEAN, model="openai")
    assert refused.denial is not None and "may not use model openai" in refused.denial.message
    other_service = plan_for(config, CLEAN, service="other", model="openai")
    assert other_service.denial is None and other_service.allowed_models is None


def test_allow_skills_refuses_other_skills(make: Make) -> None:
    config = make({"rule": "allow_skills", "skills": ["summarize"]})
    engine = PolicyEngine(config)
    job = JobRequest(prompt=CLEAN)
    allowed = engine.plan(Subject.from_request("svc", "interactive", job, skill="summarize"))
    refused = engine.plan(Subject.from_request("svc", "interactive", job, skill="extract"))
    assert allowed.denial is None
    assert refused.denial is not None and "may not use skill extract" in refused.denial.message


def test_max_tokens_clamps_or_rejects(make: Make) -> None:
    clamp = make({"rule": "max_tokens", "limit": 100})
    assert plan_for(clamp, max_tokens=500).max_tokens == 100
    assert plan_for(clamp).max_tokens == 100  # the configured default (1024) is capped too
    assert plan_for(clamp, max_tokens=50).max_tokens == 50
    reject = make({"rule": "max_tokens", "limit": 100, "mode": "reject"})
    refused = plan_for(reject, max_tokens=500)
    assert refused.denial is not None and "over the limit of 100" in refused.denial.message
    unasked = plan_for(reject)  # no max_tokens in the job: the default is clamped, not refused
    assert unasked.denial is None and unasked.max_tokens == 100
    monitor = make({"rule": "max_tokens", "limit": 100, "enforce": False})
    assert plan_for(monitor, max_tokens=500).max_tokens == 500


# --- drafts, bodies, scope ----------------------------------------------------------------------


def test_drafts_name_their_reviewers(make: Make) -> None:
    config = make({"rule": "all_outputs_are_drafts", "reviewers": ["legal"]})
    plan = plan_for(config)
    assert plan.draft and decision(plan)["outcome"] == "mark_draft"
    assert PolicyEngine(config).reviewers_of("svc") == {"svc", "legal"}
    assert not plan_for(make({"rule": "all_outputs_are_drafts", "enforce": False})).draft


def test_applies_to_scopes_a_policy(make: Make) -> None:
    config = make(
        {"rule": "block_secrets", "applies_to": {"services": ["billing"], "queues": ["interactive"]}},
        {"rule": "all_outputs_are_drafts", "applies_to": {"models": ["openai"]}},
    )
    assert plan_for(config, KEY, service="billing").denial is not None
    assert plan_for(config, KEY, service="search").denial is None
    assert plan_for(config, CLEAN, model="openai").draft
    assert not plan_for(config, CLEAN).draft


def test_budget_and_rate_limit_policies_are_handed_to_quotas(make: Make) -> None:
    config = make({"rule": "budget", "limit_usd": 5}, {"rule": "rate_limit", "requests_per_minute": 10})
    assert [p.rule for p in plan_for(config).quotas] == ["budget", "rate_limit"]


def test_a_pii_rule_scoped_to_a_model_covers_jobs_that_could_fall_back_to_it(make: Make) -> None:
    # general's fallbacks are [openai, offline]: PII sent to general could reach openai
    config = make(
        {"rule": "if_context_contains_pii_use_sensitive_model", "applies_to": {"models": ["openai"]}}
    )
    assert plan_for(config, EMAIL, model="general").alias == "sensitive"
    scoped_block = make({"rule": "block_secrets", "applies_to": {"models": ["openai"]}})
    assert (
        plan_for(scoped_block, KEY, model="general").denial is None
    )  # other rules match the alias asked for
