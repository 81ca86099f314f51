"""What the routes share, and the FastAPI dependencies that hand it to them.

``create_app`` builds one ``Gateway`` and puts it on ``app.state``; a route takes it (``Shared``)
and the calling service (``Service``: the token checked, else a 401, or a 429 for an address that
failed too often: gateway/auth_failures.py) as parameters. Both
dependencies are ``async`` so they run on the event loop: FastAPI runs a plain ``def``
dependency in a thread, a hop per request for a token lookup that is usually a cache hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis
from fastapi import Depends, Header, Request

from gateway.auth_failures import AuthFailures
from gateway.config import Config
from gateway.errors import AuthError
from gateway.policies import PolicyEngine
from gateway.quotas import Quotas
from gateway.services import ServiceRegistry
from gateway.skills import SkillCatalog
from gateway.store import JobStore
from gateway.waiter import CompletionWaiter


@dataclass
class Gateway:
    """What the routes share: built once in ``create_app``, passed down (no module globals)."""

    config: Config
    connection: redis.Redis
    store: JobStore
    services: ServiceRegistry
    waiter: CompletionWaiter
    engine: PolicyEngine
    quotas: Quotas
    skills: SkillCatalog
    auth_failures: AuthFailures


async def shared_gateway(request: Request) -> Gateway:
    gw = request.app.state.gateway
    assert isinstance(gw, Gateway)
    return gw


Shared = Annotated[Gateway, Depends(shared_gateway)]


async def authenticated_service(
    request: Request,
    gw: Shared,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> str:
    """The service the request's token belongs to: ``Authorization: Bearer`` or ``x-api-key``.

    A failure is counted against the caller's address, which past its limit is refused before
    its next unknown token is even looked up.
    """
    token = x_api_key
    if authorization:
        scheme, _, value = authorization.partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else None
    address = client_address(request)
    try:
        return gw.services.authenticate(token, before_lookup=lambda: gw.auth_failures.check(address))
    except AuthError as exc:
        gw.auth_failures.record(address, request.method, request.url.path, exc)
        raise


def client_address(request: Request) -> str:
    """The socket peer. X-Forwarded-For is not read: any caller could write it, so behind a proxy
    every client shares the proxy's address (which is why a proven token passes the throttle)."""
    return request.client.host if request.client is not None else "unknown"


Service = Annotated[str, Depends(authenticated_service)]
