"""Anthropic's Messages API, both ways, as pure functions over gateway.chat.

Upstream, a worker renders a ``CompletionRequest`` as a Messages body (``messages_payload``) and
reads the answer back, whole (``parse_message``) or streamed (``MessagesStreamDecoder``).
Downstream, the API parses a client's ``POST /v1/messages`` body into a ``JobRequest``
(``job_request``, ``count_tokens_request``) and writes the job's answer as Anthropic would
(``message_response``, ``MessagesStreamEncoder``, ``error_body``).

A field aigw cannot honour is refused (``UnsupportedFieldError`` naming Anthropic's param path),
never dropped: a client that asked for ``top_k`` or extended thinking and silently got neither
would trust an answer made without them. The one exception is ``cache_control``, a pure hint.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import ValidationError as PydanticValidationError

from gateway.chat import (
    Completion,
    CompletionRequest,
    Delta,
    ImagePart,
    Message,
    Part,
    StreamAccumulator,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    whole_number,
)
from gateway.errors import GatewayError, UnsupportedFieldError, ValidationError
from gateway.jobs import JobRequest, JobResult, Usage
from gateway.validation import first_error

#: Anthropic's stop reasons in OpenAI's words (gateway.chat's); any other passes through as it is.
_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
#: OpenAI's finish reasons in Anthropic's words, for the answers the API writes.
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
#: Every stop reason Anthropic's SDK knows: these pass through to a client unchanged.
_ANTHROPIC_STOP_REASONS = frozenset(_FINISH_REASONS)

_Mode = Literal["auto", "none", "required", "tool"]
_TOOL_CHOICES: dict[_Mode, str] = {"auto": "auto", "required": "any", "tool": "tool", "none": "none"}
_TOOL_MODES: dict[str, _Mode] = {wire: mode for mode, wire in _TOOL_CHOICES.items()}

#: Anthropic's error type for each HTTP status aigw answers with.
_ERROR_TYPES = {
    400: "invalid_request_error",
    422: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _usage_input(usage: Mapping[str, Any]) -> int:
    """Input tokens as billed: the uncached ones plus those written to and read from the cache."""
    total = _count(usage["input_tokens"], "usage.input_tokens")
    for name in ("cache_creation_input_tokens", "cache_read_input_tokens"):
        if usage.get(name) is not None:
            total += _count(usage[name], f"usage.{name}")
    return total


def _count(value: Any, name: str) -> int:
    try:
        return whole_number(value)
    except TypeError:
        raise TypeError(f"{name} is not a whole number") from None


def _finish_reason(stop_reason: Any) -> str | None:
    if stop_reason is None:
        return None
    if not isinstance(stop_reason, str):
        raise TypeError("stop_reason is not a string")
    return _FINISH_REASONS.get(stop_reason, stop_reason)


def _stop_reason(finish_reason: str | None, *, tool_calls: bool) -> str:
    """Anthropic's word for a job's finish reason; an unknown or missing one reads as the turn's end
    (or as tool use when the answer calls tools), since the SDK accepts only its own words."""
    if finish_reason is not None and finish_reason in _ANTHROPIC_STOP_REASONS:
        return finish_reason
    return _STOP_REASONS.get(finish_reason or "") or ("tool_use" if tool_calls else "end_turn")


# --- upstream: a worker talking to Anthropic ---------------------------------------------------


def messages_payload(request: CompletionRequest, model: str, *, stream: bool) -> dict[str, Any]:
    """The Messages API body for ``request``. Anthropic takes the system prompt apart from the turns,
    and wants tool results as blocks of a user turn, so the conversation is regrouped here."""
    if request.seed is not None:
        raise UnsupportedFieldError("Anthropic's Messages API has no seed", param="seed")
    if request.response_format is not None and request.response_format.type != "text":
        raise UnsupportedFieldError(
            f"Anthropic's Messages API has no {request.response_format.type} response format",
            param="response_format",
        )
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens,
        "messages": _turns(request.messages),
    }
    system = [m.text for m in request.messages if m.role == "system" and m.text]
    if system:
        body["system"] = "\n\n".join(system)
    if request.temperature is not None:
        # Jobs accept OpenAI's 0-2 range; Anthropic refuses anything above 1 with a 400.
        body["temperature"] = min(request.temperature, 1.0)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.tools:
        body["tools"] = [_tool_json(tool) for tool in request.tools]
        if request.tool_choice is not None:
            body["tool_choice"] = _tool_choice_json(request.tool_choice)
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if stream:
        body["stream"] = True
    return body


def _turns(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """User and assistant turns of content blocks; a tool result is a block of a user turn, and
    consecutive turns of one role become one (Anthropic wants them alternating)."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = [_tool_result_json(message)] if message.role == "tool" else _blocks_json(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:  # a turn of one plain text block goes as a string: the smaller, usual form
        content = turn["content"]
        if len(content) == 1 and content[0].keys() == {"type", "text"} and content[0]["type"] == "text":
            turn["content"] = content[0]["text"]
    return turns


