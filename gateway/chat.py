"""The conversation aigw carries, independent of any wire format.

Messages with content parts (text, images) and tool calls, the tools a model may call, the
sampling parameters, one answer (``Completion``), an embedding request and its vectors, and the
events of a streamed answer. Every wire format in ``gateway/wire/`` translates to and from these,
in both directions: the API parses a client's OpenAI or Anthropic body into a ``JobRequest`` made
of them, and a worker's provider renders a ``CompletionRequest`` into its own upstream format. So
an OpenAI-format request served by an Anthropic model is two translations through this module,
never a translation per pair of formats.

The shape follows OpenAI's Chat Completions (roles ``system``/``user``/``assistant``/``tool``,
``tool_calls`` on an assistant message, ``tool_call_id`` on a tool result), the most widely spoken
of the three; Anthropic's content blocks map onto it one to one. Finish reasons use OpenAI's
words too (``stop``, ``length``, ``tool_calls``, ``content_filter``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]

#: What a deployment may be asked to do beyond plain text (``Deployment.capabilities``).
Capability = Literal["images", "tools", "tool_choice", "json_mode", "json_schema", "seed", "embeddings"]

#: The request field each capability stands for, as a 400 names it.
CAPABILITY_FIELDS: dict[Capability, str] = {
    "images": "messages[].content[].image",
    "tools": "tools",
    "tool_choice": "tool_choice",
    "json_mode": "response_format",
    "json_schema": "response_format",
    "seed": "seed",
    "embeddings": "input",
}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextPart(_Frozen):
    type: Literal["text"] = "text"
    text: str


class ImagePart(_Frozen):
    """An image, by URL (``https:`` or a ``data:`` URL) or as base64 ``data`` with its media type."""

    type: Literal["image"] = "image"
    url: str | None = Field(None, max_length=20_000_000)
    media_type: str | None = Field(None, pattern=r"^image/[a-z0-9.+-]{1,40}$")
    data: str | None = Field(None, max_length=20_000_000)

    @model_validator(mode="after")
    def _one_source(self) -> ImagePart:
        if (self.url is None) == (self.data is None):
            raise ValueError("an image has either 'url' or 'data' (base64 with 'media_type')")
        if self.data is not None and self.media_type is None:
            raise ValueError("an image given as 'data' needs its 'media_type' (e.g. image/png)")
        return self

    def as_data(self) -> tuple[str, str] | None:
        """(media type, base64) when the image's bytes are in the request (``data`` or a data: URL)."""
        if self.data is not None and self.media_type is not None:
            return self.media_type, self.data
        url = self.url or ""
        head, sep, payload = url.partition(",")
        if url.startswith("data:") and sep and head.endswith(";base64"):
            return head[5:-7] or "application/octet-stream", payload
        return None


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ToolCall(_Frozen):
    """A call the model asks the caller to make; ``arguments`` is the JSON text the model wrote."""

    id: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=200)
    arguments: str = "{}"


