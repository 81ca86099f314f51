"""What the drop-in endpoints (OpenAI's and Anthropic's wire formats) share: one call through the queue.

A vendor SDK expects a synchronous answer, so a drop-in call is a job enqueued like any other
(idempotency, admission: policies, budgets, limits) and then waited for: the whole answer, or its
stream relayed from the worker through Redis (``gateway/job_stream.py``). The wire modules
(``gateway/wire/``) parse the body and write the answer; this module owns the queue side, the
``x-aigw-*`` headers, and a failed job raised again as the error the SDK expects.

Options a vendor body has no field for come as headers: ``x-aigw-queue``, ``x-aigw-priority``,
``x-aigw-cache``, ``Idempotency-Key`` (or ``x-aigw-idempotency-key``), ``x-aigw-notify`` (channels,
comma-separated) and ``x-aigw-on-disconnect`` (``cancel``, the default, or ``finish``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from gateway.api.admission import enqueue_admitted
from gateway.api.bodies import check_size
from gateway.api.dependencies import Gateway
from gateway.chat import Delta, TextDelta, ToolCallDelta, delta_from_dict
from gateway.errors import GatewayError, ValidationError, error_from_record
from gateway.jobs import JobRequest, JobResult, JobState, JobView, Usage

#: how often a relay with no event checks whether the job ended some other way (canceled, reaped)
POLL_SECONDS = 1.0
#: how long past the queue's job timeout a caller waits before it is told to poll instead
WAIT_MARGIN = 30.0
_ON_DISCONNECT = ("cancel", "finish")


class StreamEncoder(Protocol):
    """A wire module's stream encoder (``ChatStreamEncoder``, ``MessagesStreamEncoder``)."""

    def start(self) -> bytes: ...

    def delta(self, delta: Delta) -> bytes: ...

    def finish(self, *, finish_reason: str | None, usage: Usage, aigw: dict[str, Any]) -> bytes: ...

    def error(self, *, type: str, message: str) -> bytes: ...


@dataclass(frozen=True)
class Call:
    """One drop-in call: the job to run, the model name the client used, what to do on disconnect."""

    job: JobRequest
    asked_model: str
    on_disconnect: str = "cancel"
    #: this request enqueued the job (not a replay of an idempotency key, not a reader of a job
    #: submitted elsewhere): only then does hanging up cancel it
    created: bool = False


def prepare(gw: Gateway, request: Request, job: JobRequest) -> Call:
    """The job with its model resolved to an alias (404 if none) and the ``x-aigw-*`` options applied."""
    check_size(job, gw.config.gateway.api.max_prompt_chars)
    headers = request.headers
    asked = job.model or "auto"
    models = gw.config.models
    # `auto` embeds on the alias that serves the `embeddings` task, not on the default chat model
    embedder = models.alias_for_task("embeddings") if job.embed is not None else None
    alias = embedder if asked == "auto" and embedder else models.resolve_alias(asked, None)
    update: dict[str, Any] = {"model": alias}
    queue = headers.get("x-aigw-queue")
    if queue is not None:
        update["queue"] = _choice("x-aigw-queue", queue, ("interactive", "batch"))
    priority = headers.get("x-aigw-priority")
    if priority is not None:
        update["priority"] = _choice("x-aigw-priority", priority, ("normal", "high"))
    cache = headers.get("x-aigw-cache")
    if cache is not None:
        update["cache"] = _choice("x-aigw-cache", cache.lower(), ("true", "false")) == "true"
    key = headers.get("idempotency-key") or headers.get("x-aigw-idempotency-key")
    if key is not None:
        if not 1 <= len(key) <= 200:
            raise ValidationError("Idempotency-Key: 1 to 200 characters")
        update["idempotency_key"] = key
    notify = headers.get("x-aigw-notify")
    if notify:
        channels = [name.strip() for name in notify.split(",") if name.strip()]
        if len(channels) > 10:
            raise ValidationError("x-aigw-notify: at most 10 channels")
        update["notify"] = channels
    on_disconnect = _choice(
        "x-aigw-on-disconnect", headers.get("x-aigw-on-disconnect", "cancel"), _ON_DISCONNECT
    )
    # every value was checked above, so no second validation of the whole body (the hot path)
    return Call(job.model_copy(update=update), asked, on_disconnect)


