"""The audit trail: the event a worker records per finished attempt, the hash-chained line format
of ``audit.log``, and the readers behind ``aigw audit tail|report|verify``.

Workers call :func:`append_event` (a Redis stream); one :class:`gateway.audit_writer.AuditWriter`
turns the stream into lines.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import redis
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from gateway import keys

#: ``prev`` of the first line of a file.
GENESIS_HASH = "0" * 64
#: The one field of a stream entry; its value is the event as JSON.
EVENT_FIELD = "e"
#: Safety cap on the stream (approximate). The writer deletes what it has written, so the stream
#: only holds the backlog; the cap bounds Redis memory if the writer stays down for very long, at
#: the price of dropping the oldest unwritten events past it.
DEFAULT_STREAM_MAXLEN = 1_000_000

REDACTED = "[redacted]"
#: Keys whose values are never written, matched on the lower-cased key with ``-`` read as ``_``:
#: ``api_key``, ``x-api-key``, ``openai_api_key``, ``Authorization``, ``access_token``,
#: ``password``, ``client_secret``... but not ``max_tokens`` or ``input_tokens``.
SECRET_KEY = re.compile(
    r"(^|_)(api_?key|authori[sz]ation|token|password|passwd|secrets?|secret_key|private_key|cookie)$"
)
#: Strings that look like credentials wherever they appear in a body.
SECRET_VALUES: tuple[re.Pattern[str], ...] = (
    re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),
    re.compile(r"(?i)(?<=bearer )[A-Za-z0-9._~+/=\-]{8,}"),
)

Status = Literal["succeeded", "failed", "canceled", "retrying"]


def format_time(moment: datetime) -> str:
    """ISO-8601 in UTC with millisecond precision: ``2025-01-31T12:00:00.123Z``."""
    if moment.tzinfo is None:
        raise ValueError("time must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_time() -> str:
    return format_time(datetime.now(UTC))


def canonical_json(value: object) -> bytes:
    """Sorted keys, no spaces, UTF-8, no NaN: the bytes every hash in the audit path is taken over."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_jsonable
    ).encode("utf-8")


def _jsonable(value: object) -> object:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def request_sha256(content: object) -> str:
    """Hex SHA-256 of the canonical JSON of the request content (pydantic models are dumped first)."""
    return hashlib.sha256(canonical_json(content)).hexdigest()


def scrub(
    value: Any,
    *,
    extra_keys: re.Pattern[str] | None = None,
    extra_values: Iterable[re.Pattern[str]] = (),
) -> Any:
    """A copy of a JSON-like body with secrets replaced by ``"[redacted]"``.

    Values under keys matching :data:`SECRET_KEY` are replaced whole; substrings matching
    :data:`SECRET_VALUES` are masked. A policy that knows more (a customer's token format, its
    own header names) passes ``extra_keys`` / ``extra_values``; :class:`AuditEvent` applies the
    defaults to ``request`` and ``response`` on every construction, so it cannot be forgotten.
    """
    value_patterns = (*SECRET_VALUES, *extra_values)
    return _scrub(value, extra_keys, value_patterns)


def _scrub(value: Any, extra_keys: re.Pattern[str] | None, patterns: tuple[re.Pattern[str], ...]) -> Any:
    if isinstance(value, Mapping):
        return {
            k: REDACTED if _is_secret_key(str(k), extra_keys) else _scrub(v, extra_keys, patterns)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(item, extra_keys, patterns) for item in value]
    if isinstance(value, str):
        for pattern in patterns:
            value = pattern.sub(REDACTED, value)
    return value


def _is_secret_key(key: str, extra: re.Pattern[str] | None) -> bool:
    normal = key.lower().replace("-", "_")
    return bool(SECRET_KEY.search(normal) or (extra is not None and extra.search(normal)))


