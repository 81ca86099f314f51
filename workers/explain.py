"""``aigw policy explain``: what the policies would decide for a job, and where it would go.

Nothing is called and nothing is counted: the plan is the worker's own (``PolicyEngine.plan``),
the chain is the worker's own (``build_chain``), and budgets are read, not reserved.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis

from gateway.config import Config
from gateway.jobs import JobRequest
from gateway.policies import PolicyEngine, Subject
from gateway.quotas import Quotas
from gateway.services import ServiceRegistry
from workers.routing import build_chain


def explain(
    config: Config,
    service: str,
    request: JobRequest,
    connection: redis.Redis | None = None,
    *,
    environ: Mapping[str, str],
) -> dict[str, Any]:
    """The decisions, the outcome and the deployment chain for ``request`` from ``service``;
    ``environ`` says which deployments have their key variable set."""
    engine = PolicyEngine(config)
    queue = request.queue or config.services.default_queue(service)
    plan = engine.plan(Subject.from_request(service, queue, request))
    chain = [] if plan.denial else build_chain(config.models, plan.alias, allowed=plan.allows)
    report: dict[str, Any] = {
        "service": service,
        "queue": queue,
        "requested_model": plan.requested_alias,
        "model": plan.alias,
        "outcome": "refused" if plan.denial else "accepted",
        "error": plan.denial.to_dict() if plan.denial else None,
        "sensitive_only": plan.sensitive_only,
        # what a failure on the local model will say: categories and declarations, never values
        "kept_local": plan.local_reason(),
        "draft": plan.draft,
        "max_tokens": plan.max_tokens or request.max_tokens or config.gateway.jobs.max_output_tokens,
        "redacted": bool(plan.redactors),
        "decisions": plan.record(),
        "chain": [
            {
                "deployment": step.name,
                "model": step.deployment.model,
                "sensitive": config.models.models[step.alias].sensitive,
                "callable": _callable(step.deployment.api_key_env, environ),
            }
            for step in chain
        ],
        "budgets": [],
    }
    known = service in config.services.services
    if not known and connection is not None:
        known = ServiceRegistry(connection, config).has_tokens(service)
    if not known:
        where = "services.yaml" if connection is None else "services.yaml or Redis"
        report["note"] = f"service {service!r} is not in {where}: no token can send as it yet"
    if connection is None and plan.quotas:  # say so rather than let an "accepted" hide a full budget
        report["budgets_unread"] = sorted({p.name for p in plan.quotas})
    if connection is not None and plan.quotas:
        for policy, state in Quotas(connection, config).spend(service, plan):
            report["budgets"].append(
                {
                    "policy": policy.name,
                    "spent_usd": round(state.spent_usd, 6),
                    "held_usd": round(state.held_usd, 6),
                    "limit_usd": state.limit_usd,
                    "resets_at": state.resets_at,
                }
            )
    return report


def _callable(key_env: str | None, environ: Mapping[str, str]) -> str:
    if key_env is None or environ.get(key_env):
        return "yes"
    return f"no: {key_env} is not set (skipped at run time)"
