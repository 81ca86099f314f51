"""Python client for the aigw HTTP API, sync (``Client``) and async (``AsyncClient``).

    with Client(token=os.environ["AIGW_TOKEN"]) as aigw:
        job = aigw.submit(prompt="Summarise this…", wait=10)   # the finished job, or a queued one
        job = aigw.wait(job["id"], timeout=60)                  # long-polls until it is final

Errors come back as ``ApiError`` carrying the API's error type, message and HTTP status.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:18789"
FINAL_STATES = frozenset({"succeeded", "failed", "canceled"})


class ApiError(Exception):
    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(f"{type}: {message} (HTTP {status})")
        self.status, self.type, self.message = status, type, message


def _headers(token: str | None) -> dict[str, str]:
    token = token or os.environ.get("AIGW_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _check(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        raise ApiError(
            response.status_code, error.get("type", "http_error"), error.get("message", response.text)
        )
    if not isinstance(body, dict):
        raise ApiError(response.status_code, "bad_response", "the API did not answer with a JSON object")
    return body


def _job_body(prompt: str | None, fields: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in fields.items() if v is not None}
    if prompt is not None:
        body["prompt"] = prompt
    return body


class Client:
    def __init__(self, base_url: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        url = base_url or os.environ.get("AIGW_URL") or DEFAULT_URL
        self._http = httpx.Client(base_url=url, headers=_headers(token), timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(self, prompt: str | None = None, *, wait: float = 0, **fields: Any) -> dict[str, Any]:
        """Enqueue a job (prompt or messages=…, model=…, task=…); ``wait`` > 0 waits for the result."""
        params = {"wait": wait} if wait else None
        return _check(
            self._http.post("/v1/jobs", json=_job_body(prompt, fields), params=params, timeout=wait + 30)
        )

    def get(self, job_id: str, *, wait: float = 0) -> dict[str, Any]:
        params = {"wait": wait} if wait else None
        return _check(self._http.get(f"/v1/jobs/{job_id}", params=params, timeout=wait + 30))

    def wait(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Long-poll until the job is final or ``timeout`` passes (then the job as it stands)."""
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        while job["status"] not in FINAL_STATES and (left := deadline - time.monotonic()) > 0:
            job = self.get(job_id, wait=min(left, 30.0))
        return job

    def cancel(self, job_id: str) -> dict[str, Any]:
        return _check(self._http.delete(f"/v1/jobs/{job_id}"))


class AsyncClient:
    def __init__(self, base_url: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        url = base_url or os.environ.get("AIGW_URL") or DEFAULT_URL
        self._http = httpx.AsyncClient(base_url=url, headers=_headers(token), timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def submit(self, prompt: str | None = None, *, wait: float = 0, **fields: Any) -> dict[str, Any]:
        params = {"wait": wait} if wait else None
        response = await self._http.post(
            "/v1/jobs", json=_job_body(prompt, fields), params=params, timeout=wait + 30
        )
        return _check(response)

    async def get(self, job_id: str, *, wait: float = 0) -> dict[str, Any]:
        params = {"wait": wait} if wait else None
        return _check(await self._http.get(f"/v1/jobs/{job_id}", params=params, timeout=wait + 30))

    async def wait(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job = await self.get(job_id)
        while job["status"] not in FINAL_STATES and (left := deadline - time.monotonic()) > 0:
            job = await self.get(job_id, wait=min(left, 30.0))
        return job

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return _check(await self._http.delete(f"/v1/jobs/{job_id}"))
