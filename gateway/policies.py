"""The policy engine: policies.yaml's rules applied to one job, as a plan plus the decisions behind it.

The engine is pure (no I/O), so the same code runs in three places: the API at admission (to
refuse early with a clear 4xx), the worker before every attempt (the check that counts: nothing
leaves the machine before it), and ``aigw policy explain``. Budgets and rate limits are counted
in Redis by :mod:`gateway.quotas`; this module only says which of them apply to a job.

Rules run in a fixed order, because each narrows what the next sees:

1. ``block_secrets``, ``allow_models``, ``allow_skills``, ``max_tokens``: refuse or clamp.
2. ``redact_pii``: mask PII with placeholders before a cloud call (restored in the answer).
3. ``if_context_contains_pii_use_sensitive_model``: whatever PII is still there routes the job to
   a sensitive (local) alias, or the job is refused: it fails closed. A service declared
   ``always_local`` (services.yaml) or a job carrying one of the rule's ``local_metadata`` tags is
   kept local before stage 2, with no detection; a detector that raises keeps the job local too
   (``on_detector_error: local``, the default) rather than failing open.
4. ``all_outputs_are_drafts``, ``log_all_requests_and_responses``: mark and record.

A policy with ``enforce: false`` is evaluated the same way and its decision recorded with
``enforced: false``, but it changes nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.config import (
    AllowModelsRule,
    AllowSkillsRule,
    AuditBodiesRule,
    BlockSecretsRule,
    Config,
    DraftsRule,
    MaxTokensRule,
    PiiRouteRule,
    PolicyConfig,
    RedactRule,
)
from gateway.errors import PolicyDeniedError
from gateway.jobs import JobRequest
from gateway.pii import SECRET_CATEGORIES, Detector, Finding, Redactor, make_detector

DecisionOutcome = Literal["allow", "deny", "route", "redact", "mark_draft", "clamp", "log"]
#: the rule whose routing keeps a job local (and whose decisions explain a local failure)
PII_ROUTE_RULE = "if_context_contains_pii_use_sensitive_model"
#: the rule name recorded when services.yaml's ``always_local`` alone keeps a job local
ALWAYS_LOCAL_RULE = "always_local"
#: builds a policy's detector from its engine and categories (a test hands in one that raises)
DetectorFactory = Callable[[str, Iterable[str] | None], Detector]


@dataclass(frozen=True)
class Decision:
    """What one policy decided for one job, and why (categories and places, never values)."""

    policy: str
    rule: str
    outcome: DecisionOutcome
    reason: str
    enforced: bool
    findings: tuple[tuple[str, str, int], ...] = ()  # (category, where, count)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "policy": self.policy,
            "rule": self.rule,
            "outcome": self.outcome,
            "enforced": self.enforced,
            "reason": self.reason,
        }
        if self.findings:
            out["findings"] = [{"category": c, "where": w, "count": n} for c, w, n in self.findings]
        return out


@dataclass(frozen=True)
class Subject:
    """A job as the policies see it: who sends it, where it asks to go, and every text that would leave."""

    service: str
    queue: str
    model: str | None = None
    task: str | None = None
    skill: str | None = None
    texts: tuple[tuple[str, str], ...] = ()  # (where, text), e.g. ("messages[1].content", "...")
    max_tokens: int | None = None
    #: the job's ``metadata`` tags (a PII rule's ``local_metadata`` keeps matching jobs local)
    metadata: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_request(
        cls,
        service: str,
        queue: str,
        request: JobRequest,
        *,
        skill: str | None = None,
        extra_texts: Iterable[tuple[str, str]] = (),
    ) -> Subject:
        texts: list[tuple[str, str]] = []
        if request.system:
            texts.append(("system", request.system))
        if request.prompt is not None:
            texts.append(("prompt", request.prompt))
        for i, message in enumerate(request.messages or []):
            texts.extend((f"messages[{i}].{where}", text) for where, text in message.texts())
        for i, text in enumerate(request.embed or []):
            texts.append((f"embed[{i}]", text))
        for i, tool in enumerate(request.tools or []):  # a tool's description and schema leave too
            texts.append((f"tools[{i}]", tool.model_dump_json()))
        if request.user:  # the end user's id is often an email
            texts.append(("user", request.user))
        for i, stop in enumerate(request.stop or []):
            texts.append((f"stop[{i}]", stop))
        for name, value in (request.inputs or {}).items():  # a skill's inputs
            if value is not None:
                texts.append(
                    (
                        f"inputs.{name}",
                        value if isinstance(value, str) else json.dumps(value, ensure_ascii=False),
                    )
                )
        texts.extend(extra_texts)
        return cls(
            service=service,
            queue=queue,
            model=request.model,
            task=request.task,
            skill=skill,
            texts=tuple(texts),
            max_tokens=request.max_tokens,
            metadata=tuple(sorted(request.metadata.items())),
        )


@dataclass
class Plan:
    """What the policies decided for one job: where it may go and what to do around the call."""

    requested_alias: str
    alias: str
    decisions: list[Decision] = field(default_factory=list)
    #: PII was found and acted on: only sensitive aliases may serve this job, on every path
    sensitive_only: bool = False
    #: aliases the job may use (None: every alias)
    allowed_models: frozenset[str] | None = None
    max_tokens: int | None = None
    draft: bool = False
    reviewers: tuple[str, ...] = ()
    audit_bodies: AuditBodiesRule | None = None
    #: mask outgoing text in order and restore the answer in reverse (one per redact_pii policy)
    redactors: list[Redactor] = field(default_factory=list)
    #: the first enforced refusal; the caller raises it
    denial: PolicyDeniedError | None = None
    #: the policies whose budgets and rate limits apply (counted by gateway.quotas)
    quotas: list[PolicyConfig] = field(default_factory=list)
    #: why the job was kept local, as the end of "kept on the local model X because ..." (no values)
    local_because: list[str] = field(default_factory=list)
    #: every (category, value) a PII rule's detector found, so the audit masks what the router saw;
    #: for masking only, never recorded or logged
    found_values: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def allows(self, alias: str) -> bool:
        return self.allowed_models is None or alias in self.allowed_models

    def outgoing(self, text: str) -> str:
        """``text`` as it may leave the machine (masked when redact_pii holds)."""
        for redactor in self.redactors:
            text = redactor.mask(text)
        return text

    def restore(self, text: str) -> str:
        """An answer with the placeholders of ``outgoing`` put back."""
        for redactor in reversed(self.redactors):
            text = redactor.restore(text)
        return text

    def record(self) -> list[dict[str, Any]]:
        return [d.to_dict() for d in self.decisions]

    def local_reason(self) -> str | None:
        """What a user is told about a job kept local: "kept on the local model `sensitive` because
        of PII (email, phone)" (categories, never values); None when nothing kept it local."""
        if not self.sensitive_only or not self.local_because:
            return None
        return f"kept on the local model `{self.alias}` because {' and '.join(self.local_because)}"

    def _keep_local_because(self, why: str) -> None:
        if why not in self.local_because:
            self.local_because.append(why)


