"""The built-in offline provider: deterministic, labelled, estimated usage, honours max_tokens."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from typing import Any

from gateway.chat import EmbeddingRequest, ResponseFormat
from gateway.config import Deployment
from gateway.jobs import Message
from workers.providers.base import Completion, CompletionRequest
from workers.providers.offline import EMBEDDING_DIMENSIONS, LABEL, OfflineProvider, estimate_tokens
from workers.providers.registry import build_provider

DEPLOYMENT = Deployment(provider="offline", model="aigw-offline-1")


def _request(*texts: str, max_tokens: int = 1024, system: str | None = None) -> CompletionRequest:
    messages = [Message(role="system", content=system)] if system else []
    messages += [Message(role="user", content=text) for text in texts]
    return CompletionRequest(messages=messages, max_tokens=max_tokens)


def _complete(request: CompletionRequest) -> Completion:
    return asyncio.run(OfflineProvider("offline/0:offline", DEPLOYMENT).complete(request))


def test_offline_provider_same_request_same_answer() -> None:
    request = _request("Summarise the quarterly report", system="be brief")
    assert _complete(request) == _complete(_request("Summarise the quarterly report", system="be brief"))


def test_offline_provider_different_requests_differ() -> None:
    assert _complete(_request("one question")).text != _complete(_request("another question")).text


def test_offline_provider_labels_every_answer() -> None:
    completion = _complete(_request("hello"))
    assert completion.text.startswith(LABEL)
    assert completion.extra == {"offline": "true"}
    assert completion.provider_model == "aigw-offline-1"
    assert completion.finish_reason == "stop"


def test_offline_provider_echoes_request_digest_and_first_words() -> None:
    request = _request(
        "first turn", "please draft a polite reply to the customer about the late invoice today"
    )
    canonical = json.dumps([[m.role, m.content] for m in request.messages], ensure_ascii=False)
    completion = _complete(request)
    assert f"sha256:{hashlib.sha256(canonical.encode()).hexdigest()[:16]}" in completion.text
    assert '"please draft a polite reply to the customer about the late invoice ..."' in completion.text
    assert "first turn" not in completion.text


def test_offline_provider_estimates_tokens_at_four_chars() -> None:
    completion = _complete(_request("x" * 10, "y" * 30))
    assert completion.input_tokens == 10  # 40 chars
    assert completion.output_tokens == -(-len(completion.text) // 4)


def test_offline_provider_counts_at_least_one_token() -> None:
    assert estimate_tokens("") == 1
    assert estimate_tokens("abc") == 1
    assert _complete(_request("x")).input_tokens == 1


def test_offline_provider_truncates_to_max_tokens() -> None:
    completion = _complete(_request("a long question " * 20, max_tokens=5))
    assert len(completion.text) <= 20
    assert completion.output_tokens <= 5
    assert completion.finish_reason == "length"
    assert completion.text.startswith(LABEL[:20])


def test_offline_provider_needs_no_key() -> None:
    provider = build_provider("offline/0:offline", DEPLOYMENT, {})
    assert isinstance(provider, OfflineProvider)
    assert (provider.name, provider.kind) == ("offline/0:offline", "offline")
    assert provider.unavailable_reason() is None
    asyncio.run(provider.aclose())


def test_offline_provider_streams_the_same_answer_a_word_at_a_time() -> None:
    provider = OfflineProvider("offline/0:offline", DEPLOYMENT)
    request = _request("stream these words please")
    deltas: list[Any] = []
    streamed = asyncio.run(provider.stream(request, deltas.append))
    assert streamed == _complete(request)
    assert len(deltas) > 5 and "".join(d.text for d in deltas) == streamed.text


def test_offline_provider_answers_json_mode_with_a_json_object() -> None:
    request = dataclasses.replace(
        _request("give me json"), response_format=ResponseFormat(type="json_object")
    )
    answer = json.loads(_complete(request).text)
    assert isinstance(answer, dict) and answer["aigw_offline"].startswith(LABEL)


def test_offline_embeddings_are_deterministic_unit_vectors_of_the_size_asked() -> None:
    provider = OfflineProvider("offline/0:offline", DEPLOYMENT)
    first = asyncio.run(provider.embed(EmbeddingRequest(["alpha", "beta", "alpha"], dimensions=16)))
    assert [len(v) for v in first.vectors] == [16, 16, 16]
    assert first.vectors[0] == first.vectors[2] != first.vectors[1]
    assert abs(sum(x * x for x in first.vectors[1]) - 1.0) < 1e-4
    default = asyncio.run(provider.embed(EmbeddingRequest(["alpha"])))
    assert len(default.vectors[0]) == EMBEDDING_DIMENSIONS
    assert first.input_tokens == sum(estimate_tokens(t) for t in ("alpha", "beta", "alpha"))
