"""The job API's richer requests: tools, embeddings, capabilities the routed model must have."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.fakes.provider import FakeProvider, Fault
from tests.integration.harness import Stack, fake_models, submit

StartStack = Callable[..., Stack]
TOOL = {"name": "lookup", "description": "find an order", "parameters": {"type": "object", "properties": {}}}


def test_a_field_the_routed_model_cannot_honour_is_refused_naming_it(stack: StartStack) -> None:
    s = stack(policies=[])
    refused = submit(s.api, {"prompt": "x", "model": "general", "seed": 3})  # Anthropic has no seed
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "type": "unsupported_field",
        "message": refused.json()["error"]["message"],
        "param": "seed",
    }
    assert "seed" in refused.json()["error"]["message"] and s.fake.count() == 0
    accepted = submit(s.api, {"prompt": "x", "model": "openai", "seed": 3})
    assert accepted.json()["status"] == "succeeded"
    assert s.fake.bodies_for("gpt-fake")[-1]["seed"] == 3


def test_an_image_for_a_model_that_takes_none_is_a_422(stack: StartStack, fake: FakeProvider) -> None:
    models: Any = fake_models(fake.base_url)
    models["models"]["openai"]["capabilities"] = {"images": False}
    s = stack(policies=[], models=models)
    image = {"type": "image", "url": "https://example.com/cat.png"}
    body = {
        "model": "openai",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, image]}],
    }
    refused = submit(s.api, body)
    assert refused.status_code == 422 and refused.json()["error"]["type"] == "unsupported_content"
    body["model"] = "general"  # Anthropic takes images
    assert submit(s.api, body).json()["status"] == "succeeded"
    sent = s.fake.bodies_for("claude-fake")[-1]["messages"][0]["content"]
    assert {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}} in sent


def test_a_fallback_that_cannot_honour_a_field_is_skipped_with_the_reason(
    stack: StartStack, fake: FakeProvider
) -> None:
    models: Any = fake_models(fake.base_url)
    models["models"]["openai"]["fallbacks"] = ["general"]
    s = stack(policies=[], models=models, jobs={"max_attempts": 1})
    s.fake.script(Fault.status(503), model="gpt-fake")
    job = submit(s.api, {"prompt": "x", "model": "openai", "seed": 1}).json()
    # openai (503) -> general (Anthropic: no seed, skipped) -> offline (answers)
    assert job["status"] == "succeeded" and job["result"]["model"] == "offline"
    skipped = [c for c in job["result"]["calls"] if c["outcome"] == "skipped"]
    assert [c["deployment"] for c in skipped] == ["general/0:anthropic"]
    assert "seed" in skipped[0]["error"]["reason"]
    assert s.fake.count(model="claude-fake") == 0  # never sent a request cut down to fit


def test_tools_in_a_job_and_the_tool_calls_in_its_result(stack: StartStack) -> None:
    s = stack(policies=[])
    s.fake.script(Fault.tool_call("lookup", {"order": 42}), model="gpt-fake")
    job = submit(s.api, {"prompt": "where is order 42?", "model": "openai", "tools": [TOOL],
                         "tool_choice": {"mode": "tool", "name": "lookup"}}).json()  # fmt: skip
    assert job["status"] == "succeeded" and job["result"]["finish_reason"] == "tool_calls"
    call = job["result"]["tool_calls"][0]
    assert call["name"] == "lookup" and json.loads(call["arguments"]) == {"order": 42}
    sent = s.fake.bodies_for("gpt-fake")[-1]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}


def test_an_embedding_job_returns_one_vector_per_text_and_is_charged(stack: StartStack) -> None:
    s = stack(policies=[])
    job = submit(s.api, {"embed": ["first text", "second text"], "model": "openai"}).json()
    assert job["status"] == "succeeded"
    vectors = job["result"]["embeddings"]
    assert len(vectors) == 2 and vectors[0] != vectors[1]
    assert job["result"]["usage"]["input_tokens"] > 0 and job["result"]["cost_usd"] > 0
    refused = submit(s.api, {"embed": ["x"], "model": "general"})  # Anthropic has no embeddings
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "input"


def test_a_streamed_native_job_is_read_token_by_token_as_server_sent_events(stack: StartStack) -> None:
    s = stack(policies=[])
    job = submit(s.api, {"prompt": "one two three four", "model": "openai", "stream": True}, wait=0).json()
    with s.api.client() as http, http.stream("GET", f"/v1/jobs/{job['id']}/stream") as response:
        assert response.status_code == 200 and response.headers["x-aigw-model"] == "openai"
        events = [
            line.removeprefix("event: ") for line in response.iter_lines() if line.startswith("event: ")
        ]
    assert events[0] == "start" and events[-1] == "end" and events.count("text") > 1
    unstreamed = submit(s.api, {"prompt": "whole", "model": "openai"}).json()
    with s.api.client() as http, http.stream("GET", f"/v1/jobs/{unstreamed['id']}/stream") as response:
        lines = list(response.iter_lines())
    assert [x for x in lines if x.startswith("event: ")] == ["event: start", "event: text", "event: end"]
    assert 'data: {"text":"echo: whole"}' in lines


def test_a_forced_tool_call_is_refused_for_a_model_that_cannot_be_made_to_call_one(stack: StartStack) -> None:
    s = stack(policies=[])
    body = {"prompt": "x", "model": "sensitive", "tools": [TOOL], "tool_choice": {"mode": "required"}}
    refused = submit(s.api, body)  # Ollama has no tool_choice
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "tool_choice"
    body["tool_choice"] = {"mode": "auto"}
    assert submit(s.api, body).json()["status"] == "succeeded"
    assert s.fake.bodies_for("llama-fake")[-1]["tools"][0]["function"]["name"] == "lookup"


def test_a_broken_ndjson_stream_from_ollama_fails_the_job_and_ends_with_an_error_event(
    stack: StartStack,
) -> None:
    s = stack(policies=[], jobs={"max_attempts": 2})
    s.fake.script(Fault.break_stream(after=2), model="llama-fake")
    job = submit(s.api, {"prompt": "one two three four five", "model": "sensitive", "stream": True}).json()
    assert job["status"] == "failed" and job["error"]["type"] == "stream_interrupted"
    assert s.fake.count(model="llama-fake") == 1  # never retried: the client had half an answer
    with s.api.client() as http, http.stream("GET", f"/v1/jobs/{job['id']}/stream") as response:
        events = [
            line.removeprefix("event: ") for line in response.iter_lines() if line.startswith("event: ")
        ]
    assert events[0] == "start" and "text" in events and events[-1] == "error" and "end" not in events


def test_an_error_event_inside_a_stream_before_any_token_fails_over(stack: StartStack) -> None:
    s = stack(policies=[])
    s.fake.script(Fault.stream_error(after=0, message="overloaded"), model="claude-fake")
    job = submit(s.api, {"prompt": "hello", "model": "general", "stream": True}).json()
    assert job["status"] == "succeeded" and job["result"]["model"] == "offline"
    first = job["result"]["calls"][0]
    assert first["deployment"] == "general/0:anthropic" and first["outcome"] == "error"
    assert first["error"]["type"] == "rate_limited"  # Anthropic's overloaded_error: back off, fail over
