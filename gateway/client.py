"""Python client for the aigw HTTP API: ``Client`` (sync) and ``AsyncClient`` (async), one surface.

    with Client() as aigw:                                   # the token from $AIGW_TOKEN
        job = aigw.submit("Summarise this…", wait=10)        # the finished job, or a queued one
        job = aigw.wait(job["id"], timeout=60)               # long-polls until it is final
        aigw.review(job["id"], "approve", comment="ok")      # a draft (all_outputs_are_drafts)

The API is found as the ``aigw`` command finds it: ``base_url``, else ``$AIGW_URL``, else the URL
``aigw up`` noted in ``$AIGW_HOME``, else http://127.0.0.1:18789. The environment is read once, in
the constructor, from ``environ`` (default ``os.environ``), so a test hands in its own.

Every error the client raises is an ``AigwError``:

    AigwError
    ├── AigwUnavailableError   no answer: connection refused, timed out or lost; .url
    └── ApiError               the API's error envelope; .status, .type, .message, .retry_after

This module imports httpx and gateway.home (standard library only), never the server side.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx

from gateway.home import aigw_home, api_url_file, noted_api_url

__all__ = [
    "DEFAULT_URL",
    "FINAL_STATES",
    "AigwError",
    "AigwUnavailableError",
    "ApiError",
    "AsyncClient",
    "Client",
    "find_api_url",
]

DEFAULT_URL = "http://127.0.0.1:18789"
FINAL_STATES = frozenset({"succeeded", "failed", "canceled"})
#: the longest single long-poll ``wait()`` asks for; the API caps it too (api.max_wait_seconds)
MAX_POLL_SECONDS = 30.0

Job = dict[str, Any]


class AigwError(Exception):
    """Base of every error the client raises."""


class AigwUnavailableError(AigwError):
    """The API did not answer. A ``submit`` that timed out may still have been accepted:
    send it again with the same ``idempotency_key`` to get the same job, never a second one."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class ApiError(AigwError):
    """The API answered ``{"error": {"type", "message"}}`` with an HTTP error status."""

    def __init__(self, status: int, type: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{type}: {message} (HTTP {status})")
        self.status, self.type, self.message, self.retry_after = status, type, message, retry_after


def find_api_url(base_url: str | None, environ: Mapping[str, str]) -> tuple[str, str]:
    """The API's URL and where it came from (for error messages), the way the CLI finds it."""
    if base_url:
        return base_url, "given"
    if url := environ.get("AIGW_URL"):
        return url, "from AIGW_URL"
    if url := noted_api_url("", environ):
        return url, f"noted by `aigw up` in {api_url_file(aigw_home(environ))}"
    return DEFAULT_URL, "the default"


# --- requests and answers, shared by both clients -------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """One API request; ``wait`` is the server-side long-poll, added to the HTTP timeout."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    wait: float = 0.0


def _job_path(job_id: str) -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}"


def _submit(prompt: str | None, wait: float, idempotency_key: str | None, fields: dict[str, Any]) -> _Call:
    body = {**fields, "prompt": prompt, "idempotency_key": idempotency_key}
    return _Call("POST", "/v1/jobs", {k: v for k, v in body.items() if v is not None}, wait)


def _get(job_id: str, wait: float) -> _Call:
    return _Call("GET", _job_path(job_id), wait=wait)


def _cancel(job_id: str) -> _Call:
    return _Call("DELETE", _job_path(job_id))


def _review(job_id: str, decision: Literal["approve", "reject"], comment: str | None) -> _Call:
    body: dict[str, Any] = {"decision": decision}
    if comment is not None:
        body["comment"] = comment
    return _Call("POST", f"{_job_path(job_id)}/review", body)


def _next_poll(job: Job, deadline: float) -> float:
    """Seconds ``wait()`` long-polls next; 0 once the job is final or the deadline has passed."""
    if job["status"] in FINAL_STATES:
        return 0.0
    return min(max(deadline - time.monotonic(), 0.0), MAX_POLL_SECONDS)


def _answer(response: httpx.Response) -> Job:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_error:
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        raise ApiError(
            response.status_code,
            str(error.get("type", "http_error")),
            str(error.get("message", response.text or response.reason_phrase)),
            retry_after=_retry_after(response),
        )
    if not isinstance(body, dict):
        raise ApiError(response.status_code, "bad_response", "the API did not answer with a JSON object")
    return body


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):  # absent, or an HTTP date (the API sends seconds)
        return None


