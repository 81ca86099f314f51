"""The provider contract: one configured deployment of a model, one method that completes.

A provider turns a ``CompletionRequest`` into a ``Completion`` or raises one of the
``ProviderError`` subclasses in ``gateway.errors``; which of those are retryable is decided there,
not here. Providers own a long-lived ``httpx.AsyncClient`` with a capped pool (the design brief).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gateway.jobs import Message


@dataclass(frozen=True)
class CompletionRequest:
    messages: list[Message]
    max_tokens: int
    temperature: float | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    provider_model: str
    finish_reason: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class Provider(Protocol):
    """One configured deployment (an entry under a model alias in models.yaml)."""

    #: "alias/index:provider", stable across restarts: used in attempts, audit and cooldowns.
    name: str
    #: the provider kind ("anthropic", "openai", "ollama", "offline").
    kind: str

    def unavailable_reason(self) -> str | None:
        """Why this deployment cannot be called at all right now (e.g. its key variable is unset)."""
        ...

    async def complete(self, request: CompletionRequest) -> Completion: ...

    async def aclose(self) -> None: ...