def _choice(header: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValidationError(f"{header}: {value!r} is not one of {', '.join(allowed)}")
    return value


def wait_seconds(gw: Gateway, service: str, job: JobRequest) -> float:
    """How long a drop-in caller waits: every attempt's job timeout, the retry intervals between
    them, and a margin (the worker fails an attempt at its timeout, so a job is final by then
    unless no worker is running)."""
    queue = gw.store.queue_for(service, job)
    jobs = gw.config.gateway.jobs
    intervals = jobs.retry_intervals + [jobs.retry_intervals[-1]] * jobs.max_attempts
    attempts = gw.config.gateway.queues[queue].timeout * jobs.max_attempts  # type: ignore[index]
    return attempts + sum(intervals[: jobs.max_attempts - 1]) + WAIT_MARGIN


async def answer(gw: Gateway, service: str, call: Call) -> JobView:
    """The job's final view once it succeeded; its failure raised as the error it was."""
    job_id, view = await enqueue_admitted(gw, service, call.job)
    deadline = time.monotonic() + wait_seconds(gw, service, call.job)
    view = view or await gw.store.view_grouped(job_id, service)
    while not view.status.is_final:
        left = deadline - time.monotonic()
        if left <= 0:
            raise StillRunningError(job_id)
        woken = await gw.waiter.wait_view(job_id, left)
        if woken is not None and woken.view is not None:  # the worker sent its final view
            view = JobView.model_validate_json(woken.view)
        else:
            view = await gw.store.view_grouped(job_id, service)
    raise_for_failure(view)
    return view


class StillRunningError(GatewayError):
    """The wait ran out (no worker took the job): the job is not lost; its id says where to look."""

    type = "still_running"
    http_status = 504

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} is still waiting or running; poll GET /v1/jobs/{job_id}")
        self.job_id = job_id


def _end_facts(event: dict[str, Any]) -> dict[str, Any]:
    return {k: event.get(k) for k in ("draft", "cached", "cost_usd") if k in event}


def raise_for_failure(view: JobView) -> None:
    """A job that did not succeed, raised as the error it failed with (its id rides along, so the
    caller can read the job: its calls, its attempts)."""
    if view.status == JobState.SUCCEEDED:
        return
    if view.status == JobState.CANCELED:
        record: dict[str, Any] = {"type": "canceled", "message": f"job {view.id} was canceled"}
    else:
        record = view.error or {"type": "job_failed", "message": f"job {view.id} failed"}
    raise error_from_record({**record, "job_id": view.id})


def facts(view: JobView) -> dict[str, Any]:
    """aigw's own facts about a finished job, for the ``aigw`` key of a drop-in body."""
    result = view.result
    assert result is not None
    return {
        "job_id": view.id,
        "model": result.model,
        "provider": result.provider,
        "draft": result.draft,
        "offline": result.offline,
        "cached": result.cached,
        "cost_usd": result.cost_usd,
        "policy": policy_outcomes(result.policy),
        **({"review": view.review} if view.review else {}),
    }


