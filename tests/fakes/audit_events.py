"""A complete audit event with sensible values, for tests that only care about a few fields."""

from __future__ import annotations

from typing import Any

from gateway.audit import AuditEvent, request_sha256


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
