"""OpenAI Chat Completions, and any OpenAI-compatible server reached through ``api_base``."""

from __future__ import annotations

from typing import Any

from workers.providers.base import Completion, CompletionRequest
from workers.providers.http import HttpProvider, optional_str, require_int, require_str

OPENAI_API_BASE = "https://api.openai.com/v1"


class OpenAIProvider(HttpProvider):
    kind = "openai"
    default_api_base = OPENAI_API_BASE
    default_key_env = "OPENAI_API_KEY"
    path = "/chat/completions"

    def payload(self, request: CompletionRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.deployment.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        # OpenAI itself deprecated max_tokens (its reasoning models reject it); compatible servers
        # (vLLM, llama.cpp, LM Studio, Ollama's /v1) widely know only the older name.
        limit_field = "max_completion_tokens" if self.api_base == OPENAI_API_BASE else "max_tokens"
        body[limit_field] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return body

    def parse(self, data: Any) -> Completion:
        choice = data["choices"][0]
        # content is null when the model refuses or calls a tool: an empty answer, not a bad body.
        content = choice["message"].get("content")
        usage = data["usage"]
        response_id = data.get("id")
        return Completion(
            text="" if content is None else require_str(content),
            input_tokens=require_int(usage["prompt_tokens"]),
            output_tokens=require_int(usage["completion_tokens"]),
            provider_model=optional_str(data.get("model")) or self.deployment.model,
            finish_reason=optional_str(choice.get("finish_reason")),
            extra={"response_id": response_id} if isinstance(response_id, str) else {},
        )
