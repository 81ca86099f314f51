"""``/metrics``: the stored counters and histograms read back from Redis, the live gauges read at
scrape time, rendered in Prometheus' text format by ``prometheus_client``.

Two round trips per scrape: the metrics hash with every queue's length, head, started registry
and worker registry and every breaker's cooldown in one pipeline; then the head jobs' enqueue
times and whether each registered worker's key is still alive. Nothing here is on a job's path.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime

import redis
from loguru import logger
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.core import (
    Metric as Family,
)
from prometheus_client.registry import Collector
from rq.queue import Queue
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from gateway import keys
from gateway.config import Config
from gateway.metrics.schema import (
    BREAKER,
    BY_NAME,
    IN_FLIGHT,
    OLDEST_AGE,
    QUEUE_DEPTH,
    SEP,
    STORED,
    WORKERS,
    Metric,
)
from gateway.rq_speedups import JSONSerializer

#: what a histogram's stored fields become: labels -> (bucket counts, sum, count)
_Series = dict[tuple[str, ...], list[float]]


def deployment_names(config: Config) -> list[str]:
    """Every deployment's breaker name (``gateway.config.deployment_name``, as the workers key them)."""
    return [name for name, _deployment in config.models.named_deployments()]


class GatewayCollector(Collector):
    """A ``prometheus_client`` collector over one Redis: every scrape reads it afresh."""

    def __init__(self, connection: redis.Redis, config: Config) -> None:
        self.connection = connection
        self.queues = list(config.gateway.queues)
        self.deployments = deployment_names(config)

    def collect(self) -> Iterator[Family]:
        stored, live = self._read()
        yield from _stored_families(stored)
        yield from live

    def _read(self) -> tuple[dict[bytes, bytes], list[Family]]:
        queues = [Queue(name, connection=self.connection, serializer=JSONSerializer) for name in self.queues]
        now = time.time()
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.METRICS)
            for queue in queues:
                pipe.llen(queue.key)
                pipe.lindex(queue.key, 0)
                pipe.zcount(queue.started_job_registry.key, now, "+inf")  # (expired ones are dead workers')
                pipe.smembers(WORKERS_BY_QUEUE_KEY % queue.name)
            for name in self.deployments:
                pipe.pttl(keys.deployment_cooldown(name))
            replies = pipe.execute()
        stored: dict[bytes, bytes] = replies[0]
        per_queue = [replies[1 + 4 * i : 5 + 4 * i] for i in range(len(queues))]
        cooldowns = replies[1 + 4 * len(queues) :]
        heads = [head for _depth, head, _wip, _members in per_queue]
        members = [sorted(m) for _depth, _head, _wip, m in per_queue]
        with self.connection.pipeline(transaction=False) as pipe:
            for head in heads:
                if head is not None:
                    pipe.hget(Queue.job_class.key_for(keys.text(head) or ""), "enqueued_at")
            for worker_keys in members:
                for key in worker_keys:
                    pipe.exists(key)
            second = iter(pipe.execute())
        depth = GaugeMetricFamily(QUEUE_DEPTH.full_name, QUEUE_DEPTH.help, labels=QUEUE_DEPTH.labels)
        age = GaugeMetricFamily(OLDEST_AGE.full_name, OLDEST_AGE.help, labels=OLDEST_AGE.labels)
        running = GaugeMetricFamily(IN_FLIGHT.full_name, IN_FLIGHT.help, labels=IN_FLIGHT.labels)
        workers = GaugeMetricFamily(WORKERS.full_name, WORKERS.help, labels=WORKERS.labels)
        for queue, (length, head, wip, _m), worker_keys in zip(queues, per_queue, members, strict=True):
            enqueued = next(second) if head is not None else None
            depth.add_metric([queue.name], float(length))
            age.add_metric([queue.name], _age(enqueued, now))
            running.add_metric([queue.name], float(wip))
            workers.add_metric([queue.name], float(sum(1 for _ in worker_keys if next(second))))
        breaker = GaugeMetricFamily(BREAKER.full_name, BREAKER.help, labels=BREAKER.labels)
        for name, ttl in zip(self.deployments, cooldowns, strict=True):
            breaker.add_metric([name], 1.0 if ttl > 0 else 0.0)  # (-2: no cooldown key, closed)
        return stored, [depth, age, running, workers, breaker]