class PolicyEngine:
    """Compiled policies.yaml: one instance per process, one ``plan`` per job attempt."""

    def __init__(self, config: Config, *, detectors: DetectorFactory | None = None) -> None:
        """``detectors`` builds each policy's detector (default: ``make_detector``, looked up when
        the engine is built, so a test can stand in a detector that raises)."""
        self.config = config
        self.policies = list(config.policies.policies)
        self._detectors: dict[str, Detector] = {}
        for policy in self.policies:
            params = policy.params
            if isinstance(params, PiiRouteRule | RedactRule):
                self._detectors[policy.name] = (
                    detectors(params.engine, params.categories)
                    if detectors is not None
                    else make_detector(params.engine, params.categories, phone_regions=params.phone_regions)
                )
            elif isinstance(params, BlockSecretsRule):
                self._detectors[policy.name] = (detectors or make_detector)(
                    "builtin", params.categories or sorted(SECRET_CATEGORIES)
                )
        # a real local model before the built-in offline one, which only stands in when nothing else can
        self._sensitive = sorted(
            (name for name, alias in config.models.models.items() if alias.sensitive),
            key=lambda name: all(d.provider == "offline" for d in config.models.models[name].deployments),
        )

    @property
    def has_reviewers(self) -> bool:
        """Whether any drafts policy names reviewers (other services that may read and review drafts)."""
        return any(isinstance(p.params, DraftsRule) and p.params.reviewers for p in self.policies)

    def _reachable(self, alias: str) -> frozenset[str]:
        """``alias`` and every alias its fallbacks can lead to (what build_chain may walk)."""
        models = self.config.models.models
        seen: set[str] = set()
        todo = [alias]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(models[name].fallbacks)
        return frozenset(seen)

    def reviewers_of(self, service: str) -> frozenset[str]:
        """Who may review ``service``'s drafts: the service itself and every listed reviewer."""
        reviewers = {service}
        for policy in self.policies:
            scope = policy.applies_to.services
            if isinstance(policy.params, DraftsRule) and (not scope or service in scope):
                reviewers.update(policy.params.reviewers)
        return frozenset(reviewers)

    def plan(self, subject: Subject) -> Plan:
        """Apply every policy that covers ``subject``; never raises for a denial (see ``Plan.denial``)."""
        alias = self.config.models.resolve_alias(subject.model, subject.task)
        plan = Plan(requested_alias=alias, alias=alias, max_tokens=subject.max_tokens)
        texts = list(subject.texts)
        reachable = self._reachable(alias)
        applicable = [p for p in self.policies if _applies(p, subject, alias, reachable)]
        for policy in applicable:
            self._gate(policy, subject, plan, texts)
        # always-local jobs move before redact_pii, so a local model gets the text unmasked
        decided = self._always_local(applicable, subject, plan)
        for policy in applicable:
            if isinstance(policy.params, RedactRule):
                texts = self._redact(policy, policy.params, plan, texts)
        for policy in applicable:
            if isinstance(policy.params, PiiRouteRule) and policy.name not in decided:
                self._route_pii(policy, policy.params, subject, plan, texts)
        for policy in applicable:
            self._mark(policy, plan)
        return plan

    # --- stage 1: refuse or clamp -----------------------------------------------------------

    def _gate(self, policy: PolicyConfig, subject: Subject, plan: Plan, texts: list[tuple[str, str]]) -> None:
        params = policy.params
        if isinstance(params, BlockSecretsRule):
            found = _scan(self._detectors[policy.name], texts)
            if found:
                _decide(plan, policy, "deny", f"credentials found: {_describe(found)}", found)
            else:
                _decide(plan, policy, "allow", "no credentials found")
        elif isinstance(params, AllowModelsRule):
            allowed = frozenset(params.models)
            if policy.enforce:
                plan.allowed_models = (
                    allowed if plan.allowed_models is None else plan.allowed_models & allowed
                )
            if plan.requested_alias in allowed:
                _decide(
                    plan, policy, "allow", f"{plan.requested_alias} is allowed; fallbacks limited to these"
                )
            else:
                _decide(
                    plan,
                    policy,
                    "deny",
                    f"service {subject.service} may not use model {plan.requested_alias} "
                    f"(allowed: {', '.join(params.models)})",
                )
        elif isinstance(params, AllowSkillsRule):
            if subject.skill is None or subject.skill in params.skills:
                _decide(
                    plan, policy, "allow", "no skill" if subject.skill is None else f"{subject.skill} allowed"
                )
            else:
                _decide(
                    plan,
                    policy,
                    "deny",
                    f"service {subject.service} may not use skill {subject.skill} "
                    f"(allowed: {', '.join(params.skills)})",
                )
        elif isinstance(params, MaxTokensRule):
            self._cap_tokens(policy, params, plan)
        elif policy.rule in ("budget", "rate_limit"):
            plan.quotas.append(policy)

    def _cap_tokens(self, policy: PolicyConfig, params: MaxTokensRule, plan: Plan) -> None:
        asked = plan.max_tokens or self.config.gateway.jobs.max_output_tokens
        if asked <= params.limit:
            _decide(plan, policy, "allow", f"max_tokens {asked} is within {params.limit}")
        elif params.mode == "reject" and plan.max_tokens is not None:  # the default is not the job's ask
            _decide(plan, policy, "deny", f"max_tokens {asked} is over the limit of {params.limit}")
        else:
            _decide(plan, policy, "clamp", f"max_tokens {asked} lowered to {params.limit}")
            if policy.enforce:
                plan.max_tokens = params.limit

    # --- stage 2: redact ------------------------------------------------------------------------

    def _redact(
        self, policy: PolicyConfig, params: RedactRule, plan: Plan, texts: list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        if self.config.models.models[plan.alias].sensitive:
            _decide(plan, policy, "allow", f"{plan.alias} is a sensitive (local) model; nothing masked")
            return texts
        try:
            found = _scan(self._detectors[policy.name], texts, plan.found_values)
        except Exception as exc:  # a broken detector must not let the text leave unmasked
            self._keep_local(
                policy, subject=None, plan=plan, route_to=None,
                reason=f"PII detection failed ({type(exc).__name__}); kept local rather than sent unmasked",
                why="PII detection failed",
            )  # fmt: skip
            return texts
        if not found:
            _decide(plan, policy, "allow", "no PII found")
            return texts
        _decide(plan, policy, "redact", f"masked before the call: {_describe(found)}", found)
        if not policy.enforce:
            return texts
        redactor = Redactor(self._detectors[policy.name])
        plan.redactors.append(redactor)
        return [(where, redactor.mask(text)) for where, text in texts]

    # --- stage 3: PII -> sensitive model ----------------------------------------------------------

    def _route_pii(
        self,
        policy: PolicyConfig,
        params: PiiRouteRule,
        subject: Subject,
        plan: Plan,
        texts: list[tuple[str, str]],
    ) -> None:
        try:
            found = _scan(self._detectors[policy.name], texts, plan.found_values)
        except Exception as exc:  # never fail open: the job stays local (or is refused)
            failed = f"PII detection failed ({type(exc).__name__})"  # the type only: a message may quote text
            if params.on_detector_error == "deny":
                _decide(plan, policy, "deny", f"{failed}; refused (on_detector_error: deny)")
                return
            self._keep_local(
                policy, subject, plan, params.route_to, f"{failed}; kept local", "PII detection failed"
            )
            return
        if not found:
            _decide(plan, policy, "allow", "no PII found")
            return
        categories = ", ".join(sorted({category for category, _where, _count in found}))
        self._keep_local(
            policy,
            subject,
            plan,
            params.route_to,
            f"PII ({_describe(found)})",
            f"of PII ({categories})",
            found,
        )

    def _always_local(self, applicable: list[PolicyConfig], subject: Subject, plan: Plan) -> set[str]:
        """Keep a job local that its service (``always_local``) or its metadata tags (a PII rule's
        ``local_metadata``) declare sensitive; returns the PII policies that have decided."""
        entry = self.config.services.services.get(subject.service)
        service = f"service {subject.service}" if entry is not None and entry.always_local else None
        tags = dict(subject.metadata)
        decided: set[str] = set()
        for policy in applicable:
            params = policy.params
            if not isinstance(params, PiiRouteRule):
                continue
            tag = next(
                (f"metadata {k}={v}" for k, v in params.local_metadata.items() if tags.get(k) == v), None
            )
            because = service or tag
            if because is not None:
                self._keep_local(
                    policy,
                    subject,
                    plan,
                    params.route_to,
                    f"always local: {because}",
                    f"{because} is always local",
                )
                decided.add(policy.name)
        if service is not None and not (plan.sensitive_only or plan.denial):
            # services.yaml's declaration holds with no PII rule (or one in monitor mode) covering the job
            self._keep_local(
                None, subject, plan, None, f"always local: {service}", f"{service} is always local"
            )
        return decided

    def _keep_local(
        self,
        policy: PolicyConfig | None,
        subject: Subject | None,
        plan: Plan,
        route_to: str | None,
        reason: str,
        why: str,
        found: Sequence[tuple[str, str, int]] = (),
    ) -> None:
        """Route ``plan`` to a sensitive alias (or refuse it when none is allowed) and record why;
        ``policy`` None is services.yaml's ``always_local`` on its own, always enforced."""
        enforced = policy is None or policy.enforce
        outcome: DecisionOutcome
        if self.config.models.models[plan.alias].sensitive:
            outcome, text = "route", f"{reason}; {plan.alias} is sensitive, kept local"
            target: str | None = plan.alias
        else:
            target = self._sensitive_target(route_to, subject.task if subject else None, plan)
            outcome = "route" if target is not None else "deny"
            text = (
                f"{reason}; routed from {plan.alias} to {target}"
                if target is not None
                else f"{reason} and no sensitive model is allowed for this job; refused rather than sent "
                "to a cloud model"
            )
        if policy is None:
            plan.decisions.append(Decision("services.yaml", ALWAYS_LOCAL_RULE, outcome, text, True))
            if outcome == "deny" and plan.denial is None:
                plan.denial = PolicyDeniedError(f"services.yaml: {text}", rule=ALWAYS_LOCAL_RULE)
        else:
            _decide(plan, policy, outcome, text, found)
        if outcome == "route" and enforced and target is not None:
            plan.alias = target
            plan.sensitive_only = True
            plan._keep_local_because(why)

    def _sensitive_target(self, route_to: str | None, task: str | None, plan: Plan) -> str | None:
        """The sensitive alias to use: ``route_to``, else one serving the task, else the first real one."""
        candidates = [a for a in self._sensitive if plan.allows(a)]
        if route_to is not None:
            return route_to if route_to in candidates else None
        if task is not None:
            for name in candidates:
                if task in self.config.models.models[name].use_for:
                    return name
        return candidates[0] if candidates else None

    # --- stage 4: mark and record -------------------------------------------------------------

    def _mark(self, policy: PolicyConfig, plan: Plan) -> None:
        params = policy.params
        if isinstance(params, DraftsRule):
            _decide(plan, policy, "mark_draft", "the output is a draft until a reviewer approves it")
            if policy.enforce:
                plan.draft = True
                plan.reviewers = tuple(sorted({*plan.reviewers, *params.reviewers}))
        elif isinstance(params, AuditBodiesRule):
            masked = "credentials and PII masked" if params.mask_pii else "credentials masked"
            _decide(plan, policy, "log", f"request and response bodies go to the audit log ({masked})")
            if policy.enforce:
                plan.audit_bodies = params


def _applies(policy: PolicyConfig, subject: Subject, alias: str, reachable: frozenset[str]) -> bool:
    """Whether ``policy`` covers the job. A PII rule scoped to models covers a job whose chain can
    reach one of them (a fallback too), since that is where the content could go."""
    scope = policy.applies_to
    guards_content = isinstance(policy.params, PiiRouteRule | RedactRule)
    models_match = alias in scope.models or (guards_content and not reachable.isdisjoint(scope.models))
    return (
        (not scope.services or subject.service in scope.services)
        and (not scope.queues or subject.queue in scope.queues)
        and (not scope.models or models_match)
        and (not scope.skills or subject.skill in scope.skills)
    )


def _decide(
    plan: Plan,
    policy: PolicyConfig,
    outcome: DecisionOutcome,
    reason: str,
    findings: Sequence[tuple[str, str, int]] = (),
) -> None:
    plan.decisions.append(
        Decision(policy.name, policy.rule, outcome, reason, policy.enforce, tuple(findings))
    )
    if outcome == "deny" and policy.enforce and plan.denial is None:
        plan.denial = PolicyDeniedError(f"policy {policy.name}: {reason}", rule=policy.name)


def _scan(
    detector: Detector, texts: Iterable[tuple[str, str]], values: set[tuple[str, str]] | None = None
) -> list[tuple[str, str, int]]:
    """(category, where, count) for every category found in every text; values go only to
    ``values`` (the plan's, for the audit's masking), never into a decision."""
    out: list[tuple[str, str, int]] = []
    for where, text in texts:
        findings: list[Finding] = detector.find(text)
        if values is not None:
            values.update((f.category, f.value) for f in findings)
        for category, count in sorted(Counter(f.category for f in findings).items()):
            out.append((category, where, count))
    return out


def _describe(found: Sequence[tuple[str, str, int]]) -> str:
    by_where: dict[str, list[str]] = {}
    for category, where, _count in found:
        by_where.setdefault(where, []).append(category)
    return "; ".join(f"{','.join(cats)} in {where}" for where, cats in by_where.items())