class Message(_Frozen):
    """One turn. ``content`` is a string or a list of parts; an assistant turn may carry
    ``tool_calls`` (and then may have no text), a ``tool`` turn answers the call ``tool_call_id``."""

    role: Role
    content: str | list[Part] = ""
    tool_calls: list[ToolCall] | None = Field(None, max_length=128)
    tool_call_id: str | None = Field(None, min_length=1, max_length=200)
    #: a tool result that reports a failure (Anthropic's ``is_error``)
    is_error: bool = False

    @model_validator(mode="after")
    def _shape(self) -> Message:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only an assistant message has 'tool_calls'")
        if (self.tool_call_id is not None) != (self.role == "tool"):
            raise ValueError("a 'tool' message, and only one, names the 'tool_call_id' it answers")
        if self.role == "system" and self.images:
            raise ValueError("a system message holds text only")
        if not self.tool_calls and self.role != "tool" and not self.text and not self.images:
            raise ValueError("content must not be empty")
        return self

    @property
    def text(self) -> str:
        """The message's text: the string, or its text parts joined."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def images(self) -> list[ImagePart]:
        return [] if isinstance(self.content, str) else [p for p in self.content if isinstance(p, ImagePart)]

    def texts(self) -> Iterator[tuple[str, str]]:
        """(where, text) of everything in the message that would leave: text and tool arguments."""
        if isinstance(self.content, str):
            if self.content:
                yield "content", self.content
        else:
            for i, part in enumerate(self.content):
                if isinstance(part, TextPart) and part.text:
                    yield f"content[{i}].text", part.text
        for i, call in enumerate(self.tool_calls or []):
            yield f"tool_calls[{i}].arguments", call.arguments

    def map_text(self, change: Callable[[str], str]) -> Message:
        """The message with ``change`` applied to every text it sends (masking before a call)."""
        if isinstance(self.content, str):
            content: str | list[Part] = change(self.content) if self.content else self.content
        else:
            content = [p.model_copy(update={"text": change(p.text)}) if isinstance(p, TextPart) else p
                       for p in self.content]  # fmt: skip
        calls = None
        if self.tool_calls is not None:
            calls = [c.model_copy(update={"arguments": change(c.arguments)}) for c in self.tool_calls]
        return self.model_copy(update={"content": content, "tool_calls": calls})


class Tool(_Frozen):
    """A function the model may call: its name, what it does, and a JSON Schema of its arguments."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_.-]{1,64}$")
    description: str | None = Field(None, max_length=10_000)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolChoice(_Frozen):
    """``auto`` (the model decides), ``none``, ``required`` (some tool), or ``tool`` (the one named)."""

    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None

    @model_validator(mode="after")
    def _named(self) -> ToolChoice:
        if (self.name is not None) != (self.mode == "tool"):
            raise ValueError("tool_choice names a tool exactly when its mode is 'tool'")
        return self


class ResponseFormat(_Frozen):
    """Plain text, any JSON object (``json_object``), or JSON matching ``json_schema``."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = Field(None, max_length=64)
    json_schema: dict[str, Any] | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema(self) -> ResponseFormat:
        if (self.json_schema is not None) != (self.type == "json_schema"):
            raise ValueError("response_format has a 'json_schema' exactly when its type is 'json_schema'")
        return self

    @property
    def capability(self) -> Capability | None:
        return {"json_object": "json_mode", "json_schema": "json_schema"}.get(self.type)  # type: ignore[return-value]


@dataclass(frozen=True)
class CompletionRequest:
    """What one provider call sends, after the policies (masking, clamping) were applied."""

    messages: list[Message]
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    #: the end user the caller acts for (OpenAI ``user``, Anthropic ``metadata.user_id``)
    user: str | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None

    def needs(self) -> set[Capability]:
        return request_needs(self.messages, self.tools, self.response_format, self.seed, self.tool_choice)

    def input_bytes(self) -> int:
        """UTF-8 bytes of every text sent (an upper bound of its input tokens) and the tools."""
        size = sum(len(text.encode()) for m in self.messages for _, text in m.texts())
        return size + sum(len(t.model_dump_json().encode()) for t in self.tools)


def request_needs(
    messages: list[Message],
    tools: Any,
    response_format: ResponseFormat | None,
    seed: int | None,
    tool_choice: ToolChoice | None = None,
) -> set[Capability]:
    """The capabilities a deployment must have to honour a request with these fields."""
    needs: set[Capability] = set()
    if any(m.images for m in messages):
        needs.add("images")
    if tools:
        needs.add("tools")
        if tool_choice is not None and tool_choice.mode in ("required", "tool"):
            needs.add("tool_choice")  # forcing a call: not every API can
    if response_format is not None and response_format.capability is not None:
        needs.add(response_format.capability)
    if seed is not None:
        needs.add("seed")
    return needs


#: The offline estimate of a token: no tokenizer files are downloaded, so counts aigw makes itself
#: (the offline provider, count_tokens, a stream that broke) are about one token per 4 characters.
CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: about one token per 4 characters, at least 1."""
    return tokens_for_size(len(text))


