"""gateway/wire/anthropic.py: Anthropic's Messages API both ways, with the official SDK as the judge
of what the API writes (through httpx2.MockTransport: the SDK speaks httpx2, not httpx)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import MessageParam, TextBlock, ToolParam, ToolUseBlock
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.chat import (
    CompletionRequest,
    Delta,
    ImagePart,
    Message,
    ResponseFormat,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
)
from gateway.errors import (
    AuthError,
    ForbiddenError,
    GatewayError,
    JobTimeoutError,
    NotFoundError,
    PayloadTooLargeError,
    ProviderError,
    RateLimitExceededError,
    UnavailableError,
    UnsupportedFieldError,
    ValidationError,
)
from gateway.jobs import JobRequest, JobResult, Usage
from gateway.wire.anthropic import (
    MessagesStreamDecoder,
    MessagesStreamEncoder,
    StreamError,
    count_tokens_request,
    count_tokens_response,
    error_body,
    job_request,
    message_response,
    messages_payload,
    parse_message,
)

WEATHER = Tool(
    name="get_weather",
    description="The weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
WEATHER_JSON = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PNG = "iVBORw0KGgo="


def _request(messages: list[Message], **fields: Any) -> CompletionRequest:
    return CompletionRequest(messages=messages, max_tokens=fields.pop("max_tokens", 100), **fields)


def _user(text: str) -> Message:
    return Message(role="user", content=text)


def _from_job(job: JobRequest) -> CompletionRequest:
    """What the worker's pipeline would send for a job (no policy changes anything here)."""
    assert job.max_tokens is not None
    return CompletionRequest(
        messages=job.all_messages(),
        max_tokens=job.max_tokens,
        temperature=job.temperature,
        top_p=job.top_p,
        stop=tuple(job.stop or ()),
        user=job.user,
        tools=tuple(job.tools or ()),
        tool_choice=job.tool_choice,
    )


def _result(**fields: Any) -> JobResult:
    defaults: dict[str, Any] = {
        "output": "It is sunny.",
        "model": "smart",
        "provider": "anthropic",
        "provider_model": "claude-x",
        "usage": Usage(input_tokens=12, output_tokens=7),
        "cost_usd": 0.0,
        "attempt": 1,
        "calls": [],
        "timings": {},
        "finish_reason": "stop",
    }
    return JobResult(**(defaults | fields))


def _body(**fields: Any) -> dict[str, Any]:
    return {"model": "smart", "max_tokens": 256, "messages": [{"role": "user", "content": "hi"}]} | fields


def _events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Server-sent events as (name, data); each of the encoder's events is one event and one data line."""
    events = []
    for chunk in raw.decode().split("\n\n"):
        if chunk:
            name, data = chunk.split("\n")
            events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


# --- upstream: messages_payload ------------------------------------------------------------------


def test_messages_payload_renders_every_field() -> None:
    request = _request(
        [Message(role="system", content="Be brief."), _user("Weather in Paris?")],
        max_tokens=300,
        temperature=0.4,
        top_p=0.9,
        stop=("END", "STOP"),
        user="user-42",
        tools=(WEATHER,),
        tool_choice=ToolChoice(mode="auto"),
        response_format=ResponseFormat(type="text"),
    )

    assert messages_payload(request, "claude-x", stream=False) == {
        "model": "claude-x",
        "max_tokens": 300,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "temperature": 0.4,
        "top_p": 0.9,
        "stop_sequences": ["END", "STOP"],
        "tools": [WEATHER_JSON],
        "tool_choice": {"type": "auto"},
        "metadata": {"user_id": "user-42"},
    }


def test_messages_payload_joins_system_messages_and_sets_stream_only_when_streaming() -> None:
    request = _request(
        [Message(role="system", content="One."), _user("hi"), Message(role="system", content="Two.")]
    )

    body = messages_payload(request, "claude-x", stream=True)

    assert body["system"] == "One.\n\nTwo."
    assert body["stream"] is True
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert "stream" not in messages_payload(request, "claude-x", stream=False)


@pytest.mark.parametrize(("given", "sent"), [(1.7, 1.0), (2.0, 1.0), (1.0, 1.0), (0.3, 0.3), (0.0, 0.0)])
def test_messages_payload_clamps_temperature_to_anthropics_range(given: float, sent: float) -> None:
    body = messages_payload(_request([_user("hi")], temperature=given), "claude-x", stream=False)
    assert body["temperature"] == sent


def test_messages_payload_leaves_out_what_is_not_set() -> None:
    body = messages_payload(_request([_user("hi")]), "claude-x", stream=False)
    assert set(body) == {"model", "max_tokens", "messages"}


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        (ToolChoice(mode="auto"), {"type": "auto"}),
        (ToolChoice(mode="required"), {"type": "any"}),
        (ToolChoice(mode="tool", name="get_weather"), {"type": "tool", "name": "get_weather"}),
        (ToolChoice(mode="none"), {"type": "none"}),
    ],
)
def test_messages_payload_maps_tool_choice(choice: ToolChoice, sent: dict[str, Any]) -> None:
    request = _request([_user("hi")], tools=(WEATHER,), tool_choice=choice)
    assert messages_payload(request, "claude-x", stream=False)["tool_choice"] == sent


def test_messages_payload_turns_tool_calls_and_results_into_blocks_of_alternating_turns() -> None:
    calls = [
        ToolCall(id="toolu_1", name="get_weather", arguments='{"city": "Paris"}'),
        ToolCall(id="toolu_2", name="get_weather", arguments='{"city": "Oslo"}'),
    ]
    request = _request(
        [
            _user("Weather in Paris and Oslo?"),
            Message(role="assistant", content="Let me look.", tool_calls=calls),
            Message(role="tool", tool_call_id="toolu_1", content="18C, sunny"),
            Message(role="tool", tool_call_id="toolu_2", content="no station", is_error=True),
            _user("And tomorrow?"),
        ],
        tools=(WEATHER,),
    )

    turns = messages_payload(request, "claude-x", stream=False)["messages"]

    assert turns == [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Oslo"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C, sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no station", "is_error": True},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]


