"""One worker process serving several queues (``aigw worker -q interactive -q batch``, and what
`aigw up` runs with ``workers.layout: shared``): each queue is served, keeps its own slots and RQ
worker record, and a SIGTERM stops them all cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import redis
from rq.worker import BaseWorker, Worker

from gateway.config import Config
from tests.integration.harness import ConfigFactory, StartApi, submit, wait_until
from workers.main import build_workers


def _spawn(config: Config, redis_url: str, *queues: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "gateway.cli", "worker", "--config", config.directory]
    for queue in queues:
        argv += ["--queue", queue]
    env = {**os.environ, "REDIS_URL": redis_url, "AIGW_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)


def _workers(connection: redis.Redis) -> list[BaseWorker]:
    return Worker.all(connection=connection)


def test_one_process_serves_both_queues_and_stops_cleanly(
    gateway_config: ConfigFactory, start_api: StartApi, redis_url: str, redis_client: redis.Redis
) -> None:
    config = gateway_config()
    api = start_api(config)
    process = _spawn(config, redis_url, "interactive", "batch")
    try:
        wait_until(lambda: len(_workers(redis_client)) == 2, "an RQ worker per queue")
        workers = _workers(redis_client)
        assert {w.queue_names()[0] for w in workers} == {"interactive", "batch"}
        assert {w.pid for w in workers} == {process.pid}  # one process
        for queue in ("interactive", "batch"):
            done = submit(api, {"prompt": f"on {queue}", "queue": queue})
            assert done.status_code == 200, done.text
            assert done.json()["queue"] == queue and done.json()["status"] == "succeeded"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert _workers(redis_client) == []  # both said goodbye (register_death)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_each_queue_keeps_its_own_slots(gateway_config: ConfigFactory, redis_url: str) -> None:
    config = gateway_config()
    workers, pipeline = build_workers(config, redis_url, ["interactive", "batch"])
    try:
        assert [w.queue.name for w in workers] == ["interactive", "batch"]
        assert [w.concurrency for w in workers] == [
            config.gateway.queues["interactive"].concurrency,
            config.gateway.queues["batch"].concurrency,
        ]
        assert workers[0].group_commit is workers[1].group_commit  # one round trip per tick for both
        assert workers[1].extra_background == []  # the notification outbox runs once per process
    finally:
        workers[0].connection.close()


@pytest.mark.parametrize(
    ("queues", "message"),
    [
        (["interactive", "nope"], "unknown queue 'nope'"),
        (["batch", "batch"], "named twice"),
        ([], "none given"),
    ],
)
def test_bad_queue_lists_are_refused(
    gateway_config: ConfigFactory, redis_url: str, queues: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_workers(gateway_config(), redis_url, queues)


@pytest.mark.parametrize(
    ("queues", "message"), [(["nope"], "unknown queue 'nope'"), (["batch", "batch"], "names a queue twice")]
)
def test_the_cli_refuses_an_unknown_or_repeated_queue(
    gateway_config: ConfigFactory, redis_url: str, queues: list[str], message: str
) -> None:
    argv = [sys.executable, "-m", "gateway.cli", "worker", "--config", gateway_config().directory]
    for queue in queues:
        argv += ["-q", queue]
    result = subprocess.run(
        argv, env={**os.environ, "REDIS_URL": redis_url}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and message in result.stderr
    assert "Traceback" not in result.stderr