def _parts(message: Message) -> list[Part]:
    if isinstance(message.content, str):
        return [TextPart(text=message.content)] if message.content else []
    return list(message.content)


def _blocks_json(message: Message) -> list[dict[str, Any]]:
    # Anthropic refuses an empty text block, which an assistant turn of only tool calls would have.
    blocks = [_part_json(p) for p in _parts(message) if not (isinstance(p, TextPart) and not p.text)]
    for call in message.tool_calls or ():
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": _arguments(call)})
    return blocks


def _part_json(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    inline = part.as_data()
    if inline is not None:
        media_type, data = inline
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": part.url}}


def _tool_result_json(message: Message) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    if message.images:
        block["content"] = [_part_json(p) for p in _parts(message)]
    elif message.text:
        block["content"] = message.text
    if message.is_error:
        block["is_error"] = True
    return block


def _arguments(call: ToolCall) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic's ``input`` is; blank means no arguments
    (some OpenAI-compatible models write "" for a tool that takes none)."""
    if not call.arguments.strip():
        return {}
    try:
        value = json.loads(call.arguments)
    except ValueError:
        raise ValueError(f"tool call {call.id} ({call.name}): its arguments are not JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"tool call {call.id} ({call.name}): its arguments are not a JSON object")
    return value


def _tool_json(tool: Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        out["description"] = tool.description
    out["input_schema"] = tool.parameters
    return out


def _tool_choice_json(choice: ToolChoice) -> dict[str, Any]:
    if choice.mode == "tool":
        return {"type": "tool", "name": choice.name}
    return {"type": _TOOL_CHOICES[choice.mode]}


def parse_message(data: Any, default_model: str) -> Completion:
    """A Messages API answer as a Completion; a body of the wrong shape raises LookupError,
    TypeError or ValueError (the provider turns those into a BadProviderResponseError)."""
    if not isinstance(data, dict):
        raise TypeError("the answer is not a JSON object")
    blocks = data["content"]
    if not isinstance(blocks, list):
        raise TypeError("content is not a list of blocks")
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in blocks:
        if block["type"] == "text":
            texts.append(_text(block["text"], "a text block's text"))
        elif block["type"] == "tool_use":
            calls.append(_tool_call(block))
        # other blocks (thinking, which aigw never asks for) are not part of the answer
    usage = data["usage"]
    if not isinstance(usage, dict):
        raise TypeError("usage is not an object")
    model = data.get("model")
    response_id = data.get("id")
    return Completion(
        text="".join(texts),
        input_tokens=_usage_input(usage),
        output_tokens=_count(usage["output_tokens"], "usage.output_tokens"),
        provider_model=model if isinstance(model, str) and model else default_model,
        finish_reason=_finish_reason(data.get("stop_reason")),
        extra={"response_id": response_id} if isinstance(response_id, str) else {},
        tool_calls=tuple(calls),
    )


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} is not a string")
    return value


def _tool_call(block: Mapping[str, Any]) -> ToolCall:
    arguments = block["input"]
    if not isinstance(arguments, dict):
        raise TypeError("a tool_use block's input is not an object")
    return ToolCall(
        id=_text(block["id"], "a tool_use block's id"),
        name=_text(block["name"], "a tool_use block's name"),
        # not ASCII-escaped: the policies that scan outgoing text must see the characters themselves
        arguments=json.dumps(arguments, ensure_ascii=False),
    )


class StreamError(ValueError):
    """An ``error`` event inside a stream (``overloaded_error`` is the usual one): the answer ended
    there, and the provider decides from ``type`` whether another try may help."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message


class MessagesStreamDecoder:
    """Turns the server-sent events of a streamed Messages answer into gateway.chat deltas, and
    adds them up into the Completion the whole stream makes."""

    def __init__(self, default_model: str) -> None:
        self._default_model = default_model
        self._model = ""
        self._id = ""
        self._usage: dict[str, int] = {"input_tokens": 0}
        self._output_tokens = 0
        self._stop_reason: str | None = None
        self._started = False
        self._done = False
        #: content block index -> ordinal of its tool call among the answer's tool calls
        self._tool_blocks: dict[int, int] = {}
        self._accumulator = StreamAccumulator()

    @property
    def started(self) -> bool:
        return self._started

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, event: str, data: str) -> list[Delta]:
        """The deltas one event carries (none for most). Raises StreamError for an ``error`` event
        and ValueError or LookupError for an event that makes no sense where it came."""
        payload = json.loads(data) if data.strip() else {}
        if not isinstance(payload, dict):
            raise TypeError(f"{event} event data is not a JSON object")
        kind = event or str(payload.get("type", ""))
        if kind == "error":
            error = payload.get("error")
            error = error if isinstance(error, dict) else {}
            raise StreamError(str(error.get("type", "api_error")), str(error.get("message", "stream error")))
        if kind == "message_start":
            self._start(payload["message"])
            return []
        if kind in ("content_block_start", "content_block_delta", "content_block_stop", "message_delta"):
            if not self._started:
                raise ValueError(f"{kind} came before message_start")
            deltas = self._content(kind, payload)
            for delta in deltas:
                self._accumulator.add(delta)
            return deltas
        if kind == "message_stop":
            self._done = True
        # ping, and any event type Anthropic adds later (its docs ask clients to ignore those)
        return []

    def _start(self, message: Any) -> None:
        if not isinstance(message, dict):
            raise TypeError("message_start has no message object")
        self._started = True
        model, response_id = message.get("model"), message.get("id")
        self._model = model if isinstance(model, str) else ""
        self._id = response_id if isinstance(response_id, str) else ""
        self._take_usage(message.get("usage") or {})

    def _take_usage(self, usage: Any) -> None:
        """Counts in message_start and message_delta are running totals: a later one replaces."""
        if not isinstance(usage, dict):
            raise TypeError("usage is not an object")
        for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            if usage.get(name) is not None:
                self._usage[name] = _count(usage[name], f"usage.{name}")
        if usage.get("output_tokens") is not None:
            self._output_tokens = _count(usage["output_tokens"], "usage.output_tokens")

    def _content(self, kind: str, payload: dict[str, Any]) -> list[Delta]:
        if kind == "content_block_start":
            return self._block_start(_index(payload), payload["content_block"])
        if kind == "content_block_delta":
            return self._block_delta(_index(payload), payload["delta"])
        if kind == "message_delta":
            delta = payload.get("delta") or {}
            if not isinstance(delta, dict):
                raise TypeError("message_delta's delta is not an object")
            if delta.get("stop_reason") is not None:
                self._stop_reason = _finish_reason(delta["stop_reason"])
            self._take_usage(payload.get("usage") or {})
        return []

    def _block_start(self, index: int, block: Any) -> list[Delta]:
        if not isinstance(block, dict):
            raise TypeError("content_block_start has no content_block object")
        if block.get("type") == "text":
            text = _text(block.get("text", ""), "a text block's text")
            return [TextDelta(text)] if text else []
        if block.get("type") == "tool_use":
            ordinal = self._tool_blocks[index] = len(self._tool_blocks)
            arguments = block.get("input") or {}
            return [
                ToolCallDelta(
                    ordinal,
                    id=_text(block["id"], "a tool_use block's id"),
                    name=_text(block["name"], "a tool_use block's name"),
                    # Anthropic starts with {} and streams the input; a relay may send it whole here
                    arguments=json.dumps(arguments, ensure_ascii=False) if arguments else "",
                )
            ]
        return []  # a thinking block, or a kind aigw does not ask for: no part of the answer

    def _block_delta(self, index: int, delta: Any) -> list[Delta]:
        if not isinstance(delta, dict):
            raise TypeError("content_block_delta has no delta object")
        if delta.get("type") == "text_delta":
            return [TextDelta(_text(delta["text"], "a text_delta's text"))]
        if delta.get("type") == "input_json_delta":
            if index not in self._tool_blocks:
                raise ValueError(f"input_json_delta for block {index}, which is not a tool_use block")
            partial = _text(delta["partial_json"], "an input_json_delta's partial_json")
            return [ToolCallDelta(self._tool_blocks[index], arguments=partial)]
        return []  # thinking, signature and citation deltas: not part of the answer

    def completion(self) -> Completion:
        """The whole answer; ValueError when the stream has not ended with message_stop (cut short)."""
        if not self._done:
            raise ValueError("the stream ended before message_stop: the answer is incomplete")
        return self._accumulator.completion(
            input_tokens=sum(self._usage.values()),
            output_tokens=self._output_tokens,
            provider_model=self._model or self._default_model,
            finish_reason=self._stop_reason,
            extra={"response_id": self._id} if self._id else None,
        )


