"""The HTTP API: authenticate, validate, admit, enqueue; read, long-poll and cancel jobs.

Every error leaves through one handler as ``{"error": {"type", "message"}}`` with its status
(gateway.errors owns the mapping). Redis being down is a 503 with Retry-After, never a 500 or a
hang: the API's Redis client has short socket timeouts.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import redis
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import __version__
from gateway.audit import append_event, refusal_event
from gateway.config import Config
from gateway.errors import (
    GatewayError,
    NotFoundError,
    PayloadTooLargeError,
    PolicyDeniedError,
    QuotaExceededError,
    UnavailableError,
    ValidationError,
)
from gateway.home import aigw_home
from gateway.jobs import JobRequest, JobView, ReviewRequest
from gateway.policies import Decision, Plan, PolicyEngine, Subject
from gateway.quotas import Quotas
from gateway.services import ServiceRegistry
from gateway.skills import Skill, SkillCatalog, parse_ref, routed_request, validate_inputs
from gateway.status import live_workers
from gateway.store import JobStore
from gateway.waiter import CompletionWaiter

_Body = TypeVar("_Body", bound=BaseModel)

_JOB_REQUEST_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}}},
    }
}


@dataclass
class _Gateway:
    """What the routes share: built once in ``create_app``, passed down (no module globals)."""

    config: Config
    connection: redis.Redis
    store: JobStore
    services: ServiceRegistry
    waiter: CompletionWaiter
    engine: PolicyEngine
    quotas: Quotas
    skills: SkillCatalog

    def authenticate(self, authorization: str | None, x_api_key: str | None) -> str:
        token = x_api_key
        if authorization:
            scheme, _, value = authorization.partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else None
        return self.services.authenticate(token)

    def view_for(self, job_id: str, service: str) -> JobView:
        """A job as ``service`` may see it: its own, or another service's draft it may review."""
        try:
            return self.store.view(job_id, service)
        except NotFoundError:
            if not self.engine.has_reviewers:
                raise
            owner = self.store.owner(job_id)
            if not owner or service not in self.engine.reviewers_of(owner):
                raise
            view = self.store.view(job_id, None)
            if view.result is None or not view.result.draft:
                raise
            return view

    def admit(self, service: str, request: JobRequest) -> _Admission:
        """Refuse early what the policies refuse (the worker checks again before anything leaves).

        A refusal is audited: a service sending credentials or running over its budget is worth a line.
        """
        queue = self.store.queue_for(service, request)
        self._check_notify(request)
        skill = self._check_skill(request)
        routed = routed_request(request, skill) if skill is not None else request
        plan = self.engine.plan(
            Subject.from_request(service, queue, routed, skill=skill.name if skill else None)
        )
        decisions: list[Decision] = []
        try:
            if plan.denial is not None:
                raise plan.denial
            if plan.quotas:
                self.quotas.admit(service, plan, request.size_bytes(), decisions)
        except (PolicyDeniedError, QuotaExceededError) as exc:
            refused = [*plan.record(), *(d.to_dict() for d in decisions)]
            append_event(self.connection, refusal_event(service, queue, plan.alias, request, exc, refused))
            raise
        return _Admission(plan, decisions)

    def _check_notify(self, request: JobRequest) -> None:
        channels = self.config.channels
        for name in request.notify:
            if channels.deliverable(name) is None:
                known = ", ".join(c.name for c in channels.channels if c.type != "cli") or "none configured"
                raise ValidationError(f"notify: {name!r} is not a slack or webhook channel (known: {known})")

    def _check_skill(self, request: JobRequest) -> Skill | None:
        """A skill job's skill exists (404) and its inputs keep the contract (422), before it is queued."""
        if request.skill is None:
            return None
        name, version = parse_ref(request.skill)
        skill = self.skills.load(name, version)
        validate_inputs(skill.spec, request.inputs or {})
        return skill

    async def wait_for(self, job_id: str, service: str, wait: float, view: JobView | None = None) -> JobView:
        """The job once final, or as it stands after ``wait`` seconds.

        ``view`` is what the caller already knows (a job it just enqueued is queued), saving a read.
        """
        view = view or self.view_for(job_id, service)
        if view.status.is_final or wait <= 0:
            return view
        wait = min(wait, self.config.gateway.api.max_wait_seconds)
        await self.waiter.wait(job_id, wait)  # woken or timed out, the job is read once more
        return self.view_for(job_id, service)


@dataclass(frozen=True)
class _Admission:
    plan: Plan
    decisions: list[Decision]