def tokens_for_size(size: int) -> int:
    """``estimate_tokens`` of a text known only by its size (characters or UTF-8 bytes)."""
    return max(1, -(-size // CHARS_PER_TOKEN))


#: The most tokens one call may report on either side. No model's context comes near it; a larger
#: count is a broken or hostile answer, and would overflow the spend and token counters (HINCRBY).
MAX_TOKENS_PER_CALL = 1_000_000_000


@dataclass(frozen=True)
class Completion:
    """One answer. Its usage is checked here, once, for every provider kind: the budget and the
    tokens-per-minute window are charged from it, so a count that is negative, not a whole number
    or absurd is refused (``ValueError``) before anything is counted."""

    text: str
    input_tokens: int
    output_tokens: int
    provider_model: str
    finish_reason: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    tool_calls: tuple[ToolCall, ...] = ()

    def __post_init__(self) -> None:
        for name in ("input_tokens", "output_tokens"):
            check_token_count(name, getattr(self, name))


def whole_number(value: Any) -> int:
    """A JSON integer as read from a provider's answer. orjson reads an integer past 64 bits as a
    float, so an integral float counts (a count of 1e30 is then refused for its size, not its type)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def check_token_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS_PER_CALL:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise ValueError(
            f"usage {name} is {shown}; a call's token counts must be whole numbers "
            f"from 0 to {MAX_TOKENS_PER_CALL:,}"
        )


@dataclass(frozen=True)
class EmbeddingRequest:
    inputs: list[str]
    dimensions: int | None = None


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]
    input_tokens: int
    provider_model: str

    def __post_init__(self) -> None:
        check_token_count("input_tokens", self.input_tokens)


# --- streamed answers ------------------------------------------------------------------------------
#
# A provider's stream decoder turns its wire format into these deltas; the worker relays them to the
# API through Redis (gateway/job_stream.py) and the API's stream encoder writes them in the client's
# format. The start, end and error events around them are the worker's (gateway/job_stream.py).


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of tool call ``index``: its first delta carries ``id`` and ``name``, the rest carry
    more of ``arguments`` (JSON text, split anywhere)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


Delta = TextDelta | ToolCallDelta
#: How a provider hands a delta to whoever relays it, as soon as the delta is decoded.
Emit = Callable[[Delta], None]


def delta_to_dict(delta: Delta) -> dict[str, Any]:
    if isinstance(delta, TextDelta):
        return {"type": "text", "text": delta.text}
    out: dict[str, Any] = {"type": "tool_call", "index": delta.index, "arguments": delta.arguments}
    if delta.id is not None:
        out["id"] = delta.id
    if delta.name is not None:
        out["name"] = delta.name
    return out


def delta_from_dict(data: dict[str, Any]) -> Delta:
    if data["type"] == "text":
        return TextDelta(str(data["text"]))
    return ToolCallDelta(int(data["index"]), data.get("id"), data.get("name"), str(data.get("arguments", "")))


@dataclass
class StreamAccumulator:
    """The answer a stream of deltas adds up to (what the job's result records)."""

    parts: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, str]] = field(default_factory=dict)

    def add(self, delta: Delta) -> None:
        if isinstance(delta, TextDelta):
            self.parts.append(delta.text)
            return
        call = self.calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
        if delta.id:
            call["id"] = delta.id
        if delta.name:
            call["name"] = delta.name
        call["arguments"] += delta.arguments

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(id=c["id"] or f"call_{i}", name=c["name"] or "unknown", arguments=c["arguments"] or "{}")
            for i, c in sorted(self.calls.items())
        )

    def completion(
        self, *, input_tokens: int, output_tokens: int, provider_model: str, finish_reason: str | None,
        extra: dict[str, str] | None = None,
    ) -> Completion:  # fmt: skip
        return Completion(
            text=self.text,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            provider_model=provider_model,
            finish_reason=finish_reason,
            extra=extra or {},
            tool_calls=self.tool_calls(),
        )
