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

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import __version__
from gateway.api import health, jobs
from gateway.api.dependencies import Gateway
from gateway.auth_failures import AuthFailures
from gateway.config import Config
from gateway.errors import (
    GatewayError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnavailableError,
    ValidationError,
)
from gateway.policies import PolicyEngine
from gateway.quotas import Quotas
from gateway.services import ServiceRegistry
from gateway.settings import Settings
from gateway.skills import SkillCatalog
from gateway.store import JobStore
from gateway.validation import first_error
from gateway.waiter import CompletionWaiter


def create_app(config: Config, redis_url: str, settings: Settings | None = None) -> FastAPI:
    """The API on ``config``; ``settings`` None reads them from ``os.environ`` (an entry point)."""
    settings = settings or Settings.from_environ(os.environ)
    connection = redis.Redis.from_url(
        redis_url, socket_connect_timeout=1.0, socket_timeout=3.0, health_check_interval=10
    )
    gw = Gateway(
        config=config,
        connection=connection,
        store=JobStore(connection, config),
        services=ServiceRegistry(connection, config),
        waiter=CompletionWaiter(redis_url),
        engine=PolicyEngine(config),
        quotas=Quotas(connection, config),
        skills=SkillCatalog(config, connection, settings.home / "skill-cache"),
        auth_failures=AuthFailures(connection, config.gateway.api.auth_failures_per_minute),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await gw.waiter.start()
        yield
        await gw.waiter.stop()
        connection.close()

    app = FastAPI(title="aigw", version=__version__, lifespan=lifespan)
    app.state.gateway = gw  # what the routes' dependencies hand them (gateway.api.dependencies)
    _install_error_handlers(app)
    app.include_router(jobs.router())
    app.include_router(health.router())
    jobs.publish_job_request_schema(app)
    return app


def _error_response(error: GatewayError) -> JSONResponse:
    headers = {}
    retry_after = error.retry_after  # 503 while Redis is down, 429 over a quota or auth failures
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if isinstance(error, PayloadTooLargeError | RequestTimeoutError):  # the rest is never read: cut it off
        headers["Connection"] = "close"
    return JSONResponse({"error": error.to_dict()}, status_code=error.http_status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    async def gateway_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        return _error_response(exc)

    async def redis_down(_request: Request, _exc: Exception) -> JSONResponse:
        return _error_response(UnavailableError("Redis is unreachable; try again shortly", retry_after=1.0))

    async def bad_params(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = first_error(exc)
        return _error_response(ValidationError(f"{first.where or 'request'}: {first.msg}"))

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kinds = {404: "not_found", 405: "method_not_allowed"}
        body = {"error": {"type": kinds.get(exc.status_code, "http_error"), "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def unexpected(_request: Request, _exc: Exception) -> JSONResponse:
        # a bug, not bad input; still the envelope (uvicorn logs the traceback after this answer)
        body = {"error": {"type": "internal_error", "message": "internal error"}}
        return JSONResponse(body, status_code=500)

    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(redis.ConnectionError, redis_down)
    app.add_exception_handler(redis.TimeoutError, redis_down)
    app.add_exception_handler(RequestValidationError, bad_params)
