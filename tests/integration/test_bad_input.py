"""Bad input at the door of a real API: a 4xx in the JSON error envelope, never a 500, nothing
enqueued; a body over the limit is refused while it is still arriving."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.jobs import JobRequest
from tests.integration.harness import Api, ConfigFactory, StartApi, wait_until, with_api_settings

CHUNK = b" " * 65_536  # JSON whitespace: a body that is valid as far as it has come
MB = 1_048_576


def post(api: Api, body: bytes) -> httpx.Response:
    with api.client() as client:
        return client.post("/v1/jobs", content=body)


def assert_refused(response: httpx.Response, status: int, error_type: str) -> str:
    """The response is ``status`` in the envelope with ``error_type``; returns its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["type"] == error_type
    message = body["error"]["message"]
    assert isinstance(message, str)
    return message


def nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + "1" + closer * depth


@pytest.mark.parametrize(
    "body",
    [
        '{"prompt": "x", "metadata": ' + nested(100_000) + "}",  # past the parser's recursion limit
        '{"skill": "summarize", "inputs": ' + nested(5_000, '{"a": ', "}") + "}",
        '{"skill": "summarize", "inputs": {"a": ' + nested(500) + "}}",  # parses; deeper than allowed
    ],
    ids=["arrays-100000", "objects-5000", "arrays-500"],
)
def test_deeply_nested_json_is_a_400_invalid_json(
    gateway_config: ConfigFactory, start_api: StartApi, redis_client: redis.Redis, body: str
) -> None:
    api = start_api(gateway_config())
    message = assert_refused(post(api, body.encode()), 400, "invalid_json")
    assert "nested" in message
    assert redis_client.llen("rq:queue:interactive") == 0


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"prompt": "hi \ud800 there"}, "prompt"),
        ({"prompt": "x", "system": "\udfff"}, "system"),
        ({"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "\ud800"}]},
         "messages.1.content"),
        ({"prompt": "x", "metadata": {"\ud800": "v"}}, "metadata: a key"),
        ({"prompt": "x", "metadata": {"k": "\udbff"}}, "metadata.k"),
        ({"skill": "summarize", "inputs": {"text": ["fine", {"deep": "\ud800"}]}}, "inputs.text.1.deep"),
        ({"skill": "summarize", "inputs": {"\udc00": "v"}}, "inputs: a key"),
        ({"prompt": "x", "idempotency_key": "\ud800"}, "idempotency_key"),
    ],
    ids=["prompt", "system", "messages", "metadata-key", "metadata-value", "inputs", "inputs-key", "other"],
)  # fmt: skip
def test_unpaired_surrogate_is_a_422_naming_the_field(
    gateway_config: ConfigFactory,
    start_api: StartApi,
    redis_client: redis.Redis,
    body: dict[str, Any],
    where: str,
) -> None:
    api = start_api(gateway_config())
    sent = json.dumps(body).encode()  # ensure_ascii: the surrogate travels as a \\udXXX escape
    assert b"\\ud" in sent
    message = assert_refused(post(api, sent), 422, "invalid_request")
    assert message.startswith(where) and "unpaired surrogate (\\ud" in message
    assert redis_client.llen("rq:queue:interactive") == 0


def test_surrogate_pair_is_one_character_not_an_error(
    gateway_config: ConfigFactory, start_api: StartApi
) -> None:
    api = start_api(gateway_config())
    response = post(api, b'{"prompt": "smile \\ud83d\\ude00", "metadata": {"\\ud83d\\ude00": "ok"}}')
    assert response.status_code == 202, response.text


def test_nan_is_a_400_invalid_json(gateway_config: ConfigFactory, start_api: StartApi) -> None:
    api = start_api(gateway_config())
    assert_refused(post(api, b'{"skill": "summarize", "inputs": {"x": NaN}}'), 400, "invalid_json")


def test_chunked_body_over_the_limit_is_refused_before_it_is_all_sent(
    gateway_config: ConfigFactory, start_api: StartApi
) -> None:
    api = start_api(gateway_config())  # the shipped limit: 200,000 characters, 865,536 bytes
    sent = 0

    def body() -> Iterator[bytes]:  # no Content-Length: httpx sends it chunked
        nonlocal sent
        yield b'{"prompt": "x"'
        while sent < 256 * MB:
            sent += len(CHUNK)
            yield CHUNK

    with api.client() as client:
        response = client.post("/v1/jobs", content=body())
    assert_refused(response, 413, "payload_too_large")
    assert response.headers["connection"] == "close"
    assert sent < 16 * MB, f"the client sent {sent / MB:.0f} MB before the 413"


