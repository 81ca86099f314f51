"""One fake LLM provider on 127.0.0.1 speaking the OpenAI, Anthropic and Ollama wire formats.

Answers at once with "echo: <last user message>" and realistic usage; ``latency`` delays every
answer; ``script(...)`` queues faults (statuses, garbage, resets, stalls), optionally per model;
``requests`` records what arrived, with credential values redacted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

REDACTED = "<redacted>"
_CREDENTIAL_HEADERS = ("authorization", "x-api-key")


@dataclass(frozen=True)
class Fault:
    """One scripted answer, consumed by one request."""

    kind: Literal["status", "garbage", "json", "raw", "huge", "reset", "timeout", "reply"]
    code: int = 200
    retry_after: float | str | None = None
    message: str = "scripted failure"
    seconds: float = 0.0
    body: Any = None
    text: str = ""
    content: bytes = b""
    size: int = 0

    @classmethod
    def status(cls, code: int, *, retry_after: float | str | None = None, message: str = "") -> Fault:
        """An error in the path's wire format; ``retry_after`` (seconds or an HTTP-date) as a header."""
        return cls("status", code=code, retry_after=retry_after, message=message or f"scripted {code}")

    @classmethod
    def garbage(cls) -> Fault:
        """200 with an HTML body, like a captive portal or a misrouted proxy."""
        return cls("garbage")

    @classmethod
    def json(cls, body: Any) -> Fault:
        """200 with any JSON body, e.g. one that lacks the wire format's fields."""
        return cls("json", body=body)

    @classmethod
    def raw(cls, body: bytes, code: int = 200) -> Fault:
        """200 with these exact bytes as an ``application/json`` body (e.g. a lone ``\\ud800`` escape,
        which ``json`` only writes with ``ensure_ascii``, or nesting no encoder would produce)."""
        return cls("raw", content=body, code=code)

    @classmethod
    def huge(cls, size: int) -> Fault:
        """200 with a chunked JSON-looking body of ``size`` bytes, generated as it is sent (never
        held in memory whole): a runaway or hostile provider."""
        return cls("huge", size=size)

    @classmethod
    def reset(cls) -> Fault:
        """Close the connection with a TCP RST before answering."""
        return cls("reset")

    @classmethod
    def timeout(cls, seconds: float) -> Fault:
        """Stall ``seconds`` (or until the client gives up), then answer normally."""
        return cls("timeout", seconds=seconds)

    @classmethod
    def reply(cls, text: str) -> Fault:
        """A scripted success with this text instead of the echo."""
        return cls("reply", text=text)


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    model: str | None
    #: lower-case names; credential values replaced by REDACTED
    headers: dict[str, str]
    #: the header that carried a credential ("authorization" or "x-api-key"), if any
    auth_header: str | None
    #: whether that credential equals the fake's ``api_key`` (any credential if it has none)
    key_ok: bool
    body: Any
    #: the client's "host:port": one value per TCP connection (to check pooling)
    connection: str = ""


@dataclass(frozen=True)
class _Wire:
    """What differs between the three formats."""

    auth_header: str | None
    limit: Callable[[dict[str, Any]], Any]
    reply: Callable[[str, str, int, int, bool], dict[str, Any]]
    error: Callable[[int, str], dict[str, Any]]
    check: Callable[[dict[str, Any]], str | None] = field(default=lambda body: None)


def _openai_reply(model: str, text: str, prompt: int, completion: int, cut: bool) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{
            "index": 0, "message": {"role": "assistant", "content": text},
            "finish_reason": "length" if cut else "stop",
        }],
        "usage": {
            "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion
        },
    }  # fmt: skip


def _anthropic_reply(model: str, text: str, prompt: int, completion: int, cut: bool) -> dict[str, Any]:
    return {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "max_tokens" if cut else "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": prompt, "output_tokens": completion},
    }  # fmt: skip


def _ollama_reply(model: str, text: str, prompt: int, completion: int, cut: bool) -> dict[str, Any]:
    return {
        "model": model, "created_at": "2024-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": text},
        "done": True, "done_reason": "length" if cut else "stop",
        "prompt_eval_count": prompt, "eval_count": completion,
    }  # fmt: skip


def _error_type(status: int) -> str:
    names = {
        400: "invalid_request",
        401: "authentication",
        403: "permission",
        404: "not_found",
        429: "rate_limit",
    }
    return names.get(status, "overloaded" if status == 529 else "api") + "_error"


