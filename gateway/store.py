"""Jobs in Redis as callers see them: enqueue, read, cancel, on RQ's data model.

The API and the CLI use this; it never imports ``workers`` (jobs are enqueued by dotted path).
A job's owner is in its RQ meta, and a caller sees only its own service's jobs: another
service's job id is "not found", not "forbidden", so ids leak nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import redis
from redis.client import Pipeline
from rq import RateLimit
from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus, Retry
from rq.queue import Queue
from rq.results import Result

from gateway import keys, metrics, notifications, tracing
from gateway.config import Config
from gateway.errors import ConflictError, IdempotencyKeyReusedError, NotFoundError, ValidationError
from gateway.group_commit import GroupCommit
from gateway.jobs import (
    JOB_FUNC,
    RQ_STATUS_TO_STATE,
    ApprovedDraft,
    JobRequest,
    JobResult,
    JobState,
    JobView,
    ProviderCall,
    QueuedJob,
    ReviewRequest,
)
from gateway.rq_speedups import JSONSerializer
from gateway.scripted_pipeline import ScriptedPipelines

#: RQ's job hash fields a view needs (HMGET, not HGETALL: the job's data blob is not read).
_FIELDS = ("status", "origin", "created_at", "enqueued_at", "started_at", "ended_at", "meta", "retries_left")


class JobStore:
    def __init__(
        self, connection: redis.Redis, config: Config, group_commit: GroupCommit | None = None
    ) -> None:
        self.connection = connection
        self.config = config
        self._queues: dict[str, Queue] = {}
        #: the API's: its enqueues and reads of one loop tick share a round trip (``enqueue_grouped``,
        #: ``view_grouped``); the CLI has none and calls Redis directly
        self.group_commit = group_commit
        self._scripts = ScriptedPipelines(group_commit) if group_commit is not None else None

    def queue(self, name: str) -> Queue:
        if name not in self._queues:
            self._queues[name] = Queue(name, connection=self.connection, serializer=JSONSerializer)
        return self._queues[name]

    def replayed(self, service: str, request: JobRequest) -> str | None:
        """The job an earlier request with the same idempotency key and body created, if any.

        Raises IdempotencyKeyReusedError when the key names a job sent with another body.
        """
        if not request.idempotency_key:
            return None
        noted = keys.text(self.connection.get(keys.idempotency(service, request.idempotency_key)))
        return None if noted is None else _same_request(noted, request)

    def queue_for(self, service: str, request: JobRequest) -> str:
        return request.queue or self.config.services.default_queue(service)

    def enqueue(
        self,
        service: str,
        request: JobRequest,
        *,
        admission: list[dict[str, Any]] | None = None,
        rate_limit: RateLimit | None = None,
    ) -> tuple[str, bool]:
        """Put a job on its queue; returns (job id, created). An idempotency key returns the first job.

        ``admission`` is what the policies decided at the door (recorded with the result);
        ``rate_limit`` holds the job back while its service has too many jobs running.
        """
        prepared = self._prepare(service, request, admission)
        if isinstance(prepared, str):
            return prepared, False
        job_id, queue_name, queued = prepared
        try:
            if rate_limit is not None:  # RQ's own path for a job held by a concurrency limit
                self._enqueue_limited(job_id, queue_name, queued, rate_limit)
            else:
                with self.connection.pipeline() as pipe:  # MULTI
                    self._enqueue_into(pipe, job_id, queue_name, queued)
                    pipe.execute()
        except redis.RedisError:
            self._free_key(service, request)
            raise
        return job_id, True

    async def enqueue_grouped(
        self,
        service: str,
        request: JobRequest,
        *,
        admission: list[dict[str, Any]] | None = None,
        rate_limit: RateLimit | None = None,
    ) -> tuple[str, bool]:
        """``enqueue`` through the group commit: RQ's writes run as one script (atomic like MULTI),
        in the same round trip as the other requests of the tick."""
        if self._scripts is None or rate_limit is not None:
            return self.enqueue(service, request, admission=admission, rate_limit=rate_limit)
        prepared = self._prepare(service, request, admission)
        if isinstance(prepared, str):
            return prepared, False
        job_id, queue_name, queued = prepared
        pipe = self._scripts.pipeline()
        try:
            self._enqueue_into(pipe, job_id, queue_name, queued)
            failed = await self._scripts.run(pipe)
            if failed:  # nothing a queued job needs may be missing (a key of the wrong type, by hand)
                raise redis.ResponseError(f"enqueueing job {job_id} failed: {'; '.join(failed)}")
        except redis.RedisError:
            self._free_key(service, request)
            raise
        return job_id, True

    def _prepare(
        self, service: str, request: JobRequest, admission: list[dict[str, Any]] | None
    ) -> tuple[str, str, QueuedJob] | str:
        """(a new job id, its queue, the job), or the id of the job its idempotency key names."""
        job_id = uuid.uuid4().hex
        queue_name = self.queue_for(service, request)
        if queue_name not in self.config.gateway.queues:  # before the idempotency key is taken
            queues = ", ".join(self.config.gateway.queues)
            raise ValidationError(f"queue: {queue_name!r} is not configured ({queues})")
        if request.idempotency_key:
            idem_key = keys.idempotency(service, request.idempotency_key)
            ttl = self.config.gateway.jobs.result_ttl
            noted = f"{job_id}:{request_fingerprint(request)}"
            if not self.connection.set(idem_key, noted, nx=True, ex=ttl):
                existing = keys.text(self.connection.get(idem_key))
                if existing is not None:  # a concurrent twin got there first
                    return _same_request(existing, request)
        queued = QueuedJob.submitted(
            service, request, max_attempts=self.config.gateway.jobs.max_attempts, admission=admission
        )
        return job_id, queue_name, queued

    def _free_key(self, service: str, request: JobRequest) -> None:
        """Nothing was enqueued: free the idempotency key for the client's retry."""
        if request.idempotency_key:
            with contextlib.suppress(redis.RedisError):
                self.connection.delete(keys.idempotency(service, request.idempotency_key))

    def _enqueue_options(self, job_id: str, queue_name: str, queued: QueuedJob) -> dict[str, Any]:
        jobs = self.config.gateway.jobs
        service, request, max_attempts = queued.service, queued.request, queued.max_attempts
        meta = {"service": service, "metadata": request.metadata, "max_attempts": max_attempts}
        if tracing.ENABLED:  # the submit span's context travels with the job (gateway/tracing.py)
            tracing.job_submitted(meta, job_id, service, queue_name)
        return {
            "job_id": job_id,
            "description": f"aigw job from {service}",
            "job_timeout": self.config.gateway.queues[queue_name].timeout,  # type: ignore[index]
            "result_ttl": jobs.result_ttl,
            "failure_ttl": jobs.failure_ttl,
            "retry": Retry(max=max_attempts - 1, interval=retry_schedule(jobs.retry_intervals, max_attempts))
            if max_attempts > 1
            else None,
            "meta": meta,
            "at_front": request.priority == "high",
        }

    def _enqueue_into(self, pipe: Pipeline, job_id: str, queue_name: str, queued: QueuedJob) -> None:
        """RQ writes the job exactly as it always does (the queue's registration, the job hash, the
        push) into ``pipe``: one round trip, where RQ's own enqueue takes two."""
        options = self._enqueue_options(job_id, queue_name, queued)
        self.queue(queue_name).enqueue(JOB_FUNC, queued.to_payload(), pipeline=pipe, **options)

    def _enqueue_limited(
        self, job_id: str, queue_name: str, queued: QueuedJob, rate_limit: RateLimit
    ) -> None:
        options = self._enqueue_options(job_id, queue_name, queued)
        self.queue(queue_name).enqueue(JOB_FUNC, queued.to_payload(), rate_limit=rate_limit, **options)

    def queued_view(self, job_id: str, service: str, request: JobRequest) -> JobView:
        """The view of a job this process just enqueued, without reading it back."""
        return JobView(
            id=job_id,
            status=JobState.QUEUED,
            service=service,
            queue=self.queue_for(service, request),
            created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            metadata=request.metadata,
        )

    def view(self, job_id: str, service: str | None) -> JobView:
        """The job as its owner sees it; ``service=None`` (the CLI's admin view) sees every job."""
        with self.connection.pipeline(transaction=False) as pipe:
            _view_commands(pipe, job_id)
            replies = pipe.execute()
        return self._view_from(job_id, service, replies)

    async def view_grouped(self, job_id: str, service: str | None) -> JobView:
        """``view`` through the group commit: the reads share the tick's round trip."""
        if self.group_commit is None:
            return self.view(job_id, service)
        replies = await self.group_commit.execute(lambda pipe: _view_commands(pipe, job_id))
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return self._view_from(job_id, service, replies)

    def views(self, job_ids: list[str], service: str | None) -> list[JobView]:
        """The views of many jobs read in one round trip (the dashboard's lists); a job that is gone
        or belongs to another service is left out."""
        with self.connection.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                _view_commands(pipe, job_id)
            replies = pipe.execute()
        views = []
        for index, job_id in enumerate(job_ids):
            with contextlib.suppress(NotFoundError):
                views.append(self._view_from(job_id, service, replies[3 * index : 3 * index + 3]))
        return views

    def _view_from(self, job_id: str, service: str | None, replies: list[Any]) -> JobView:
        fields, results, review = replies
        raw = dict(zip(_FIELDS, fields, strict=True))
        if raw["status"] is None:
            raise NotFoundError(f"no job {shown_id(job_id)}")
        meta = json.loads(raw["meta"]) if raw["meta"] else {}
        if service is not None and meta.get("service") != service:
            raise NotFoundError(f"no job {shown_id(job_id)}")
        status = RQ_STATUS_TO_STATE.get(raw["status"].decode(), JobState.QUEUED)
        view = JobView(
            id=job_id,
            status=status,
            service=meta.get("service", ""),
            queue=keys.text(raw["origin"]) or "",
            created_at=(keys.text(raw["created_at"]) or None),
            started_at=(keys.text(raw["started_at"]) or None),
            ended_at=(keys.text(raw["ended_at"]) or None) if status.is_final else None,
            metadata=meta.get("metadata", {}),
            attempts=_attempts(meta, raw["retries_left"], status),
        )
        if results and status.is_final:
            self._attach_result(view, job_id, results[0])
            if view.result is not None and view.result.draft:
                view.review = json.loads(review) if review else {"state": "pending"}
        if status in (JobState.RETRYING, JobState.FAILED) or (status == JobState.QUEUED and view.attempts):
            self._attach_history(view)
        return view

    def _attach_history(self, view: JobView) -> None:
        """Failure paths only: earlier attempts' calls, the last error, when the next try is due."""
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.lrange(keys.job_calls(view.id), 0, -1)
            pipe.zscore(self.queue(view.queue).scheduled_job_registry.key, view.id)
            raw_calls, due = pipe.execute()
        view.calls = [ProviderCall.model_validate_json(item) for item in raw_calls] or None
        if view.error is None and view.calls:
            view.error = next((c.error for c in reversed(view.calls) if c.outcome == "error"), None)
        if due is not None and view.status == JobState.RETRYING:
            view.next_attempt_at = datetime.fromtimestamp(float(due), UTC).isoformat().replace("+00:00", "Z")

    def _attach_result(self, view: JobView, job_id: str, entry: tuple[bytes, dict[bytes, bytes]]) -> None:
        result = Result.restore(job_id, entry[0].decode(), entry[1], self.connection, JSONSerializer)
        if result.type == Result.Type.SUCCESSFUL and isinstance(result.return_value, dict):
            view.result = JobResult.model_validate(result.return_value)
            view.attempts = view.result.attempt
        elif result.exc_string:
            view.error = _parse_error(result.exc_string)

    def owner(self, job_id: str) -> str:
        """The service that submitted a job ("" when there is no such job)."""
        meta = self.connection.hget(Job.key_for(job_id), "meta")
        return str(json.loads(meta).get("service", "")) if meta else ""

    def review(self, job_id: str, review: ReviewRequest, *, reviewer: str) -> JobView:
        """Approve or reject a finished draft, once, as ``reviewer``.

        Who may see the job is the caller's check (the API's ``view_for``; the CLI is an operator).
        """
        view = self.view(job_id, None)
        if view.status != JobState.SUCCEEDED or view.result is None:
            raise ConflictError(f"job {job_id} is {view.status.value}; only a finished draft can be reviewed")
        if not view.result.draft:
            raise ConflictError(f"job {job_id}'s output is not a draft; there is nothing to review")
        record = {
            "state": "approved" if review.decision == "approve" else "rejected",
            "by": reviewer,
            "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "comment": review.comment,
        }
        ttl = self.connection.ttl(Job.key_for(job_id))
        expiry = int(ttl) if ttl and int(ttl) > 0 else self.config.gateway.jobs.result_ttl
        held = (view.result.skill or {}).get("held")
        if held and review.decision == "approve":
            record["apply_job"] = f"{job_id}-apply"  # one per draft, named before it exists
        if not self.connection.set(keys.review(job_id), json.dumps(record), nx=True, ex=expiry):
            current = view.review or {}
            raise ConflictError(
                f"job {job_id} was already {current.get('state', 'reviewed')} by {current.get('by', '?')}"
            )
        if "apply_job" in record:
            try:
                self._enqueue_apply(job_id, str(record["apply_job"]), view)
            except BaseException:  # no apply job: the approval must not stand without it; try again
                with contextlib.suppress(redis.RedisError):
                    if not Job.exists(str(record["apply_job"]), connection=self.connection):
                        self.connection.delete(keys.review(job_id))
                raise
        view.review = record
        return view

    def _enqueue_apply(self, job_id: str, apply_id: str, view: JobView) -> None:
        """The approved draft's held side-effect steps, as a job of its own (one attempt: no repeats)."""
        assert view.result is not None and view.result.skill is not None
        original = QueuedJob.model_validate(
            Job.fetch(job_id, connection=self.connection, serializer=JSONSerializer).args[0]
        )
        skill = view.result.skill
        request = JobRequest(
            skill=f"{skill['name']}@{skill['version']}",
            inputs=original.request.inputs or {},
            metadata={"approved_job": job_id},
        )
        approved = ApprovedDraft(
            job_id=job_id,
            outputs=view.result.outputs or {},
            bundle_sha256=skill.get("bundle_sha256"),  # the code that was reviewed, and no other
        )
        queued = QueuedJob.submitted(view.service, request, max_attempts=1, apply=approved)
        with self.connection.pipeline() as pipe:
            self._enqueue_into(pipe, apply_id, view.queue, queued)
            pipe.execute()

    def cancel(self, job_id: str, service: str | None) -> tuple[JobView, bool]:
        """Cancel a queued or retrying job here; a running one is signalled to its worker.

        Returns the view and whether a running job was signalled (its worker finalises it).
        """
        view = self.view(job_id, service)
        if view.status.is_final:
            return view, False
        job = Job.fetch(job_id, connection=self.connection, serializer=JSONSerializer)
        if job.get_status() == JobStatus.STARTED:
            self.connection.publish(keys.CANCEL_CHANNEL, job_id)
            return view, True
        with contextlib.suppress(InvalidJobOperation):
            job.cancel()
        channels = QueuedJob.model_validate(job.args[0]).request.notify if job.args else []
        with self.connection.pipeline() as pipe:  # a canceled record expires like a failed one
            pipe.expire(job.key, self.config.gateway.jobs.failure_ttl)
            pipe.publish(keys.DONE_CHANNEL, job_id)
            if channels:
                notifications.append(
                    pipe, notifications.job_event(job_id, view.service, "canceled", None, channels)
                )
            if job.args and isinstance(job.args[0], dict):
                metrics.write(pipe, metrics.canceled(job.args[0], view.queue))
            pipe.execute()
        return self.view(job_id, service), False