def test_content_length_over_the_limit_is_refused_before_the_body_is_sent(
    gateway_config: ConfigFactory, start_api: StartApi
) -> None:
    api = start_api(gateway_config())
    url = urlsplit(api.url)
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {api.token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(head.encode())  # and not a byte of the body
        answer = b"".join(iter(lambda: sock.recv(65_536), b""))  # the server closes after its answer
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, payload = rest.partition(b"\r\n\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), answer
    assert b"connection: close" in headers.lower()
    assert json.loads(payload)["error"]["type"] == "payload_too_large"


def _raw_answer(sock: socket.socket) -> tuple[bytes, bytes, bytes]:
    """Status line, headers and payload of the one answer before the server closes."""
    answer = b"".join(iter(lambda: sock.recv(65_536), b""))
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, payload = rest.partition(b"\r\n\r\n")
    return status_line, headers, payload


def test_a_stalled_body_is_a_408_within_the_body_timeout(
    config_dir: Path, gateway_config: ConfigFactory, start_api: StartApi
) -> None:
    timeout = 1.0
    api = start_api(with_api_settings(config_dir, gateway_config, body_timeout_seconds=timeout))
    url = urlsplit(api.url)
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {api.token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 800000\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port), timeout=timeout + 5) as sock:
        started = time.monotonic()
        sock.sendall(head.encode() + b'{"prompt": "' + b"x" * 500_000)  # and then nothing more
        status_line, headers, payload = _raw_answer(sock)
        took = time.monotonic() - started
    assert status_line.startswith(b"HTTP/1.1 408"), status_line
    assert b"connection: close" in headers.lower()
    assert json.loads(payload)["error"]["type"] == "request_timeout"
    assert timeout <= took < timeout + 2


def test_connections_past_max_connections_get_a_503(
    config_dir: Path, gateway_config: ConfigFactory, start_api: StartApi
) -> None:
    limit = 4
    api = start_api(with_api_settings(config_dir, gateway_config, max_connections=limit))
    url = urlsplit(api.url)
    assert url.hostname is not None and url.port is not None
    idle = [socket.create_connection((url.hostname, url.port), timeout=5) for _ in range(limit)]
    try:
        wait_until(lambda: httpx.get(f"{api.url}/healthz").status_code == 503, "a 503 past the limit", 5)
    finally:
        for sock in idle:
            sock.close()
    wait_until(lambda: httpx.get(f"{api.url}/healthz").status_code == 200, "a 200 under the limit", 5)


# -- fuzz: whatever the body, a 4xx envelope or a job ----------------------------------------------

_SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
# joined by hand: st.text would fold the surrogates into characters()' range, where they are rare
_TEXT = st.text(max_size=12) | st.lists(st.characters() | _SURROGATES, max_size=12).map("".join)
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | _TEXT  # floats: NaN and inf too
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=12,
)
_FIELDS = {name: _JSON for name in JobRequest.model_fields}
_ALMOST_VALID = {  # the fields with values of the right type, to get past validation to admission
    "system": _TEXT,
    "metadata": st.dictionaries(_TEXT, _TEXT, max_size=3),
    "model": st.sampled_from(["general", "offline", "gpt-9"]),
    "temperature": st.floats(),
    "max_tokens": st.integers(),
    "idempotency_key": _TEXT,
}
_MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": _TEXT})
_JOBS = st.one_of(
    st.fixed_dictionaries({"prompt": _TEXT}, optional=_ALMOST_VALID),
    st.fixed_dictionaries({"messages": st.lists(_MESSAGE, max_size=3)}, optional=_ALMOST_VALID),
    st.fixed_dictionaries({"skill": st.sampled_from(["summarize", "nope"]), "inputs": _JSON}),
    st.dictionaries(st.sampled_from(sorted(_FIELDS)) | _TEXT, _JSON, max_size=4),
    _JSON,
)
_BODIES = _JOBS.map(lambda data: json.dumps(data).encode()) | st.binary(max_size=64)


def assert_envelope_or_job(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code in (200, 202):
        assert isinstance(body["id"], str)
    else:
        assert set(body) == {"error"}, body
        assert isinstance(body["error"]["type"], str) and isinstance(body["error"]["message"], str)


def test_random_bodies_get_a_4xx_envelope_or_a_job_never_a_5xx(
    gateway_config: ConfigFactory, start_api: StartApi
) -> None:
    api = start_api(gateway_config())
    with api.client() as client:

        @settings(
            max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
        )
        @given(body=_BODIES)
        def check(body: bytes) -> None:
            assert_envelope_or_job(client.post("/v1/jobs", content=body))

        check()


def test_an_idempotency_key_over_200_characters_is_a_422(
    gateway_config: ConfigFactory, start_api: StartApi
) -> None:
    api = start_api(gateway_config())
    body = json.dumps({"prompt": "x", "idempotency_key": "k" * 201}).encode()
    assert "idempotency_key" in assert_refused(post(api, body), 422, "invalid_request")


@pytest.mark.parametrize(
    "job_id", ["a\x1b[31m\r\nX-Injected: 1", "j" * 9_000, "\u2028\x00"], ids=["control", "long", "separators"]
)
def test_a_404_does_not_echo_a_raw_job_id(
    gateway_config: ConfigFactory, start_api: StartApi, job_id: str
) -> None:
    api = start_api(gateway_config())
    with api.client() as client:
        response = client.get("/v1/jobs/" + quote(job_id, safe=""))
    message = assert_refused(response, 404, "not_found")
    assert len(message) < 120, message
    assert message.isascii() and message.isprintable(), message
