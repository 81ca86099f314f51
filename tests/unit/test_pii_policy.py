"""The PII rule's safety nets (always-local services and tags, a detector that raises), the reason a
local failure gives, and the audit's masking of every span the policies found (plans only, no sockets)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import Config, load_config
from gateway.errors import ProviderUnavailableError, QuotaExceededError
from gateway.jobs import JobRequest
from gateway.pii import Detector, Finding, Redactor, make_detector
from gateway.policies import ALWAYS_LOCAL_RULE, PII_ROUTE_RULE, Plan, PolicyEngine, Subject
from workers.error_text import explain_local_failure
from workers.explain import explain
from workers.pipeline import _EverySpan

PII_RULE = {"name": "local", "rule": PII_ROUTE_RULE}
CLEAN = "Summarise the quarterly roadmap in three bullet points."
EMAIL = "jane.doe@example.com"
PHONE = "+44 20 7946 0958"

Make = Callable[..., Config]


@pytest.fixture
def make(config_dir: Path) -> Make:
    """The shipped models (general, openai = cloud; sensitive, offline = local) with given files."""

    def build(policies: list[dict[str, Any]], services: dict[str, Any] | None = None) -> Config:
        (config_dir / "policies.yaml").write_text(yaml.safe_dump({"policies": policies}))
        if services is not None:
            (config_dir / "services.yaml").write_text(yaml.safe_dump({"services": services}))
        return load_config(config_dir)

    return build


class Raising:
    """A detector that fails the way a broken engine would; the message quotes the text it saw."""

    name = "raising"

    def __init__(self) -> None:
        self.calls = 0

    def find(self, text: str) -> list[Finding]:
        self.calls += 1
        raise RuntimeError(f"engine crashed on {text!r}")


class Counting:
    """The builtin detector, counting the texts it is asked about."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0
        self._inner = make_detector("builtin")

    def find(self, text: str) -> list[Finding]:
        self.calls += 1
        return self._inner.find(text)


def factory(detector: Detector) -> Callable[[str, Iterable[str] | None], Detector]:
    return lambda _engine, _categories: detector


def plan_for(
    config: Config,
    text: str = CLEAN,
    *,
    service: str = "svc",
    detector: Detector | None = None,
    **request: Any,
) -> Plan:
    job = JobRequest.model_validate({"prompt": text, **request})
    engine = PolicyEngine(config) if detector is None else PolicyEngine(config, detectors=factory(detector))
    return engine.plan(Subject.from_request(service, "interactive", job))


def test_pii_routes_local_and_says_why_with_categories_only(make: Make) -> None:
    plan = plan_for(make([PII_RULE]), f"Call {PHONE} or write to {EMAIL}")
    assert (plan.alias, plan.sensitive_only) == ("sensitive", True)
    reason = plan.local_reason()
    assert reason == "kept on the local model `sensitive` because of PII (email, phone)"
    assert EMAIL not in repr(plan) and EMAIL not in str(plan.record())
    assert plan_for(make([PII_RULE])).local_reason() is None  # clean: nothing kept it local


def test_an_always_local_service_stays_local_with_no_detection(make: Make) -> None:
    config = make([PII_RULE], services={"billing": {"always_local": True}, "svc": {}})
    counting = Counting()
    plan = plan_for(config, CLEAN, service="billing", detector=counting)
    assert (plan.alias, plan.sensitive_only) == ("sensitive", True)
    assert counting.calls == 0
    [d] = plan.record()
    assert d["policy"] == "local" and d["outcome"] == "route" and d["enforced"] is True
    assert d["reason"] == "always local: service billing; routed from general to sensitive"
    assert (
        plan.local_reason() == "kept on the local model `sensitive` because service billing is always local"
    )
    other = plan_for(config, CLEAN, service="svc", detector=counting)
    assert other.alias == "general" and counting.calls == 1


def test_always_local_holds_with_no_pii_rule_and_with_one_in_monitor_mode(make: Make) -> None:
    services = {"billing": {"always_local": True}}
    for policies in ([], [{**PII_RULE, "enforce": False}]):
        plan = plan_for(make(policies, services=services), CLEAN, service="billing")
        assert (plan.alias, plan.sensitive_only) == ("sensitive", True), policies
        last = plan.record()[-1]
        assert (last["policy"], last["rule"], last["outcome"]) == (
            "services.yaml",
            ALWAYS_LOCAL_RULE,
            "route",
        )
        assert last["enforced"] is True


def test_always_local_with_no_sensitive_model_allowed_is_refused(make: Make) -> None:
    policies = [PII_RULE, {"name": "cloud_only", "rule": "allow_models", "models": ["general"]}]
    plan = plan_for(make(policies, services={"billing": {"always_local": True}}), service="billing")
    assert plan.denial is not None and plan.alias == "general"
    assert "always local: service billing and no sensitive model is allowed" in plan.denial.message


def test_a_metadata_tag_keeps_a_job_local(make: Make) -> None:
    config = make([{**PII_RULE, "local_metadata": {"data_class": "restricted"}}])
    plan = plan_for(config, CLEAN, metadata={"data_class": "restricted", "team": "ops"})
    assert (plan.alias, plan.sensitive_only) == ("sensitive", True)
    assert plan.record()[0]["reason"].startswith("always local: metadata data_class=restricted;")
    assert plan.local_reason() == (
        "kept on the local model `sensitive` because metadata data_class=restricted is always local"
    )
    assert plan_for(config, CLEAN, metadata={"data_class": "public"}).alias == "general"
    assert plan_for(config, CLEAN).alias == "general"