def _anthropic_check(body: dict[str, Any]) -> str | None:
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: field required"
    if any(m.get("role") not in ("user", "assistant") for m in body["messages"]):
        return "messages: roles must be 'user' or 'assistant'; use the top-level system field"
    return None


_WIRES = {
    "/v1/chat/completions": _Wire(
        auth_header="authorization",
        limit=lambda b: b.get("max_completion_tokens") or b.get("max_tokens"),
        reply=_openai_reply,
        error=lambda status, msg: {"error": {"message": msg, "type": _error_type(status), "code": None}},
    ),
    "/v1/messages": _Wire(
        auth_header="x-api-key",
        limit=lambda b: b.get("max_tokens"),
        reply=_anthropic_reply,
        error=lambda status, msg: {"type": "error", "error": {"type": _error_type(status), "message": msg}},
        check=_anthropic_check,
    ),
    "/api/chat": _Wire(
        auth_header=None,
        limit=lambda b: (b.get("options") or {}).get("num_predict"),
        reply=_ollama_reply,
        error=lambda status, msg: {"error": msg},
        check=lambda b: None if b.get("stream") is False else "this fake only answers stream: false",
    ),
}


def _text(content: Any) -> str:
    if isinstance(content, list):  # Anthropic content blocks
        return "".join(str(block.get("text", "")) for block in content if isinstance(block, dict))
    return str(content)


