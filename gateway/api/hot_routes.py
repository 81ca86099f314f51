"""The two routes every job takes, ``POST /v1/jobs`` and ``GET /v1/jobs/{id}``, served straight
from ASGI.

FastAPI's routing, dependency solving and response wrapping cost about a quarter of the API's CPU
per job (docs/benchmarks.md). This middleware answers the ordinary request on those two routes
with the very functions the FastAPI routes call (``gateway.api.jobs``), and hands everything else
to FastAPI untouched: another path or method, a query it would have to validate, a token that
does not authenticate. Those are answered by FastAPI exactly as before, error shapes, auth-failure
accounting and all, because nothing of the request has been read when they are handed on.

Once the body is read the request is this module's to answer: an error from then on goes through
the app's own exception handlers (``gateway.api.app.EXCEPTION_HANDLERS``), so the status, envelope
and headers are the ones the FastAPI route would have sent; an unexpected one propagates to
Starlette's ServerErrorMiddleware (outside this one), which answers 500 with the envelope and logs it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.admission import enqueue_admitted
from gateway.api.bodies import job_body_limit, parse_job_request, read_body
from gateway.api.dependencies import Gateway
from gateway.api.jobs import json_view, wait_for

JOBS = "/v1/jobs"
_JOB_PREFIX = JOBS + "/"
#: a ``wait`` plainly written; anything else (exponents, "inf", blanks) FastAPI validates
_PLAIN_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{0,9})?")

Handler = Callable[[Request, Exception], Awaitable[Response]]
#: what a hot route does with an authenticated request: (request, service, wait) -> response
Answer = Callable[[Request, str, float], Awaitable[Response]]


class HotRoutes:
    """ASGI middleware: the job routes' ordinary requests answered here, the rest by ``app``."""

    def __init__(self, app: ASGIApp, gateway: Gateway, handlers: Mapping[type[Exception], Handler]) -> None:
        self.app = app
        self.gw = gateway
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            if method == "POST" and path == JOBS:
                if await self._serve(scope, receive, send, self._submit):
                    return
            elif method == "GET" and path.startswith(_JOB_PREFIX):
                job_id = path[len(_JOB_PREFIX) :]
                if job_id and "/" not in job_id:
                    read = functools.partial(self._read, job_id)
                    if await self._serve(scope, receive, send, read):
                        return
        await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, answer: Answer) -> bool:
        """Answer with ``answer(request, service, wait)``; False (nothing read) for FastAPI to answer."""
        wait, service = self._wait(scope), self._service(scope)
        if wait is None or service is None:
            return False
        request = Request(scope, receive)
        try:
            response = await answer(request, service, wait)
        except Exception as exc:
            response = await self._error(request, exc)
        await response(scope, receive, send)
        return True

    async def _submit(self, request: Request, service: str, wait: float) -> Response:
        api = self.gw.config.gateway.api
        body = await read_body(request, job_body_limit(api.max_prompt_chars), api.body_timeout_seconds)
        job_request = parse_job_request(body, api.max_prompt_chars)
        job_id, queued = await enqueue_admitted(self.gw, service, job_request)
        return json_view(await wait_for(self.gw, job_id, service, wait, queued), submitted=True)

    async def _read(self, job_id: str, _request: Request, service: str, wait: float) -> Response:
        return json_view(await wait_for(self.gw, job_id, service, wait))

    async def _error(self, request: Request, exc: Exception) -> Response:
        """The app's own handler for ``exc`` (nearest class first, as Starlette looks it up)."""
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None and cls is not Exception:
                return await handler(request, exc)
        raise exc

    @staticmethod
    def _wait(scope: Scope) -> float | None:
        """``?wait=`` as FastAPI would read it, or None for a query only FastAPI should judge."""
        query = scope["query_string"]
        if not query:
            return 0.0
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)  # as Starlette parses it
        waits = [value for name, value in pairs if name == "wait"]
        if not waits:
            return 0.0
        if len(waits) > 1 or not _PLAIN_SECONDS.fullmatch(waits[0]):
            return None
        return float(waits[0])

    def _service(self, scope: Scope) -> str | None:
        """The service of the request's one token, or None (FastAPI then answers, and counts it)."""
        found: dict[bytes, list[bytes]] = {}
        for name, value in scope["headers"]:
            if name in (b"authorization", b"x-api-key"):
                found.setdefault(name, []).append(value)
        if any(len(values) > 1 for values in found.values()):
            return None
        token: str | None = None
        if b"x-api-key" in found:
            token = found[b"x-api-key"][0].decode("latin-1")
        if b"authorization" in found:
            scheme, _, value = found[b"authorization"][0].decode("latin-1").partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else None
        try:
            return self.gw.services.authenticate(token)
        except Exception:  # a bad token, Redis down: the FastAPI route answers (and counts) it
            return None


def install(app: Any, gateway: Gateway, handlers: Mapping[type[Exception], Handler]) -> None:
    """Put ``HotRoutes`` in front of ``app``'s router (inside its ServerErrorMiddleware)."""
    app.add_middleware(HotRoutes, gateway=gateway, handlers=handlers)