def policy_outcomes(decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The policy decisions as names and outcomes only (never the values a rule matched)."""
    return [{"policy": d.get("policy"), "outcome": d.get("outcome")} for d in decisions]


def headers_for(
    job_id: str, *, model: str, draft: bool, offline: bool, policy: list[dict[str, Any]]
) -> dict[str, str]:
    """The ``x-aigw-*`` response headers: the job, the alias that answered, the flags, the decisions."""
    out = {
        "x-aigw-job-id": job_id,
        "x-aigw-model": model,
        "x-aigw-draft": "true" if draft else "false",
        "x-aigw-offline": "true" if offline else "false",
    }
    decided = ", ".join(f"{d['policy']}={d['outcome']}" for d in policy if d.get("policy"))
    if decided:  # policy names are the operator's; a header carries Latin-1 only
        out["x-aigw-policy"] = decided.encode("latin-1", "replace").decode("latin-1")
    return out


def result_headers(view: JobView) -> dict[str, str]:
    result = view.result
    assert result is not None
    return headers_for(
        view.id,
        model=result.model,
        draft=result.draft,
        offline=result.offline,
        policy=policy_outcomes(result.policy),
    )


def json_answer(body: dict[str, Any], view: JobView) -> JSONResponse:
    return JSONResponse(body, headers=result_headers(view))


Encoders = Callable[[str, dict[str, Any]], StreamEncoder]


async def stream(
    gw: Gateway, service: str, request: Request, call: Call, encoder: Encoders
) -> StreamingResponse:
    """The job's answer as server-sent events in the client's format, relayed as the worker streams it.

    The HTTP status and headers wait for the first delta (or the job's end): a job refused or failed
    before its first token answers with an HTTP error the SDK raises as its own type. After the
    first delta a failure is an error event with no end marker. A client that hangs up cancels the
    job unless it asked ``x-aigw-on-disconnect: finish``.
    """
    job_id, queued = await enqueue_admitted(gw, service, call.job)
    return await relay(
        gw, service, request, job_id, dataclasses.replace(call, created=queued is not None), encoder
    )


async def relay(
    gw: Gateway, service: str, request: Request, job_id: str, call: Call, encoder: Encoders
) -> StreamingResponse:
    """The events of a job already on the queue, as ``stream`` describes; a job that was not
    streamed (or whose stream expired) is replayed from its result once it is final."""
    deadline = time.monotonic() + wait_seconds(gw, service, call.job)
    events = gw.streams.events(job_id, poll=POLL_SECONDS, deadline=deadline)
    try:
        start = await _first_event(gw, service, request, job_id, events, call)
    except BaseException:
        await events.aclose()
        raise
    if start.get("type") == "replay":  # the job ended and its stream is gone: replay the result
        await events.aclose()
        return _replayed(job_id, start["view"], encoder)
    enc = encoder(job_id, start)
    headers = headers_for(
        job_id, model=start["model"], draft=bool(start.get("draft")), offline=bool(start.get("offline")),
        policy=start.get("policy") or [],
    )  # fmt: skip
    return StreamingResponse(
        _relay(gw, service, job_id, events, enc, call, start), media_type="text/event-stream",
        headers={**headers, "cache-control": "no-cache"},
    )  # fmt: skip


async def _first_event(
    gw: Gateway,
    service: str,
    request: Request,
    job_id: str,
    events: AsyncGenerator[dict[str, Any] | None, None],
    call: Call,
) -> dict[str, Any]:
    async for event in events:
        if event is None:  # nothing yet: did the job end without streaming, or the client leave?
            view = gw.store.view(job_id, service)
            if view.status.is_final:
                raise_for_failure(view)
                return {"type": "replay", "view": view}
            if await request.is_disconnected():
                _client_left(gw, service, job_id, call)
                raise StillRunningError(job_id)
            continue
        kind = event.get("type")
        if kind == "start":
            return event
        if kind == "error":
            raise error_from_record(event.get("error") or {})
    raise StillRunningError(job_id)


async def _relay(
    gw: Gateway,
    service: str,
    job_id: str,
    events: AsyncGenerator[dict[str, Any] | None, None],
    enc: StreamEncoder,
    call: Call,
    start: dict[str, Any],
) -> AsyncIterator[bytes]:
    finished = False
    # the same facts as an unstreamed answer's ``aigw`` key: the start event's, then the end's
    facts = {"job_id": job_id, **{k: start.get(k) for k in ("model", "provider", "offline", "policy")}}
    try:
        yield enc.start()
        async for event in events:
            if event is None:
                view = gw.store.view(job_id, service)
                if view.status in (JobState.FAILED, JobState.CANCELED):
                    error = view.error or {"type": "canceled", "message": f"job {job_id} was canceled"}
                    finished = True
                    yield enc.error(type=str(error.get("type")), message=str(error.get("message")))
                    return
                continue
            kind = event.get("type")
            if kind in ("text", "tool_call"):
                yield enc.delta(delta_from_dict(event))
            elif kind == "start":  # a second start after deltas: never two answers in one stream
                finished = True
                yield enc.error(type="stream_interrupted", message="the job's answer started over")
                return
            elif kind == "end":
                finished = True
                usage = Usage.model_validate(event.get("usage") or {})
                yield enc.finish(
                    finish_reason=event.get("finish_reason"), usage=usage, aigw={**facts, **_end_facts(event)}
                )
                return
            elif kind == "error":
                finished = True
                error = event.get("error") or {}
                yield enc.error(type=str(error.get("type")), message=str(error.get("message")))
                return
        finished = True
        yield enc.error(
            type="still_running", message=f"job {job_id} did not finish in time; poll /v1/jobs/{job_id}"
        )
    except Exception as exc:  # Redis failing under the relay: say so, and leave the job alone
        finished = True
        why = (
            f"the stream could not be relayed ({type(exc).__name__}); the job goes on: GET /v1/jobs/{job_id}"
        )
        yield enc.error(type="relay_failed", message=why)
    finally:
        with contextlib.suppress(Exception):
            await events.aclose()
        if not finished:  # the client hung up mid-stream
            _client_left(gw, service, job_id, call)


def _client_left(gw: Gateway, service: str, job_id: str, call: Call) -> None:
    """A client that hung up: the job it created is canceled, unless it asked to let it finish."""
    if call.on_disconnect == "cancel" and call.created:
        with contextlib.suppress(GatewayError):
            gw.store.cancel(job_id, service)


def _replayed(job_id: str, view: JobView, encoder: Encoders) -> StreamingResponse:
    """A stream of a job that already succeeded (an idempotent replay): its whole answer at once."""
    result = view.result
    assert isinstance(result, JobResult)
    start = {"model": result.model, "provider_model": result.provider_model, "draft": result.draft,
             "offline": result.offline, "policy": policy_outcomes(result.policy)}  # fmt: skip
    enc = encoder(job_id, start)

    async def body() -> AsyncIterator[bytes]:
        yield enc.start()
        if result.output:
            yield enc.delta(TextDelta(result.output))
        for i, call in enumerate(result.tool_calls or []):
            yield enc.delta(ToolCallDelta(i, call.id, call.name, call.arguments))
        yield enc.finish(finish_reason=result.finish_reason, usage=result.usage, aigw=facts(view))

    return StreamingResponse(body(), media_type="text/event-stream", headers=result_headers(view))