def _index(payload: Mapping[str, Any]) -> int:
    return _count(payload["index"], "index")


# --- downstream: the API speaking Anthropic to a client -----------------------------------------

#: Top-level fields aigw honours. ``cache_control`` is only a hint to Anthropic's prompt cache: it
#: changes the bill, never the answer, so it is accepted and ignored (here and on every block).
_BODY_FIELDS = frozenset(
    {"model", "max_tokens", "messages", "system", "stop_sequences", "temperature", "top_p", "tools",
     "tool_choice", "metadata", "stream", "cache_control"}
)  # fmt: skip
#: ``/v1/messages/count_tokens`` takes the same body without these two (as Anthropic's does).
_COUNT_FIELDS = _BODY_FIELDS - {"max_tokens", "stream"}
_TEXT_FIELDS = frozenset({"type", "text", "cache_control"})
_IMAGE_FIELDS = frozenset({"type", "source", "cache_control"})
_TOOL_USE_FIELDS = frozenset({"type", "id", "name", "input", "cache_control"})
_TOOL_RESULT_FIELDS = frozenset({"type", "tool_use_id", "content", "is_error", "cache_control"})
_TOOL_FIELDS = frozenset({"type", "name", "description", "input_schema", "cache_control"})
#: The content blocks each role may send; any other known block is misplaced (a bad value), and an
#: unknown one (document, thinking, search_result, server tool results...) is refused.
_ROLE_BLOCKS = {"user": ("text", "image", "tool_result"), "assistant": ("text", "tool_use")}
_KNOWN_BLOCKS = frozenset({"text", "image", "tool_result", "tool_use"})
#: JobRequest's field names in Anthropic's words, for the errors its validation raises.
_JOB_PARAMS = {"stop": "stop_sequences", "user": "metadata.user_id"}


