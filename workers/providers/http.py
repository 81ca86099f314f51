"""Shared plumbing of the network providers: one capped aiohttp session per deployment, the key
lookup, and the single place where transport errors and HTTP statuses become ``ProviderError``s.

Why aiohttp and not httpx for the provider calls: on this path the client's own CPU is the
gateway's overhead. Measured at 100 concurrent calls to the fake provider, httpx (httpcore, anyio,
h11) spent 2.3 ms of CPU per request, httpx over aiohttp's transport 0.5 ms, aiohttp alone 0.2 ms
(C HTTP parser, a connection pool that does not rescan itself per request; docs/benchmarks.md).
A streamed body is handed to httpx-sse through an ``httpx.Response`` over aiohttp's bytes, so the
SSE decoding stays the library's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import json
import math
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import httpx
import httpx_sse
import orjson
import yarl

from gateway.chat import Delta, EmbeddingRequest, Embeddings, Emit, TextDelta, ToolCallDelta
from gateway.config import DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_MAX_RETRY_AFTER, Deployment
from gateway.errors import (
    BadProviderResponseError,
    ProviderAuthError,
    ProviderError,
    ProviderRequestError,
    ProviderUnavailableError,
    RateLimitedError,
)
from gateway.validation import LONE_SURROGATE
from workers.providers.base import Completion, CompletionRequest

_Parsed = TypeVar("_Parsed", Completion, Embeddings)

#: 409 is a provider-side lock (e.g. a concurrent update), worth another try like a 5xx.
UNAVAILABLE_STATUSES = frozenset({408, 409, 500, 502, 503, 504})
#: 529 is Anthropic's "overloaded": back off the same way as a 429.
RATE_LIMITED_STATUSES = frozenset({429, 529})
AUTH_STATUSES = frozenset({401, 403})
#: How much of a provider's own error message reaches a job record.
MAX_DETAIL_CHARS = 200


#: below the 5 s idle timeout of common servers (uvicorn, nginx), so a pooled connection is
#: dropped by us before the server closes it under a request (a stale keep-alive error)
KEEPALIVE_EXPIRY = 4.0
#: how much of a body is read at once
READ_CHUNK = 64 * 1024


def build_session(deployment: Deployment) -> aiohttp.ClientSession:
    """The session of one deployment, reused for the life of the worker, holding at most
    ``max_connections`` connections. Call it inside the worker's event loop.

    The config names connect, read (per chunk) and total; the total is the caller's
    ``asyncio.timeout`` around the whole exchange, waiting for a free connection included.
    """
    t = deployment.timeouts
    connector = aiohttp.TCPConnector(
        limit=deployment.max_connections,
        limit_per_host=0,
        keepalive_timeout=KEEPALIVE_EXPIRY,
        ttl_dns_cache=300,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=t.connect, sock_read=t.read),
        skip_auto_headers=("User-Agent",),
        # not trust_env: aiohttp would look up the proxy and ~/.netrc again for every request, in a
        # thread (two executor hops per call, a sixth of a worker's CPU at 100 clients); the proxy
        # is read once instead (env_proxy) and passed with each request
        auto_decompress=True,
    )


def env_proxy(api_base: str) -> dict[str, Any]:
    """The proxy ``HTTPS_PROXY`` or ``HTTP_PROXY`` (either case) names for ``api_base``, unless
    ``NO_PROXY`` exempts its host, as httpx and curl read them; looked up once per session (a
    worker reads its environment at start), as the keyword arguments of a request. Credentials in
    the proxy URL go to the proxy alone."""
    url = yarl.URL(api_base)
    if not url.host or not url.scheme:
        return {}
    try:
        proxy, auth = aiohttp.helpers.get_env_proxy_for_url(url)
    except LookupError:  # none set, or NO_PROXY exempts the host
        return {}
    if auth is not None:  # aiohttp sends a proxy URL's credentials as Proxy-Authorization
        proxy = proxy.with_user(auth.login).with_password(auth.password)
    return {"proxy": proxy}


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the provider asks to wait, from ``retry-after-ms`` (OpenAI) or ``Retry-After``
    (seconds or HTTP-date); None when neither says anything usable.

    A negative, NaN, infinite or unparseable value is ignored, as if absent (the job's own retry
    interval applies); a date already past means "now" (0). The value is not capped here: the
    caller caps it (``cap_retry_after``) so that the cap can be reported.
    """
    millis = _non_negative(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _non_negative(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def cap_retry_after(asked: float | None, limit: float) -> tuple[float | None, bool]:
    """(the wait to honour, whether ``limit`` cut it short).

    A provider's Retry-After is a request, not an order: a year-9999 date or ``1e12`` would park
    the job for ever (and overflows the scheduler's datetime), so no wait exceeds the configured
    ``jobs.max_retry_after``.
    """
    if asked is None or asked <= limit:
        return asked, False
    return float(limit), True


def _non_negative(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def error_for_status(
    response: httpx.Response,
    *,
    deployment: str,
    key_env: str | None,
    secret: str | None,
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
) -> ProviderError | None:
    """The error a non-2xx answer means, or None for a success."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    if status in RATE_LIMITED_STATUSES:
        return _rate_limited(response, deployment, max_retry_after)
    if status in AUTH_STATUSES:
        # Only the provider's error *type*: some providers quote the offending key in the message.
        kind = _error_field(response, "type")
        kind = None if kind is None else clean_text(kind)
        what = f"HTTP {status}" + (f", {kind}" if kind else "")
        fix = f"check the key in {key_env}" if key_env else "this deployment sends no key; set api_key_env"
        return ProviderAuthError(f"provider rejected the credentials ({what}); {fix}", deployment=deployment)
    detail = _scrub(_error_field(response, "message") or response.text, secret)
    if status in UNAVAILABLE_STATUSES or status >= 500:
        return ProviderUnavailableError(
            f"provider unavailable (HTTP {status}): {detail}", deployment=deployment
        )
    if status >= 400:
        return ProviderRequestError(
            f"provider refused the request (HTTP {status}): {detail}", deployment=deployment
        )
    return BadProviderResponseError(f"unexpected HTTP {status} from provider", deployment=deployment)


def _rate_limited(response: httpx.Response, deployment: str, max_retry_after: float) -> RateLimitedError:
    asked = parse_retry_after(response.headers)
    wait, capped = cap_retry_after(asked, max_retry_after)
    message = f"provider is rate limiting (HTTP {response.status_code})"
    if capped:
        message += f"; it asked to wait {asked:.0f}s, capped at {max_retry_after:g}s (jobs.max_retry_after)"
    return RateLimitedError(message, deployment=deployment, retry_after=wait, retry_after_capped=capped)


def _error_field(response: httpx.Response, field: str) -> str | None:
    """``error.<field>`` (OpenAI, Anthropic) or a bare ``error`` string (Ollama) from an error body."""
    try:
        data = response.json()
    except (ValueError, RecursionError):  # not JSON, or nested past the decoder's recursion limit
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get(field), str):
        return str(error[field])
    if isinstance(error, str) and field == "message":
        return error
    return None


def clean_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (the replacement character).

    Models emit half a surrogate pair when an answer is cut inside an emoji (at ``max_tokens``, or by
    a buggy proxy). The rest of the answer is still useful, so it is kept with U+FFFD where the half
    character was, as a UTF-8 decoder does with a broken byte, rather than refused.
    """
    return LONE_SURROGATE.sub("\ufffd", text)


def clean_completion(completion: Completion) -> Completion:
    """``completion`` with ``clean_text`` applied to every text in it (all of them end up in Redis)."""
    return dataclasses.replace(
        completion,
        text=clean_text(completion.text),
        provider_model=clean_text(completion.provider_model),
        finish_reason=None if completion.finish_reason is None else clean_text(completion.finish_reason),
        extra={clean_text(k): clean_text(v) for k, v in completion.extra.items()},
    )


def clean_delta(delta: Delta) -> Delta:
    if isinstance(delta, TextDelta):
        return TextDelta(clean_text(delta.text))
    return ToolCallDelta(
        delta.index,
        None if delta.id is None else clean_text(delta.id),
        None if delta.name is None else clean_text(delta.name),
        clean_text(delta.arguments),
    )


class InStreamError(Exception):
    """A provider's own error event inside a stream, as a subclass turns it into one (``feed``)."""

    def __init__(self, message: str, *, overloaded: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.overloaded = overloaded


def _scrub(text: str, secret: str | None) -> str:
    flat = clean_text(" ".join(text.split()))
    if secret:
        flat = flat.replace(secret, "***")
    return flat if len(flat) <= MAX_DETAIL_CHARS else flat[: MAX_DETAIL_CHARS - 3] + "..."


class HttpProvider:
    """Base of the network providers: the client, the key and one exchange per ``complete``.

    A subclass says where to post (``path``), how to authenticate (``headers``), and how to
    translate (``payload``, ``parse``). The key is read from the environment on every call, so a
    rotated key (config reload) takes effect without rebuilding the provider.
    """

    kind: str = ""
    default_api_base: str = ""
    #: The vendor's conventional variable, used only against the vendor's own endpoint.
    default_key_env: str | None = None
    path: str = ""

    def __init__(
        self,
        name: str,
        deployment: Deployment,
        environ: Mapping[str, str],
        *,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.name = name
        self.deployment = deployment
        self.max_retry_after = max_retry_after
        self.max_response_bytes = max_response_bytes  # jobs.max_response_bytes
        self._environ = environ  # the key is looked up by name on every call, so a rotation is seen
        self.api_base = (deployment.api_base or self.default_api_base).rstrip("/")
        default_env = self.default_key_env if deployment.api_base is None else None
        self.key_env: str | None = deployment.api_key_env or default_env
        self._session: aiohttp.ClientSession | None = None  # made in the worker's loop, on first use
        self._proxy: dict[str, Any] = {}  # read with the session: env_proxy

    def unavailable_reason(self) -> str | None:
        if self.key_env is not None and not self._environ.get(self.key_env):
            return f"{self.key_env} is not set"
        return None

    def headers(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    #: where embeddings are posted; None: the kind has none
    embed_path: str | None = None
    #: how a streamed answer is framed: server-sent events, or one JSON object per line (Ollama)
    stream_framing: str = "sse"

    def payload(self, request: CompletionRequest, *, stream: bool = False) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, data: Any) -> Completion:
        raise NotImplementedError

    def stream_decoder(self) -> Any:
        """A fresh decoder of this kind's stream (a wire module's ``...StreamDecoder``)."""
        raise NotImplementedError

    #: the wire module's error for a provider's own error inside a stream (``feed`` turns it into
    #: ``InStreamError``)
    stream_error: type[Exception] = Exception

    def feed(self, decoder: Any, event: str, data: str) -> list[Delta]:
        """One SSE event (or NDJSON line, ``event`` empty) through the decoder; an in-stream error
        event becomes ``InStreamError``. Kinds whose decoders read the data alone use this one."""
        try:
            deltas: list[Delta] = decoder.feed(data)
        except self.stream_error as exc:
            raise InStreamError(str(exc)) from exc
        return deltas

    def finish_stream(self, decoder: Any, request: CompletionRequest) -> Completion:
        """The whole answer once the stream ended cleanly."""
        result: Completion = decoder.completion()
        return result

    def embed_payload(self, request: EmbeddingRequest) -> dict[str, Any]:
        raise NotImplementedError

    def parse_embeddings(self, data: Any) -> Embeddings:
        raise NotImplementedError

    def _render(self, request: CompletionRequest, *, stream: bool) -> dict[str, Any]:
        """The upstream body; a request this kind's format cannot express (an image URL for
        Ollama, tool arguments that are not an object for Anthropic) fails the call, unsent."""
        try:
            return self.payload(request, stream=stream)
        except (TypeError, ValueError) as exc:
            raise ProviderRequestError(
                f"cannot send this request to {self.kind}: {exc}", deployment=self.name
            ) from exc

    async def complete(self, request: CompletionRequest) -> Completion:
        key = self._key()
        data = await self._post(self._render(request, stream=False), key)
        return self._parsed(self.parse, data, key)

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        if self.embed_path is None:
            raise ProviderRequestError(f"{self.kind} has no embeddings API", deployment=self.name)
        key = self._key()
        data = await self._post(self.embed_payload(request), key, path=self.embed_path)
        embeddings = self._parsed(self.parse_embeddings, data, key)
        if len(embeddings.vectors) != len(request.inputs):
            raise BadProviderResponseError(
                f"{len(embeddings.vectors)} vectors for {len(request.inputs)} inputs", deployment=self.name
            )
        return embeddings

    def _parsed(self, parse: Callable[[Any], _Parsed], data: Any, key: str | None) -> _Parsed:
        try:
            parsed = parse(data)
        except (LookupError, TypeError, ValueError) as exc:
            raise BadProviderResponseError(
                f"not a valid {self.kind} response: {type(exc).__name__}: {_scrub(str(exc), key)}",
                deployment=self.name,
            ) from exc
        if isinstance(parsed, Completion):
            return clean_completion(parsed)  # type: ignore[return-value]  # (mypy narrows a TypeVar poorly)
        return parsed

    async def stream(self, request: CompletionRequest, emit: Emit) -> Completion:
        """The call with the answer streamed: each delta goes to ``emit`` as it is decoded.

        A stream that ends without its format's end marker ([DONE], message_stop, done: true) is
        broken, never a short answer: it raises like a reset connection, and the pipeline decides
        (fail over before the first delta, fail the job after it).
        """
        key = self._key()
        body = self._encoded(self._render(request, stream=True))
        decoder = self.stream_decoder()
        url = self.api_base + self.path
        with self._transport_errors(url, key, reading="reading the stream from"):
            async with (
                asyncio.timeout(self.deployment.timeouts.total),
                self.session().post(
                    url, data=body, headers=self._json_headers(key), allow_redirects=False, **self._proxy
                ) as response,
            ):
                if not 200 <= response.status < 300:
                    raise self._status_error(response, await self._read_capped(response), key)
                async with contextlib.aclosing(self._frames(response)) as frames:
                    async for event, data in frames:
                        for delta in self.feed(decoder, event, data):
                            emit(clean_delta(delta))
                        if decoder.done:
                            break
            if not decoder.done:
                raise ProviderUnavailableError(
                    f"the stream from {url} ended before its end marker (cut short)", deployment=self.name
                )
            return clean_completion(self.finish_stream(decoder, request))

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = build_session(self.deployment)
            self._proxy = env_proxy(self.api_base)
        return self._session

    def _json_headers(self, key: str | None) -> dict[str, str]:
        return {"Content-Type": "application/json", "Accept": "application/json", **self.headers(key)}

    def _encoded(self, payload: dict[str, Any]) -> bytes:
        try:
            return orjson.dumps(payload)
        except TypeError as exc:  # orjson.JSONEncodeError: a value JSON cannot carry
            raise ProviderRequestError(f"cannot encode the request: {exc}", deployment=self.name) from exc

    @contextlib.contextmanager
    def _transport_errors(self, url: str, key: str | None, *, reading: str) -> Iterator[None]:
        """Every way an exchange can fail, as the ProviderError it means (the key scrubbed out)."""
        total = self.deployment.timeouts.total
        try:
            yield
        except InStreamError as exc:
            detail = _scrub(exc.message, key)
            kind = RateLimitedError if exc.overloaded else ProviderUnavailableError
            raise kind(f"provider error mid-stream: {detail}", deployment=self.name) from exc
        except aiohttp.ServerTimeoutError as exc:  # (a TimeoutError too) the connect or a read timed out
            raise ProviderUnavailableError(
                f"{_timeout_name(exc)} {reading} {url}", deployment=self.name
            ) from exc
        except TimeoutError as exc:
            raise ProviderUnavailableError(
                f"no answer within {total:g}s (timeouts.total)", deployment=self.name
            ) from exc
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
            raise ProviderRequestError(
                f"bad api_base {self.api_base!r}: {exc}", deployment=self.name
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            # the errno's own words: aiohttp's message repeats the address, which the URL already says
            errno = exc.os_error.errno
            detail = os.strerror(errno) if errno and errno > 0 else "name or address not found"
            raise ProviderUnavailableError(
                f"ConnectError {reading} {url}: {detail}", deployment=self.name
            ) from exc
        except aiohttp.ClientPayloadError as exc:
            cause = exc.__cause__ or exc
            raise ProviderUnavailableError(
                f"ReadError {reading} {url}: {_scrub(str(cause), key) or 'the body was cut short'}",
                deployment=self.name,
            ) from exc
        except (aiohttp.ClientError, httpx.TransportError, OSError) as exc:
            name = "ReadError" if isinstance(exc, aiohttp.ServerDisconnectedError) else type(exc).__name__
            detail = _scrub(str(exc), key) or "connection failed or was closed"
            raise ProviderUnavailableError(f"{name} {reading} {url}: {detail}", deployment=self.name) from exc
        except httpx.DecodingError as exc:
            raise BadProviderResponseError(f"undecodable response body: {exc}", deployment=self.name) from exc
        except (LookupError, TypeError, ValueError) as exc:  # a wire module's decoder refused a piece
            raise BadProviderResponseError(
                f"not a valid {self.kind} stream: {type(exc).__name__}: {_scrub(str(exc), key)}",
                deployment=self.name,
            ) from exc

    def _status_error(self, response: aiohttp.ClientResponse, body: bytes, key: str | None) -> ProviderError:
        error = error_for_status(
            _with_body(response, body), deployment=self.name, key_env=self.key_env, secret=key,
            max_retry_after=self.max_retry_after,
        )  # fmt: skip
        return error or BadProviderResponseError("no answer", deployment=self.name)

    async def _frames(self, response: aiohttp.ClientResponse) -> AsyncGenerator[tuple[str, str], None]:
        """(event, data) of each SSE event, or ("", line) of each NDJSON line, within the byte cap."""
        size = 0
        cap = self.max_response_bytes
        streamed = _streamed(response)
        if self.stream_framing == "ndjson":
            async for line in streamed.aiter_lines():
                size += len(line) + 1
                if size > cap:
                    raise self._too_large(response.status)
                yield "", line
            return
        async for sse in httpx_sse.EventSource(streamed).aiter_sse():
            size += len(sse.data) + len(sse.event) + 8
            if size > cap:
                raise self._too_large(response.status)
            yield sse.event, sse.data

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _key(self) -> str | None:
        if self.key_env is None:
            return None
        key = self._environ.get(self.key_env)
        if not key:
            raise ProviderAuthError(f"{self.key_env} is not set", deployment=self.name)
        return key

    async def _post(self, payload: dict[str, Any], key: str | None, *, path: str | None = None) -> Any:
        """One HTTP exchange; every way it can fail leaves as a ProviderError."""
        url = self.api_base + (path or self.path)
        body = self._encoded(payload)
        with self._transport_errors(url, key, reading="talking to"):
            async with (
                asyncio.timeout(self.deployment.timeouts.total),
                self.session().post(
                    url, data=body, headers=self._json_headers(key), allow_redirects=False, **self._proxy
                ) as response,
            ):
                raw = await self._read_capped(response)
        if not 200 <= response.status < 300:
            raise self._status_error(response, raw, key)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # json tells a lone surrogate escape (which it reads) from nesting and non-JSON
        try:
            return json.loads(raw)
        except RecursionError as exc:
            raise BadProviderResponseError(
                f"response JSON is nested too deeply to read (HTTP {response.status})",
                deployment=self.name,
            ) from exc
        except ValueError as exc:
            snippet = _scrub(raw.decode("utf-8", "replace"), key)[:60]
            raise BadProviderResponseError(
                f"response is not JSON (HTTP {response.status}): {snippet!r}", deployment=self.name
            ) from exc

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        """The body, read as it arrives and given up past ``max_response_bytes``: a provider that
        answers without end (a chunked stream, a decompression bomb) costs at most that much memory.

        The cap counts decoded bytes (after any Content-Encoding); a Content-Length already past it
        is refused before anything is read.
        """
        cap = self.max_response_bytes
        declared = _non_negative(response.headers.get("content-length"))
        if declared is not None and declared > cap:
            raise self._too_large(response.status)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(READ_CHUNK):
            size += len(chunk)
            if size > cap:
                raise self._too_large(response.status)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, status: int) -> BadProviderResponseError:
        return BadProviderResponseError(
            f"answer larger than {self.max_response_bytes:,} bytes (HTTP {status}; "
            "jobs.max_response_bytes); not read further",
            deployment=self.name,
        )


def _timeout_name(exc: aiohttp.ServerTimeoutError) -> str:
    return "ConnectTimeout" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "ReadTimeout"


_FRAMING = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def _headers(response: aiohttp.ClientResponse) -> list[tuple[str, str]]:
    """The headers an ``httpx.Response`` over an already decoded body may carry."""
    return [(k, v) for k, v in response.headers.items() if k.lower() not in _FRAMING]


def _with_body(response: aiohttp.ClientResponse, body: bytes) -> httpx.Response:
    """A complete ``httpx.Response`` holding ``body`` (already decoded), for the status helpers."""
    return httpx.Response(response.status, headers=_headers(response), content=body)


class _AiohttpBody(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_any():
            yield chunk


def _streamed(response: aiohttp.ClientResponse) -> httpx.Response:
    """An unread ``httpx.Response`` over aiohttp's body, so httpx-sse and httpx's line decoder
    read a stream exactly as they would from httpx itself."""
    return httpx.Response(response.status, headers=_headers(response), stream=_AiohttpBody(response))
