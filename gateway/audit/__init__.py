"""The audit trail: workers append one event per finished attempt to a Redis stream
(:func:`append_event`), one :class:`AuditWriter` drains it into the hash-chained ``audit.log``,
and the readers behind ``aigw audit tail|report|verify`` read that file.

    event.py    AuditEvent (one attempt of one job), request hashing, secret scrubbing,
                refusal_event (a request turned away at the door), append_event (the XADD)
    chain.py    the hash chain: GENESIS_HASH, canonical JSON, line_hash, seal, encode_line
    writer.py   AuditWriter: the one writer per file, stream to file, durably and once
    reader.py   read_last_lines, tail, follow, verify, report

The imports run one way: ``chain`` needs nothing of the others, ``event`` hashes with ``chain``,
``reader`` reads what ``chain`` sealed, and ``writer`` uses all three.
"""

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
from gateway.audit.reader import (
    ReportRow,
    VerifyReport,
    follow,
    percentile,
    read_last_lines,
    report,
    tail,
    verify,
)
from gateway.audit.writer import AuditWriter

__all__ = [
    "DEFAULT_STREAM_MAXLEN",
    "EVENT_FIELD",
    "GENESIS_HASH",
    "REDACTED",
    "SECRET_KEY",
    "SECRET_VALUES",
    "AuditEvent",
    "AuditWriter",
    "ReportRow",
    "Status",
    "VerifyReport",
    "append_event",
    "canonical_json",
    "encode_line",
    "follow",
    "format_time",
    "line_hash",
    "now_time",
    "percentile",
    "read_last_lines",
    "refusal_event",
    "report",
    "request_sha256",
    "scrub",
    "seal",
    "tail",
    "verify",
]
