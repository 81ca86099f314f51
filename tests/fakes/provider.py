"""One fake LLM provider on 127.0.0.1 speaking the OpenAI, Anthropic and Ollama wire formats.

Answers at once with "echo: <last user message>" and realistic usage, whole or streamed (OpenAI and
Anthropic server-sent events, Ollama NDJSON; ``chunk_delay`` paces the chunks); ``latency`` delays
every answer; ``script(...)`` queues faults (statuses, garbage, resets, stalls, tool calls, broken
streams), optionally per model; it also embeds (``/v1/embeddings``, ``/api/embed``) with vectors
derived from the text; ``requests`` records what arrived, with credential values redacted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import json as jsonlib
import math
import re
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
#: an embedding's length when the request names no ``dimensions`` (one sha256 digest of floats)
EMBEDDING_DIMENSIONS = 8
_MAX_DIMENSIONS = 4096


@dataclass(frozen=True)
class Fault:
    """One scripted answer, consumed by one request."""

    kind: Literal[
        "status", "garbage", "json", "raw", "huge", "reset", "timeout", "reply",
        "tool_call", "break_stream", "stream_error",
    ]  # fmt: skip
    code: int = 200
    retry_after: float | str | None = None
    message: str = "scripted failure"
    seconds: float = 0.0
    body: Any = None
    text: str = ""
    content: bytes = b""
    size: int = 0
    #: the tool a ``tool_call`` calls
    name: str = ""
    #: how many content chunks a broken stream sends before it breaks
    after: int = 0

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

    @classmethod
    def tool_call(cls, name: str, arguments: dict[str, Any], text: str = "") -> Fault:
        """An answer that calls tool ``name`` with these arguments (after ``text``, if any), in the
        path's wire format, whole or streamed as the request asks."""
        if not name or not isinstance(arguments, dict):
            raise ValueError("a tool call needs a name and an arguments object")
        return cls("tool_call", name=name, body=dict(arguments), text=text)

    @classmethod
    def break_stream(cls, after: int) -> Fault:
        """A stream that sends ``after`` content chunks, then drops the connection with no end marker
        (a non-streamed answer is cut off half-way through its body instead)."""
        return cls("break_stream", after=_count(after))

    @classmethod
    def stream_error(cls, after: int, message: str = "scripted stream error") -> Fault:
        """A stream that sends ``after`` content chunks, then the format's in-stream error and ends (a
        non-streamed request gets a 500 with ``message``)."""
        return cls("stream_error", after=_count(after), message=message)


def _count(after: int) -> int:
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise ValueError(f"after is a number of chunks (0 or more), not {after!r}")
    return after


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


# --- one answer, rendered by each wire format ------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """A tool call; ``number`` makes its id (each format has its own prefix)."""

    number: int
    name: str
    arguments: dict[str, Any]

    @property
    def json(self) -> str:
        return jsonlib.dumps(self.arguments, separators=(",", ":"))


@dataclass(frozen=True)
class _Answer:
    """What to say, once: whole and streamed answers render the same text and the same counts."""

    model: str
    text: str
    prompt: int
    completion: int
    finish: Literal["stop", "length", "tool"]
    call: _Call | None = None


#: One piece of a stream: ``content`` pieces carry text or tool arguments (what a broken stream
#: counts), ``tail`` ones end the stream (what a broken stream never sends), ``meta`` the rest.
_Frame = tuple[Literal["meta", "content", "tail"], bytes]


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {jsonlib.dumps(data)}\n\n".encode()


def _ndjson(data: Any) -> bytes:
    return (jsonlib.dumps(data) + "\n").encode()


def _words(text: str) -> list[str]:
    """``text`` as a word a piece (each with the spaces before it); the pieces join to ``text``."""
    return re.findall(r"\s*\S+|\s+", text)


def _slices(text: str, parts: int = 4) -> list[str]:
    """``text`` cut into about ``parts`` pieces anywhere, as tool arguments arrive when streamed."""
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _cut(frames: list[_Frame], after: int) -> list[bytes]:
    """The frames of a stream broken after ``after`` content pieces, never its end."""
    out: list[bytes] = []
    sent = 0
    for kind, data in frames:
        if kind == "tail" or (kind == "content" and sent == after):
            break
        out.append(data)
        sent += kind == "content"
    return out


