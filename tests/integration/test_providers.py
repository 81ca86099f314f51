"""Each network provider against the fake provider server: wire formats, usage, and every error path."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, TypeVar

import pytest

from gateway.config import Deployment, Timeouts
from gateway.errors import (
    BadProviderResponseError,
    ConfigError,
    ProviderAuthError,
    ProviderError,
    ProviderRequestError,
    ProviderUnavailableError,
    RateLimitedError,
)
from gateway.jobs import Message
from tests.fakes.provider import REDACTED, FakeProvider, Fault
from workers.providers.base import Completion, CompletionRequest
from workers.providers.registry import PROVIDER_KINDS, build_provider

E = TypeVar("E", bound=ProviderError)

KEY_ENV = {"openai": "AIGW_TEST_OPENAI_KEY", "anthropic": "AIGW_TEST_ANTHROPIC_KEY", "ollama": None}
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "ollama": "/api/chat"}
KINDS = ["openai", "anthropic", "ollama"]
KEYED = ["openai", "anthropic"]
QUESTION = "What is the capital of France?"
REQUEST = CompletionRequest(
    messages=[Message(role="system", content="be brief"), Message(role="user", content=QUESTION)],
    max_tokens=64,
    temperature=0.2,
)


@pytest.fixture(autouse=True)
def key(fake: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> str:
    """The key the shared fake accepts (harness.FAKE_KEY), exported in the variables deployments name."""
    assert fake.api_key is not None
    for env in KEY_ENV.values():
        if env:
            monkeypatch.setenv(env, fake.api_key)
    return fake.api_key


def _deployment(kind: str, fake: FakeProvider, **changes: Any) -> Deployment:
    base = fake.base_url + "/v1" if kind == "openai" else fake.base_url
    fields: dict[str, Any] = {"provider": kind, "model": f"{kind}-model", "api_base": base}
    fields["api_key_env"] = KEY_ENV[kind]
    return Deployment(**{**fields, **changes})


async def _call(deployment: Deployment, request: CompletionRequest) -> Completion:
    provider = build_provider(f"test/0:{deployment.provider}", deployment, os.environ)
    try:
        return await provider.complete(request)
    finally:
        await provider.aclose()


def _complete(deployment: Deployment, request: CompletionRequest = REQUEST) -> Completion:
    return asyncio.run(_call(deployment, request))


def _fails(deployment: Deployment, error: type[E]) -> E:
    with pytest.raises(error) as info:
        _complete(deployment)
    assert info.value.deployment == f"test/0:{deployment.provider}"
    return info.value


def _body(fake: FakeProvider) -> Any:
    (record,) = fake.requests
    return record.body


# --- success and wire formats ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_provider_success_parses_text_and_usage(fake: FakeProvider, kind: str) -> None:
    completion = _complete(_deployment(kind, fake))
    reply = f"echo: {QUESTION}"
    assert completion.text == reply
    assert completion.input_tokens == -(-len("be brief" + QUESTION) // 4)
    assert completion.output_tokens == -(-len(reply) // 4)
    assert completion.provider_model == f"{kind}-model"
    assert completion.finish_reason == "stop"  # OpenAI's words for every kind (gateway.chat)
    assert fake.count(model=f"{kind}-model", path=PATHS[kind]) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_provider_reports_truncation_as_finish_reason(fake: FakeProvider, kind: str) -> None:
    request = CompletionRequest(messages=[Message(role="user", content="x" * 100)], max_tokens=3)
    completion = _complete(_deployment(kind, fake), request)
    assert len(completion.text) == 12
    assert completion.finish_reason == "length"


@pytest.mark.parametrize(("kind", "header"), [("openai", "authorization"), ("anthropic", "x-api-key")])
def test_provider_sends_key_in_expected_header(fake: FakeProvider, key: str, kind: str, header: str) -> None:
    _complete(_deployment(kind, fake))
    (record,) = fake.requests
    assert record.auth_header == header
    assert record.key_ok
    assert record.headers[header] == REDACTED
    assert key not in repr(record)


def test_anthropic_sends_api_version(fake: FakeProvider) -> None:
    _complete(_deployment("anthropic", fake))
    assert fake.requests[0].headers["anthropic-version"] == "2023-06-01"


def test_anthropic_puts_system_in_top_level_field(fake: FakeProvider) -> None:
    _complete(_deployment("anthropic", fake))
    body = _body(fake)
    assert body["system"] == "be brief"
    assert body["messages"] == [{"role": "user", "content": QUESTION}]
    assert body["max_tokens"] == 64


def test_anthropic_clamps_temperature_to_its_range(fake: FakeProvider) -> None:
    request = CompletionRequest(messages=REQUEST.messages, max_tokens=64, temperature=1.7)
    _complete(_deployment("anthropic", fake), request)
    assert _body(fake)["temperature"] == 1.0


def test_openai_keeps_system_message_and_max_tokens(fake: FakeProvider) -> None:
    _complete(_deployment("openai", fake))
    body = _body(fake)
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert (body["max_tokens"], body["temperature"]) == (64, 0.2)


def test_openai_uses_max_completion_tokens_against_openai() -> None:
    async def payload() -> dict[str, Any]:
        provider = build_provider("o/0:openai", Deployment(provider="openai", model="gpt-4o-mini"), {})
        try:
            return provider.payload(REQUEST)  # type: ignore[attr-defined, no-any-return]
        finally:
            await provider.aclose()

    body = asyncio.run(payload())
    assert body["max_completion_tokens"] == 64
    assert "max_tokens" not in body


def test_ollama_sends_options_without_stream_or_key(fake: FakeProvider) -> None:
    _complete(_deployment("ollama", fake))
    body = _body(fake)
    assert body["stream"] is False
    assert body["options"] == {"num_predict": 64, "temperature": 0.2}
    assert fake.requests[0].auth_header is None


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_provider_429_is_rate_limited_with_retry_after(fake: FakeProvider, kind: str) -> None:
    fake.script(Fault.status(429, retry_after=2))
    error = _fails(_deployment(kind, fake), RateLimitedError)
    assert error.retry_after == 2.0
    assert error.retryable


def test_provider_retry_after_http_date_is_seconds_from_now(fake: FakeProvider) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    fake.script(Fault.status(429, retry_after=format_datetime(when, usegmt=True)))
    error = _fails(_deployment("openai", fake), RateLimitedError)
    assert error.retry_after is not None
    assert 25 <= error.retry_after <= 30


def test_anthropic_529_overloaded_is_rate_limited(fake: FakeProvider) -> None:
    fake.script(Fault.status(529))
    error = _fails(_deployment("anthropic", fake), RateLimitedError)
    assert error.retry_after is None


@pytest.mark.parametrize("kind", KINDS)
def test_provider_500_is_unavailable(fake: FakeProvider, kind: str) -> None:
    fake.script(Fault.status(500))
    assert _fails(_deployment(kind, fake), ProviderUnavailableError).retryable


@pytest.mark.parametrize("status", [408, 409, 502, 503, 504])
def test_provider_transient_statuses_are_unavailable(fake: FakeProvider, status: int) -> None:
    fake.script(Fault.status(status))
    assert _fails(_deployment("openai", fake), ProviderUnavailableError).retryable


@pytest.mark.parametrize("kind", KEYED)
def test_provider_wrong_key_is_auth_error_naming_env_var(
    fake: FakeProvider, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "sk-wrong-9a8b7c6d5e"
    monkeypatch.setenv(str(KEY_ENV[kind]), wrong)
    error = _fails(_deployment(kind, fake), ProviderAuthError)
    assert str(KEY_ENV[kind]) in error.message
    assert wrong not in str(error.to_dict())
    assert not error.retryable


@pytest.mark.parametrize("kind", KEYED)
def test_provider_403_quoting_the_key_never_leaks_it(fake: FakeProvider, key: str, kind: str) -> None:
    fake.script(Fault.status(403, message=f"key {key} may not use this model"))
    error = _fails(_deployment(kind, fake), ProviderAuthError)
    assert key not in error.message
    assert str(KEY_ENV[kind]) in error.message


@pytest.mark.parametrize("kind", KINDS)
def test_provider_400_is_request_error_with_short_detail(fake: FakeProvider, key: str, kind: str) -> None:
    fake.script(Fault.status(400, message=f"unknown parameter near {key} " + "z" * 500))
    error = _fails(_deployment(kind, fake), ProviderRequestError)
    assert "unknown parameter" in error.message
    assert kind not in KEYED or key not in error.message  # Ollama has no key to scrub
    assert len(error.message) < 300
    assert not error.retryable


@pytest.mark.parametrize("kind", KINDS)
def test_provider_garbage_body_is_bad_response(fake: FakeProvider, kind: str) -> None:
    fake.script(Fault.garbage())
    _fails(_deployment(kind, fake), BadProviderResponseError)


@pytest.mark.parametrize("kind", KINDS)
def test_provider_body_without_wire_fields_is_bad_response(fake: FakeProvider, kind: str) -> None:
    fake.script(Fault.json({"object": "something.else"}))
    _fails(_deployment(kind, fake), BadProviderResponseError)


def test_provider_usage_of_wrong_type_is_bad_response(fake: FakeProvider) -> None:
    body = {
        "choices": [{"message": {"content": "hi"}}],
        "usage": {"prompt_tokens": "3", "completion_tokens": 1},
    }
    fake.script(Fault.json(body))
    _fails(_deployment("openai", fake), BadProviderResponseError)


@pytest.mark.parametrize("kind", KINDS)
def test_provider_connection_reset_is_unavailable(fake: FakeProvider, kind: str) -> None:
    fake.script(Fault.reset())
    assert _fails(_deployment(kind, fake), ProviderUnavailableError).retryable


def test_provider_connection_refused_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    deployment = Deployment(provider="ollama", model="m", api_base=f"http://127.0.0.1:{port}")
    _fails(deployment, ProviderUnavailableError)


@pytest.mark.parametrize("kind", KINDS)
def test_provider_read_timeout_is_unavailable(fake: FakeProvider, kind: str) -> None:
    fake.latency = 5.0
    started = time.monotonic()
    _fails(_deployment(kind, fake, timeouts=Timeouts(read=0.2)), ProviderUnavailableError)
    assert time.monotonic() - started < 2


def test_provider_total_timeout_is_unavailable(fake: FakeProvider) -> None:
    fake.script(Fault.timeout(5.0))
    started = time.monotonic()
    error = _fails(
        _deployment("openai", fake, timeouts=Timeouts(read=10, total=0.3)), ProviderUnavailableError
    )
    assert "timeouts.total" in error.message
    assert time.monotonic() - started < 2


# --- keys and availability --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KEYED)
@pytest.mark.parametrize("value", [None, ""])
def test_provider_unset_key_is_unavailable_without_a_call(
    fake: FakeProvider, kind: str, value: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = str(KEY_ENV[kind])
    if value is None:
        monkeypatch.delenv(env)
    else:
        monkeypatch.setenv(env, value)

    async def check() -> str | None:
        provider = build_provider(f"test/0:{kind}", _deployment(kind, fake), os.environ)
        try:
            with pytest.raises(ProviderAuthError, match=env):
                await provider.complete(REQUEST)
            return provider.unavailable_reason()
        finally:
            await provider.aclose()

    assert asyncio.run(check()) == f"{env} is not set"
    assert fake.count() == 0


@pytest.mark.parametrize(("kind", "env"), [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")])
def test_provider_vendor_endpoint_defaults_key_env(
    kind: str, env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(env, raising=False)

    async def reason() -> str | None:
        provider = build_provider(f"v/0:{kind}", Deployment(provider=kind, model="m"), os.environ)
        try:
            return provider.unavailable_reason()
        finally:
            await provider.aclose()

    assert asyncio.run(reason()) == f"{env} is not set"


def test_ollama_is_available_without_key(fake: FakeProvider) -> None:
    async def reason() -> str | None:
        provider = build_provider("s/0:ollama", _deployment("ollama", fake), os.environ)
        try:
            return provider.unavailable_reason()
        finally:
            await provider.aclose()

    assert asyncio.run(reason()) is None


# --- registry and fake behaviour ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(PROVIDER_KINDS))
def test_registry_builds_each_kind(fake: FakeProvider, kind: str) -> None:
    async def build() -> tuple[str, str]:
        provider = build_provider(
            f"a/0:{kind}",
            _deployment(kind, fake) if kind in KINDS else Deployment(provider="offline", model="o"),
            os.environ,
        )
        await provider.aclose()
        return provider.name, provider.kind

    assert asyncio.run(build()) == (f"a/0:{kind}", kind)


def test_registry_unknown_kind_is_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown provider 'nope'"):
        build_provider("a/0:nope", Deployment.model_construct(provider="nope", model="m"), {})  # type: ignore[arg-type]


def test_provider_answers_again_after_scripted_faults(fake: FakeProvider) -> None:
    fake.script(Fault.status(429, retry_after=1), Fault.status(500), Fault.reply("scripted answer"))
    deployment = _deployment("openai", fake)
    _fails(deployment, RateLimitedError)
    _fails(deployment, ProviderUnavailableError)
    assert _complete(deployment).text == "scripted answer"
    assert _complete(deployment).text == f"echo: {QUESTION}"


def test_fake_provider_scripts_faults_per_model(fake: FakeProvider) -> None:
    fake.script(Fault.status(503), model="broken-model")
    _fails(_deployment("ollama", fake, model="broken-model"), ProviderUnavailableError)
    assert _complete(_deployment("ollama", fake, model="healthy-model")).text == f"echo: {QUESTION}"
    assert fake.count(model="broken-model") == 1
    assert len(fake.bodies_for("healthy-model")) == 1


def test_provider_concurrent_calls_share_a_capped_pool(fake: FakeProvider) -> None:
    async def burst() -> list[Completion]:
        provider = build_provider("b/0:openai", _deployment("openai", fake, max_connections=10), os.environ)
        try:
            return await asyncio.gather(*(provider.complete(REQUEST) for _ in range(200)))
        finally:
            await provider.aclose()

    fake.latency = 0.01
    assert len(asyncio.run(burst())) == 200
    assert fake.count() == 200
    assert len({r.connection for r in fake.requests}) <= 10


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_redirect_is_not_followed_so_the_key_and_prompt_stay_put(fake: FakeProvider, kind: str) -> None:
    """A provider (or a proxy in front of it) answering 307 elsewhere gets an error, not a second
    request: following it would send the key (Anthropic's x-api-key survives a cross-origin
    redirect) and the prompt to whatever host the Location names."""
    import http.server
    import threading

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(307)
            self.send_header("Location", fake.base_url + "/v1/chat/completions")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}" + ("/v1" if kind == "openai" else "")
        error = _fails(_deployment(kind, fake, api_base=base), BadProviderResponseError)
    finally:
        server.shutdown()
        server.server_close()
    assert "HTTP 307" in error.message
    assert fake.count() == 0


class _RecordingProxy:
    """A forward HTTP proxy on 127.0.0.1 that relays to the fake and records what reached it."""

    def __init__(self, fake: FakeProvider) -> None:
        import http.server
        import threading
        import urllib.request

        self.requests: list[tuple[str, str | None]] = []
        seen = self.requests
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # not via HTTP_PROXY: itself

        class Relay(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                seen.append((self.path, self.headers.get("Proxy-Authorization")))
                upstream = fake.base_url + "/" + self.path.split("/", 3)[3]  # absolute-form: http://host/...
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hop = ("host", "proxy-authorization")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
                with direct.open(urllib.request.Request(upstream, body, headers)) as answer:
                    data = answer.read()
                    self.send_response(answer.status)
                    self.send_header("Content-Type", answer.headers["Content-Type"])
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Relay)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(fake: FakeProvider) -> Any:
    relay = _RecordingProxy(fake)
    yield relay
    relay.close()


def test_the_proxy_the_environment_names_carries_the_call(
    fake: FakeProvider, proxy: _RecordingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY (with credentials in its URL) applies to a provider's host, as with curl/httpx."""
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://ops:s3cret@"))
    base = "http://provider.aigw-test.invalid/v1"  # only the proxy can reach this name
    completion = _complete(_deployment("openai", fake, api_base=base))
    assert completion.text
    assert [path for path, _ in proxy.requests] == ["http://provider.aigw-test.invalid/v1/chat/completions"]
    assert proxy.requests[0][1] == "Basic b3BzOnMzY3JldA=="  # ops:s3cret, to the proxy only
    assert fake.count() == 1


def test_no_proxy_exempts_a_host(
    fake: FakeProvider, proxy: _RecordingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert _complete(_deployment("openai", fake)).text
    assert proxy.requests == []
    assert fake.count() == 1
