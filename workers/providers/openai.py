"""OpenAI Chat Completions and Embeddings, and any OpenAI-compatible server reached through ``api_base``.

The translation is ``gateway.wire.openai``'s upstream half; this class adds where to post and how
a stream's usage is counted when a compatible server sends none.
"""

from __future__ import annotations

from typing import Any, Literal

from gateway.chat import (
    Completion,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    estimate_tokens,
    tokens_for_size,
)
from gateway.wire import openai as wire
from workers.providers.http import HttpProvider

OPENAI_API_BASE = "https://api.openai.com/v1"


class OpenAIProvider(HttpProvider):
    kind = "openai"
    default_api_base = OPENAI_API_BASE
    default_key_env = "OPENAI_API_KEY"
    path = "/chat/completions"
    embed_path = "/embeddings"
    stream_error = wire.StreamError

    @property
    def limit_field(self) -> Literal["max_tokens", "max_completion_tokens"]:
        # OpenAI itself deprecated max_tokens (its reasoning models reject it); compatible servers
        # (vLLM, llama.cpp, LM Studio, Ollama's /v1) widely know only the older name.
        return "max_completion_tokens" if self.api_base == OPENAI_API_BASE else "max_tokens"

    def payload(self, request: CompletionRequest, *, stream: bool = False) -> dict[str, Any]:
        return wire.chat_payload(request, self.deployment.model, stream=stream, limit_field=self.limit_field)

    def parse(self, data: Any) -> Completion:
        return wire.parse_chat(data, self.deployment.model)

    def stream_decoder(self) -> wire.ChatStreamDecoder:
        return wire.ChatStreamDecoder(self.deployment.model)

    def finish_stream(self, decoder: Any, request: CompletionRequest) -> Completion:
        completion: Completion = decoder.completion()
        if decoder.usage_reported:
            return completion
        # a compatible server that ignores stream_options.include_usage: estimated, and said so
        return Completion(
            text=completion.text,
            input_tokens=tokens_for_size(request.input_bytes()),
            output_tokens=estimate_tokens(_answered(completion)),
            provider_model=completion.provider_model,
            finish_reason=completion.finish_reason,
            extra={**completion.extra, "usage": "estimated"},
            tool_calls=completion.tool_calls,
        )

    def embed_payload(self, request: EmbeddingRequest) -> dict[str, Any]:
        return wire.embeddings_payload(request, self.deployment.model)

    def parse_embeddings(self, data: Any) -> Embeddings:
        return wire.parse_embeddings(data, self.deployment.model)


def _answered(completion: Completion) -> str:
    return completion.text + "".join(c.arguments for c in completion.tool_calls)