def _openai_usage(a: _Answer) -> dict[str, int]:
    return {
        "prompt_tokens": a.prompt,
        "completion_tokens": a.completion,
        "total_tokens": a.prompt + a.completion,
    }


_OPENAI_FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls"}


def _openai_reply(a: _Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": a.text if a.text or a.call is None else None}
    if a.call is not None:
        message["tool_calls"] = [{
            "id": f"call_fake{a.call.number:04d}", "type": "function",
            "function": {"name": a.call.name, "arguments": a.call.json},
        }]  # fmt: skip
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000, "model": a.model,
        "choices": [{"index": 0, "message": message, "finish_reason": _OPENAI_FINISH[a.finish]}],
        "usage": _openai_usage(a),
    }  # fmt: skip


def _openai_frames(a: _Answer, body: dict[str, Any]) -> list[_Frame]:
    """A role chunk, a chunk a word (then the call's id and name, then its arguments in pieces),
    the finish_reason chunk, the usage chunk if ``stream_options.include_usage``, ``[DONE]``."""
    options = body.get("stream_options")
    usage = isinstance(options, dict) and options.get("include_usage") is True

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        out = {
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000,
            "model": a.model, "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }  # fmt: skip
        return _sse(out | {"usage": None} if usage else out)

    role: dict[str, Any] = {"role": "assistant", "content": "" if a.text or a.call is None else None}
    frames: list[_Frame] = []
    if a.call is not None:
        opening = {"index": 0, "id": f"call_fake{a.call.number:04d}", "type": "function",
                   "function": {"name": a.call.name, "arguments": ""}}  # fmt: skip
        if not a.text:  # like OpenAI: the call opens in the role chunk
            role["tool_calls"] = [opening]
        frames = [("meta", chunk({"tool_calls": [opening]}))] if a.text else []
        frames += [("content", chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
                   for piece in _slices(a.call.json)]  # fmt: skip
    text: list[_Frame] = [("content", chunk({"content": w})) for w in _words(a.text)]
    frames = [("meta", chunk(role)), *text, *frames]
    frames.append(("tail", chunk({}, _OPENAI_FINISH[a.finish])))
    if usage:
        head = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000}
        frames.append(("tail", _sse(head | {"model": a.model, "choices": [], "usage": _openai_usage(a)})))
    return [*frames, ("tail", b"data: [DONE]\n\n")]


_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}


def _anthropic_blocks(a: _Answer) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if a.text or a.call is None:
        blocks.append({"type": "text", "text": a.text})
    if a.call is not None:
        blocks.append({"type": "tool_use", "id": f"toolu_fake{a.call.number:04d}", "name": a.call.name,
                       "input": a.call.arguments})  # fmt: skip
    return blocks


def _anthropic_reply(a: _Answer) -> dict[str, Any]:
    return {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": a.model,
        "content": _anthropic_blocks(a),
        "stop_reason": _ANTHROPIC_STOP[a.finish], "stop_sequence": None,
        "usage": {"input_tokens": a.prompt, "output_tokens": a.completion},
    }  # fmt: skip


def _anthropic_frames(a: _Answer, body: dict[str, Any]) -> list[_Frame]:
    """message_start, then per block content_block_start (a ping after the first), its deltas and
    content_block_stop, then message_delta (stop_reason, output_tokens) and message_stop."""
    start = _anthropic_reply(a) | {"content": [], "stop_reason": None}
    start["usage"] = {
        "input_tokens": a.prompt,
        "output_tokens": 1,
    }  # as Anthropic: the final count comes last
    frames: list[_Frame] = [("meta", _sse({"type": "message_start", "message": start}, "message_start"))]
    for index, block in enumerate(_anthropic_blocks(a)):
        if block["type"] == "text":
            opening = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": w} for w in _words(a.text)]
        else:
            opening = block | {"input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": p}
                for p in _slices(jsonlib.dumps(block["input"]))
            ]
        event = {"type": "content_block_start", "index": index, "content_block": opening}
        frames.append(("meta", _sse(event, "content_block_start")))
        if index == 0:
            frames.append(("meta", _sse({"type": "ping"}, "ping")))
        frames += [("content", _sse({"type": "content_block_delta", "index": index, "delta": d},
                                    "content_block_delta")) for d in deltas]  # fmt: skip
        frames.append(("meta", _sse({"type": "content_block_stop", "index": index}, "content_block_stop")))
    stop = {"stop_reason": _ANTHROPIC_STOP[a.finish], "stop_sequence": None}
    end = {"type": "message_delta", "delta": stop, "usage": {"output_tokens": a.completion}}
    frames.append(("tail", _sse(end, "message_delta")))
    return [*frames, ("tail", _sse({"type": "message_stop"}, "message_stop"))]


