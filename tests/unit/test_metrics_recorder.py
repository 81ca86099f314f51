"""The metrics' naming and encoding: what a finished attempt adds, and the names the API uses."""

from __future__ import annotations

from pathlib import Path

import redis

from gateway.audit import AuditEvent
from gateway.config import load_config
from gateway.metrics import Recorder
from gateway.metrics.exposition import _stored_families, deployment_names
from gateway.metrics.schema import SEP
from workers.routing import build_chain


def _event(**fields: object) -> AuditEvent:
    base: dict[str, object] = {
        "job_id": "j1", "attempt": 1, "service": "svc", "model": "general", "provider": "anthropic",
        "provider_model": "m", "deployment": "general/0:anthropic", "status": "succeeded",
        "queue": "interactive", "queue_wait_ms": 3.0, "latency_ms": 20.0, "total_ms": 24.0,
        "input_tokens": 10, "output_tokens": 5, "cost_usd": 0.00012345, "request_sha256": "0" * 64,
        "calls": 2,
    }  # fmt: skip
    return AuditEvent.model_validate(base | fields)


def test_an_attempt_renders_as_the_metrics_it_adds() -> None:
    recorder = Recorder(redis.Redis())  # (register_script sends nothing)
    increments = recorder.attempt(_event(), model=None, decisions=[("p", "max_tokens", "clamp")])
    stored = {name.encode(): str(amount).encode() for name, amount in increments}
    families = {f.name: f for f in _stored_families(stored)}
    (job,) = families["aigw_jobs"].samples
    assert job.labels == {"service": "svc", "model": "general", "queue": "interactive", "state": "succeeded"}
    (cost,) = families["aigw_cost_usd"].samples
    assert cost.value == 0.00012345
    (failover,) = families["aigw_failovers"].samples
    assert failover.value == 1  # two calls in one attempt
    overhead = {s.name: s for s in families["aigw_gateway_overhead_seconds"].samples if "le" not in s.labels}
    assert overhead["aigw_gateway_overhead_seconds_sum"].value == 0.001  # 24 - 3 waited - 20 called
    buckets = [s for s in families["aigw_gateway_overhead_seconds"].samples if "le" in s.labels]
    assert [s.value for s in buckets] == sorted(s.value for s in buckets) and buckets[-1].value == 1


def test_a_retrying_attempt_is_a_retry_not_a_job() -> None:
    increments = Recorder(redis.Redis()).attempt(_event(status="retrying", calls=1), model=None, decisions=[])
    names = {name.split(SEP)[0] for name, _ in increments}
    assert "job_retries_total" in names and "jobs_total" not in names and "failovers_total" not in names


def test_breaker_names_are_the_workers_deployment_names() -> None:
    config = load_config(Path(__file__).parents[2] / "config")  # the shipped models.yaml
    workers = {step.name for alias in config.models.models for step in build_chain(config.models, alias)}
    assert set(deployment_names(config)) == workers
