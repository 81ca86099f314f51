"""The writes behind the stored metrics: a few HINCRBYs queued on the pipeline that already
finishes the job, so counting costs no round trip of its own.

On the worker's finish (a scripted pipeline, ``gateway/scripted_pipeline.py``) the increments
travel as one ``EVALSHA`` of a small loop, compiled into the finish script: one command to pack
in Python, whatever the number of fields. On a plain pipeline (failures, cancels, refusals, all
off the hot path) they are plain HINCRBYs, so redis-py never has to load a script first.
Everything here reads what the audit event already holds: no model is built for metrics.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any

import redis
from redis.client import Pipeline

from gateway import keys
from gateway.audit import AuditEvent
from gateway.metrics.schema import (
    CACHE_HITS,
    COST,
    DECISIONS,
    DOLLAR,
    FAILOVERS,
    JOBS,
    OVERHEAD,
    PROVIDER_LATENCY,
    QUEUE_WAIT,
    REFUSED,
    RETRIES,
    SECOND,
    SEP,
    TOKENS,
    TTFT,
    UNKNOWN,
    Metric,
)

#: KEYS[1] the metrics hash; ARGV field, increment, field, increment, ...
_ADD = """
for i = 1, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 0
"""

Increments = list[tuple[str, int]]
#: (policy, rule, outcome) of one decision
DecisionLabels = tuple[str, str, str]

#: distinct label sets whose histogram fields are kept ready (label values come from the config
#: and the service names, so far fewer than this in practice); past it the memo starts again
_MEMO_LIMIT = 10_000


class Recorder:
    """Turns one finished attempt (its audit event) into increments and queues them on a pipeline."""

    def __init__(self, connection: redis.Redis) -> None:
        self._add = connection.register_script(_ADD)  # the SHA is computed here, nothing is sent
        self._histograms: dict[tuple[str, tuple[str, ...]], tuple[tuple[str, ...], str]] = {}

    def attempt(
        self,
        event: AuditEvent,
        *,
        model: str | None,
        decisions: Iterable[DecisionLabels],
        first_delta_s: float | None = None,
    ) -> Increments:
        """What one attempt adds: its job's final state (succeeded, failed) or a retry, its times,
        tokens, cost and decisions. An interrupted attempt is not counted here: a cancel is counted
        where it is final (``canceled``), a shutdown requeues the job.

        ``model`` names the alias when the event has none (a job refused by the worker's plan);
        ``first_delta_s`` is a streamed attempt's time from the start of the attempt to its first delta.
        """
        out: Increments = []
        service, queue = event.service, event.queue
        alias = event.model or model or UNKNOWN
        status = event.status
        if status == "retrying":
            out.append((_field(RETRIES, service, alias, queue), 1))
        else:
            out.append((_field(JOBS, service, alias, queue, status), 1))
        wait_s = event.queue_wait_ms / 1000
        self._observe(out, QUEUE_WAIT, (queue,), wait_s)
        if event.latency_ms is not None and event.calls:  # (none: a cache hit, a scripts-only skill)
            self._observe(out, PROVIDER_LATENCY, (event.provider or UNKNOWN, alias), event.latency_ms / 1000)
        if status == "succeeded":
            worker_ms = event.total_ms - event.queue_wait_ms
            self._observe(out, OVERHEAD, (queue,), max(0.0, worker_ms - (event.latency_ms or 0.0)) / 1000)
            if first_delta_s is not None:
                self._observe(out, TTFT, (alias,), wait_s + first_delta_s)
        if event.input_tokens:
            out.append((_field(TOKENS, service, alias, "input"), event.input_tokens))
        if event.output_tokens:
            out.append((_field(TOKENS, service, alias, "output"), event.output_tokens))
        cost = round(event.cost_usd * DOLLAR)
        if cost:
            out.append((_field(COST, service, alias), cost))
        if event.cached:
            out.append((_field(CACHE_HITS, service, alias), 1))
        if event.calls > 1:
            out.append((_field(FAILOVERS, service, alias), event.calls - 1))
        for policy, rule, outcome in decisions:
            out.append((_field(DECISIONS, policy, rule, outcome), 1))
        return out

    def write_scripted(self, pipe: Pipeline, increments: Increments) -> None:
        """Queue ``increments`` as one command (for a pipeline run as a script, the worker's finish)."""
        if not increments:
            return
        args: list[Any] = []
        for name, amount in increments:
            args.append(name)
            args.append(amount)
        self._add(keys=[keys.METRICS], args=args, client=pipe)

    def _observe(self, out: Increments, metric: Metric, labels: tuple[str, ...], seconds: float) -> None:
        buckets, total = self._histogram_fields(metric, labels)
        out.append((buckets[bisect_left(metric.buckets, seconds)], 1))  # the count is the buckets' sum
        out.append((total, round(seconds * SECOND)))

    def _histogram_fields(self, metric: Metric, labels: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
        memo_key = (metric.name, labels)
        fields = self._histograms.get(memo_key)
        if fields is None:
            if len(self._histograms) >= _MEMO_LIMIT:
                self._histograms.clear()
            stem = SEP.join((metric.name, *labels))
            # one field per finite bucket plus the +Inf one (the last index)
            buckets = tuple(f"{stem}{SEP}{i}" for i in range(len(metric.buckets) + 1))
            fields = self._histograms[memo_key] = (buckets, f"{stem}{SEP}sum")
        return fields


def write(pipe: Pipeline | redis.Redis, increments: Increments) -> None:
    """Queue ``increments`` as plain HINCRBYs (a pipeline redis-py sends itself)."""
    for name, amount in increments:
        pipe.hincrby(keys.METRICS, name, amount)


def canceled(payload: Mapping[str, Any], queue: str) -> Increments:
    """A job canceled by its caller (queued, retrying or running); its model is the one it asked for.

    ``payload`` is the job's queue argument as stored (``QueuedJob.to_payload``), read without a model.
    """
    request = payload.get("request")
    asked = request.get("model") if isinstance(request, Mapping) else None
    service = str(payload.get("service") or UNKNOWN)
    return [(_field(JOBS, service, str(asked or UNKNOWN), queue, "canceled"), 1)]


def refused(service: str, reason: str, decisions: Iterable[Mapping[str, Any]]) -> Increments:
    """A request refused at the door: the refusal and the decisions behind it."""
    out: Increments = [(_field(REFUSED, service, reason), 1)]
    for d in decisions:
        out.append((_field(DECISIONS, str(d.get("policy")), str(d.get("rule")), str(d.get("outcome"))), 1))
    return out


def _field(metric: Metric, *labels: str) -> str:
    return SEP.join((metric.name, *labels))