def render(connection: redis.Redis, config: Config) -> bytes:
    """The text exposition of every metric (``prometheus_client.generate_latest``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(connection, config))
    return generate_latest(registry)


def _age(enqueued_at: bytes | None, now: float) -> float:
    """Seconds since RQ enqueued the head job (its ``enqueued_at``, ISO-8601 UTC); 0 with none."""
    text = keys.text(enqueued_at)
    if not text:
        return 0.0
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return max(0.0, now - moment.timestamp())


def _stored_families(stored: dict[bytes, bytes]) -> Iterator[Family]:
    """The stored fields grouped by metric and labels; a field aigw did not write is skipped."""
    counters: dict[str, dict[tuple[str, ...], float]] = defaultdict(dict)
    histograms: dict[str, _Series] = defaultdict(dict)
    skipped = 0
    for raw_field, raw_value in stored.items():
        parts = raw_field.decode(errors="replace").split(SEP)
        metric = BY_NAME.get(parts[0])
        try:
            amount = int(raw_value)
        except ValueError:
            metric = None
        if metric is None:
            skipped += 1
            continue
        labels = tuple(parts[1:])
        if metric.kind == "counter":
            if len(labels) != len(metric.labels):
                skipped += 1
                continue
            counters[metric.name][labels] = amount * metric.scale
            continue
        if not _add_histogram_field(histograms[metric.name], metric, labels, amount):
            skipped += 1
    if skipped:
        logger.warning("/metrics: skipped {} fields of {} it cannot read", skipped, keys.METRICS)
    for metric in STORED:
        if metric.kind == "counter":
            counter = CounterMetricFamily(metric.full_name, metric.help, labels=metric.labels)
            for labels, value in sorted(counters[metric.name].items()):
                counter.add_metric(list(labels), value)
            yield counter
        else:
            yield _histogram(metric, histograms[metric.name])


def _add_histogram_field(series: _Series, metric: Metric, parts: tuple[str, ...], amount: int) -> bool:
    """One stored field of a histogram: a bucket's own count (by index) or its ``sum``."""
    if len(parts) != len(metric.labels) + 1:
        return False
    labels, slot = parts[:-1], parts[-1]
    row = series.setdefault(labels, [0.0] * (len(metric.buckets) + 2))  # buckets, +Inf, sum
    if slot == "sum":
        row[-1] = amount * metric.scale
    elif slot.isdigit() and int(slot) <= len(metric.buckets):
        row[int(slot)] = float(amount)
    else:
        return False
    return True


def _histogram(metric: Metric, series: _Series) -> HistogramMetricFamily:
    """The stored buckets (each its own count) cumulated, as Prometheus' ``le`` buckets are, with
    the stored sum; the count is the +Inf bucket's (every observation lands in one bucket), so no
    job writes a count of its own."""
    family = HistogramMetricFamily(metric.full_name, metric.help, labels=metric.labels)
    bounds = [_le(b) for b in metric.buckets] + ["+Inf"]
    for labels, row in sorted(series.items()):
        named = dict(zip(metric.labels, labels, strict=True))
        running = 0.0
        for bound, own in zip(bounds, row[: len(bounds)], strict=True):
            running += own
            family.add_sample(metric.full_name + "_bucket", {**named, "le": bound}, running)
        family.add_sample(metric.full_name + "_count", named, running)
        family.add_sample(metric.full_name + "_sum", named, row[-1])
    return family


def _le(bound: float) -> str:
    return repr(float(bound))