def test_messages_payload_tool_results_without_a_following_user_turn_stand_alone() -> None:
    call = ToolCall(id="toolu_1", name="get_weather", arguments="{}")
    request = _request(
        [
            _user("Weather?"),
            Message(role="assistant", tool_calls=[call]),
            Message(role="tool", tool_call_id="toolu_1", content=""),
        ]
    )

    turns = messages_payload(request, "claude-x", stream=False)["messages"]

    # an assistant turn of only tool calls has no (empty) text block; an empty result has no content
    assert turns[1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}],
    }
    assert turns[2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]}


def test_messages_payload_sends_images_inline_or_by_url() -> None:
    content: list[Any] = [
        TextPart(text="What is in these?"),
        ImagePart(media_type="image/png", data=PNG),
        ImagePart(url=f"data:image/jpeg;base64,{PNG}"),
        ImagePart(url="https://example.com/cat.webp"),
    ]

    blocks = messages_payload(_request([Message(role="user", content=content)]), "c", stream=False)[
        "messages"
    ]

    assert blocks[0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.webp"}},
    ]


def test_messages_payload_sends_a_tool_result_with_an_image_as_blocks() -> None:
    result = Message(
        role="tool",
        tool_call_id="toolu_1",
        content=[TextPart(text="chart:"), ImagePart(media_type="image/png", data=PNG)],
    )

    turns = messages_payload(_request([_user("Plot it"), result]), "c", stream=False)["messages"]

    assert turns[0]["content"][1] == {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": [
            {"type": "text", "text": "chart:"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        ],
    }


@pytest.mark.parametrize("arguments", ["not json", "[1, 2]", '"text"', "{"])
def test_messages_payload_refuses_tool_arguments_that_are_not_a_json_object(arguments: str) -> None:
    call = ToolCall(id="toolu_1", name="get_weather", arguments=arguments)
    request = _request([_user("hi"), Message(role="assistant", tool_calls=[call])])
    with pytest.raises(ValueError, match="toolu_1"):
        messages_payload(request, "claude-x", stream=False)


def test_messages_payload_reads_blank_tool_arguments_as_none() -> None:
    call = ToolCall(id="toolu_1", name="now", arguments="  ")
    request = _request([_user("time?"), Message(role="assistant", tool_calls=[call])])
    assert messages_payload(request, "c", stream=False)["messages"][1]["content"][0]["input"] == {}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"seed": 7}, "seed"),
        ({"response_format": ResponseFormat(type="json_object")}, "response_format"),
        (
            {"response_format": ResponseFormat(type="json_schema", json_schema={"type": "object"})},
            "response_format",
        ),
    ],
)
def test_messages_payload_refuses_what_anthropic_cannot_do(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedFieldError) as caught:
        messages_payload(_request([_user("hi")], **fields), "claude-x", stream=False)
    assert caught.value.param == param


# --- upstream: parse_message ---------------------------------------------------------------------

MESSAGE: dict[str, Any] = {
    "id": "msg_01ABC",
    "type": "message",
    "role": "assistant",
    "model": "claude-x-20990101",
    "content": [
        {"type": "text", "text": "Let me check "},
        {"type": "text", "text": "the weather."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Zürich"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 20,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 1000,
        "output_tokens": 15,
    },
}


def test_parse_message_reads_text_tool_calls_usage_and_model() -> None:
    completion = parse_message(MESSAGE, "claude-x")

    assert completion.text == "Let me check the weather."
    assert completion.tool_calls == (
        ToolCall(id="toolu_1", name="get_weather", arguments='{"city": "Zürich"}'),  # not \u-escaped
    )
    assert (completion.input_tokens, completion.output_tokens) == (1120, 15)
    assert completion.provider_model == "claude-x-20990101"
    assert completion.finish_reason == "tool_calls"
    assert completion.extra == {"response_id": "msg_01ABC"}


def test_parse_message_without_cache_counts_or_model_uses_the_defaults() -> None:
    data = {"content": [{"type": "text", "text": "hi"}], "usage": {"input_tokens": 3, "output_tokens": 1}}

    completion = parse_message(data, "claude-default")

    assert (completion.input_tokens, completion.provider_model) == (3, "claude-default")
    assert completion.finish_reason is None
    assert completion.extra == {}


def test_parse_message_skips_blocks_that_are_not_part_of_the_answer() -> None:
    thinking = {"type": "thinking", "thinking": "hmm", "signature": "sig"}
    data = MESSAGE | {"content": [thinking, {"type": "text", "text": "42"}]}
    assert parse_message(data, "c").text == "42"


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("some_new_reason", "some_new_reason"),
        (None, None),
    ],
)
def test_parse_message_maps_stop_reasons_to_openais_words(
    stop_reason: str | None, finish_reason: str | None
) -> None:
    assert parse_message(MESSAGE | {"stop_reason": stop_reason}, "c").finish_reason == finish_reason


@pytest.mark.parametrize(
    "data",
    [
        [],
        "text",
        {"usage": MESSAGE["usage"]},
        MESSAGE | {"content": "hi"},
        MESSAGE | {"content": [{"text": "no type"}]},
        MESSAGE | {"content": [{"type": "text", "text": 5}]},
        MESSAGE | {"content": [{"type": "tool_use", "id": "t", "name": "n", "input": "{}"}]},
        MESSAGE | {"content": [{"type": "tool_use", "id": "", "name": "n", "input": {}}]},
        MESSAGE | {"usage": None},
        MESSAGE | {"usage": {"output_tokens": 1}},
        MESSAGE | {"usage": {"input_tokens": "3", "output_tokens": 1}},
        MESSAGE | {"usage": {"input_tokens": True, "output_tokens": 1}},
        MESSAGE | {"usage": {"input_tokens": -1, "output_tokens": 1}},
        MESSAGE | {"usage": {"input_tokens": 1, "output_tokens": 1, "cache_read_input_tokens": 1.5}},
        MESSAGE | {"stop_reason": 3},
    ],
)
def test_parse_message_refuses_a_body_of_the_wrong_shape(data: Any) -> None:
    with pytest.raises((LookupError, TypeError, ValueError)):
        parse_message(data, "c")


