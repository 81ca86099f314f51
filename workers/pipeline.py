"""The job pipeline: one queued request -> route -> provider calls -> result and audit event.

The worker calls a ``JobPipeline`` for every job. A retryable provider failure moves on to the
next deployment in the chain; when the chain is exhausted the last retryable error is raised and
the worker hands the job back to RQ, which requeues it with backoff. Every attempt leaves one
audit event, appended to the Redis stream before the result is written (at-least-once: the
audit writer drops a re-delivered duplicate).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from loguru import logger
from rq.job import Job

from gateway import keys, notifications
from gateway.audit import AuditEvent, Status, append_event, request_sha256
from gateway.config import Config
from gateway.errors import (
    GatewayError,
    JobTimeoutError,
    PolicyDeniedError,
    ProviderAuthError,
    ProviderError,
    SkillFailedError,
    SkillTimeoutError,
)
from gateway.jobs import ApprovedDraft, Attempt, JobRequest, JobResult, Message, QueuedJob, Usage
from gateway.pii import SECRET_CATEGORIES, Detector, Redactor, make_detector
from gateway.policies import Decision, Plan, PolicyEngine, Subject
from gateway.quotas import Holds, Quotas
from gateway.settings import Settings
from gateway.skills import SkillCatalog, parse_ref, routed_request, validate_inputs
from workers.breaker import Breakers
from workers.channels import Notifier
from workers.providers.base import Completion, CompletionRequest, Provider
from workers.providers.registry import build_provider
from workers.response_cache import CachedAnswer, ResponseCache
from workers.routing import Balancer, RouteStep, build_chain
from workers.skill_runner import PreparedSkill, SkillRunner, provider_key_names
from workers.worker import Outcome


class JobPipeline:
    """Runs one job end to end; holds the providers (and their HTTP pools) for the worker's life."""

    def __init__(
        self,
        config: Config,
        connection: redis.Redis,
        providers: dict[str, Provider],
        breakers: Breakers,
        settings: Settings,
    ) -> None:
        self.config = config
        self.connection = connection
        self.providers = providers
        self.breakers = breakers
        self.engine = PolicyEngine(config)
        self.quotas = Quotas(connection, config)
        self.cache = ResponseCache(connection)
        self.balancer = Balancer(config.models)
        self.notifier = Notifier(config, settings.environ)
        self.skills = SkillCatalog(config, connection, settings.home / "skill-cache")
        self.skill_runner = SkillRunner(
            protected_env=provider_key_names(config),
            max_output_bytes=config.gateway.skills.max_output_bytes,
            environ=settings.environ,
        )
        self._log_pii = make_detector("builtin")
        self._log_secrets = make_detector("builtin", sorted(SECRET_CATEGORIES))

    @classmethod
    def from_config(cls, config: Config, connection: redis.Redis, settings: Settings) -> JobPipeline:
        providers: dict[str, Provider] = {}
        for alias in config.models.models:
            for step in build_chain(config.models, alias):
                if step.name not in providers:
                    providers[step.name] = build_provider(step.name, step.deployment, settings.environ)
        breakers = Breakers(connection, config.gateway.breaker, list(providers))
        return cls(config, connection, providers, breakers, settings)

    async def aclose(self) -> None:
        closing = [p.aclose() for p in self.providers.values()]
        await asyncio.gather(*closing, self.notifier.aclose(), return_exceptions=True)

    async def __call__(self, job: Job) -> Outcome:
        queued = QueuedJob.model_validate(job.args[0])
        request, service = queued.request, queued.service
        attempt = _attempt_number(job, queued.max_attempts)
        started = time.monotonic()
        queue_wait_ms = _ms_between(job.enqueued_at, job.started_at)
        earlier = self._earlier_calls(job.id) if attempt > 1 else []
        calls: list[Attempt] = []
        context = _AuditContext(job, service, attempt, queue_wait_ms, request)
        context.decisions = list(queued.admission)
        made = sum(1 for c in earlier if c.outcome != "skipped")
        call = _Call(
            job_id=f"{job.id}:{attempt}",
            service=service,
            attempt=attempt,
            budget=self.config.gateway.jobs.max_provider_calls - made,
            hold_seconds=float(job.timeout or 300) + 60.0,
        )
        try:
            if queued.apply is not None:  # a reviewer approved a draft: its held side-effect steps run now
                return await self._apply_approved(
                    call, request, queued.apply, context, started, queue_wait_ms
                )
            await self._plan(call, job.origin, request, context)
            if call.prepared is not None and call.prepared.prompt is None:  # a scripts-only skill
                scripted = self.skill_runner.finish(call.prepared, None)
                await self._side_effects(call, scripted, context)
                context.decisions.extend(d.to_dict() for d in call.decisions)
                return self._scripts_only(request, call, context, calls, started, queue_wait_ms, scripted)
            step, completion, latency_ms, cached = await self._answer(call, request, calls)
            if not cached:
                call.paid = (step, completion)
            outputs: dict[str, Any] | None = None
            if call.prepared is not None:  # the contract, checked on the answer with its values restored
                outputs = self.skill_runner.finish(call.prepared, call.plan.restore(completion.text))
                await self._side_effects(call, outputs, context)
        except GatewayError as exc:
            _mask_message(exc, self._log_pii)  # errors quote values (a model's answer, a script's stderr)
            self._settle_paid_call(call)
            will_retry = exc.retryable and bool(job.retries_left)
            self._remember_calls(job.id, calls)
            context.decisions.extend(d.to_dict() for d in call.decisions)
            self._audit_failure(
                context, calls, started, error=exc, status="retrying" if will_retry else "failed", call=call
            )
            raise
        except asyncio.CancelledError:
            # canceled by its caller, past its timeout, or cut short by shutdown: still audited
            self._settle_paid_call(call)
            self._remember_calls(job.id, calls)
            if job.timeout and time.monotonic() - started >= float(job.timeout) - 0.05:
                # the worker's deadline: the job fails as job_timeout, and the audit says the same
                timed_out = JobTimeoutError(f"job ran past its timeout of {job.timeout}s")
                self._audit_failure(context, calls, started, error=timed_out, status="failed", call=call)
                raise
            interrupted = _InterruptedError("the attempt was interrupted (canceled or shut down)")
            self._audit_failure(context, calls, started, error=interrupted, status="canceled", call=call)
            raise
        context.decisions.extend(d.to_dict() for d in call.decisions)
        result = self._result(
            step, completion, call, earlier + calls, queue_wait_ms, latency_ms, started, cached
        )
        result.policy = context.decisions
        result.outputs = outputs
        result.skill = context.skill
        event = self._audit_event(context, calls, started, result=result, bodies=self._bodies(call, result))
        plan = call.plan

        def commit(pipe: redis.client.Pipeline) -> None:
            # lands in the same transaction as the result (worker._succeed)
            append_event(pipe, event)
            if request.notify:  # the notification outbox entry lands with the result it announces
                entry = notifications.job_event(
                    job.id, service, "succeeded", result.model_dump(), request.notify
                )
                notifications.append(pipe, entry)
            if not cached:
                tokens = completion.input_tokens + completion.output_tokens
                self.quotas.commit(pipe, call.holds, service, plan, step.alias, result.cost_usd, tokens)
                if call.cache_key is not None and step.deployment.provider != "offline":
                    self.cache.store(pipe, call.cache_key, step, completion, plan, call.cache_ttl)

        return Outcome(result.model_dump(mode="json"), commit=commit)

    async def _plan(self, call: _Call, queue: str, request: JobRequest, context: _AuditContext) -> None:
        """Run a skill's scripts (if any), then the policies over everything that would leave.

        The policies run again here, before anything leaves the machine: this is the check that counts.
        """
        extra: list[tuple[str, str]] = []
        routed, skill_name = request, None
        if request.skill is not None:
            name, version = parse_ref(request.skill)
            skill = await asyncio.to_thread(self.skills.load, name, version)
            routed, skill_name = routed_request(request, skill), skill.name
            # refusals that need no script output (allow_skills, secrets in the inputs) stop it before
            # any script runs
            early = self.engine.plan(Subject.from_request(call.service, queue, routed, skill=skill_name))
            if early.denial is not None:
                context.decisions.extend(early.record())
                raise early.denial
            call.prepared = await self.skill_runner.prepare(skill, request.inputs or {})
            context.skill = call.prepared.audit_record()
            extra = [t for t in call.prepared.policy_texts() if not t[0].startswith("inputs.")]
        plan = self.engine.plan(
            Subject.from_request(call.service, queue, routed, skill=skill_name, extra_texts=extra)
        )
        call.plan = plan
        context.decisions.extend(plan.record())
        if plan.denial is not None:
            raise plan.denial
        call.request = self._completion_request(request, plan, call.prepared)

    async def _side_effects(self, call: _Call, outputs: dict[str, Any], context: _AuditContext) -> None:
        """A skill's side-effect steps: run now, or held for a reviewer when the output is a draft."""
        assert call.prepared is not None and context.skill is not None
        skill = call.prepared.skill
        steps = [s.label for s in skill.spec.aigw.scripts if s.side_effects]
        if not steps:
            return
        if call.plan.draft:
            context.skill["held"] = steps
            drafts = next(d for d in call.plan.decisions if d.outcome == "mark_draft")
            reason = f"side-effect steps {', '.join(steps)} held until a reviewer approves"
            call.decisions.append(Decision(drafts.policy, drafts.rule, "mark_draft", reason, True))
            return
        job_id = call.job_id.rsplit(":", 1)[0]
        if not self._claim_side_effects(job_id, call.job_id):
            context.skill["applied"] = []
            context.skill["side_effects"] = "already run by an earlier attempt; not repeated"
            return
        runs = await self.skill_runner.apply(skill, call.prepared.inputs, outputs)
        context.skill["applied"] = [r.name for r in runs]

    def _claim_side_effects(self, job_id: str, by: str) -> bool:
        """At most once: a retried or requeued attempt never repeats a job's side-effect steps."""
        ttl = self.config.gateway.jobs.failure_ttl
        return bool(self.connection.set(keys.side_effects_claim(job_id), by, nx=True, ex=ttl))

    async def _apply_approved(
        self,
        call: _Call,
        request: JobRequest,
        approved: ApprovedDraft,
        context: _AuditContext,
        started: float,
        queue_wait_ms: float,
    ) -> Outcome:
        """The follow-up job of an approved draft: the held side-effect steps, with its checked outputs."""
        assert request.skill is not None
        name, version = parse_ref(request.skill)
        skill = await asyncio.to_thread(self.skills.load, name, version)
        if approved.bundle_sha256 not in (None, skill.content_hash):
            raise SkillFailedError(
                f"skill {skill.ref} changed since job {approved.job_id} was reviewed "
                f"(bundle {skill.content_hash[:12]}, reviewed {str(approved.bundle_sha256)[:12]}); "
                "its side-effect steps were not run"
            )
        if not self._claim_side_effects(approved.job_id, call.job_id):
            raise SkillFailedError(
                f"the side-effect steps of job {approved.job_id} already started once; "
                "aigw does not repeat them (check what they did before running them by hand)"
            )
        outputs = approved.outputs
        inputs = validate_inputs(skill.spec, request.inputs or {})  # defaults filled in, as in the job
        runs = await self.skill_runner.apply(skill, inputs, outputs)
        context.skill = {
            "name": skill.name,
            "version": skill.version,
            "bundle_sha256": skill.content_hash,
            "source": skill.source,
            "approved_job": approved.job_id,
            "applied": [r.name for r in runs],
            "scripts": [
                {"name": r.name, "exit_code": r.exit_code, "ms": round(r.duration_ms, 1)} for r in runs
            ],
        }
        return self._scripts_only(request, call, context, [], started, queue_wait_ms, outputs)

    def _settle_paid_call(self, call: _Call) -> None:
        """An attempt that fails after its provider call returned still spent money and tokens."""
        if call.paid is None:
            self.quotas.release(call.holds)
            return
        step, completion = call.paid
        tokens = completion.input_tokens + completion.output_tokens
        with self.connection.pipeline() as pipe:
            self.quotas.commit(
                pipe, call.holds, call.service, call.plan, step.alias, _cost(step, completion), tokens
            )
            pipe.execute()

    def _completion_request(
        self, request: JobRequest, plan: Plan, prepared: PreparedSkill | None
    ) -> CompletionRequest:
        messages = request.all_messages()
        if prepared is not None and prepared.prompt is not None:
            messages.append(Message(role="user", content=prepared.prompt))
        skill_tokens = prepared.skill.spec.aigw.max_tokens if prepared is not None else None
        return CompletionRequest(
            messages=[Message(role=m.role, content=plan.outgoing(m.content)) for m in messages],
            max_tokens=plan.max_tokens
            or request.max_tokens
            or skill_tokens
            or self.config.gateway.jobs.max_output_tokens,
            temperature=request.temperature,
        )

    def _scripts_only(
        self,
        request: JobRequest,
        call: _Call,
        context: _AuditContext,
        calls: list[Attempt],
        started: float,
        queue_wait_ms: float,
        outputs: dict[str, Any],
    ) -> Outcome:
        """A skill whose outputs all come from its scripts: no model is called."""
        result = JobResult(
            output="",
            model="none",
            provider="none",
            provider_model="none",
            usage=Usage(),
            cost_usd=0.0,
            attempt=call.attempt,
            calls=[],
            timings={"queue_wait_ms": round(queue_wait_ms, 2), "provider_latency_ms": 0.0},
            draft=call.plan.draft,
            policy=context.decisions,
            outputs=outputs,
            skill=context.skill,
        )
        event = self._audit_event(context, calls, started, result=result)

        def commit(pipe: redis.client.Pipeline) -> None:
            append_event(pipe, event)
            _announce(pipe, call, request, result)

        return Outcome(result.model_dump(mode="json"), commit=commit)

    async def _answer(
        self, call: _Call, request: JobRequest, calls: list[Attempt]
    ) -> tuple[RouteStep, Completion, float, bool]:
        """The answer from the response cache when the job opts in and one is there, else from the chain."""
        plan = call.plan
        chain = self.balancer.order(build_chain(self.config.models, plan.alias, allowed=plan.allows))
        if plan.sensitive_only:  # defence in depth: build_chain already keeps a sensitive alias local
            chain = [s for s in chain if self.config.models.models[s.alias].sensitive]
        if not chain:
            raise PolicyDeniedError(
                f"no deployment of {plan.alias} is allowed for this job by the policies", rule="routing"
            )
        ttl = self._cache_ttl(call.service, request)
        if ttl:
            call.cache_key, call.cache_ttl = self.cache.key(call.service, plan, call.request), ttl
            hit = self.cache.lookup(
                call.cache_key, sensitive_route=plan.sensitive_only or self._sensitive(chain)
            )
            if hit is not None:
                return _cached_step(hit, chain), hit.completion(), 0.0, True
        limit = call.prepared.skill.spec.aigw.timeouts.model if call.prepared is not None else None
        try:
            async with asyncio.timeout(limit):
                step, completion, latency = await self._call_chain(chain, call, calls)
        except TimeoutError:
            raise SkillTimeoutError(f"the model step ran past the skill's {limit:g}s timeout") from None
        return step, completion, latency, False

    def _cache_ttl(self, service: str, request: JobRequest) -> int:
        entry = self.config.services.services.get(service)
        enabled = request.cache if request.cache is not None else bool(entry and entry.cache)
        return (entry.cache_ttl if entry else 300) if enabled else 0

    def _sensitive(self, chain: list[RouteStep]) -> bool:
        return all(self.config.models.models[s.alias].sensitive for s in chain)

    def _bodies(self, call: _Call, result: JobResult) -> tuple[Any, Any] | None:
        """Request and response for the audit line when log_all_requests_and_responses holds."""
        rule = call.plan.audit_bodies
        if rule is None:
            return None
        # credentials are always masked; other PII too unless the rule says mask_pii: false
        masker = Redactor(self._log_pii if rule.mask_pii else self._log_secrets)

        def clip(text: str) -> str:
            text = masker.mask(text)
            return text if len(text) <= rule.max_body_chars else text[: rule.max_body_chars] + "…[truncated]"

        request = {
            "model": result.model,
            "max_tokens": call.request.max_tokens,
            "temperature": call.request.temperature,
            "messages": [{"role": m.role, "content": clip(m.content)} for m in call.request.messages],
        }
        return request, {"output": clip(result.output), "finish_reason": result.finish_reason}

    def _earlier_calls(self, job_id: str) -> list[Attempt]:
        raw = self.connection.lrange(keys.job_calls(job_id), 0, -1)
        return [Attempt.model_validate_json(item) for item in raw]

    def _remember_calls(self, job_id: str, calls: list[Attempt]) -> None:
        """Keep a failed attempt's calls for the job record (failure path only)."""
        if not calls:
            return
        key = keys.job_calls(job_id)
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.rpush(key, *(c.model_dump_json(exclude_none=True) for c in calls))
            pipe.expire(key, self.config.gateway.jobs.failure_ttl)
            pipe.execute()

    async def _call_chain(
        self, chain: list[RouteStep], call: _Call, calls: list[Attempt]
    ) -> tuple[RouteStep, Completion, float]:
        """Try each deployment in order; a retryable error moves on, any other error stops.

        ``call.budget`` is what is left of the job's provider-call bound; at zero the job fails.
        Before each call the budgets reserve its worst-case cost (gateway.quotas).
        """
        last_error: GatewayError | None = None
        input_bytes = sum(len(m.content.encode()) for m in call.request.messages)
        for step in chain:
            provider = self.providers[step.name]
            record = Attempt(
                attempt=call.attempt,
                model=step.alias,
                deployment=step.name,
                provider=provider.kind,
                outcome="ok",
            )
            reason = provider.unavailable_reason()
            if reason is None and self.breakers.is_open(step.name):
                reason = "circuit open: cooling down after repeated failures"
            if reason:
                calls.append(record.model_copy(update={"outcome": "skipped", "error": {"reason": reason}}))
                continue
            if call.budget <= 0:
                raise CallBoundError(
                    f"the job made {self.config.gateway.jobs.max_provider_calls} provider calls, its bound; "
                    f"last error: {last_error.message if last_error else 'none'}"
                )
            call.budget -= 1
            if call.plan.quotas:
                self.quotas.release(call.holds)
                call.holds = self.quotas.before_call(
                    call.job_id, call.service, call.plan, step.alias, step.deployment.pricing,
                    input_bytes, call.request.max_tokens, call.hold_seconds, call.decisions,
                )  # fmt: skip
            began = time.monotonic()
            with self.balancer.in_flight(step.name):
                try:
                    completion = await provider.complete(call.request)
                except ProviderError as exc:
                    latency = (time.monotonic() - began) * 1000
                    calls.append(
                        record.model_copy(
                            update={"outcome": "error", "error": exc.to_dict(), "latency_ms": latency}
                        )
                    )
                    logger.info("deployment {} failed: {} ({})", step.name, exc.type, exc.message)
                    if isinstance(
                        exc, ProviderAuthError
                    ):  # one bad key: the next deployment may have a good one
                        last_error = exc
                        continue
                    if not exc.retryable:
                        raise
                    if self.breakers.record_failure(step.name):
                        logger.warning("deployment {} is cooling down after repeated failures", step.name)
                    last_error = exc
                    continue
            latency = (time.monotonic() - began) * 1000
            calls.append(record.model_copy(update={"latency_ms": round(latency, 2)}))
            return step, completion, latency
        if last_error is not None:
            raise last_error
        reasons = [str((c.error or {}).get("reason")) for c in calls]
        error = _NoDeploymentError(
            f"no deployment of {chain[0].alias if chain else '?'} can be called: "
            + "; ".join(f"{c.deployment}: {r}" for c, r in zip(calls, reasons, strict=True))
        )
        # a missing key will not appear by itself; an open circuit closes again
        error.retryable = any(r.startswith("circuit open") for r in reasons)
        raise error

    def _result(
        self,
        step: RouteStep,
        completion: Completion,
        call: _Call,
        calls: list[Attempt],
        queue_wait_ms: float,
        latency_ms: float,
        started: float,
        cached: bool = False,
    ) -> JobResult:
        """The stored result; the answer's placeholders (redact_pii) are restored here, after the cache."""
        pricing = step.deployment.pricing
        usage = (
            Usage()
            if cached
            else Usage(input_tokens=completion.input_tokens, output_tokens=completion.output_tokens)
        )
        return JobResult(
            output=call.plan.restore(completion.text),
            model=step.alias,
            provider=step.deployment.provider,
            provider_model=completion.provider_model,
            offline=step.deployment.provider == "offline",
            usage=usage,
            cost_usd=round(pricing.cost(usage.input_tokens, usage.output_tokens), 8),
            attempt=call.attempt,
            calls=calls,
            cached=cached,
            draft=call.plan.draft,
            timings={
                "queue_wait_ms": round(queue_wait_ms, 2),
                "provider_latency_ms": round(latency_ms, 2),
                "worker_ms": round((time.monotonic() - started) * 1000, 2),
            },
            finish_reason=completion.finish_reason,
        )

    def _audit_failure(
        self, ctx: _AuditContext, calls: list[Attempt], started: float, *, call: _Call, **kw: Any
    ) -> None:
        """A failed or interrupted attempt: audited at once (there is no result to commit with)."""
        event = self._audit_event(ctx, calls, started, **kw)
        if call.paid is not None:  # the call was made and paid for; the attempt failed after it
            step, completion = call.paid
            usage = {"input_tokens": completion.input_tokens, "output_tokens": completion.output_tokens}
            event = event.model_copy(update={**usage, "cost_usd": _cost(step, completion)})
        append_event(self.connection, event)

    def _audit_event(
        self,
        ctx: _AuditContext,
        calls: list[Attempt],
        started: float,
        *,
        result: JobResult | None = None,
        error: GatewayError | None = None,
        status: Status = "succeeded",
        bodies: tuple[Any, Any] | None = None,
    ) -> AuditEvent:
        last = calls[-1] if calls else None
        return AuditEvent(
            policy=ctx.decisions,
            request=bodies[0] if bodies else None,
            response=bodies[1] if bodies else None,
            cached=result.cached if result else False,
            skill=ctx.skill,
            time=ctx.time,
            job_id=ctx.job.id,
            attempt=ctx.attempt,
            service=ctx.service,
            model=result.model if result else (last.model if last else None),
            provider=result.provider if result else (last.provider if last else None),
            provider_model=result.provider_model if result else None,
            deployment=last.deployment if last else None,
            status=status,
            queue=ctx.job.origin,
            queue_wait_ms=round(ctx.queue_wait_ms, 2),
            latency_ms=result.timings["provider_latency_ms"]
            if result
            else (last.latency_ms if last else None),
            total_ms=round((time.monotonic() - started) * 1000 + ctx.queue_wait_ms, 2),
            input_tokens=result.usage.input_tokens if result else 0,
            output_tokens=result.usage.output_tokens if result else 0,
            cost_usd=result.cost_usd if result else 0.0,
            request_sha256=ctx.request_hash,
            error_type=error.type if error else None,
            error_message=error.message if error else None,
            calls=sum(1 for c in calls if c.outcome != "skipped"),
            offline=result.offline if result else False,
        )


