"""The /v1/jobs routes: submit, read (with a long-poll), review a draft, cancel.

A caller sees its own service's jobs, and the drafts of the services it reviews
(``policies.yaml`` reviewers); any other job id is "not found".
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import Response, StreamingResponse

from gateway.api import dropin
from gateway.api.admission import enqueue_admitted
from gateway.api.bodies import REVIEW_BODY_LIMIT, job_body_limit, parse_job_request, parse_model, read_body
from gateway.api.dependencies import Gateway, Service, Shared
from gateway.chat import Delta, delta_to_dict
from gateway.errors import NotFoundError
from gateway.jobs import JobRequest, JobView, ReviewRequest, Usage

_JOB_REQUEST_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}}},
    }
}


def router() -> APIRouter:
    routes = APIRouter(prefix="/v1/jobs")
    routes.add_api_route(
        "",
        submit_job,
        methods=["POST"],
        status_code=202,
        response_model=JobView,
        openapi_extra=_JOB_REQUEST_SCHEMA,
    )
    routes.add_api_route("/{job_id}", get_job, methods=["GET"], response_model=JobView)
    routes.add_api_route("/{job_id}/review", review_job, methods=["POST"], response_model=JobView)
    routes.add_api_route("/{job_id}", cancel_job, methods=["DELETE"], response_model=JobView)
    routes.add_api_route("/{job_id}/stream", stream_job, methods=["GET"], response_model=None)
    return routes


async def submit_job(
    request: Request,
    gw: Shared,
    service: Service,
    wait: Annotated[float, Query(ge=0, description="Seconds to wait for the result (200 if done).")] = 0,
) -> Response:
    api = gw.config.gateway.api
    body = await read_body(request, job_body_limit(api.max_prompt_chars), api.body_timeout_seconds)
    job_request = parse_job_request(body, api.max_prompt_chars)
    # a retry of an accepted request (its idempotency key) gets its job: no second admission
    job_id, queued = await enqueue_admitted(gw, service, job_request)
    return json_view(await wait_for(gw, job_id, service, wait, queued), submitted=True)


async def get_job(
    job_id: str,
    gw: Shared,
    service: Service,
    wait: Annotated[float, Query(ge=0, description="Long-poll up to this many seconds.")] = 0,
) -> Response:
    return json_view(await wait_for(gw, job_id, service, wait))


async def review_job(job_id: str, request: Request, gw: Shared, service: Service) -> Response:
    """Approve or reject a draft (all_outputs_are_drafts): its own service or a listed reviewer."""
    timeout = gw.config.gateway.api.body_timeout_seconds
    body = parse_model(await read_body(request, REVIEW_BODY_LIMIT, timeout), ReviewRequest)
    await view_for(gw, job_id, service)  # its own job, or a draft it may review; else "not found"
    return json_view(gw.store.review(job_id, body, reviewer=service))


async def cancel_job(job_id: str, gw: Shared, service: Service) -> Response:
    view, signalled = gw.store.cancel(job_id, service)
    if signalled:  # a running job: its worker finalises the cancel
        return json_view(await wait_for(gw, job_id, service, 10.0))
    return json_view(view)


async def stream_job(job_id: str, request: Request, gw: Shared, service: Service) -> StreamingResponse:
    """A job's answer as server-sent events in aigw's own terms (``start``, ``text``,
    ``tool_call``, ``end``, ``error``): token by token for a job submitted with ``"stream": true``,
    else its whole answer once it is final. Hanging up does not cancel the job (DELETE does)."""
    view = gw.store.view(job_id, service)  # its own job, else "not found"
    job = JobRequest.model_validate(view.request or {"prompt": "?"})
    call = dropin.Call(job, job.model or "auto", on_disconnect="finish")
    return await dropin.relay(gw, service, request, job_id, call, NativeStreamEncoder)


class NativeStreamEncoder:
    """aigw's own stream format: one SSE event per stream event, named by its type."""

    def __init__(self, job_id: str, start: dict[str, Any]) -> None:
        self.job_id = job_id
        self.facts = {k: v for k, v in start.items() if k != "type"}

    @staticmethod
    def _event(name: str, data: dict[str, Any]) -> bytes:
        return (
            f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()
        )

    def start(self) -> bytes:
        return self._event("start", {"job_id": self.job_id, **self.facts})

    def delta(self, delta: Delta) -> bytes:
        data = delta_to_dict(delta)
        return self._event(str(data.pop("type")), data)

    def finish(self, *, finish_reason: str | None, usage: Usage, aigw: dict[str, Any]) -> bytes:
        return self._event("end", {"finish_reason": finish_reason, "usage": usage.model_dump(), **aigw})

    def error(self, *, type: str, message: str) -> bytes:
        return self._event("error", {"error": {"type": type, "message": message}})


async def view_for(gw: Gateway, job_id: str, service: str) -> JobView:
    """A job as ``service`` may see it: its own, or another service's draft it may review."""
    try:
        return await gw.store.view_grouped(job_id, service)
    except NotFoundError:
        if not gw.engine.has_reviewers:
            raise
        owner = gw.store.owner(job_id)
        if not owner or service not in gw.engine.reviewers_of(owner):
            raise
        view = gw.store.view(job_id, None)
        if view.result is None or not view.result.draft:
            raise
        return view


async def wait_for(
    gw: Gateway, job_id: str, service: str, wait: float, view: JobView | None = None
) -> JobView | bytes:
    """The job once final, or as it stands after ``wait`` seconds; a job whose worker published
    its final view (``gateway/completion.py``) comes as those bytes, the answer as it stands.

    ``view`` is what the caller already knows (a job it just enqueued is queued), saving a read.
    """
    view = view or await view_for(gw, job_id, service)
    if view.status.is_final or wait <= 0:
        return view
    wait = min(wait, gw.config.gateway.api.max_wait_seconds)
    woken = await gw.waiter.wait_view(job_id, wait)
    if woken is not None and woken.view is not None:
        return woken.view
    return await view_for(gw, job_id, service)  # woken without a view, or timed out: read it


def json_view(view: JobView | bytes, *, submitted: bool = False) -> Response:
    """The view as the API answers it, serialised by pydantic's own (Rust) JSON writer (a published
    view already was, and is final). A ``submitted`` job that is not final yet is 202."""
    if isinstance(view, bytes):
        return Response(view, media_type="application/json")
    body = view.model_dump_json(exclude_none=True).encode()
    status_code = 202 if submitted and not view.status.is_final else 200
    return Response(body, status_code=status_code, media_type="application/json")


def publish_job_request_schema(app: FastAPI) -> None:
    """Publish JobRequest in /openapi.json although ``submit_job`` parses the body itself."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            job_schema = JobRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(job_schema.pop("$defs", {}))
            components["JobRequest"] = job_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