class _Base:
    """Settings both clients read from the environment once, and the request and error they build."""

    def __init__(
        self, base_url: str | None, token: str | None, timeout: float, environ: Mapping[str, str] | None
    ) -> None:
        env = os.environ if environ is None else environ
        self.url, self._url_source = find_api_url(base_url, env)
        token = token or env.get("AIGW_TOKEN")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout

    def _request(self, http: httpx.Client | httpx.AsyncClient, call: _Call) -> httpx.Request:
        params = {"wait": call.wait} if call.wait else None
        return http.build_request(
            call.method, call.path, json=call.body, params=params, timeout=self._timeout + call.wait
        )

    def _unavailable(self, exc: httpx.TransportError) -> AigwUnavailableError:
        where = f"{self.url} ({self._url_source})"
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            message = (
                f"aigw is not reachable at {where}: {reason}. "
                "Start it with `aigw up`, or point AIGW_URL at a running one."
            )
        elif isinstance(exc, httpx.TimeoutException):
            message = f"aigw at {where} did not answer within the timeout ({type(exc).__name__})"
        else:
            message = f"the connection to aigw at {where} failed: {reason}"
        return AigwUnavailableError(message, url=self.url)


# --- the two clients: one line per endpoint, the same names and arguments -------------------------


class Client(_Base):
    """Sync client. ``transport`` is httpx's (e.g. ``httpx.MockTransport`` in a test)."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        environ: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token, timeout, environ)
        self._http = httpx.Client(base_url=self.url, headers=self._headers, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call) -> Job:
        try:
            response = self._http.send(self._request(self._http, call))
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from None  # the message says it all; the cause stays in __context__
        return _answer(response)

    def submit(
        self, prompt: str | None = None, *, wait: float = 0, idempotency_key: str | None = None, **fields: Any
    ) -> Job:
        """Enqueue a job: ``prompt`` or ``messages=``/``skill=`` with ``inputs=``, and any other job
        field (``model``, ``task``, ``queue``, ``metadata``…). ``wait`` > 0 waits for the result."""
        return self._send(_submit(prompt, wait, idempotency_key, fields))

    def get(self, job_id: str, *, wait: float = 0) -> Job:
        """The job; ``wait`` > 0 long-polls until it is final or ``wait`` seconds pass."""
        return self._send(_get(job_id, wait))

    def wait(self, job_id: str, timeout: float = 60.0) -> Job:
        """Long-poll until the job is final or ``timeout`` passes (then the job as it stands)."""
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        while step := _next_poll(job, deadline):
            job = self.get(job_id, wait=step)
        return job

    def cancel(self, job_id: str) -> Job:
        return self._send(_cancel(job_id))

    def review(
        self, job_id: str, decision: Literal["approve", "reject"], *, comment: str | None = None
    ) -> Job:
        """Approve or reject a draft result, as its own service or a listed reviewer (once)."""
        return self._send(_review(job_id, decision, comment))


class AsyncClient(_Base):
    """Async client: ``Client``'s methods, awaited; ``aclose`` / ``async with``."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token, timeout, environ)
        self._http = httpx.AsyncClient(base_url=self.url, headers=self._headers, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call) -> Job:
        try:
            response = await self._http.send(self._request(self._http, call))
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from None
        return _answer(response)

    async def submit(
        self, prompt: str | None = None, *, wait: float = 0, idempotency_key: str | None = None, **fields: Any
    ) -> Job:
        return await self._send(_submit(prompt, wait, idempotency_key, fields))

    async def get(self, job_id: str, *, wait: float = 0) -> Job:
        return await self._send(_get(job_id, wait))

    async def wait(self, job_id: str, timeout: float = 60.0) -> Job:
        deadline = time.monotonic() + timeout
        job = await self.get(job_id)
        while step := _next_poll(job, deadline):
            job = await self.get(job_id, wait=step)
        return job

    async def cancel(self, job_id: str) -> Job:
        return await self._send(_cancel(job_id))

    async def review(
        self, job_id: str, decision: Literal["approve", "reject"], *, comment: str | None = None
    ) -> Job:
        return await self._send(_review(job_id, decision, comment))
