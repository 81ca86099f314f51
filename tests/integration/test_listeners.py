"""No message stops a listener: each background loop is sent garbage, then shown to still work."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis
from fastapi import FastAPI
from rq.queue import Queue

from gateway import keys
from gateway.audit import AuditWriter, append_event
from gateway.redis_server import RedisServer
from gateway.waiter import CompletionWaiter
from tests.fakes.audit_events import make_event
from tests.fakes.provider import FakeProvider
from tests.integration.harness import (
    Api,
    ConfigFactory,
    Receiver,
    StartApi,
    StartStack,
    StartWorker,
    submit,
    wait_until,
    with_channels,
)

#: what an attacker with Redis access publishes: not UTF-8, wrong field counts, not numbers, huge;
#: on aigw:breaker all but the huge one (a well-formed message about no known deployment) are garbage
GARBAGE: list[bytes] = [
    b"\xff\xfe\xfd",
    b"x not-a-number",
    b"nospace",
    b"",
    b"general/0:anthropic inf",
    b"general/0:anthropic -5",
    b"a b c d",
    b"x" * 1_000_000 + b" 1",
    b"\x00\xc3\x28 12",
]


def _waiter(api: Api) -> CompletionWaiter:
    app = api.server.config.app
    assert isinstance(app, FastAPI)
    waiter = app.state.gateway.waiter
    assert isinstance(waiter, CompletionWaiter)
    return waiter


def _subscribed(connection: redis.Redis, channel: str) -> None:
    """Wait until something listens on ``channel``: a message published before is heard by nobody."""
    wait_until(lambda: connection.pubsub_numsub(channel)[0][1] > 0, f"a subscriber on {channel}")


def _status(api: Api, job_id: str) -> str:
    with api.client() as client:
        return str(client.get(f"/v1/jobs/{job_id}").json()["status"])


def test_control_listener_survives_garbage_and_still_cancels_a_running_job(
    stack: StartStack, fake: FakeProvider, redis_client: redis.Redis
) -> None:
    running = stack()
    _subscribed(redis_client, keys.CANCEL_CHANNEL)
    for message in GARBAGE:
        redis_client.publish(keys.BREAKER_CHANNEL, message)
        redis_client.publish(keys.CANCEL_CHANNEL, message)
    guard = running.worker.worker.guards["control-listener"]
    wait_until(lambda: guard.malformed == len(GARBAGE) - 1 + 2, "the garbage skipped")  # 2 not UTF-8
    fake.latency = 5
    api = running.api
    with api.client() as client:
        job_id = client.post("/v1/jobs", json={"prompt": "slow", "model": "openai"}).json()["id"]
        wait_until(lambda: _status(api, job_id) == "running", "job running")
        started = time.monotonic()
        client.delete(f"/v1/jobs/{job_id}")
        wait_until(lambda: _status(api, job_id) == "canceled", "job canceled", timeout=4)
    assert time.monotonic() - started < 4  # well before the provider's 5 s answer


def test_a_breaker_message_after_garbage_still_opens_the_breaker(
    stack: StartStack, fake: FakeProvider, redis_client: redis.Redis
) -> None:
    # heartbeats re-read breakers from Redis (where none is open): keep them out of the way
    running = stack(workers={"heartbeat_interval": 30, "heartbeat_ttl": 60})
    _subscribed(redis_client, keys.BREAKER_CHANNEL)
    for message in GARBAGE:
        redis_client.publish(keys.BREAKER_CHANNEL, message)
    redis_client.publish(keys.BREAKER_CHANNEL, "general/0:anthropic 60")
    redis_client.publish(keys.BREAKER_CHANNEL, b"\xff")  # handled after the real one: a marker
    guard = running.worker.worker.guards["control-listener"]
    wait_until(lambda: guard.malformed == len(GARBAGE) - 1 + 1, "every message handled")
    job = submit(running.api, {"prompt": "x", "model": "general"}, wait=10).json()
    assert job["status"] == "succeeded"
    assert job["result"]["calls"][0]["outcome"] == "skipped"
    assert "circuit open" in job["result"]["calls"][0]["error"]["reason"]
    assert fake.count(model="claude-fake") == 0


def test_dequeue_loop_survives_garbage_on_the_queue(stack: StartStack, redis_client: redis.Redis) -> None:
    running = stack()
    queue_key = Queue("interactive", connection=redis_client).key
    redis_client.lpush(queue_key, b"\xff\xfe", b"x" * 1_000_000, b"not-a-job")
    job = submit(running.api, {"prompt": "still served"}, wait=10).json()
    assert job["status"] == "succeeded"
    assert running.worker.worker.guards["dequeue"].malformed == 1  # the one that is not text


def test_reaper_survives_garbage_in_the_intermediate_queue(
    gateway_config: ConfigFactory, start_api: StartApi, start_worker: StartWorker, redis_client: redis.Redis
) -> None:
    config = gateway_config(workers={"heartbeat_interval": 1, "heartbeat_ttl": 2, "reap_interval": 0.2})
    api = start_api(config)
    with api.client() as client:
        job_id = client.post("/v1/jobs", json={"prompt": "left behind"}).json()["id"]
    queue = Queue("interactive", connection=redis_client)
    # a dead worker's leftovers: the job moved off the queue and never started, beside garbage
    redis_client.lmove(queue.key, queue.intermediate_queue_key)
    redis_client.rpush(queue.intermediate_queue_key, b"\xff\xfe", b"x" * 100_000)
    handle = start_worker(config)
    with api.client() as client:
        job = client.get(f"/v1/jobs/{job_id}", params={"wait": 15}).json()
    assert job["status"] == "succeeded"
    assert handle.worker.guards["reaper"].malformed >= 1
    assert b"\xff\xfe" not in redis_client.lrange(queue.intermediate_queue_key, 0, -1)


def test_completion_waiter_survives_garbage_and_still_wakes_a_long_poll(
    stack: StartStack, fake: FakeProvider, redis_client: redis.Redis
) -> None:
    running = stack()
    _subscribed(redis_client, keys.DONE_CHANNEL)
    for message in GARBAGE:
        redis_client.publish(keys.DONE_CHANNEL, message)
    guard = _waiter(running.api).guard
    wait_until(lambda: guard.malformed == 2, "the messages that are not UTF-8 skipped")
    fake.latency = 1
    started = time.monotonic()
    response = submit(running.api, {"prompt": "x", "model": "openai"}, wait=10)
    assert response.status_code == 200 and response.json()["status"] == "succeeded"
    assert time.monotonic() - started < 5  # woken by the completion, not by the 10 s wait


def test_outbox_survives_garbage_entries_and_still_delivers(
    gateway_config: ConfigFactory, stack: StartStack, receiver: Receiver, redis_client: redis.Redis
) -> None:
    for fields in (
        {"e": b"\xff\xfe"},
        {"e": "not json"},
        {"e": "[1, 2]"},
        {"e": json.dumps({"channels": "ops", "event": {}})},
        {"e": json.dumps({"channels": ["ops"], "event": {"job_id": 1}})},
        {"e": "x" * 1_000_000},
        {"other": "field"},
    ):
        redis_client.xadd(keys.NOTIFY_STREAM, fields)  # type: ignore[arg-type]
    config = with_channels(
        gateway_config(policies=[]), [{"type": "webhook", "name": "ops", "url": receiver.url}]
    )
    running = stack(config)
    job = submit(running.api, {"prompt": "x", "notify": ["ops"]}, wait=10).json()
    assert job["status"] == "succeeded"
    wait_until(lambda: receiver.received, "the notification")
    assert json.loads(receiver.received[0][1])["job_id"] == job["id"]
    wait_until(lambda: redis_client.xlen(keys.NOTIFY_STREAM) == 0, "the garbage dropped from the outbox")


def test_audit_writer_skips_garbage_and_restarts_after_an_unexpected_error(
    redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = AuditWriter(redis_client, tmp_path / "audit.log", consumer="writer-1")
    original = writer._forget_idle_consumers
    failures = iter([RuntimeError("unexpected")])

    def fail_once() -> None:
        for error in failures:
            raise error
        original()

    monkeypatch.setattr(writer, "_forget_idle_consumers", fail_once)
    redis_client.xadd(keys.AUDIT_STREAM, {"e": b"\xff\xfe"})
    redis_client.xadd(keys.AUDIT_STREAM, {"e": json.dumps({"job_id": 5})})
    append_event(redis_client, make_event("job-1"))
    stop = threading.Event()
    thread = threading.Thread(target=writer.run, args=(stop,), kwargs={"block_ms": 100}, daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: (tmp_path / "audit.log").exists() and b"job-1" in (tmp_path / "audit.log").read_bytes(),
            "the event written",
        )
        assert thread.is_alive()
        assert (writer.guard.restarts, writer.guard.malformed) == (1, 2)
    finally:
        stop.set()
        thread.join(timeout=5)
        writer.close()


def test_long_poll_returns_promptly_when_its_job_ends_across_a_redis_restart(
    gateway_config: ConfigFactory,
    start_api: StartApi,
    start_worker: StartWorker,
    fake: FakeProvider,
    tmp_path: Path,
) -> None:
    server = RedisServer.start(tmp_path / "redis")
    try:
        config = gateway_config()
        api = start_api(config, on_redis=server.url)
        start_worker(config, on_redis=server.url)
        fake.latency = 3
        with api.client() as client:
            job_id = client.post("/v1/jobs", json={"prompt": "x", "model": "openai"}).json()["id"]
        wait_until(lambda: _status(api, job_id) == "running", "job running")
        answers: list[tuple[httpx.Response, float]] = []

        def long_poll() -> None:
            started = time.monotonic()
            with api.client() as client:
                answer = client.get(f"/v1/jobs/{job_id}", params={"wait": 10})
            answers.append((answer, time.monotonic() - started))

        poller = threading.Thread(target=long_poll, daemon=True)
        poller.start()
        wait_until(lambda: _waiter(api).is_waiting(job_id), "the long-poll waiting")
        server.stop()
        time.sleep(1.0)  # Redis stays down a moment: the scenario, not a wait for a state
        server = RedisServer.start(tmp_path / "redis", server.port)
        poller.join(timeout=15)
        ((answer, elapsed),) = answers
        assert answer.status_code == 200 and answer.json()["status"] == "succeeded"
        assert elapsed < 8  # the job ended about 3 s in; the wait was 10 s
    finally:
        server.stop()
