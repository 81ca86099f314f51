"""The provider contract: one configured deployment of a model, one method that completes.

A provider turns a ``CompletionRequest`` into a ``Completion`` or raises one of the
``ProviderError`` subclasses in ``gateway.errors``; which of those are retryable is decided there,
not here. Providers own a long-lived ``aiohttp.ClientSession`` with a capped pool (the design brief).
"""

from __future__ import annotations

from typing import Protocol

from gateway.chat import (
    MAX_TOKENS_PER_CALL,
    Completion,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    Emit,
)

__all__ = ["MAX_TOKENS_PER_CALL", "Completion", "CompletionRequest", "Provider"]


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

    async def stream(self, request: CompletionRequest, emit: Emit) -> Completion:
        """The same call, streamed: every delta goes to ``emit`` as soon as it is decoded, and the
        whole answer (with the provider's own usage) is returned once the stream ended cleanly.
        A stream that breaks raises a ``ProviderError`` like ``complete`` does."""
        ...

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """One vector per input; ``ProviderRequestError`` from a kind that has no embeddings."""
        ...

    async def aclose(self) -> None: ...
