"""Provider kinds by name: a deployment's ``provider`` field picks its constructor here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from gateway.config import DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_MAX_RETRY_AFTER, Deployment
from gateway.errors import ConfigError
from workers.providers.anthropic import AnthropicProvider
from workers.providers.base import Provider
from workers.providers.offline import OfflineProvider
from workers.providers.ollama import OllamaProvider
from workers.providers.openai import OpenAIProvider


class ProviderFactory(Protocol):
    """A provider kind's constructor: ``environ`` is the mapping its key is looked up in, by name,
    at call time; ``max_retry_after`` caps the waits its rate-limit errors ask for;
    ``max_response_bytes`` caps the answers it reads."""

    def __call__(
        self,
        name: str,
        deployment: Deployment,
        environ: Mapping[str, str],
        *,
        max_retry_after: float,
        max_response_bytes: int,
    ) -> Provider: ...


PROVIDER_KINDS: dict[str, ProviderFactory] = {
    "anthropic": AnthropicProvider,
    "openai": OpenAIProvider,
    "ollama": OllamaProvider,
    "offline": OfflineProvider,
}


def build_provider(
    name: str,
    deployment: Deployment,
    environ: Mapping[str, str],
    *,
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> Provider:
    """The provider for one deployment; ``name`` is its stable id ("alias/index:provider").

    ``environ`` is where the key named by ``api_key_env`` is read on every call (pass ``os.environ``
    itself so a rotated key is picked up); ``max_retry_after`` is ``jobs.max_retry_after`` and
    ``max_response_bytes`` is ``jobs.max_response_bytes``."""
    try:
        factory = PROVIDER_KINDS[deployment.provider]
    except KeyError:
        raise ConfigError(
            f"unknown provider {deployment.provider!r}; known: {', '.join(sorted(PROVIDER_KINDS))}",
            entry=name,
            field="provider",
        ) from None
    return factory(
        name, deployment, environ, max_retry_after=max_retry_after, max_response_bytes=max_response_bytes
    )
