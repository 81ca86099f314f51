"""Routing: a job's model alias or task tag -> the ordered chain of deployments to try.

The chain is the alias's own deployments, then each fallback alias's, depth-first, without
repeats. Failover never crosses the sensitivity boundary: when the chosen alias is sensitive
(local), only sensitive fallbacks join the chain, so a request routed to a local model can never
reach a cloud model on any retry path. Policies (later) narrow the chain through ``allowed``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import Deployment, ModelsFile
from gateway.errors import ValidationError


@dataclass(frozen=True)
class RouteStep:
    alias: str
    index: int
    deployment: Deployment

    @property
    def name(self) -> str:
        """Stable deployment name, e.g. ``general/0:anthropic``."""
        return deployment_name(self.alias, self.index, self.deployment)


def deployment_name(alias: str, index: int, deployment: Deployment) -> str:
    return f"{alias}/{index}:{deployment.provider}"


def resolve_alias(models: ModelsFile, model: str | None, task: str | None) -> str:
    """The alias a request asks for: its model, else the alias serving its task, else the default."""
    if model is not None:
        if model not in models.models:
            raise ValidationError(f"unknown model alias {model!r}; known: {', '.join(sorted(models.models))}")
        return model
    if task is not None:
        alias = models.alias_for_task(task)
        if alias is None:
            tags = sorted({t for a in models.models.values() for t in a.use_for})
            raise ValidationError(f"no model serves task {task!r}; known tasks: {', '.join(tags)}")
        return alias
    return models.default_model


def build_chain(
    models: ModelsFile, alias: str, allowed: Callable[[str], bool] = lambda _alias: True
) -> list[RouteStep]:
    """Deployments to try in order for ``alias``: its own, then its fallbacks' (transitively)."""
    sensitive_only = models.models[alias].sensitive
    chain: list[RouteStep] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        entry = models.models[name]
        if (sensitive_only and not entry.sensitive) or not allowed(name):
            return
        chain.extend(RouteStep(name, i, d) for i, d in enumerate(entry.deployments))
        for fallback in entry.fallbacks:
            visit(fallback)

    visit(alias)
    return chain