@dataclass
class _Call:
    """One attempt's provider-call state: what is sent, what is left, what is held."""

    job_id: str  # "<job id>:<attempt>": the holder of this attempt's budget reservations
    service: str
    attempt: int
    budget: int  # provider calls left under jobs.max_provider_calls
    hold_seconds: float
    plan: Plan = field(default_factory=lambda: Plan("", ""))
    request: CompletionRequest = field(default_factory=lambda: CompletionRequest([], 1))
    prepared: PreparedSkill | None = None
    holds: Holds = field(default_factory=lambda: Holds(""))
    decisions: list[Decision] = field(default_factory=list)
    cache_key: str | None = None
    cache_ttl: int = 0
    #: the provider call that answered (not from the cache): its cost counts even if the attempt fails
    paid: tuple[RouteStep, Completion] | None = None


def _announce(pipe: redis.client.Pipeline, call: _Call, request: JobRequest, result: JobResult) -> None:
    """The notification outbox entry of a succeeded job, in the transaction that stores its result."""
    if request.notify:
        job_id = call.job_id.rsplit(":", 1)[0]
        entry = notifications.job_event(
            job_id, call.service, "succeeded", result.model_dump(), request.notify
        )
        notifications.append(pipe, entry)


def _cost(step: RouteStep, completion: Completion) -> float:
    return round(step.deployment.pricing.cost(completion.input_tokens, completion.output_tokens), 8)


