"""gateway.wire.ollama: what a worker sends Ollama, and how its answers and NDJSON streams read back."""

from __future__ import annotations

import json

import pytest

from gateway.chat import (
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
from gateway.wire import ollama

OSLO = '{"city":"Oslo"}'
WEATHER = Tool(name="get_weather", description="weather", parameters={"type": "object", "properties": {}})


def test_chat_payload_carries_options_tools_images_and_tool_results() -> None:
    request = CompletionRequest(
        messages=[
            Message(role="system", content="be brief"),
            Message(role="user", content=[TextPart(text="what is this?"),
                                          ImagePart(media_type="image/png", data="aGVsbG8=")]),  # fmt: skip
            Message(role="assistant", tool_calls=[ToolCall(id="c1", name="get_weather", arguments=OSLO)]),
            Message(role="tool", tool_call_id="c1", content="sunny"),
        ],
        max_tokens=64, temperature=0.2, top_p=0.9, stop=("END",), seed=7, tools=(WEATHER,),
        response_format=ResponseFormat(type="json_object"),
    )  # fmt: skip
    body = ollama.chat_payload(request, "llama3.2:3b", stream=True)
    assert body["stream"] is True and body["format"] == "json"
    assert body["options"] == {
        "num_predict": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["END"],
    }
    assert body["messages"][1] == {"role": "user", "content": "what is this?", "images": ["aGVsbG8="]}
    assert body["messages"][2]["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    ]
    assert body["messages"][3] == {"role": "tool", "content": "sunny", "tool_name": "get_weather"}
    assert body["tools"][0]["function"]["name"] == "get_weather"


def test_tool_choice_none_offers_no_tools_and_a_schema_is_the_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    request = CompletionRequest(
        [Message(role="user", content="x")], 5, tools=(WEATHER,), tool_choice=ToolChoice(mode="none"),
        response_format=ResponseFormat(type="json_schema", json_schema=schema),
    )  # fmt: skip
    body = ollama.chat_payload(request, "m", stream=False)
    assert "tools" not in body and body["format"] == schema


def test_an_image_url_is_refused_since_ollama_takes_bytes_only() -> None:
    request = CompletionRequest(
        [Message(role="user", content=[ImagePart(url="https://example.com/a.png")])], 5
    )
    with pytest.raises(ValueError, match="base64"):
        ollama.chat_payload(request, "m", stream=False)


def test_parse_chat_reads_text_tool_calls_and_counts() -> None:
    data = {
        "model": "llama", "done": True, "done_reason": "stop", "prompt_eval_count": 11, "eval_count": 3,
        "message": {"role": "assistant", "content": "",
                    "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
    }  # fmt: skip
    completion = ollama.parse_chat(data, "fallback")
    assert completion.finish_reason == "tool_calls"
    assert completion.tool_calls[0].name == "get_weather"
    assert json.loads(completion.tool_calls[0].arguments) == {"city": "Oslo"}
    assert (completion.input_tokens, completion.output_tokens) == (11, 3)


def test_stream_decoder_yields_deltas_and_the_final_counts() -> None:
    decoder = ollama.ChatStreamDecoder("llama")
    lines = [
        {"message": {"content": "echo"}, "done": False},
        {"message": {"content": ": hi"}, "done": False},
        {
            "message": {"content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 4,
            "eval_count": 2,
        },
    ]
    deltas = [d for line in lines for d in decoder.feed(json.dumps(line))]
    assert deltas == [TextDelta("echo"), TextDelta(": hi")]
    assert decoder.done and decoder.started
    completion = decoder.completion()
    assert (
        completion.text == "echo: hi" and completion.output_tokens == 2 and completion.finish_reason == "stop"
    )


def test_stream_decoder_tool_call_line_and_error_line_and_a_cut_stream() -> None:
    decoder = ollama.ChatStreamDecoder("llama")
    call = {"message": {"tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]}, "done": False}
    assert decoder.feed(json.dumps(call)) == [ToolCallDelta(0, "call_0", "f", '{"x": 1}')]
    with pytest.raises(ValueError, match="final line"):
        decoder.completion()  # no done: true yet: cut short, never a short answer
    with pytest.raises(ollama.StreamError, match="model crashed"):
        decoder.feed(json.dumps({"error": "model crashed"}))


def test_embed_payload_and_parse() -> None:
    assert ollama.embed_payload(EmbeddingRequest(["a", "b"], 8), "nomic") == {
        "model": "nomic", "input": ["a", "b"], "dimensions": 8,
    }  # fmt: skip
    embeddings = ollama.parse_embed({"embeddings": [[0.1, 0.2], [0.3, 0.4]], "prompt_eval_count": 2}, "nomic")
    assert embeddings.vectors == [[0.1, 0.2], [0.3, 0.4]] and embeddings.input_tokens == 2
    assert embeddings.provider_model == "nomic"
