"""Routing: alias/task resolution and failover chains that never cross the sensitivity boundary."""

from __future__ import annotations

import pytest

from gateway.config import ModelsFile
from gateway.errors import ValidationError
from workers.routing import build_chain, resolve_alias


def _models() -> ModelsFile:
    return ModelsFile.model_validate(
        {
            "default_model": "general",
            "models": {
                "general": {
                    "deployments": [
                        {"provider": "anthropic", "model": "a", "api_key_env": "K1"},
                        {"provider": "anthropic", "model": "a", "api_key_env": "K2"},
                    ],
                    "use_for": ["drafting"],
                    "fallbacks": ["cheap", "local"],
                },
                "cheap": {"provider": "openai", "model": "b", "fallbacks": ["general", "offline"]},
                "local": {
                    "provider": "ollama",
                    "model": "c",
                    "sensitive": True,
                    "fallbacks": ["cheap", "offline"],
                },
                "offline": {"provider": "offline", "model": "o", "sensitive": True},
            },
        }
    )


def test_routing_resolves_model_task_and_default() -> None:
    models = _models()
    assert resolve_alias(models, "cheap", None) == "cheap"
    assert resolve_alias(models, None, "drafting") == "general"
    assert resolve_alias(models, None, None) == "general"


@pytest.mark.parametrize(
    ("model", "task", "needle"), [("gpt-9", None, "gpt-9"), (None, "juggling", "juggling")]
)
def test_routing_unknown_alias_or_task_is_a_validation_error(
    model: str | None, task: str | None, needle: str
) -> None:
    with pytest.raises(ValidationError, match=needle):
        resolve_alias(_models(), model, task)


def test_routing_chain_lists_deployments_then_fallbacks_without_repeats() -> None:
    chain = build_chain(_models(), "general")
    assert [s.name for s in chain] == [
        "general/0:anthropic",
        "general/1:anthropic",
        "cheap/0:openai",
        "offline/0:offline",
        "local/0:ollama",
    ]


def test_routing_sensitive_alias_never_falls_back_to_a_cloud_model() -> None:
    chain = build_chain(_models(), "local")
    assert [s.alias for s in chain] == ["local", "offline"]
    assert all(_models().models[s.alias].sensitive for s in chain)


def test_routing_allowed_filter_narrows_the_chain() -> None:
    chain = build_chain(_models(), "general", allowed=lambda alias: alias != "cheap")
    assert "cheap" not in {s.alias for s in chain}
