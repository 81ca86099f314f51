"""The FastAPI app: ``create_app`` assembles the routers, the lifespan and the one error envelope.

Every error leaves through one handler as ``{"error": {"type", "message"}}`` with its status
(gateway.errors owns the mapping). Redis being down is a 503 with Retry-After, never a 500 or a
hang: the API's Redis client has short socket timeouts.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import __version__, rq_speedups, tracing
from gateway.api import anthropic_routes, dashboard, health, hot_routes, jobs, metrics, openai_routes
from gateway.api.dependencies import Gateway
from gateway.api.dropin import StillRunningError
from gateway.api.hot_routes import Handler
from gateway.audit.report import priced_deployments
from gateway.auth_failures import AuthFailures
from gateway.config import Config
from gateway.dashboard.series import History
from gateway.errors import (
    GatewayError,
    PayloadTooLargeError,
    RecordedError,
    RequestTimeoutError,
    UnavailableError,
    ValidationError,
)
from gateway.group_commit import GroupCommit
from gateway.job_stream import StreamReader
from gateway.policies import PolicyEngine
from gateway.quotas import Quotas
from gateway.services import ServiceRegistry
from gateway.settings import Settings
from gateway.skills import SkillCatalog
from gateway.store import JobStore
from gateway.validation import first_error
from gateway.waiter import CompletionWaiter
from gateway.wire import anthropic as anthropic_wire
from gateway.wire import openai as openai_wire


def create_app(config: Config, redis_url: str, settings: Settings | None = None) -> FastAPI:
    """The API on ``config``; ``settings`` None reads them from ``os.environ`` (an entry point)."""
    settings = settings or Settings.from_environ(os.environ)
    tracing.configure(settings.environ, "api")  # the OTEL_* variables; nothing when they are unset
    rq_speedups.install()
    connection = redis.Redis.from_url(
        redis_url, socket_connect_timeout=1.0, socket_timeout=3.0, health_check_interval=10
    )
    gw = Gateway(
        config=config,
        connection=connection,
        store=JobStore(connection, config, GroupCommit(connection)),
        services=ServiceRegistry(connection, config),
        waiter=CompletionWaiter(redis_url),
        engine=PolicyEngine(config),
        quotas=Quotas(connection, config),
        skills=SkillCatalog(config, connection, settings.home / "skill-cache"),
        auth_failures=AuthFailures(connection, config.gateway.api.auth_failures_per_minute),
        streams=StreamReader(redis_url, max_connections=config.gateway.api.max_connections),
        history=History.of(
            Path(config.gateway.audit.path or settings.home / "audit.log").expanduser(),
            priced_deployments(config.models),
        ),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await gw.waiter.start()
        yield
        await gw.waiter.stop()
        await gw.streams.aclose()
        connection.close()
        tracing.flush()  # the spans still batched (off: nothing)

    app = FastAPI(title="aigw", version=__version__, lifespan=lifespan)
    app.state.gateway = gw  # what the routes' dependencies hand them (gateway.api.dependencies)
    _install_error_handlers(app)
    hot_routes.install(app, gw, EXCEPTION_HANDLERS)  # POST /v1/jobs, GET /v1/jobs/{id}: no routing
    app.include_router(jobs.router())
    app.include_router(health.router())
    app.include_router(metrics.router())
    app.include_router(dashboard.router())
    app.include_router(openai_routes.router())
    app.include_router(anthropic_routes.router())
    jobs.publish_job_request_schema(app)
    tracing.install_api(app)  # outermost: the submit routes' spans (gateway/tracing.py), when on
    return app


def _error_response(error: GatewayError, path: str = "") -> JSONResponse:
    """The error in the shape of the API the path belongs to: a drop-in route's vendor SDK gets its
    own format (and so raises its own typed error), every other route aigw's envelope."""
    headers = {}
    retry_after = error.retry_after  # 503 while Redis is down, 429 over a quota or auth failures
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if isinstance(error, PayloadTooLargeError | RequestTimeoutError):  # the rest is never read: cut it off
        headers["Connection"] = "close"
    if isinstance(error, RecordedError | StillRunningError):
        # a job that ran (and was retried by aigw already) or still runs: a vendor SDK's own retry
        # would enqueue it again and pay twice, so tell the SDKs not to (both honour this header)
        headers["x-should-retry"] = "false"
        job_id = error.record.get("job_id") if isinstance(error, RecordedError) else error.job_id
        if isinstance(job_id, str):
            headers["x-aigw-job-id"] = job_id
    body = wire_error_body(error, path)
    return JSONResponse(body, status_code=error.http_status, headers=headers)


def wire_error_body(error: GatewayError, path: str) -> dict[str, Any]:
    if path.startswith(("/v1/chat/", "/v1/embeddings", "/v1/models")):
        return openai_wire.error_body(error)
    if path.startswith("/v1/messages"):
        return anthropic_wire.error_body(error)
    return {"error": error.to_dict()}


class _HttpError(GatewayError):
    """A routing error (unknown path, wrong method) in the same shapes as aigw's own errors."""

    def __init__(self, kind: str, status: int, message: str) -> None:
        super().__init__(message)
        self.type, self.http_status = kind, status


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return _error_response(exc, request.url.path)


async def _redis_down(request: Request, _exc: Exception) -> Response:
    down = UnavailableError("Redis is unreachable; try again shortly", retry_after=1.0)
    return _error_response(down, request.url.path)


async def _bad_params(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = first_error(exc)
    return _error_response(ValidationError(f"{first.where or 'request'}: {first.msg}"), request.url.path)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    kinds = {404: "not_found", 405: "method_not_allowed"}
    error = _HttpError(kinds.get(exc.status_code, "http_error"), exc.status_code, str(exc.detail))
    body = wire_error_body(error, request.url.path)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, _exc: Exception) -> Response:
    # a bug, not bad input; still the envelope (uvicorn logs the traceback after this answer)
    body = wire_error_body(_HttpError("internal_error", 500, "internal error"), request.url.path)
    return JSONResponse(body, status_code=500)


#: every error's answer, by exception class: FastAPI's handlers and the hot routes' alike
EXCEPTION_HANDLERS: dict[type[Exception], Handler] = {
    Exception: _unexpected,
    StarletteHTTPException: _http_error,
    GatewayError: _gateway_error,
    redis.ConnectionError: _redis_down,
    redis.TimeoutError: _redis_down,
    RequestValidationError: _bad_params,
}


def _install_error_handlers(app: FastAPI) -> None:
    for cls, handler in EXCEPTION_HANDLERS.items():
        app.add_exception_handler(cls, handler)