class AuditEvent(BaseModel):
    """One finished attempt of one job, as a worker reports it.

    ``model``/``provider``/``provider_model``/``deployment`` and ``latency_ms`` are required but
    may be null: a job denied by policy or canceled before routing has none of them, and saying so
    explicitly beats a worker forgetting to fill them in.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    time: str = Field(default_factory=now_time, description="ISO-8601 UTC, ms precision.")
    job_id: str = Field(min_length=1)
    attempt: int = Field(ge=1)
    service: str = Field(min_length=1)
    model: str | None = Field(description="The model alias.")
    provider: str | None
    provider_model: str | None
    deployment: str | None
    status: Status
    queue: str
    queue_wait_ms: float = Field(ge=0)
    latency_ms: float | None = Field(ge=0, description="Provider latency; null when no call completed.")
    total_ms: float = Field(ge=0)
    input_tokens: int = Field(0, ge=0)
    output_tokens: int = Field(0, ge=0)
    cost_usd: float = Field(0.0, ge=0)
    request_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    error_type: str | None = None
    error_message: str | None = None
    calls: int = Field(ge=0, description="Provider calls made in this attempt.")
    policy: list[dict[str, JsonValue]] = Field(default_factory=list)
    skill: dict[str, JsonValue] | None = None
    request: JsonValue = None
    response: JsonValue = None
    offline: bool = False

    @field_validator("time", mode="before")
    @classmethod
    def _utc_ms(cls, value: object) -> object:
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if isinstance(value, datetime):
            return format_time(value)
        return value

    @field_validator("request", "response", "error_message")
    @classmethod
    def _no_secrets(cls, value: JsonValue) -> JsonValue:
        return scrub(value)  # type: ignore[no-any-return]

    def record(self) -> dict[str, Any]:
        """The fields of the audit line, in order; bodies are left out unless a policy set them."""
        data = self.model_dump(mode="json")
        for body in ("request", "response"):
            if data[body] is None:
                del data[body]
        return data


def append_event(
    pipe_or_client: redis.Redis, event: AuditEvent, maxlen: int | None = DEFAULT_STREAM_MAXLEN
) -> None:
    """XADD the event to the audit stream; pass the pipeline that writes the result to keep them together."""
    payload = json.dumps(event.record(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    pipe_or_client.xadd(keys.AUDIT_STREAM, {EVENT_FIELD: payload}, maxlen=maxlen, approximate=True)


# -- the hash chain ---------------------------------------------------------------------------------
# Each line is a JSON object whose ``prev`` is the previous line's ``hash`` and whose ``hash`` is the
# SHA-256 of the canonical JSON of the line without ``hash``. An edited line fails its own hash; a
# deleted, inserted or reordered line breaks the next ``prev``. Cutting lines off the end of the
# file is not detectable from the file alone.


def line_hash(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def seal(record: Mapping[str, Any], prev: str) -> dict[str, Any]:
    """The record with ``prev`` and ``hash`` added, ready to be written as the next line."""
    sealed = {**record, "prev": prev}
    sealed["hash"] = line_hash(sealed)
    return sealed


def encode_line(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode() + b"\n"


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    lines: int
    first_bad_line: int | None
    reason: str


def verify(path: Path) -> VerifyReport:
    """Check the whole chain of one file and name the first line that breaks it (1-based)."""
    prev, count = GENESIS_HASH, 0
    bad: int | None = None
    reason = "chain intact"
    with path.open("rb") as file:
        for count, raw in enumerate(file, start=1):
            if bad is not None:
                continue  # keep counting lines
            problem, prev = _check_line(raw, prev, first=count == 1)
            if problem:
                bad, reason = count, problem
    return VerifyReport(ok=bad is None, lines=count, first_bad_line=bad, reason=reason)


def _check_line(raw: bytes, prev: str, *, first: bool) -> tuple[str, str]:
    """(problem or "", this line's hash)."""
    if not raw.endswith(b"\n"):
        return "incomplete last line (torn write)", prev
    try:
        record = json.loads(raw)
    except ValueError:
        return "not valid JSON", prev
    if not isinstance(record, dict) or not isinstance(record.get("hash"), str):
        return "not a chained audit line (no hash)", prev
    if line_hash(record) != record["hash"]:
        return "hash does not match the line's content (line edited)", prev
    if record.get("prev") != prev:
        where = "the start of the chain" if first else "the previous line's hash"
        return f"prev does not match {where} (a line was deleted, inserted or reordered)", prev
    return "", str(record["hash"])


# -- readers ----------------------------------------------------------------------------------------


def read_last_lines(path: Path, n: int, block_size: int = 64 * 1024) -> list[bytes]:
    """The last ``n`` complete lines (without newline), reading backwards from the end of the file.

    A trailing line with no newline yet (a write in progress) is not returned.
    """
    if n <= 0:
        return []
    with path.open("rb") as file:
        pos = file.seek(0, os.SEEK_END)
        buf, newlines = b"", 0
        while pos > 0 and newlines <= n + 1:
            step = min(block_size, pos)
            pos -= step
            file.seek(pos)
            chunk = file.read(step)
            newlines += chunk.count(b"\n")
            buf = chunk + buf
    lines = buf.split(b"\n")[:-1]  # what follows the last newline is empty or incomplete
    if pos > 0:
        lines = lines[1:]  # the first piece may start mid-line
    return lines[-n:]


def tail(path: Path, n: int) -> list[dict[str, Any]]:
    """The last ``n`` lines, parsed, oldest first."""
    return [json.loads(line) for line in read_last_lines(path, n)]


def follow(
    path: Path, *, from_start: bool = False, poll_s: float = 0.5, stop: threading.Event | None = None
) -> Iterator[dict[str, Any]]:
    """Yield lines as the writer appends them (``aigw audit tail -f``), until ``stop`` is set."""
    stop = stop or threading.Event()
    with path.open("rb") as file:
        if not from_start:
            file.seek(0, os.SEEK_END)
        pending = b""
        while not stop.is_set():
            chunk = file.readline()
            if not chunk:
                stop.wait(poll_s)
                continue
            pending += chunk
            if pending.endswith(b"\n"):
                yield json.loads(pending)
                pending = b""


@dataclass(frozen=True)
class ReportRow:
    """Usage of one model alias by one service. Tokens and cost add up every attempt (failed ones
    spend too); latency percentiles are over the attempts that have a provider latency."""

    service: str
    model: str | None
    count: int
    succeeded: int
    failed: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    p50_latency_ms: float | None
    p95_latency_ms: float | None


@dataclass
class _Totals:
    count: int = 0
    succeeded: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    costs: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def add(self, line: Mapping[str, Any]) -> None:
        self.count += 1
        self.succeeded += line["status"] == "succeeded"
        self.failed += line["status"] == "failed"
        self.input_tokens += line["input_tokens"]
        self.output_tokens += line["output_tokens"]
        self.costs.append(line["cost_usd"])
        if line.get("latency_ms") is not None:
            self.latencies.append(line["latency_ms"])


def report(path: Path, since: datetime | None = None) -> list[ReportRow]:
    """Aggregate the log by (service, model alias), optionally from ``since`` (naive means UTC)."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    groups: dict[tuple[str, str | None], _Totals] = {}
    with path.open("rb") as file:
        for raw in file:
            if not raw.endswith(b"\n"):
                break  # a write in progress
            line = json.loads(raw)
            if since is not None and datetime.fromisoformat(line["time"]) < since:
                continue
            groups.setdefault((line["service"], line["model"]), _Totals()).add(line)
    return [
        _row(key, totals) for key, totals in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
    ]


def _row(key: tuple[str, str | None], totals: _Totals) -> ReportRow:
    latencies = sorted(totals.latencies)
    return ReportRow(
        service=key[0],
        model=key[1],
        count=totals.count,
        succeeded=totals.succeeded,
        failed=totals.failed,
        input_tokens=totals.input_tokens,
        output_tokens=totals.output_tokens,
        cost_usd=math.fsum(totals.costs),
        p50_latency_ms=percentile(latencies, 0.50),
        p95_latency_ms=percentile(latencies, 0.95),
    )


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default, ``statistics`` "inclusive")."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)
