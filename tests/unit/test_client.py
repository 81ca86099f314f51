"""The Python client without a server: its imports, how it finds the API, how it reads answers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway import client as client_module
from gateway.client import DEFAULT_URL, ApiError, AsyncClient, Client, find_api_url
from gateway.home import StackLock, api_url_file

SERVER_MODULES = ("fastapi", "starlette", "uvicorn", "rq", "redis", "pydantic", "yaml", "loguru")


def test_client_imports_nothing_from_the_server_side() -> None:
    probe = "import json, sys, gateway.client; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out))
    assert not {m for m in loaded if m.split(".")[0] in SERVER_MODULES}
    ours = {m for m in loaded if m.split(".")[0] == "gateway"}
    assert ours == {"gateway", "gateway.client", "gateway.home"}


def test_client_exports_what_its_all_names() -> None:
    assert all(hasattr(client_module, name) for name in client_module.__all__)


def test_client_url_argument_beats_aigw_url_beats_the_home_note_beats_the_default(tmp_path: Path) -> None:
    api_url_file(tmp_path).write_text("http://127.0.0.1:5001\n")
    lock = StackLock(tmp_path)  # the note counts while the `aigw up` that wrote it runs
    assert lock.acquire()
    home = {"AIGW_HOME": str(tmp_path)}
    assert find_api_url("http://given:1", {**home, "AIGW_URL": "http://env:2"})[0] == "http://given:1"
    assert find_api_url(None, {**home, "AIGW_URL": "http://env:2"}) == ("http://env:2", "from AIGW_URL")
    url, source = find_api_url(None, home)
    assert url == "http://127.0.0.1:5001" and str(api_url_file(tmp_path)) in source
    assert find_api_url(None, {"AIGW_HOME": str(tmp_path / "none")}) == (DEFAULT_URL, "the default")
    lock.release()


def test_client_ignores_a_note_whose_stack_is_gone(tmp_path: Path) -> None:
    """`kill -9` of `aigw up` leaves its note; whatever listens on that port now must not get the token."""
    api_url_file(tmp_path).write_text("http://127.0.0.1:5001\n")
    assert find_api_url(None, {"AIGW_HOME": str(tmp_path)}) == (DEFAULT_URL, "the default")


def test_client_reads_the_environment_once_at_construction(tmp_path: Path) -> None:
    environ = {"AIGW_HOME": str(tmp_path), "AIGW_URL": "http://env:2"}
    with Client(environ=environ) as aigw:
        environ["AIGW_URL"] = "http://changed:3"
        assert aigw.url == "http://env:2"


def _replying(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.MockTransport:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.MockTransport(lambda _request: httpx.Response(status, content=content, headers=headers))


def test_client_turns_the_error_envelope_into_api_error_with_retry_after() -> None:
    envelope = {"error": {"type": "rate_limit_exceeded", "message": "rpm: 1 request per minute"}}
    transport = _replying(429, envelope, {"Retry-After": "42"})
    with Client("http://aigw", "t", transport=transport) as aigw, pytest.raises(ApiError) as caught:
        aigw.submit("hello")
    error = caught.value
    assert (error.status, error.type, error.retry_after) == (429, "rate_limit_exceeded", 42.0)
    assert error.message == "rpm: 1 request per minute"


def test_client_names_an_error_without_an_envelope_and_a_body_that_is_not_an_object() -> None:
    with Client("http://aigw", "t", transport=_replying(502, b"Bad Gateway")) as aigw:
        with pytest.raises(ApiError) as caught:
            aigw.get("j1")
        assert (caught.value.type, caught.value.message, caught.value.retry_after) == (
            "http_error",
            "Bad Gateway",
            None,
        )
    with Client("http://aigw", "t", transport=_replying(200, ["not", "a", "job"])) as aigw:
        with pytest.raises(ApiError) as caught:
            aigw.get("j1")
        assert caught.value.type == "bad_response"


def _recorder(seen: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "j1", "status": "succeeded"})

    return handle


def _described(requests: list[httpx.Request]) -> list[tuple[str, str, Any, str, dict[str, Any]]]:
    """Method, URL, JSON body, token header and httpx timeouts of each request."""
    return [
        (
            r.method,
            str(r.url),
            json.loads(r.content or b"null"),
            r.headers["authorization"],
            r.extensions["timeout"],
        )
        for r in requests
    ]


def test_sync_and_async_clients_send_the_same_requests() -> None:
    sync_seen: list[httpx.Request] = []
    async_seen: list[httpx.Request] = []
    with Client("http://aigw", "tok", transport=httpx.MockTransport(_recorder(sync_seen))) as aigw:
        aigw.submit("hi", wait=5, idempotency_key="k1", model="general", system=None)
        aigw.get("j/1", wait=2)
        aigw.wait("j1")
        aigw.cancel("j1")
        aigw.review("j1", "reject", comment="no")

    async def run() -> None:
        transport = httpx.MockTransport(_recorder(async_seen))
        async with AsyncClient("http://aigw", "tok", transport=transport) as aigw:
            await aigw.submit("hi", wait=5, idempotency_key="k1", model="general", system=None)
            await aigw.get("j/1", wait=2)
            await aigw.wait("j1")
            await aigw.cancel("j1")
            await aigw.review("j1", "reject", comment="no")

    asyncio.run(run())
    assert _described(sync_seen) == _described(async_seen)
    submit, get, _wait, cancel, review = _described(sync_seen)
    assert submit[:3] == (
        "POST",
        "http://aigw/v1/jobs?wait=5",
        {"prompt": "hi", "model": "general", "idempotency_key": "k1"},
    )
    assert submit[3] == "Bearer tok" and submit[4]["read"] == 35.0  # the long-poll plus the usual timeout
    assert get[1] == "http://aigw/v1/jobs/j%2F1?wait=2"
    assert cancel[:2] == ("DELETE", "http://aigw/v1/jobs/j1")
    assert review[:3] == ("POST", "http://aigw/v1/jobs/j1/review", {"decision": "reject", "comment": "no"})
