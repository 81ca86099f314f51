"""Provider kinds by name: a deployment's ``provider`` field picks its constructor here."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from gateway.config import Deployment
from gateway.errors import ConfigError
from workers.providers.anthropic import AnthropicProvider
from workers.providers.base import Provider
from workers.providers.offline import OfflineProvider
from workers.providers.ollama import OllamaProvider
from workers.providers.openai import OpenAIProvider

#: each takes (name, deployment, environ): the mapping its key is looked up in, by name, at call time
PROVIDER_KINDS: dict[str, Callable[[str, Deployment, Mapping[str, str]], Provider]] = {
    "anthropic": AnthropicProvider,
    "openai": OpenAIProvider,
    "ollama": OllamaProvider,
    "offline": OfflineProvider,
}


def build_provider(name: str, deployment: Deployment, environ: Mapping[str, str]) -> Provider:
    """The provider for one deployment; ``name`` is its stable id ("alias/index:provider").

    ``environ`` is where the key named by ``api_key_env`` is read on every call (pass ``os.environ``
    itself so a rotated key is picked up)."""
    try:
        factory = PROVIDER_KINDS[deployment.provider]
    except KeyError:
        raise ConfigError(
            f"unknown provider {deployment.provider!r}; known: {', '.join(sorted(PROVIDER_KINDS))}",
            entry=name,
            field="provider",
        ) from None
    return factory(name, deployment, environ)
