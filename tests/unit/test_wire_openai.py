"""gateway/wire/openai.py: both directions of OpenAI's wire formats, with the official ``openai`` SDK
as the judge of everything aigw writes to a client (served to it through ``httpx2.MockTransport``)."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam
from pydantic import BaseModel

from gateway.chat import (
    Completion,
    CompletionRequest,
    EmbeddingRequest,
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
from gateway.config import ModelsFile
from gateway.errors import (
    AuthError,
    BudgetExceededError,
    ForbiddenError,
    GatewayError,
    ModelNotFoundError,
    RateLimitExceededError,
    UnavailableError,
    UnsupportedContentError,
    UnsupportedFieldError,
    ValidationError,
)
from gateway.jobs import JobRequest, JobResult, Usage
from gateway.wire.openai import (
    ChatStreamDecoder,
    ChatStreamEncoder,
    StreamError,
    chat_payload,
    chat_response,
    embeddings_job_request,
    embeddings_payload,
    embeddings_response,
    error_body,
    job_request,
    models_list,
    openai_finish_reason,
    parse_chat,
    parse_embeddings,
    stream_options,
)

WEATHER = Tool(
    name="get_weather",
    description="The weather in a city now.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": WEATHER.name,
        "description": WEATHER.description or "",
        "parameters": WEATHER.parameters,
    },
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nnot really").decode()


def _conversation() -> list[Message]:
    return [
        Message(role="system", content="Be brief."),
        Message(
            role="user",
            content=[
                TextPart(text="What is in these, and the weather in Oslo?"),
                ImagePart(url="https://example.test/cat.jpg"),
                ImagePart(media_type="image/png", data=PNG),
            ],
        ),
        Message(
            role="assistant",
            tool_calls=[ToolCall(id="call_1", name="get_weather", arguments='{"city":"Oslo"}')],
        ),
        Message(role="tool", tool_call_id="call_1", content="4 C, rain"),
    ]


# --- upstream: payloads ------------------------------------------------------------------------------


def test_chat_payload_renders_every_field() -> None:
    request = CompletionRequest(
        messages=_conversation(),
        max_tokens=300,
        temperature=0.2,
        top_p=0.9,
        stop=("END",),
        seed=7,
        user="u-42",
        tools=(WEATHER,),
        tool_choice=ToolChoice(mode="tool", name="get_weather"),
        response_format=ResponseFormat(
            type="json_schema", name="answer", json_schema={"type": "object"}, strict=True
        ),
    )
    assert chat_payload(request, "gpt-4o-mini", stream=False, limit_field="max_completion_tokens") == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these, and the weather in Oslo?"},
                    {"type": "image_url", "image_url": {"url": "https://example.test/cat.jpg"}},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "4 C, rain"},
        ],
        "max_completion_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END"],
        "seed": 7,
        "user": "u-42",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "The weather in a city now.",
                    "parameters": WEATHER.parameters,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
        },
    }


def test_chat_payload_omits_what_is_unset_and_asks_for_stream_usage() -> None:
    request = CompletionRequest(messages=[Message(role="user", content=[TextPart(text="hi")])], max_tokens=10)
    assert chat_payload(request, "m", stream=False) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 10,
    }
    streamed = chat_payload(request, "m", stream=True)
    assert streamed["stream"] is True
    assert streamed["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("fmt", "wire"),
    [
        (ResponseFormat(type="text"), None),
        (ResponseFormat(type="json_object"), {"type": "json_object"}),
        (
            ResponseFormat(type="json_schema", json_schema={"type": "object"}),
            {"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object"}}},
        ),
    ],
)
def test_chat_payload_response_formats(fmt: ResponseFormat, wire: dict[str, Any] | None) -> None:
    request = CompletionRequest(
        messages=[Message(role="user", content="x")], max_tokens=5, response_format=fmt
    )
    assert chat_payload(request, "m", stream=False).get("response_format") == wire


@pytest.mark.parametrize("mode", ["auto", "none", "required"])
def test_chat_payload_tool_choice_modes(mode: Any) -> None:
    request = CompletionRequest(
        messages=[Message(role="user", content="x")],
        max_tokens=5,
        tools=(WEATHER,),
        tool_choice=ToolChoice(mode=mode),
    )
    assert chat_payload(request, "m", stream=False)["tool_choice"] == mode


def test_chat_payload_refuses_an_image_outside_a_user_message() -> None:
    tool = Message(role="tool", tool_call_id="c", content=[ImagePart(url="https://example.test/a.png")])
    request = CompletionRequest(messages=[Message(role="user", content="x"), tool], max_tokens=5)
    with pytest.raises(UnsupportedContentError) as caught:
        chat_payload(request, "m", stream=False)
    assert caught.value.param == "messages[1].content"


def test_upstream_payload_parses_back_to_the_same_conversation() -> None:
    """What a worker sends and what the API reads are one format: the payload is a valid client body."""
    messages = _conversation()
    request = CompletionRequest(
        messages=messages,
        max_tokens=64,
        tools=(WEATHER,),
        tool_choice=ToolChoice(mode="required"),
        response_format=ResponseFormat(type="json_object"),
        stop=("a", "b"),
    )
    parsed = job_request(chat_payload(request, "general", stream=True))
    assert parsed.model == "general" and parsed.stream and parsed.max_tokens == 64
    assert parsed.messages is not None
    assert [m.role for m in parsed.messages] == [m.role for m in messages]
    assert parsed.messages[0] == messages[0] and parsed.messages[2:] == messages[2:]
    assert parsed.messages[1].text == messages[1].text
    assert [i.as_data() or i.url for i in parsed.messages[1].images] == [
        "https://example.test/cat.jpg",
        ("image/png", PNG),
    ]
    assert parsed.tools == [WEATHER]
    assert parsed.tool_choice == ToolChoice(mode="required")
    assert parsed.response_format == ResponseFormat(type="json_object")
    assert parsed.stop == ["a", "b"]


# --- upstream: answers -------------------------------------------------------------------------------


def _openai_answer(**message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "refusal": None, "annotations": [], **message},
                "logprobs": None,
                "finish_reason": "tool_calls" if "tool_calls" in message else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 1117,
            "completion_tokens": 46,
            "total_tokens": 1163,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_fc9f1d7035",
    }


def test_parse_chat_text_answer() -> None:
    completion = parse_chat(_openai_answer(content="Paris."), "fallback")
    assert completion == Completion(
        text="Paris.",
        input_tokens=1117,
        output_tokens=46,
        provider_model="gpt-4o-2024-08-06",
        finish_reason="stop",
        extra={"response_id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"},
    )


def test_parse_chat_tool_calls_with_null_content() -> None:
    calls = [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
        },
        {
            "id": "call_b",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
        },
    ]
    completion = parse_chat(_openai_answer(content=None, tool_calls=calls), "fallback")
    assert completion.text == ""
    assert completion.finish_reason == "tool_calls"
    assert completion.tool_calls == (
        ToolCall(id="call_a", name="get_weather", arguments='{"city":"Oslo"}'),
        ToolCall(id="call_b", name="get_weather", arguments='{"city":"Rome"}'),
    )


def test_parse_chat_compatible_server_quirks() -> None:
    """No id, no model, an id-less tool call with object arguments: still one good answer."""
    data = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "ok"}],
                    "tool_calls": [
                        {"function": {"name": "f", "arguments": {"x": 1}}},
                        {"function": {"name": "g"}},
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }
    completion = parse_chat(data, "llama3")
    assert completion.provider_model == "llama3" and completion.extra == {} and completion.text == "ok"
    assert completion.tool_calls == (
        ToolCall(id="call_0", name="f", arguments='{"x": 1}'),
        ToolCall(id="call_1", name="g", arguments="{}"),
    )


def test_parse_chat_keeps_a_refusal() -> None:
    completion = parse_chat(_openai_answer(content=None, refusal="I can't help with that."), "m")
    assert completion.text == "" and completion.extra["refusal"] == "I can't help with that."


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {},
        {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
        {"choices": [{"message": "hi"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
        {"choices": [{"message": {"content": 5}}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
        {"choices": [{"message": {"content": "x"}}]},
        {"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": "1", "completion_tokens": 1}},
        {"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": -1, "completion_tokens": 1}},
        {
            "choices": [{"message": {"content": "x"}}],
            "usage": {"prompt_tokens": True, "completion_tokens": 1},
        },
        {
            "choices": [{"message": {"content": None, "tool_calls": [{"type": "custom", "custom": {}}]}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        },
        {
            "choices": [
                {"message": {"content": None, "tool_calls": [{"id": "c", "function": {"name": ""}}]}}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        },
    ],
)
def test_parse_chat_wrong_shapes_raise(data: Any) -> None:
    with pytest.raises((LookupError, TypeError, ValueError)):
        parse_chat(data, "m")


# --- upstream: streams -------------------------------------------------------------------------------


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **top: Any) -> str:
    choices = (
        [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    return json.dumps(
        {
            "id": "chatcmpl-stream1",
            "object": "chat.completion.chunk",
            "created": 1741570283,
            "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_1",
            "choices": choices,
            "usage": None,
            **top,
        }
    )


def _call(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    piece: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id is not None:
        piece["id"] = call_id
        piece["type"] = "function"
        piece["function"]["name"] = name
    return {"tool_calls": [piece]}


REALISTIC_STREAM = [
    _chunk({"role": "assistant", "content": "", "refusal": None}),
    _chunk({"content": "Let me"}),
    _chunk({"content": " check."}),
    _chunk(_call(0, "", "call_oslo", "get_weather")),
    _chunk(_call(0, '{"ci')),
    _chunk(_call(0, 'ty": "Os')),
    _chunk(_call(0, 'lo"}')),
    _chunk(_call(1, '{"city": "Rome"}', "call_rome", "get_weather")),
    _chunk({}, "tool_calls"),
    _chunk(None, usage={"prompt_tokens": 82, "completion_tokens": 41, "total_tokens": 123}),
    "[DONE]",
]


def test_stream_decoder_over_a_realistic_stream() -> None:
    decoder = ChatStreamDecoder("fallback")
    deltas = [d for data in REALISTIC_STREAM for d in decoder.feed(data)]
    assert deltas == [
        TextDelta("Let me"),
        TextDelta(" check."),
        ToolCallDelta(0, "call_oslo", "get_weather", ""),
        ToolCallDelta(0, None, None, '{"ci'),
        ToolCallDelta(0, None, None, 'ty": "Os'),
        ToolCallDelta(0, None, None, 'lo"}'),
        ToolCallDelta(1, "call_rome", "get_weather", '{"city": "Rome"}'),
    ]
    assert decoder.done and decoder.started and decoder.usage_reported
    assert decoder.completion() == Completion(
        text="Let me check.",
        input_tokens=82,
        output_tokens=41,
        provider_model="gpt-4o-mini-2024-07-18",
        finish_reason="tool_calls",
        extra={"response_id": "chatcmpl-stream1"},
        tool_calls=(
            ToolCall(id="call_oslo", name="get_weather", arguments='{"city": "Oslo"}'),
            ToolCall(id="call_rome", name="get_weather", arguments='{"city": "Rome"}'),
        ),
    )


def test_stream_decoder_not_started_by_the_role_chunk() -> None:
    decoder = ChatStreamDecoder("m")
    assert decoder.feed(REALISTIC_STREAM[0]) == []
    assert not decoder.started and not decoder.done


@pytest.mark.parametrize("cut", [len(REALISTIC_STREAM) - 1, 5])
def test_truncated_stream_has_no_completion(cut: int) -> None:
    decoder = ChatStreamDecoder("m")
    for data in REALISTIC_STREAM[:cut]:
        decoder.feed(data)
    with pytest.raises(ValueError, match=r"\[DONE\]"):
        decoder.completion()


def test_stream_done_without_finish_reason_is_truncated() -> None:
    decoder = ChatStreamDecoder("m")
    decoder.feed(_chunk({"content": "half an ans"}))
    decoder.feed("[DONE]")
    with pytest.raises(ValueError, match="finish_reason"):
        decoder.completion()


def test_stream_without_usage_reports_zero_tokens() -> None:
    """Some compatible servers ignore include_usage: the caller estimates."""
    decoder = ChatStreamDecoder("local")
    for data in (json.dumps({"choices": [{"delta": {"content": "hi"}, "finish_reason": "stop"}]}), "[DONE]"):
        decoder.feed(data)
    assert not decoder.usage_reported
    completion = decoder.completion()
    assert (completion.text, completion.input_tokens, completion.output_tokens) == ("hi", 0, 0)
    assert completion.provider_model == "local" and completion.extra == {}


def test_stream_error_chunk_raises_stream_error() -> None:
    decoder = ChatStreamDecoder("m")
    decoder.feed(_chunk({"content": "a"}))
    with pytest.raises(StreamError) as caught:
        decoder.feed(json.dumps({"error": {"message": "The server had an error", "type": "server_error"}}))
    assert caught.value.message == "The server had an error"
    assert isinstance(caught.value, ValueError)


def test_stream_decoder_hands_on_id_and_name_once_and_follows_calls_without_index() -> None:
    """A server that repeats id and name on every chunk, or leaves out the index."""
    decoder = ChatStreamDecoder("m")
    repeated = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":'}}
    again = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "1}"}}
    other = {"id": "c2", "function": {"name": "g", "arguments": "{}"}}
    no_id = {"function": {"arguments": " "}}
    deltas = [
        d
        for call in (repeated, again, other, no_id)
        for d in decoder.feed(json.dumps({"choices": [{"delta": {"tool_calls": [call]}}]}))
    ]
    assert deltas == [
        ToolCallDelta(0, "c1", "f", '{"a":'),
        ToolCallDelta(0, None, None, "1}"),
        ToolCallDelta(1, "c2", "g", "{}"),
        ToolCallDelta(1, None, None, " "),
    ]


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        "[1]",
        json.dumps({"choices": {}}),
        json.dumps({"choices": [{"delta": {"content": 3}}]}),
        json.dumps({"choices": [], "usage": {"prompt_tokens": 1.5, "completion_tokens": 1}}),
        json.dumps({"choices": [{"delta": {"tool_calls": [{"index": -1, "function": {"arguments": "x"}}]}}]}),
    ],
)
def test_stream_decoder_wrong_shapes_raise(data: str) -> None:
    with pytest.raises((LookupError, TypeError, ValueError)):
        ChatStreamDecoder("m").feed(data)


def test_stream_data_after_done_raises() -> None:
    decoder = ChatStreamDecoder("m")
    decoder.feed("[DONE]")
    with pytest.raises(ValueError):
        decoder.feed(_chunk({"content": "late"}))


# --- upstream: embeddings ----------------------------------------------------------------------------


def test_embeddings_payload() -> None:
    assert embeddings_payload(EmbeddingRequest(inputs=["a", "b"]), "text-embedding-3-small") == {
        "model": "text-embedding-3-small",
        "input": ["a", "b"],
        "encoding_format": "float",
    }
    assert embeddings_payload(EmbeddingRequest(inputs=["a"], dimensions=256), "m")["dimensions"] == 256


def test_parse_embeddings_orders_by_index_and_reads_base64() -> None:
    packed = base64.b64encode(struct.pack("<3f", 0.5, -0.25, 1.0)).decode()
    data = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 1, "embedding": packed},
            {"object": "embedding", "index": 0, "embedding": [0.1, 2, -0.3]},
        ],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
    embeddings = parse_embeddings(data, "fallback")
    assert embeddings.vectors == [[0.1, 2.0, -0.3], [0.5, -0.25, 1.0]]
    assert embeddings.input_tokens == 8 and embeddings.provider_model == "text-embedding-3-small"
    assert all(isinstance(x, float) for v in embeddings.vectors for x in v)


@pytest.mark.parametrize(
    "items",
    [
        [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}],
        [{"index": 1, "embedding": [1.0]}],
        [{"index": 0, "embedding": ["1"]}],
        [{"index": 0, "embedding": [True]}],
        [{"index": 0, "embedding": []}],
        [{"index": 0, "embedding": "not base64!"}],
        [{"index": 0, "embedding": base64.b64encode(b"abc").decode()}],
        [{"index": 0, "embedding": base64.b64encode(struct.pack("<f", float("nan"))).decode()}],
        [{"index": "0", "embedding": [1.0]}],
        [{"embedding": [1.0]}],
    ],
)
def test_parse_embeddings_wrong_shapes_raise(items: list[dict[str, Any]]) -> None:
    with pytest.raises((LookupError, TypeError, ValueError)):
        parse_embeddings({"data": items, "usage": {"prompt_tokens": 1}}, "m")


# --- downstream: parsing a client's body -------------------------------------------------------------


def _body(**fields: Any) -> dict[str, Any]:
    return {"model": "general", "messages": [{"role": "user", "content": "hi"}], **fields}


def test_job_request_takes_every_accepted_field() -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "developer", "content": "Answer in French."},
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather here?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.test/sky.jpg", "detail": "auto"},
                    },
                    {"type": "image_url", "image_url": f"data:image/png;base64,{PNG}"},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        "temperature": 0.5,
        "top_p": 0.8,
        "max_completion_tokens": 120,
        "stop": "###",
        "seed": 11,
        "user": "end-user-1",
        "metadata": {"ticket": "T-1"},
        "tools": [{"type": "function", "function": WEATHER.model_dump()}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "weather", "schema": {"type": "object"}, "strict": True},
        },
        "stream": True,
        "stream_options": {"include_usage": True},
        "n": 1,
        "parallel_tool_calls": True,
        "store": False,
        "logprobs": False,
        "frequency_penalty": 0,
        "presence_penalty": 0.0,
        "service_tier": "auto",
        "reasoning_effort": None,
    }
    request = job_request(body)
    assert request == JobRequest(
        model="gpt-4o-mini",
        messages=[
            Message(role="system", content="Answer in French."),
            Message(role="system", content=[TextPart(text="Be brief.")]),
            Message(
                role="user",
                content=[
                    TextPart(text="Weather here?"),
                    ImagePart(url="https://example.test/sky.jpg"),
                    ImagePart(url=f"data:image/png;base64,{PNG}"),
                ],
            ),
            Message(role="assistant", tool_calls=[ToolCall(id="call_1", name="get_weather", arguments="{}")]),
            Message(role="tool", tool_call_id="call_1", content="sunny"),
        ],
        temperature=0.5,
        top_p=0.8,
        max_tokens=120,
        stop=["###"],
        seed=11,
        user="end-user-1",
        metadata={"ticket": "T-1"},
        tools=[WEATHER],
        tool_choice=ToolChoice(mode="tool", name="get_weather"),
        response_format=ResponseFormat(
            type="json_schema", name="weather", json_schema={"type": "object"}, strict=True
        ),
        stream=True,
    )
    assert request.system is None
    assert request.messages is not None and request.messages[2].images[1].as_data() == ("image/png", PNG)
    assert stream_options(body) is True


def test_job_request_minimal_body() -> None:
    request = job_request(_body())
    assert request == JobRequest(model="general", messages=[Message(role="user", content="hi")])
    assert request.stream is False and request.max_tokens is None and stream_options(_body()) is False


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"max_tokens": 50}, 50),
        ({"max_completion_tokens": 60}, 60),
        ({"max_tokens": 70, "max_completion_tokens": 70}, 70),
        ({"max_tokens": None, "max_completion_tokens": 80}, 80),
    ],
)
def test_job_request_either_limit_name(fields: dict[str, Any], expected: int) -> None:
    assert job_request(_body(**fields)).max_tokens == expected


@pytest.mark.parametrize(
    ("fields", "tool_choice"),
    [
        ({"tool_choice": "none"}, None),
        ({"tool_choice": "auto", "tools": []}, None),
        ({"tool_choice": "auto", "tools": [{"type": "function", "function": {"name": "f"}}]}, ToolChoice()),
        (
            {"tool_choice": "none", "tools": [{"type": "function", "function": {"name": "f"}}]},
            ToolChoice(mode="none"),
        ),
    ],
)
def test_job_request_tool_choice_without_tools_asks_for_nothing(
    fields: dict[str, Any], tool_choice: ToolChoice | None
) -> None:
    assert job_request(_body(**fields)).tool_choice == tool_choice


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, ResponseFormat(type="json_object")),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
            ResponseFormat(type="json_schema", name="x", json_schema={}),
        ),
    ],
)
def test_job_request_response_formats(fmt: dict[str, Any], expected: ResponseFormat | None) -> None:
    assert job_request(_body(response_format=fmt)).response_format == expected


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"store": True}, "store"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"frequency_penalty": False}, "frequency_penalty"),
        ({"presence_penalty": -1}, "presence_penalty"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"reasoning_effort": "low"}, "reasoning_effort"),
        ({"service_tier": "flex"}, "service_tier"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"verbosity": "low"}, "verbosity"),
        ({"top_k": 40}, "top_k"),
        ({"max_tokens": 10, "max_completion_tokens": 20}, "max_completion_tokens"),
        (
            {"stream": True, "stream_options": {"include_obfuscation": True}},
            "stream_options.include_obfuscation",
        ),
        ({"stream_options": {"chunk_size": 1}}, "stream_options.chunk_size"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "strict": True}}]},
            "tools[0].function.strict",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f"}, "cache_control": {}}]},
            "tools[0].cache_control",
        ),
        ({"tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}, "tool_choice.type"),
        ({"response_format": {"type": "grammar", "grammar": "x"}}, "response_format.type"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {}, "description": "d"},
                }
            },
            "response_format.json_schema.description",
        ),
    ],
)
def test_job_request_refuses_what_it_cannot_honour(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedFieldError) as caught:
        job_request(_body(**fields))
    assert caught.value.param == param
    assert caught.value.message.startswith(f"aigw cannot honour '{param}' = "), caught.value.message
    assert caught.value.http_status == 400


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "user", "content": "hi", "name": "alice"}, "messages[1].name"),
        ({"role": "function", "name": "f", "content": "x"}, "messages[1].role"),
        (
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi"}, {"type": "input_audio", "input_audio": {}}],
            },
            "messages[1].content[1].type",
        ),
        (
            {"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]},
            "messages[1].content[0].type",
        ),
        (
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
            },
            "messages[1].content[0].cache_control",
        ),
        (
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "high"}}
                ],
            },
            "messages[1].content[0].image_url.detail",
        ),
        (
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
            "messages[1].content[0].type",
        ),
        (
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "custom": {}}]},
            "messages[1].tool_calls[0].type",
        ),
        ({"role": "assistant", "content": "x", "refusal": "no"}, "messages[1].refusal"),
    ],
)
def test_job_request_refuses_message_content_it_cannot_honour(message: dict[str, Any], param: str) -> None:
    body = _body(messages=[{"role": "system", "content": "s"}, message])
    with pytest.raises(UnsupportedFieldError) as caught:
        job_request(body)
    assert caught.value.param == param
    assert caught.value.message.startswith(f"aigw cannot honour '{param}' = "), caught.value.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "request body must be a JSON object"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model: required"),
        ({"model": 3, "messages": []}, "model: must be a non-empty string"),
        ({"model": "m"}, "messages: required"),
        ({"model": "m", "messages": []}, "messages: must be a non-empty list"),
        (
            _body(messages=[{"role": "user", "content": "a"}, {"role": "robot", "content": "x"}]),
            "messages[1].role: ",
        ),
        (_body(messages=["hi"]), "messages[0]: must be an object"),
        (_body(messages=[{"role": "user", "content": 5}]), "messages[0].content: must be a string or a list"),
        (_body(messages=[{"role": "user", "content": ""}]), "messages[0]: content must not be empty"),
        (
            _body(messages=[{"role": "user", "content": [{"type": "text"}]}]),
            "messages[0].content[0].text: must be",
        ),
        (
            _body(messages=[{"role": "user", "content": [{"text": "x"}]}]),
            "messages[0].content[0].type: must be",
        ),
        (
            _body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
            "messages[0].content[0].image_url.url: must be",
        ),
        (_body(messages=[{"role": "tool", "content": "x"}]), "messages[0]: a 'tool' message"),
        (
            _body(messages=[{"role": "user", "content": "x", "tool_calls": []}]),
            "messages[0].tool_calls: only",
        ),
        (
            _body(
                messages=[
                    {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}
                ]
            ),
            "messages[0].tool_calls[0].id: required",
        ),
        (
            _body(
                messages=[{"role": "assistant", "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}]
            ),
            "messages[0].tool_calls[0].function.name: required",
        ),
        (
            _body(
                messages=[
                    {"role": "system", "content": [{"type": "image_url", "image_url": "https://x.test/a"}]}
                ]
            ),
            "messages[0]: a system message holds text only",
        ),
        (_body(temperature=3), "temperature: "),
        (_body(top_p="high"), "top_p: "),
        (_body(max_completion_tokens=0), "max_completion_tokens: "),
        (_body(max_tokens=-5), "max_tokens: "),
        (_body(stop=7), "stop: must be"),
        (_body(stop=["a", 1]), "stop[1]: "),
        (_body(metadata={"k": 1}), "metadata.k: "),
        (_body(stream="yes please"), "stream: "),
        (_body(seed="5"), "seed: "),
        (_body(temperature=True), "temperature: "),
        (_body(stream_options={"include_usage": "yes"}), "stream_options.include_usage: must be"),
        (_body(stream_options=[]), "stream_options: must be an object"),
        (_body(tools={"type": "function"}), "tools: must be a list"),
        (_body(tools=[{"function": {"name": "f"}}]), "tools[0].type: must be 'function'"),
        (_body(tools=[{"type": "function"}]), "tools[0].function: must be an object"),
        (
            _body(tools=[{"type": "function", "function": {"description": "d"}}]),
            "tools[0].function.name: required",
        ),
        (_body(tools=[{"type": "function", "function": {"name": "bad name!"}}]), "tools[0].function.name: "),
        (_body(tool_choice="always"), "tool_choice: must be"),
        (_body(tool_choice="required"), "'tool_choice' goes with 'tools'"),
        (
            _body(
                tools=[{"type": "function", "function": {"name": "f"}}],
                tool_choice={"type": "function", "function": {"name": "g"}},
            ),
            "tool_choice names 'g'",
        ),
        (_body(tool_choice={"type": "function", "function": {}}), "tool_choice.function.name: must be"),
        (_body(response_format={"type": "json_schema"}), "response_format.json_schema: must be an object"),
        (
            _body(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
            "response_format.json_schema.schema: must be",
        ),
        (
            _body(response_format={"type": "json_schema", "json_schema": {"name": "x" * 65, "schema": {}}}),
            "response_format.json_schema.name: ",
        ),
        (_body(response_format={}), "response_format.type: must be"),
    ],
)
def test_job_request_bad_values_name_the_openai_param(body: Any, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        job_request(body)
    assert caught.value.message.startswith(message), caught.value.message
    assert caught.value.http_status == 422


def test_stream_options_reads_include_usage() -> None:
    assert stream_options(_body(stream=True, stream_options={"include_usage": False})) is False
    assert stream_options(_body(stream=True, stream_options={"include_usage": None})) is False
    assert stream_options(_body(stream=True, stream_options={"include_obfuscation": False})) is False
    with pytest.raises(ValidationError):
        stream_options("body")


def test_embeddings_job_request() -> None:
    request, encoding = embeddings_job_request({"model": "embed", "input": "hello"})
    assert request == JobRequest(model="embed", embed=["hello"]) and encoding == "float"
    request, encoding = embeddings_job_request(
        {"model": "embed", "input": ["a", "b"], "dimensions": 256, "user": "u", "encoding_format": "base64"}
    )
    assert request == JobRequest(model="embed", embed=["a", "b"], dimensions=256, user="u")
    assert encoding == "base64"


@pytest.mark.parametrize(
    ("body", "error", "where"),
    [
        ({"model": "e", "input": [1, 2, 3]}, UnsupportedFieldError, "input"),
        ({"model": "e", "input": [[1, 2], [3]]}, UnsupportedFieldError, "input"),
        ({"model": "e", "input": "x", "extra": 1}, UnsupportedFieldError, "extra"),
        ({"model": "e", "input": ["a", ""]}, ValidationError, "input[1]: must not be empty"),
        ({"model": "e", "input": ["a", None]}, ValidationError, "input[1]: must be a string"),
        ({"model": "e", "input": {}}, ValidationError, "input: must be a string or a list"),
        ({"model": "e", "input": []}, ValidationError, "input: "),
        ({"model": "e", "input": ["a"] * 2049}, ValidationError, "input: "),
        ({"model": "e", "input": "x", "dimensions": 0}, ValidationError, "dimensions: "),
        ({"model": "e", "input": "x", "encoding_format": "int8"}, ValidationError, "encoding_format: "),
        ({"model": "e"}, ValidationError, "input: required"),
        ({"input": "x"}, ValidationError, "model: required"),
    ],
)
def test_embeddings_job_request_refusals(body: dict[str, Any], error: type[GatewayError], where: str) -> None:
    with pytest.raises(error) as caught:
        embeddings_job_request(body)
    assert type(caught.value) is error
    if isinstance(caught.value, UnsupportedFieldError):
        assert caught.value.param == where and caught.value.message.startswith(
            f"aigw cannot honour '{where}'"
        )
    else:
        assert caught.value.message.startswith(where), caught.value.message


# --- downstream: the official SDK reads what aigw writes ----------------------------------------------


def _client(handler: Callable[[httpx2.Request], httpx2.Response]) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://aigw.test/v1",
        api_key="aigw-token",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def _result(**fields: Any) -> JobResult:
    base: dict[str, Any] = {
        "output": "",
        "model": "general",
        "provider": "openai",
        "provider_model": "gpt-4o-mini",
        "usage": Usage(input_tokens=12, output_tokens=5),
        "cost_usd": 0.0,
        "attempt": 1,
        "calls": [],
        "timings": {},
    }
    return JobResult(**{**base, **fields})


def _sse_response(body: bytes) -> httpx2.Response:
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)


def test_sdk_reads_a_chat_response_with_tool_calls() -> None:
    seen: list[JobRequest] = []
    calls = [ToolCall(id="call_1", name="get_weather", arguments='{"city":"Oslo"}')]

    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/chat/completions"
        seen.append(job_request(json.loads(request.content)))
        result = _result(tool_calls=calls, finish_reason="tool_use")
        body = chat_response(
            job_id="j1", created=1700000000, model="general", result=result, aigw={"job_id": "j1"}
        )
        return httpx2.Response(200, json=body)

    completion = _client(handler).chat.completions.create(
        model="general",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        max_completion_tokens=100,
    )
    assert seen[0].tools == [WEATHER] and seen[0].max_tokens == 100
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None and choice.message.role == "assistant"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_1",
        "get_weather",
        '{"city":"Oslo"}',
    )
    assert completion.usage is not None
    assert (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
        completion.usage.total_tokens,
    ) == (12, 5, 17)
    assert (
        completion.id == "chatcmpl-j1" and completion.model == "general" and completion.created == 1700000000
    )
    assert (completion.model_extra or {})["aigw"] == {"job_id": "j1"}


class Forecast(BaseModel):
    city: str
    temp_c: float


def test_sdk_structured_output_round_trip() -> None:
    """``chat.completions.parse`` with a pydantic model: its json_schema is taken, and its answer parsed."""
    seen: list[JobRequest] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(job_request(json.loads(request.content)))
        result = _result(output='{"city": "Oslo", "temp_c": 4.5}', finish_reason="stop")
        return httpx2.Response(
            200, json=chat_response(job_id="j", created=1, model="general", result=result, aigw={})
        )

    completion = _client(handler).chat.completions.parse(
        model="general", messages=[{"role": "user", "content": "Oslo?"}], response_format=Forecast
    )
    fmt = seen[0].response_format
    assert fmt is not None and fmt.type == "json_schema" and fmt.name == "Forecast" and fmt.strict is True
    assert fmt.json_schema is not None and set(fmt.json_schema["properties"]) == {"city", "temp_c"}
    assert completion.choices[0].message.parsed == Forecast(city="Oslo", temp_c=4.5)


def test_sdk_sends_back_the_message_it_read() -> None:
    """A client appends the answer's message to the conversation: aigw must take it again."""
    result = _result(output="Bonjour", finish_reason="end_turn")
    answer = chat_response(job_id="j", created=1, model="general", result=result, aigw={})
    completion = _client(lambda _: httpx2.Response(200, json=answer)).chat.completions.create(
        model="general", messages=[{"role": "user", "content": "hi"}]
    )
    assert (
        completion.choices[0].message.content == "Bonjour" and completion.choices[0].finish_reason == "stop"
    )
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        bodies.append(json.loads(request.content))
        return httpx2.Response(200, json=answer)

    _client(handler).chat.completions.create(
        model="general",
        messages=[
            {"role": "user", "content": "hi"},
            completion.choices[0].message,  # type: ignore[list-item]  # what the SDK's own examples append
            {"role": "user", "content": "and?"},
        ],
    )
    parsed = job_request(bodies[0])
    assert parsed.messages is not None and parsed.messages[1] == Message(role="assistant", content="Bonjour")


