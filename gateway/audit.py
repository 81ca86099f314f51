"""The audit trail: workers append one event per finished attempt to a Redis stream
(:func:`append_event`), one :class:`AuditWriter` drains it into the hash-chained ``audit.log``,
and the readers behind ``aigw audit tail|report|verify`` read that file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import redis
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

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

#: "refused": turned away at the door by a policy, budget or rate limit (no job was created)
Status = Literal["succeeded", "failed", "canceled", "retrying", "refused"]


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
    cached: bool = False

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


def refusal_event(
    service: str, queue: str, model: str, request: BaseModel, error: Any, policy: list[dict[str, Any]]
) -> AuditEvent:
    """The audit line of a request refused at the door (no job exists; the id is the line's own)."""
    return AuditEvent(
        job_id=f"refused-{uuid.uuid4().hex}",
        attempt=1,
        service=service,
        model=model,
        provider=None,
        provider_model=None,
        deployment=None,
        status="refused",
        queue=queue,
        queue_wait_ms=0,
        latency_ms=None,
        total_ms=0,
        request_sha256=request_sha256(request.model_dump(mode="json", exclude_none=True)),
        error_type=error.type,
        error_message=error.message,
        calls=0,
        policy=policy,
    )


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


# -- the writer -------------------------------------------------------------------------------------
# Delivery is at-least-once end to end, and the writer turns it into exactly-once lines. It reads
# with a consumer group, appends a batch, fsyncs, and only then XACKs and XDELs the entries, so a
# crash at any point leaves the unwritten entries pending in Redis; on (re)start it claims every
# pending entry of the group (XAUTOCLAIM, its own and those of dead writers). Entries that did reach
# the file before the crash come back too, and are dropped by a bounded memory of recently written
# (job_id, attempt, status) keys, seeded from the tail of the file. There is one writer per file by
# design (DESIGN.md, "Audit: Redis first, then one writer"), which is what lets it claim pending
# entries without waiting for them to go idle.

_Key = tuple[str, int, str]
_MIN_BACKOFF_S = 0.1


class AuditWriter:
    """Owns one audit file. ``run`` loops until stopped; ``run_once`` drains what is there.

    The Redis client must not have a ``socket_timeout`` shorter than the ``block_ms`` it is run with.
    Malformed stream entries are not lost either: they go, scrubbed, to ``<path>.rejected``.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        path: Path,
        consumer: str,
        *,
        batch_size: int = 500,
        remember: int = 10_000,
        claim_idle_ms: int = 0,
        max_backoff_s: float = 30.0,
    ) -> None:
        if batch_size < 1 or remember < 1:
            raise ValueError("batch_size and remember must be at least 1")
        self.path = path
        self.consumer = consumer
        self._redis = redis_client
        self._batch_size = batch_size
        self._claim_idle_ms = claim_idle_ms
        self._max_backoff_s = max_backoff_s
        self._seen = _RecentKeys(remember)
        self._prev = GENESIS_HASH
        self._fd: int | None = None
        self._joined = False  # group created and pending entries claimed since the last failure

    def __enter__(self) -> AuditWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def run(self, stop: threading.Event, *, block_ms: int = 1000) -> None:
        """Write until ``stop`` is set. Redis or disk trouble is logged and retried with backoff."""
        logger.info("audit writer {} draining {} into {}", self.consumer, keys.AUDIT_STREAM, self.path)
        backoff = _MIN_BACKOFF_S
        while not stop.is_set():
            try:
                self.run_once(block_ms)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                logger.warning("audit writer: Redis unavailable ({}); retrying in {:.1f}s", exc, backoff)
            except (redis.RedisError, OSError):
                logger.exception("audit writer: batch failed; retrying in {:.1f}s", backoff)
            else:
                backoff = _MIN_BACKOFF_S
                continue
            stop.wait(backoff)
            backoff = min(backoff * 2, self._max_backoff_s)

    def run_once(self, block_ms: int = 0) -> int:
        """Drain the stream (waiting up to ``block_ms`` for the first entry; 0 = no wait); lines written."""
        try:
            fd = self._open()
            written = 0 if self._joined else self._join(fd)
            block = block_ms if block_ms > 0 else None
            while True:
                reply = self._redis.xreadgroup(
                    keys.AUDIT_GROUP, self.consumer, {keys.AUDIT_STREAM: ">"}, self._batch_size, block
                )
                entries = _entries(reply)
                written += self._process(fd, entries)
                if len(entries) < self._batch_size:
                    return written
                block = None
        except BaseException:
            self._joined = False  # what we read and did not ack is pending: claim it again next time
            raise

    # -- start-up -----------------------------------------------------------------------------------

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if created:
                _fsync_dir(self.path.parent)
            self._resume(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def _resume(self, fd: int) -> None:
        """Drop a torn last line, continue the chain from the last line, remember recent keys."""
        complete = _complete_size(self.path)
        if complete < os.fstat(fd).st_size:
            logger.warning("audit writer: dropping an incomplete last line of {} (torn write)", self.path)
            os.ftruncate(fd, complete)
            os.fsync(fd)
        lines = read_last_lines(self.path, self._seen.maxlen)
        for raw in lines:
            if (key := _line_key(raw)) is not None:
                self._seen.add(key)
        if lines:
            self._prev = _chain_hash(lines[-1], self.path)

    def _join(self, fd: int) -> int:
        """Create the group if missing and write every entry still pending in it."""
        try:
            self._redis.xgroup_create(keys.AUDIT_STREAM, keys.AUDIT_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise
        written, cursor = 0, "0-0"
        while True:
            reply = self._redis.xautoclaim(
                keys.AUDIT_STREAM,
                keys.AUDIT_GROUP,
                self.consumer,
                self._claim_idle_ms,
                cursor,
                count=self._batch_size,
            )
            cursor = _text(reply[0])
            written += self._process(fd, list(reply[1]))
            if cursor == "0-0":
                break
        if written:
            logger.info("audit writer: wrote {} events left pending by an earlier writer", written)
        self._forget_idle_consumers()
        self._joined = True
        return written

    def _forget_idle_consumers(self) -> None:
        """Each writer run has its own consumer name; drop the old ones once they hold nothing."""
        for consumer in self._redis.xinfo_consumers(keys.AUDIT_STREAM, keys.AUDIT_GROUP):
            name = _text(consumer["name"])
            if name != self.consumer and consumer["pending"] == 0:
                self._redis.xgroup_delconsumer(keys.AUDIT_STREAM, keys.AUDIT_GROUP, name)

    # -- one batch ----------------------------------------------------------------------------------

    def _process(self, fd: int, entries: list[tuple[Any, Any]]) -> int:
        """Append the batch durably, then ack and delete it; duplicates are acked, not written."""
        if not entries:
            return 0
        lines: list[bytes] = []
        rejects: list[bytes] = []
        new_keys: dict[_Key, None] = {}  # ordered, so the oldest are forgotten first
        prev = self._prev
        for entry_id, fields in entries:
            if not fields:
                continue  # deleted from the stream (MAXLEN) before it was delivered
            try:
                event = _parse(fields)
                key: _Key = (event.job_id, event.attempt, event.status)
                if key in self._seen or key in new_keys:
                    continue
                sealed = seal(event.record(), prev)
                line = encode_line(sealed)
            except ValueError as exc:
                rejects.append(_reject_line(entry_id, fields, exc))
                continue
            lines.append(line)
            new_keys[key] = None
            prev = sealed["hash"]
        if lines:
            _append_durably(fd, b"".join(lines))
            self._prev = prev
            for written in new_keys:
                self._seen.add(written)
        if rejects:
            self._write_rejects(rejects)
        self._ack([entry_id for entry_id, _ in entries])
        return len(lines)

    def _ack(self, ids: list[Any]) -> None:
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(keys.AUDIT_STREAM, keys.AUDIT_GROUP, *ids)
            pipe.xdel(keys.AUDIT_STREAM, *ids)
            pipe.execute()

    def _write_rejects(self, rejects: list[bytes]) -> None:
        path = self.path.with_name(self.path.name + ".rejected")
        logger.error("audit writer: {} malformed audit events moved to {}", len(rejects), path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            _append_durably(fd, b"".join(rejects))
        finally:
            os.close(fd)


class _RecentKeys:
    """An insertion-ordered set that forgets its oldest keys past ``maxlen``."""

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self._keys: OrderedDict[_Key, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def add(self, key: _Key) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        if len(self._keys) > self.maxlen:
            self._keys.popitem(last=False)


def _append_durably(fd: int, data: bytes) -> None:
    """Write all of ``data`` and fsync; on failure cut the file back so no torn line stays behind."""
    size = os.fstat(fd).st_size
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError:
        os.ftruncate(fd, size)
        raise


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _complete_size(path: Path, block_size: int = 64 * 1024) -> int:
    """The offset just past the file's last newline (0 if it has none)."""
    with path.open("rb") as file:
        pos = file.seek(0, os.SEEK_END)
        while pos > 0:
            step = min(block_size, pos)
            pos -= step
            file.seek(pos)
            chunk = file.read(step)
            if (cut := chunk.rfind(b"\n")) >= 0:
                return pos + cut + 1
    return 0


def _line_key(raw: bytes) -> _Key | None:
    # A line that cannot be read as an event is not remembered; verify() is the place that reports it.
    try:
        line = json.loads(raw)
        return (str(line["job_id"]), int(line["attempt"]), str(line["status"]))
    except (ValueError, KeyError, TypeError):
        return None


def _chain_hash(raw: bytes, path: Path) -> str:
    """The ``hash`` of the last line, to continue the chain from it."""
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    value = record.get("hash") if isinstance(record, dict) else None
    if isinstance(value, str) and len(value) == 64:
        return value
    logger.error("audit writer: the last line of {} carries no hash; chaining from its raw SHA-256", path)
    return hashlib.sha256(raw).hexdigest()


def _parse(fields: dict[Any, Any]) -> AuditEvent:
    payload = {_text(k): v for k, v in fields.items()}.get(EVENT_FIELD)
    if payload is None:
        raise ValueError(f"stream entry has no {EVENT_FIELD!r} field")
    return AuditEvent.model_validate_json(payload)


def _reject_line(entry_id: Any, fields: dict[Any, Any], exc: ValueError) -> bytes:
    record = {
        "time": now_time(),
        "stream_id": _text(entry_id),
        "error": scrub(_describe(exc)),
        "fields": scrub({_text(k): _text(v) for k, v in fields.items()}),
    }
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def _describe(exc: ValueError) -> str:
    """The error without the offending input, which may be the very secret we must not write."""
    if isinstance(exc, ValidationError):
        problems = exc.errors(include_input=False, include_url=False)
        return "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems)
    return f"{type(exc).__name__}: {exc}"


def _entries(reply: Any) -> list[tuple[Any, Any]]:
    """The entries of a one-stream XREADGROUP reply, RESP2 (list) or RESP3 (dict)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        batches = next(iter(reply.values()))
        return list(batches[0]) if batches else []
    return list(reply[0][1])


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


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
