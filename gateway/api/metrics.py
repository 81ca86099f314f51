"""``GET /metrics``: Prometheus' text format for operators, summed across every process and host.

aigw has no admin token yet, so the endpoint is served without one only where nothing but this
machine can reach it: the API is configured on a loopback address (``api.host``, 127.0.0.1 by
default) and the client is on loopback too (behind a proxy in ``api.trusted_proxies``, the client
its X-Forwarded-For names). Anything else gets 403. No label carries a secret, a prompt or an
answer: services, aliases, queues, deployments, policy names and outcomes only.
"""

from __future__ import annotations

import asyncio
import ipaddress

import redis
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.api.dependencies import Shared, client_address
from gateway.errors import ForbiddenError, UnavailableError
from gateway.metrics.exposition import render


def router() -> APIRouter:
    routes = APIRouter()
    routes.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    return routes


async def metrics(request: Request, gw: Shared) -> Response:
    check_local(gw.config.gateway.api.host, client_address(request))
    try:  # two Redis round trips and the rendering, off the loop the job routes share
        body = await asyncio.to_thread(render, gw.connection, gw.config)
    except redis.RedisError:
        raise UnavailableError("Redis is unreachable", retry_after=1.0) from None
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def check_local(bound_host: str, client: str) -> None:
    """Refuse unless the API is configured on loopback and the client is on loopback."""
    if not is_loopback(bound_host):
        raise ForbiddenError(
            f"/metrics is served only by an API on a loopback address (api.host is {bound_host}); "
            "scrape it from this machine with api.host: 127.0.0.1"
        )
    if not is_loopback(client):
        raise ForbiddenError("/metrics is served only to clients on this machine (loopback)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
