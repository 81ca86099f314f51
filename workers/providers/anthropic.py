"""Anthropic Messages API: system prompts go in the top-level ``system`` field, not in messages."""

from __future__ import annotations

from typing import Any

from workers.providers.base import Completion, CompletionRequest
from workers.providers.http import HttpProvider, optional_str, require_int, require_str

ANTHROPIC_API_BASE = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"


class AnthropicProvider(HttpProvider):
    kind = "anthropic"
    default_api_base = ANTHROPIC_API_BASE
    default_key_env = "ANTHROPIC_API_KEY"
    path = "/v1/messages"

    def headers(self, key: str | None) -> dict[str, str]:
        version = {"anthropic-version": ANTHROPIC_VERSION}
        return {"x-api-key": key, **version} if key else version

    def payload(self, request: CompletionRequest) -> dict[str, Any]:
        system = [m.content for m in request.messages if m.role == "system"]
        body: dict[str, Any] = {
            "model": self.deployment.model,
            "max_tokens": request.max_tokens,
            "messages": [
                {"role": m.role, "content": m.content} for m in request.messages if m.role != "system"
            ],
        }
        if system:
            body["system"] = "\n\n".join(system)
        if request.temperature is not None:
            # Jobs accept OpenAI's 0-2 range; Anthropic rejects anything above 1 with a 400.
            body["temperature"] = min(request.temperature, 1.0)
        return body

    def parse(self, data: Any) -> Completion:
        blocks = data["content"]
        if not isinstance(blocks, list):
            raise TypeError("content is not a list of blocks")
        text = "".join(require_str(b["text"]) for b in blocks if b["type"] == "text")
        usage = data["usage"]
        response_id = data.get("id")
        return Completion(
            text=text,
            input_tokens=require_int(usage["input_tokens"]),
            output_tokens=require_int(usage["output_tokens"]),
            provider_model=optional_str(data.get("model")) or self.deployment.model,
            finish_reason=optional_str(data.get("stop_reason")),
            extra={"response_id": response_id} if isinstance(response_id, str) else {},
        )
