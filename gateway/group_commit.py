"""Group commit: the Redis calls a process's jobs make in one event-loop tick share a round trip.

With a hundred jobs in flight, many start, finish or are submitted in the same tick. Sent one by
one, each pays a send and a receive system call and blocks the loop for a round trip; queued here
and flushed once the tick's other callbacks have run, they go out as one non-transactional
pipeline. Each caller's commands are its own (a Lua script is atomic by itself); only the trip
is shared. A batch whose packing fails (a value Redis cannot encode, which redis-py finds before
it sends a byte) is sent again one caller at a time, so one bad value fails only its own caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.exceptions import NoScriptError
from redis.retry import Retry

#: queues one caller's commands into the shared pipeline
Fill = Callable[[Pipeline], object]


@dataclass
class _Entry:
    fill: Fill
    future: asyncio.Future[list[Any]]
    span: tuple[int, int] = field(default=(0, 0))


class GroupCommit:
    """One per process and connection; every ``execute`` of a tick shares one pipeline."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection
        #: sends the batches: a pool of its own that never retries, since redis-py's default retry
        #: would send a whole batch again after a read timeout and run every caller's commands twice
        #: (a job enqueued twice); a caller sees the error instead
        self._sender = redis.Redis(connection_pool=_pool_without_retries(connection))
        #: Lua source by SHA, loaded again when Redis says NOSCRIPT (a restart, SCRIPT FLUSH)
        self.scripts: dict[str, str] = {}
        self._pending: list[_Entry] = []
        self.batches = 0  # flushes so far, and the calls they carried (the worker logs them at exit)
        self.calls = 0

    def register(self, source: str) -> str:
        """A script's SHA for ``Pipeline.evalsha`` in a fill (loaded on first NOSCRIPT)."""
        sha = self.connection.register_script(source).sha
        self.scripts[sha] = source
        return sha

    async def execute(self, fill: Fill) -> list[Any]:
        """The replies to the commands ``fill`` queues (an error reply as its exception), once the
        tick's batch has been sent. A connection failure raises here, for every caller of the batch."""
        loop = asyncio.get_running_loop()
        entry = _Entry(fill, loop.create_future())
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append(entry)
        return await entry.future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        self.batches += 1
        self.calls += len(pending)
        try:
            self._send(pending)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            for entry in pending:
                _fail(entry, exc)
        except Exception:  # packing refused a value (nothing was sent): one caller at a time
            for entry in pending:
                if entry.future.done():  # answered before the failure: never sent twice
                    continue
                try:
                    self._send([entry])
                except Exception as exc:
                    _fail(entry, exc)

    def _send(self, entries: list[_Entry], *, reload: bool = True) -> None:
        pipe = self._sender.pipeline(transaction=False)
        with pipe:
            for entry in entries:
                first = len(pipe.command_stack)
                entry.fill(pipe)
                entry.span = (first, len(pipe.command_stack))
            replies = pipe.execute(raise_on_error=False)
        missing = []
        for entry in entries:
            part = replies[entry.span[0] : entry.span[1]]
            if reload and any(isinstance(reply, NoScriptError) for reply in part):
                missing.append(entry)
            elif not entry.future.done():
                entry.future.set_result(part)
        if missing:  # a script refused as unloaded ran nothing: load them, send those callers again
            for source in self.scripts.values():
                self.connection.script_load(source)
            self._send(missing, reload=False)


def _pool_without_retries(connection: redis.Redis) -> redis.ConnectionPool:
    pool = connection.connection_pool
    options = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
    return redis.ConnectionPool(connection_class=pool.connection_class, **options)


def _fail(entry: _Entry, exc: BaseException) -> None:
    if not entry.future.done():
        entry.future.set_exception(exc)
