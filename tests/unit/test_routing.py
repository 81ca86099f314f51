"""Routing: alias/task resolution and failover chains that never cross the sensitivity boundary."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.config import ModelsFile
from gateway.errors import ModelNotFoundError, ValidationError
from workers.routing import Balancer, build_chain


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
    assert models.resolve_alias("cheap", None) == "cheap"
    assert models.resolve_alias(None, "drafting") == "general"
    assert models.resolve_alias(None, None) == "general"


def test_routing_unknown_model_is_not_found_and_unknown_task_a_validation_error() -> None:
    with pytest.raises(ModelNotFoundError, match="gpt-9"):
        _models().resolve_alias("gpt-9", None)
    with pytest.raises(ValidationError, match="juggling"):
        _models().resolve_alias(None, "juggling")


def test_routing_model_may_be_auto_a_task_tag_or_a_provider_model_an_alias_serves() -> None:
    models = _models()
    assert models.resolve_alias("auto", None) == models.default_model
    assert models.resolve_alias("drafting", None) == "general"
    served = models.models["cheap"].deployments[0].model
    assert models.resolve_alias(served, None) == "cheap"


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


def _balanced(strategy: str) -> ModelsFile:
    deployment = {"provider": "openai", "api_key_env": "K"}
    return ModelsFile.model_validate(
        {
            "default_model": "pool",
            "models": {
                "pool": {
                    "balance": strategy,
                    "deployments": [
                        {**deployment, "model": "heavy", "weight": 3},
                        {**deployment, "model": "light", "weight": 1},
                    ],
                    "fallbacks": ["offline"],
                },
                "offline": {"provider": "offline", "model": "o", "sensitive": True},
            },
        }
    )


def test_weighted_balance_picks_in_proportion_and_keeps_fallbacks_last() -> None:
    models = _balanced("weighted")
    balancer = Balancer(models, random.Random(7))
    firsts: Counter[str] = Counter()
    for _ in range(4000):
        chain = balancer.order(build_chain(models, "pool"))
        assert [s.alias for s in chain] == ["pool", "pool", "offline"]  # only the alias's own reorder
        firsts[chain[0].deployment.model] += 1
    assert 0.72 < firsts["heavy"] / 4000 < 0.78


def test_least_in_flight_prefers_the_idle_deployment_and_ordered_never_moves() -> None:
    models = _balanced("least_in_flight")
    balancer = Balancer(models)
    chain = build_chain(models, "pool")
    assert balancer.order(chain)[0].deployment.model == "heavy"  # a tie keeps the listed order
    with balancer.in_flight(chain[0].name):
        assert balancer.order(chain)[0].deployment.model == "light"
    assert balancer.order(chain)[0].deployment.model == "heavy"
    ordered = _balanced("ordered")
    assert [s.deployment.model for s in Balancer(ordered).order(build_chain(ordered, "pool"))] == [
        "heavy",
        "light",
        "o",
    ]
