"""OpenTelemetry traces: one trace per job, across the API, the queue wait and the worker.

Off unless the standard ``OTEL_*`` variables ask for it (an OTLP endpoint or a traces exporter;
``OTEL_SDK_DISABLED=true`` wins), and the ``otel`` extra is installed. Off, the hot path pays one
module-level check (``ENABLED``) where a span would start, and no span object is ever built: the
API gets no middleware, the worker's runner is not wrapped, a provider call's context manager is a
shared no-op.

On, the spans of one job are:

- ``POST <route>`` (SERVER, API): the submit (``/v1/jobs`` and the drop-in endpoints), a child of
  the caller's ``traceparent`` header when it has a valid one; it carries the job id.
- ``aigw.queue_wait`` (worker): made after the fact, from when the job was (re)queued to when the
  worker started it.
- ``aigw.attempt`` (CONSUMER, worker): one per attempt, so a retried job shows one per try.
- ``chat {model}`` / ``embeddings {model}`` (CLIENT): one per provider call, after the GenAI
  semantic conventions, so a failover shows one per deployment tried.

The trace context travels with the job: the API span's W3C ``traceparent`` is put in the job's RQ
meta (``meta["traceparent"]``), which survives RQ's requeues, so every attempt joins the same trace.
No span and no attribute ever holds a prompt, an answer, a token, a key or a PII value: names,
ids, counts, models and error types only, and exceptions are never recorded (their messages may
quote a model's answer).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from loguru import logger

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer
    from rq.job import Job
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from gateway.chat import Completion, CompletionRequest, EmbeddingRequest
    from gateway.config import Deployment
    from gateway.policies import Plan

#: a tracer provider is installed: the one check the hot path makes before anything about traces
ENABLED = False
_tracer: Tracer | None = None
_provider: TracerProvider | None = None

#: the POST routes whose span is the job's first (each enqueues one job)
SUBMIT_ROUTES = frozenset({"/v1/jobs", "/v1/chat/completions", "/v1/embeddings", "/v1/messages"})
#: the variables that ask for traces (either one), as the OpenTelemetry SDK reads them
_ASKING = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER")
#: where the meta of a queued job keeps the API span's context
META_KEY = "traceparent"
#: a GenAI span's ``gen_ai.operation.name``, by what the call does
_OPERATIONS = {False: "chat", True: "embeddings"}


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces: an endpoint or a traces exporter other than
    ``none``, and the SDK not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if _exporter_names(environ) == ["none"]:
        return False
    return any(environ.get(name, "").strip() for name in _ASKING)


def configure(environ: Mapping[str, str], component: str) -> bool:
    """Install the tracer provider the ``OTEL_*`` variables ask for; whether traces are on.

    ``component`` (``api`` or ``worker``) names the process: ``aigw-<component>`` is the service
    name unless ``OTEL_SERVICE_NAME`` says otherwise. Nothing asked: nothing is set up (a provider
    installed by ``use`` stays). The extra missing or an exporter unknown: one warning, no traces.
    """
    if ENABLED or not wanted(environ):
        return ENABLED
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        logger.warning(
            "OTEL_* variables ask for traces but the OpenTelemetry SDK is not installed; running "
            "without traces (pip install 'aigw[otel]')"
        )
        return False
    exporters = [e for e in (_exporter(name, environ) for name in _exporter_names(environ)) if e is not None]
    if not exporters:
        return False
    attributes: dict[str, str] = {"aigw.component": component}
    if not environ.get("OTEL_SERVICE_NAME", "").strip():
        attributes["service.name"] = f"aigw-{component}"
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_* tune it
    use(provider)
    logger.info("traces on: exporting to {}", ", ".join(type(e).__name__ for e in exporters))
    return True


def use(provider: TracerProvider | None) -> None:
    """Trace with ``provider`` (an embedding program's own, a test's in-memory one); None: off.

    aigw keeps its own provider rather than the process-global one, which OpenTelemetry lets a
    process set only once.
    """
    global ENABLED, _tracer, _provider, _otel
    if provider is not None and _otel is None:
        _otel = _Names()
    _provider = provider
    _tracer = None if provider is None else provider.get_tracer("aigw")
    ENABLED = provider is not None


class _Names:
    """The OpenTelemetry names the spans use, imported once when traces go on (never when off):
    an import statement on the job path costs a lookup per call."""

    def __init__(self) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import (
            NonRecordingSpan,
            SpanContext,
            SpanKind,
            Status,
            StatusCode,
            TraceFlags,
        )

        self.attach, self.detach = context.attach, context.detach
        self.current_span, self.in_context = trace.get_current_span, trace.set_span_in_context
        self.remote, self.span_context, self.flags = NonRecordingSpan, SpanContext, TraceFlags
        self.server, self.consumer, self.client = SpanKind.SERVER, SpanKind.CONSUMER, SpanKind.CLIENT
        self.internal = SpanKind.INTERNAL
        self.error = Status(StatusCode.ERROR)


_otel: _Names | None = None


def flush(timeout_seconds: float = 5.0) -> None:
    """Export the spans still batched, before the process ends: the API's lifespan and the worker
    call it on shutdown (a forked child leaves by ``os._exit``, and a SIGTERM'd uvicorn by the
    signal, so the SDK's own atexit hook would not run)."""
    if _provider is not None:
        _provider.force_flush(int(timeout_seconds * 1000))


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    return names or ["otlp"]


def _exporter(name: str, environ: Mapping[str, str]) -> Any:
    """The span exporter ``OTEL_TRACES_EXPORTER`` names (it reads its own ``OTEL_EXPORTER_OTLP_*``)."""
    if name == "none":
        return None
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        logger.warning("OTEL_TRACES_EXPORTER: {!r} is not one aigw has (otlp, console, none); ignored", name)
        return None
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if (protocol or "http/protobuf").strip() != "http/protobuf":
        logger.warning(
            "OTEL_EXPORTER_OTLP_PROTOCOL={!r}: aigw exports OTLP over http/protobuf only; no traces exported",
            protocol,
        )
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        logger.warning("the OTLP HTTP exporter is missing; no traces exported (pip install 'aigw[otel]')")
        return None
    return OTLPSpanExporter()


# --- the API ------------------------------------------------------------------------------------


def install_api(app: Any) -> None:
    """Put the submit routes' span outermost in ``app`` (inside Starlette's error middleware), so
    the hot routes, FastAPI's routes and the drop-in endpoints all run inside it; off: nothing."""
    if ENABLED:
        app.add_middleware(_SubmitSpans)


class _SubmitSpans:
    """ASGI middleware: a SERVER span around each POST to a submit route, the caller's trace continued."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer, names = _tracer, _otel
        if tracer is None or names is None or scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        route = scope["path"]
        if route not in SUBMIT_ROUTES:
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        attributes = {"http.request.method": "POST", "http.route": route, "url.path": route}
        # a message may quote the request: exceptions are never recorded, only their type
        span = tracer.start_span(
            f"POST {route}",
            caller_context(scope["headers"]),
            names.server,
            attributes,
            record_exception=False,
        )
        token = names.attach(names.in_context(span))
        try:
            await self.app(scope, receive, sending)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(names.error)
            raise
        else:
            if status:
                span.set_attribute("http.response.status_code", status[0])
                if status[0] >= 500:
                    span.set_attribute("error.type", str(status[0]))
                    span.set_status(names.error)
        finally:
            names.detach(token)
            span.end()


def caller_context(headers: list[tuple[bytes, bytes]]) -> Context | None:
    """The caller's trace from its ``traceparent`` (and ``tracestate``) header; None (a new trace)
    when there is none, more than one, or it is malformed: never an error."""
    found: dict[str, list[str]] = {}
    for name, value in headers:
        if name in (b"traceparent", b"tracestate"):
            found.setdefault(name.decode(), []).append(value.decode("latin-1"))
    parents = found.get("traceparent", [])
    if len(parents) != 1:
        return None
    return _context_from(parents[0], found.get("tracestate", [""])[0])


def job_submitted(meta: MutableMapping[str, Any], job_id: str, service: str, queue: str) -> None:
    """Name the job on the current (submit) span and put its context in the job's RQ ``meta``.

    The context is kept even when the span is not sampled, so the worker's spans follow the same
    sampling decision (the default sampler is parent-based).
    """
    if _otel is None:
        return
    span = _otel.current_span()
    context = span.get_span_context()
    if not context.is_valid:
        return
    span.set_attributes({"aigw.job_id": job_id, "aigw.service": service, "aigw.queue": queue})
    meta[META_KEY] = f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _context_from(traceparent: str, tracestate: str = "") -> Context | None:
    """The W3C trace context ``traceparent`` names, or None when it names none (malformed)."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    context = TraceContextTextMapPropagator().extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


# --- the worker ---------------------------------------------------------------------------------

Runner = Callable[["Job"], Awaitable[Any]]


def traced_runner(runner: Runner) -> Runner:
    """``runner`` with each call an attempt span (after its queue-wait span); off: ``runner`` itself."""
    if not ENABLED:
        return runner

    @functools.wraps(runner)
    async def traced(job: Job) -> Any:
        return await _traced_attempt(runner, job)

    return traced


async def _traced_attempt(runner: Runner, job: Job) -> Any:
    tracer, names = _tracer, _otel
    if tracer is None or names is None:  # turned off since the worker was built
        return await runner(job)
    meta = job.meta or {}
    parent = _job_parent(names, meta.get(META_KEY))
    if parent is not None and not names.current_span(parent).get_span_context().trace_flags.sampled:
        # the API's sampler dropped this job's trace: its attempt builds no span, and its provider
        # calls see an unsampled context and build none either (``provider_call``)
        token = names.attach(parent)
        try:
            return await runner(job)
        finally:
            names.detach(token)
    number = _attempt_number(meta, job.retries_left)
    if job.enqueued_at is not None and job.started_at is not None:
        start, end = _ns(job.enqueued_at), _ns(job.started_at)
        attributes: dict[str, str | int] = {"aigw.queue": job.origin, "aigw.attempt": number}
        waited = tracer.start_span(
            "aigw.queue_wait", parent, names.consumer, attributes, start_time=start, record_exception=False
        )
        waited.end(end_time=max(start, end))
    attributes = {
        "aigw.job_id": job.id,
        "aigw.service": str(meta.get("service", "")),
        "aigw.queue": job.origin,
        "aigw.attempt": number,
    }
    # an error's message may quote the answer: never recorded, only its type
    span = tracer.start_span("aigw.attempt", parent, names.consumer, attributes, record_exception=False)
    token = names.attach(names.in_context(span))
    try:
        value = await runner(job)
    except BaseException as exc:
        span.set_attribute("error.type", _error_type(exc))
        span.set_status(names.error)
        raise
    else:
        result = getattr(value, "result", None)
        if result is not None:
            span.set_attribute("aigw.cached", bool(result.cached))
        return value
    finally:
        names.detach(token)
        span.end()


def _job_parent(names: _Names, traceparent: object) -> Context | None:
    """The submit span a job's meta names (``job_submitted`` wrote it), or None: a new trace."""
    if not isinstance(traceparent, str):
        return None
    parts = traceparent.split("-")
    if len(parts) != 4 or parts[0] != "00" or [len(p) for p in parts[1:]] != [32, 16, 2]:
        return None
    try:
        trace_id, span_id, flags = (int(p, 16) for p in parts[1:])
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    remote = names.span_context(trace_id, span_id, is_remote=True, trace_flags=names.flags(flags))
    return names.in_context(names.remote(remote))


def planned(plan: Plan) -> None:
    """The policies' routing outcome on the attempt span: ``local`` when they keep the job on
    sensitive (local) models, else ``cloud``; the alias they chose."""
    if _otel is None or not ENABLED:
        return
    span = _otel.current_span()
    span.set_attributes({"aigw.route": "local" if plan.sensitive_only else "cloud", "aigw.model": plan.alias})
    if plan.draft:
        span.set_attribute("aigw.draft", True)


class RouteStep(Protocol):
    """What a provider call's span needs of the worker's route step (workers.routing.RouteStep)."""

    @property
    def name(self) -> str: ...
    @property
    def deployment(self) -> Deployment: ...


def provider_call(
    step: RouteStep, provider: object, request: CompletionRequest, embedding: EmbeddingRequest | None
) -> ProviderCallSpan:
    """The span of one provider call to ``step``'s deployment, as a context manager (``with call:``,
    then ``call.answered(completion)``). Off: a shared no-op, no span built."""
    if not ENABLED or _otel is None:
        return _NO_CALL
    current = _otel.current_span().get_span_context()
    if current.is_valid and not current.trace_flags.sampled:
        return _NO_CALL  # inside a job whose trace was not sampled: nothing to record
    api_base = getattr(provider, "api_base", None)  # an HTTP provider's; the offline one has none
    operation = _OPERATIONS[embedding is not None]
    return ProviderCallSpan(step.name, step.deployment, api_base, request.max_tokens, operation)


class ProviderCallSpan:
    """One provider call's span, after the OpenTelemetry GenAI semantic conventions (no content)."""

    def __init__(
        self,
        deployment_name: str,
        deployment: Deployment | None,
        api_base: str | None,
        max_tokens: int,
        operation: str,
    ) -> None:
        self._span: Span | None = None
        names = _otel
        if deployment is None or _tracer is None or names is None:
            return
        kind, model = deployment.provider, deployment.model
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": kind,  # semantic conventions 1.37's name for gen_ai.system
            "gen_ai.request.model": model,
            "aigw.deployment": deployment_name,
        }
        if operation == "chat":
            attributes["gen_ai.request.max_tokens"] = max_tokens
        address, port = _server(api_base)
        if address:
            attributes["server.address"] = address
            if port:
                attributes["server.port"] = port
        # the offline provider answers in-process: INTERNAL, as the conventions say for such a model
        span_kind = names.internal if kind == "offline" else names.client
        self._span = _tracer.start_span(
            f"{operation} {model}", kind=span_kind, attributes=attributes, record_exception=False
        )

    def __enter__(self) -> ProviderCallSpan:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        span = self._span
        if span is None:
            return
        if exc is not None and _otel is not None:
            span.set_attribute("error.type", _error_type(exc))
            span.set_status(_otel.error)
        span.end()

    def answered(self, completion: Completion) -> None:
        """What the provider said about its answer: model, usage, finish reason (never the text)."""
        span = self._span
        if span is None:
            return
        span.set_attributes(
            {
                "gen_ai.response.model": completion.provider_model,
                "gen_ai.usage.input_tokens": completion.input_tokens,
                "gen_ai.usage.output_tokens": completion.output_tokens,
            }
        )
        if completion.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [completion.finish_reason])


_NO_CALL = ProviderCallSpan("", None, None, 0, "chat")


def _error_type(exc: BaseException) -> str:
    """A low-cardinality name for what failed: aigw's error type, else the exception's class."""
    if isinstance(exc, asyncio.CancelledError):
        return "canceled"
    kind = getattr(exc, "type", None)
    return kind if isinstance(kind, str) and kind else type(exc).__name__


def _attempt_number(meta: Mapping[str, Any], retries_left: int | None) -> int:
    """1-based, as the pipeline counts it: RQ counts the retries left of ``max_attempts`` - 1."""
    if retries_left is None:
        return 1
    return max(1, int(meta.get("max_attempts", 1)) - int(retries_left))


def _ns(moment: Any) -> int:
    return int(moment.timestamp() * 1_000_000_000)


@functools.lru_cache(maxsize=256)
def _server(api_base: str | None) -> tuple[str | None, int | None]:
    """``server.address`` and ``server.port`` of a deployment's base URL (never its path or query)."""
    if not api_base:
        return None, None
    parts = urlsplit(api_base)
    try:
        return parts.hostname, parts.port
    except ValueError:
        return parts.hostname, None
