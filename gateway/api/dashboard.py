"""``/dashboard``: the operator's page and the JSON it polls (``/dashboard/api/...``).

Access. A browser holds a session cookie (HttpOnly, SameSite=Strict, path ``/dashboard``) opened
either by a one-time link from ``aigw dashboard`` (the operator: everything) or by a service's
own token (that service's jobs, and the drafts it may review). A script may instead send a
service token as ``Authorization: Bearer`` to the GET endpoints. Anything else is a 401. The POST
actions (retry, review, log in, log out) need the session and pass a CSRF check: the request must
carry ``X-Aigw-Dashboard: 1`` (a header a cross-site form cannot send, and fetch cannot send
cross-origin without a preflight this API never answers) and, when it has one, an ``Origin`` equal
to the page's own.

Cost. Every read runs in a thread, off the loop the job routes share, and is bounded (lists of at
most ``data.MAX_LIST`` jobs; history from the audit log read incrementally, gateway/dashboard/
series.py; anomalies recomputed at most once a minute). Nothing here touches a job's
path.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from gateway.api.bodies import REVIEW_BODY_LIMIT, parse_model, read_body
from gateway.api.dependencies import Gateway, Shared, client_address
from gateway.dashboard import data, sessions
from gateway.dashboard.series import History
from gateway.dashboard.sessions import Viewer
from gateway.errors import AuthError, ConflictError, NotFoundError, ValidationError
from gateway.jobs import JobState, ReviewRequest
from gateway.store import retry_failed, shown_id
from gateway.validation import Strict

COOKIE = "aigw_dashboard"
CSRF_HEADER = "x-aigw-dashboard"
STATIC = ("index.html", "app.js", "app.css")
_TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css"}
#: the page loads nothing from anywhere else and may not be framed
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class LoginBody(Strict):
    """Exactly one: the one-time ``link`` token ``aigw dashboard`` printed, or a service ``token``."""

    link: str | None = None
    token: str | None = None


def router() -> APIRouter:
    routes = APIRouter(prefix="/dashboard", include_in_schema=False)
    routes.add_api_route("", page, methods=["GET"])
    routes.add_api_route("/static/{name}", static, methods=["GET"])
    routes.add_api_route("/api/session", login, methods=["POST"])
    routes.add_api_route("/api/session", logout, methods=["DELETE"])
    routes.add_api_route("/api/me", me, methods=["GET"])
    routes.add_api_route("/api/overview", overview, methods=["GET"])
    routes.add_api_route("/api/jobs", recent, methods=["GET"])
    routes.add_api_route("/api/failed", failed, methods=["GET"])
    routes.add_api_route("/api/drafts", drafts, methods=["GET"])
    routes.add_api_route("/api/anomalies", anomaly_list, methods=["GET"])
    routes.add_api_route("/api/jobs/{job_id}/retry", retry, methods=["POST"])
    routes.add_api_route("/api/jobs/{job_id}/review", review, methods=["POST"])
    return routes


Limit = Annotated[int, Query(ge=1, le=data.MAX_LIST, description="How many jobs at most.")]


def _asset(name: str) -> bytes:
    return resources.files("gateway.dashboard").joinpath("static", name).read_bytes()


async def page() -> Response:
    return Response(_asset("index.html"), media_type=_TYPES["html"], headers=_PAGE_HEADERS)


async def static(name: str) -> Response:
    if name not in STATIC:
        raise NotFoundError(f"no dashboard file {shown_id(name)}")
    return Response(_asset(name), media_type=_TYPES[name.rsplit(".", 1)[1]], headers=_PAGE_HEADERS)


def _history(gw: Gateway) -> History:
    if gw.history is None:
        raise NotFoundError("this API serves no dashboard")
    return gw.history


def _json(body: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json",
                    headers={"Cache-Control": "no-store"})  # fmt: skip


def check_csrf(request: Request) -> None:
    """A state-changing request must come from the page itself (see the module docstring)."""
    if request.headers.get(CSRF_HEADER) != "1":
        raise AuthError(f"a dashboard action must send the {CSRF_HEADER}: 1 header (the page does)")
    origin = request.headers.get("origin")
    host = request.headers.get("host", "")
    if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
        raise AuthError("a dashboard action must come from the dashboard's own origin")


async def _session(gw: Gateway, request: Request) -> Viewer | None:
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return None
    return await asyncio.to_thread(sessions.session_viewer, gw.connection, cookie)


async def viewer_of(gw: Gateway, request: Request, *, action: bool = False) -> Viewer:
    """The session's viewer; for a GET also a service's bearer token. Else a 401."""
    viewer = await _session(gw, request)
    if viewer is not None:
        if action:
            check_csrf(request)
        return viewer
    if action:
        raise AuthError("a dashboard action needs a dashboard session: open the link `aigw dashboard` prints")
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        address = client_address(request)
        try:
            return Viewer(gw.services.authenticate(token.strip() if scheme.lower() == "bearer" else None))
        except AuthError as exc:
            gw.auth_failures.check(address)
            gw.auth_failures.record(address, request.method, request.url.path, exc)
            raise
    raise AuthError("no dashboard session: open the link `aigw dashboard` prints, or send a service token")


async def login(request: Request, gw: Shared) -> Response:
    """Open a session from a one-time link (the operator) or a service token; sets the cookie."""
    check_csrf(request)
    body = parse_model(await read_body(request, 4096, gw.config.gateway.api.body_timeout_seconds), LoginBody)
    if (body.link is None) == (body.token is None):
        raise ValidationError("send exactly one of link (from `aigw dashboard`) or token (a service token)")
    api = gw.config.gateway.api
    address = client_address(request)
    try:
        if body.link is not None:
            viewer = await asyncio.to_thread(sessions.redeem_login, gw.connection, body.link)
        else:
            viewer = Viewer(gw.services.authenticate(body.token))
    except AuthError as exc:  # counted as on /v1: past the limit, a 429 instead of the 401
        gw.auth_failures.check(address)
        gw.auth_failures.record(address, request.method, request.url.path, exc)
        raise
    cookie = await asyncio.to_thread(
        sessions.open_session, gw.connection, viewer, api.dashboard_session_seconds
    )
    response = _json(viewer.describe())
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=int(api.dashboard_session_seconds),
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request, gw: Shared) -> Response:
    check_csrf(request)
    await asyncio.to_thread(sessions.close_session, gw.connection, request.cookies.get(COOKIE))
    response = _json({"logged_out": True})
    response.delete_cookie(COOKIE, path="/dashboard", httponly=True, samesite="strict")
    return response


async def me(request: Request, gw: Shared) -> Response:
    return _json((await viewer_of(gw, request)).describe())


async def overview(request: Request, gw: Shared) -> Response:
    viewer = await viewer_of(gw, request)
    state = _history(gw)

    def read() -> dict[str, Any]:
        state.window.refresh()
        history = state.window.snapshot(viewer.service)
        return {
            "now": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "viewer": viewer.describe(),
            "queues": data.queues(gw.connection, gw.store),
            "workers": data.workers(gw.connection),
            "audit_log": {"found": state.audit_log.exists()},
            **history,
        }

    return _json(await asyncio.to_thread(read))


async def recent(request: Request, gw: Shared, limit: Limit = 50) -> Response:
    viewer = await viewer_of(gw, request)
    return _json({"jobs": await asyncio.to_thread(data.recent_jobs, gw.store, viewer, limit)})


async def failed(request: Request, gw: Shared, limit: Limit = 50) -> Response:
    viewer = await viewer_of(gw, request)
    return _json({"jobs": await asyncio.to_thread(data.failed_jobs, gw.store, viewer, limit)})


async def drafts(request: Request, gw: Shared, limit: Limit = 50) -> Response:
    viewer = await viewer_of(gw, request)
    return _json({"jobs": await asyncio.to_thread(data.drafts, gw.store, gw.engine, viewer, limit)})


async def anomaly_list(request: Request, gw: Shared) -> Response:
    viewer = await viewer_of(gw, request)
    state = _history(gw)
    found = await asyncio.to_thread(state.anomalies)
    if viewer.service is None:
        return _json(found)
    mine = [a for a in found["anomalies"] if a["service"] == viewer.service]
    notes = [n for n in found["notes"] if n.startswith(f"{viewer.service}:")]
    return _json({"anomalies": mine, "notes": notes})


async def retry(job_id: str, request: Request, gw: Shared) -> Response:
    """Requeue a failed job (the operator's, or a service's own)."""
    viewer = await viewer_of(gw, request, action=True)

    def run() -> dict[str, Any]:
        view = gw.store.view(job_id, viewer.service)  # another service's job: "not found"
        if view.status != JobState.FAILED:
            raise ConflictError(f"job {shown_id(job_id)} is {view.status.value}, not failed")
        retry_failed(gw.store, job_id)
        return data.job_row(gw.store.view(job_id, None))

    return _json(await asyncio.to_thread(run))


async def review(job_id: str, request: Request, gw: Shared) -> Response:
    """Approve or reject a draft: the operator any, a service those ``policies.yaml`` lets it review."""
    viewer = await viewer_of(gw, request, action=True)
    timeout = gw.config.gateway.api.body_timeout_seconds
    body = parse_model(await read_body(request, REVIEW_BODY_LIMIT, timeout), ReviewRequest)

    def run() -> dict[str, Any]:
        owner = gw.store.owner(job_id)
        if not owner or not data.may_review(gw.engine, viewer, owner):
            raise NotFoundError(f"no job {shown_id(job_id)}")
        reviewer = viewer.service or "operator"
        return data.job_row(gw.store.review(job_id, body, reviewer=reviewer))

    return _json(await asyncio.to_thread(run))
