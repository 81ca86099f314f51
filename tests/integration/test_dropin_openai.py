"""The official ``openai`` SDK pointed at a running stack: a one-line change, everything still applied.

Each test runs the real API and worker against Redis and the fake provider; the SDK is the judge
of the wire format (it parses every answer, stream and error into its own types).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
from openai.types.chat import ChatCompletionChunk

from gateway.redis_server import RedisServer
from tests.fakes.provider import FakeProvider, Fault
from tests.integration.harness import Stack, audit_events, fake_models, wait_until

StartStack = Callable[..., Stack]
PII_LOCAL = [{"name": "pii_local", "rule": "if_context_contains_pii_use_sensitive_model"}]
DRAFTS = [{"name": "drafts", "rule": "all_outputs_are_drafts"}]
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


_OPEN: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Every SDK client a test made is closed with it (an open pool would leak its sockets)."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def new_client(base_url: str, key: str) -> openai.OpenAI:
    _OPEN.append(openai.OpenAI(base_url=base_url, api_key=key, max_retries=0))
    return _OPEN[-1]


def read_job(stack: Stack, job_id: str) -> dict[str, Any]:
    with stack.api.client() as http:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
    return job


def sdk(stack: Stack) -> openai.OpenAI:
    return new_client(f"{stack.api.url}/v1", stack.api.token)


def test_openai_sdk_chat_answers_through_the_queue_with_aigw_headers(stack: StartStack) -> None:
    s = stack(policies=[])
    raw = sdk(s).chat.completions.with_raw_response.create(
        model="openai",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hi"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-fake"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert raw.headers["x-aigw-model"] == "openai"
    assert raw.headers["x-aigw-offline"] == "false" and raw.headers["x-aigw-draft"] == "false"
    job = read_job(s, raw.headers["x-aigw-job-id"])
    assert job["status"] == "succeeded" and job["result"]["output"] == "echo: hi"
    body = s.fake.bodies_for("gpt-fake")[-1]
    assert body["messages"][0] == {"role": "system", "content": "be brief"}


@pytest.mark.parametrize(
    ("model", "alias", "path"),
    [("claude-fake", "general", "/v1/messages"), ("auto", "general", "/v1/messages"),
     ("classification", "openai", "/v1/chat/completions")],
)  # fmt: skip
def test_openai_sdk_model_may_be_a_provider_model_auto_or_a_task_tag(
    stack: StartStack, model: str, alias: str, path: str
) -> None:
    s = stack(policies=[])
    raw = sdk(s).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "route me"}]
    )
    assert raw.parse().choices[0].message.content == "echo: route me"
    assert raw.headers["x-aigw-model"] == alias
    assert s.fake.requests[-1].path == path


def test_openai_sdk_unknown_model_is_not_found_and_models_lists_the_aliases(stack: StartStack) -> None:
    s = stack(policies=[])
    client = sdk(s)
    with pytest.raises(openai.NotFoundError, match="gpt-9"):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert {m.id for m in client.models.list()} == set(s.config.models.models)
    assert client.models.retrieve("openai").id == "openai"
    assert client.models.retrieve("gpt-fake").id == "gpt-fake"  # what a chat request accepts, too
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")


def test_openai_sdk_stream_relays_tokens_and_counts_usage_exactly_as_unstreamed(
    stack: StartStack, redis_client: redis.Redis
) -> None:
    s = stack(policies=[])
    client = sdk(s)
    prompt: Any = [{"role": "user", "content": "tell me three short things about streams"}]
    whole = client.chat.completions.create(model="openai", messages=prompt)
    chunks = list(
        client.chat.completions.create(
            model="openai", messages=prompt, stream=True, stream_options={"include_usage": True}
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1  # really streamed, not one blob
    assert "".join(pieces) == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    usage = chunks[-1].usage
    assert usage is not None and whole.usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        whole.usage.prompt_tokens, whole.usage.completion_tokens,
    )  # fmt: skip
    assert s.fake.bodies_for("gpt-fake")[-1]["stream"] is True
    wait_until(lambda: len(audit_events(redis_client)) >= 2, "two audit lines")
    plain, streamed = audit_events(redis_client)[-2:]
    for field in ("input_tokens", "output_tokens", "cost_usd", "model", "provider_model"):
        assert streamed[field] == plain[field], field
    assert streamed["cost_usd"] > 0


def test_openai_format_tool_calls_are_translated_to_an_anthropic_model_and_back(stack: StartStack) -> None:
    s = stack(policies=[])
    s.fake.script(Fault.tool_call("get_weather", {"city": "Oslo"}), model="claude-fake")
    client = sdk(s)
    messages: list[Any] = [{"role": "user", "content": "weather in Oslo?"}]
    first = client.chat.completions.create(model="general", messages=messages, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
    sent = s.fake.bodies_for("claude-fake")[-1]
    assert sent["tools"][0]["name"] == "get_weather" and "input_schema" in sent["tools"][0]

    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]  # fmt: skip
    second = client.chat.completions.create(model="general", messages=messages, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    turns = s.fake.bodies_for("claude-fake")[-1]["messages"]
    assert turns[1]["content"][0] == {"type": "tool_use", "id": call.id, "name": "get_weather",
                                      "input": {"city": "Oslo"}}  # fmt: skip
    result = turns[2]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == call.id
    assert "sunny, 21 C" in json.dumps(result)


def test_openai_sdk_streamed_tool_call_arguments_reassemble(stack: StartStack) -> None:
    s = stack(policies=[])
    s.fake.script(Fault.tool_call("get_weather", {"city": "Bergen", "unit": "C"}), model="claude-fake")
    stream = sdk(s).chat.completions.create(
        model="general", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER], stream=True
    )
    arguments, names, finish = "", [], None
    for chunk in stream:
        assert isinstance(chunk, ChatCompletionChunk)
        for call in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            names += [call.function.name] if call.function and call.function.name else []
            arguments += call.function.arguments or "" if call.function else ""
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert names == ["get_weather"] and json.loads(arguments) == {"city": "Bergen", "unit": "C"}
    assert finish == "tool_calls"


def test_openai_sdk_embeddings_through_the_queue(stack: StartStack) -> None:
    s = stack(policies=[])
    client = sdk(s)
    vectors = client.embeddings.create(model="openai", input=["alpha", "beta"])  # base64 by default
    floats = client.embeddings.create(model="openai", input="alpha", encoding_format="float")
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) > 0
    assert floats.data[0].embedding == pytest.approx(vectors.data[0].embedding, abs=1e-6)
    assert vectors.usage.prompt_tokens > 0
    assert s.fake.requests[-1].path == "/v1/embeddings"
    local = client.embeddings.create(model="sensitive", input="gamma")
    assert s.fake.requests[-1].path == "/api/embed" and len(local.data) == 1


def test_openai_sdk_embeddings_with_pii_embed_locally(stack: StartStack) -> None:
    s = stack(policies=PII_LOCAL)
    raw = sdk(s).embeddings.with_raw_response.create(model="openai", input="mail jane.doe@example.com")
    assert raw.headers["x-aigw-model"] == "sensitive"
    assert [r.path for r in s.fake.requests] == ["/api/embed"]


def test_openai_sdk_pii_prompt_is_served_by_the_local_model(stack: StartStack) -> None:
    s = stack(policies=PII_LOCAL)
    raw = sdk(s).chat.completions.with_raw_response.create(
        model="openai", messages=[{"role": "user", "content": "email jane.doe@example.com back"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "echo: email jane.doe@example.com back"
    assert raw.headers["x-aigw-model"] == "sensitive"
    assert "pii_local=route" in raw.headers["x-aigw-policy"]
    assert [r.path for r in s.fake.requests] == ["/api/chat"]  # nothing went to the cloud model


def test_openai_sdk_drafts_are_marked_in_headers_and_the_final_chunk(stack: StartStack) -> None:
    s = stack(policies=DRAFTS)
    client = sdk(s)
    raw = client.chat.completions.with_raw_response.create(
        model="openai", messages=[{"role": "user", "content": "x"}]
    )
    assert raw.headers["x-aigw-draft"] == "true"
    extra = raw.parse().model_extra
    assert extra is not None and extra["aigw"]["draft"] is True
    chunks = list(client.chat.completions.create(model="openai", messages=[{"role": "user", "content": "y"}],
                                                 stream=True))  # fmt: skip
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert final.model_extra is not None and final.model_extra["aigw"]["draft"] is True


def test_openai_sdk_broken_stream_raises_and_never_ends_cleanly(stack: StartStack) -> None:
    s = stack(policies=[])
    s.fake.script(Fault.break_stream(after=2), model="gpt-fake")
    raw = sdk(s).chat.completions.with_raw_response.create(
        model="openai", messages=[{"role": "user", "content": "one two three four five"}], stream=True
    )
    seen: list[Any] = []
    with pytest.raises(openai.APIError, match="stream"):
        for chunk in raw.parse():
            seen.append(chunk)
    text = "".join(c.choices[0].delta.content or "" for c in seen if c.choices)
    assert text.startswith("echo:")  # the first tokens arrived...
    assert not any(c.choices and c.choices[0].finish_reason for c in seen)  # ...and no clean end
    job = read_job(s, raw.headers["x-aigw-job-id"])
    assert job["status"] == "failed" and job["error"]["type"] == "stream_interrupted"


def test_a_stream_that_fails_before_its_first_token_fails_over(stack: StartStack) -> None:
    s = stack(policies=[])
    s.fake.script(Fault.status(503), model="claude-fake")
    raw = sdk(s).chat.completions.with_raw_response.create(
        model="general", messages=[{"role": "user", "content": "hello"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert raw.headers["x-aigw-model"] == "offline" and raw.headers["x-aigw-offline"] == "true"
    assert text.startswith("[aigw offline provider]")


def test_openai_sdk_typed_errors(stack: StartStack, redis_client: redis.Redis) -> None:
    s = stack(
        policies=[
            {"name": "no_secrets", "rule": "block_secrets"},
            # one call of max_tokens 1 fits (worst case $0.000021), and spends what the next needs
            {"name": "cap", "rule": "budget", "limit_usd": 0.000025, "applies_to": {"models": ["general"]}},
        ]
    )
    client = sdk(s)
    hi: Any = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=f"{s.api.url}/v1", api_key="aigw_wrong", max_retries=0
        ).chat.completions.create(model="openai", messages=hi)
    with pytest.raises(openai.PermissionDeniedError, match="no_secrets|secret"):
        client.chat.completions.create(
            model="openai",
            messages=[{"role": "user", "content": "key sk-proj-abcdefghijklmnopqrstuvwxyz0123456789AB"}],
        )
    with pytest.raises(openai.BadRequestError, match="seed") as refused:
        client.chat.completions.create(model="general", messages=hi, seed=7)
    assert isinstance(refused.value.body, dict) and refused.value.body.get("param") == "seed"
    with pytest.raises(openai.BadRequestError, match="frequency_penalty"):
        client.chat.completions.create(model="openai", messages=hi, frequency_penalty=0.5)
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="openai", messages=[{"role": "wizard", "content": "x"}])  # type: ignore[list-item,misc]
    client.chat.completions.create(model="general", messages=hi, max_tokens=1)  # spends the tiny budget
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="general", messages=hi, max_tokens=1)
    assert int(limited.value.response.headers["retry-after"]) >= 1


def test_openai_sdk_gets_503_with_retry_after_when_redis_is_down(
    gateway_config: Callable[..., Any], start_api: Callable[..., Any], tmp_path: Path
) -> None:
    own = RedisServer.start(tmp_path / "redis-own")
    try:
        api = start_api(gateway_config(policies=[]), on_redis=own.url)
        own.stop()
        with pytest.raises(openai.APIStatusError) as down:
            new_client(f"{api.url}/v1", api.token).chat.completions.create(
                model="openai", messages=[{"role": "user", "content": "x"}]
            )
        assert down.value.status_code == 503 and int(down.value.response.headers["retry-after"]) >= 1
        assert down.value.body is not None and "Redis" in str(down.value.body)
    finally:
        own.stop()


def test_a_client_that_hangs_up_mid_stream_cancels_its_job(stack: StartStack) -> None:
    s = stack(policies=[])
    s.fake.chunk_delay = 0.3
    with httpx.Client(base_url=s.api.url, headers={"authorization": f"Bearer {s.api.token}"}) as http:
        body = {
            "model": "openai",
            "stream": True,
            "messages": [{"role": "user", "content": "a b c d e f g h i j"}],
        }
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            job_id = response.headers["x-aigw-job-id"]
            next(response.iter_lines())  # the first chunk came; then hang up
        wait_until(
            lambda: http.get(f"/v1/jobs/{job_id}").json()["status"] == "canceled",
            "the job canceled",
            timeout=20,
        )


def test_a_streamed_answer_has_redact_pii_placeholders_put_back_like_a_whole_one(stack: StartStack) -> None:
    s = stack(policies=[{"name": "mask", "rule": "redact_pii"}])
    prompt = "write to jane.doe@example.com and call +1 (415) 555-2671 today"
    chunks = list(
        sdk(s).chat.completions.create(
            model="openai", messages=[{"role": "user", "content": prompt}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"echo: {prompt}"  # the client sees its own values...
    sent = json.dumps(s.fake.bodies_for("gpt-fake")[-1])
    assert "jane.doe@example.com" not in sent and "[EMAIL_1]" in sent  # ...the provider never did


def test_the_end_user_field_counts_as_pii_and_keeps_the_job_local(stack: StartStack) -> None:
    s = stack(policies=PII_LOCAL)
    raw = sdk(s).chat.completions.with_raw_response.create(
        model="openai", messages=[{"role": "user", "content": "hello"}], user="jane.doe@example.com"
    )
    assert raw.headers["x-aigw-model"] == "sensitive"
    assert [r.path for r in s.fake.requests] == ["/api/chat"]


def test_a_failed_job_tells_the_sdk_not_to_retry_it(stack: StartStack) -> None:
    s = stack(policies=[], jobs={"max_attempts": 1})
    s.fake.script(Fault.status(400), model="gpt-fake")  # the provider refused what aigw sent: a 502
    retrying = openai.OpenAI(base_url=f"{s.api.url}/v1", api_key=s.api.token, max_retries=2)
    _OPEN.append(retrying)
    with pytest.raises(openai.InternalServerError) as failed:  # an SDK retries a 5xx by default...
        retrying.chat.completions.create(model="openai", messages=[{"role": "user", "content": "x"}])
    assert failed.value.status_code == 502
    assert failed.value.response.headers["x-should-retry"] == "false"
    assert read_job(s, failed.value.response.headers["x-aigw-job-id"])["status"] == "failed"
    assert s.fake.count(model="gpt-fake") == 1  # aigw ran it once; the SDK did not send it again


def test_embeddings_with_the_response_cache_on_still_return_vectors(stack: StartStack) -> None:
    s = stack(policies=[])
    client = sdk(s)
    for _ in range(2):
        vectors = client.embeddings.create(
            model="openai", input="cache me", extra_headers={"x-aigw-cache": "true"}
        )
        assert len(vectors.data) == 1 and vectors.data[0].embedding
    assert s.fake.count(path="/v1/embeddings") == 2  # embeddings are never answered from the cache


def test_embeddings_with_model_auto_go_to_the_alias_serving_the_embeddings_task(
    stack: StartStack, fake: FakeProvider
) -> None:
    models: Any = fake_models(fake.base_url)
    models["models"]["embeddings"] = {
        "provider": "openai", "model": "text-embedding-fake", "api_base": f"{fake.base_url}/v1",
        "api_key_env": "AIGW_TEST_OPENAI_KEY", "capabilities": {"embeddings": True},
        "use_for": ["embeddings"],
    }  # fmt: skip
    s = stack(policies=[], models=models)
    client = sdk(s)
    for model in ("auto", "text-embedding-fake"):
        assert client.embeddings.create(model=model, input="vectors please").data
        assert s.fake.requests[-1].body["model"] == "text-embedding-fake"
    with pytest.raises(openai.BadRequestError, match="does not embed"):
        client.embeddings.create(model="general", input="not a chat model's job")
