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


#: The most tokens one call may report on either side. No model's context comes near it; a larger
#: count is a broken or hostile answer, and would overflow the spend and token counters (HINCRBY).
MAX_TOKENS_PER_CALL = 1_000_000_000


@dataclass(frozen=True)
class Completion:
    """One answer. Its usage is checked here, once, for every provider kind: the budget and the
    tokens-per-minute window are charged from it, so a count that is negative, not a whole number
    or absurd is refused (``ValueError``) before anything is counted."""

    text: str
    input_tokens: int
    output_tokens: int
    provider_model: str
    finish_reason: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("input_tokens", "output_tokens"):
            _check_token_count(name, getattr(self, name))


def _check_token_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS_PER_CALL:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise ValueError(
            f"usage {name} is {shown}; a call's token counts must be whole numbers "
            f"from 0 to {MAX_TOKENS_PER_CALL:,}"
        )


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