def _mask_message(error: GatewayError, detector: Detector) -> None:
    """Replace PII in an error's message by category placeholders, before it is stored anywhere."""
    masked = Redactor(detector).mask(error.message)
    if masked != error.message:
        error.message = masked
        error.args = (masked,)


def _cached_step(hit: CachedAnswer, chain: list[RouteStep]) -> RouteStep:
    """The route step a cached answer stands for (the deployment that first produced it)."""
    return next((s for s in chain if s.name == hit.deployment), chain[0])


class CallBoundError(GatewayError):
    """The job reached ``jobs.max_provider_calls``: no layer may multiply calls past it."""

    type = "call_bound_reached"
    http_status = 502


class _InterruptedError(GatewayError):
    type = "interrupted"


class _NoDeploymentError(GatewayError):
    """Every deployment was skipped: no key configured, or its circuit is open (then retryable)."""

    type = "no_deployment_available"
    http_status = 503


class _AuditContext:
    """What every audit event of one attempt shares."""

    def __init__(
        self, job: Job, service: str, attempt: int, queue_wait_ms: float, request: JobRequest
    ) -> None:
        self.job = job
        self.service = service
        self.attempt = attempt
        self.queue_wait_ms = queue_wait_ms
        self.request_hash = request_sha256(request.model_dump(mode="json", exclude_none=True))
        self.decisions: list[dict[str, Any]] = []
        self.skill: dict[str, Any] | None = None
        started = job.started_at or datetime.now(UTC)
        self.time = started.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _attempt_number(job: Job, max_attempts: int) -> int:
    """RQ counts retries left; callers count attempts (1-based)."""
    if job.retries_left is None:
        return 1
    return max(1, max_attempts - int(job.retries_left))


def _ms_between(start: Any, end: Any) -> float:
    if start is None or end is None:
        return 0.0
    return max(0.0, float((end - start).total_seconds()) * 1000)


def run_job(payload: dict[str, Any]) -> dict[str, Any]:
    """The dotted path on every aigw job. aigw's AsyncWorker runs its JobPipeline instead; this
    exists so the path resolves, and refuses to run under a stock RQ worker (no shared pools)."""
    raise RuntimeError("aigw jobs run on `aigw worker` (the async worker), not on a stock RQ worker")
