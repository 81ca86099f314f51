"""Entry point of one worker process: config -> providers -> pipeline -> async worker."""

from __future__ import annotations

import asyncio
import os

import redis
from loguru import logger

from gateway import keys
from gateway.config import Config
from gateway.settings import Settings
from workers.pipeline import JobPipeline
from workers.skill_runner import SkillRunner
from workers.worker import AsyncWorker


def build_worker(
    config: Config,
    redis_url: str,
    queue: str,
    concurrency: int | None = None,
    name: str | None = None,
    settings: Settings | None = None,
) -> tuple[AsyncWorker, JobPipeline]:
    """A worker on ``queue``; ``settings`` None reads them from ``os.environ`` (an entry point)."""
    if queue not in config.gateway.queues:
        raise ValueError(f"unknown queue {queue!r}; configured: {', '.join(config.gateway.queues)}")
    settings = settings or Settings.from_environ(os.environ)
    connection = redis.Redis.from_url(redis_url, socket_keepalive=True, health_check_interval=10)
    pipeline = JobPipeline.from_config(config, connection, settings)
    worker_config = config.gateway.workers
    worker = AsyncWorker(
        queue,
        connection=connection,
        redis_url=redis_url,
        runner=pipeline,
        concurrency=concurrency or config.gateway.queues[queue].concurrency,
        heartbeat_interval=worker_config.heartbeat_interval,
        heartbeat_ttl=worker_config.heartbeat_ttl,
        reap_interval=worker_config.reap_interval,
        shutdown_grace=worker_config.shutdown_grace,
        name=name,
        on_heartbeat=pipeline.breakers.refresh,
        subscriptions={keys.BREAKER_CHANNEL: pipeline.breakers.on_message},
        on_final=pipeline.notifier.on_final,
        background=[pipeline.notifier.run],
        max_retry_after=config.gateway.jobs.max_retry_after,
    )
    return worker, pipeline


async def run_worker(
    config: Config,
    redis_url: str,
    queue: str,
    *,
    concurrency: int | None = None,
    burst: bool = False,
    settings: Settings | None = None,
) -> None:
    worker, pipeline = build_worker(config, redis_url, queue, concurrency, settings=settings)
    warn_about_sandbox(pipeline.skill_runner)
    try:
        await worker.run(burst=burst)
    finally:
        await pipeline.aclose()
        worker.connection.close()


def warn_about_sandbox(runner: SkillRunner) -> None:
    """Say loudly, once per worker, when skill scripts will run without the sandbox or cannot run."""
    if runner.sandbox is None:
        logger.warning(
            "skills.sandbox is 'none': skill scripts run UNSANDBOXED as this worker's user and can read "
            "its environment, files and network (provider keys, REDIS_URL). For trusted skills only."
        )
    elif runner.sandbox.bwrap is None:
        logger.error(
            "bubblewrap (bwrap) is not installed: every skill job with scripts fails as skill_unavailable"
        )


def main(
    config: Config, redis_url: str, queue: str, concurrency: int | None, burst: bool, settings: Settings
) -> None:
    coroutine = run_worker(config, redis_url, queue, concurrency=concurrency, burst=burst, settings=settings)
    try:
        import uvloop  # the faster loop where it is installed (a runtime dependency off Windows)
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


def serve(config_dir: str, redis_url: str, queue: str, concurrency: int | None = None) -> None:
    """A worker of `aigw up` (or of `aigw worker --processes N`), in a child forked from it
    (gateway/supervisor.py): the config read afresh (a restarted child sees the files as they are
    now), then ``main``."""
    from gateway.config import load_config

    config = load_config(config_dir)
    main(config, redis_url, queue, concurrency, False, Settings.from_environ(os.environ))
