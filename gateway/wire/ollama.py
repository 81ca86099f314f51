"""Ollama's native API, upstream only: ``/api/chat`` (one JSON answer, or NDJSON lines when
streamed) and ``/api/embed``. No client speaks Ollama's format to aigw, so there is no downstream
half; the OpenAI and Anthropic modules carry both.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.chat import (
    Completion,
    CompletionRequest,
    Delta,
    EmbeddingRequest,
    Embeddings,
    Message,
    StreamAccumulator,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    whole_number,
)


class StreamError(ValueError):
    """An ``{"error": ...}`` line inside a stream: the server gave up part way."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def chat_payload(request: CompletionRequest, model: str, *, stream: bool) -> dict[str, Any]:
    options: dict[str, Any] = {"num_predict": request.max_tokens}
    for name in ("temperature", "top_p", "seed"):
        value = getattr(request, name)
        if value is not None:
            options[name] = value
    if request.stop:
        options["stop"] = list(request.stop)
    body: dict[str, Any] = {
        "model": model,
        "messages": [_message(m, request.messages) for m in request.messages],
        "stream": stream,
        "options": options,
    }
    if request.tool_choice is not None and request.tool_choice.mode in ("required", "tool"):
        # the pipeline never routes a forced tool call here (capabilities); never drop it silently
        raise ValueError("Ollama cannot be made to call a tool (tool_choice required or named)")
    if request.tools and (request.tool_choice is None or request.tool_choice.mode != "none"):
        # Ollama has no tool_choice: "none" is honoured by not offering the tools at all
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description or "", "parameters": t.parameters},
            }
            for t in request.tools
        ]
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        body["format"] = "json"
    elif fmt is not None and fmt.type == "json_schema":
        body["format"] = fmt.json_schema
    return body


def _message(message: Message, conversation: list[Message]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.text}
    images = [data for image in message.images if (data := image.as_data()) is not None]
    if len(images) != len(message.images):
        # Ollama takes image bytes only; the pipeline never routes an image URL here (capabilities)
        raise ValueError("Ollama takes images as base64 data, not URLs")
    if images:
        out["images"] = [b64 for _media_type, b64 in images]
    if message.tool_calls:
        out["tool_calls"] = [
            {"function": {"name": c.name, "arguments": _arguments(c.arguments)}} for c in message.tool_calls
        ]
    if message.role == "tool":
        name = _tool_name(message.tool_call_id, conversation)
        if name is not None:
            out["tool_name"] = name
    return out


def _tool_name(call_id: str | None, conversation: list[Message]) -> str | None:
    """The name of the tool a result answers (Ollama matches results by name, not by id)."""
    for message in conversation:
        for call in message.tool_calls or []:
            if call.id == call_id:
                return call.name
    return None


def _arguments(text: str) -> dict[str, Any]:
    value = json.loads(text or "{}")
    if not isinstance(value, dict):
        raise ValueError("tool call arguments must be a JSON object")
    return value


def _tool_calls(message: dict[str, Any], start: int = 0) -> tuple[ToolCall, ...]:
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise TypeError("tool_calls is not a list")
    out = []
    for i, call in enumerate(calls, start):
        function = call["function"]
        arguments = function.get("arguments", {})
        text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        out.append(ToolCall(id=f"call_{i}", name=_str(function["name"]), arguments=text))
    return tuple(out)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


_int = whole_number


def _finish(done_reason: Any, calls: tuple[ToolCall, ...]) -> str | None:
    if calls:
        return "tool_calls"
    return None if done_reason is None else _str(done_reason)


def parse_chat(data: Any, default_model: str) -> Completion:
    message = data["message"]
    calls = _tool_calls(message)
    return Completion(
        text=_str(message.get("content", "")),
        # Ollama omits prompt_eval_count when the whole prompt came from its cache.
        input_tokens=_int(data.get("prompt_eval_count", 0)),
        output_tokens=_int(data["eval_count"]),
        provider_model=_str(data.get("model") or default_model),
        finish_reason=_finish(data.get("done_reason"), calls),
        tool_calls=calls,
    )


class ChatStreamDecoder:
    """``/api/chat`` with ``stream: true``: one JSON object per line, the last with ``done: true``
    and the counts. Ollama sends a tool call whole, in one line."""

    def __init__(self, default_model: str) -> None:
        self.default_model = default_model
        self.done = False
        self.started = False
        self._answer = StreamAccumulator()
        self._calls = 0
        self._final: dict[str, Any] = {}

    def feed(self, line: str) -> list[Delta]:
        if not line.strip():
            return []
        data = json.loads(line)
        if not isinstance(data, dict):
            raise TypeError("a stream line is not a JSON object")
        if "error" in data:
            raise StreamError(str(data["error"]))
        deltas: list[Delta] = []
        message = data.get("message") or {}
        text = message.get("content") or ""
        if text:
            deltas.append(TextDelta(_str(text)))
        for call in _tool_calls(message, self._calls):
            deltas.append(ToolCallDelta(self._calls, call.id, call.name, call.arguments))
            self._calls += 1
        for delta in deltas:
            self._answer.add(delta)
        if data.get("done") is True:
            self.done = True
            self._final = data
        self.started = self.started or bool(deltas)
        return deltas

    def completion(self) -> Completion:
        if not self.done:
            raise ValueError("the stream ended before its final line (done: true)")
        final = self._final
        calls = self._answer.tool_calls()
        return self._answer.completion(
            input_tokens=_int(final.get("prompt_eval_count", 0)),
            output_tokens=_int(final.get("eval_count", 0)),
            provider_model=_str(final.get("model") or self.default_model),
            finish_reason=_finish(final.get("done_reason"), calls),
        )


def embed_payload(request: EmbeddingRequest, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "input": list(request.inputs)}
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    return body


def parse_embed(data: Any, default_model: str) -> Embeddings:
    vectors = data["embeddings"]
    if not isinstance(vectors, list):
        raise TypeError("embeddings is not a list")
    return Embeddings(
        vectors=[[float(x) for x in vector] for vector in vectors],
        input_tokens=_int(data.get("prompt_eval_count", 0)),
        provider_model=_str(data.get("model") or default_model),
    )
