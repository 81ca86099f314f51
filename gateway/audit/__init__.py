"""The audit trail: workers append one event per finished attempt to a Redis stream
(:func:`append_event`), one :class:`AuditWriter` drains it into the hash-chained ``audit.log``
(rotated by size into ``audit.log.000001``, ...), and the readers behind
``aigw audit tail|verify|report|anomalies`` read those files.

    event.py      AuditEvent (one attempt of one job), request hashing, secret scrubbing,
                  refusal_event (a request turned away at the door), append_event (the XADD)
    chain.py      the hash chain: GENESIS_HASH, canonical JSON, line_hash, seal, encode_line
    files.py      AuditFiles: the live file and its rotated ones, in chain order; reading them
    writer.py     AuditWriter: the one writer per file, stream to file, durably and once; rotation
    query.py      --since (a duration or a time) and the line filter of tail
    reader.py     read_last_lines, tail, follow, verify (across the rotated files)
    report.py     usage by service, model and day: tokens, exact cost, latency percentiles
    anomalies.py  each service's recent hours against its own baseline, with the reasons

The imports run one way: ``chain`` needs nothing of the others, ``event`` hashes with ``chain``,
``files`` and ``query`` read what ``chain`` sealed, ``reader``, ``report`` and ``anomalies`` read
through ``files`` (``anomalies`` prices lines as ``report`` does), and ``writer`` uses ``chain``,
``event`` and ``files``.
"""

from gateway.audit.anomalies import Anomaly, Findings, anomalies
from gateway.audit.chain import GENESIS_HASH, canonical_json, encode_line, line_hash, seal
from gateway.audit.event import (
    DEFAULT_STREAM_MAXLEN,
    EVENT_FIELD,
    REDACTED,
    SECRET_KEY,
    SECRET_VALUES,
    AuditEvent,
    Status,
    append_event,
    format_time,
    now_time,
    refusal_event,
    request_sha256,
    scrub,
)
from gateway.audit.files import AuditFiles, scan
from gateway.audit.query import LineFilter, parse_since
from gateway.audit.reader import VerifyReport, follow, read_last_lines, tail, verify
from gateway.audit.report import Report, ReportRow, parse_group_by, percentile, priced_deployments, report
from gateway.audit.writer import AuditWriter

__all__ = [
    "DEFAULT_STREAM_MAXLEN",
    "EVENT_FIELD",
    "GENESIS_HASH",
    "REDACTED",
    "SECRET_KEY",
    "SECRET_VALUES",
    "Anomaly",
    "AuditEvent",
    "AuditFiles",
    "AuditWriter",
    "Findings",
    "LineFilter",
    "Report",
    "ReportRow",
    "Status",
    "VerifyReport",
    "anomalies",
    "append_event",
    "canonical_json",
    "encode_line",
    "follow",
    "format_time",
    "line_hash",
    "now_time",
    "parse_group_by",
    "parse_since",
    "percentile",
    "priced_deployments",
    "read_last_lines",
    "refusal_event",
    "report",
    "request_sha256",
    "scan",
    "scrub",
    "seal",
    "tail",
    "verify",
]