def _stream_body(include_usage: bool) -> bytes:
    encoder = ChatStreamEncoder(job_id="j2", created=1700000001, model="general", include_usage=include_usage)
    pieces = [
        encoder.start(),
        encoder.delta(TextDelta("Let me")),
        encoder.delta(TextDelta(" check.")),
        encoder.delta(ToolCallDelta(0, "call_oslo", "get_weather", "")),
        encoder.delta(ToolCallDelta(0, None, None, '{"city":')),
        encoder.delta(ToolCallDelta(0, None, None, ' "Oslo"}')),
        encoder.delta(ToolCallDelta(1, "call_rome", "get_weather", '{"city": "Rome"}')),
        encoder.finish(
            finish_reason="tool_calls", usage=Usage(input_tokens=30, output_tokens=9), aigw={"job_id": "j2"}
        ),
    ]
    return b"".join(pieces)


def test_sdk_iterates_a_stream_and_its_usage() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        seen.append(body)
        return _sse_response(_stream_body(stream_options(body)))

    stream = _client(handler).chat.completions.create(
        model="general",
        messages=[{"role": "user", "content": "Weather?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert job_request(seen[0]).stream is True
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Let me check."
    pieces = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
    assert [(p.index, p.id, p.function.name if p.function else None) for p in pieces][:2] == [
        (0, "call_oslo", "get_weather"),
        (0, None, None),
    ]
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["tool_calls"]
    assert (finals[0].model_extra or {})["aigw"] == {"job_id": "j2"}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (30, 9)
    assert all(c.usage is None for c in chunks[:-1])


def test_sdk_stream_helper_accumulates_the_tool_calls() -> None:
    client = _client(lambda _: _sse_response(_stream_body(False)))
    with client.chat.completions.stream(
        model="general", messages=[{"role": "user", "content": "Weather?"}]
    ) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Let me check." and final.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("call_oslo", "get_weather", '{"city": "Oslo"}'),
        ("call_rome", "get_weather", '{"city": "Rome"}'),
    ]
    assert final.usage is None


def test_stream_encoder_without_usage_ends_with_done_only() -> None:
    encoder = ChatStreamEncoder(job_id="j", created=1, model="m", include_usage=False)
    events = encoder.finish(finish_reason=None, usage=Usage(), aigw={}).split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    finish = json.loads(events[0].removeprefix(b"data: "))
    assert finish["choices"][0]["finish_reason"] == "stop" and "usage" not in finish and len(events) == 3


def test_decoder_reads_what_the_encoder_writes() -> None:
    """The relay path end to end in one format: aigw's own stream is a valid upstream stream."""
    decoder = ChatStreamDecoder("m")
    for event in _stream_body(True).split(b"\n\n"):
        if event:
            decoder.feed(event.removeprefix(b"data: ").decode())
    completion = decoder.completion()
    assert completion.text == "Let me check." and completion.finish_reason == "tool_calls"
    assert [c.arguments for c in completion.tool_calls] == ['{"city": "Oslo"}', '{"city": "Rome"}']
    assert (completion.input_tokens, completion.output_tokens, completion.extra) == (
        30,
        9,
        {"response_id": "chatcmpl-j2"},
    )


def test_sdk_raises_api_error_on_an_error_event() -> None:
    encoder = ChatStreamEncoder(job_id="j3", created=1, model="general", include_usage=True)
    body = (
        encoder.start()
        + encoder.delta(TextDelta("par"))
        + encoder.error(type="stream_interrupted", message="broke")
    )
    assert b"[DONE]" not in body
    stream = _client(lambda _: _sse_response(body)).chat.completions.create(
        model="general", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.extend(c.delta.content or "" for c in chunk.choices)
    assert received == ["", "par"]
    assert caught.value.message == "broke" and caught.value.code == "stream_interrupted"
    assert not isinstance(caught.value, openai.APIStatusError)


@pytest.mark.parametrize(
    ("error", "sdk_error", "openai_type"),
    [
        (AuthError("bad token"), openai.AuthenticationError, "authentication_error"),
        (ForbiddenError("not yours"), openai.PermissionDeniedError, "permission_error"),
        (ModelNotFoundError("unknown model 'x'"), openai.NotFoundError, "invalid_request_error"),
        (
            UnsupportedFieldError("aigw cannot honour 'n'", param="n"),
            openai.BadRequestError,
            "invalid_request_error",
        ),
        (ValidationError("temperature: too hot"), openai.UnprocessableEntityError, "invalid_request_error"),
        (
            UnsupportedContentError("no images", param="messages[0].content"),
            openai.UnprocessableEntityError,
            "invalid_request_error",
        ),
        (RateLimitExceededError("slow down", rule="r", retry_after=1), openai.RateLimitError, "requests"),
        (BudgetExceededError("spent", rule="b", retry_after=60), openai.RateLimitError, "insufficient_quota"),
        (UnavailableError("redis down"), openai.InternalServerError, "server_error"),
    ],
)
def test_sdk_maps_error_bodies_by_status(
    error: GatewayError, sdk_error: type[openai.APIStatusError], openai_type: str
) -> None:
    body = error_body(error)
    client = _client(lambda _: httpx2.Response(error.http_status, json=body))
    with pytest.raises(sdk_error) as caught:
        client.chat.completions.create(model="general", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == error.http_status
    assert caught.value.message.endswith(error.message) or error.message in caught.value.message
    assert caught.value.code == error.type and caught.value.type == openai_type
    assert caught.value.param == getattr(error, "param", None)


@pytest.mark.parametrize("encoding_format", ["float", "base64", None])
def test_sdk_decodes_embeddings(encoding_format: str | None) -> None:
    vectors = [[0.5, -0.25, 1.0], [0.125, 0.0, -2.0]]
    seen: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        job, encoding = embeddings_job_request(json.loads(request.content))
        seen.append(encoding)
        assert job.embed == ["one", "two"]
        result = _result(embeddings=vectors, usage=Usage(input_tokens=4))
        return httpx2.Response(200, json=embeddings_response(model="embed", result=result, encoding=encoding))

    kwargs: dict[str, Any] = {} if encoding_format is None else {"encoding_format": encoding_format}
    response = _client(handler).embeddings.create(model="embed", input=["one", "two"], **kwargs)
    assert seen == ["float" if encoding_format == "float" else "base64"]  # the SDK asks for base64 by default
    received: list[Any] = [d.embedding for d in response.data]
    if encoding_format == "base64":  # asked for by name, the SDK hands the base64 on as it came
        assert received == [base64.b64encode(struct.pack("<3f", *vector)).decode() for vector in vectors]
    else:
        assert received == vectors
    assert [d.index for d in response.data] == [0, 1]
    assert (response.usage.prompt_tokens, response.usage.total_tokens, response.model) == (4, 4, "embed")


def test_embeddings_response_base64_is_little_endian_float32() -> None:
    result = _result(embeddings=[[1.5, -3.0]])
    body = embeddings_response(model="e", result=result, encoding="base64")
    assert base64.b64decode(body["data"][0]["embedding"]) == struct.pack("<2f", 1.5, -3.0)
    with pytest.raises(ValueError):
        embeddings_response(model="e", result=_result(), encoding="float")


def test_sdk_lists_models() -> None:
    models = ModelsFile.model_validate(
        {
            "models": {
                "general": {"provider": "offline", "model": "x"},
                "embed": {"provider": "offline", "model": "y"},
            },
            "default_model": "general",
        }
    )
    page = _client(lambda _: httpx2.Response(200, json=models_list(models, 1700000002))).models.list()
    assert [(m.id, m.object, m.owned_by, m.created) for m in page] == [
        ("general", "model", "aigw", 1700000002),
        ("embed", "model", "aigw", 1700000002),
    ]


@pytest.mark.parametrize(
    ("reason", "tool_calls", "expected"),
    [
        ("end_turn", False, "stop"),
        ("stop_sequence", False, "stop"),
        ("max_tokens", False, "length"),
        ("tool_use", True, "tool_calls"),
        ("content_filter", False, "content_filter"),
        ("length", False, "length"),
        (None, False, "stop"),
        (None, True, "tool_calls"),
        ("something_new", False, "stop"),
    ],
)
def test_finish_reasons_in_openai_words(reason: str | None, tool_calls: bool, expected: str) -> None:
    assert openai_finish_reason(reason, tool_calls=tool_calls) == expected