def _ollama_message(a: _Answer, text: str, call: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if call and a.call is not None:
        message["tool_calls"] = [{"function": {"name": a.call.name, "arguments": a.call.arguments}}]
    return {"model": a.model, "created_at": "2024-01-01T00:00:00Z", "message": message}


def _ollama_reply(a: _Answer) -> dict[str, Any]:
    return _ollama_message(a, a.text, True) | {
        "done": True, "done_reason": "length" if a.finish == "length" else "stop",
        "prompt_eval_count": a.prompt, "eval_count": a.completion,
    }  # fmt: skip


def _ollama_frames(a: _Answer, body: dict[str, Any]) -> list[_Frame]:
    """A line a word (``done: false``), a line with the whole tool call, a last line with
    ``done: true``, the done_reason and both counts."""
    frames: list[_Frame] = [("content", _ndjson(_ollama_message(a, w, False) | {"done": False}))
                            for w in _words(a.text)]  # fmt: skip
    if a.call is not None:
        frames.append(("content", _ndjson(_ollama_message(a, "", True) | {"done": False})))
    return [*frames, ("tail", _ndjson(_ollama_reply(a) | _ollama_message(a, "", False)))]


# --- what differs between the formats --------------------------------------------------------------


@dataclass(frozen=True)
class _Wire:
    """A chat path."""

    auth_header: str | None
    limit: Callable[[dict[str, Any]], Any]
    reply: Callable[[_Answer], dict[str, Any]]
    frames: Callable[[_Answer, dict[str, Any]], list[_Frame]]
    error: Callable[[int, str], dict[str, Any]]
    #: the in-stream error frame
    stream_error: Callable[[str], bytes]
    #: whether the request asks for a stream
    streams: Callable[[dict[str, Any]], bool]
    media_type: str = "text/event-stream"
    check: Callable[[dict[str, Any]], str | None] = field(default=lambda body: None)


@dataclass(frozen=True)
class _EmbedWire:
    """An embeddings path: ``reply(body, vectors, tokens)``."""

    auth_header: str | None
    error: Callable[[int, str], dict[str, Any]]
    reply: Callable[[dict[str, Any], list[list[float]], int], dict[str, Any]]


def _error_type(status: int) -> str:
    names = {
        400: "invalid_request",
        401: "authentication",
        403: "permission",
        404: "not_found",
        429: "rate_limit",
    }
    return names.get(status, "overloaded" if status == 529 else "api") + "_error"


def _blocks(message: Any) -> list[dict[str, Any]]:
    content = message.get("content") if isinstance(message, dict) else None
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _anthropic_check(body: dict[str, Any]) -> str | None:
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: field required"
    if any(m.get("role") not in ("user", "assistant") for m in body["messages"]):
        return "messages: roles must be 'user' or 'assistant'; use the top-level system field"
    offered: set[Any] = set()  # like Anthropic: a tool_result answers a tool_use of the message before
    for i, message in enumerate(body["messages"]):
        blocks = _blocks(message)
        for block in blocks:
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in offered:
                return (
                    f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{block.get('tool_use_id')}. Each `tool_result` block must have a corresponding "
                    "`tool_use` block in the previous message."
                )
        offered = {b.get("id") for b in blocks if b.get("type") == "tool_use"}
    return None


def _openai_check(body: dict[str, Any]) -> str | None:
    offered: set[Any] = set()  # like OpenAI: a tool message answers a call made before it
    for message in body["messages"]:
        if not isinstance(message, dict):
            continue
        calls = message.get("tool_calls") if message.get("role") == "assistant" else None
        offered |= {c.get("id") for c in calls if isinstance(c, dict)} if isinstance(calls, list) else set()
        if message.get("role") == "tool" and message.get("tool_call_id") not in offered:
            return (
                "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                "message with 'tool_calls'."
            )
    return None


def _openai_error(status: int, msg: str) -> dict[str, Any]:
    return {"error": {"message": msg, "type": _error_type(status), "code": None}}


_WIRES: dict[str, _Wire | _EmbedWire] = {
    "/v1/chat/completions": _Wire(
        auth_header="authorization",
        limit=lambda b: b.get("max_completion_tokens") or b.get("max_tokens"),
        reply=_openai_reply,
        frames=_openai_frames,
        error=_openai_error,
        stream_error=lambda msg: _sse(
            {"error": {"message": msg, "type": "server_error", "param": None, "code": None}}
        ),
        streams=lambda b: b.get("stream") is True,
        check=_openai_check,
    ),
    "/v1/messages": _Wire(
        auth_header="x-api-key",
        limit=lambda b: b.get("max_tokens"),
        reply=_anthropic_reply,
        frames=_anthropic_frames,
        error=lambda status, msg: {"type": "error", "error": {"type": _error_type(status), "message": msg}},
        stream_error=lambda msg: _sse(
            {"type": "error", "error": {"type": "overloaded_error", "message": msg}}, "error"
        ),
        streams=lambda b: b.get("stream") is True,
        check=_anthropic_check,
    ),
    "/api/chat": _Wire(
        auth_header=None,
        limit=lambda b: (b.get("options") or {}).get("num_predict"),
        reply=_ollama_reply,
        frames=_ollama_frames,
        error=lambda status, msg: {"error": msg},
        stream_error=lambda msg: _ndjson({"error": msg}),
        streams=lambda b: b.get("stream") is not False,  # Ollama streams unless told not to
        media_type="application/x-ndjson",
    ),
}


# --- embeddings ------------------------------------------------------------------------------------


def _embed_items(value: Any) -> list[tuple[str, int]] | None:
    """(what to hash, tokens) per input: strings, or OpenAI's token arrays; None if malformed."""
    if isinstance(value, str):
        return [(value, _tokens(value))] if value else None
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(t, int) for t in value):  # one token array
        return [(jsonlib.dumps(value), len(value))]
    items: list[tuple[str, int]] = []
    for item in value:
        if isinstance(item, list) and item and all(isinstance(t, int) for t in item):
            items.append((jsonlib.dumps(item), len(item)))
        elif isinstance(item, str) and item:
            items.append((item, _tokens(item)))
        else:
            return None
    return items


