"""The one writer per audit file: drains the Redis stream into ``audit.log``, durably and once.

Delivery is at-least-once end to end, and the writer turns it into exactly-once lines. It reads
with a consumer group, appends a batch, fsyncs, and only then XACKs and XDELs the entries, so a
crash at any point leaves the unwritten entries pending in Redis; on (re)start it claims every
pending entry of the group (XAUTOCLAIM, its own and those of dead writers). Entries that did reach
the file before the crash come back too, and are dropped by a bounded memory of recently written
(job_id, attempt, status, time) keys, seeded from the tail of the log (into the rotated files).
There is one writer per file by design (the design brief, "Audit: Redis first, then one
writer"), which is what lets it claim pending entries without waiting for them to go idle.

Rotation (``audit.rotate_bytes``) happens between batches, before a batch that would take the live
file past the limit: the live file, every line of it fsynced, is renamed to the next
``audit.log.NNNNNN`` (``files.py``) in one atomic ``rename``, the directory is fsynced, and the
writer opens a new live file through the same path as a restart, so the new file's first line
chains to the last line of the renamed one, found by reading back across the files. A crash
before the rename leaves the old file live; after it, the restart finds the last line in the
rotated file: no line is lost or written twice either way. Only then are rotated files past
``audit.keep`` deleted, oldest first.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from loguru import logger
from pydantic import ValidationError

from gateway import keys
from gateway.audit.chain import GENESIS_HASH, encode_line, seal
from gateway.audit.event import EVENT_FIELD, AuditEvent, now_time, scrub
from gateway.audit.files import AuditFiles
from gateway.config import DEFAULT_AUDIT_ROTATE_BYTES
from gateway.loop_guard import MALFORMED, LoopGuard

#: one event, however often it is delivered: a re-delivered entry is the same event (same time);
#: `aigw jobs retry` runs an attempt of the same number again, at another time, and is written
_Key = tuple[str, int, str, str]
_MIN_BACKOFF_S = 0.1


class AuditWriter:
    """Owns one audit file. ``run`` loops until stopped; ``run_once`` drains what is there.

    The Redis client must not have a ``socket_timeout`` shorter than the ``block_ms`` it is run with.
    Malformed stream entries are not lost either: they go, scrubbed, to ``<path>.rejected``.
    ``rotate_bytes=None`` never rotates; ``keep=None`` keeps every rotated file.
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
        rotate_bytes: int | None = DEFAULT_AUDIT_ROTATE_BYTES,
        keep: int | None = None,
    ) -> None:
        if batch_size < 1 or remember < 1:
            raise ValueError("batch_size and remember must be at least 1")
        if (rotate_bytes is not None and rotate_bytes < 1) or (keep is not None and keep < 1):
            raise ValueError("rotate_bytes and keep must be at least 1 (or None)")
        self.path = path
        self.files = AuditFiles(path)
        self._rotate_bytes = rotate_bytes
        self._keep = keep
        self.consumer = consumer
        self._redis = redis_client
        self._batch_size = batch_size
        self._claim_idle_ms = claim_idle_ms
        self._seen = _RecentKeys(remember)
        self._prev = GENESIS_HASH
        self._fd: int | None = None
        self._joined = False  # group created and pending entries claimed since the last failure
        self.guard = LoopGuard("audit writer", min_backoff=_MIN_BACKOFF_S, max_backoff=max_backoff_s)

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
        """Write until ``stop`` is set. Redis or disk trouble, or any other error, is logged and
        retried with backoff (``gateway/loop_guard.py``): the thread never dies while the stack runs."""
        logger.info("audit writer {} draining {} into {}", self.consumer, keys.AUDIT_STREAM, self.path)
        while not stop.is_set():
            try:
                self.run_once(block_ms)
            except Exception as exc:
                stop.wait(self.guard.trouble(exc))
            else:
                self.guard.healthy()

    def run_once(self, block_ms: int = 0) -> int:
        """Drain the stream (waiting up to ``block_ms`` for the first entry; 0 = no wait); lines written."""
        try:
            self._open()
            written = 0 if self._joined else self._join()
            block = block_ms if block_ms > 0 else None
            while True:
                reply = self._redis.xreadgroup(
                    keys.AUDIT_GROUP, self.consumer, {keys.AUDIT_STREAM: ">"}, self._batch_size, block
                )
                entries = _entries(reply)
                written += self._process(entries)
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
        """Drop a torn last line, continue the chain from the last line, remember recent keys.

        The last lines may sit in rotated files: the live file is new (or empty after a crash
        in a rotation), so read back across the files; an empty log starts at the zero hash.
        """
        complete = _complete_size(self.path)
        if complete < os.fstat(fd).st_size:
            logger.warning("audit writer: dropping an incomplete last line of {} (torn write)", self.path)
            os.ftruncate(fd, complete)
            os.fsync(fd)
        lines = self.files.last_lines(self._seen.maxlen)
        for _, raw in lines:
            if (key := _line_key(raw)) is not None:
                self._seen.add(key)
        self._prev = _chain_hash(lines[-1][1], lines[-1][0]) if lines else GENESIS_HASH

    def _join(self) -> int:
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
            written += self._process(list(reply[1]))
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

    def _process(self, entries: list[tuple[Any, Any]]) -> int:
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
                key: _Key = (event.job_id, event.attempt, event.status, event.time)
                if key in self._seen or key in new_keys:
                    continue
                sealed = seal(event.record(), prev)
                line = encode_line(sealed)
            except MALFORMED as exc:
                self.guard.skipped(f"entry on {keys.AUDIT_STREAM} (kept in {self.path.name}.rejected)", exc)
                rejects.append(_reject_line(entry_id, fields, exc))
                continue
            lines.append(line)
            new_keys[key] = None
            prev = sealed["hash"]
        if lines:
            self._append(b"".join(lines))
            self._prev = prev
            for written in new_keys:
                self._seen.add(written)
        if rejects:
            self._write_rejects(rejects)
        self._ack([entry_id for entry_id, _ in entries])
        return len(lines)

    def _append(self, data: bytes) -> None:
        """Append one batch durably to the live file, rotating first if it would pass the limit."""
        fd = self._open()
        size = os.fstat(fd).st_size
        if self._rotate_bytes is not None and size > 0 and size + len(data) > self._rotate_bytes:
            self._rotate()
            fd = self._open()
        _append_durably(fd, data)

    def _rotate(self) -> None:
        """Rename the live file to the next rotated name; the next ``_open`` starts a new one."""
        target = self.files.next_rotated()
        os.rename(self.path, target)
        self.close()  # the descriptor now names the rotated file; never write to it again
        _fsync_dir(self.path.parent)
        logger.info("audit writer: rotated {} to {}", self.path, target.name)
        self._prune()

    def _prune(self) -> None:
        """Delete the oldest rotated files past ``keep`` (a crash halfway: the next rotation goes on)."""
        rotated = self.files.rotated()
        if self._keep is None or len(rotated) <= self._keep:
            return
        for _, old in rotated[: len(rotated) - self._keep]:
            old.unlink(missing_ok=True)
            logger.info("audit writer: deleted {} (audit.keep is {})", old.name, self._keep)
        _fsync_dir(self.path.parent)

    def _ack(self, ids: list[Any]) -> None:
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(keys.AUDIT_STREAM, keys.AUDIT_GROUP, *ids)
            pipe.xdel(keys.AUDIT_STREAM, *ids)
            pipe.execute()

    def _write_rejects(self, rejects: list[bytes]) -> None:
        path = self.path.with_name(self.path.name + ".rejected")
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
        return (str(line["job_id"]), int(line["attempt"]), str(line["status"]), str(line["time"]))
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


def _reject_line(entry_id: Any, fields: dict[Any, Any], exc: Exception) -> bytes:
    record = {
        "time": now_time(),
        "stream_id": _text(entry_id),
        "error": scrub(_describe(exc)),
        "fields": scrub({_text(k): _text(v) for k, v in fields.items()}),
    }
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def _describe(exc: Exception) -> str:
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