# --- upstream: MessagesStreamDecoder -------------------------------------------------------------

Event = tuple[str, dict[str, Any]]


def _block_start(index: int, block: dict[str, Any]) -> Event:
    return "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}


def _block_delta(index: int, delta: dict[str, Any]) -> Event:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}


def _text_delta(index: int, text: str) -> Event:
    return _block_delta(index, {"type": "text_delta", "text": text})


def _json_delta(index: int, partial: str) -> Event:
    return _block_delta(index, {"type": "input_json_delta", "partial_json": partial})


def _block_stop(index: int) -> Event:
    return "content_block_stop", {"type": "content_block_stop", "index": index}


def _tool_use(tool_id: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": "get_weather", "input": {}}


MESSAGE_START: Event = (
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_01XYZ",
            "type": "message",
            "role": "assistant",
            "model": "claude-x-20990101",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 25, "cache_read_input_tokens": 5, "output_tokens": 1},
        },
    },
)
MESSAGE_DELTA: Event = (
    "message_delta",
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 42},
    },
)
#: What Anthropic sends for a text and two tool calls, as its docs show it (pings included).
STREAM: list[Event] = [
    MESSAGE_START,
    ("ping", {"type": "ping"}),
    _block_start(0, {"type": "text", "text": ""}),
    _text_delta(0, "Okay, "),
    _text_delta(0, "checking."),
    _block_stop(0),
    _block_start(1, _tool_use("toolu_A")),
    _json_delta(1, ""),
    _json_delta(1, '{"ci'),
    _json_delta(1, 'ty": "Paris"}'),
    _block_stop(1),
    ("ping", {"type": "ping"}),
    _block_start(2, _tool_use("toolu_B")),
    _json_delta(2, '{"city": "Oslo"}'),
    _block_stop(2),
    MESSAGE_DELTA,
    ("message_stop", {"type": "message_stop"}),
]


def _feed(decoder: MessagesStreamDecoder, events: list[Event]) -> list[Delta]:
    return [delta for name, data in events for delta in decoder.feed(name, json.dumps(data))]


def test_decoder_turns_a_realistic_stream_into_deltas_and_a_completion() -> None:
    decoder = MessagesStreamDecoder("claude-default")

    deltas = _feed(decoder, STREAM)

    assert deltas == [
        TextDelta("Okay, "),
        TextDelta("checking."),
        ToolCallDelta(0, id="toolu_A", name="get_weather"),
        ToolCallDelta(0, arguments=""),
        ToolCallDelta(0, arguments='{"ci'),
        ToolCallDelta(0, arguments='ty": "Paris"}'),
        ToolCallDelta(1, id="toolu_B", name="get_weather"),  # the second tool call, though block 2
        ToolCallDelta(1, arguments='{"city": "Oslo"}'),
    ]
    assert decoder.started and decoder.done
    completion = decoder.completion()
    assert completion.text == "Okay, checking."
    assert completion.tool_calls == (
        ToolCall(id="toolu_A", name="get_weather", arguments='{"city": "Paris"}'),
        ToolCall(id="toolu_B", name="get_weather", arguments='{"city": "Oslo"}'),
    )
    assert (completion.input_tokens, completion.output_tokens) == (30, 42)
    assert completion.provider_model == "claude-x-20990101"
    assert completion.finish_reason == "tool_calls"
    assert completion.extra == {"response_id": "msg_01XYZ"}


def test_decoder_takes_the_input_count_a_message_delta_reports() -> None:
    decoder = MessagesStreamDecoder("c")
    usage = {"input_tokens": 31, "cache_read_input_tokens": 9, "output_tokens": 50}
    events = [
        *STREAM[:-2],
        ("message_delta", {"type": "message_delta", "delta": {}, "usage": usage}),
        STREAM[-1],
    ]

    _feed(decoder, events)

    completion = decoder.completion()
    assert (completion.input_tokens, completion.output_tokens) == (40, 50)
    assert completion.finish_reason is None


def test_decoder_gives_a_text_blocks_initial_text_and_ignores_what_is_not_the_answer() -> None:
    decoder = MessagesStreamDecoder("c")
    events = [
        MESSAGE_START,
        _block_start(0, {"type": "text", "text": "Hi"}),
        ("some_future_event", {}),
        _block_start(1, {"type": "thinking", "thinking": ""}),
        _block_delta(1, {"type": "thinking_delta", "thinking": "hm"}),
        _block_delta(0, {"type": "citations_delta", "citation": {}}),
    ]

    assert _feed(decoder, events) == [TextDelta("Hi")]


def test_decoder_refuses_a_truncated_stream() -> None:
    decoder = MessagesStreamDecoder("c")
    _feed(decoder, STREAM[:9])

    assert decoder.started and not decoder.done
    with pytest.raises(ValueError, match="message_stop"):
        decoder.completion()


def test_decoder_before_any_event_has_not_started() -> None:
    decoder = MessagesStreamDecoder("c")
    assert not decoder.started and not decoder.done
    with pytest.raises(ValueError):
        decoder.completion()


def test_decoder_raises_a_stream_error_for_an_error_event() -> None:
    decoder = MessagesStreamDecoder("c")
    _feed(decoder, STREAM[:4])
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

    with pytest.raises(StreamError) as caught:
        decoder.feed("error", json.dumps(error))

    assert (caught.value.type, caught.value.message) == ("overloaded_error", "Overloaded")
    assert isinstance(caught.value, ValueError)
    assert not decoder.done


