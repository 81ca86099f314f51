"""Entry point of one worker process: config -> providers -> pipeline -> an async worker per queue."""

from __future__ import annotations

import asyncio
import os

import redis
from loguru import logger

from gateway import keys, tracing
from gateway.config import Config, QueueConfig
from gateway.group_commit import GroupCommit
from gateway.settings import Settings
from workers.pipeline import JobPipeline
from workers.skill_runner import SkillRunner
from workers.worker import AsyncWorker, on_signals


def build_worker(
    config: Config,
    redis_url: str,
    queue: str,
    concurrency: int | None = None,
    name: str | None = None,
    settings: Settings | None = None,
) -> tuple[AsyncWorker, JobPipeline]:
    """A worker on ``queue``; ``settings`` None reads them from ``os.environ`` (an entry point)."""
    workers, pipeline = build_workers(config, redis_url, [queue], concurrency, name, settings)
    return workers[0], pipeline


def build_workers(
    config: Config,
    redis_url: str,
    queues: list[str],
    concurrency: int | None = None,
    name: str | None = None,
    settings: Settings | None = None,
) -> tuple[list[AsyncWorker], JobPipeline]:
    """One process's workers, one per queue, on one pipeline (its provider pools, breakers and
    notifier), one Redis connection and one group commit. Each queue keeps its own slots
    (``queues.<q>.concurrency``), dequeue loop, RQ worker record and scheduler lock; the process's
    own duties (the breakers' refresh and messages, the notification outbox) run once, on the first.
    ``name`` (a single queue only) names its RQ worker."""
    unknown = [q for q in queues if q not in config.gateway.queues]
    if unknown or not queues:
        raise ValueError(
            f"unknown queue {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"configured: {', '.join(config.gateway.queues)}"
        )
    if len(set(queues)) != len(queues):
        raise ValueError(f"a queue is named twice: {', '.join(queues)}")
    if name is not None and len(queues) > 1:
        raise ValueError("a worker name is for a process that serves one queue")
    settings = settings or Settings.from_environ(os.environ)
    tracing.configure(settings.environ, "worker")  # the OTEL_* variables; nothing when they are unset
    connection = redis.Redis.from_url(redis_url, socket_keepalive=True, health_check_interval=10)
    pipeline = JobPipeline.from_config(config, connection, settings)
    worker_config = config.gateway.workers
    group_commit = GroupCommit(connection)
    queue_configs: dict[str, QueueConfig] = {str(q): c for q, c in config.gateway.queues.items()}
    workers = []
    for index, queue in enumerate(queues):
        first = index == 0
        workers.append(
            AsyncWorker(
                queue,
                connection=connection,
                redis_url=redis_url,
                runner=pipeline,
                concurrency=concurrency or queue_configs[queue].concurrency,
                heartbeat_interval=worker_config.heartbeat_interval,
                heartbeat_ttl=worker_config.heartbeat_ttl,
                reap_interval=worker_config.reap_interval,
                shutdown_grace=worker_config.shutdown_grace,
                name=name,
                on_heartbeat=pipeline.breakers.refresh if first else None,
                subscriptions={keys.BREAKER_CHANNEL: pipeline.breakers.on_message} if first else None,
                on_final=pipeline.notifier.on_final,
                background=[pipeline.notifier.run] if first else None,
                max_retry_after=config.gateway.jobs.max_retry_after,
                group_commit=group_commit,
            )
        )
    return workers, pipeline


async def run_workers(
    config: Config,
    redis_url: str,
    queues: list[str],
    *,
    concurrency: int | None = None,
    burst: bool = False,
    settings: Settings | None = None,
) -> None:
    """Serve ``queues`` from this process until SIGTERM/SIGINT (or, with ``burst``, until each is empty)."""
    workers, pipeline = build_workers(config, redis_url, queues, concurrency, settings=settings)
    warn_about_sandbox(pipeline.skill_runner)

    def shutdown() -> None:
        for worker in workers:
            worker.request_shutdown()

    on_signals(shutdown)
    try:
        await asyncio.gather(*(worker.run(burst=burst, handle_signals=False) for worker in workers))
    finally:
        await pipeline.aclose()
        workers[0].connection.close()
        tracing.flush()  # the spans still batched (off: nothing)


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
    config: Config,
    redis_url: str,
    queues: list[str],
    concurrency: int | None,
    burst: bool,
    settings: Settings,
) -> None:
    coroutine = run_workers(
        config, redis_url, queues, concurrency=concurrency, burst=burst, settings=settings
    )
    try:
        import uvloop  # the faster loop where it is installed (a runtime dependency off Windows)
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


def serve(config_dir: str, redis_url: str, queues: list[str], concurrency: int | None = None) -> None:
    """A worker process of `aigw up` (or of `aigw worker --processes N`), in a child forked from it
    (gateway/supervisor.py): the config read afresh (a restarted child sees the files as they are
    now), then ``main``."""
    from gateway.config import load_config

    config = load_config(config_dir)
    main(config, redis_url, queues, concurrency, False, Settings.from_environ(os.environ))
