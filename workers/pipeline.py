"""The job pipeline: one queued request -> route -> provider calls -> result and audit event.

The worker calls a ``JobPipeline`` for every job. A retryable provider failure moves on to the
next deployment in the chain; when the chain is exhausted the last retryable error is raised and
the worker hands the job back to RQ, which requeues it with backoff. Every attempt leaves one
audit event, appended to the Redis stream before the result is written (at-least-once: the
audit writer drops a re-delivered duplicate).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import redis
from loguru import logger
from rq.job import Job

from gateway import keys, notifications, tracing
from gateway.audit import AuditEvent, Status, append_event, request_sha256
from gateway.chat import (
    CAPABILITY_FIELDS,
    Capability,
    Delta,
    EmbeddingRequest,
    Emit,
    StreamAccumulator,
    TextDelta,
    Tool,
    ToolCallDelta,
    estimate_tokens,
    tokens_for_size,
)
from gateway.config import Config
from gateway.errors import (
    BadProviderResponseError,
    CallBoundError,
    GatewayError,
    InterruptedAttemptError,
    JobTimeoutError,
    NoDeploymentError,
    PolicyDeniedError,
    ProviderAuthError,
    ProviderError,
    SkillFailedError,
    SkillTimeoutError,
    StreamInterruptedError,
)
from gateway.job_stream import StreamWriter
from gateway.jobs import ApprovedDraft, JobRequest, JobResult, Message, ProviderCall, QueuedJob, Usage
from gateway.limits import MAX_INCREMENT, MICRO, fits_increment
from gateway.metrics import Increments, Recorder
from gateway.metrics import write as write_metrics
from gateway.pii import SECRET_CATEGORIES, Detector, Finding, Redactor, make_detector
from gateway.policies import Decision, Plan, PolicyEngine, Subject
from gateway.quotas import Holds, Quotas
from gateway.settings import Settings
from gateway.skills import SkillCatalog, parse_ref, routed_request, validate_inputs
from workers.breaker import Breakers
from workers.channels import Notifier
from workers.error_text import ErrorMasker, explain_local_failure
from workers.providers.base import Completion, CompletionRequest, Provider
from workers.providers.http import HttpProvider
from workers.providers.registry import build_provider
from workers.response_cache import CachedAnswer, ResponseCache
from workers.routing import Balancer, RouteStep, build_chain
from workers.skill_runner import PreparedSkill, SkillRunner, provider_key_names
from workers.stream_restore import RestoringEmit
from workers.worker import Outcome, unexpected_error, will_retry


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
        self.metrics = Recorder(connection)
        self.balancer = Balancer(config.models)
        self.notifier = Notifier(config, settings.environ)
        self.skills = SkillCatalog(config, connection, settings.home / "skill-cache")
        self.skill_runner = SkillRunner(
            protected_env=provider_key_names(config),
            max_output_bytes=config.gateway.skills.max_output_bytes,
            environ=settings.environ,
            sandbox=config.gateway.skills.sandbox,
        )
        self._log_pii = make_detector("builtin")
        self._log_secrets = make_detector("builtin", sorted(SECRET_CATEGORIES))
        own = [p.api_base for p in providers.values() if isinstance(p, HttpProvider)]
        self._errors = ErrorMasker(self._log_pii, own)

    @classmethod
    def from_config(cls, config: Config, connection: redis.Redis, settings: Settings) -> JobPipeline:
        providers: dict[str, Provider] = {}
        for alias in config.models.models:
            for step in build_chain(config.models, alias):
                if step.name not in providers:
                    providers[step.name] = build_provider(
                        step.name,
                        step.deployment,
                        settings.environ,
                        max_retry_after=config.gateway.jobs.max_retry_after,
                        max_response_bytes=config.gateway.jobs.max_response_bytes,
                    )
        breakers = Breakers(connection, config.gateway.breaker, list(providers))
        return cls(config, connection, providers, breakers, settings)

    async def aclose(self) -> None:
        closing = [p.aclose() for p in self.providers.values()]
        await asyncio.gather(*closing, self.notifier.aclose(), return_exceptions=True)

    async def __call__(self, job: Job) -> Outcome:
        queued = QueuedJob.model_validate(job.args[0])
        number = _attempt_number(job, queued.max_attempts)
        attempt = self._begin(job, queued.service, number, queued.request, list(queued.admission))
        try:
            if queued.apply is not None:  # a reviewer approved a draft: its held side-effect steps run now
                outcome = await self._apply_approved(attempt, queued.apply)
            else:
                outcome = await self._run(attempt)
        except GatewayError as exc:
            self._failed(attempt, job, exc)
            raise
        except asyncio.CancelledError:
            # canceled by its caller, past its timeout, or cut short by shutdown: still audited
            self._interrupted(attempt, job)
            raise
        except redis.RedisError:
            raise  # no audit line can be written; the worker leaves the job for the reaper
        except Exception as exc:
            # a bug or a shape nobody handled: the same failure path as any GatewayError (audited,
            # holds released, failed for good); the traceback goes to the log only
            logger.exception("job {}: unexpected error in attempt {}", job.id, attempt.number)
            error = unexpected_error(exc)
            self._failed(attempt, job, error)  # masks the message first
            raise error from exc
        # if the worker cannot store the result, the attempt is audited as failed instead
        return dataclasses.replace(outcome, failed=functools.partial(self._failed, attempt, job))

    def _begin(
        self, job: Job, service: str, number: int, request: JobRequest, admission: list[dict[str, Any]]
    ) -> JobAttempt:
        started = time.monotonic()
        earlier = self._earlier_calls(job.id) if number > 1 else []
        made = sum(1 for c in earlier if c.outcome != "skipped")
        return JobAttempt(
            job_id=job.id,
            number=number,
            service=service,
            queue=job.origin,
            request=request,
            started=started,
            time=_audit_time(job.started_at),
            queue_wait_ms=_ms_between(job.enqueued_at, job.started_at),
            request_sha256=request_sha256(request.model_dump(mode="json", exclude_none=True)),
            calls_left=self.config.gateway.jobs.max_provider_calls - made,
            hold_seconds=float(job.timeout or 300) + 60.0,
            admission=admission,
            earlier_calls=earlier,
            stream=StreamWriter(self.connection, job.id) if request.stream else None,
        )

    async def _run(self, attempt: JobAttempt) -> Outcome:
        if attempt.stream is not None and self.connection.exists(attempt.stream.key):
            # an earlier attempt already sent part of an answer down this job's stream (then the
            # worker died or shut down): a second, different answer after it would read as one
            raise StreamInterruptedError(
                "an earlier attempt of this job had already streamed part of its answer; "
                "it is not streamed a second time"
            )
        await self._plan(attempt)
        if attempt.prepared is not None and attempt.prepared.prompt is None:  # a scripts-only skill
            scripted = self.skill_runner.finish(attempt.prepared, None)
            await self._side_effects(attempt, scripted)
            return self._scripts_only(attempt, scripted)
        answer = await self._answer(attempt)
        if not answer.cached:
            attempt.paid = answer
        if attempt.stream is not None and attempt.stream.broken:
            raise StreamInterruptedError("part of the streamed answer could not be relayed (Redis failed)")
        outputs: dict[str, Any] | None = None
        if attempt.prepared is not None:  # the contract, checked on the answer with its values restored
            outputs = self.skill_runner.finish(attempt.prepared, attempt.plan.restore(answer.completion.text))
            await self._side_effects(attempt, outputs)
        return self._succeeded(attempt, answer, outputs)

    def _failed(self, attempt: JobAttempt, job: Job, error: GatewayError) -> None:
        """A failed attempt: its spend settled, its calls kept for the job record, audited at once."""
        self._errors.apply(error)  # errors quote values (a model's answer, a script's stderr)
        explain_local_failure(error, attempt.plan)
        self._settle_paid_call(attempt)
        status: Status = "retrying" if will_retry(job, error) else "failed"
        self._remember_calls(attempt)
        self._audit(attempt, _failure_event(attempt, status, error, attempt.policy_record()))
        if attempt.stream is not None:
            attempt.stream.error(error.to_dict(), final=status == "failed")

    def _audit(self, attempt: JobAttempt, event: AuditEvent) -> None:
        """A failed attempt's audit event with its metrics, in one round trip."""
        with self.connection.pipeline() as pipe:
            append_event(pipe, event)
            write_metrics(pipe, self._counted(attempt, event))
            pipe.execute()

    def _counted(self, attempt: JobAttempt, event: AuditEvent) -> Increments:
        """What the attempt adds to the metrics (gateway/metrics/): read off its audit event."""
        first = None if attempt.first_delta is None else attempt.first_delta - attempt.started
        decisions = [(d.policy, d.rule, d.outcome) for d in (*attempt.plan.decisions, *attempt.decisions)]
        return self.metrics.attempt(
            event, model=attempt.plan.alias or None, decisions=decisions, first_delta_s=first
        )

    def _interrupted(self, attempt: JobAttempt, job: Job) -> None:
        """An attempt cut short (cancel, timeout, shutdown): settled, kept and audited like a failure.

        Its audit line records the admission's and the plan's decisions but not those made while it
        ran (budget checks, held steps), unlike a failure's: kept as it was, not yet decided otherwise.
        A stream cut short this way (its client hung up) is charged for what it had streamed.
        """
        if attempt.paid is None and attempt.streaming is not None:
            attempt.paid = self._streamed_estimate(attempt, attempt.streaming)
        self._settle_paid_call(attempt)
        self._remember_calls(attempt)
        policy = attempt.policy_record(while_running=False)
        if job.timeout and time.monotonic() - attempt.started >= float(job.timeout) - 0.05:
            # the worker's deadline: the job fails as job_timeout, and the audit says the same
            timed_out = JobTimeoutError(f"job ran past its timeout of {job.timeout}s")
            self._audit(attempt, _failure_event(attempt, "failed", timed_out, policy))
            if attempt.stream is not None:
                attempt.stream.error(timed_out.to_dict(), final=True)
            return
        interrupted = InterruptedAttemptError("the attempt was interrupted (canceled or shut down)")
        append_event(self.connection, _failure_event(attempt, "canceled", interrupted, policy))
        if attempt.stream is not None:
            attempt.stream.close()  # a shutdown requeues the job, a cancel ends it: the API reads which

    def _succeeded(self, attempt: JobAttempt, answer: Answer, outputs: dict[str, Any] | None) -> Outcome:
        result = self._result(attempt, answer, outputs)
        event = _success_event(attempt, result, self._bodies(attempt, result))

        def commit(pipe: redis.client.Pipeline) -> None:
            # lands in the same transaction as the result (worker._succeed)
            append_event(pipe, event)
            self.metrics.write_scripted(pipe, self._counted(attempt, event))
            if attempt.stream is not None:
                attempt.stream.end(pipe, _stream_end(result))
            _announce(pipe, attempt, result)  # the outbox entry lands with the result it announces
            if not answer.cached:
                self._charge(pipe, attempt, answer)
                if attempt.cache_key is not None and answer.step.deployment.provider != "offline":
                    self.cache.store(
                        pipe,
                        attempt.cache_key,
                        answer.step,
                        answer.completion,
                        attempt.plan,
                        attempt.cache_ttl,
                    )

        return Outcome(result.model_dump(mode="json"), commit=commit, result=result)

    async def _plan(self, attempt: JobAttempt) -> None:
        """Run a skill's scripts (if any), then the policies over everything that would leave.

        The policies run again here, before anything leaves the machine: this is the check that counts.
        """
        attempt.plan = plan = self.engine.plan(await self._subject(attempt))
        tracing.planned(plan)
        if plan.denial is not None:
            raise plan.denial
        request = attempt.request
        if request.embed is not None:
            texts = [plan.outgoing(text) for text in request.embed]
            attempt.embedding = EmbeddingRequest(texts, request.dimensions)
            attempt.outgoing = CompletionRequest([Message(role="user", content=t) for t in texts], 1)
            return
        attempt.outgoing = self._completion_request(request, plan, attempt.prepared)

    async def _subject(self, attempt: JobAttempt) -> Subject:
        """The job as the policies judge it; a skill job's scripts run first, and what they found counts."""
        request, service, queue = attempt.request, attempt.service, attempt.queue
        if request.skill is None:
            return Subject.from_request(service, queue, request, skill=None, extra_texts=[])
        name, version = parse_ref(request.skill)
        skill = await asyncio.to_thread(self.skills.load, name, version)
        routed = routed_request(request, skill)
        # refusals that need no script output (allow_skills, secrets in the inputs) stop it before
        # any script runs
        early = self.engine.plan(Subject.from_request(service, queue, routed, skill=skill.name))
        if early.denial is not None:
            attempt.plan = early
            raise early.denial
        attempt.prepared = await self.skill_runner.prepare(skill, request.inputs or {})
        attempt.skill = attempt.prepared.audit_record()
        extra = [t for t in attempt.prepared.policy_texts() if not t[0].startswith("inputs.")]
        return Subject.from_request(service, queue, routed, skill=skill.name, extra_texts=extra)

    async def _side_effects(self, attempt: JobAttempt, outputs: dict[str, Any]) -> None:
        """A skill's side-effect steps: run now, or held for a reviewer when the output is a draft."""
        assert attempt.prepared is not None and attempt.skill is not None
        skill = attempt.prepared.skill
        steps = [s.label for s in skill.spec.aigw.scripts if s.side_effects]
        if not steps:
            return
        if attempt.plan.draft:
            attempt.skill["held"] = steps
            drafts = next(d for d in attempt.plan.decisions if d.outcome == "mark_draft")
            reason = f"side-effect steps {', '.join(steps)} held until a reviewer approves"
            attempt.decisions.append(Decision(drafts.policy, drafts.rule, "mark_draft", reason, True))
            return
        if not self._claim_side_effects(attempt.job_id, attempt.attempt_id):
            attempt.skill["applied"] = []
            attempt.skill["side_effects"] = "already run by an earlier attempt; not repeated"
            return
        runs = await self.skill_runner.apply(skill, attempt.prepared.inputs, outputs)
        attempt.skill["applied"] = [r.name for r in runs]

    def _claim_side_effects(self, job_id: str, by: str) -> bool:
        """At most once: a retried or requeued attempt never repeats a job's side-effect steps."""
        ttl = self.config.gateway.jobs.failure_ttl
        return bool(self.connection.set(keys.side_effects_claim(job_id), by, nx=True, ex=ttl))

    async def _apply_approved(self, attempt: JobAttempt, approved: ApprovedDraft) -> Outcome:
        """The follow-up job of an approved draft: the held side-effect steps, with its checked outputs."""
        assert attempt.request.skill is not None
        name, version = parse_ref(attempt.request.skill)
        skill = await asyncio.to_thread(self.skills.load, name, version)
        if approved.bundle_sha256 not in (None, skill.content_hash):
            raise SkillFailedError(
                f"skill {skill.ref} changed since job {approved.job_id} was reviewed "
                f"(bundle {skill.content_hash[:12]}, reviewed {str(approved.bundle_sha256)[:12]}); "
                "its side-effect steps were not run"
            )
        if not self._claim_side_effects(approved.job_id, attempt.attempt_id):
            raise SkillFailedError(
                f"the side-effect steps of job {approved.job_id} already started once; "
                "aigw does not repeat them (check what they did before running them by hand)"
            )
        outputs = approved.outputs
        inputs = validate_inputs(
            skill.spec, attempt.request.inputs or {}
        )  # defaults filled in, as in the job
        runs = await self.skill_runner.apply(skill, inputs, outputs)
        attempt.skill = {
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
        return self._scripts_only(attempt, outputs)

    def _settle_paid_call(self, attempt: JobAttempt) -> None:
        """An attempt that fails after its provider call returned still spent money and tokens."""
        if attempt.paid is None:
            self.quotas.release(attempt.holds)
            return
        with self.connection.pipeline() as pipe:
            self._charge(pipe, attempt, attempt.paid)
            pipe.execute()

    def _charge(self, pipe: redis.client.Pipeline, attempt: JobAttempt, answer: Answer) -> None:
        """The real spend and tokens of the call that answered, in place of its reservations."""
        tokens = answer.completion.input_tokens + answer.completion.output_tokens
        alias = answer.step.alias
        self.quotas.commit(
            pipe, attempt.holds, attempt.service, attempt.plan, alias, answer.cost_usd(), tokens
        )

    def _completion_request(
        self, request: JobRequest, plan: Plan, prepared: PreparedSkill | None
    ) -> CompletionRequest:
        messages = request.all_messages()
        if prepared is not None and prepared.prompt is not None:
            messages.append(Message(role="user", content=prepared.prompt))
        skill_tokens = prepared.skill.spec.aigw.max_tokens if prepared is not None else None
        return CompletionRequest(
            messages=[m.map_text(plan.outgoing) for m in messages],
            max_tokens=plan.max_tokens
            or request.max_tokens
            or skill_tokens
            or self.config.gateway.jobs.max_output_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=tuple(plan.outgoing(s) for s in request.stop or ()),
            seed=request.seed,
            user=None if request.user is None else plan.outgoing(request.user),
            tools=tuple(_masked_tool(t, plan.outgoing) for t in request.tools or ()),
            tool_choice=request.tool_choice,
            response_format=request.response_format,
        )

    def _scripts_only(self, attempt: JobAttempt, outputs: dict[str, Any]) -> Outcome:
        """A skill whose outputs all come from its scripts: no model is called."""
        result = JobResult(
            output="",
            model="none",
            provider="none",
            provider_model="none",
            usage=Usage(),
            cost_usd=0.0,
            attempt=attempt.number,
            calls=[],
            timings={"queue_wait_ms": round(attempt.queue_wait_ms, 2), "provider_latency_ms": 0.0},
            draft=attempt.plan.draft,
            policy=attempt.policy_record(),
            outputs=outputs,
            skill=attempt.skill,
        )
        event = _success_event(attempt, result, None)

        def commit(pipe: redis.client.Pipeline) -> None:
            append_event(pipe, event)
            self.metrics.write_scripted(pipe, self._counted(attempt, event))
            _announce(pipe, attempt, result)

        return Outcome(result.model_dump(mode="json"), commit=commit, result=result)

    async def _answer(self, attempt: JobAttempt) -> Answer:
        """The answer from the response cache when the job opts in and one is there, else from the chain."""
        plan = attempt.plan
        chain = self._chain(plan)
        # an embedding is not an answer the exact-match cache holds (it stores text, not vectors)
        ttl = 0 if attempt.embedding is not None else self._cache_ttl(attempt.service, attempt.request)
        if ttl:
            attempt.cache_key, attempt.cache_ttl = (
                self.cache.key(attempt.service, plan, attempt.outgoing),
                ttl,
            )
            hit = self.cache.lookup(
                attempt.cache_key, sensitive_route=plan.sensitive_only or self._sensitive(chain)
            )
            if hit is not None:
                answer = Answer(_cached_step(hit, chain), hit.completion(), cached=True)
                if attempt.stream is not None:  # the whole answer at once, tool calls included
                    relay = self._relay(attempt, answer.step, hit.provider_model)
                    if answer.completion.text:
                        relay(TextDelta(answer.completion.text))
                    for i, call in enumerate(answer.completion.tool_calls):
                        relay(ToolCallDelta(i, call.id, call.name, call.arguments))
                    if isinstance(relay, RestoringEmit):
                        relay.flush()
                return answer
        limit = attempt.prepared.skill.spec.aigw.timeouts.model if attempt.prepared is not None else None
        try:
            async with asyncio.timeout(limit):
                return await self._call_chain(chain, attempt)
        except TimeoutError:
            raise SkillTimeoutError(f"the model step ran past the skill's {limit:g}s timeout") from None

    def _chain(self, plan: Plan) -> list[RouteStep]:
        """The deployments to try, in order, for the plan's alias; none allowed refuses the job."""
        chain = self.balancer.order(build_chain(self.config.models, plan.alias, allowed=plan.allows))
        if plan.sensitive_only:  # defence in depth: build_chain already keeps a sensitive alias local
            chain = [s for s in chain if self.config.models.models[s.alias].sensitive]
        if not chain:
            raise PolicyDeniedError(
                f"no deployment of {plan.alias} is allowed for this job by the policies", rule="routing"
            )
        return chain

    def _cache_ttl(self, service: str, request: JobRequest) -> int:
        entry = self.config.services.services.get(service)
        enabled = request.cache if request.cache is not None else bool(entry and entry.cache)
        return (entry.cache_ttl if entry else 300) if enabled else 0

    def _sensitive(self, chain: list[RouteStep]) -> bool:
        return all(self.config.models.models[s.alias].sensitive for s in chain)

    def _bodies(self, attempt: JobAttempt, result: JobResult) -> tuple[Any, Any] | None:
        """Request and response for the audit line when log_all_requests_and_responses holds."""
        rule = attempt.plan.audit_bodies
        if rule is None:
            return None
        # credentials are always masked; other PII too unless the rule says mask_pii: false, and
        # then every value the policies' detectors found as well, wherever it appears in a body
        if rule.mask_pii:
            masker = Redactor(_EverySpan(self._log_pii, attempt.plan.found_values))
        else:
            masker = Redactor(self._log_secrets)

        def clip(text: str) -> str:
            text = masker.mask(text)
            return text if len(text) <= rule.max_body_chars else text[: rule.max_body_chars] + "…[truncated]"

        sent = attempt.outgoing
        request = {
            "model": result.model,
            "max_tokens": sent.max_tokens,
            "temperature": sent.temperature,
            "messages": [
                m.map_text(clip).model_dump(mode="json", exclude_defaults=True) for m in sent.messages
            ],
        }
        return request, {"output": clip(result.output), "finish_reason": result.finish_reason}

    def _earlier_calls(self, job_id: str) -> list[ProviderCall]:
        raw = self.connection.lrange(keys.job_calls(job_id), 0, -1)
        return [ProviderCall.model_validate_json(item) for item in raw]

    def _remember_calls(self, attempt: JobAttempt) -> None:
        """Keep a failed attempt's calls for the job record (failure path only)."""
        if not attempt.calls:
            return
        key = keys.job_calls(attempt.job_id)
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.rpush(key, *(c.model_dump_json(exclude_none=True) for c in attempt.calls))
            pipe.expire(key, self.config.gateway.jobs.failure_ttl)
            pipe.execute()

    async def _call_chain(self, chain: list[RouteStep], attempt: JobAttempt) -> Answer:
        """Try each deployment in order; a retryable error moves on, any other error stops.

        A provider auth error (one bad key) moves on too, but does not count toward the breaker.
        """
        last_error: GatewayError | None = None
        for step in chain:
            provider = self.providers[step.name]
            reason = self._skip_reason(step, provider, attempt.needs)
            if reason:
                attempt.calls.append(
                    _call_record(attempt, step, provider, "skipped", error={"reason": reason})
                )
                continue
            self._take_call(attempt, step, last_error)
            try:
                return await self._call(attempt, step, provider)
            except ProviderAuthError as exc:  # one bad key: the next deployment may have a good one
                last_error = exc
            except ProviderError as exc:
                if not exc.retryable:
                    raise
                if self.breakers.record_failure(step.name):
                    logger.warning("deployment {} is cooling down after repeated failures", step.name)
                last_error = exc
        if last_error is not None:
            raise last_error
        raise _no_deployment(chain, attempt.calls)

    def _skip_reason(self, step: RouteStep, provider: Provider, needs: set[Capability]) -> str | None:
        """Why a deployment is skipped without a call: it cannot honour the request (images, tools,
        seed, ...: models.yaml ``capabilities``), its key variable is unset, or its circuit is open."""
        lacking = sorted(c for c in needs if not step.deployment.supports(c))
        if lacking:
            fields = ", ".join(sorted({CAPABILITY_FIELDS[c] for c in lacking}))
            return f"cannot honour {fields} ({', '.join(lacking)}: models.yaml capabilities)"
        reason = provider.unavailable_reason()
        if reason is None and self.breakers.is_open(step.name):
            reason = _CIRCUIT_OPEN
        return reason

    def _take_call(self, attempt: JobAttempt, step: RouteStep, last_error: GatewayError | None) -> None:
        """Count one call against the job's bound, and reserve its worst-case cost on every budget."""
        if attempt.calls_left <= 0:
            raise CallBoundError(
                f"the job made {self.config.gateway.jobs.max_provider_calls} provider calls, its bound; "
                f"last error: {last_error.message if last_error else 'none'}"
            )
        attempt.calls_left -= 1
        if not attempt.plan.quotas:
            return
        self.quotas.release(attempt.holds)
        sent = attempt.outgoing
        input_bytes = sent.input_bytes()
        attempt.holds = self.quotas.before_call(
            attempt.attempt_id, attempt.service, attempt.plan, step.alias, step.deployment.pricing,
            input_bytes, sent.max_tokens, attempt.hold_seconds, attempt.decisions,
        )  # fmt: skip

    async def _call(self, attempt: JobAttempt, step: RouteStep, provider: Provider) -> Answer:
        """One provider call, recorded in the attempt's calls whether it answers or fails."""
        began = time.monotonic()
        embeddings: list[list[float]] | None = None
        call = tracing.provider_call(step, provider, attempt.outgoing, attempt.embedding)
        with call, self.balancer.in_flight(step.name):
            try:
                if attempt.embedding is not None:
                    vectors = await provider.embed(attempt.embedding)
                    embeddings = vectors.vectors
                    completion = Completion("", vectors.input_tokens, 0, vectors.provider_model)
                elif attempt.stream is not None:
                    completion = await self._streamed_call(attempt, step, provider)
                else:
                    completion = await provider.complete(attempt.outgoing)
                _check_countable(step, completion)
                call.answered(completion)
            except ProviderError as exc:
                latency = (time.monotonic() - began) * 1000
                self._errors.apply(exc)  # the call's record and the job's error say the same
                attempt.calls.append(
                    _call_record(attempt, step, provider, "error", error=exc.to_dict(), latency_ms=latency)
                )
                logger.info("deployment {} failed: {} ({})", step.name, exc.type, exc.message)
                if attempt.stream is not None and attempt.stream.started:
                    raise self._stream_broke(attempt, step, exc) from exc
                raise
        latency = (time.monotonic() - began) * 1000
        attempt.calls.append(_call_record(attempt, step, provider, "ok", latency_ms=round(latency, 2)))
        return Answer(step, completion, latency, embeddings=embeddings)

    async def _streamed_call(self, attempt: JobAttempt, step: RouteStep, provider: Provider) -> Completion:
        """The provider's stream relayed to the API as it is decoded; the whole answer returned."""
        writer = attempt.stream
        assert writer is not None
        streamed = attempt.streamed = StreamAccumulator()

        attempt.streaming = step
        relay = self._relay(attempt, step, step.deployment.model)

        def emit(delta: Delta) -> None:
            streamed.add(delta)  # as the provider sent it: what is charged if the stream breaks
            relay(delta)

        try:
            completion = await provider.stream(attempt.outgoing, emit)
            if isinstance(relay, RestoringEmit):
                relay.flush()
            return completion
        finally:
            writer.flush()

    def _relay(self, attempt: JobAttempt, step: RouteStep, provider_model: str) -> Emit:
        """What hands a delta to the job's stream: the first one announces the deployment, and
        redact_pii's placeholders are put back first (the client sees what a whole answer says)."""
        writer = attempt.stream
        assert writer is not None

        def send(delta: Delta) -> None:
            if not writer.started:  # the first delta: this deployment is the one answering
                attempt.first_delta = time.monotonic()
                writer.begin(self._stream_facts(attempt, step, provider_model))
            writer.delta(delta)

        return RestoringEmit(attempt.plan.restore, send) if attempt.plan.redactors else send

    def _streamed_estimate(self, attempt: JobAttempt, step: RouteStep) -> Answer:
        """What a stream cut short is charged: the provider's usage never came, so an estimate of
        the input and of what had streamed (about 4 characters a token), never nothing."""
        streamed = attempt.streamed or StreamAccumulator()
        sent = streamed.text + "".join(c.arguments for c in streamed.tool_calls())
        estimate = Completion(
            sent, tokens_for_size(attempt.outgoing.input_bytes()), estimate_tokens(sent or "x"),
            step.deployment.model, extra={"usage": "estimated"},
        )  # fmt: skip
        return Answer(step, estimate, 0.0)

    def _stream_broke(
        self, attempt: JobAttempt, step: RouteStep, exc: ProviderError
    ) -> StreamInterruptedError:
        """A stream that broke after its first delta: the job fails (a retry would send a second,
        different answer down a half-read stream). What was streamed is charged as an estimate."""
        attempt.paid = self._streamed_estimate(attempt, step)
        deltas = attempt.stream.deltas if attempt.stream is not None else 0
        return StreamInterruptedError(
            f"the stream from {step.name} broke after {deltas} deltas: {exc.message}"
        )

    def _stream_facts(self, attempt: JobAttempt, step: RouteStep, provider_model: str) -> dict[str, Any]:
        """What the ``start`` event tells the API for the response headers: never a value."""
        return {
            "model": step.alias,
            "deployment": step.name,
            "provider": step.deployment.provider,
            "provider_model": provider_model,
            "offline": step.deployment.provider == "offline",
            "draft": attempt.plan.draft,
            "policy": [
                {"policy": d.get("policy"), "outcome": d.get("outcome")} for d in attempt.policy_record()
            ],
        }

    def _result(self, attempt: JobAttempt, answer: Answer, outputs: dict[str, Any] | None) -> JobResult:
        """The stored result; the answer's placeholders (redact_pii) are restored here, after the cache."""
        step, completion, usage = answer.step, answer.completion, answer.usage()
        restore, calls = attempt.plan.restore, completion.tool_calls
        return JobResult(
            output=attempt.plan.restore(completion.text),
            model=step.alias,
            provider=step.deployment.provider,
            provider_model=completion.provider_model,
            offline=step.deployment.provider == "offline",
            usage=usage,
            cost_usd=round(step.deployment.pricing.cost(usage.input_tokens, usage.output_tokens), 8),
            attempt=attempt.number,
            calls=attempt.earlier_calls + attempt.calls,
            cached=answer.cached,
            draft=attempt.plan.draft,
            timings={
                "queue_wait_ms": round(attempt.queue_wait_ms, 2),
                "provider_latency_ms": round(answer.latency_ms, 2),
                "worker_ms": round((time.monotonic() - attempt.started) * 1000, 2),
            },
            finish_reason=completion.finish_reason,
            policy=attempt.policy_record(),
            outputs=outputs,
            skill=attempt.skill,
            tool_calls=[c.model_copy(update={"arguments": restore(c.arguments)}) for c in calls] or None,
            embeddings=answer.embeddings,
            streamed=attempt.stream is not None,
        )


@dataclass(frozen=True)
class Answer:
    """A job's answer and where it came from: a provider call (with its latency) or the cache."""

    step: RouteStep
    completion: Completion
    latency_ms: float = 0.0
    cached: bool = False
    embeddings: list[list[float]] | None = None

    def usage(self) -> Usage:
        """Tokens the job is charged for: none for an answer from the cache."""
        if self.cached:
            return Usage()
        return Usage(input_tokens=self.completion.input_tokens, output_tokens=self.completion.output_tokens)

    def cost_usd(self) -> float:
        """What the provider call behind the answer cost (its usage at its deployment's prices)."""
        pricing = self.step.deployment.pricing
        return round(pricing.cost(self.completion.input_tokens, self.completion.output_tokens), 8)


@dataclass
class JobAttempt:
    """One attempt of one job, in progress: everything its result and its audit line are built from.

    The pipeline fills it in as the attempt goes: the plan, what is sent, each provider call, the
    budget holds. Decisions stay ``Decision`` objects until ``policy_record`` serialises them, once,
    where the result or the audit event is built.
    """

    job_id: str
    number: int  # 1-based (RQ counts retries left)
    service: str
    queue: str
    request: JobRequest
    started: float  # time.monotonic() when the attempt began
    time: str  # the audit line's time: when RQ started the job (ISO-8601 UTC, ms)
    queue_wait_ms: float
    request_sha256: str
    calls_left: int  # provider calls left under jobs.max_provider_calls, earlier attempts counted
    hold_seconds: float  # how long a budget reservation outlives a worker that died holding it
    admission: list[dict[str, Any]]  # the API's decisions, serialised as the queue carried them
    earlier_calls: list[ProviderCall]  # the calls of earlier attempts of the job
    plan: Plan = field(default_factory=lambda: Plan("", ""))
    outgoing: CompletionRequest = field(default_factory=lambda: CompletionRequest([], 1))
    prepared: PreparedSkill | None = None
    skill: dict[str, Any] | None = None  # the skill's audit record: which code ran, what it did
    calls: list[ProviderCall] = field(default_factory=list)  # this attempt's, skipped ones included
    #: decided while it ran: budgets and rate limits before each call, side-effect steps held
    decisions: list[Decision] = field(default_factory=list)
    holds: Holds = field(default_factory=lambda: Holds(""))
    cache_key: str | None = None
    cache_ttl: int = 0
    #: the provider call that answered (not from the cache): its cost counts even if the attempt fails
    paid: Answer | None = None
    #: an embedding job's request (``outgoing`` then holds its texts, for budgets and audit)
    embedding: EmbeddingRequest | None = None
    #: a streamed job's relay to the API, and what the current call has streamed so far
    stream: StreamWriter | None = None
    streamed: StreamAccumulator | None = None
    #: the deployment whose stream is being relayed (what a cut-short stream is charged to)
    streaming: RouteStep | None = None
    #: time.monotonic() when the first delta went down the job's stream (time to first token)
    first_delta: float | None = None

    @property
    def needs(self) -> set[Capability]:
        return {"embeddings"} if self.embedding is not None else self.outgoing.needs()

    @property
    def attempt_id(self) -> str:
        """``<job id>:<attempt>``: the holder of its budget reservations and of a side-effect claim."""
        return f"{self.job_id}:{self.number}"

    def policy_record(self, *, while_running: bool = True) -> list[dict[str, Any]]:
        """Every policy decision of the attempt, as the result and the audit line record them."""
        decisions = self.plan.decisions + (self.decisions if while_running else [])
        return self.admission + [d.to_dict() for d in decisions]


_CIRCUIT_OPEN = "circuit open: cooling down after repeated failures"
_CallOutcome = Literal["ok", "error", "skipped"]  # ProviderCall.outcome


def _call_record(
    attempt: JobAttempt, step: RouteStep, provider: Provider, outcome: _CallOutcome, **details: Any
) -> ProviderCall:
    return ProviderCall(
        attempt=attempt.number,
        model=step.alias,
        deployment=step.name,
        provider=provider.kind,
        outcome=outcome,
        **details,
    )


def _check_countable(step: RouteStep, completion: Completion) -> None:
    """Refuse, before anything is charged, a call whose cost the spend counters cannot take.

    The usage itself is bounded (``Completion``), but usage times a deployment's prices can still
    exceed what one HINCRBY may add; found only inside the result's MULTI, it would store the result
    and skip the spend (MULTI does not roll back). Raised here, the attempt fails like any bad
    answer: audited, its holds released, nothing charged.
    """
    cost = step.deployment.pricing.cost(completion.input_tokens, completion.output_tokens)
    if not fits_increment(cost * MICRO):
        raise BadProviderResponseError(
            f"the reported usage ({completion.input_tokens:,} input and {completion.output_tokens:,} "
            f"output tokens) costs ${cost:.3g} at this deployment's prices, more than one call may "
            f"add to a budget (${MAX_INCREMENT / MICRO:,.0f}); check its usage and pricing",
            deployment=step.name,
        )


def _no_deployment(chain: list[RouteStep], skipped: list[ProviderCall]) -> NoDeploymentError:
    reasons = [str((c.error or {}).get("reason")) for c in skipped]
    return NoDeploymentError(
        f"no deployment of {chain[0].alias if chain else '?'} can be called: "
        + "; ".join(f"{c.deployment}: {r}" for c, r in zip(skipped, reasons, strict=True)),
        # a missing key will not appear by itself; an open circuit closes again
        circuit_open=any(r.startswith("circuit open") for r in reasons),
    )


def _event_fields(attempt: JobAttempt, status: Status, policy: list[dict[str, Any]]) -> dict[str, Any]:
    """What every audit line of an attempt says, whatever its outcome."""
    return {
        "time": attempt.time,
        "job_id": attempt.job_id,
        "attempt": attempt.number,
        "service": attempt.service,
        "status": status,
        "queue": attempt.queue,
        "queue_wait_ms": round(attempt.queue_wait_ms, 2),
        "total_ms": round((time.monotonic() - attempt.started) * 1000 + attempt.queue_wait_ms, 2),
        "request_sha256": attempt.request_sha256,
        "calls": sum(1 for c in attempt.calls if c.outcome != "skipped"),
        "policy": policy,
        "skill": attempt.skill,
    }


def _success_event(attempt: JobAttempt, result: JobResult, bodies: tuple[Any, Any] | None) -> AuditEvent:
    """The audit line of a succeeded attempt; it is committed with the result."""
    last = attempt.calls[-1] if attempt.calls else None
    return AuditEvent(
        **_event_fields(attempt, "succeeded", result.policy),
        model=result.model,
        provider=result.provider,
        provider_model=result.provider_model,
        deployment=last.deployment if last else None,
        latency_ms=result.timings["provider_latency_ms"],
        input_tokens=result.usage.input_tokens,
        output_tokens=result.usage.output_tokens,
        cost_usd=result.cost_usd,
        offline=result.offline,
        cached=result.cached,
        request=bodies[0] if bodies else None,
        response=bodies[1] if bodies else None,
    )


def _failure_event(
    attempt: JobAttempt, status: Status, error: GatewayError, policy: list[dict[str, Any]]
) -> AuditEvent:
    """The audit line of a failed or interrupted attempt; a call it paid for still counts."""
    last = attempt.calls[-1] if attempt.calls else None
    paid = attempt.paid
    return AuditEvent(
        **_event_fields(attempt, status, policy),
        model=last.model if last else None,
        provider=last.provider if last else None,
        provider_model=None,
        deployment=last.deployment if last else None,
        latency_ms=last.latency_ms if last else None,
        input_tokens=paid.completion.input_tokens if paid else 0,
        output_tokens=paid.completion.output_tokens if paid else 0,
        cost_usd=paid.cost_usd() if paid else 0.0,
        error_type=error.type,
        error_message=error.message,
    )


class _EverySpan:
    """The audit's detector: what ``detector`` finds in a text united with every occurrence of the
    values the policies found (``Plan.found_values``), overlapping spans merged, so a value the
    router acted on is masked even where the log detector alone would miss it."""

    def __init__(self, detector: Detector, known: Iterable[tuple[str, str]]) -> None:
        self.name = detector.name
        self._detector = detector
        # the longest first: a value inside a longer one is masked as part of it
        self._known = sorted({(c, v) for c, v in known if v.strip()}, key=lambda cv: -len(cv[1]))

    def find(self, text: str) -> list[Finding]:
        spans = [(f.start, f.end, f.category) for f in self._detector.find(text)]
        for category, value in self._known:
            start = text.find(value)
            while start != -1:
                spans.append((start, start + len(value), category))
                start = text.find(value, start + len(value))
        merged: list[list[Any]] = []
        for start, end, category in sorted(spans, key=lambda s: (s[0], -s[1])):
            if merged and start < merged[-1][1]:
                if end > merged[-1][1]:
                    merged[-1][1] = end
                continue
            merged.append([start, end, category])
        return [Finding(category, start, end, text[start:end]) for start, end, category in merged]


def _masked_tool(tool: Tool, outgoing: Callable[[str], str]) -> Tool:
    """A tool as it may leave: its description and every string in its schema masked (redact_pii)."""

    def strings(value: Any) -> Any:
        if isinstance(value, str):
            return outgoing(value)
        if isinstance(value, list):
            return [strings(v) for v in value]
        if isinstance(value, dict):
            return {k: strings(v) for k, v in value.items()}
        return value

    description = None if tool.description is None else outgoing(tool.description)
    return tool.model_copy(update={"description": description, "parameters": strings(tool.parameters)})


def _stream_end(result: JobResult) -> dict[str, Any]:
    """The ``end`` event of a streamed job: what the client's last chunks say."""
    return {
        "finish_reason": result.finish_reason,
        "usage": result.usage.model_dump(),
        "cost_usd": result.cost_usd,
        "draft": result.draft,
        "cached": result.cached,
    }


def _announce(pipe: redis.client.Pipeline, attempt: JobAttempt, result: JobResult) -> None:
    """The notification outbox entry of a succeeded job, in the transaction that stores its result."""
    notify = attempt.request.notify
    if notify:
        entry = notifications.job_event(
            attempt.job_id, attempt.service, "succeeded", result.model_dump(), notify
        )
        notifications.append(pipe, entry)


def _cached_step(hit: CachedAnswer, chain: list[RouteStep]) -> RouteStep:
    """The route step a cached answer stands for (the deployment that first produced it)."""
    return next((s for s in chain if s.name == hit.deployment), chain[0])


def _audit_time(started_at: datetime | None) -> str:
    started = started_at or datetime.now(UTC)
    return started.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


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
