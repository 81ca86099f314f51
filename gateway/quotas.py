"""Budgets and rate limits: the ``budget`` and ``rate_limit`` policies, counted in Redis.

Where each limit is checked, and why there:

- requests per minute: at admission (the API), one atomic hit per accepted request;
- concurrent jobs: by RQ itself (``RateLimit`` on enqueue): jobs past the limit wait in RQ's
  rate-limited set and start as earlier ones finish, across every worker process;
- tokens per minute: refused at admission once the window is full; a worker that finds the
  window full before a call requeues the job until it has room; real usage is added after the call;
- budgets: refused at admission once spent; before every provider call a worker reserves the
  call's worst-case cost (so concurrent calls cannot overspend together) and commits the real
  cost, from usage and the price table, in the same transaction as the result.

Every check is a Lua script or a MULTI in :mod:`gateway.limits`, so many API and worker
processes on many hosts agree.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
from redis.client import Pipeline
from rq import RateLimit

from gateway import keys
from gateway.config import BudgetRule, Config, PolicyConfig, Pricing, RateLimitRule
from gateway.errors import BudgetExceededError, PolicyDeniedError, RateLimitExceededError
from gateway.limits import RateCounter, SpendLedger, SpendState
from gateway.policies import Decision, Plan


@dataclass
class Holds:
    """The budget reservations one provider call holds (released or committed after it)."""

    holder: str
    scopes: list[tuple[str, BudgetRule]] = field(default_factory=list)


class Quotas:
    def __init__(self, connection: redis.Redis, config: Config) -> None:
        self.config = config
        self.ledger = SpendLedger(connection)
        self.requests = RateCounter(connection)
        self.tokens = RateCounter(connection)

    # --- admission (API) -----------------------------------------------------------------------

    def admit(
        self,
        service: str,
        plan: Plan,
        input_bytes: int,
        decisions: list[Decision],
        now: float | None = None,
    ) -> None:
        """Refuse (raise) a job over an enforced limit; ``decisions`` gets every check's decision,
        the refusing one included (recorded with the job, or on the refusal's audit line).

        A budget refuses a job whose worst-case cost on its model no longer fits beside what was
        spent (calls in flight are not counted here: most finish under their worst case).
        """
        now = time.time() if now is None else now
        # budgets first: a request they refuse must not use up the service's requests per minute
        ordered = sorted(plan.quotas, key=lambda p: not isinstance(p.params, BudgetRule))
        for policy in ordered:
            params = policy.params
            if isinstance(params, BudgetRule):
                state = self.ledger.state(
                    _budget_scope(policy, service, plan.alias), params.period, params.limit_usd, now
                )
                pricing = self.config.models.models[plan.alias].deployments[0].pricing
                max_tokens = plan.max_tokens or self.config.gateway.jobs.max_output_tokens
                estimate = worst_case_cost(pricing, input_bytes, max_tokens)
                self._judge_budget(
                    policy, params, state, decisions, now, exhausted_only=True, estimate=estimate
                )
            elif isinstance(params, RateLimitRule):
                self._admit_rates(policy, params, service, decisions, now)

    def _admit_rates(
        self, policy: PolicyConfig, params: RateLimitRule, service: str, decisions: list[Decision], now: float
    ) -> None:
        if params.tokens_per_minute:
            self._check_tokens(policy, params.tokens_per_minute, service, decisions, now)
        if params.requests_per_minute:
            hit = self.requests.hit(_requests_scope(policy, service), params.requests_per_minute, 1, now)
            if not hit.allowed:
                self._refuse_rate(
                    policy,
                    f"service {service} sent {params.requests_per_minute} requests in the last minute, "
                    "its limit",
                    hit.retry_after,
                    decisions,
                )
        if not decisions or decisions[-1].policy != policy.name:
            decisions.append(_decision(policy, "allow", "within its rate limits"))

    def _check_tokens(
        self, policy: PolicyConfig, limit: int, service: str, decisions: list[Decision], now: float
    ) -> None:
        peek = self.tokens.peek(_tokens_scope(policy, service), limit, now)
        if not peek.allowed:
            used = f"service {service} used {int(peek.count)} of {limit} tokens in the last minute"
            self._refuse_rate(policy, used, peek.retry_after, decisions)

    def _refuse_rate(
        self, policy: PolicyConfig, reason: str, retry_after: float, decisions: list[Decision]
    ) -> None:
        decisions.append(_decision(policy, "deny", f"{reason}; retry in {math.ceil(retry_after)} s"))
        if policy.enforce:
            raise RateLimitExceededError(
                f"policy {policy.name}: {reason}; retry in {math.ceil(retry_after)} s",
                rule=policy.name,
                retry_after=max(1.0, retry_after),
            )

    def concurrency_limit(self, service: str, plan: Plan) -> RateLimit | None:
        """RQ's concurrency limit for the job: the tightest enforced ``concurrent_jobs`` that applies."""
        limits = [
            (p.params.concurrent_jobs, p.name)
            for p in plan.quotas
            if isinstance(p.params, RateLimitRule) and p.params.concurrent_jobs and p.enforce
        ]
        if not limits:
            return None
        concurrency, name = min(limits)
        return RateLimit(key=keys.concurrency_limit(name, service), concurrency=concurrency)

    # --- a worker, around each provider call -------------------------------------------------

    def before_call(
        self,
        holder: str,
        service: str,
        plan: Plan,
        alias: str,
        pricing: Pricing,
        input_bytes: int,
        max_tokens: int,
        hold_seconds: float,
        decisions: list[Decision],
    ) -> Holds:
        """Reserve the call's worst-case cost on every budget; a full tokens-per-minute window raises a
        retryable error, so RQ requeues the job after the window (that uses one of its attempts)."""
        now = time.time()
        holds = Holds(holder)
        for policy in plan.quotas:
            params = policy.params
            if isinstance(params, RateLimitRule) and params.tokens_per_minute:
                try:
                    self._check_tokens(policy, params.tokens_per_minute, service, decisions, now)
                except RateLimitExceededError:
                    self.release(holds)
                    raise
            if not isinstance(params, BudgetRule):
                continue
            estimate = worst_case_cost(pricing, input_bytes, max_tokens)
            scope = _budget_scope(policy, service, alias)
            ok, state = self.ledger.reserve(
                scope, params.period, params.limit_usd, holder, estimate, hold_seconds, now
            )
            if ok:
                holds.scopes.append((scope, params))
                continue
            try:
                self._judge_budget(policy, params, state, decisions, now, estimate=estimate)
            except BudgetExceededError:
                self.release(holds)
                raise
        return holds

    def release(self, holds: Holds) -> None:
        for scope, params in holds.scopes:
            self.ledger.release(scope, params.period, holds.holder)
        holds.scopes.clear()

    def commit(
        self, pipe: Pipeline, holds: Holds, service: str, plan: Plan, alias: str, cost_usd: float, tokens: int
    ) -> None:
        """Queue the real spend and tokens on the worker's result transaction."""
        for policy in plan.quotas:
            params = policy.params
            if isinstance(params, BudgetRule):
                scope = _budget_scope(policy, service, alias)
                self.ledger.commit(pipe, scope, params.period, holds.holder, cost_usd)
            elif isinstance(params, RateLimitRule) and params.tokens_per_minute and tokens:
                self.tokens.add(pipe, _tokens_scope(policy, service), tokens)

    def spend(self, service: str, plan: Plan) -> list[tuple[PolicyConfig, SpendState]]:
        """Where each budget stands (for ``aigw policy explain``)."""
        return [
            (p, self.ledger.state(_budget_scope(p, service, plan.alias), p.params.period, p.params.limit_usd))
            for p in plan.quotas
            if isinstance(p.params, BudgetRule)
        ]

    def _judge_budget(
        self,
        policy: PolicyConfig,
        params: BudgetRule,
        state: SpendState,
        decisions: list[Decision],
        now: float,
        *,
        exhausted_only: bool = False,
        estimate: float = 0.0,
    ) -> None:
        if estimate > params.limit_usd:  # no reset will ever make room: say what to change
            reason = (
                f"this job may cost up to {_usd(estimate)}, more than the whole {_PER[params.period]} budget "
                f"of {_usd(params.limit_usd)}; lower max_tokens or shorten the input"
            )
            decisions.append(_decision(policy, "deny", reason))
            if policy.enforce:
                raise PolicyDeniedError(f"policy {policy.name}: {reason}", rule=policy.name)
            return
        spent = f"{_usd(state.spent_usd)} of {_usd(params.limit_usd)} spent this {params.period}"
        if exhausted_only and state.spent_usd + estimate <= params.limit_usd:
            decisions.append(_decision(policy, "allow", spent))
            return
        resets = datetime.fromtimestamp(state.resets_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        held = "" if exhausted_only else f", {_usd(state.held_usd)} held by calls in flight"
        why = f"{spent}{held}; this job may cost up to {_usd(estimate)}"
        decisions.append(_decision(policy, "deny", f"{why}; resets at {resets}"))
        if policy.enforce:
            raise BudgetExceededError(
                f"policy {policy.name}: budget reached ({why}); it resets at {resets}",
                rule=policy.name,
                retry_after=max(1.0, state.resets_at - now),
            )


_PER = {"day": "daily", "month": "monthly"}


def worst_case_cost(pricing: Pricing, input_bytes: int, max_tokens: int) -> float:
    """What a call can cost at most: a byte-level tokenizer never makes more tokens than the text
    has UTF-8 bytes, and every output token the call allows is used."""
    return pricing.cost(input_bytes, max_tokens)


def _usd(amount: float) -> str:
    """Dollars to the cent, or to the micro-dollar below a cent (budgets can be tiny)."""
    return f"${amount:,.2f}" if amount >= 1 or amount == 0 else f"${amount:.6f}".rstrip("0")


def _decision(policy: PolicyConfig, outcome: str, reason: str) -> Decision:
    return Decision(policy.name, policy.rule, outcome, reason, policy.enforce)  # type: ignore[arg-type]


def _budget_scope(policy: PolicyConfig, service: str, alias: str) -> str:
    assert isinstance(policy.params, BudgetRule)
    base = f"{policy.name}:{service}"
    return f"{base}:{alias}" if policy.params.per_model else base


def _requests_scope(policy: PolicyConfig, service: str) -> str:
    return f"rpm:{policy.name}:{service}"


def _tokens_scope(policy: PolicyConfig, service: str) -> str:
    return f"tpm:{policy.name}:{service}"