def create_app(config: Config, redis_url: str) -> FastAPI:
    connection = redis.Redis.from_url(
        redis_url, socket_connect_timeout=1.0, socket_timeout=3.0, health_check_interval=10
    )
    gw = _Gateway(
        config=config,
        connection=connection,
        store=JobStore(connection, config),
        services=ServiceRegistry(connection, config),
        waiter=CompletionWaiter(redis_url),
        engine=PolicyEngine(config),
        quotas=Quotas(connection, config),
        skills=SkillCatalog(config, connection, aigw_home() / "skill-cache"),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await gw.waiter.start()
        yield
        await gw.waiter.stop()
        connection.close()

    app = FastAPI(title="aigw", version=__version__, lifespan=lifespan)
    _install_error_handlers(app)
    _add_job_routes(app, gw)
    _add_health_routes(app, gw)
    _add_job_request_schema(app)
    return app


def _json(view: JobView, status_code: int = 200) -> JSONResponse:
    return JSONResponse(view.model_dump(mode="json", exclude_none=True), status_code=status_code)


def _add_job_routes(app: FastAPI, gw: _Gateway) -> None:
    @app.post("/v1/jobs", status_code=202, response_model=JobView, openapi_extra=_JOB_REQUEST_SCHEMA)
    async def submit_job(
        request: Request,
        wait: Annotated[float, Query(ge=0, description="Seconds to wait for the result (200 if done).")] = 0,
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        service = gw.authenticate(authorization, x_api_key)
        job_request = _parse_job_request(await request.body(), gw.config.gateway.api.max_prompt_chars)
        replayed = gw.store.replayed(service, job_request)
        if replayed is not None:  # a retry of an accepted request: no second admission, no rate hit
            view = await gw.wait_for(replayed, service, wait)
            return _json(view, 200 if view.status.is_final else 202)
        admission = gw.admit(service, job_request)
        job_id, created = gw.store.enqueue(
            service,
            job_request,
            admission=[d.to_dict() for d in admission.decisions],
            rate_limit=gw.quotas.concurrency_limit(service, admission.plan),
        )
        queued = gw.store.queued_view(job_id, service, job_request) if created else None
        view = await gw.wait_for(job_id, service, wait, queued)
        return _json(view, 200 if view.status.is_final else 202)

    @app.get("/v1/jobs/{job_id}", response_model=JobView)
    async def get_job(
        job_id: str,
        wait: Annotated[float, Query(ge=0, description="Long-poll up to this many seconds.")] = 0,
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        service = gw.authenticate(authorization, x_api_key)
        return _json(await gw.wait_for(job_id, service, wait))

    @app.post("/v1/jobs/{job_id}/review", response_model=JobView)
    async def review_job(
        job_id: str,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        """Approve or reject a draft (all_outputs_are_drafts): its own service or a listed reviewer."""
        service = gw.authenticate(authorization, x_api_key)
        body = _parse_model(await request.body(), ReviewRequest)
        gw.view_for(job_id, service)  # its own job, or a draft it may review; else "not found"
        return _json(gw.store.review(job_id, body, reviewer=service))

    @app.delete("/v1/jobs/{job_id}", response_model=JobView)
    async def cancel_job(
        job_id: str,
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        service = gw.authenticate(authorization, x_api_key)
        view, signalled = gw.store.cancel(job_id, service)
        if signalled:  # a running job: its worker finalises the cancel
            view = await gw.wait_for(job_id, service, 10.0)
        return _json(view)


def _add_health_routes(app: FastAPI, gw: _Gateway) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        try:
            gw.connection.ping()
            workers = live_workers(gw.connection)
        except redis.RedisError:
            raise UnavailableError("Redis is unreachable", retry_after=1.0) from None
        by_queue = {q: sum(1 for w in workers if q in w["queues"]) for q in gw.config.gateway.queues}
        ready = all(by_queue.values())
        body = {"status": "ready" if ready else "not_ready", "redis": "ok", "workers": by_queue}
        return JSONResponse(body, status_code=200 if ready else 503)


def _parse_job_request(body: bytes, max_chars: int) -> JobRequest:
    limit = max_chars * 4 + 65_536  # a character is up to 4 bytes; refuse before parsing
    if len(body) > limit:
        raise PayloadTooLargeError(f"request body of {len(body)} bytes is over the limit of {limit} bytes")
    job_request = _parse_model(body, JobRequest)
    if (size := job_request.size_chars()) > max_chars:
        raise PayloadTooLargeError(f"prompt is {size} characters; the limit is {max_chars}")
    return job_request


def _parse_model(body: bytes, model: type[_Body]) -> _Body:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise _BadJsonError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationError("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise ValidationError(_describe(exc)) from None


def _describe(exc: PydanticValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
    return f"{where}: {message.removeprefix('Value error, ')}"


class _BadJsonError(GatewayError):
    type = "invalid_json"
    http_status = 400


def _error_response(error: GatewayError) -> JSONResponse:
    headers = {}
    retry_after = getattr(error, "retry_after", None)  # 503 while Redis is down, 429 over a quota
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return JSONResponse({"error": error.to_dict()}, status_code=error.http_status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    async def gateway_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        return _error_response(exc)

    async def redis_down(_request: Request, _exc: Exception) -> JSONResponse:
        return _error_response(UnavailableError("Redis is unreachable; try again shortly", retry_after=1.0))

    async def bad_params(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "request"
        return _error_response(ValidationError(f"{where}: {first.get('msg', 'invalid')}"))

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kinds = {404: "not_found", 405: "method_not_allowed"}
        body = {"error": {"type": kinds.get(exc.status_code, "http_error"), "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(redis.ConnectionError, redis_down)
    app.add_exception_handler(redis.TimeoutError, redis_down)
    app.add_exception_handler(RequestValidationError, bad_params)


def _add_job_request_schema(app: FastAPI) -> None:
    """Publish JobRequest in /openapi.json although the route parses the body itself."""
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
