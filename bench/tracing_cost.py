"""``python -m bench.tracing_cost``: the CPU that traces add to one job, in-process, by part.

Runs the worker's tracing code of ``gateway/tracing.py`` (the queue-wait, attempt and provider-call
spans of one attempt) for a few thousand jobs with no real job around them, and reports CPU
microseconds per job: the spans built and ended (an exporter that drops them), then the same
encoded as OTLP protobuf as the OTLP/HTTP exporter does before it posts a batch (the post itself,
one per 512 spans, is left out), then a trace the sampler dropped. The API's submit span is one
more span of the same kind. The stack-level figure is ``python -m bench.run --scenario
throughput --quick`` with and without the ``OTEL_*`` variables (docs/operations.md, "Traces").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from gateway import tracing
from gateway.chat import Completion, CompletionRequest
from gateway.config import Deployment
from gateway.policies import Plan

JOBS = 2000
ROUNDS = 5
BATCH = 512  # OTEL_BSP_MAX_EXPORT_BATCH_SIZE's default


class _Drop(SpanExporter):
    """Takes every span as it ends; with ``encode``, encodes them 512 at a time as the batch
    processor hands them to the OTLP exporter (``BATCH``), else drops them."""

    def __init__(self, encode: bool) -> None:
        self.encode = encode
        self.batch: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.encode:
            self.batch.extend(spans)
            if len(self.batch) >= BATCH:
                self.flush()
        return SpanExportResult.SUCCESS

    def flush(self) -> None:
        if self.batch:
            encode_spans(self.batch).SerializeToString()
            self.batch = []


def _job(sampled: bool) -> Any:
    now = datetime.now(UTC)
    flags = "01" if sampled else "00"
    meta = {"service": "bench", "max_attempts": 1, "traceparent": f"00-{'1' * 32}-{'2' * 16}-{flags}"}
    return SimpleNamespace(
        id="a" * 32, origin="interactive", retries_left=None, meta=meta,
        enqueued_at=now - timedelta(milliseconds=3), started_at=now,
    )  # fmt: skip


async def _per_job(sampled: bool, exporter: _Drop) -> float:
    """CPU µs per job of the worker's spans, best of ``ROUNDS``."""
    step = SimpleNamespace(
        name="bench/0:openai", deployment=Deployment(provider="openai", model="m", api_base="http://h:1/v1")
    )
    provider = SimpleNamespace(api_base="http://h:1/v1")
    request, answer = CompletionRequest([], 1024), Completion("x", 10, 20, "m", finish_reason="stop")
    plan, result = Plan("bench", "bench"), SimpleNamespace(result=SimpleNamespace(cached=False))

    async def runner(_job: Any) -> Any:
        tracing.planned(plan)
        with tracing.provider_call(step, provider, request, None) as call:
            call.answered(answer)
        return result

    traced, job = tracing.traced_runner(runner), _job(sampled)
    best = float("inf")
    for _ in range(ROUNDS):
        began = time.process_time()
        for _ in range(JOBS):
            await traced(job)
        exporter.flush()
        best = min(best, (time.process_time() - began) / JOBS * 1e6)
    return best


def measure(encode: bool, sampled: bool = True) -> float:
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}), shutdown_on_exit=False)
    exporter = _Drop(encode)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        return asyncio.run(_per_job(sampled, exporter))
    finally:
        tracing.use(None)
        provider.shutdown()


def main() -> None:
    built = measure(encode=False)
    encoded = measure(encode=True)
    dropped = measure(encode=False, sampled=False)
    print(f"worker, 3 spans built and ended: {built:.0f} µs CPU per job")
    print(f"worker, the same encoded as OTLP protobuf: {encoded:.0f} µs CPU per job")
    print(f"worker, a trace the sampler dropped: {dropped:.0f} µs CPU per job")


if __name__ == "__main__":
    main()
