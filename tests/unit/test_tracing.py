"""gateway.tracing's set-up from the OTEL_* variables, and the caller's traceparent as it is read."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from loguru import logger

from gateway import tracing

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    """What aigw logs at WARNING while the test runs; traces off again at teardown."""
    messages: list[str] = []
    handler = logger.add(lambda m: messages.append(str(m)), level="WARNING", format="{message}")
    yield messages
    logger.remove(handler)
    provider = tracing._provider
    tracing.use(None)
    if provider is not None:
        provider.shutdown()


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "gw"}, False),  # names the service, asks for nothing
        (ENDPOINT, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "true"}, False),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "false"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
    ],
)
def test_traces_are_wanted_only_when_the_otel_variables_ask(environ: dict[str, str], wanted: bool) -> None:
    assert tracing.wanted(environ) is wanted


def test_nothing_asked_sets_nothing_up(warnings: list[str]) -> None:
    assert tracing.configure({"OTEL_SERVICE_NAME": "gw"}, "api") is False
    assert not tracing.ENABLED and tracing._provider is None
    assert warnings == []


def test_an_endpoint_turns_on_the_otlp_exporter(warnings: list[str]) -> None:
    assert tracing.configure(ENDPOINT, "worker") is True
    assert tracing.ENABLED and tracing._provider is not None
    assert tracing._provider.resource.attributes["service.name"] == "aigw-worker"
    assert tracing._provider.resource.attributes["aigw.component"] == "worker"
    assert warnings == []


def test_otel_service_name_names_the_service(warnings: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-eu")  # the SDK reads it from the environment
    assert tracing.configure({**ENDPOINT, "OTEL_SERVICE_NAME": "gateway-eu"}, "api") is True
    assert tracing._provider is not None
    assert tracing._provider.resource.attributes["service.name"] == "gateway-eu"


def test_without_the_extra_one_warning_and_no_traces(
    warnings: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if never installed
    assert tracing.configure(ENDPOINT, "api") is False
    assert not tracing.ENABLED
    assert len(warnings) == 1 and "pip install 'aigw[otel]'" in warnings[0]


@pytest.mark.parametrize(
    ("environ", "said"),
    [
        ({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "http/protobuf only"),
        ({**ENDPOINT, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, "http/protobuf only"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "'zipkin' is not one aigw has"),
    ],
)
def test_an_exporter_aigw_does_not_have_is_said_and_skipped(
    warnings: list[str], environ: dict[str, str], said: str
) -> None:
    assert tracing.configure(environ, "api") is False
    assert not tracing.ENABLED
    assert len(warnings) == 1 and said in warnings[0]


def _headers(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in pairs]


def test_the_callers_traceparent_is_continued() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    context = tracing.caller_context(_headers(("traceparent", parent), ("tracestate", "vendor=1")))
    assert context is not None
    from opentelemetry import trace

    span = trace.get_current_span(context).get_span_context()
    assert (span.trace_id, span.span_id) == (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331)
    assert span.is_remote and span.trace_state.get("vendor") == "1"


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("traceparent", "")],
        [("traceparent", "garbage")],
        [("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331")],  # no flags
        [("traceparent", "00-" + "0" * 32 + "-b7ad6b7169203331-01")],  # the invalid all-zero trace id
        [("traceparent", "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],  # version ff
        [("traceparent", "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01")],  # upper case
        [
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("traceparent", "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ],  # two: which one is meant is not known
    ],
)
def test_a_missing_or_malformed_traceparent_names_no_parent(headers: list[tuple[str, str]]) -> None:
    assert tracing.caller_context(_headers(*headers)) is None


def test_off_a_provider_call_builds_no_span() -> None:
    assert not tracing.ENABLED
    from gateway.chat import CompletionRequest

    call = tracing.provider_call(object(), object(), CompletionRequest([], 1), None)  # type: ignore[arg-type]
    assert call is tracing._NO_CALL and call._span is None
    with call:
        call.answered(object())  # type: ignore[arg-type]


def test_server_address_is_the_host_and_port_only() -> None:
    assert tracing._server("https://api.example.com/v1?key=x") == ("api.example.com", None)
    assert tracing._server("http://127.0.0.1:11434") == ("127.0.0.1", 11434)
    assert tracing._server(None) == (None, None)


def test_flush_exports_what_is_still_batched() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    tracing.use(provider)
    try:
        provider.get_tracer("test").start_span("waiting").end()
        assert exporter.get_finished_spans() == ()  # still in the batch, a minute from its export
        tracing.flush()
        assert [s.name for s in exporter.get_finished_spans()] == ["waiting"]
    finally:
        tracing.use(None)
        provider.shutdown()
