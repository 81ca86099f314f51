"""A complete audit event with sensible values, for tests that only care about a few fields, and a
log of them written as the writer would chain it."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.audit import GENESIS_HASH, AuditEvent, encode_line, request_sha256, seal


def make_event(job_id: str = "job-1", **overrides: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "job_id": job_id,
        "attempt": 1,
        "service": "billing",
        "model": "fast",
        "provider": "offline",
        "provider_model": "offline-echo",
        "deployment": "offline-1",
        "status": "succeeded",
        "queue": "interactive",
        "queue_wait_ms": 3.0,
        "latency_ms": 12.5,
        "total_ms": 20.0,
        "input_tokens": 10,
        "output_tokens": 5,
        "cost_usd": 0.0001,
        "request_sha256": request_sha256({"prompt": job_id}),
        "calls": 1,
    }
    return AuditEvent(**(fields | overrides))


def write_log(path: Path, events: Iterable[AuditEvent], prev: str = GENESIS_HASH) -> str:
    """Append ``events`` to ``path`` as chained lines, as the writer would; the last line's hash."""
    lines = []
    for event in events:
        sealed = seal(event.record(), prev)
        lines.append(encode_line(sealed))
        prev = sealed["hash"]
    with path.open("ab") as file:
        file.write(b"".join(lines))
    return prev


#: each service's steady day: the models it uses, its requests per hour from 08:00 to 18:00 UTC
QUIET_SERVICES: dict[str, tuple[tuple[str, ...], int]] = {
    "billing": (("fast",), 30),
    "search": (("fast", "smart"), 20),
}
BUSINESS_HOURS = range(8, 19)


def hour_events(service: str, hour: datetime, count: int, **overrides: Any) -> list[AuditEvent]:
    """``count`` ordinary events of ``service`` within the hour starting at ``hour``, varied
    deterministically by (service, hour of day, day of month) and never after now."""
    models, _ = QUIET_SERVICES.get(service, (("fast",), 0))
    rng = random.Random(f"{service}-{hour:%d-%H}")
    latest = datetime.now(UTC) - timedelta(seconds=1)
    events = []
    for i in range(count):
        tokens_in, tokens_out = rng.randint(200, 400), rng.randint(50, 150)
        fields: dict[str, Any] = {
            "time": min(hour + timedelta(seconds=rng.randrange(3600)), latest),
            "service": service,
            "model": models[i % len(models)],
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "cost_usd": round((tokens_in * 3.0 + tokens_out * 15.0) / 1_000_000, 8),
            "latency_ms": float(rng.randint(200, 900)),
            "deployment": "offline-1",
        }
        # the id is unique even for events added to an hour that has some (the writer dedups by it)
        events.append(
            make_event(f"{service}-{hour:%Y%m%d%H}-{i}-{uuid.uuid4().hex[:8]}", **(fields | overrides))
        )
    return events


def quiet_traffic(now: datetime, days: int = 16) -> list[AuditEvent]:
    """``days`` of steady business-hours traffic of every QUIET_SERVICES service up to ``now``:
    volume within a few requests of the usual, at most one failure per hour (about 1 %)."""
    start = (now - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
    events: list[AuditEvent] = []
    hour = start
    while hour <= now:
        if hour.hour in BUSINESS_HOURS:
            for service, (_, per_hour) in QUIET_SERVICES.items():
                rng = random.Random(f"volume-{service}-{hour:%d-%H}")
                batch = hour_events(service, hour, per_hour + rng.randint(-3, 3))
                if rng.random() < 0.3:
                    batch[0] = batch[0].model_copy(
                        update={"status": "failed", "error_type": "provider_error"}
                    )
                events += batch
        hour += timedelta(hours=1)
    return sorted(events, key=lambda e: e.time)
