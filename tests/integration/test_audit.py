"""The audit path against a real Redis: workers append to the stream, one writer makes the file."""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from gateway import keys
from gateway.audit import GENESIS_HASH, AuditEvent, AuditWriter, append_event, report, verify
from gateway.redis_server import RedisServer
from tests.fakes.audit_events import make_event


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _percentile(values: list[float], pct: int) -> Any:
    """Independent of gateway.audit: the stdlib's interpolated ("inclusive") percentiles."""
    if len(values) < 2:
        return values[0] if values else None
    return pytest.approx(statistics.quantiles(values, n=100, method="inclusive")[pct - 1])


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "audit.log"  # the directory does not exist yet


@pytest.fixture
def writer(redis_client: redis.Redis, log_path: Path) -> Iterator[AuditWriter]:
    with AuditWriter(redis_client, log_path, consumer="writer-1") as audit_writer:
        yield audit_writer


def test_writer_writes_events_from_a_pipeline_as_one_line_each(
    redis_client: redis.Redis, writer: AuditWriter, log_path: Path
) -> None:
    plain = make_event("job-1")
    with_bodies = make_event(
        "job-2", status="failed", error_type="rate_limited", request={"prompt": "hi"}, response={"text": "no"}
    )
    with redis_client.pipeline(transaction=True) as pipe:
        pipe.set("result:job-1", "ok")
        append_event(pipe, plain)
        append_event(pipe, with_bodies)
        pipe.execute()

    assert writer.run_once() == 2

    first, second = _lines(log_path)
    assert {k: v for k, v in first.items() if k not in ("prev", "hash")} == plain.record()
    assert {k: v for k, v in second.items() if k not in ("prev", "hash")} == with_bodies.record()
    assert "request" not in first and second["request"] == {"prompt": "hi"}
    assert first["prev"] == GENESIS_HASH and second["prev"] == first["hash"]
    assert verify(log_path).ok


def test_writer_creates_the_file_with_mode_0600(writer: AuditWriter, log_path: Path) -> None:
    writer.run_once()

    assert log_path.stat().st_mode & 0o777 == 0o600


def test_writer_claims_what_a_dead_writer_read_but_never_acked(
    redis_client: redis.Redis, writer: AuditWriter, log_path: Path
) -> None:
    redis_client.xgroup_create(keys.AUDIT_STREAM, keys.AUDIT_GROUP, id="0", mkstream=True)
    for i in range(3):
        append_event(redis_client, make_event(f"job-{i}"))
    redis_client.xreadgroup(keys.AUDIT_GROUP, "dead", {keys.AUDIT_STREAM: ">"}, count=10)
    assert redis_client.xpending(keys.AUDIT_STREAM, keys.AUDIT_GROUP)["pending"] == 3  # "dead" never acks

    assert writer.run_once() == 3

    assert sorted(line["job_id"] for line in _lines(log_path)) == ["job-0", "job-1", "job-2"]
    assert redis_client.xpending(keys.AUDIT_STREAM, keys.AUDIT_GROUP)["pending"] == 0
    consumers = redis_client.xinfo_consumers(keys.AUDIT_STREAM, keys.AUDIT_GROUP)
    assert [c["name"] for c in consumers] == [b"writer-1"]