@pytest.mark.parametrize(
    "events",
    [
        [STREAM[2]],  # a content block before message_start
        [
            STREAM[0],
            ("content_block_delta", {"index": 0, "delta": {"type": "input_json_delta", "partial_json": "{"}}),
        ],
        [STREAM[0], ("content_block_start", {"index": 0})],
        [STREAM[0], ("content_block_delta", {"index": "0", "delta": {"type": "text_delta", "text": "x"}})],
        [("message_start", {"message": "nope"})],
    ],
)
def test_decoder_refuses_events_that_make_no_sense_where_they_come(
    events: list[tuple[str, dict[str, Any]]],
) -> None:
    with pytest.raises((LookupError, TypeError, ValueError)):
        _feed(MessagesStreamDecoder("c"), events)


def test_decoder_reads_the_event_type_from_the_data_when_the_event_has_no_name() -> None:
    decoder = MessagesStreamDecoder("c")
    for _, data in STREAM:
        decoder.feed("", json.dumps(data))
    assert decoder.done and decoder.completion().output_tokens == 42


# --- downstream: job_request ---------------------------------------------------------------------


def test_job_request_takes_every_field_it_honours() -> None:
    body = {
        "model": "claude-sonnet",
        "max_tokens": 512,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "stop_sequences": ["END"],
        "temperature": 0.7,
        "top_p": 0.95,
        "tools": [WEATHER_JSON | {"cache_control": {"type": "ephemeral"}}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": False},
        "metadata": {"user_id": "user-42"},
        "stream": True,
        "cache_control": {"type": "ephemeral"},
    }

    job = job_request(body)

    assert job == JobRequest(
        model="claude-sonnet",
        max_tokens=512,
        system="Be brief.",
        messages=[_user("Weather in Paris?")],
        stop=["END"],
        temperature=0.7,
        top_p=0.95,
        tools=[WEATHER],
        tool_choice=ToolChoice(mode="auto"),
        user="user-42",
        stream=True,
    )


def test_job_request_with_the_least_it_needs() -> None:
    job = job_request(_body())
    assert job == JobRequest(model="smart", max_tokens=256, messages=[_user("hi")])


def test_job_request_accepts_null_for_any_field() -> None:
    honoured = [
        "system",
        "stop_sequences",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "metadata",
        "stream",
    ]
    refused = ["top_k", "thinking", "service_tier", "container", "mcp_servers", "unknown"]
    nulls = dict.fromkeys(honoured + refused)
    assert job_request(_body(**nulls)) == job_request(_body())


def test_job_request_puts_tool_results_before_the_rest_of_their_user_turn() -> None:
    body = _body(
        messages=[
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Zürich"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Also: tomorrow?", "cache_control": {"type": "ephemeral"}},
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [{"type": "text", "text": "no "}, {"type": "text", "text": "station"}],
                        "is_error": True,
                    },
                ],
            },
        ],
        tools=[WEATHER_JSON],
    )

    messages = job_request(body).messages

    assert messages == [
        _user("Weather in Paris and Oslo?"),
        Message(
            role="assistant",
            content=[TextPart(text="Checking.")],
            tool_calls=[
                ToolCall(id="toolu_1", name="get_weather", arguments='{"city": "Paris"}'),
                ToolCall(id="toolu_2", name="get_weather", arguments='{"city": "Zürich"}'),
            ],
        ),
        Message(role="tool", tool_call_id="toolu_1", content="18C"),
        Message(
            role="tool",
            tool_call_id="toolu_2",
            content=[TextPart(text="no "), TextPart(text="station")],
            is_error=True,
        ),
        Message(role="user", content=[TextPart(text="Also: tomorrow?")]),
    ]


def test_job_request_a_user_turn_of_only_tool_results_is_tool_messages_only() -> None:
    body = _body(
        messages=[
            {"role": "user", "content": "time?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]},
        ]
    )

    messages = job_request(body).messages

    assert messages is not None
    assert [m.role for m in messages] == ["user", "assistant", "tool"]
    assert messages[1].tool_calls == [ToolCall(id="toolu_1", name="now", arguments="{}")]
    assert messages[2] == Message(role="tool", tool_call_id="toolu_1", content="")


def test_job_request_takes_images_inline_or_by_url() -> None:
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {
            "type": "image",
            "source": {"type": "url", "url": "https://example.com/a.jpg"},
            "cache_control": None,
        },
        {"type": "text", "text": "Compare."},
    ]

    messages = job_request(_body(messages=[{"role": "user", "content": content}])).messages

    assert messages == [
        Message(
            role="user",
            content=[
                ImagePart(media_type="image/png", data=PNG),
                ImagePart(url="https://example.com/a.jpg"),
                TextPart(text="Compare."),
            ],
        )
    ]


def test_job_request_joins_system_blocks_and_ignores_their_cache_control() -> None:
    system = [
        {"type": "text", "text": "You are a librarian.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": "Today's catalogue: ..."},
    ]
    assert job_request(_body(system=system)).system == "You are a librarian.\n\nToday's catalogue: ..."


def test_job_request_takes_a_system_turn_among_the_messages() -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": [{"type": "text", "text": "Now in French."}]},
    ]
    assert job_request(_body(messages=messages)).messages == [
        _user("hi"),
        Message(role="system", content=[TextPart(text="Now in French.")]),
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, ToolChoice(mode="auto")),
        ({"type": "any"}, ToolChoice(mode="required")),
        ({"type": "any", "disable_parallel_tool_use": False}, ToolChoice(mode="required")),
        ({"type": "tool", "name": "get_weather"}, ToolChoice(mode="tool", name="get_weather")),
        ({"type": "none"}, ToolChoice(mode="none")),
    ],
)
def test_job_request_maps_tool_choice(choice: dict[str, Any], expected: ToolChoice) -> None:
    assert job_request(_body(tools=[WEATHER_JSON], tool_choice=choice)).tool_choice == expected


@pytest.mark.parametrize("choice", [{"type": "auto"}, {"type": "none"}])
def test_job_request_drops_a_tool_choice_that_means_nothing_without_tools(choice: dict[str, Any]) -> None:
    assert job_request(_body(tool_choice=choice)).tool_choice is None


