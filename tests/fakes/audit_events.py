"""A complete audit event with sensible values, for tests that only care about a few fields, and a
log of them written as the writer would chain it."""

from __future__ import annotations

from collections.abc import Iterable
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
