"""Admission: what the policies and quotas refuse at the door, before a job is queued.

The API's check is for the caller (a 403 or 429 it can act on); the worker plans again before
every attempt, and that is the check that counts. The plan is not stored with the job, only
the quota decisions taken here (``QueuedJob.admission``).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway import metrics
from gateway.api.dependencies import Gateway
from gateway.audit import append_event, refusal_event
from gateway.chat import CAPABILITY_FIELDS
from gateway.config import Config
from gateway.errors import (
    PolicyDeniedError,
    QuotaExceededError,
    UnsupportedContentError,
    UnsupportedFieldError,
    ValidationError,
)
from gateway.jobs import JobRequest, JobView
from gateway.policies import Decision, Plan, Subject
from gateway.skills import Skill, SkillCatalog, parse_ref, routed_request, validate_inputs


@dataclass(frozen=True)
class Admission:
    plan: Plan
    decisions: list[Decision]


def admit(gw: Gateway, service: str, request: JobRequest) -> Admission:
    """Refuse early what the policies refuse (the worker checks again before anything leaves).

    A refusal is audited: a service sending credentials or running over its budget is worth a line.
    """
    queue = gw.store.queue_for(service, request)
    _check_notify(gw.config, request)
    skill = _check_skill(gw.skills, request)
    routed = routed_request(request, skill) if skill is not None else request
    plan = gw.engine.plan(Subject.from_request(service, queue, routed, skill=skill.name if skill else None))
    decisions: list[Decision] = []
    if plan.denial is None:
        check_capabilities(gw.config, plan.alias, request)
    try:
        if plan.denial is not None:
            raise plan.denial
        if plan.quotas:
            gw.quotas.admit(service, plan, request.size_bytes(), decisions)
    except (PolicyDeniedError, QuotaExceededError) as exc:
        refused = [*plan.record(), *(d.to_dict() for d in decisions)]
        with gw.connection.pipeline() as pipe:  # the audit line and the metrics in one round trip
            append_event(pipe, refusal_event(service, queue, plan.alias, request, exc, refused))
            metrics.write(pipe, metrics.refused(service, exc.type, refused))
            pipe.execute()
        raise
    return Admission(plan, decisions)


def check_capabilities(config: Config, alias: str, request: JobRequest) -> None:
    """Refuse what the routed model cannot honour (a 400 naming the field; images a 422), rather
    than drop it: one of the alias's own deployments must do everything the request asks.
    Fallbacks that cannot are skipped by the worker, never sent a request cut down to fit."""
    needs = request.needs()
    deployments = config.models.models[alias].deployments
    if not needs or any(all(d.supports(c) for c in needs) for d in deployments):
        return
    lacking = sorted(c for c in needs if not any(d.supports(c) for d in deployments)) or sorted(
        c for c in needs if not deployments[0].supports(c)
    )
    kinds = sorted({d.provider for d in deployments})
    where = f"model {alias!r} ({', '.join(kinds)})"
    if "images" in lacking:
        raise UnsupportedContentError(
            f"{where} cannot take images; send text only or pick a model whose deployments take images",
            param=CAPABILITY_FIELDS["images"],
        )
    if "embeddings" in lacking:
        raise UnsupportedFieldError(
            f"{where} does not embed; name an alias whose deployments do (`capabilities: {{embeddings: "
            "true}` in models.yaml; the shipped one is `embeddings`)",
            param=CAPABILITY_FIELDS["embeddings"],
        )
    field = CAPABILITY_FIELDS[lacking[0]]
    what = "" if lacking == [field] else f" ({', '.join(lacking)})"
    raise UnsupportedFieldError(
        f"{where} cannot honour '{field}'{what}; remove it or pick another model "
        "(models.yaml capabilities say what each deployment can do)",
        param=field,
    )


async def enqueue_admitted(gw: Gateway, service: str, job: JobRequest) -> tuple[str, JobView | None]:
    """Admit and enqueue a job, or find the one its idempotency key already names (no second
    admission, no second rate-limit hit); the view of a job just enqueued, None for a replay."""
    replayed = gw.store.replayed(service, job)
    if replayed is not None:
        return replayed, None
    admission = admit(gw, service, job)
    job_id, created = await gw.store.enqueue_grouped(
        service,
        job,
        admission=[d.to_dict() for d in admission.decisions],
        rate_limit=gw.quotas.concurrency_limit(service, admission.plan),
    )
    return job_id, gw.store.queued_view(job_id, service, job) if created else None


def _check_notify(config: Config, request: JobRequest) -> None:
    channels = config.channels
    for name in request.notify:
        if channels.deliverable(name) is None:
            known = ", ".join(c.name for c in channels.channels if c.type != "cli") or "none configured"
            raise ValidationError(f"notify: {name!r} is not a slack or webhook channel (known: {known})")


def _check_skill(skills: SkillCatalog, request: JobRequest) -> Skill | None:
    """A skill job's skill exists (404) and its inputs keep the contract (422), before it is queued."""
    if request.skill is None:
        return None
    name, version = parse_ref(request.skill)
    skill = skills.load(name, version)
    validate_inputs(skill.spec, request.inputs or {})
    return skill