def test_job_request_takes_a_custom_tool_without_a_description() -> None:
    tool = {"type": "custom", "name": "now", "input_schema": {"type": "object"}}
    assert job_request(_body(tools=[tool])).tools == [Tool(name="now", parameters={"type": "object"})]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"top_k": 5}, "top_k"),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking"),
        ({"service_tier": "auto"}, "service_tier"),
        ({"container": "container_1"}, "container"),
        ({"mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "x"}]}, "mcp_servers"),
        ({"context_management": {"edits": []}}, "context_management"),
        ({"output_config": {"effort": "high"}}, "output_config"),
        ({"frobnicate": True}, "frobnicate"),
        ({"metadata": {"user_id": "u", "team": "a"}}, "metadata.team"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]}, "tools[0].type"),
        ({"tools": [WEATHER_JSON, {"type": "bash_20250124", "name": "bash"}]}, "tools[1].type"),
        ({"tools": [WEATHER_JSON | {"strict": True}]}, "tools[0].strict"),
        (
            {"tools": [WEATHER_JSON], "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
            "tool_choice.disable_parallel_tool_use",
        ),
        ({"tools": [WEATHER_JSON], "tool_choice": {"type": "none", "name": "x"}}, "tool_choice.name"),
        ({"messages": [{"role": "user", "content": "hi", "name": "bob"}]}, "messages[0].name"),
    ],
)
def test_job_request_refuses_fields_aigw_cannot_honour(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedFieldError) as caught:
        job_request(_body(**fields))
    assert caught.value.param == param
    assert caught.value.http_status == 400


def _said(role: str, *content: Any) -> dict[str, Any]:
    """A body of one turn of ``role`` with ``content``."""
    return _body(messages=[{"role": role, "content": list(content)}])


#: where _turns puts its first block
_IN_TURN = "messages[1].content[0]"


def _turns(*content: Any) -> dict[str, Any]:
    """A body whose messages[1] (a user turn, after an assistant one) has ``content``."""
    return {
        "messages": [{"role": "assistant", "content": "Hello."}, {"role": "user", "content": list(content)}]
    }


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            _turns({"type": "document", "source": {"type": "text", "data": "x"}}),
            "messages[1].content[0].type",
        ),
        (
            _turns({"type": "text", "text": "x"}, {"type": "search_result", "source": "s"}),
            "messages[1].content[1].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": [{"type": "thinking", "thinking": "x", "signature": "s"}],
                    }
                ]
            },
            "messages[0].content[0].type",
        ),
        (
            _turns({"type": "image", "source": {"type": "file", "file_id": "f_1"}}),
            "messages[1].content[0].source.type",
        ),
        (
            _turns({"type": "text", "text": "x", "citations": [{"type": "char_location"}]}),
            "messages[1].content[0].citations",
        ),
        (
            _turns({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {}}]}),
            "messages[1].content[0].content[0].type",
        ),
        (
            _turns(
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    "transformations": {},
                }
            ),
            "messages[1].content[0].transformations",
        ),
        ({"system": [{"type": "text", "text": "x", "citations": []}]}, "system[0].citations"),
        ({"system": [{"type": "text", "text": "x"}, {"type": "image"}]}, "system[1].type"),
    ],
)
def test_job_request_refuses_content_aigw_cannot_honour(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedFieldError) as caught:
        job_request(_body(**fields))
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ([], "body"),
        ({"model": "smart", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        (_body(model=""), "model"),
        (_body(model=7), "model"),
        (_body(max_tokens=0), "max_tokens"),
        (_body(max_tokens=1.5), "max_tokens"),
        (_body(max_tokens=True), "max_tokens"),
        (_body(max_tokens=10_000_000), "max_tokens"),
        (_body(temperature=1.5), "temperature"),
        (_body(temperature="hot"), "temperature"),
        (_body(top_p=-0.1), "top_p"),
        (_body(stream="yes"), "stream"),
        (_body(stop_sequences="END"), "stop_sequences"),
        (_body(stop_sequences=["END", 5]), "stop_sequences[1]"),
        (_body(stop_sequences=[f"s{i}" for i in range(17)]), "stop_sequences"),
        (_body(metadata={"user_id": 5}), "metadata.user_id"),
        (_body(metadata={"user_id": "u" * 300}), "metadata.user_id"),
        (_body(system=5), "system"),
        (_body(messages=[]), "messages"),
        (_body(messages="hi"), "messages"),
        (_body(messages=[{"role": "robot", "content": "hi"}]), "messages[0].role"),
        (_body(messages=[{"role": ["user"], "content": "hi"}]), "messages[0].role"),
        (_body(messages=[{"role": "user"}]), "messages[0].content"),
        (_body(messages=[{"role": "user", "content": ""}]), "messages[0]"),
        (_body(messages=[{"role": "user", "content": []}]), "messages[0]"),
        (_body(messages=[{"role": "user", "content": [{"text": "no type"}]}]), "messages[0].content[0].type"),
        (_body(messages=[{"role": "user", "content": [{"type": "text"}]}]), "messages[0].content[0].text"),
        (
            _said("user", {"type": "tool_use", "id": "t", "name": "n", "input": {}}),
            "messages[0].content[0].type",
        ),
        (_said("assistant", {"type": "tool_result", "tool_use_id": "t"}), "messages[0].content[0].type"),
        (
            _said("assistant", {"type": "tool_use", "id": "t", "name": "n", "input": "{}"}),
            "messages[0].content[0].input",
        ),
        (
            _said("assistant", {"type": "tool_use", "id": "", "name": "n", "input": {}}),
            "messages[0].content[0].id",
        ),
        (_body(**_turns({"type": "tool_result", "tool_use_id": 5})), "messages[1].content[0].tool_use_id"),
        (
            _body(**_turns({"type": "tool_result", "tool_use_id": "t", "is_error": "no"})),
            _IN_TURN + ".is_error",
        ),
        (
            _body(
                **_turns({"type": "image", "source": {"type": "base64", "media_type": "text/x", "data": "x"}})
            ),
            _IN_TURN + ".source.media_type",
        ),
        (
            _body(**_turns({"type": "image", "source": {"type": "base64", "data": "x"}})),
            _IN_TURN + ".source.media_type",
        ),
        (_body(**_turns({"type": "image", "source": {"type": 3}})), _IN_TURN + ".source.type"),
        (_body(**_turns({"type": "image"})), _IN_TURN + ".source"),
        (_body(tools={"name": "x"}), "tools"),
        (_body(tools=[{"name": "bad name!", "input_schema": {}}]), "tools[0].name"),
        (_body(tools=[{"name": "x"}]), "tools[0].input_schema"),
        (_body(tools=[{"name": "x", "input_schema": []}]), "tools[0].input_schema"),
        (_body(tools=[WEATHER_JSON], tool_choice={"type": "sometimes"}), "tool_choice.type"),
        (_body(tools=[WEATHER_JSON], tool_choice={"type": {}}), "tool_choice.type"),
        (_body(tool_choice="auto"), "tool_choice"),
        (_body(tools=[WEATHER_JSON], tool_choice={"type": "tool"}), "tool_choice.name"),
        (_body(tools=[WEATHER_JSON], tool_choice={"type": "tool", "name": "other"}), "tool_choice.name"),
        (
            _body(tools=[WEATHER_JSON], tool_choice={"type": "any", "disable_parallel_tool_use": "no"}),
            "tool_choice.disable_parallel_tool_use",
        ),
        (_body(tool_choice={"type": "any"}), "tool_choice"),
    ],
)
def test_job_request_refuses_bad_values_naming_anthropics_param(body: Any, where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        job_request(body)
    assert caught.value.http_status == 422
    assert caught.value.message.startswith(f"{where}: "), caught.value.message


#: the words a body is made of, so generated bodies get past the first check often enough
_WORDS = ["type", "text", "role", "content", "source", "media_type", "data", "url", "id", "name", "input",
          "tool_use_id", "is_error", "user_id", "input_schema", "user", "assistant", "system", "image",
          "tool_use", "tool_result", "base64", "auto", "any", "tool", "none", "image/png"]  # fmt: skip
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-2, 2) | st.sampled_from(_WORDS),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_WORDS), inner, max_size=4),
    max_leaves=12,
)
_FIELDS = [
    "messages",
    "system",
    "tools",
    "tool_choice",
    "metadata",
    "stop_sequences",
    "temperature",
    "stream",
]


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(_FIELDS), value=_JSON)
def test_job_request_answers_any_json_with_a_job_or_a_gateway_error(field: str, value: Any) -> None:
    """Never a TypeError or a KeyError: whatever a client sends is a 4xx naming where, or a job."""
    try:
        job_request(_body(**{field: value}))
    except (ValidationError, UnsupportedFieldError) as exc:
        assert ": " in exc.message


