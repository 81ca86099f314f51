"""OpenTelemetry traces of real jobs: the API and the worker in this process, one in-memory exporter.

The harness runs the API (uvicorn) and the worker in threads of the test's process, so the SDK's
``InMemorySpanExporter`` installed with ``gateway.tracing.use`` sees both sides of every job.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway import tracing
from tests.fakes.provider import Fault
from tests.integration.harness import (
    FAKE_KEY,
    SERVICE,
    ConfigFactory,
    SpawnWorker,
    Stack,
    StartApi,
    StartStack,
    wait_until,
)
from workers.pipeline import JobPipeline


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Traces on for this test, every finished span kept in memory; off again at teardown."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.use(None)
    provider.shutdown()


def _caller() -> tuple[int, int, str]:
    trace_id, span_id = secrets.randbits(128) | 1, secrets.randbits(64) | 1
    return trace_id, span_id, f"00-{trace_id:032x}-{span_id:016x}-01"


def _named(found: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in found if s.name == name]


def _one(found: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    named = _named(found, name)
    assert len(named) == 1, [s.name for s in found]
    return named[0]


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def _assert_no_content(found: Sequence[ReadableSpan], *secrets_: str) -> None:
    """No attribute of any span, nor any event, holds one of ``secrets_`` (prompt, answer, keys)."""
    for span in found:
        values = [*_attrs(span).values(), span.name]
        values += [v for event in span.events for v in (event.attributes or {}).values()]
        for value in values:
            texts = value if isinstance(value, tuple | list) else [value]
            for text in texts:
                for secret in secrets_:
                    assert secret not in str(text), f"{span.name} holds {secret!r}"


def _submit(s: Stack, body: dict[str, Any], traceparent: str | None, path: str = "/v1/jobs") -> Any:
    headers = {"traceparent": traceparent} if traceparent is not None else {}
    with s.api.client() as client:
        params = {"wait": 20} if path == "/v1/jobs" else {}
        response = client.post(path, params=params, json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response


def test_one_trace_per_job_continues_the_callers_trace(
    stack: StartStack, spans: InMemorySpanExporter
) -> None:
    s = stack()
    trace_id, caller_span, traceparent = _caller()
    prompt = "the quarterly plan of zebra-nine for Mrs Ortega"
    job = _submit(s, {"prompt": prompt, "model": "general"}, traceparent).json()
    assert job["status"] == "succeeded", job
    wait_until(lambda: len(spans.get_finished_spans()) >= 4, "the job's four spans")
    found = list(spans.get_finished_spans())

    api = _one(found, "POST /v1/jobs")
    waited, attempt = _one(found, "aigw.queue_wait"), _one(found, "aigw.attempt")
    call = _one(found, "chat claude-fake")
    assert {s.context.trace_id for s in found} == {trace_id}  # one trace, the caller's
    assert _parent_id(api) == caller_span and api.kind == SpanKind.SERVER
    assert _parent_id(waited) == api.context.span_id and _parent_id(attempt) == api.context.span_id
    assert _parent_id(call) == attempt.context.span_id and call.kind == SpanKind.CLIENT

    assert _attrs(api)["aigw.job_id"] == job["id"]
    assert _attrs(api)["aigw.service"] == SERVICE and _attrs(api)["http.response.status_code"] == 200
    assert _attrs(waited) == {"aigw.queue": "interactive", "aigw.attempt": 1}
    assert _attrs(attempt)["aigw.job_id"] == job["id"] and _attrs(attempt)["aigw.attempt"] == 1
    assert _attrs(attempt)["aigw.queue"] == "interactive" and _attrs(attempt)["aigw.service"] == SERVICE
    assert _attrs(attempt)["aigw.route"] == "cloud" and _attrs(attempt)["aigw.cached"] is False
    assert waited.start_time is not None and waited.end_time is not None
    assert waited.end_time >= waited.start_time

    usage = job["result"]["usage"]
    assert _attrs(call) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-fake",
        "gen_ai.request.max_tokens": s.config.gateway.jobs.max_output_tokens,
        "gen_ai.response.model": job["result"]["provider_model"],
        "gen_ai.usage.input_tokens": usage["input_tokens"],
        "gen_ai.usage.output_tokens": usage["output_tokens"],
        "gen_ai.response.finish_reasons": (job["result"]["finish_reason"],),
        "server.address": "127.0.0.1",
        "server.port": s.fake.port,
        "aigw.deployment": "general/0:anthropic",
    }
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    _assert_no_content(found, prompt, "zebra-nine", "Ortega", job["result"]["output"], s.api.token, FAKE_KEY)


def test_a_malformed_traceparent_starts_a_new_trace(stack: StartStack, spans: InMemorySpanExporter) -> None:
    s = stack()
    for bad in ("00-not-a-trace-01", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", "zz"):
        spans.clear()
        job = _submit(s, {"prompt": "hello", "model": "openai"}, bad).json()
        assert job["status"] == "succeeded"
        wait_until(lambda: len(spans.get_finished_spans()) >= 4, "the job's four spans")
        found = list(spans.get_finished_spans())
        api = _one(found, "POST /v1/jobs")
        assert api.parent is None  # a root: the caller's header named no trace
        assert {s.context.trace_id for s in found} == {api.context.trace_id}


class _CountingTracer:
    """The tracer aigw uses, counting the spans it is asked to start (sampled or not)."""

    def __init__(self, tracer: Any) -> None:
        self.tracer, self.started = tracer, 0

    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        self.started += 1
        return self.tracer.start_span(*args, **kwargs)


def test_a_job_whose_trace_is_not_sampled_builds_no_span_in_the_worker(
    stack: StartStack, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = stack()
    counting = _CountingTracer(tracing._tracer)
    monkeypatch.setattr(tracing, "_tracer", counting)
    trace_id, span_id, _sampled = _caller()
    dropped = f"00-{trace_id:032x}-{span_id:016x}-00"  # the caller did not sample: the API follows
    job = _submit(s, {"prompt": "hello", "model": "general"}, dropped).json()
    assert job["status"] == "succeeded"
    assert counting.started == 1  # the API's submit span (not recording); none in the worker
    # a sampled job afterwards is traced whole: the shortcut is per job, not a switch
    trace_id, _span, sampled = _caller()
    assert _submit(s, {"prompt": "hello", "model": "general"}, sampled).json()["status"] == "succeeded"
    wait_until(lambda: len(spans.get_finished_spans()) >= 4, "the sampled job's four spans")
    assert {f.context.trace_id for f in spans.get_finished_spans()} == {trace_id}
    assert counting.started == 1 + 4


def test_a_retried_job_shows_one_attempt_span_per_try(stack: StartStack, spans: InMemorySpanExporter) -> None:
    s = stack()
    s.fake.script(Fault.status(503), model="gpt-fake")  # openai has no fallback: the job is retried
    trace_id, _caller_span, traceparent = _caller()
    job = _submit(s, {"prompt": "again", "model": "openai"}, traceparent).json()
    assert job["status"] == "succeeded" and job["result"]["attempt"] == 2
    wait_until(lambda: len(_named(spans.get_finished_spans(), "aigw.attempt")) >= 2, "two attempts")
    found = list(spans.get_finished_spans())

    attempts = sorted(_named(found, "aigw.attempt"), key=lambda a: _attrs(a)["aigw.attempt"])
    assert [_attrs(a)["aigw.attempt"] for a in attempts] == [1, 2]
    assert {a.context.trace_id for a in found} == {trace_id}
    assert _attrs(attempts[0])["error.type"] == "provider_unavailable"
    assert "error.type" not in _attrs(attempts[1])
    assert sorted(_attrs(w)["aigw.attempt"] for w in _named(found, "aigw.queue_wait")) == [1, 2]
    calls = _named(found, "chat gpt-fake")
    assert [_parent_id(c) for c in calls] == [a.context.span_id for a in attempts]
    assert [_attrs(c).get("error.type") for c in calls] == ["provider_unavailable", None]


def test_a_failover_shows_one_provider_span_per_deployment(
    stack: StartStack, spans: InMemorySpanExporter
) -> None:
    s = stack()
    s.fake.script(Fault.status(503), model="claude-fake")  # general fails over to offline
    job = _submit(s, {"prompt": "over", "model": "general"}, None).json()
    assert job["status"] == "succeeded" and job["result"]["provider"] == "offline"
    wait_until(lambda: len(spans.get_finished_spans()) >= 5, "the job's five spans")
    found = list(spans.get_finished_spans())

    attempt = _one(found, "aigw.attempt")
    failed, answered = _one(found, "chat claude-fake"), _one(found, "chat aigw-offline-1")
    assert _parent_id(failed) == _parent_id(answered) == attempt.context.span_id
    assert _attrs(failed)["error.type"] == "provider_unavailable"
    assert "gen_ai.usage.input_tokens" not in _attrs(failed)
    assert answered.kind == SpanKind.INTERNAL  # the offline provider answers in-process
    assert _attrs(answered)["gen_ai.provider.name"] == "offline"
    assert "server.address" not in _attrs(answered)
    assert _attrs(answered)["gen_ai.usage.output_tokens"] == job["result"]["usage"]["output_tokens"]
    assert "error.type" not in _attrs(attempt)


def test_a_drop_in_call_is_one_trace_too(stack: StartStack, spans: InMemorySpanExporter) -> None:
    s = stack()
    trace_id, caller_span, traceparent = _caller()
    body = {"model": "openai", "messages": [{"role": "user", "content": "drop-in question"}]}
    response = _submit(s, body, traceparent, path="/v1/chat/completions")
    job_id = response.headers["x-aigw-job-id"]
    wait_until(lambda: len(spans.get_finished_spans()) >= 4, "the job's four spans")
    found = list(spans.get_finished_spans())

    api = _one(found, "POST /v1/chat/completions")
    assert _parent_id(api) == caller_span and _attrs(api)["aigw.job_id"] == job_id
    assert {s.context.trace_id for s in found} == {trace_id}
    assert _attrs(_one(found, "chat gpt-fake"))["gen_ai.provider.name"] == "openai"
    answer = response.json()["choices"][0]["message"]["content"]
    _assert_no_content(found, "drop-in question", answer)


def test_without_otel_variables_nothing_is_traced(stack: StartStack, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    tracing.use(None)  # as a process with no OTEL_* variables is (the provider, unused, still listens)
    assert not tracing.configure({"AIGW_HOME": "/tmp/x"}, "api")
    s = stack()
    job = _submit(s, {"prompt": "quiet", "model": "general"}, _caller()[2]).json()
    assert job["status"] == "succeeded"
    assert not tracing.ENABLED
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"  # none installed
    assert isinstance(s.worker.worker.runner, JobPipeline)  # the runner is not wrapped
    app: Any = s.api.server.config.app
    assert all(m.cls.__name__ != "_SubmitSpans" for m in app.user_middleware)
    assert exporter.get_finished_spans() == ()
    provider.shutdown()


def test_a_streamed_call_is_one_provider_span_with_its_usage(
    stack: StartStack, spans: InMemorySpanExporter
) -> None:
    s = stack(policies=[])
    trace_id, caller_span, traceparent = _caller()
    body = {
        "model": "openai", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "stream three short things"}],
    }  # fmt: skip
    headers = {"traceparent": traceparent}
    with (
        s.api.client() as client,
        client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r,
    ):
        assert r.status_code == 200
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and len(events) > 3
    wait_until(lambda: len(spans.get_finished_spans()) >= 4, "the job's four spans")
    found = list(spans.get_finished_spans())

    api, call = _one(found, "POST /v1/chat/completions"), _one(found, "chat gpt-fake")
    assert _parent_id(api) == caller_span and {s.context.trace_id for s in found} == {trace_id}
    chunks = [json.loads(line.removeprefix("data: ")) for line in events[:-1]]
    usage = [c["usage"] for c in chunks if c.get("usage")][-1]  # what the client was charged
    assert _attrs(call)["gen_ai.usage.input_tokens"] == usage["prompt_tokens"] > 0
    assert _attrs(call)["gen_ai.usage.output_tokens"] == usage["completion_tokens"] > 0
    _assert_no_content(found, "stream three short things")


@dataclass
class _Collector:
    """An OTLP/HTTP receiver on 127.0.0.1: every span posted to ``/v1/traces``, decoded."""

    url: str = ""
    spans: list[Any] = field(default_factory=list)  # opentelemetry.proto Span messages


@pytest.fixture
def collector() -> Iterator[_Collector]:
    state = _Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest.FromString(body)
            state.spans += [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


def test_real_processes_export_over_otlp_and_flush_when_they_stop(
    gateway_config: ConfigFactory,
    start_api: StartApi,
    spawn_worker: SpawnWorker,
    collector: _Collector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``aigw worker`` as a real process and the API configured from the OTEL_* variables, with a
    batch delay of a minute: the worker's spans arrive as it exits, the API's because its lifespan
    flushes them when it stops (a SIGTERM'd uvicorn, or a forked child, never runs the SDK's atexit)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    config = gateway_config()
    provider = None
    try:
        api = start_api(config)
        provider = tracing._provider
        worker = spawn_worker(config)
        trace_id, caller_span, traceparent = _caller()
        with api.client() as client:
            job = client.post(
                "/v1/jobs", params={"wait": 20}, json={"prompt": "hi", "model": "openai"},
                headers={"traceparent": traceparent},
            ).json()  # fmt: skip
        assert job["status"] == "succeeded"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        assert "POST /v1/jobs" not in [s.name for s in collector.spans]  # still batched, a minute away
        api.stop()  # its lifespan's end flushes
        names = sorted(s.name for s in collector.spans)  # before anything else could flush them
    finally:
        tracing.use(None)
        if provider is not None:
            provider.shutdown()
    assert names == ["POST /v1/jobs", "aigw.attempt", "aigw.queue_wait", "chat gpt-fake"]
    assert {s.trace_id for s in collector.spans} == {trace_id.to_bytes(16, "big")}
    api_span = next(s for s in collector.spans if s.name == "POST /v1/jobs")
    assert api_span.parent_span_id == caller_span.to_bytes(8, "big")
