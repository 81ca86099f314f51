"""Crash and outage survival with real processes: kill -9, SIGTERM, Redis stopped and restarted."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import redis

from gateway.redis_server import RedisServer
from tests.fakes.provider import FakeProvider
from tests.integration.harness import Api, ConfigFactory, SpawnWorker, StartApi, StartWorker, wait_until

FAST_RECOVERY = {"heartbeat_interval": 0.5, "heartbeat_ttl": 2, "reap_interval": 0.5}


def _submit(api: Api, count: int) -> list[str]:
    with api.client() as client:
        return [
            client.post("/v1/jobs", json={"prompt": f"job {i}", "model": "openai"}).json()["id"]
            for i in range(count)
        ]


def _states(api: Api, ids: list[str]) -> dict[str, str]:
    with api.client() as client:
        return {job_id: client.get(f"/v1/jobs/{job_id}").json()["status"] for job_id in ids}


def test_kill_9_worker_jobs_in_flight_are_recovered_once(
    gateway_config: ConfigFactory,
    start_api: StartApi,
    spawn_worker: SpawnWorker,
    fake: FakeProvider,
    redis_client: redis.Redis,
) -> None:
    fake.latency = 2.0
    # a 1 s retry interval: recovered jobs go through the scheduler, whose lock the victim held
    config = gateway_config(workers=FAST_RECOVERY, jobs={"max_attempts": 3, "retry_intervals": [1]})
    api = start_api(config)
    victim = spawn_worker(config)
    ids = _submit(api, 60)
    wait_until(lambda: redis_client.zcard("rq:wip:interactive") >= 60, "60 jobs in flight", timeout=20)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = time.monotonic()
    spawn_worker(config)
    wait_until(lambda: set(_states(api, ids).values()) == {"succeeded"}, "all jobs to succeed", timeout=30)
    assert time.monotonic() - killed_at < 30
    for job_id in ids:  # at-least-once delivery, exactly one result per job
        assert redis_client.xlen(f"rq:results:{job_id}") == 1
    with api.client() as client:
        attempts = {client.get(f"/v1/jobs/{job_id}").json()["result"]["attempt"] for job_id in ids}
    assert attempts == {2}  # each abandoned attempt was detected and run again


def test_sigterm_lets_in_flight_jobs_finish(
    gateway_config: ConfigFactory,
    start_api: StartApi,
    spawn_worker: SpawnWorker,
    fake: FakeProvider,
    redis_client: redis.Redis,
) -> None:
    fake.latency = 1.0
    config = gateway_config(workers={**FAST_RECOVERY, "shutdown_grace": 20})
    api = start_api(config)
    worker = spawn_worker(config)
    ids = _submit(api, 20)
    wait_until(lambda: redis_client.zcard("rq:wip:interactive") >= 20, "20 jobs in flight")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert set(_states(api, ids).values()) == {"succeeded"}


def test_sigterm_past_the_grace_requeues_what_is_left(
    gateway_config: ConfigFactory,
    start_api: StartApi,
    spawn_worker: SpawnWorker,
    fake: FakeProvider,
    redis_client: redis.Redis,
) -> None:
    fake.latency = 30.0
    config = gateway_config(workers={**FAST_RECOVERY, "shutdown_grace": 0.5})
    api = start_api(config)
    worker = spawn_worker(config)
    ids = _submit(api, 10)
    wait_until(lambda: redis_client.zcard("rq:wip:interactive") >= 10, "10 jobs in flight")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0
    assert set(_states(api, ids).values()) == {"queued"}
    assert redis_client.llen("rq:queue:interactive") == 10
    fake.latency = 0.0
    spawn_worker(config)
    wait_until(lambda: set(_states(api, ids).values()) == {"succeeded"}, "requeued jobs to succeed")


def test_redis_outage_answers_503_and_loses_no_accepted_job(
    gateway_config: ConfigFactory,
    start_api: StartApi,
    start_worker: StartWorker,
    fake: FakeProvider,
    tmp_path: Path,
) -> None:
    """Its own Redis (AOF on), stopped and restarted on the same port and data directory."""
    fake.latency = 0.5
    config = gateway_config(workers=FAST_RECOVERY, jobs={"max_attempts": 3})
    own = RedisServer.start(tmp_path / "redis-own", appendonly=True)
    try:
        api = start_api(config, on_redis=own.url)
        worker = start_worker(config, on_redis=own.url)
        accepted = _submit(api, 30)
        own.stop()
        with api.client() as client:
            down = client.post("/v1/jobs", json={"prompt": "while down"})
            assert down.status_code == 503
            assert int(down.headers["Retry-After"]) >= 1
            assert down.json()["error"]["type"] == "unavailable"
            assert client.get(f"/v1/jobs/{accepted[0]}").status_code == 503
        time.sleep(1.0)  # the outage lasts: workers must wait for Redis, not exit
        own = RedisServer.start(own.data_dir, own.port, appendonly=True)
        wait_until(
            lambda: set(_states(api, accepted).values()) == {"succeeded"}, "all jobs after restart", 45
        )
        assert worker.thread.is_alive()
        with api.client() as client:
            assert client.post("/v1/jobs", json={"prompt": "after"}).status_code == 202
    finally:
        own.stop()
