"""Prometheus metrics, aggregated across every API and worker process and host.

    schema.py      every metric: name, kind, labels, help, buckets; how a Redis hash field names it
    recorder.py    a finished attempt (or a cancel, a refusal) as HINCRBYs on the pipeline that
                   already finishes it: no round trip of its own
    exposition.py  GET /metrics: the hash read back, the live gauges, prometheus_client's text

The face leaves ``exposition`` out: workers record but never render, so they do not import
prometheus_client (the API imports ``gateway.metrics.exposition`` itself).
"""

from gateway.metrics.recorder import Increments, Recorder, canceled, refused, write
from gateway.metrics.schema import ALL, STORED, Metric, exposed_names

__all__ = [
    "ALL",
    "STORED",
    "Increments",
    "Metric",
    "Recorder",
    "canceled",
    "exposed_names",
    "refused",
    "write",
]