def job_request(body: Any) -> JobRequest:
    """The job a ``POST /v1/messages`` body asks for. Anthropic's own rules hold (``max_tokens`` is
    required, temperature is 0-1); the model name is kept as given for the API to resolve."""
    return _job_request(body, counting=False)


def count_tokens_request(body: Any) -> JobRequest:
    """The job a ``POST /v1/messages/count_tokens`` body describes: the same conversation, with
    ``max_tokens`` 1 (the request's size is what is counted, and nothing is generated)."""
    return _job_request(body, counting=True)


def count_tokens_response(input_tokens: int) -> dict[str, Any]:
    return {"input_tokens": input_tokens}


def _job_request(body: Any, *, counting: bool) -> JobRequest:
    data = _object(body, "")
    _only(data, "", _COUNT_FIELDS if counting else _BODY_FIELDS)
    model = _string(_required(data, "model", ""), "model")
    if not model:
        raise ValidationError("model: must not be empty")
    max_tokens = 1 if counting else _max_tokens(_required(data, "max_tokens", ""))
    stream = False if counting or data.get("stream") is None else _boolean(data["stream"], "stream")
    tools = _tools(data.get("tools"))
    temperature, top_p = data.get("temperature"), data.get("top_p")
    try:
        return JobRequest(
            model=model,
            messages=_messages(_required(data, "messages", "")),
            system=_system(data.get("system")),
            max_tokens=max_tokens,
            temperature=None if temperature is None else _fraction(temperature, "temperature"),
            top_p=None if top_p is None else _fraction(top_p, "top_p"),
            stop=_stop_sequences(data.get("stop_sequences")),
            user=_metadata_user(data.get("metadata")),
            tools=tools or None,
            tool_choice=_tool_choice(data.get("tool_choice"), tools),
            stream=stream,
        )
    except PydanticValidationError as exc:
        raise _invalid(exc, "", _JOB_PARAMS) from None


