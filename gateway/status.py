"""What the stack is doing right now, read from Redis: workers, queues, in-flight and failed jobs."""

from __future__ import annotations

from typing import Any

import redis
from rq.queue import Queue
from rq.worker import Worker

from gateway.auth_failures import recent_counts
from gateway.config import Config
from gateway.rq_speedups import JSONSerializer


def live_workers(connection: redis.Redis) -> list[dict[str, Any]]:
    """Workers whose registration has not expired (they heartbeat every few seconds)."""
    workers = Worker.all(connection=connection, serializer=JSONSerializer)
    return [
        {
            "name": w.name,
            "queues": w.queue_names(),
            "state": w.get_state(),
            "pid": w.pid,
            "hostname": w.hostname,
            "successful": w.successful_job_count,
            "failed": w.failed_job_count,
        }
        for w in workers
    ]


def stack_status(connection: redis.Redis, config: Config) -> dict[str, Any]:
    info = connection.info()
    queues = {}
    for name in config.gateway.queues:
        queue = Queue(name, connection=connection, serializer=JSONSerializer)
        queues[name] = {
            "queued": queue.count,
            "running": queue.started_job_registry.count,
            "retrying": queue.scheduled_job_registry.count,
            "failed": queue.failed_job_registry.count,
            "succeeded": queue.finished_job_registry.count,
        }
    return {
        "redis": {
            "version": info.get("redis_version"),
            "aof_enabled": bool(info.get("aof_enabled")),
            "rdb_last_save": info.get("rdb_last_save_time"),
            "used_memory_human": info.get("used_memory_human"),
            "maxmemory_policy": info.get("maxmemory_policy"),
        },
        "queues": queues,
        "workers": live_workers(connection),
        "auth_failures_last_hour": recent_counts(connection, minutes=60),
    }
