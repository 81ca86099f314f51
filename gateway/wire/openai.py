"""OpenAI's Chat Completions and Embeddings wire formats, both ways, as pure functions.

Upstream, a worker renders a ``CompletionRequest`` as the body OpenAI or a compatible server (vLLM,
llama.cpp, LM Studio, Ollama's /v1) takes, and reads its answer, stream or vectors back; a body of
the wrong shape raises ``LookupError``, ``TypeError`` or ``ValueError`` (the caller's
bad_provider_response). Downstream, the API parses a client's OpenAI body into a ``JobRequest`` and
writes the job's result the way the official SDKs read it.

A field aigw cannot honour is refused, naming it (``UnsupportedFieldError``, 400), never dropped: a
client that asked for ``logprobs`` or ``n: 3`` must not quietly get something else. A field sent
with the value that asks for nothing (``null``, or its documented default) is accepted.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from gateway.chat import (
    Completion,
    CompletionRequest,
    Delta,
    EmbeddingRequest,
    Embeddings,
    ImagePart,
    Message,
    Part,
    ResponseFormat,
    StreamAccumulator,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    whole_number,
)
from gateway.errors import (
    BudgetExceededError,
    GatewayError,
    UnsupportedContentError,
    UnsupportedFieldError,
    ValidationError,
)
from gateway.jobs import JobRequest, JobResult, Usage
from gateway.validation import first_error

if TYPE_CHECKING:
    from gateway.config import ModelsFile

_Model = TypeVar("_Model", bound=BaseModel)

# --- upstream: a worker calling OpenAI or a compatible server ------------------------------------


def chat_payload(
    request: CompletionRequest,
    model: str,
    *,
    stream: bool,
    limit_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
) -> dict[str, Any]:
    """The body of ``POST /chat/completions``. ``limit_field`` exists because OpenAI's reasoning
    models take only ``max_completion_tokens`` while many compatible servers know only ``max_tokens``."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [_upstream_message(i, m) for i, m in enumerate(request.messages)],
        limit_field: request.max_tokens,
    }
    optional = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stop": list(request.stop) or None,
        "seed": request.seed,
        "user": request.user,
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    if request.tools:
        body["tools"] = [_upstream_tool(tool) for tool in request.tools]
        if request.tool_choice is not None:
            body["tool_choice"] = _upstream_tool_choice(request.tool_choice)
    if request.response_format is not None and request.response_format.type != "text":
        body["response_format"] = _upstream_response_format(request.response_format)
    if stream:
        # without include_usage OpenAI streams no token counts at all
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _upstream_message(index: int, message: Message) -> dict[str, Any]:
    if message.role == "tool":
        _text_only(index, message)
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text}
    if message.role == "assistant":
        _text_only(index, message)
        out: dict[str, Any] = {"role": "assistant", "content": message.text or None}
        if message.tool_calls:
            out["tool_calls"] = [_wire_tool_call(call) for call in message.tool_calls]
        return out
    if message.role == "system":
        return {"role": "system", "content": message.text}
    return {"role": "user", "content": _upstream_content(message.content)}


def _text_only(index: int, message: Message) -> None:
    """OpenAI takes images in user messages only; anything else would be a 400 from upstream."""
    if message.images:
        raise UnsupportedContentError(
            f"OpenAI's Chat Completions take images in user messages only, not in a {message.role} message",
            param=f"messages[{index}].content",
        )


def _upstream_content(content: str | list[Part]) -> str | list[dict[str, Any]]:
    """A plain string when the content is one text (what every compatible server takes), else parts."""
    if isinstance(content, str):
        return content
    if len(content) == 1 and isinstance(content[0], TextPart):
        return content[0].text
    return [_upstream_part(part) for part in content]