def _messages(value: Any) -> list[Message]:
    turns = _list(value, "messages")
    if not turns:
        raise ValidationError("messages: must not be empty")
    out: list[Message] = []
    for i, turn in enumerate(turns):
        out.extend(_turn(turn, f"messages[{i}]"))
    return out


def _turn(value: Any, where: str) -> list[Message]:
    turn = _object(value, where)
    _only(turn, where, frozenset({"role", "content"}))
    role = turn.get("role")
    content = _required(turn, "content", where)
    if role == "system":  # the SDK's MessageParam takes a system turn of text too
        return [_message(where, role="system", content=_text_content(content, f"{where}.content"))]
    if not isinstance(role, str) or role not in _ROLE_BLOCKS:
        raise ValidationError(f"{where}.role: must be 'user' or 'assistant'")
    if isinstance(content, str):
        return [_message(where, role=role, content=content)]
    parts: list[Part] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    for j, block in enumerate(_list(content, f"{where}.content")):
        item = _block(block, f"{where}.content[{j}]", role)
        if isinstance(item, ToolCall):
            calls.append(item)
        elif isinstance(item, Message):
            results.append(item)
        else:
            parts.append(item)
    if role == "assistant":
        return [_message(where, role="assistant", content=parts, tool_calls=calls or None)]
    # a user turn's tool results answer the turn before it: they go first, as their own messages
    if parts or not results:
        results.append(_message(where, role="user", content=parts))
    return results


def _block(value: Any, where: str, role: str) -> Part | ToolCall | Message:
    block = _object(value, where)
    kind = _required(block, "type", where)
    if not isinstance(kind, str):
        raise ValidationError(f"{where}.type: must be a string")
    if kind not in _KNOWN_BLOCKS:
        raise UnsupportedFieldError(f"{where}.type: aigw cannot take a {kind!r} block", param=f"{where}.type")
    if kind not in _ROLE_BLOCKS[role]:
        raise ValidationError(f"{where}.type: a {kind!r} block cannot be in a {role} turn")
    if kind == "text":
        return _text_block(block, where)
    if kind == "image":
        return _image_block(block, where)
    if kind == "tool_use":
        return _tool_use_block(block, where)
    return _tool_result_block(block, where)


