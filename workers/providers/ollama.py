"""Ollama's native chat API (``/api/chat``, one JSON answer rather than a stream); no key needed."""

from __future__ import annotations

from typing import Any

from workers.providers.base import Completion, CompletionRequest
from workers.providers.http import HttpProvider, optional_str, require_int, require_str

OLLAMA_API_BASE = "http://127.0.0.1:11434"


class OllamaProvider(HttpProvider):
    """A key is sent only if the deployment names one (an Ollama behind an authenticating proxy)."""

    kind = "ollama"
    default_api_base = OLLAMA_API_BASE
    path = "/api/chat"

    def payload(self, request: CompletionRequest) -> dict[str, Any]:
        options: dict[str, Any] = {"num_predict": request.max_tokens}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        return {
            "model": self.deployment.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": False,
            "options": options,
        }

    def parse(self, data: Any) -> Completion:
        return Completion(
            text=require_str(data["message"]["content"]),
            # Ollama omits prompt_eval_count when the whole prompt came from its cache.
            input_tokens=require_int(data.get("prompt_eval_count", 0)),
            output_tokens=require_int(data["eval_count"]),
            provider_model=optional_str(data.get("model")) or self.deployment.model,
            finish_reason=optional_str(data.get("done_reason")),
        )