def test_count_tokens_request_is_the_same_body_without_max_tokens_or_stream() -> None:
    body = {
        "model": "smart",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [WEATHER_JSON],
    }

    job = count_tokens_request(body)

    assert job == JobRequest(
        model="smart", system="Be brief.", messages=[_user("hi")], tools=[WEATHER], max_tokens=1
    )
    assert count_tokens_response(57) == {"input_tokens": 57}


@pytest.mark.parametrize("field", ["max_tokens", "stream"])
def test_count_tokens_request_refuses_what_only_a_message_takes(field: str) -> None:
    body = {"model": "smart", "messages": [{"role": "user", "content": "hi"}], field: 5}
    with pytest.raises(UnsupportedFieldError) as caught:
        count_tokens_request(body)
    assert caught.value.param == field


# --- both ways -----------------------------------------------------------------------------------

#: A conversation in the form messages_payload writes it, so the round trip is exact.
CONVERSATION: dict[str, Any] = {
    "model": "claude-x",
    "max_tokens": 700,
    "system": "You are terse.",
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this, and the weather in Zürich?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/b.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "A cat. Checking the weather."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Zürich", "days": [1, 2]},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "snow", "is_error": True},
                {"type": "text", "text": "Try again?"},
            ],
        },
    ],
    "temperature": 0.5,
    "top_p": 0.8,
    "stop_sequences": ["\n\nHuman:"],
    "tools": [WEATHER_JSON],
    "tool_choice": {"type": "tool", "name": "get_weather"},
    "metadata": {"user_id": "u-1"},
    "stream": True,
}


def test_a_clients_body_reaches_anthropic_as_it_was_sent() -> None:
    job = job_request(CONVERSATION)
    assert messages_payload(_from_job(job), "claude-x", stream=job.stream) == CONVERSATION