def _view_commands(pipe: Pipeline, job_id: str) -> None:
    """What a view reads: the job hash's fields (not its data blob), its last result, its review."""
    pipe.hmget(Job.key_for(job_id), _FIELDS)
    pipe.xrevrange(Result.get_key(job_id), "+", "-", count=1)
    pipe.get(keys.review(job_id))


def failed_jobs(store: JobStore, limit: int = 100) -> list[JobView]:
    """Dead letters: failed jobs of every queue, newest first."""
    views: list[JobView] = []
    for name in store.config.gateway.queues:
        registry = store.queue(name).failed_job_registry
        for job_id in reversed(registry.get_job_ids(0, limit - 1)):
            with contextlib.suppress(NotFoundError):
                views.append(store.view(job_id, None))
    return sorted(views, key=lambda v: v.ended_at or "", reverse=True)[:limit]


def retry_failed(store: JobStore, job_id: str) -> None:
    """Requeue a failed job (a fresh attempt; its earlier calls stay on the record)."""
    view = store.view(job_id, None)
    if view.status != JobState.FAILED:
        raise ConflictError(f"job {job_id} is {view.status.value}, not failed")
    store.queue(view.queue).failed_job_registry.requeue(job_id)


def retry_schedule(intervals: list[int], max_attempts: int) -> list[int]:
    """One interval per retry, the last configured value repeating.

    RQ picks ``intervals[len - retries_left]``, counting from the end of the list, so the list
    must have exactly one entry per retry for ``intervals[0]`` to come first.
    """
    return [intervals[min(i, len(intervals) - 1)] for i in range(max_attempts - 1)]