def _upstream_part(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    url = part.url if part.url is not None else f"data:{part.media_type};base64,{part.data}"
    return {"type": "image_url", "image_url": {"url": url}}


def _wire_tool_call(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def _upstream_tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    function["parameters"] = tool.parameters
    return {"type": "function", "function": function}


def _upstream_tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if choice.mode == "tool":
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode


def _upstream_response_format(fmt: ResponseFormat) -> dict[str, Any]:
    if fmt.type == "json_object":
        return {"type": "json_object"}
    spec: dict[str, Any] = {"name": fmt.name or "response", "schema": fmt.json_schema}
    if fmt.strict is not None:
        spec["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": spec}


def parse_chat(data: Any, default_model: str) -> Completion:
    """A Chat Completions answer. ``content`` is null when the model only calls tools or refuses:
    an empty text then, not a bad body. A refusal's words go in ``extra["refusal"]``."""
    body = _obj(data)
    choice = _obj(_list(body["choices"])[0])
    message = _obj(choice["message"])
    usage = _obj(body["usage"])
    calls = _opt_list(message.get("tool_calls"))
    extra: dict[str, str] = {}
    if isinstance(body.get("id"), str):
        extra["response_id"] = body["id"]
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        extra["refusal"] = message["refusal"]
    return Completion(
        text=_content_text(message.get("content")),
        input_tokens=_int(usage["prompt_tokens"]),
        output_tokens=_int(usage["completion_tokens"]),
        provider_model=_opt_str(body.get("model")) or default_model,
        finish_reason=_opt_str(choice.get("finish_reason")),
        extra=extra,
        tool_calls=tuple(_parse_tool_call(i, call) for i, call in enumerate(calls)),
    )


def _content_text(content: Any) -> str:
    """The answer's text: a string, null, or (some compatible servers) a list of text parts."""
    if content is None:
        return ""
    if not isinstance(content, list):
        return _str(content)
    parts = [_obj(part) for part in content]
    return "".join(_str(part["text"]) for part in parts if part.get("type") == "text")


def _parse_tool_call(position: int, raw: Any) -> ToolCall:
    call = _obj(raw)
    if call.get("type", "function") != "function":
        raise ValueError(f"tool call of type {call.get('type')!r}; only 'function' is known")
    function = _obj(call["function"])
    # some compatible servers leave the id out; the caller still needs one to answer the call
    call_id = _opt_str(call.get("id")) or f"call_{position}"
    return ToolCall(
        id=call_id, name=_str(function["name"]), arguments=_arguments(function.get("arguments")) or "{}"
    )


def _arguments(value: Any) -> str:
    """Arguments are JSON text; a few servers send the object itself, which is the same call."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return _str(value)


class StreamError(ValueError):
    """The server reported an error inside the stream (a chunk with ``"error"``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ChatStreamDecoder:
    """Decodes a streamed Chat Completions answer, one SSE event's ``data`` at a time.

    Each tool call's id and name are handed on once, with its first piece, even when a server
    repeats them on every chunk, so an encoder downstream can tell the first piece from the rest.
    """

    def __init__(self, default_model: str) -> None:
        self._default_model = default_model
        self._model: str | None = None
        self._id: str | None = None
        self._finish_reason: str | None = None
        self._usage: tuple[int, int] | None = None
        self._done = False
        self._started = False
        self._answer = StreamAccumulator()
        self._call_ids: dict[int, str] = {}
        self._call_names: set[int] = set()
        self._last_call: int | None = None

    @property
    def done(self) -> bool:
        """The server sent ``[DONE]``: the stream ended cleanly."""
        return self._done

    @property
    def started(self) -> bool:
        """Some delta was handed on: a retry would now send a second answer down the same stream."""
        return self._started

    @property
    def usage_reported(self) -> bool:
        """The server sent token counts (some compatible servers ignore ``include_usage``)."""
        return self._usage is not None

    def feed(self, data: str) -> list[Delta]:
        """The deltas in one event's ``data``; raises ``StreamError`` for an error chunk."""
        if self._done:
            raise ValueError("the stream sent data after [DONE]")
        if data.strip() == "[DONE]":
            self._done = True
            return []
        chunk = _obj(json.loads(data))
        if chunk.get("error") is not None:
            raise StreamError(_error_message(chunk["error"]))
        self._note(chunk)
        deltas = [delta for choice in _opt_list(chunk.get("choices")) for delta in self._choice(choice)]
        for delta in deltas:
            self._answer.add(delta)
        self._started = self._started or bool(deltas)
        return deltas

    def completion(self) -> Completion:
        """The whole answer; a ``ValueError`` if the stream did not end, or ended with no
        finish_reason (a server that dropped the connection mid-answer)."""
        if not self._done:
            raise ValueError("the stream has not ended ([DONE] not seen)")
        if self._finish_reason is None:
            raise ValueError("the stream ended without a finish_reason: the answer was cut short")
        input_tokens, output_tokens = self._usage or (0, 0)
        return self._answer.completion(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            provider_model=self._model or self._default_model,
            finish_reason=self._finish_reason,
            extra={"response_id": self._id} if self._id else {},
        )

    def _note(self, chunk: dict[str, Any]) -> None:
        if isinstance(chunk.get("model"), str) and chunk["model"]:
            self._model = chunk["model"]
        if isinstance(chunk.get("id"), str) and chunk["id"]:
            self._id = chunk["id"]
        if chunk.get("usage") is not None:
            usage = _obj(chunk["usage"])
            self._usage = (_int(usage["prompt_tokens"]), _int(usage["completion_tokens"]))

    def _choice(self, raw: Any) -> list[Delta]:
        choice = _obj(raw)
        if choice.get("index", 0) != 0:  # aigw asks for one choice (n=1)
            return []
        if choice.get("finish_reason") is not None:
            self._finish_reason = _str(choice["finish_reason"])
        delta = {} if choice.get("delta") is None else _obj(choice["delta"])
        out: list[Delta] = []
        if delta.get("content"):
            out.append(TextDelta(_str(delta["content"])))
        for call in _opt_list(delta.get("tool_calls")):
            piece = self._tool_piece(_obj(call))
            if piece is not None:
                out.append(piece)
        return out

    def _tool_piece(self, call: dict[str, Any]) -> ToolCallDelta | None:
        function = {} if call.get("function") is None else _obj(call["function"])
        call_id = _opt_str(call.get("id")) or None
        name = _opt_str(function.get("name")) or None
        arguments = _arguments(function.get("arguments"))
        index = self._call_index(call.get("index"), call_id)
        new_id = call_id if call_id is not None and index not in self._call_ids else None
        if new_id is not None:
            self._call_ids[index] = new_id
        new_name = name if name is not None and index not in self._call_names else None
        if new_name is not None:
            self._call_names.add(index)
        if new_id is None and new_name is None and not arguments:
            return None
        return ToolCallDelta(index=index, id=new_id, name=new_name, arguments=arguments)

    def _call_index(self, raw: Any, call_id: str | None) -> int:
        """The call's ``index``; a server that omits it is followed by id (a new id, a new call)."""
        if raw is not None:
            index = _int(raw)
            if index < 0:
                raise ValueError(f"tool call index {index} is negative")
        elif call_id is not None:
            known = {seen: i for i, seen in self._call_ids.items()}
            index = known.get(call_id, max(self._call_ids, default=-1) + 1)
        else:
            index = 0 if self._last_call is None else self._last_call
        self._last_call = index
        return index


def _error_message(error: Any) -> str:
    message = error.get("message") if isinstance(error, dict) else None
    if isinstance(message, str) and message:
        return message
    if isinstance(error, str) and error:
        return error
    return "the server reported an error in the stream"


def embeddings_payload(request: EmbeddingRequest, model: str) -> dict[str, Any]:
    """The body of ``POST /embeddings``; floats asked for, so any compatible server answers alike."""
    body: dict[str, Any] = {"model": model, "input": list(request.inputs), "encoding_format": "float"}
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    return body


def parse_embeddings(data: Any, default_model: str) -> Embeddings:
    """The vectors in input order (by ``index``), each as floats or base64 little-endian float32."""
    body = _obj(data)
    items = [_obj(item) for item in _list(body["data"])]
    ordered = sorted(items, key=lambda item: _int(item["index"]))
    if [item["index"] for item in ordered] != list(range(len(ordered))):
        raise ValueError("embedding indexes are not 0 to n-1, each once")
    usage = _obj(body["usage"])
    return Embeddings(
        vectors=[_vector(item["embedding"]) for item in ordered],
        input_tokens=_int(usage["prompt_tokens"]),
        provider_model=_opt_str(body.get("model")) or default_model,
    )


def _vector(value: Any) -> list[float]:
    if isinstance(value, str):
        raw = base64.b64decode(value, validate=True)
        if len(raw) % 4:
            raise ValueError(f"a base64 embedding of {len(raw)} bytes is not float32s")
        floats = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    else:
        floats = [_number(x) for x in _list(value)]
    if not floats or not all(math.isfinite(x) for x in floats):
        raise ValueError("an embedding must be a non-empty list of finite numbers")
    return floats


# --- downstream: the API speaking OpenAI to a client ---------------------------------------------

#: Chat Completions fields aigw honours.
_CHAT_FIELDS = frozenset(
    {
        "model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop",
        "seed", "user", "metadata", "tools", "tool_choice", "response_format", "stream",
        "stream_options",
    }
)  # fmt: skip

#: OpenAI's other Chat Completions fields, with the values that ask for nothing aigw would not do
#: (``null`` always does). Any other value is refused, naming the field.
_CHAT_REFUSED: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "parallel_tool_calls": (True,),
    "store": (False,),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "frequency_penalty": (0,),
    "presence_penalty": (0,),
    "logit_bias": ({},),
    "modalities": (["text"],),
    "functions": ([],),
    "service_tier": ("auto", "default"),
    "audio": (),
    "prediction": (),
    "reasoning_effort": (),
    "verbosity": (),
    "web_search_options": (),
    "function_call": (),
    "prompt_cache_key": (),
    "prompt_cache_retention": (),
    "safety_identifier": (),
}

_MESSAGE_FIELDS = frozenset({"role", "content", "tool_calls", "tool_call_id"})
#: what the SDK writes back when a client appends an answer's message to the conversation
_MESSAGE_REFUSED: dict[str, tuple[Any, ...]] = {
    "name": (),
    "refusal": (),
    "audio": (),
    "function_call": (),
    "annotations": ([],),
}
_ROLES: dict[str, Literal["system", "user", "assistant", "tool"]] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}
_EMBEDDING_FIELDS = frozenset({"model", "input", "dimensions", "user", "encoding_format"})


def job_request(body: Any) -> JobRequest:
    """The job a client's ``POST /v1/chat/completions`` body asks for. ``model`` is kept as given
    (the API resolves it); a system or developer message stays a system message in place."""
    data = _object_body(body, "messages")
    _refuse_fields(data, _CHAT_FIELDS, _CHAT_REFUSED)
    _stream_options(data)
    raw_messages = data["messages"]
    if not isinstance(raw_messages, list) or not raw_messages:
        raise ValidationError("messages: must be a non-empty list of messages")
    tools = _tools(data.get("tools"))
    max_tokens, limit_name = _max_tokens(data)
    fields = {
        "model": data["model"],
        "messages": [_message(i, raw) for i, raw in enumerate(raw_messages)],
        "max_tokens": max_tokens,
        "temperature": data.get("temperature"),
        "top_p": data.get("top_p"),
        "stop": _stop(data.get("stop")),
        "seed": data.get("seed"),
        "user": data.get("user"),
        "metadata": data.get("metadata"),
        "tools": tools,
        "tool_choice": _tool_choice(data.get("tool_choice"), bool(tools)),
        "response_format": _response_format(data.get("response_format")),
        "stream": data.get("stream"),
    }
    return _model(JobRequest, fields, "", {"max_tokens": limit_name})


def stream_options(body: Any) -> bool:
    """``stream_options.include_usage``: whether the stream ends with a usage chunk."""
    if not isinstance(body, dict):
        raise ValidationError("request body must be a JSON object")
    return _stream_options(body)


def _stream_options(body: dict[str, Any]) -> bool:
    if body.get("stream_options") is None:
        return False
    options = _require_obj(body["stream_options"], "stream_options")
    # aigw pads no chunks, which is what include_obfuscation false asks for
    _refuse_fields(options, {"include_usage"}, {"include_obfuscation": (False,)}, "stream_options")
    include = options.get("include_usage")
    if include is not None and not isinstance(include, bool):
        raise ValidationError("stream_options.include_usage: must be true or false")
    return bool(include)


def _object_body(body: Any, *required: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationError("request body must be a JSON object")
    model = body.get("model")
    if model is None:
        raise ValidationError("model: required")
    if not isinstance(model, str) or not model.strip():
        raise ValidationError("model: must be a non-empty string")
    for name in required:
        if body.get(name) is None:
            raise ValidationError(f"{name}: required")
    return body


def _max_tokens(body: dict[str, Any]) -> tuple[Any, str]:
    """Either name of the limit; both with different values cannot both be honoured."""
    legacy, current = body.get("max_tokens"), body.get("max_completion_tokens")
    if legacy is not None and current is not None and legacy != current:
        raise _cannot("max_completion_tokens", current, f"it differs from 'max_tokens' = {legacy}; send one")
    if current is not None:
        return current, "max_completion_tokens"
    return legacy, "max_tokens"


def _message(index: int, raw: Any) -> Message:
    where = f"messages[{index}]"
    item = _require_obj(raw, where)
    role = item.get("role")
    if role == "function":
        raise _cannot(f"{where}.role", role, "function messages are deprecated; send 'tool' messages")
    if not isinstance(role, str) or role not in _ROLES:
        raise ValidationError(f"{where}.role: must be one of {', '.join(_ROLES)}")
    _refuse_fields(item, _MESSAGE_FIELDS, _MESSAGE_REFUSED, where)
    calls = item.get("tool_calls")
    if calls is not None and role != "assistant":
        raise ValidationError(f"{where}.tool_calls: only an assistant message has tool calls")
    fields = {
        "role": _ROLES[role],
        "content": _content(item.get("content"), where),
        "tool_calls": _tool_calls(calls, where),
        "tool_call_id": item.get("tool_call_id"),
    }
    return _model(Message, fields, where)


def _content(raw: Any, where: str) -> str | list[Part]:
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, list):
        raise ValidationError(f"{where}.content: must be a string or a list of content parts")
    return [_part(f"{where}.content[{j}]", part) for j, part in enumerate(raw)]


def _part(where: str, raw: Any) -> Part:
    part = _require_obj(raw, where)
    kind = part.get("type")
    if kind == "text":
        _refuse_fields(part, {"type", "text"}, {}, where)
        if not isinstance(part.get("text"), str):
            raise ValidationError(f"{where}.text: must be a string")
        return TextPart(text=part["text"])
    if kind == "image_url":
        _refuse_fields(part, {"type", "image_url"}, {}, where)
        return _image(part.get("image_url"), f"{where}.image_url")
    if not isinstance(kind, str):
        raise ValidationError(f"{where}.type: must be 'text' or 'image_url'")
    raise _cannot(f"{where}.type", kind, "content parts are 'text' and 'image_url'")


def _image(raw: Any, where: str) -> ImagePart:
    """An image by URL: https or a data: URL (the provider that needs the bytes reads them out)."""
    image = {"url": raw} if isinstance(raw, str) else _require_obj(raw, where)
    # detail only tunes OpenAI's own image tokens; "auto" is what every other model does anyway
    _refuse_fields(image, {"url"}, {"detail": ("auto",)}, where)
    url = image.get("url")
    if not isinstance(url, str) or not url:
        raise ValidationError(f"{where}.url: must be a non-empty string")
    return _model(ImagePart, {"url": url}, where)


def _tool_calls(raw: Any, where: str) -> list[ToolCall] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ValidationError(f"{where}.tool_calls: must be a list")
    return [_tool_call(f"{where}.tool_calls[{k}]", call) for k, call in enumerate(raw)] or None


def _tool_call(where: str, raw: Any) -> ToolCall:
    call = _require_obj(raw, where)
    if call.get("type", "function") != "function":
        raise _cannot(f"{where}.type", call.get("type"), "tool calls are of type 'function'")
    _refuse_fields(call, {"id", "type", "function"}, {}, where)
    function = _require_obj(call.get("function"), f"{where}.function")
    _refuse_fields(function, {"name", "arguments"}, {}, f"{where}.function")
    fields = {"id": call.get("id"), "name": function.get("name"), "arguments": function.get("arguments")}
    return _model(ToolCall, fields, where, {"name": "function.name", "arguments": "function.arguments"})


def _tools(raw: Any) -> list[Tool] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ValidationError("tools: must be a list")
    return [_tool(f"tools[{i}]", tool) for i, tool in enumerate(raw)] or None


def _tool(where: str, raw: Any) -> Tool:
    tool = _require_obj(raw, where)
    kind = tool.get("type")
    if kind != "function":
        if isinstance(kind, str):
            raise _cannot(f"{where}.type", kind, "tools are of type 'function'")
        raise ValidationError(f"{where}.type: must be 'function'")
    _refuse_fields(tool, {"type", "function"}, {}, where)
    function = _require_obj(tool.get("function"), f"{where}.function")
    # strict asks the model to guarantee the schema, which aigw cannot promise for every provider
    _refuse_fields(function, {"name", "description", "parameters"}, {"strict": (False,)}, f"{where}.function")
    fields = {k: function.get(k) for k in ("name", "description", "parameters")}
    return _model(Tool, fields, f"{where}.function")


_TOOL_CHOICE_MODES: dict[str, Literal["auto", "none", "required"]] = {
    "auto": "auto",
    "none": "none",
    "required": "required",
}


def _tool_choice(raw: Any, has_tools: bool) -> ToolChoice | None:
    """``auto`` or ``none`` with no tools asks for nothing and is dropped; a forced choice is kept
    (and refused by the job request, which names it)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        mode = _TOOL_CHOICE_MODES.get(raw)
        if mode is None:
            raise ValidationError("tool_choice: must be 'auto', 'none', 'required' or a named function")
        return ToolChoice(mode=mode) if has_tools or mode == "required" else None
    choice = _require_obj(raw, "tool_choice")
    kind = choice.get("type")
    if kind != "function":
        if isinstance(kind, str):
            raise _cannot("tool_choice.type", kind, "a named choice is of type 'function'")
        raise ValidationError("tool_choice.type: must be 'function'")
    _refuse_fields(choice, {"type", "function"}, {}, "tool_choice")
    function = _require_obj(choice.get("function"), "tool_choice.function")
    _refuse_fields(function, {"name"}, {}, "tool_choice.function")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise ValidationError("tool_choice.function.name: must be a non-empty string")
    return ToolChoice(mode="tool", name=name)


def _response_format(raw: Any) -> ResponseFormat | None:
    if raw is None:
        return None
    fmt = _require_obj(raw, "response_format")
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        _refuse_fields(fmt, {"type"}, {}, "response_format")
        return None if kind == "text" else ResponseFormat(type="json_object")
    if kind == "json_schema":
        _refuse_fields(fmt, {"type", "json_schema"}, {}, "response_format")
        spec = _require_obj(fmt.get("json_schema"), "response_format.json_schema")
        where = "response_format.json_schema"
        _refuse_fields(spec, {"name", "schema", "strict"}, {"description": ()}, where)
        if not isinstance(spec.get("schema"), dict):
            raise ValidationError(f"{where}.schema: must be an object (a JSON Schema)")
        fields = {"type": "json_schema", "name": spec.get("name"), "json_schema": spec["schema"]}
        fields["strict"] = spec.get("strict")
        return _model(ResponseFormat, fields, where, {"json_schema": "schema"})
    if isinstance(kind, str):
        raise _cannot("response_format.type", kind, "formats are 'text', 'json_object' and 'json_schema'")
    raise ValidationError("response_format.type: must be 'text', 'json_object' or 'json_schema'")


def _stop(raw: Any) -> list[Any] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list):
        raise ValidationError("stop: must be a string or a list of strings")
    return raw or None


def embeddings_job_request(body: Any) -> tuple[JobRequest, Literal["float", "base64"]]:
    """The job a client's ``POST /v1/embeddings`` body asks for, and how it wants the vectors."""
    data = _object_body(body, "input")
    _refuse_fields(data, _EMBEDDING_FIELDS, {})
    encoding = data.get("encoding_format")
    if encoding is not None and encoding not in ("float", "base64"):
        raise ValidationError("encoding_format: must be 'float' or 'base64'")
    fields = {
        "embed": _embed_inputs(data["input"]),
        "model": data["model"],
        "dimensions": data.get("dimensions"),
        "user": data.get("user"),
    }
    request = _model(JobRequest, fields, "", {"embed": "input"})
    return request, "base64" if encoding == "base64" else "float"


def _embed_inputs(raw: Any) -> list[Any]:
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list):
        raise ValidationError("input: must be a string or a list of strings")
    for i, text in enumerate(texts):
        if isinstance(text, list) or (isinstance(text, int) and not isinstance(text, bool)):
            raise _cannot("input", raw, "token-id arrays are not taken; send the texts")
        if not isinstance(text, str):
            raise ValidationError(f"input[{i}]: must be a string")
        if not text:
            raise ValidationError(f"input[{i}]: must not be empty")
    return texts