def _tokens(text: str) -> int:
    return max(1, -(-len(text) // 4))


class FakeProvider:
    """Use as ``with FakeProvider() as fake:``; state is thread-safe (the server runs in a thread)."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        latency: float = 0.0,
        port: int = 0,
        max_records: int | None = None,
    ) -> None:
        #: when set, OpenAI and Anthropic requests without this key get a 401 (Ollama has no auth)
        self.api_key = api_key
        #: seconds to wait before every answer; may be changed at any time
        self.latency = latency
        self.port = port
        self._lock = threading.Lock()
        #: ``max_records`` keeps only the newest (a long benchmark); ``count`` still counts them all
        self._records: deque[ReceivedRequest] = deque(maxlen=max_records)
        self._counts: Counter[tuple[str, str | None]] = Counter()
        self._scripts: dict[str | None, deque[Fault]] = {}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- scripting and inspection (any thread) -------------------------------------------------

    def script(self, *faults: Fault, model: str | None = None) -> None:
        """Queue answers for the next requests (for ``model`` only, if given), then normal ones."""
        with self._lock:
            self._scripts.setdefault(model, deque()).extend(faults)

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._records)

    def count(self, model: str | None = None, path: str | None = None) -> int:
        with self._lock:
            return sum(
                n for (p, m), n in self._counts.items() if (model is None or m == model) and path in (None, p)
            )

    def bodies_for(self, model: str) -> list[Any]:
        return [r.body for r in self.requests if r.model == model]

    def reset(self) -> None:
        """Forget records and scripts, and answer at once again."""
        with self._lock:
            self._records.clear()
            self._counts.clear()
            self._scripts.clear()
        self.latency = 0.0

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> FakeProvider:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        app = Starlette(routes=[Route(path, self._handle, methods=["POST"]) for path in _WIRES])
        config = uvicorn.Config(
            app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            http="auto",
            backlog=4096,
            timeout_graceful_shutdown=2,
        )
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the fake provider did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- serving (the server's thread) ------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        wire = _WIRES[request.url.path]
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse(wire.error(400, "body is not JSON"), status_code=400)
        model = body.get("model") if isinstance(body, dict) else None
        key_ok = self._record(request, model, body)
        if self.latency > 0 and await self._client_left(request, self.latency):
            return Response()
        if wire.auth_header is not None and self.api_key is not None and not key_ok:
            # Like OpenAI, quote what was presented: the client must never pass this message on.
            quoted = request.headers.get(wire.auth_header, "(none)")
            return JSONResponse(wire.error(401, f"Incorrect API key provided: {quoted}"), status_code=401)
        problem = self._invalid(body, wire)
        if problem:
            return JSONResponse(wire.error(400, problem), status_code=400)
        fault = self._next_fault(model)
        if fault is not None and fault.kind != "reply":
            return await self._fault(request, wire, fault, body)
        return self._answer(wire, body, fault.text if fault else None)

    def _record(self, request: Request, model: Any, body: Any) -> bool:
        headers = {k: REDACTED if k in _CREDENTIAL_HEADERS else v for k, v in request.headers.items()}
        auth_header = next((h for h in _CREDENTIAL_HEADERS if h in request.headers), None)
        presented = request.headers.get(auth_header or "")
        if auth_header == "authorization" and presented is not None:
            presented = presented.removeprefix("Bearer ")
        key_ok = presented is not None and (self.api_key is None or presented == self.api_key)
        peer = request.client
        record = ReceivedRequest(
            request.url.path, model if isinstance(model, str) else None, headers, auth_header, key_ok, body,
            f"{peer.host}:{peer.port}" if peer else "",
        )  # fmt: skip
        with self._lock:
            self._records.append(record)
            self._counts[(record.path, record.model)] += 1
        return key_ok

    @staticmethod
    def _invalid(body: Any, wire: _Wire) -> str | None:
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return "model: field required"
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return "messages: a non-empty list is required"
        return wire.check(body)

    def _next_fault(self, model: str | None) -> Fault | None:
        with self._lock:
            for key in (model, None):
                queue = self._scripts.get(key)
                if queue:
                    return queue.popleft()
        return None

    def _answer(self, wire: _Wire, body: dict[str, Any], text: str | None) -> Response:
        messages = body["messages"]
        if text is None:
            users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
            text = "echo: " + (_text(users[-1].get("content", "")) if users else "")
        limit = wire.limit(body)
        cut = isinstance(limit, int) and len(text) > limit * 4
        if cut:
            text = text[: limit * 4]
        prompt = "".join(_text(m.get("content", "")) for m in messages if isinstance(m, dict))
        prompt += _text(body.get("system", ""))
        reply = wire.reply(body["model"], text, _tokens(prompt), _tokens(text), cut)
        return JSONResponse(reply)

    async def _fault(self, request: Request, wire: _Wire, fault: Fault, body: dict[str, Any]) -> Response:
        if fault.kind == "status":
            headers = {} if fault.retry_after is None else {"retry-after": str(fault.retry_after)}
            return JSONResponse(wire.error(fault.code, fault.message), fault.code, headers=headers)
        if fault.kind == "garbage":
            return Response(b"<html><body>502 Bad Gateway</body></html>", media_type="text/html")
        if fault.kind == "json":
            return JSONResponse(fault.body)
        if fault.kind == "raw":
            return Response(fault.content, fault.code, media_type="application/json")
        if fault.kind == "huge":
            return StreamingResponse(_huge_body(fault.size), media_type="application/json")
        if fault.kind == "reset":
            self._abort(request)
            await request.receive()  # returns once the server has noticed the disconnect
            return Response()  # never sent: the server drops writes to a closed connection
        if await self._client_left(request, fault.seconds):
            return Response()
        return self._answer(wire, body, None)

    def _abort(self, request: Request) -> None:
        """Reset this request's TCP connection: SO_LINGER 0 turns the close into an RST."""
        assert self._server is not None
        client = request.scope.get("client")
        for connection in list(self._server.server_state.connections):
            if client is not None and getattr(connection, "client", None) == tuple(client):
                transport: asyncio.Transport = connection.transport
                sock = transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()

    @staticmethod
    async def _client_left(request: Request, seconds: float) -> bool:
        """Wait ``seconds``, or less if the client hangs up first (so a stall never outlives it)."""
        try:
            async with asyncio.timeout(seconds):
                await request.receive()  # the body is read, so the next message is a disconnect
        except TimeoutError:
            return False
        return True


async def _huge_body(size: int, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    """``{"pad": "xxxx...`` up to ``size`` bytes, one chunk at a time (never a valid end)."""
    head = b'{"pad": "'
    yield head
    sent = len(head)
    block = b"x" * chunk
    while sent < size:
        piece = block[: size - sent]
        yield piece
        sent += len(piece)


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the fake LLM provider until Ctrl-C.")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--api-key", default=None, help="require this key (OpenAI and Anthropic paths)")
    args = parser.parse_args(argv)
    fake = FakeProvider(api_key=args.api_key, latency=args.latency, port=args.port, max_records=10_000)
    with fake, contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the way to stop it
        print(f"fake provider on {fake.base_url} (OpenAI-compatible base: {fake.base_url}/v1)", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    _main()
