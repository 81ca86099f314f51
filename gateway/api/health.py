"""Liveness and readiness: ``/healthz`` (the process answers), ``/readyz`` (Redis and a worker per queue)."""

from __future__ import annotations

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from gateway import __version__
from gateway.api.dependencies import Shared
from gateway.errors import UnavailableError
from gateway.status import live_workers


def router() -> APIRouter:
    routes = APIRouter()
    routes.add_api_route("/healthz", healthz, methods=["GET"])
    routes.add_api_route("/readyz", readyz, methods=["GET"])
    return routes


async def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


async def readyz(gw: Shared) -> JSONResponse:
    try:
        gw.connection.ping()
        workers = live_workers(gw.connection)
    except redis.RedisError:
        raise UnavailableError("Redis is unreachable", retry_after=1.0) from None
    by_queue = {q: sum(1 for w in workers if q in w["queues"]) for q in gw.config.gateway.queues}
    ready = all(by_queue.values())
    body = {"status": "ready" if ready else "not_ready", "redis": "ok", "workers": by_queue}
    return JSONResponse(body, status_code=200 if ready else 503)