# --- downstream output ------------------------------------------------------------------------------

#: Other wire formats' words for why an answer ended, in OpenAI's (gateway.chat uses OpenAI's own).
_FINISH_REASONS = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_calls": "tool_calls",
    "tool_use": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "refusal": "content_filter",
}


def openai_finish_reason(reason: str | None, *, tool_calls: bool) -> str:
    """One of OpenAI's finish reasons, which clients switch on; an unknown word reads as ``stop``."""
    if reason is None:
        return "tool_calls" if tool_calls else "stop"
    return _FINISH_REASONS.get(reason, "stop")


def chat_response(
    *, job_id: str, created: int, model: str, result: JobResult, aigw: dict[str, Any]
) -> dict[str, Any]:
    """A ``chat.completion`` object; ``aigw`` carries aigw's own facts (the SDKs keep extra keys)."""
    calls = result.tool_calls or []
    message: dict[str, Any] = {
        "role": "assistant",
        "content": result.output or (None if calls else ""),
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = [_wire_tool_call(call) for call in calls]
    choice = {
        "index": 0,
        "message": message,
        "finish_reason": openai_finish_reason(result.finish_reason, tool_calls=bool(calls)),
        "logprobs": None,
    }
    return {
        "id": f"chatcmpl-{job_id}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": _usage(result.usage),
        "system_fingerprint": None,
        "aigw": aigw,
    }


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


class ChatStreamEncoder:
    """Writes a job's streamed answer as OpenAI's ``chat.completion.chunk`` server-sent events:
    ``start``, then one ``delta`` per delta, then ``finish`` (or ``error``)."""

    def __init__(self, *, job_id: str, created: int, model: str, include_usage: bool) -> None:
        self._base: dict[str, Any] = {
            "id": f"chatcmpl-{job_id}",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
        }
        self._include_usage = include_usage
        self._calls: set[int] = set()

    def start(self) -> bytes:
        return self._chunk({"role": "assistant", "content": "", "refusal": None})

    def delta(self, delta: Delta) -> bytes:
        """A content chunk, or a tool call's piece: index, id, type and name with its first piece
        (the fallbacks are the ones the job's recorded answer uses), only arguments after."""
        if isinstance(delta, TextDelta):
            return self._chunk({"content": delta.text})
        piece: dict[str, Any] = {"index": delta.index, "function": {"arguments": delta.arguments}}
        if delta.index not in self._calls:
            self._calls.add(delta.index)
            piece = {
                "index": delta.index,
                "id": delta.id or f"call_{delta.index}",
                "type": "function",
                "function": {"name": delta.name or "unknown", "arguments": delta.arguments},
            }
        return self._chunk({"tool_calls": [piece]})

    def finish(self, *, finish_reason: str | None, usage: Usage, aigw: dict[str, Any]) -> bytes:
        """The finish chunk (with ``aigw``), the usage chunk if asked for, and ``[DONE]``."""
        reason = openai_finish_reason(finish_reason, tool_calls=bool(self._calls))
        out = self._chunk({}, reason, aigw=aigw)
        if self._include_usage:
            out += _sse({**self._base, "choices": [], "usage": _usage(usage)})
        return out + b"data: [DONE]\n\n"

    def error(self, *, type: str, message: str) -> bytes:
        """An error event, and no ``[DONE]``: the SDKs raise ``APIError`` on it."""
        return _sse({"error": {"message": message, "type": type, "param": None, "code": type}})

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> bytes:
        chunk = {
            **self._base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self._include_usage:
            chunk["usage"] = None  # as OpenAI: null on every chunk but the last
        chunk.update(extra)
        return _sse(chunk)


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def error_body(error: GatewayError) -> dict[str, Any]:
    """OpenAI's error envelope: its ``type`` words by status, aigw's own type as ``code``."""
    return {
        "error": {
            "message": error.message,
            "type": _error_type(error),
            "param": getattr(error, "param", None),
            "code": error.type,
        }
    }


def _error_type(error: GatewayError) -> str:
    """The words OpenAI's API uses: a spent budget is its ``insufficient_quota``, any other 429 a
    rate limit on ``requests``."""
    status = error.http_status
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        spent = isinstance(error, BudgetExceededError) or error.type == BudgetExceededError.type
        return "insufficient_quota" if spent else "requests"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def embeddings_response(*, model: str, result: JobResult, encoding: str) -> dict[str, Any]:
    """The ``list`` of embeddings; base64 is the little-endian float32 bytes the SDKs decode."""
    if result.embeddings is None:
        raise ValueError("the job's result holds no embeddings")
    if encoding not in ("float", "base64"):
        raise ValueError(f"unknown embedding encoding {encoding!r}")
    data = [
        {"object": "embedding", "index": i, "embedding": _encode_vector(vector, encoding)}
        for i, vector in enumerate(result.embeddings)
    ]
    tokens = result.usage.input_tokens
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encode_vector(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def models_list(models: ModelsFile, created: int) -> dict[str, Any]:
    """``GET /v1/models``: the aliases a client may name, in models.yaml's order."""
    data = [
        {"id": alias, "object": "model", "created": created, "owned_by": "aigw"} for alias in models.models
    ]
    return {"object": "list", "data": data}


# --- helpers ------------------------------------------------------------------------------------


def _refuse_fields(
    data: Mapping[str, Any], accepted: frozenset[str] | set[str], refused: Mapping[str, tuple[Any, ...]],
    where: str = "",
) -> None:  # fmt: skip
    """``UnsupportedFieldError`` for the first field that is neither honoured nor harmless."""
    for name, value in data.items():
        if name in accepted:
            continue
        param = f"{where}.{name}" if where else name
        if name not in refused:
            raise _cannot(param, value, "it is not a field aigw knows")
        if not _asks_nothing(value, refused[name]):
            harmless = " or ".join(json.dumps(d) for d in refused[name]) or "null"
            raise _cannot(param, value, f"leave it out or send {harmless}")


def _cannot(param: str, value: Any, hint: str) -> UnsupportedFieldError:
    """The one refusal, naming the param path and the value."""
    return UnsupportedFieldError(f"aigw cannot honour '{param}' = {_shown(value)}: {hint}", param=param)


def _asks_nothing(value: Any, defaults: Sequence[Any]) -> bool:
    # False == 0 in Python: a boolean matches a boolean default only
    return value is None or any(
        value == d and isinstance(value, bool) == isinstance(d, bool) for d in defaults
    )


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _model(
    cls: type[_Model], fields: dict[str, Any], where: str, rename: Mapping[str, str] | None = None
) -> _Model:
    """``cls`` built from ``fields`` (None left out: the default), its first error a ValidationError
    naming the OpenAI param path (``rename`` maps aigw's field names to OpenAI's)."""
    try:
        return cls.model_validate({k: v for k, v in fields.items() if v is not None}, strict=True)
    except PydanticValidationError as exc:
        first = first_error(exc)
        loc = list(first.loc)
        if loc and isinstance(loc[0], str) and rename and loc[0] in rename:
            loc[0] = rename[loc[0]]
        path = _join(where, loc)
        message = first.message(missing="required")
        raise ValidationError(f"{path}: {message}" if path else message) from None


def _join(where: str, loc: Sequence[int | str]) -> str:
    path = where
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _require_obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(f"{where}: must be an object")
    return value


def _obj(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _opt_list(value: Any) -> list[Any]:
    return [] if value is None else _list(value)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


_int = whole_number


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)
