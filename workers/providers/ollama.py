"""Ollama's native API (``/api/chat``, ``/api/embed``); no key needed. The translation is
``gateway.wire.ollama``; a stream is NDJSON, one object per line."""

from __future__ import annotations

from typing import Any

from gateway.chat import Completion, CompletionRequest, EmbeddingRequest, Embeddings
from gateway.wire import ollama as wire
from workers.providers.http import HttpProvider

OLLAMA_API_BASE = "http://127.0.0.1:11434"


class OllamaProvider(HttpProvider):
    """A key is sent only if the deployment names one (an Ollama behind an authenticating proxy)."""

    kind = "ollama"
    default_api_base = OLLAMA_API_BASE
    path = "/api/chat"
    embed_path = "/api/embed"
    stream_framing = "ndjson"
    stream_error = wire.StreamError

    def payload(self, request: CompletionRequest, *, stream: bool = False) -> dict[str, Any]:
        return wire.chat_payload(request, self.deployment.model, stream=stream)

    def parse(self, data: Any) -> Completion:
        return wire.parse_chat(data, self.deployment.model)

    def stream_decoder(self) -> wire.ChatStreamDecoder:
        return wire.ChatStreamDecoder(self.deployment.model)

    def embed_payload(self, request: EmbeddingRequest) -> dict[str, Any]:
        return wire.embed_payload(request, self.deployment.model)

    def parse_embeddings(self, data: Any) -> Embeddings:
        return wire.parse_embed(data, self.deployment.model)