def _text_block(block: dict[str, Any], where: str) -> TextPart:
    _only(block, where, _TEXT_FIELDS)
    return TextPart(text=_string(_required(block, "text", where), f"{where}.text"))


def _image_block(block: dict[str, Any], where: str) -> ImagePart:
    _only(block, where, _IMAGE_FIELDS)
    at = f"{where}.source"
    source = _object(_required(block, "source", where), at)
    kind = source.get("type")
    try:
        if kind == "base64":
            _only(source, at, frozenset({"type", "media_type", "data"}))
            media_type = _string(_required(source, "media_type", at), f"{at}.media_type")
            return ImagePart(media_type=media_type, data=_string(_required(source, "data", at), f"{at}.data"))
        if kind == "url":
            _only(source, at, frozenset({"type", "url"}))
            return ImagePart(url=_string(_required(source, "url", at), f"{at}.url"))
    except PydanticValidationError as exc:
        raise _invalid(exc, at) from None
    if isinstance(kind, str):
        raise UnsupportedFieldError(
            f"{at}.type: aigw cannot take a {kind!r} image source", param=f"{at}.type"
        )
    raise ValidationError(f"{at}.type: must be 'base64' or 'url'")


def _tool_use_block(block: dict[str, Any], where: str) -> ToolCall:
    _only(block, where, _TOOL_USE_FIELDS)
    arguments = _object(_required(block, "input", where), f"{where}.input")
    try:
        return ToolCall(
            id=_string(_required(block, "id", where), f"{where}.id"),
            name=_string(_required(block, "name", where), f"{where}.name"),
            arguments=json.dumps(arguments, ensure_ascii=False),
        )
    except PydanticValidationError as exc:
        raise _invalid(exc, where, {"arguments": "input"}) from None


def _tool_result_block(block: dict[str, Any], where: str) -> Message:
    _only(block, where, _TOOL_RESULT_FIELDS)
    content = block.get("content")
    is_error = block.get("is_error")
    return _message(
        where,
        role="tool",
        tool_call_id=_string(_required(block, "tool_use_id", where), f"{where}.tool_use_id"),
        content="" if content is None else _text_content(content, f"{where}.content"),
        is_error=False if is_error is None else _boolean(is_error, f"{where}.is_error"),
    )


def _text_content(value: Any, where: str) -> str | list[Part]:
    """A string, or text blocks (a tool result's content, a system turn): nothing but text."""
    if isinstance(value, str):
        return value
    parts: list[Part] = []
    for k, item in enumerate(_list(value, where)):
        at = f"{where}[{k}]"
        kind = _object(item, at).get("type")
        if kind != "text":
            if isinstance(kind, str):
                raise UnsupportedFieldError(
                    f"{at}.type: only text can be here, not {kind!r}", param=f"{at}.type"
                )
            raise ValidationError(f"{at}.type: must be 'text'")
        parts.append(_text_block(item, at))
    return parts


def _message(where: str, **fields: Any) -> Message:
    try:
        return Message(**fields)
    except PydanticValidationError as exc:
        raise _invalid(exc, where) from None


