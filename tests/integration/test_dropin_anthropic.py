"""The official ``anthropic`` SDK pointed at a running stack: Messages in, the queue, Messages out.

The SDK judges the wire format: it parses every message, every streamed event (in order) and every
error into its own types. Requests go through the real API and worker to the fake provider.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import pytest
import redis

from tests.fakes.provider import Fault
from tests.integration.harness import Stack, audit_events, wait_until

StartStack = Callable[..., Stack]
LEAKED_KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789AB"
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


_OPEN: list[anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Every SDK client a test made is closed with it (an open pool would leak its sockets)."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def new_client(base_url: str, key: str) -> anthropic.Anthropic:
    _OPEN.append(anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0))
    return _OPEN[-1]


def sdk(stack: Stack) -> anthropic.Anthropic:
    return new_client(stack.api.url, stack.api.token)


def test_anthropic_sdk_messages_answer_through_the_queue(stack: StartStack) -> None:
    s = stack(policies=[])
    raw = sdk(s).messages.with_raw_response.create(
        model="general", max_tokens=100, system="be brief", messages=[{"role": "user", "content": "hi"}]
    )
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text == "echo: hi"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    assert message.model == "claude-fake"
    assert raw.headers["x-aigw-model"] == "general" and raw.headers["x-aigw-job-id"]
    assert s.fake.bodies_for("claude-fake")[-1]["system"] == "be brief"


def test_anthropic_format_served_by_an_openai_model(stack: StartStack) -> None:
    s = stack(policies=[])
    message = sdk(s).messages.create(
        model="gpt-fake",
        max_tokens=50,
        system="short",
        messages=[{"role": "user", "content": "translate me"}],
    )
    assert message.content[0].type == "text" and message.content[0].text == "echo: translate me"
    body = s.fake.bodies_for("gpt-fake")[-1]
    assert body["messages"][0] == {"role": "system", "content": "short"}
    assert s.fake.requests[-1].path == "/v1/chat/completions"


def test_anthropic_sdk_stream_events_in_order_with_usage_equal_to_unstreamed(
    stack: StartStack, redis_client: redis.Redis
) -> None:
    s = stack(policies=[])
    client = sdk(s)
    prompt = [{"role": "user", "content": "a few words to stream back"}]
    whole = client.messages.create(model="general", max_tokens=200, messages=prompt)  # type: ignore[arg-type]
    with client.messages.stream(model="general", max_tokens=200, messages=prompt) as stream:  # type: ignore[arg-type]
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "message_delta" in kinds
    assert kinds.count("text") > 1 or kinds.count("content_block_delta") > 1
    assert final.content[0].type == "text" and whole.content[0].type == "text"
    assert final.content[0].text == whole.content[0].text
    assert final.usage.output_tokens == whole.usage.output_tokens
    wait_until(lambda: len(audit_events(redis_client)) >= 2, "two audit lines")
    plain, streamed = audit_events(redis_client)[-2:]
    for field in ("input_tokens", "output_tokens", "cost_usd"):
        assert streamed[field] == plain[field], field


def test_anthropic_tool_use_translated_to_an_openai_model_and_back(stack: StartStack) -> None:
    s = stack(policies=[])
    s.fake.script(Fault.tool_call("get_weather", {"city": "Oslo"}), model="gpt-fake")
    client = sdk(s)
    first = client.messages.create(
        model="openai", max_tokens=100, tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "weather in Oslo?"}],
    )  # fmt: skip
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Oslo"}
    assert s.fake.bodies_for("gpt-fake")[-1]["tools"][0]["function"]["name"] == "get_weather"
    second = client.messages.create(
        model="openai", max_tokens=100, tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},  # type: ignore[list-item,misc]
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
        ],
    )  # fmt: skip
    assert second.stop_reason == "end_turn"
    sent = s.fake.bodies_for("gpt-fake")[-1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == use.id
    assert sent[2] == {"role": "tool", "tool_call_id": use.id, "content": "sunny"}


def test_anthropic_sdk_streamed_tool_use_input_arrives_whole(stack: StartStack) -> None:
    s = stack(policies=[])
    s.fake.script(Fault.tool_call("get_weather", {"city": "Bergen"}), model="gpt-fake")
    with sdk(s).messages.stream(
        model="openai", max_tokens=100, tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "weather?"}],
    ) as stream:  # fmt: skip
        final = stream.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.input == {"city": "Bergen"} and final.stop_reason == "tool_use"


def test_anthropic_sdk_typed_errors_and_count_tokens(stack: StartStack) -> None:
    s = stack(policies=[{"name": "no_secrets", "rule": "block_secrets"}])
    client = sdk(s)
    hi: list[Any] = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.AuthenticationError):
        new_client(s.api.url, "aigw_wrong").messages.create(model="general", max_tokens=10, messages=hi)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="claude-9", max_tokens=10, messages=hi)
    with pytest.raises(anthropic.PermissionDeniedError):
        client.messages.create(
            model="general", max_tokens=10,
            messages=[{"role": "user", "content": f"my key is {LEAKED_KEY}"}],
        )  # fmt: skip
    with pytest.raises(anthropic.BadRequestError, match="top_k"):
        client.messages.create(model="general", max_tokens=10, messages=hi, extra_body={"top_k": 5})
    with pytest.raises(anthropic.UnprocessableEntityError):
        wizard: Any = [{"role": "wizard", "content": "x"}]
        client.messages.create(model="general", max_tokens=10, messages=wizard)
    counted = client.messages.count_tokens(model="general", messages=[{"role": "user", "content": "x" * 40}])
    assert counted.input_tokens == 10


def test_anthropic_sdk_broken_stream_raises_and_has_no_message_stop(stack: StartStack) -> None:
    s = stack(policies=[])
    s.fake.script(Fault.break_stream(after=2), model="claude-fake")
    kinds: list[str] = []
    words = [{"role": "user", "content": "one two three four"}]
    with (
        pytest.raises(anthropic.APIStatusError, match="stream"),
        sdk(s).messages.stream(model="general", max_tokens=100, messages=words) as stream,  # type: ignore[arg-type]
    ):
        kinds.extend(event.type for event in stream)
    assert "message_start" in kinds and "message_stop" not in kinds
