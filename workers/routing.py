"""Routing: a job's model alias or task tag -> the ordered chain of deployments to try.

The chain is the alias's own deployments, then each fallback alias's, depth-first, without
repeats. Failover never crosses the sensitivity boundary: when the chosen alias is sensitive
(local), only sensitive fallbacks join the chain, so a request routed to a local model can never
reach a cloud model on any retry path. Policies narrow the chain through ``allowed``; the
``Balancer`` orders each alias's own deployments by its ``balance`` strategy.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from gateway.config import Deployment, ModelsFile, deployment_name


@dataclass(frozen=True)
class RouteStep:
    alias: str
    index: int
    deployment: Deployment

    @property
    def name(self) -> str:
        """Stable deployment name, e.g. ``general/0:anthropic``."""
        return deployment_name(self.alias, self.index, self.deployment)


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


class Balancer:
    """Orders the deployments of each alias in a chain: ordered, weighted, or least in flight.

    In-flight counts are this worker process's own (its share of the load); across processes
    the weighted strategy is the one that balances exactly, in expectation.
    """

    def __init__(self, models: ModelsFile, rng: random.Random | None = None) -> None:
        self.models = models
        self.rng = rng or random.Random()
        self.counts: Counter[str] = Counter()

    def order(self, chain: list[RouteStep]) -> list[RouteStep]:
        out: list[RouteStep] = []
        i = 0
        while i < len(chain):
            alias = chain[i].alias
            j = i
            while j < len(chain) and chain[j].alias == alias:
                j += 1
            out.extend(self._order_alias(alias, chain[i:j]))
            i = j
        return out

    def _order_alias(self, alias: str, steps: list[RouteStep]) -> list[RouteStep]:
        strategy = self.models.models[alias].balance
        if strategy == "ordered" or len(steps) < 2:
            return steps
        if strategy == "least_in_flight":  # ties keep the listed order
            return sorted(steps, key=lambda s: self.counts[s.name])
        remaining, ordered = list(steps), []
        while remaining:  # weighted sampling without replacement: the first pick is what balances
            pick = self.rng.choices(remaining, weights=[s.deployment.weight for s in remaining])[0]
            remaining.remove(pick)
            ordered.append(pick)
        return ordered

    @contextmanager
    def in_flight(self, name: str) -> Iterator[None]:
        self.counts[name] += 1
        try:
            yield
        finally:
            self.counts[name] -= 1