def _embed_problem(body: Any) -> str | None:
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return "model: field required"
    if _embed_items(body.get("input")) is None:
        return "input: a non-empty string, or a non-empty list of them, is required"
    dims = body.get("dimensions")
    if dims is not None and (
        isinstance(dims, bool) or not isinstance(dims, int) or not 0 < dims <= _MAX_DIMENSIONS
    ):
        return f"dimensions: a whole number from 1 to {_MAX_DIMENSIONS} is required"
    if body.get("encoding_format", "float") not in ("float", "base64"):
        return "encoding_format: must be 'float' or 'base64'"
    return None


def embedding(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """The fake's vector for ``text``: unit length, from sha256 (more digests for more dimensions),
    rounded to float32 so the float and base64 encodings carry the same numbers."""
    seed = text.encode()
    raw = b"".join(hashlib.sha256(seed + (i.to_bytes(4, "little") if i else b"")).digest()
                   for i in range(-(-dimensions // 8)))  # fmt: skip
    values = [n / 2**31 - 1.0 for n in struct.unpack(f"<{dimensions}I", raw[: dimensions * 4])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(v / norm for v in values))))


def _openai_embeddings(body: dict[str, Any], vectors: list[list[float]], tokens: int) -> dict[str, Any]:
    packed = body.get("encoding_format") == "base64"
    data = [{"object": "embedding", "index": i,
             "embedding": base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() if packed else v}
            for i, v in enumerate(vectors)]  # fmt: skip
    return {"object": "list", "data": data, "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip


def _ollama_embeddings(body: dict[str, Any], vectors: list[list[float]], tokens: int) -> dict[str, Any]:
    return {"model": body["model"], "embeddings": vectors, "total_duration": 0, "load_duration": 0,
            "prompt_eval_count": tokens}  # fmt: skip


_WIRES |= {
    "/v1/embeddings": _EmbedWire(auth_header="authorization", error=_openai_error, reply=_openai_embeddings),
    "/api/embed": _EmbedWire(
        auth_header=None, error=lambda status, msg: {"error": msg}, reply=_ollama_embeddings
    ),
}


# --- reading a conversation ------------------------------------------------------------------------


def _text(content: Any) -> str:
    """A message's own text (text parts; not images, tool calls or tool results)."""
    if content is None:
        return ""
    if isinstance(content, list):  # OpenAI parts, Anthropic blocks
        return "".join(str(block.get("text", "")) for block in content if isinstance(block, dict))
    return str(content)


def _said(message: dict[str, Any]) -> str:
    """Everything a message puts before the model: its text, tool results and tool calls."""
    content = message.get("content")
    said = _text(content)
    for block in content if isinstance(content, list) else []:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            said += _text(block.get("content"))
        elif isinstance(block, dict) and block.get("type") == "tool_use":
            said += jsonlib.dumps(block.get("input"))
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            arguments = function.get("arguments")
            said += arguments if isinstance(arguments, str) else jsonlib.dumps(arguments)
    return said


def _has_text(message: dict[str, Any]) -> bool:
    """A user turn the echo may answer: not one made only of tool results or images."""
    content = message.get("content")
    return not isinstance(content, list) or any(isinstance(b, dict) and "text" in b for b in content)


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
        chunk_delay: float = 0.0,
    ) -> None:
        #: when set, OpenAI and Anthropic requests without this key get a 401 (Ollama has no auth)
        self.api_key = api_key
        #: seconds to wait before every answer; may be changed at any time
        self.latency = latency
        #: seconds between the chunks of a streamed answer; may be changed at any time
        self.chunk_delay = chunk_delay
        self.port = port
        self._lock = threading.Lock()
        #: ``max_records`` keeps only the newest (a long benchmark); ``count`` still counts them all
        self._records: deque[ReceivedRequest] = deque(maxlen=max_records)
        self._counts: Counter[tuple[str, str | None]] = Counter()
        self._scripts: dict[str | None, deque[Fault]] = {}
        self._calls = itertools.count(1)
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
        self.chunk_delay = 0.0

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
        streamed = isinstance(wire, _Wire) and wire.streams(body)
        if fault is not None and (fault.kind not in _ANSWERS or (fault.kind in _BREAKS and not streamed)):
            response = await self._fault(request, wire, fault, body)
            if response is not None:
                return response
            fault = None
        if isinstance(wire, _EmbedWire):
            return JSONResponse(_embed(wire, body))
        answer = self._answer(wire, body, fault)
        if not streamed:
            return JSONResponse(wire.reply(answer))
        return self._streamed(request, wire, wire.frames(answer, body), fault)

    def _streamed(self, request: Request, wire: _Wire, frames: list[_Frame], fault: Fault | None) -> Response:
        """The stream, whole or broken as ``fault`` says."""
        if fault is None or fault.kind not in _BREAKS:
            chunks = [data for _, data in frames]
        else:
            chunks = _cut(frames, fault.after)
        if fault is not None and fault.kind == "stream_error":
            chunks.append(wire.stream_error(fault.message))
        drop = fault is not None and fault.kind == "break_stream"
        headers = {"cache-control": "no-cache"}
        return StreamingResponse(
            self._stream(request, chunks, drop), media_type=wire.media_type, headers=headers
        )

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
    def _invalid(body: Any, wire: _Wire | _EmbedWire) -> str | None:
        if isinstance(wire, _EmbedWire):
            return _embed_problem(body)
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

    def _answer(self, wire: _Wire, body: dict[str, Any], fault: Fault | None) -> _Answer:
        """The echo of the last user turn with text, or the scripted reply or tool call."""
        messages = [m for m in body["messages"] if isinstance(m, dict)]
        if fault is not None and fault.kind in ("reply", "tool_call"):
            text = fault.text
        else:
            users = [m for m in messages if m.get("role") == "user" and _has_text(m)]
            text = "echo: " + (_text(users[-1].get("content", "")) if users else "")
        prompt = "".join(_said(m) for m in messages) + _text(body.get("system", ""))
        if isinstance(body.get("tools"), list) and body["tools"]:
            prompt += jsonlib.dumps(body["tools"])
        if fault is not None and fault.kind == "tool_call":
            call = _Call(next(self._calls), fault.name, fault.body)
            return _Answer(body["model"], text, _tokens(prompt), _tokens(text + call.json), "tool", call)
        limit = wire.limit(body)
        cut = isinstance(limit, int) and len(text) > limit * 4
        if cut:
            text = text[: limit * 4]
        return _Answer(body["model"], text, _tokens(prompt), _tokens(text), "length" if cut else "stop")

    async def _stream(self, request: Request, chunks: list[bytes], drop: bool) -> AsyncIterator[bytes]:
        for i, data in enumerate(chunks):
            if i and self.chunk_delay > 0:
                await asyncio.sleep(self.chunk_delay)
            yield data
        if drop:
            await self._drop(request)

    async def _fault(
        self, request: Request, wire: _Wire | _EmbedWire, fault: Fault, body: dict[str, Any]
    ) -> Response | None:
        """The fault's answer, or None to answer normally (after a stall)."""
        if fault.kind == "status":
            headers = {} if fault.retry_after is None else {"retry-after": str(fault.retry_after)}
            return JSONResponse(wire.error(fault.code, fault.message), fault.code, headers=headers)
        if fault.kind == "stream_error":
            return JSONResponse(wire.error(500, fault.message), 500)
        if fault.kind == "garbage":
            return Response(b"<html><body>502 Bad Gateway</body></html>", media_type="text/html")
        if fault.kind == "json":
            return JSONResponse(fault.body)
        if fault.kind == "raw":
            return Response(fault.content, fault.code, media_type="application/json")
        if fault.kind == "huge":
            return StreamingResponse(_huge_body(fault.size), media_type="application/json")
        if fault.kind == "break_stream":
            whole = jsonlib.dumps(wire.reply(self._answer(wire, body, None)) if isinstance(wire, _Wire)
                                  else _embed(wire, body)).encode()  # fmt: skip
            return StreamingResponse(
                self._stream(request, [whole[: len(whole) // 2]], True), media_type="application/json"
            )
        if fault.kind == "reset":
            self._abort(request)
            await request.receive()  # returns once the server has noticed the disconnect
            return Response()  # never sent: the server drops writes to a closed connection
        if await self._client_left(request, fault.seconds):
            return Response()
        return None

    def _transport(self, request: Request) -> asyncio.Transport | None:
        assert self._server is not None
        client = request.scope.get("client")
        for connection in list(self._server.server_state.connections):
            if client is not None and getattr(connection, "client", None) == tuple(client):
                transport: asyncio.Transport = connection.transport
                return transport
        return None

    def _abort(self, request: Request) -> None:
        """Reset this request's TCP connection: SO_LINGER 0 turns the close into an RST."""
        transport = self._transport(request)
        if transport is not None:
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()

    async def _drop(self, request: Request) -> None:
        """Close this request's connection mid-answer: what was sent arrives, then the end of the
        connection, never the end of the body (an unfinished chunked body)."""
        transport = self._transport(request)
        if transport is not None:
            transport.close()  # flushes what was written, then FIN
            await request.receive()  # returns once the server has noticed the disconnect

    @staticmethod
    async def _client_left(request: Request, seconds: float) -> bool:
        """Wait ``seconds``, or less if the client hangs up first (so a stall never outlives it)."""
        try:
            async with asyncio.timeout(seconds):
                await request.receive()  # the body is read, so the next message is a disconnect
        except TimeoutError:
            return False
        return True


#: faults that are (or shape) a successful answer; the others replace it
_ANSWERS = frozenset({"reply", "tool_call", "break_stream", "stream_error"})
#: faults that break a stream
_BREAKS = frozenset({"break_stream", "stream_error"})


def _embed(wire: _EmbedWire, body: dict[str, Any]) -> dict[str, Any]:
    items = _embed_items(body["input"]) or []
    dims = body.get("dimensions") or EMBEDDING_DIMENSIONS
    return wire.reply(body, [embedding(text, dims) for text, _ in items], sum(n for _, n in items))


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
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    parser.add_argument("--api-key", default=None, help="require this key (OpenAI and Anthropic paths)")
    args = parser.parse_args(argv)
    fake = FakeProvider(
        api_key=args.api_key,
        latency=args.latency,
        port=args.port,
        max_records=10_000,
        chunk_delay=args.chunk_delay,
    )
    with fake, contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the way to stop it
        print(f"fake provider on {fake.base_url} (OpenAI-compatible base: {fake.base_url}/v1)", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    _main()