def test_writer_crash_between_write_and_ack_leaves_no_duplicate(
    redis_client: redis.Redis, log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        append_event(redis_client, make_event(f"job-{i}"))
    with AuditWriter(redis_client, log_path, consumer="crashed") as crashed:

        def crash(ids: list[Any]) -> None:
            raise redis.ConnectionError("killed before XACK")

        monkeypatch.setattr(crashed, "_ack", crash)
        with pytest.raises(redis.ConnectionError):
            crashed.run_once()
    assert len(_lines(log_path)) == 3

    with AuditWriter(redis_client, log_path, consumer="restarted") as restarted:
        assert restarted.run_once() == 0

    assert [line["job_id"] for line in _lines(log_path)] == ["job-0", "job-1", "job-2"]
    assert redis_client.xpending(keys.AUDIT_STREAM, keys.AUDIT_GROUP)["pending"] == 0


def test_writer_writes_a_manually_retried_attempt_again(
    redis_client: redis.Redis, writer: AuditWriter, log_path: Path
) -> None:
    """`aigw jobs retry` runs the last attempt number again: a second event, not a re-delivery."""
    first = make_event("job-1", attempt=3, status="failed")
    again = make_event("job-1", attempt=3, status="failed", time=datetime.now(UTC) + timedelta(seconds=5))
    append_event(redis_client, first)
    assert writer.run_once() == 1
    append_event(redis_client, again)
    append_event(redis_client, first)  # and the first, re-delivered, is still written once

    assert writer.run_once() == 1
    assert [(line["attempt"], line["time"]) for line in _lines(log_path)] == [
        (3, first.time),
        (3, again.time),
    ]


def test_writer_writes_a_redelivered_event_once(
    redis_client: redis.Redis, writer: AuditWriter, log_path: Path
) -> None:
    event = make_event("job-1")
    append_event(redis_client, event)
    append_event(redis_client, event)
    append_event(redis_client, make_event("job-1", attempt=2))

    assert writer.run_once() == 2
    append_event(redis_client, event)
    assert writer.run_once() == 0

    assert [(line["job_id"], line["attempt"]) for line in _lines(log_path)] == [("job-1", 1), ("job-1", 2)]


def test_writer_restart_on_the_same_file_keeps_dedup_and_chain(
    redis_client: redis.Redis, log_path: Path
) -> None:
    event = make_event("job-1")
    append_event(redis_client, event)
    with AuditWriter(redis_client, log_path, consumer="first") as first:
        assert first.run_once() == 1

    append_event(redis_client, event)  # re-delivered after the restart: the same event
    append_event(redis_client, make_event("job-2"))
    with AuditWriter(redis_client, log_path, consumer="second") as second:
        assert second.run_once() == 1

    assert [line["job_id"] for line in _lines(log_path)] == ["job-1", "job-2"]
    assert verify(log_path).ok


def test_writer_drops_a_torn_last_line_and_continues_the_chain(
    redis_client: redis.Redis, log_path: Path
) -> None:
    append_event(redis_client, make_event("job-1"))
    with AuditWriter(redis_client, log_path, consumer="first") as first:
        first.run_once()
    with log_path.open("ab") as file:
        file.write(b'{"time":"2025-01-')  # a write cut short by a crash

    append_event(redis_client, make_event("job-2"))
    with AuditWriter(redis_client, log_path, consumer="second") as second:
        assert second.run_once() == 1

    assert [line["job_id"] for line in _lines(log_path)] == ["job-1", "job-2"]
    assert verify(log_path).ok


def test_writer_trims_the_stream_after_acking(redis_client: redis.Redis, writer: AuditWriter) -> None:
    for i in range(5):
        append_event(redis_client, make_event(f"job-{i}"))

    assert writer.run_once() == 5

    assert redis_client.xlen(keys.AUDIT_STREAM) == 0
    assert redis_client.xpending(keys.AUDIT_STREAM, keys.AUDIT_GROUP)["pending"] == 0


def test_writer_drains_more_than_one_batch(redis_client: redis.Redis, log_path: Path) -> None:
    for i in range(7):
        append_event(redis_client, make_event(f"job-{i}"))

    with AuditWriter(redis_client, log_path, consumer="w", batch_size=3) as small_batches:
        assert small_batches.run_once() == 7

    assert verify(log_path).lines == 7


def test_writer_moves_malformed_entries_to_the_rejected_file(
    redis_client: redis.Redis, writer: AuditWriter, log_path: Path
) -> None:
    bad = make_event("job-1").record() | {"api_key": "sk-0123456789abcdefghij"}
    redis_client.xadd(keys.AUDIT_STREAM, {"e": json.dumps(bad)})
    redis_client.xadd(keys.AUDIT_STREAM, {"e": "not json"})
    append_event(redis_client, make_event("job-2"))

    assert writer.run_once() == 1

    rejected = log_path.with_name("audit.log.rejected")
    assert len(rejected.read_bytes().splitlines()) == 2
    assert "sk-0123456789abcdefghij" not in rejected.read_text()
    assert rejected.stat().st_mode & 0o777 == 0o600
    assert redis_client.xlen(keys.AUDIT_STREAM) == 0


def test_report_aggregates_by_service_and_model(
    redis_client: redis.Redis, writer: AuditWriter, log_path: Path
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)  # from the clock, any date
    events = [
        make_event("a1", time=start, latency_ms=100.0, input_tokens=10, output_tokens=1, cost_usd=0.01),
        make_event("a2", time=start + timedelta(minutes=1), latency_ms=300.0, input_tokens=20, cost_usd=0.02),
        make_event("a3", time=start + timedelta(minutes=2), status="failed", latency_ms=250.0, cost_usd=0.0),
        make_event("a4", time=start + timedelta(minutes=3), status="retrying", latency_ms=None, calls=0),
        make_event("b1", time=start + timedelta(minutes=4), model="smart", latency_ms=900.0, cost_usd=0.5),
        make_event(
            "b2", time=start + timedelta(minutes=5), model="smart", latency_ms=700.0, output_tokens=40
        ),
        make_event(
            "c1",
            time=start + timedelta(minutes=6),
            service="search",
            model=None,
            status="canceled",
            latency_ms=None,
        ),
    ]
    for event in events:
        append_event(redis_client, event)
    writer.run_once()

    def expected(selected: list[AuditEvent]) -> dict[tuple[str | None, ...], dict[str, Any]]:
        out: dict[tuple[str | None, ...], dict[str, Any]] = {}
        for key in sorted({(e.service, e.model) for e in selected}, key=lambda k: (k[0], k[1] or "")):
            group = [e for e in selected if (e.service, e.model) == key]
            latencies = [e.latency_ms for e in group if e.latency_ms is not None]
            out[key] = {
                "attempts": len(group),
                "requests": sum(e.status != "retrying" for e in group),
                "failures": sum(e.status in ("failed", "refused") for e in group),
                "input_tokens": sum(e.input_tokens for e in group),
                "output_tokens": sum(e.output_tokens for e in group),
                "cost_usd": sum((Decimal(repr(e.cost_usd)) for e in group), Decimal(0)),
                "unpriced": 0,
                "p50_latency_ms": _percentile(latencies, 50),
                "p95_latency_ms": _percentile(latencies, 95),
            }
        return out

    priced = frozenset({"offline-1"})

    def actual(since: datetime | None) -> dict[tuple[str | None, ...], dict[str, Any]]:
        return {
            tuple(row.group.values()): {k: v for k, v in vars(row).items() if k != "group"}
            for row in report(log_path, since=since, priced=priced).rows
        }

    assert list(actual(None)) == [("billing", "fast"), ("billing", "smart"), ("search", None)]
    assert actual(None) == expected(events)
    since = start + timedelta(minutes=2)
    assert actual(since) == expected([e for e in events if datetime.fromisoformat(e.time) >= since])


def test_writer_run_survives_a_redis_restart(tmp_path: Path, log_path: Path) -> None:
    server = RedisServer.start(tmp_path / "redis")
    client = redis.Redis.from_url(server.url)
    stop = threading.Event()
    try:
        with AuditWriter(client, log_path, consumer="w", max_backoff_s=0.2) as audit_writer:
            thread = threading.Thread(target=audit_writer.run, args=(stop,), kwargs={"block_ms": 100})
            thread.start()
            try:
                append_event(client, make_event("before"))
                _wait_for(lambda: log_path.exists() and len(_lines(log_path)) == 1)

                server.stop()
                server = RedisServer.start(server.data_dir, server.port)
                append_event(client, make_event("after"))
                _wait_for(lambda: len(_lines(log_path)) == 2)
            finally:
                stop.set()
                thread.join(timeout=10)
        assert not thread.is_alive()
        assert [line["job_id"] for line in _lines(log_path)] == ["before", "after"]
        assert verify(log_path).ok
    finally:
        client.close()
        server.stop()
