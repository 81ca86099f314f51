"""Provider kinds by name: a deployment's ``provider`` field picks its constructor here."""

from __future__ import annotations

from collections.abc import Callable

from gateway.config import Deployment
from gateway.errors import ConfigError
from workers.providers.anthropic import AnthropicProvider
from workers.providers.base import Provider
from workers.providers.offline import OfflineProvider
from workers.providers.ollama import OllamaProvider
from workers.providers.openai import OpenAIProvider

PROVIDER_KINDS: dict[str, Callable[[str, Deployment], Provider]] = {
    "anthropic": AnthropicProvider,
    "openai": OpenAIProvider,
    "ollama": OllamaProvider,
    "offline": OfflineProvider,
}


def build_provider(name: str, deployment: Deployment) -> Provider:
    """The provider for one deployment; ``name`` is its stable id ("alias/index:provider")."""
    try:
        factory = PROVIDER_KINDS[deployment.provider]
    except KeyError:
        raise ConfigError(
            f"unknown provider {deployment.provider!r}; known: {', '.join(sorted(PROVIDER_KINDS))}",
            entry=name,
            field="provider",
        ) from None
    return factory(name, deployment)