def _system(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    content = _text_content(value, "system")
    # separate blocks (often split to place cache_control) are paragraphs of one prompt
    return "\n\n".join(p.text for p in content if isinstance(p, TextPart))


def _tools(value: Any) -> list[Tool]:
    if value is None:
        return []
    tools: list[Tool] = []
    for i, item in enumerate(_list(value, "tools")):
        where = f"tools[{i}]"
        tool = _object(item, where)
        kind = tool.get("type")
        if kind is not None and kind != "custom":
            raise UnsupportedFieldError(
                f"{where}.type: {kind!r} is one of Anthropic's server tools, which aigw cannot run; "
                "give a client tool (name, description, input_schema)",
                param=f"{where}.type",
            )
        _only(tool, where, _TOOL_FIELDS)
        description = tool.get("description")
        try:
            tools.append(
                Tool(
                    name=_string(_required(tool, "name", where), f"{where}.name"),
                    description=None if description is None else _string(description, f"{where}.description"),
                    parameters=_object(_required(tool, "input_schema", where), f"{where}.input_schema"),
                )
            )
        except PydanticValidationError as exc:
            raise _invalid(exc, where, {"parameters": "input_schema"}) from None
    return tools


def _tool_choice(value: Any, tools: list[Tool]) -> ToolChoice | None:
    if value is None:
        return None
    choice = _object(value, "tool_choice")
    kind = choice.get("type")
    if not isinstance(kind, str) or kind not in _TOOL_MODES:
        raise ValidationError("tool_choice.type: must be one of 'auto', 'any', 'tool', 'none'")
    allowed = {"type", "name"} if kind == "tool" else {"type"}
    _only(
        choice,
        "tool_choice",
        frozenset(allowed if kind == "none" else allowed | {"disable_parallel_tool_use"}),
    )
    single = choice.get("disable_parallel_tool_use")
    if single is not None and _boolean(single, "tool_choice.disable_parallel_tool_use"):
        raise UnsupportedFieldError(
            "tool_choice.disable_parallel_tool_use: aigw cannot hold every model to one tool call",
            param="tool_choice.disable_parallel_tool_use",
        )
    if not tools:
        if kind in ("auto", "none"):
            return None  # with no tools to call, either means what no tool_choice means
        raise ValidationError(f"tool_choice: {kind!r} needs 'tools'")
    if kind != "tool":
        return ToolChoice(mode=_TOOL_MODES[kind])
    name = _string(_required(choice, "name", "tool_choice"), "tool_choice.name")
    if name not in {t.name for t in tools}:
        raise ValidationError(f"tool_choice.name: {name!r} is not one of 'tools'")
    return ToolChoice(mode="tool", name=name)


def _metadata_user(value: Any) -> str | None:
    if value is None:
        return None
    metadata = _object(value, "metadata")
    _only(metadata, "metadata", frozenset({"user_id"}))
    user = metadata.get("user_id")
    return None if user is None else _string(user, "metadata.user_id")


def _stop_sequences(value: Any) -> list[str] | None:
    if value is None:
        return None
    items = _list(value, "stop_sequences")
    return [_string(s, f"stop_sequences[{i}]") for i, s in enumerate(items)] or None


def _max_tokens(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError("max_tokens: must be a whole number, at least 1")
    return value


def _fraction(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValidationError(f"{where}: must be a number from 0 to 1")
    return float(value)


# --- small readers of a client's JSON, each naming Anthropic's param path in its error ------------


def _at(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def _only(data: Mapping[str, Any], where: str, allowed: frozenset[str]) -> None:
    """Refuse any field with a value that aigw does not honour (a null is as good as absent)."""
    for key, value in data.items():
        if key not in allowed and value is not None:
            param = _at(where, key)
            raise UnsupportedFieldError(f"{param}: aigw does not support this field", param=param)


def _required(data: Mapping[str, Any], key: str, where: str) -> Any:
    value = data.get(key)
    if value is None:
        raise ValidationError(f"{_at(where, key)}: required")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(f"{where or 'body'}: must be an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValidationError(f"{where}: must be an array")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{where}: must be a string")
    return value


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{where}: must be true or false")
    return value


def _invalid(
    exc: PydanticValidationError, where: str, rename: Mapping[str, str] | None = None
) -> ValidationError:
    """gateway.chat's or JobRequest's own complaint, at Anthropic's param path."""
    first = first_error(exc)
    param = where
    for part in first.loc:
        param = _at(param, part if isinstance(part, int) else (rename or {}).get(part, part))
    return ValidationError(f"{param or 'body'}: {first.message()}")


# --- answers --------------------------------------------------------------------------------------


def message_response(*, job_id: str, model: str, result: JobResult, aigw: dict[str, Any]) -> dict[str, Any]:
    """A finished job as Anthropic's Message object; ``aigw`` carries aigw's own facts (job, cost) in
    an extra key, which Anthropic's SDK keeps and ignores."""
    content: list[dict[str, Any]] = [{"type": "text", "text": result.output}] if result.output else []
    for call in result.tool_calls or ():
        content.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": _input(call.arguments)}
        )
    return {
        "id": f"msg_{job_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(result.finish_reason, tool_calls=bool(result.tool_calls)),
        "stop_sequence": None,
        "usage": {"input_tokens": result.usage.input_tokens, "output_tokens": result.usage.output_tokens},
        "aigw": aigw,
    }


def _input(arguments: str) -> dict[str, Any]:
    """A tool call's arguments as Anthropic's ``input`` object; a model that wrote something else
    still gets its call through, with no input, rather than failing a finished job."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


class MessagesStreamEncoder:
    """Writes a job's streamed deltas as Anthropic's server-sent events: a text block, then a
    tool_use block per tool call, each closed when the next kind of content starts."""

    def __init__(self, *, job_id: str, model: str, input_tokens: int = 0) -> None:
        self._job_id = job_id
        self._model = model
        self._input_tokens = input_tokens
        self._next_block = 0
        #: the kind of the open block ("text" or "tool_use"), always the latest: index _next_block - 1
        self._open: str | None = None
        #: tool call index -> its block index
        self._tool_blocks: dict[int, int] = {}

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": f"msg_{self._job_id}",
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens, "output_tokens": 0},
        }
        return _sse("message_start", {"type": "message_start", "message": message})

    def delta(self, d: Delta) -> bytes:
        if isinstance(d, TextDelta):
            return self._text(d)
        return self._tool(d)

    def _text(self, d: TextDelta) -> bytes:
        if not d.text:
            return b""
        out = b""
        if self._open != "text":
            out = self._close() + self._begin({"type": "text", "text": ""})
        return out + self._block_delta(self._next_block - 1, {"type": "text_delta", "text": d.text})

    def _tool(self, d: ToolCallDelta) -> bytes:
        out = b""
        if d.index not in self._tool_blocks:
            start = {
                "type": "tool_use",
                "id": d.id or f"toolu_{d.index}",
                "name": d.name or "unknown",
                "input": {},
            }
            out = self._close() + self._begin(start)
            self._tool_blocks[d.index] = self._next_block - 1
        # a later piece of a call goes to its own block; that block is closed already only when
        # the deltas interleave calls, which Anthropic's SDK still adds up by index
        if d.arguments:
            piece = {"type": "input_json_delta", "partial_json": d.arguments}
            out += self._block_delta(self._tool_blocks[d.index], piece)
        return out

    def finish(self, *, finish_reason: str | None, usage: Usage, aigw: dict[str, Any]) -> bytes:
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {
                "stop_reason": _stop_reason(finish_reason, tool_calls=bool(self._tool_blocks)),
                "stop_sequence": None,
            },
            "usage": {"output_tokens": usage.output_tokens, "input_tokens": usage.input_tokens},
            "aigw": aigw,
        }
        return self._close() + _sse("message_delta", delta) + _sse("message_stop", {"type": "message_stop"})

    def error(self, *, type: str, message: str) -> bytes:
        """The stream's end after a failure: Anthropic's SDK raises on it (no message_stop follows)."""
        return _sse("error", {"type": "error", "error": {"type": type, "message": message}})

    def _begin(self, block: dict[str, Any]) -> bytes:
        index, self._next_block = self._next_block, self._next_block + 1
        self._open = block["type"]
        start = {"type": "content_block_start", "index": index, "content_block": block}
        return _sse("content_block_start", start)

    def _block_delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _sse("content_block_stop", {"type": "content_block_stop", "index": self._next_block - 1})


def error_body(error: GatewayError) -> dict[str, Any]:
    """aigw's error in Anthropic's envelope, its type chosen by status as Anthropic's would be."""
    status = error.http_status
    default = "invalid_request_error" if 400 <= status < 500 else "api_error"
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(status, default), "message": error.message}}