def test_anthropics_answer_reaches_the_client_as_it_was_given() -> None:
    completion = parse_message(MESSAGE, "claude-x")
    result = _result(
        output=completion.text,
        usage=Usage(input_tokens=completion.input_tokens, output_tokens=completion.output_tokens),
        finish_reason=completion.finish_reason,
        tool_calls=list(completion.tool_calls),
    )

    response = message_response(job_id="j1", model=MESSAGE["model"], result=result, aigw={"job_id": "j1"})

    assert response["content"] == [
        {"type": "text", "text": "Let me check the weather."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Zürich"}},
    ]
    assert response["stop_reason"] == MESSAGE["stop_reason"]
    assert response["usage"] == {"input_tokens": 1120, "output_tokens": 15}  # cache reads counted in


def test_the_encoders_stream_decodes_to_the_same_deltas() -> None:
    deltas: list[Delta] = [
        TextDelta("Sure, "),
        TextDelta("looking."),
        ToolCallDelta(0, id="toolu_A", name="get_weather"),
        ToolCallDelta(0, arguments='{"city":'),
        ToolCallDelta(0, arguments=' "Paris"}'),
        ToolCallDelta(1, id="toolu_B", name="get_weather", arguments='{"city": "Oslo"}'),
    ]
    encoder = MessagesStreamEncoder(job_id="j9", model="smart", input_tokens=11)
    raw = encoder.start() + b"".join(encoder.delta(d) for d in deltas)
    raw += encoder.finish(finish_reason="tool_calls", usage=Usage(input_tokens=11, output_tokens=30), aigw={})
    decoder = MessagesStreamDecoder("c")

    decoded = [d for name, data in _events(raw) for d in decoder.feed(name, json.dumps(data))]

    assert decoded == [
        TextDelta("Sure, "),
        TextDelta("looking."),
        ToolCallDelta(0, id="toolu_A", name="get_weather"),
        ToolCallDelta(0, arguments='{"city":'),
        ToolCallDelta(0, arguments=' "Paris"}'),
        ToolCallDelta(1, id="toolu_B", name="get_weather"),
        ToolCallDelta(1, arguments='{"city": "Oslo"}'),
    ]
    completion = decoder.completion()
    assert (completion.input_tokens, completion.output_tokens, completion.finish_reason) == (
        11,
        30,
        "tool_calls",
    )
    assert completion.provider_model == "smart" and completion.extra == {"response_id": "msg_j9"}


# --- downstream: message_response, MessagesStreamEncoder, error_body -----------------------------


@pytest.mark.parametrize(
    ("finish_reason", "tool_calls", "stop_reason"),
    [
        ("stop", False, "end_turn"),
        ("length", False, "max_tokens"),
        ("tool_calls", True, "tool_use"),
        ("content_filter", False, "refusal"),
        ("stop_sequence", False, "stop_sequence"),
        ("pause_turn", False, "pause_turn"),
        ("end_turn", False, "end_turn"),
        (None, False, "end_turn"),
        (None, True, "tool_use"),
        ("something_else", False, "end_turn"),
    ],
)
def test_message_response_speaks_anthropics_stop_reasons(
    finish_reason: str | None, tool_calls: bool, stop_reason: str
) -> None:
    calls = [ToolCall(id="t", name="n")] if tool_calls else None
    response = message_response(
        job_id="j", model="m", result=_result(finish_reason=finish_reason, tool_calls=calls), aigw={}
    )
    assert response["stop_reason"] == stop_reason


def test_message_response_shape() -> None:
    calls = [
        ToolCall(id="t1", name="get_weather", arguments='{"city": "Paris"}'),
        ToolCall(id="t2", name="x", arguments="oops"),
    ]

    response = message_response(
        job_id="abc", model="smart", result=_result(output="", tool_calls=calls), aigw={"job_id": "abc"}
    )

    assert response == {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": "smart",
        "content": [  # no empty text block; arguments that are not a JSON object become no input
            {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "t2", "name": "x", "input": {}},
        ],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 7},
        "aigw": {"job_id": "abc"},
    }


def _kind(event: dict[str, Any]) -> str | None:
    """The type of an event's delta or content block."""
    inner: dict[str, Any] = event.get("delta") or event.get("content_block") or {}
    return inner.get("type")


def test_encoder_opens_and_closes_blocks_as_the_kind_of_content_changes() -> None:
    encoder = MessagesStreamEncoder(job_id="j", model="smart")
    deltas: list[Delta] = [
        TextDelta("a"),
        TextDelta(""),
        ToolCallDelta(0, id="t0", name="f", arguments="{}"),
        ToolCallDelta(1, id="t1", name="g"),
        ToolCallDelta(1, arguments="{}"),
        TextDelta("b"),
    ]
    raw = encoder.start() + b"".join(encoder.delta(d) for d in deltas)
    raw += encoder.finish(
        finish_reason=None, usage=Usage(input_tokens=1, output_tokens=2), aigw={"cost_usd": 0}
    )

    shape = [(name, data.get("index"), _kind(data)) for name, data in _events(raw)]

    assert shape == [
        ("message_start", None, None),
        ("content_block_start", 0, "text"),
        ("content_block_delta", 0, "text_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, "tool_use"),
        ("content_block_delta", 1, "input_json_delta"),
        ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"),
        ("content_block_delta", 2, "input_json_delta"),
        ("content_block_stop", 2, None),
        ("content_block_start", 3, "text"),
        ("content_block_delta", 3, "text_delta"),
        ("content_block_stop", 3, None),
        ("message_delta", None, None),
        ("message_stop", None, None),
    ]
    message_delta = _events(raw)[-2][1]
    assert message_delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert message_delta["usage"] == {"output_tokens": 2, "input_tokens": 1}
    assert message_delta["aigw"] == {"cost_usd": 0}


def test_encoder_error_ends_the_stream_without_message_stop() -> None:
    encoder = MessagesStreamEncoder(job_id="j", model="smart")
    raw = encoder.error(type="overloaded_error", message="Overloaded")
    assert _events(raw) == [
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    ]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (UnsupportedFieldError("top_k: no", param="top_k"), "invalid_request_error"),
        (ValidationError("bad"), "invalid_request_error"),
        (AuthError("who?"), "authentication_error"),
        (ForbiddenError("no"), "permission_error"),
        (NotFoundError("none"), "not_found_error"),
        (PayloadTooLargeError("big"), "request_too_large"),
        (RateLimitExceededError("slow down", rule="rpm", retry_after=1), "rate_limit_error"),
        (GatewayError("oops"), "api_error"),
        (UnavailableError("redis down"), "overloaded_error"),
        (ProviderError("upstream broke", deployment="d"), "api_error"),
        (JobTimeoutError("too long"), "timeout_error"),
    ],
)
def test_error_body_names_anthropics_error_type_by_status(error: GatewayError, kind: str) -> None:
    assert error_body(error) == {"type": "error", "error": {"type": kind, "message": error.message}}


# --- the official SDK as the judge ---------------------------------------------------------------

Handler = Callable[[httpx2.Request], httpx2.Response]
SDK_WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def _client(handler: Handler) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url="http://aigw.test",
        api_key="x",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        _strict_response_validation=True,
    )