def test_always_local_comes_before_redaction_so_the_local_model_reads_the_text(make: Make) -> None:
    policies = [{"name": "mask", "rule": "redact_pii"}, PII_RULE]
    plan = plan_for(make(policies, services={"billing": {"always_local": True}}), EMAIL, service="billing")
    assert plan.alias == "sensitive" and not plan.redactors
    assert plan.outgoing(EMAIL) == EMAIL


def test_a_detector_that_raises_keeps_the_job_local_by_default(make: Make) -> None:
    raising = Raising()
    plan = plan_for(make([PII_RULE]), f"write to {EMAIL}", detector=raising)
    assert raising.calls == 1 and plan.denial is None
    assert (plan.alias, plan.sensitive_only) == ("sensitive", True)
    [d] = plan.record()
    assert d["outcome"] == "route" and d["reason"].startswith(
        "PII detection failed (RuntimeError); kept local"
    )
    assert EMAIL not in str(plan.record())  # the exception's message quoted the text: not recorded
    assert plan.local_reason() == "kept on the local model `sensitive` because PII detection failed"


def test_on_detector_error_deny_refuses_the_job(make: Make) -> None:
    plan = plan_for(make([{**PII_RULE, "on_detector_error": "deny"}]), EMAIL, detector=Raising())
    assert plan.denial is not None and plan.alias == "general"
    assert "PII detection failed (RuntimeError); refused" in plan.denial.message
    assert EMAIL not in plan.denial.message


def test_a_redact_detector_that_raises_keeps_the_job_local_rather_than_unmasked(make: Make) -> None:
    plan = plan_for(make([{"name": "mask", "rule": "redact_pii"}]), EMAIL, detector=Raising())
    assert (plan.alias, plan.sensitive_only) == ("sensitive", True) and not plan.redactors


def test_a_local_failure_says_why_and_other_failures_do_not(make: Make) -> None:
    plan = plan_for(make([PII_RULE]), f"Call {PHONE} or write to {EMAIL}")
    error = ProviderUnavailableError("ConnectError talking to ollama", deployment="sensitive/0:ollama")
    explain_local_failure(error, plan)
    assert error.message == (
        "kept on the local model `sensitive` because of PII (email, phone); it is never sent to a cloud "
        "model: ConnectError talking to ollama"
    )
    explain_local_failure(error, plan)  # said once, not twice
    assert error.message.count("kept on") == 1
    quota = QuotaExceededError("budget spent", rule="spend", retry_after=60.0)
    explain_local_failure(quota, plan)
    assert quota.message == "budget spent"


def test_policy_explain_reports_why_a_job_is_kept_local(make: Make) -> None:
    config = make([PII_RULE], services={"billing": {"always_local": True}})
    job = JobRequest.model_validate({"prompt": f"write to {EMAIL}"})
    report = explain(config, "svc", job, environ={})
    assert report["kept_local"] == "kept on the local model `sensitive` because of PII (email)"
    assert EMAIL not in str(report)
    billing = explain(config, "billing", JobRequest.model_validate({"prompt": CLEAN}), environ={})
    assert (
        billing["kept_local"] == "kept on the local model `sensitive` because service billing is always local"
    )


class Addresses:
    """A router's detector that knows one address the log detector does not (as a better engine would)."""

    name = "addresses"
    ADDRESS = "Hauptstraße 12, 10115 Berlin"

    def find(self, text: str) -> list[Finding]:
        at = text.find(self.ADDRESS)
        return [] if at < 0 else [Finding("postal_address", at, at + len(self.ADDRESS), self.ADDRESS)]


def test_the_audit_masks_every_span_the_log_detector_or_the_router_found(make: Make) -> None:
    row = f"42;Jana Nowak;{Addresses.ADDRESS};{EMAIL};{PHONE}"
    plan = plan_for(make([PII_RULE]), f"Clean this CSV row:\n{row}", detector=Addresses())
    assert plan.alias == "sensitive"
    assert ("postal_address", Addresses.ADDRESS) in plan.found_values
    log = Redactor(_EverySpan(make_detector("builtin"), plan.found_values))
    masked = log.mask(row)
    for value in (Addresses.ADDRESS, EMAIL, PHONE):
        assert value not in masked, masked
    assert masked.startswith("42;Jana Nowak;[POSTAL_ADDRESS_1];[EMAIL_1];")
    # the router's value is masked wherever it appears, the answer too
    assert Addresses.ADDRESS not in log.mask(f"The customer lives at {Addresses.ADDRESS}.")


def test_overlapping_spans_merge_into_one_mask() -> None:
    class Known:
        name = "known"

        def find(self, text: str) -> list[Finding]:
            return []

    text = f"owner {EMAIL} x"
    spans = _EverySpan(
        Known(), {("email", EMAIL), ("email", "doe@example.com"), ("url_password", "jane.doe@ex")}
    )
    [finding] = spans.find(text)
    assert text[finding.start : finding.end] == EMAIL
