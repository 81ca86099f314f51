"""The notification outbox: what a channel is told when a job ends, queued in Redis.

An entry is appended in the same transaction that stores the job's final state (or right after
it, for failures RQ finalises), and any worker delivers it (workers/channels.py) through a
consumer group, so a worker that dies before delivering leaves it for another. An event says
what happened (state, draft, model, error type), never what was said: the output may hold PII
that a policy kept on the machine, so a channel gets a pointer and reads the job through the API.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from gateway import keys

EVENT_FIELD = "e"
#: an outbox entry is acknowledged and deleted once delivered; this only bounds a backlog
STREAM_MAXLEN = 100_000


def job_event(job_id: str, service: str, status: str, detail: Any, channels: list[str]) -> dict[str, Any]:
    """The event for ``channels``; ``detail`` is the stored result (succeeded) or error (failed)."""
    event: dict[str, Any] = {
        "event": "job.finished",
        "job_id": job_id,
        "service": service,
        "status": status,
        "path": f"/v1/jobs/{job_id}",
    }
    if status == "succeeded" and isinstance(detail, dict):
        event.update(model=detail.get("model"), draft=bool(detail.get("draft")))
        if detail.get("draft"):
            event["review"] = "pending"
    elif status == "failed" and isinstance(detail, dict):
        event["error_type"] = detail.get("type")
    return {"channels": list(channels), "event": event}


def append(pipe_or_client: redis.Redis, entry: dict[str, Any]) -> None:
    """Queue an outbox entry; pass the pipeline that stores the final state to keep them together."""
    payload = json.dumps(entry, separators=(",", ":"))
    pipe_or_client.xadd(keys.NOTIFY_STREAM, {EVENT_FIELD: payload}, maxlen=STREAM_MAXLEN, approximate=True)
