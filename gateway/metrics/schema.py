"""Every metric aigw exposes: its name, kind, labels, help text and, for a histogram, its buckets.

Workers and the API add to counters and histogram buckets in one Redis hash (``keys.METRICS``), so
``/metrics`` sums every process on every host; the gauges are read live at scrape time. A hash
field is the metric's short name and its label values joined by ``SEP``; a histogram's field ends
with the bucket's index (non-cumulative counts: cumulated at scrape, the count being their sum) or
``sum``. Every
amount is an integer (HINCRBY is exact and never drifts): seconds are stored as microseconds and
US dollars as units of 1e-8, the precision of an audit line's ``cost_usd``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: between a field's parts; label values are names from the config and service names
#: (``[A-Za-z0-9_.-]``), so it never occurs inside one (a field that splits wrong is skipped)
SEP = "\x1f"
PREFIX = "aigw_"
#: a stored second is this many units (microseconds)
SECOND = 1_000_000
#: a stored US dollar is this many units (1e-8 USD, the audit line's rounding of cost_usd)
DOLLAR = 100_000_000
#: a label whose value is not known (a job refused before routing has no model)
UNKNOWN = "none"

#: provider latency, queue wait and time to first token, in seconds
SLOW_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: the gateway's own time per job, in seconds: fractions of a millisecond up to a few seconds
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class Metric:
    """One metric family; ``name`` is without the ``aigw_`` prefix and is the hash fields' first part."""

    name: str
    kind: str  # "counter", "histogram" or "gauge"
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()
    #: what a stored unit is worth (counters and histogram sums): 1, or 1/SECOND, 1/DOLLAR
    scale: float = 1.0

    @property
    def full_name(self) -> str:
        return PREFIX + self.name


JOBS = Metric(
    "jobs_total", "counter", ("service", "model", "queue", "state"),
    "Jobs that reached a final state: succeeded, failed (for good) or canceled.",
)  # fmt: skip
RETRIES = Metric(
    "job_retries_total", "counter", ("service", "model", "queue"),
    "Attempts that failed and were handed back to the queue for another attempt.",
)  # fmt: skip
REFUSED = Metric(
    "requests_refused_total", "counter", ("service", "reason"),
    "Requests the API refused at the door (a policy, budget or rate limit); no job was created.",
)  # fmt: skip
TOKENS = Metric(
    "tokens_total", "counter", ("service", "model", "direction"),
    "Tokens charged, input and output, of every provider call that answered (cache hits are free).",
)  # fmt: skip
COST = Metric(
    "cost_usd_total", "counter", ("service", "model"),
    "US dollars charged at the deployments' prices (unpriced deployments add nothing).",
    scale=1 / DOLLAR,
)  # fmt: skip
CACHE_HITS = Metric(
    "cache_hits_total", "counter", ("service", "model"),
    "Jobs answered from the exact-match response cache.",
)  # fmt: skip
FAILOVERS = Metric(
    "failovers_total", "counter", ("service", "model"),
    "Provider calls beyond the first within one attempt: a deployment failed and the next was tried.",
)  # fmt: skip
DECISIONS = Metric(
    "policy_decisions_total", "counter", ("policy", "rule", "outcome"),
    "Policy decisions: each worker attempt's plan, and the API's refusals at the door.",
)  # fmt: skip
PROVIDER_LATENCY = Metric(
    "provider_latency_seconds", "histogram", ("provider", "model"),
    "Provider call latency of each attempt's last call (the one that answered, on success).",
    SLOW_BUCKETS, 1 / SECOND,
)  # fmt: skip
OVERHEAD = Metric(
    "gateway_overhead_seconds", "histogram", ("queue",),
    "A succeeded attempt's time in the worker minus its provider time (queue wait not included).",
    FAST_BUCKETS, 1 / SECOND,
)  # fmt: skip
QUEUE_WAIT = Metric(
    "queue_wait_seconds", "histogram", ("queue",),
    "Time from enqueue (or retry) to a worker starting the attempt.",
    SLOW_BUCKETS, 1 / SECOND,
)  # fmt: skip
TTFT = Metric(
    "time_to_first_token_seconds", "histogram", ("model",),
    "Streamed jobs: time from enqueue to the first delta written to the job's stream.",
    SLOW_BUCKETS, 1 / SECOND,
)  # fmt: skip
QUEUE_DEPTH = Metric("queue_depth", "gauge", ("queue",), "Jobs waiting in the queue.")
OLDEST_AGE = Metric(
    "queue_oldest_job_age_seconds", "gauge", ("queue",),
    "Age of the job at the head of the queue (0 when the queue is empty).",
)  # fmt: skip
IN_FLIGHT = Metric(
    "jobs_in_flight", "gauge", ("queue",), "Jobs a live worker is running (RQ's started registry)."
)
WORKERS = Metric("workers", "gauge", ("queue",), "Live workers serving the queue (RQ's worker registry).")
BREAKER = Metric(
    "breaker_open", "gauge", ("deployment",),
    "1 while the deployment's circuit breaker is open (workers skip it), else 0.",
)  # fmt: skip

#: what the workers and the API add to in Redis
STORED: tuple[Metric, ...] = (
    JOBS, RETRIES, REFUSED, TOKENS, COST, CACHE_HITS, FAILOVERS, DECISIONS,
    PROVIDER_LATENCY, OVERHEAD, QUEUE_WAIT, TTFT,
)  # fmt: skip
#: what the API reads live at every scrape
LIVE: tuple[Metric, ...] = (QUEUE_DEPTH, OLDEST_AGE, IN_FLIGHT, WORKERS, BREAKER)
ALL: tuple[Metric, ...] = STORED + LIVE
BY_NAME = {m.name: m for m in STORED}


def exposed_names() -> set[str]:
    """Every sample name ``/metrics`` can show (a histogram's ``_bucket``, ``_sum``, ``_count``)."""
    names: set[str] = set()
    for metric in ALL:
        if metric.kind == "histogram":
            names.update(metric.full_name + s for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(metric.full_name)
    return names
