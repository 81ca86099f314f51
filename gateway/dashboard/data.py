"""What the dashboard shows that lives in Redis: queues and workers now, and bounded lists of
jobs (recent, failed, drafts awaiting review), each as the page needs it.

Every read is bounded: a registry is read newest first up to a limit, then the jobs' views in one
pipelined round trip (``JobStore.views``). Nothing here writes, not even RQ's registry clean-up,
which the workers do. A service's viewer sees only its own jobs (and drafts it may review).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import redis
from rq.queue import Queue
from rq.registry import BaseRegistry

from gateway import keys
from gateway.dashboard.sessions import Viewer
from gateway.jobs import JobState, JobView
from gateway.policies import PolicyEngine
from gateway.status import live_workers
from gateway.store import JobStore

#: the most jobs one list returns, whatever the request asks
MAX_LIST = 200
#: a service's list reads this many entries per registry per job it returns (others' are left out)
SERVICE_SCAN_FACTOR = 10
#: the longest draft output the page gets (the reviewer's reading; the whole one is in the job)
MAX_OUTPUT_CHARS = 4000


def queues(connection: redis.Redis, store: JobStore) -> list[dict[str, Any]]:
    """Each queue's depth, the age of its oldest job, jobs in flight, retrying and failed: two round trips."""
    names = list(store.config.gateway.queues)
    now = time.time()
    with connection.pipeline(transaction=False) as pipe:
        for name in names:
            queue = store.queue(name)
            pipe.llen(queue.key)
            pipe.lindex(queue.key, 0)
            pipe.zcount(queue.started_job_registry.key, now, "+inf")  # expired entries: dead workers'
            pipe.zcard(queue.scheduled_job_registry.key)
            pipe.zcard(queue.failed_job_registry.key)
        replies = pipe.execute()
    rows = [replies[5 * i : 5 * i + 5] for i in range(len(names))]
    with connection.pipeline(transaction=False) as pipe:
        for _depth, head, *_rest in rows:
            pipe.hget(Queue.job_class.key_for(keys.text(head) or ""), "enqueued_at")
        enqueued = pipe.execute()
    return [
        {
            "name": name,
            "depth": int(depth),
            "oldest_age_s": _age(keys.text(at), now) if head is not None else 0.0,
            "in_flight": int(running),
            "retrying": int(retrying),
            "failed": int(failed),
        }
        for name, (depth, head, running, retrying, failed), at in zip(names, rows, enqueued, strict=True)
    ]


def workers(connection: redis.Redis) -> list[dict[str, Any]]:
    return [
        {k: w[k] for k in ("name", "queues", "state", "hostname", "successful", "failed")}
        for w in live_workers(connection)
    ]


def recent_jobs(store: JobStore, viewer: Viewer, limit: int) -> list[dict[str, Any]]:
    """The newest jobs of every queue and state, newest first."""
    registries: list[BaseRegistry] = []
    for name in store.config.gateway.queues:
        queue = store.queue(name)
        registries += [
            queue.started_job_registry,
            queue.scheduled_job_registry,
            queue.finished_job_registry,
            queue.failed_job_registry,
            queue.canceled_job_registry,
        ]
    scan = _scan(viewer, limit)
    ids = _newest(store.connection, registries, scan)
    for name in store.config.gateway.queues:  # queued: RQ pushes at the tail, so the newest are last
        ids += [str(keys.text(i)) for i in store.connection.lrange(store.queue(name).key, -scan, -1)]
    views = store.views(list(dict.fromkeys(ids)), viewer.service)
    views.sort(key=lambda v: v.ended_at or v.started_at or v.created_at or "", reverse=True)
    return [job_row(v) for v in views[:limit]]


def failed_jobs(store: JobStore, viewer: Viewer, limit: int) -> list[dict[str, Any]]:
    """Failed jobs (dead letters), newest first: what the retry button works on."""
    registries = [store.queue(name).failed_job_registry for name in store.config.gateway.queues]
    views = store.views(_newest(store.connection, registries, _scan(viewer, limit)), viewer.service)
    views = [v for v in views if v.status == JobState.FAILED]
    views.sort(key=lambda v: v.ended_at or "", reverse=True)
    return [job_row(v) for v in views[:limit]]


def drafts(store: JobStore, engine: PolicyEngine, viewer: Viewer, limit: int) -> list[dict[str, Any]]:
    """Finished drafts nobody reviewed yet that ``viewer`` may review, newest first, with their output."""
    registries = [store.queue(name).finished_job_registry for name in store.config.gateway.queues]
    ids = _newest(store.connection, registries, _scan(viewer, limit))
    found = []
    for view in store.views(ids, None):
        if view.result is None or not view.result.draft or (view.review or {}).get("state") != "pending":
            continue
        if viewer.service is not None and viewer.service not in engine.reviewers_of(view.service):
            continue
        row = job_row(view)
        row["output"] = view.result.output[:MAX_OUTPUT_CHARS]
        row["output_truncated"] = len(view.result.output) > MAX_OUTPUT_CHARS
        found.append(row)
    found.sort(key=lambda r: r["ended_at"] or "", reverse=True)
    return found[:limit]


def may_review(engine: PolicyEngine, viewer: Viewer, owner: str) -> bool:
    return viewer.service is None or viewer.service in engine.reviewers_of(owner)


def job_row(view: JobView) -> dict[str, Any]:
    """One job as the page lists it: state, service, model, policy decisions; never the prompt."""
    result = view.result
    model = result.model if result is not None else None
    if model is None and view.calls:
        model = view.calls[-1].model
    return {
        "id": view.id,
        "status": view.status.value,
        "service": view.service,
        "queue": view.queue,
        "model": model,
        "provider": result.provider if result is not None else None,
        "created_at": view.created_at,
        "ended_at": view.ended_at,
        "attempts": view.attempts,
        "cost_usd": result.cost_usd if result is not None else None,
        "draft": bool(result is not None and result.draft),
        "review": (view.review or {}).get("state"),
        "policy": [_decision(d) for d in (result.policy if result is not None else [])],
        "error": {k: view.error.get(k) for k in ("type", "message")} if view.error else None,
    }


def _decision(decision: dict[str, Any]) -> dict[str, Any]:
    return {k: decision.get(k) for k in ("policy", "outcome", "reason") if decision.get(k) is not None}


def _scan(viewer: Viewer, limit: int) -> int:
    return limit if viewer.is_operator else min(limit * SERVICE_SCAN_FACTOR, 10 * MAX_LIST)


def _newest(connection: redis.Redis, registries: Iterable[BaseRegistry], count: int) -> list[str]:
    """The ``count`` newest job ids of each registry (highest score first), one round trip."""
    registries = list(registries)
    with connection.pipeline(transaction=False) as pipe:
        for registry in registries:
            pipe.zrange(registry.key, 0, count - 1, desc=True)
        replies = pipe.execute()
    ids: list[str] = []
    for registry, members in zip(registries, replies, strict=True):
        ids += [registry.parse_job_id(str(keys.text(m))) for m in members]
    return ids


def _age(enqueued_at: str | None, now: float) -> float:
    if not enqueued_at:
        return 0.0
    try:
        moment = datetime.fromisoformat(enqueued_at.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return round(max(0.0, now - moment.timestamp()), 3)
