"""gateway.client against the real API, worker and Redis: finding it, failing clearly, reviewing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import httpx
import pytest

from gateway.client import AigwUnavailableError, ApiError, AsyncClient, Client
from gateway.config import Config
from gateway.home import StackLock, api_url_file
from gateway.redis_server import free_port


class _Api(Protocol):  # the `start_api` fixture's handle; only what these tests read
    url: str
    token: str


Factory = Callable[..., Config]
StartApi = Callable[[Config], _Api]
StartWorker = Callable[..., object]
DRAFTS = [{"name": "drafts", "rule": "all_outputs_are_drafts"}]


def test_client_finds_the_api_url_that_aigw_up_noted_in_aigw_home(
    gateway_config: Factory, start_api: StartApi, start_worker: StartWorker, tmp_path: Path
) -> None:
    config = gateway_config(policies=[])
    api = start_api(config)  # on a free port, not the default 18789: only the note can lead there
    start_worker(config)
    home = tmp_path / "client-home"
    home.mkdir()
    api_url_file(home).write_text(f"{api.url}\n")  # what `aigw up` writes, and the lock it holds
    lock = StackLock(home)
    assert lock.acquire()
    try:
        with Client(environ={"AIGW_HOME": str(home), "AIGW_TOKEN": api.token}) as aigw:
            job = aigw.submit("ping the model", wait=10)
    finally:
        lock.release()
    assert aigw.url == api.url
    assert job["status"] == "succeeded" and job["result"]["output"] == "echo: ping the model"


def test_client_says_how_to_start_aigw_when_the_api_is_stopped(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    api_url_file(tmp_path).write_text(url)  # a stack whose API is down; nothing listens there now
    lock = StackLock(tmp_path)
    assert lock.acquire()
    environ = {"AIGW_HOME": str(tmp_path), "AIGW_TOKEN": "aigw_x"}
    with Client(environ=environ) as aigw, pytest.raises(AigwUnavailableError) as sync_error:
        aigw.submit("hello")

    async def submit() -> None:
        async with AsyncClient(environ=environ) as aigw:
            await aigw.submit("hello")

    with pytest.raises(AigwUnavailableError) as async_error:
        asyncio.run(submit())
    for caught in (sync_error, async_error):
        message = str(caught.value)
        assert message.startswith(f"aigw is not reachable at {url} (noted by `aigw up` in {tmp_path}")
        assert "Start it with `aigw up`" in message and caught.value.url == url
        assert not isinstance(caught.value, httpx.HTTPError)
        assert caught.value.__suppress_context__  # no httpx traceback above the message
    lock.release()


def test_client_that_gets_no_answer_in_time_raises_unavailable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # connections queue in the backlog, unanswered
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with Client(url, "aigw_x", timeout=0.3) as aigw, pytest.raises(AigwUnavailableError) as caught:
            aigw.get("some-job")
    assert str(caught.value).startswith(f"aigw at {url} (given) did not answer within the timeout")


def test_client_review_approves_a_draft_end_to_end(
    gateway_config: Factory, start_api: StartApi, start_worker: StartWorker
) -> None:
    config = gateway_config(policies=DRAFTS)
    api = start_api(config)
    start_worker(config)
    with Client(api.url, api.token) as aigw:
        draft = aigw.submit("draft a reply", wait=10)
        assert draft["status"] == "succeeded" and draft["result"]["draft"] is True
        assert draft["review"] == {"state": "pending"}
        approved = aigw.review(draft["id"], "approve", comment="ok to send")
        assert approved["review"]["state"] == "approved" and approved["review"]["by"] == "svc-a"
        assert approved["review"]["comment"] == "ok to send"
        assert aigw.get(draft["id"])["review"]["state"] == "approved"
        with pytest.raises(ApiError) as again:
            aigw.review(draft["id"], "reject")
    assert (again.value.status, again.value.type) == (409, "conflict")
    assert "already approved by svc-a" in again.value.message


def test_client_runs_a_job_from_submit_to_cancel(
    gateway_config: Factory, start_api: StartApi, start_worker: StartWorker
) -> None:
    config = gateway_config(policies=[])
    api = start_api(config)
    start_worker(config)  # the interactive queue only: a batch job stays queued
    with Client(api.url, api.token) as aigw:
        first = aigw.submit("ping the model", idempotency_key="ping-1")
        assert aigw.submit("ping the model", idempotency_key="ping-1")["id"] == first["id"]
        done = aigw.wait(first["id"], timeout=15)
        parked = aigw.submit("later", queue="batch")
        canceled = aigw.cancel(parked["id"])
        with pytest.raises(ApiError) as missing:
            aigw.get("no-such-job")
    assert done["status"] == "succeeded" and done["result"]["output"] == "echo: ping the model"
    assert parked["status"] == "queued" and canceled["status"] == "canceled"
    assert (missing.value.status, missing.value.type) == (404, "not_found")


def test_async_client_does_what_the_sync_one_does(
    gateway_config: Factory, start_api: StartApi, start_worker: StartWorker
) -> None:
    config = gateway_config(policies=DRAFTS)
    api = start_api(config)
    start_worker(config)

    async def scenario() -> None:
        async with AsyncClient(api.url, api.token) as aigw:
            first = await aigw.submit("draft a reply", idempotency_key="reply-1")
            assert (await aigw.submit("draft a reply", idempotency_key="reply-1"))["id"] == first["id"]
            done = await aigw.wait(first["id"], timeout=15)
            assert done["status"] == "succeeded" and done["review"] == {"state": "pending"}
            rejected = await aigw.review(first["id"], "reject", comment="wrong customer")
            assert rejected["review"]["state"] == "rejected"
            parked = await aigw.submit("later", queue="batch")
            assert (await aigw.cancel(parked["id"]))["status"] == "canceled"
            with pytest.raises(ApiError) as missing:
                await aigw.get("no-such-job")
            assert (missing.value.status, missing.value.type) == (404, "not_found")

    asyncio.run(scenario())


def test_client_carries_retry_after_when_the_api_rate_limits(
    gateway_config: Factory, start_api: StartApi
) -> None:
    config = gateway_config(policies=[{"name": "rpm", "rule": "rate_limit", "requests_per_minute": 1}])
    api = start_api(config)  # no worker: the second request is refused at the door
    with Client(api.url, api.token) as aigw:
        aigw.submit("one")
        with pytest.raises(ApiError) as caught:
            aigw.submit("two")
    assert (caught.value.status, caught.value.type) == (429, "rate_limit_exceeded")
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1  # from Retry-After
    assert f"retry in {caught.value.retry_after:.0f} s" in caught.value.message