def _sse_response(raw: bytes) -> httpx2.Response:
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=raw)


def _tool_stream() -> bytes:
    encoder = MessagesStreamEncoder(job_id="s1", model="smart", input_tokens=9)
    deltas: list[Delta] = [
        TextDelta("Let me "),
        TextDelta("check."),
        ToolCallDelta(0, id="toolu_1", name="get_weather"),
        ToolCallDelta(0, arguments='{"city": "Pa'),
        ToolCallDelta(0, arguments='ris"}'),
    ]
    raw = encoder.start() + b"".join(encoder.delta(d) for d in deltas)
    return raw + encoder.finish(
        finish_reason="tool_calls", usage=Usage(input_tokens=9, output_tokens=21), aigw={"job_id": "s1"}
    )


def test_sdk_create_sends_a_body_job_request_takes_and_parses_message_response() -> None:
    seen: list[JobRequest] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/messages"
        seen.append(job_request(json.loads(request.content)))
        calls = [ToolCall(id="toolu_9", name="get_weather", arguments='{"city": "Oslo"}')]
        result = _result(output="Checking.", finish_reason="tool_calls", tool_calls=calls)
        return httpx2.Response(
            200, json=message_response(job_id="j7", model="smart", result=result, aigw={"job_id": "j7"})
        )

    messages: list[MessageParam] = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "text", "text": "And Oslo?"},
            ],
        },
    ]

    message = _client(handler).messages.create(
        model="smart",
        max_tokens=100,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=messages,
        tools=[SDK_WEATHER],
        tool_choice={"type": "any"},
        metadata={"user_id": "u-5"},
        stop_sequences=["END"],
        extra_body={"temperature": 0.2},  # this SDK's create() has no temperature of its own
    )

    assert [m.role for m in seen[0].messages or []] == ["user", "assistant", "tool", "user"]
    assert (seen[0].system, seen[0].user, seen[0].temperature, seen[0].stop) == (
        "Be brief.",
        "u-5",
        0.2,
        ["END"],
    )
    assert seen[0].tool_choice == ToolChoice(mode="required") and seen[0].tools == [WEATHER]
    assert message.id == "msg_j7" and message.model == "smart" and message.role == "assistant"
    text, call = message.content
    assert isinstance(text, TextBlock) and text.text == "Checking."
    assert isinstance(call, ToolUseBlock)
    assert (call.id, call.name, call.input) == ("toolu_9", "get_weather", {"city": "Oslo"})
    assert message.stop_reason == "tool_use" and message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 7)
    assert message.model_extra == {"aigw": {"job_id": "j7"}}  # aigw's own facts survive, tolerated


def test_sdk_stream_helper_yields_the_text_and_a_final_message_with_the_tool_input() -> None:
    client = _client(lambda request: _sse_response(_tool_stream()))

    with client.messages.stream(
        model="smart", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = list(stream.text_stream)
        final = stream.get_final_message()

    assert text == ["Let me ", "check."]
    assert final.id == "msg_s1"
    text_block, call = final.content
    assert isinstance(text_block, TextBlock) and text_block.text == "Let me check."
    assert isinstance(call, ToolUseBlock) and call.input == {"city": "Paris"} and call.id == "toolu_1"
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (9, 21)


def test_sdk_raw_stream_events_arrive_in_order() -> None:
    client = _client(lambda request: _sse_response(_tool_stream()))

    events = list(
        client.messages.create(
            model="smart", max_tokens=100, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )

    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_sdk_raises_on_an_error_event_in_the_stream() -> None:
    encoder = MessagesStreamEncoder(job_id="e1", model="smart")
    raw = (
        encoder.start()
        + encoder.delta(TextDelta("par"))
        + encoder.error(type="overloaded_error", message="Overloaded")
    )
    client = _client(lambda request: _sse_response(raw))
    seen = []

    with pytest.raises(anthropic.APIStatusError) as caught:  # the error comes mid-iteration
        for event in client.messages.create(
            model="smart", max_tokens=9, messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            seen.append(event.type)

    assert seen == ["message_start", "content_block_start", "content_block_delta"]
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


@pytest.mark.parametrize(
    ("error", "sdk_error"),
    [
        (AuthError("who?"), anthropic.AuthenticationError),
        (ForbiddenError("no"), anthropic.PermissionDeniedError),
        (NotFoundError("no such model"), anthropic.NotFoundError),
        (UnsupportedFieldError("top_k: not supported", param="top_k"), anthropic.BadRequestError),
        (ValidationError("max_tokens: required"), anthropic.UnprocessableEntityError),
        (RateLimitExceededError("slow down", rule="rpm", retry_after=3), anthropic.RateLimitError),
        (GatewayError("oops"), anthropic.InternalServerError),
        (UnavailableError("redis down"), anthropic.InternalServerError),
        (PayloadTooLargeError("too big"), anthropic.APIStatusError),
    ],
)
def test_sdk_maps_error_bodies_to_its_exceptions(
    error: GatewayError, sdk_error: type[anthropic.APIStatusError]
) -> None:
    client = _client(lambda request: httpx2.Response(error.http_status, json=error_body(error)))

    with pytest.raises(sdk_error) as caught:
        client.messages.create(model="smart", max_tokens=9, messages=[{"role": "user", "content": "hi"}])

    assert caught.value.status_code == error.http_status
    assert caught.value.body == error_body(error)
    assert error.message in caught.value.message


def test_sdk_count_tokens_sends_a_body_count_tokens_request_takes_and_parses_the_answer() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/messages/count_tokens"
        job = count_tokens_request(json.loads(request.content))
        assert job.system == "Be brief." and job.tools == [WEATHER]
        return httpx2.Response(200, json=count_tokens_response(1234))

    counted = _client(handler).messages.count_tokens(
        model="smart",
        system="Be brief.",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[SDK_WEATHER],
    )

    assert counted.input_tokens == 1234
