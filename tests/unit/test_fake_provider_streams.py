"""The fake provider's streams, tool calls, broken streams and embeddings, judged by the vendors'
own SDKs (OpenAI, Anthropic) and by plain httpx for Ollama: if the fake drifts from what the real
APIs send, the SDKs stop understanding it and these tests fail."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from tests.fakes.provider import EMBEDDING_DIMENSIONS, REDACTED, FakeProvider, Fault

QUESTION = "the quick brown fox"
ANSWER = "echo: " + QUESTION
ARGS = {"city": "Paris", "days": 3, "units": {"temperature": "celsius"}}


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture
def fake(fake_server: FakeProvider) -> Iterator[FakeProvider]:
    fake_server.reset()
    yield fake_server
    fake_server.reset()


@pytest.fixture
def oai(fake: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.base_url + "/v1", api_key="k", max_retries=0) as client:
        yield client


@pytest.fixture
def claude(fake: FakeProvider) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0) as client:
        yield client


@dataclass(frozen=True)
class Raw:
    """What a client received of one answer, and how the connection ended."""

    status: int
    content_type: str
    data: bytes
    error: Exception | None

    def events(self) -> list[tuple[str | None, Any]]:
        """The server-sent events as (event name, decoded data; ``[DONE]`` stays a string)."""
        out: list[tuple[str | None, Any]] = []
        for block in self.data.decode().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines() if line)
            if "data" in fields:
                data = fields["data"]
                out.append((fields.get("event"), data if data == "[DONE]" else json.loads(data)))
        return out

    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.data.decode().splitlines() if line]


def raw(fake: FakeProvider, path: str, body: dict[str, Any]) -> Raw:
    got = bytearray()
    with httpx.stream("POST", fake.base_url + path, json=body, timeout=10) as response:
        try:
            for piece in response.iter_bytes():
                got += piece
        except httpx.RemoteProtocolError as exc:
            return Raw(response.status_code, response.headers["content-type"], bytes(got), exc)
    return Raw(response.status_code, response.headers["content-type"], bytes(got), None)


def openai_body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-fake", "messages": [{"role": "user", "content": QUESTION}], **extra}


def anthropic_body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-fake",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": QUESTION}],
    } | extra


def ollama_body(**extra: Any) -> dict[str, Any]:
    return {"model": "llama-fake", "messages": [{"role": "user", "content": QUESTION}], **extra}


# --- OpenAI ------------------------------------------------------------------------------------------


def test_openai_stream_adds_up_to_the_whole_answer(fake: FakeProvider, oai: openai.OpenAI) -> None:
    whole = oai.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": QUESTION}])
    chunks = list(
        oai.chat.completions.create(
            model="gpt-fake",
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert whole.choices[0].message.content == ANSWER
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert texts == ["echo:", " the", " quick", " brown", " fox"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])
    assert fake.requests[-1].body["stream"] is True
    assert fake.requests[-1].headers["authorization"] == REDACTED


def test_openai_stream_without_include_usage_has_no_usage_chunk(fake: FakeProvider) -> None:
    answer = raw(fake, "/v1/chat/completions", openai_body(stream=True))
    assert answer.status == 200 and answer.content_type.startswith("text/event-stream")
    events = [data for _, data in answer.events()]
    assert events[-1] == "[DONE]"
    assert all(
        e["object"] == "chat.completion.chunk" and e["choices"] and "usage" not in e for e in events[:-1]
    )


def test_openai_tool_call_whole_and_streamed(fake: FakeProvider, oai: openai.OpenAI) -> None:
    fake.script(Fault.tool_call("get_weather", ARGS), Fault.tool_call("get_weather", ARGS))
    whole = oai.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": QUESTION}])
    chunks = list(
        oai.chat.completions.create(
            model="gpt-fake",
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == ARGS
    pieces = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
    assert {p.index for p in pieces} == {0}
    assert pieces[0].id and pieces[0].id.startswith("call_") and pieces[0].function
    assert pieces[0].function.name == "get_weather"
    assert all(p.id is None for p in pieces[1:])
    arguments = [p.function.arguments for p in pieces if p.function and p.function.arguments]
    assert len(arguments) > 1 and json.loads("".join(arguments)) == ARGS
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage == whole.usage


def test_openai_tool_call_after_text(fake: FakeProvider, oai: openai.OpenAI) -> None:
    fake.script(Fault.tool_call("lookup", {"q": "fox"}, text="Let me look that up."))
    chunks = list(
        oai.chat.completions.create(
            model="gpt-fake", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
    )
    deltas = [c.choices[0].delta for c in chunks]
    assert "".join(d.content or "" for d in deltas) == "Let me look that up."
    first_call = next(i for i, d in enumerate(deltas) if d.tool_calls)
    assert all(not d.content for d in deltas[first_call:])  # the text comes first
    calls = [t for d in deltas for t in d.tool_calls or []]
    assert json.loads("".join(t.function.arguments or "" for t in calls if t.function)) == {"q": "fox"}


def test_openai_accepts_tools_tool_results_and_images(fake: FakeProvider, oai: openai.OpenAI) -> None:
    image = "data:image/png;base64," + base64.b64encode(b"\x89PNG").decode()
    answer = oai.chat.completions.create(
        model="gpt-fake",
        messages=[
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "weather here?"},
                    {"type": "image_url", "image_url": {"url": image}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": '{"a":1}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        tools=[{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}],
    )
    assert answer.choices[0].message.content == "echo: weather here?"
    body = fake.requests[-1].body
    assert body["tools"][0]["function"]["name"] == "w" and body["messages"][3]["content"] == "sunny"
    bare = raw(fake, "/v1/chat/completions", openai_body())
    assert answer.usage and bare.status == 200
    assert answer.usage.prompt_tokens > json.loads(bare.data)["usage"]["prompt_tokens"]  # tools count


def test_openai_refuses_a_tool_result_that_answers_no_call(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="role 'tool'"):
        oai.chat.completions.create(
            model="gpt-fake",
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "tool", "tool_call_id": "x", "content": "1"},
            ],
        )


def test_openai_broken_stream_raises_and_never_ends(fake: FakeProvider, oai: openai.OpenAI) -> None:
    fake.script(Fault.break_stream(2), Fault.break_stream(2))
    seen: list[str | None] = []
    stream = oai.chat.completions.create(
        model="gpt-fake", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content)
    assert seen == ["", "echo:", " the"]  # the role chunk, then two content chunks
    broken = raw(fake, "/v1/chat/completions", openai_body(stream=True))
    assert isinstance(broken.error, httpx.RemoteProtocolError)
    assert b"[DONE]" not in broken.data and b'finish_reason": "stop' not in broken.data
    assert len(broken.events()) == 3


def test_openai_stream_error_raises_the_sdk_error(fake: FakeProvider, oai: openai.OpenAI) -> None:
    fake.script(Fault.stream_error(1, message="the model is overloaded"))
    seen: list[str | None] = []
    stream = oai.chat.completions.create(
        model="gpt-fake", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    with pytest.raises(openai.APIError, match="the model is overloaded") as raised:
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content)
    assert not isinstance(raised.value, openai.APIConnectionError)
    assert seen == ["", "echo:"]
    fake.script(Fault.stream_error(0))
    events = raw(fake, "/v1/chat/completions", openai_body(stream=True)).events()
    assert events[-1][1]["error"]["message"] == "scripted stream error" and len(events) == 2


def test_openai_status_fault_on_a_stream(fake: FakeProvider, oai: openai.OpenAI) -> None:
    fake.script(Fault.status(429, retry_after=1))
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(
            model="gpt-fake", messages=[{"role": "user", "content": QUESTION}], stream=True
        )


def test_openai_embeddings_base64_and_float_agree(fake: FakeProvider, oai: openai.OpenAI) -> None:
    packed = oai.embeddings.create(model="embed-fake", input=["alpha", "beta"])
    assert fake.requests[-1].body["encoding_format"] == "base64"  # what the SDK asks by default
    floats = oai.embeddings.create(model="embed-fake", input=["alpha", "beta"], encoding_format="float")
    assert [d.embedding for d in packed.data] == [d.embedding for d in floats.data]
    alpha, beta = (d.embedding for d in floats.data)
    assert [d.index for d in floats.data] == [0, 1] and alpha != beta
    assert len(alpha) == EMBEDDING_DIMENSIONS and math.isclose(math.hypot(*alpha), 1.0, rel_tol=1e-6)
    assert (
        floats.model == "embed-fake" and floats.usage.prompt_tokens == floats.usage.total_tokens == 3
    )  # 2 + 1
    again = oai.embeddings.create(model="embed-fake", input="alpha", encoding_format="float")
    assert again.data[0].embedding == alpha
    wide = oai.embeddings.create(model="embed-fake", input="alpha", encoding_format="float", dimensions=20)
    assert len(wide.data[0].embedding) == 20
    assert math.isclose(math.hypot(*wide.data[0].embedding), 1.0, rel_tol=1e-6)


def test_openai_embeddings_base64_is_little_endian_float32(fake: FakeProvider) -> None:
    body = {"model": "embed-fake", "input": "alpha", "encoding_format": "base64", "dimensions": 5}
    (item,) = httpx.post(fake.base_url + "/v1/embeddings", json=body).json()["data"]
    floats = httpx.post(fake.base_url + "/v1/embeddings", json=body | {"encoding_format": "float"}).json()
    assert list(struct.unpack("<5f", base64.b64decode(item["embedding"]))) == floats["data"][0]["embedding"]
    assert floats["object"] == "list" and floats["data"][0]["object"] == "embedding"


def test_openai_embeddings_take_faults_and_refuse_bad_input(fake: FakeProvider, oai: openai.OpenAI) -> None:
    fake.script(Fault.status(429))
    with pytest.raises(openai.RateLimitError):
        oai.embeddings.create(model="embed-fake", input="alpha")
    fake.script(Fault.reset())
    with pytest.raises(openai.APIConnectionError):
        oai.embeddings.create(model="embed-fake", input="alpha")
    with pytest.raises(openai.BadRequestError, match="input"):
        oai.embeddings.create(model="embed-fake", input=[])
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        oai.embeddings.create(model="embed-fake", input="alpha", dimensions=0)
    assert fake.count(path="/v1/embeddings") == 4


# --- Anthropic ---------------------------------------------------------------------------------------


def test_anthropic_stream_adds_up_to_the_whole_answer(
    fake: FakeProvider, claude: anthropic.Anthropic
) -> None:
    whole = claude.messages.create(
        model="claude-fake", max_tokens=100, messages=[{"role": "user", "content": QUESTION}]
    )
    with claude.messages.stream(
        model="claude-fake", max_tokens=100, messages=[{"role": "user", "content": QUESTION}]
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert texts == ["echo:", " the", " quick", " brown", " fox"]
    assert [b.model_dump() for b in whole.content] == [{"type": "text", "text": ANSWER, "citations": None}]
    assert [b.model_dump(exclude={"parsed_output"}) for b in final.content] == [
        b.model_dump() for b in whole.content
    ]
    assert final.usage.input_tokens == whole.usage.input_tokens > 0
    assert final.usage.output_tokens == whole.usage.output_tokens > 1
    assert final.stop_reason == whole.stop_reason == "end_turn"
    record = fake.requests[-1]
    assert record.auth_header == "authorization"  # this SDK sends its key as a Bearer token
    assert record.headers["authorization"] == REDACTED and record.body["stream"] is True


def test_anthropic_stream_events_come_in_anthropics_order(fake: FakeProvider) -> None:
    answer = raw(fake, "/v1/messages", anthropic_body(stream=True))
    assert answer.status == 200 and answer.content_type.startswith("text/event-stream")
    names = [name for name, _ in answer.events()]
    assert names == ["message_start", "content_block_start", "ping", *["content_block_delta"] * 5,
                     "content_block_stop", "message_delta", "message_stop"]  # fmt: skip
    assert all(name == data["type"] for name, data in answer.events())
    start = answer.events()[0][1]["message"]
    assert start["content"] == [] and start["usage"]["input_tokens"] > 0 and start["stop_reason"] is None


def test_anthropic_tool_use_whole_and_streamed(fake: FakeProvider, claude: anthropic.Anthropic) -> None:
    fake.script(Fault.tool_call("get_weather", ARGS), Fault.tool_call("get_weather", ARGS))
    whole = claude.messages.create(
        model="claude-fake", max_tokens=100, messages=[{"role": "user", "content": QUESTION}]
    )
    with claude.messages.stream(
        model="claude-fake", max_tokens=100, messages=[{"role": "user", "content": QUESTION}]
    ) as stream:
        partials = [e.partial_json for e in stream if e.type == "input_json"]
        final = stream.get_final_message()
    for message in (whole, final):
        (block,) = message.content
        assert block.type == "tool_use" and block.name == "get_weather" and block.input == ARGS
        assert block.id.startswith("toolu_") and message.stop_reason == "tool_use"
    assert len(partials) > 1 and json.loads("".join(partials)) == ARGS
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_anthropic_tool_use_after_text_streams_two_blocks(fake: FakeProvider) -> None:
    fake.script(Fault.tool_call("lookup", {"q": "fox"}, text="Let me look."))
    events = [data for _, data in raw(fake, "/v1/messages", anthropic_body(stream=True)).events()]
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [s["index"] for s in starts] == [0, 1]
    assert starts[1]["content_block"] == {"type": "tool_use", "id": starts[1]["content_block"]["id"],
                                          "name": "lookup", "input": {}}  # fmt: skip
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert "".join(d["text"] for d in deltas if d["type"] == "text_delta") == "Let me look."
    assert json.loads("".join(d["partial_json"] for d in deltas if d["type"] == "input_json_delta")) == {
        "q": "fox"
    }


def test_anthropic_accepts_tool_results_and_images(fake: FakeProvider, claude: anthropic.Anthropic) -> None:
    png = base64.b64encode(b"\x89PNG").decode()
    answer = claude.messages.create(
        model="claude-fake",
        max_tokens=100,
        system="be brief",
        tools=[{"name": "w", "input_schema": {"type": "object"}}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "weather here?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "w", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
            },
        ],
    )
    assert answer.content[0].type == "text" and answer.content[0].text == "echo: weather here?"
    assert fake.requests[-1].body["messages"][2]["content"][0]["content"] == "sunny"


def test_anthropic_refuses_a_tool_result_that_answers_no_call(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="tool_use_id"):
        claude.messages.create(
            model="claude-fake",
            max_tokens=100,
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "1"}],
                },
            ],
        )


def test_anthropic_broken_stream_raises_without_message_stop(
    fake: FakeProvider, claude: anthropic.Anthropic
) -> None:
    fake.script(Fault.break_stream(1), Fault.break_stream(1))
    seen: list[str] = []
    with (
        pytest.raises(httpx2.RemoteProtocolError),  # the SDK lets the transport's error through
        claude.messages.stream(
            model="claude-fake", max_tokens=100, messages=[{"role": "user", "content": QUESTION}]
        ) as stream,
    ):
        for event in stream:
            seen.append(event.type)
    assert seen == ["message_start", "content_block_start", "content_block_delta", "text"]
    broken = raw(fake, "/v1/messages", anthropic_body(stream=True))
    assert isinstance(broken.error, httpx.RemoteProtocolError)
    assert [name for name, _ in broken.events()] == ["message_start", "content_block_start", "ping",
                                                     "content_block_delta"]  # fmt: skip


def test_anthropic_stream_error_raises_the_sdk_error(fake: FakeProvider, claude: anthropic.Anthropic) -> None:
    fake.script(Fault.stream_error(2, message="Overloaded"))
    texts: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as raised,
        claude.messages.stream(
            model="claude-fake", max_tokens=100, messages=[{"role": "user", "content": QUESTION}]
        ) as stream,
    ):
        texts.extend(stream.text_stream)
    assert texts == ["echo:", " the"]
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    fake.script(Fault.stream_error(0))
    names = [name for name, _ in raw(fake, "/v1/messages", anthropic_body(stream=True)).events()]
    assert names == ["message_start", "content_block_start", "ping", "error"]


# --- Ollama ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [None, True], ids=["default", "true"])
def test_ollama_streams_ndjson_unless_told_not_to(fake: FakeProvider, stream: bool | None) -> None:
    whole = httpx.post(fake.base_url + "/api/chat", json=ollama_body(stream=False)).json()
    answer = raw(fake, "/api/chat", ollama_body() if stream is None else ollama_body(stream=stream))
    assert answer.content_type == "application/x-ndjson" and answer.error is None
    *pieces, last = answer.lines()
    assert [p["message"]["content"] for p in pieces] == ["echo:", " the", " quick", " brown", " fox"]
    assert all(p["done"] is False and p["message"]["role"] == "assistant" for p in pieces)
    assert whole["message"]["content"] == ANSWER and whole["done"] is True
    assert last["done"] is True and last["done_reason"] == whole["done_reason"] == "stop"
    assert (last["prompt_eval_count"], last["eval_count"]) == (
        whole["prompt_eval_count"],
        whole["eval_count"],
    )


def test_ollama_length_cut_is_the_same_whole_and_streamed(fake: FakeProvider) -> None:
    body = ollama_body(options={"num_predict": 2})
    whole = httpx.post(fake.base_url + "/api/chat", json=body | {"stream": False}).json()
    *pieces, last = raw(fake, "/api/chat", body).lines()
    assert "".join(p["message"]["content"] for p in pieces) == whole["message"]["content"] == ANSWER[:8]
    assert (
        last["done_reason"] == whole["done_reason"] == "length" and last["eval_count"] == whole["eval_count"]
    )


def test_ollama_tool_call_whole_and_streamed(fake: FakeProvider) -> None:
    fake.script(Fault.tool_call("get_weather", ARGS), Fault.tool_call("get_weather", ARGS))
    whole = httpx.post(fake.base_url + "/api/chat", json=ollama_body(stream=False)).json()
    lines = raw(fake, "/api/chat", ollama_body(stream=True)).lines()
    expected = [{"function": {"name": "get_weather", "arguments": ARGS}}]
    assert whole["message"]["tool_calls"] == expected and whole["done_reason"] == "stop"
    assert [line["message"].get("tool_calls") for line in lines] == [expected, None]
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == whole["eval_count"]


def test_ollama_accepts_tool_messages_and_images(fake: FakeProvider) -> None:
    messages = [
        {"role": "user", "content": "weather here?", "images": [base64.b64encode(b"\x89PNG").decode()]},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "w", "arguments": {}}}]},
        {"role": "tool", "content": "sunny"},
    ]
    body = {"model": "llama-fake", "stream": False, "messages": messages, "tools": [{"type": "function"}]}
    answer = httpx.post(fake.base_url + "/api/chat", json=body)
    assert answer.status_code == 200 and answer.json()["message"]["content"] == "echo: weather here?"


def test_ollama_broken_stream_has_no_done_line(fake: FakeProvider) -> None:
    fake.script(Fault.break_stream(3))
    broken = raw(fake, "/api/chat", ollama_body())
    assert isinstance(broken.error, httpx.RemoteProtocolError)
    assert [line["done"] for line in broken.lines()] == [False] * 3


def test_ollama_stream_error_is_an_error_line(fake: FakeProvider) -> None:
    fake.script(Fault.stream_error(1, message="model crashed"))
    answer = raw(fake, "/api/chat", ollama_body())
    assert answer.error is None
    assert answer.lines()[1:] == [{"error": "model crashed"}] and answer.lines()[0]["done"] is False


def test_ollama_embed_matches_the_openai_vectors(fake: FakeProvider) -> None:
    ollama = httpx.post(
        fake.base_url + "/api/embed", json={"model": "nomic-fake", "input": ["alpha", "beta"]}
    )
    one = httpx.post(fake.base_url + "/api/embed", json={"model": "nomic-fake", "input": "alpha"}).json()
    body = {"model": "embed-fake", "input": ["alpha", "beta"], "encoding_format": "float"}
    openai_vectors = [
        d["embedding"] for d in httpx.post(fake.base_url + "/v1/embeddings", json=body).json()["data"]
    ]
    assert ollama.status_code == 200 and ollama.json()["embeddings"] == openai_vectors
    assert ollama.json()["model"] == "nomic-fake" and ollama.json()["prompt_eval_count"] == 3
    assert one["embeddings"] == openai_vectors[:1]
    fake.script(Fault.status(500))
    assert httpx.post(fake.base_url + "/api/embed", json={"model": "m", "input": "a"}).status_code == 500
    assert httpx.post(fake.base_url + "/api/embed", json={"model": "m"}).status_code == 400


# --- every format ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", openai_body()),
        ("/v1/messages", anthropic_body()),
        ("/api/chat", ollama_body()),
    ],
    ids=["openai", "anthropic", "ollama"],
)
def test_a_broken_whole_answer_is_cut_mid_body(fake: FakeProvider, path: str, body: dict[str, Any]) -> None:
    fake.script(Fault.break_stream(0))
    broken = raw(fake, path, body | {"stream": False})
    assert isinstance(broken.error, httpx.RemoteProtocolError) and broken.data
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.data)


@pytest.mark.parametrize(
    ("path", "body", "text_of", "ends"),
    [
        ("/v1/chat/completions", openai_body(stream=True), lambda e: e["choices"][0]["delta"].get("content"),
         lambda e: e == "[DONE]" or e["choices"][0]["finish_reason"] is not None),
        ("/v1/messages", anthropic_body(stream=True), lambda e: e.get("delta", {}).get("text"),
         lambda e: e["type"] in ("message_delta", "message_stop")),
        ("/api/chat", ollama_body(), lambda e: e["message"]["content"], lambda e: e["done"]),
    ],
    ids=["openai", "anthropic", "ollama"],
)  # fmt: skip
def test_a_stream_broken_after_its_last_chunk_still_has_no_end(
    fake: FakeProvider,
    path: str,
    body: dict[str, Any],
    text_of: Callable[[Any], str | None],
    ends: Callable[[Any], bool],
) -> None:
    fake.script(Fault.break_stream(99))
    broken = raw(fake, path, body)
    items = broken.lines() if path == "/api/chat" else [data for _, data in broken.events()]
    assert isinstance(broken.error, httpx.RemoteProtocolError)
    assert "".join(text_of(item) or "" for item in items) == ANSWER
    assert not any(ends(item) for item in items)


def test_chunk_delay_paces_the_stream(fake: FakeProvider) -> None:
    fake.chunk_delay = 60.0
    with httpx.stream(
        "POST", fake.base_url + "/api/chat", json=ollama_body(), timeout=httpx.Timeout(10, read=1.0)
    ) as response:
        lines = response.iter_lines()
        assert json.loads(next(lines))["message"]["content"] == "echo:"  # the first chunk is not held
        with pytest.raises(httpx.ReadTimeout):
            next(lines)


def test_fault_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        Fault.break_stream(-1)
    with pytest.raises(ValueError):
        Fault.tool_call("", {})