def _attempts(meta: dict[str, Any], retries_left: bytes | None, status: JobState) -> int:
    """Attempts started so far, from RQ's retries-left counter."""
    if status == JobState.QUEUED and retries_left is None:
        return 0
    max_attempts = int(meta.get("max_attempts", 1))
    left = int(retries_left) if retries_left is not None else max_attempts - 1
    started = max_attempts - left
    return started if status != JobState.QUEUED else started - 1


def _parse_error(exc_string: str) -> dict[str, Any]:
    try:
        parsed = json.loads(exc_string)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and "type" in parsed:
        return parsed
    last_line = exc_string.strip().splitlines()[-1] if exc_string.strip() else "unknown error"
    return {"type": "internal_error", "message": last_line}


def request_fingerprint(request: JobRequest) -> str:
    """SHA-256 of the body as it means (keys sorted), without the idempotency key itself."""
    body = request.model_dump(mode="json", exclude={"idempotency_key"}, exclude_none=True)
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _same_request(noted: str, request: JobRequest) -> str:
    """The job id an idempotency key holds, if this request is the one it was first sent with."""
    job_id, _, fingerprint = noted.partition(":")
    if fingerprint and fingerprint != request_fingerprint(request):  # (a key noted before fingerprints: any)
        raise IdempotencyKeyReusedError(
            f"idempotency_key: {request.idempotency_key!r} was already used for job {job_id} with a "
            "different request; use a new key for a new request"
        )
    return job_id


#: the most of a job id a message shows; a real one (uuid4 hex) is 32 characters
_SHOWN_ID_CHARS = 64


def shown_id(job_id: str) -> str:
    """``job_id`` fit for a message: at most 64 characters, control and non-ASCII ones escaped
    (``\\n``, ``\\u2028``), so whatever a client puts in the URL comes back short and inert."""
    cut = job_id[:_SHOWN_ID_CHARS]
    shown = json.dumps(cut)[1:-1]
    return shown + (f"... ({len(job_id)} characters)" if len(job_id) > len(cut) else "")
