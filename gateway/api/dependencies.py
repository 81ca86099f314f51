"""What the routes share, and the FastAPI dependencies that hand it to them.

``create_app`` builds one ``Gateway`` and puts it on ``app.state``; a route takes it (``Shared``)
and the calling service (``Service``: the token checked, else a 401, or a 429 for an unknown token
from an address that failed too often: gateway/auth_failures.py) as parameters. Both
dependencies are ``async`` so they run on the event loop: FastAPI runs a plain ``def``
dependency in a thread, a hop per request for a token lookup that is usually a cache hit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated

import redis
from fastapi import Depends, Header, Request

from gateway.auth_failures import AuthFailures
from gateway.config import Config
from gateway.dashboard.series import History
from gateway.errors import AuthError
from gateway.job_stream import StreamReader
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
    streams: StreamReader
    #: the dashboard's audit history (gateway/dashboard/series.py); None: no dashboard
    history: History | None = None
    #: when this API process started (the ``created`` of the models /v1/models lists)
    started_at: int = field(default_factory=lambda: int(time.time()))


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

    The token is always looked up, so a valid one works from any address. A missing or unknown
    one is a failure counted against the caller's address; past its limit, the address's next
    ones get 429 instead of 401 (and are counted as throttled, not audited again).
    """
    token = x_api_key
    if authorization:
        scheme, _, value = authorization.partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else None
    address = client_address(request)
    try:
        return gw.services.authenticate(token)
    except AuthError as exc:
        gw.auth_failures.check(address)  # throttled: a 429, not one more failure
        gw.auth_failures.record(address, request.method, request.url.path, exc)
        raise


def client_address(request: Request) -> str:
    """The socket peer, or behind a proxy listed in ``api.trusted_proxies`` the client its
    X-Forwarded-For names (uvicorn puts it in the scope: gateway/api/server.py). From anyone
    else X-Forwarded-For is ignored, since any caller could write it."""
    return request.client.host if request.client is not None else "unknown"


Service = Annotated[str, Depends(authenticated_service)]
