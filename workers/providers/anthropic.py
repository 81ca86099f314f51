"""Anthropic's Messages API; the translation is ``gateway.wire.anthropic``'s upstream half."""

from __future__ import annotations

from typing import Any

from gateway.chat import Completion, CompletionRequest, Delta
from gateway.wire import anthropic as wire
from workers.providers.http import HttpProvider, InStreamError

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

    def payload(self, request: CompletionRequest, *, stream: bool = False) -> dict[str, Any]:
        return wire.messages_payload(request, self.deployment.model, stream=stream)

    def parse(self, data: Any) -> Completion:
        return wire.parse_message(data, self.deployment.model)

    def stream_decoder(self) -> wire.MessagesStreamDecoder:
        return wire.MessagesStreamDecoder(self.deployment.model)

    def feed(self, decoder: Any, event: str, data: str) -> list[Delta]:
        try:
            deltas: list[Delta] = decoder.feed(event, data)
        except wire.StreamError as exc:
            raise InStreamError(exc.message, overloaded=exc.type == "overloaded_error") from exc
        return deltas
