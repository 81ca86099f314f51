"""A streamed job's answer, relayed from the worker that runs it to the API that holds the client.

The worker appends events to the Redis stream ``aigw:job:<id>:stream`` as the provider's stream
is decoded; the API process holding the client's connection reads them with a blocking XREAD and
writes them in the client's wire format. The stream outlives both sides for a while (``STREAM_TTL``),
so the relay survives an API reconnect, and several attempts of a job append to one stream.

Events (JSON objects, a batch per stream entry so one XADD carries many tokens):

- ``start``: the first delta is coming; says the alias, deployment, provider model, draft and
  offline flags and the policy decisions (names and outcomes), which become response headers.
- ``text`` / ``tool_call``: the deltas (``gateway.chat.delta_to_dict``).
- ``end``: the answer is complete: finish reason, usage, cost. Written in the same transaction as
  the job's result, so a client sees the end marker exactly when the result is stored.
- ``error``: the job failed for good (before the first delta: the API answers with an HTTP error;
  after it: an error event and no end marker, never a silently truncated stream).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.client import Pipeline

from gateway import keys
from gateway.chat import Delta, delta_to_dict
from gateway.errors import StreamInterruptedError

#: how long a job's stream is kept after its last event (a client that reconnects, a slow API)
STREAM_TTL = 3600
#: the longest a decoded delta waits in the worker before it is sent (the first never waits)
FLUSH_INTERVAL = 0.01


def _entry(events: list[dict[str, Any]]) -> dict[Any, Any]:
    return {"e": json.dumps(events, separators=(",", ":"), ensure_ascii=False)}


class StreamWriter:
    """The worker's side: deltas batched for at most ``FLUSH_INTERVAL``, the first sent at once.

    Uses the worker's synchronous Redis client on the event loop (one round trip per batch, as the
    rest of the worker does); the flush timer is a ``call_later`` on the running loop.
    """

    def __init__(self, connection: redis.Redis, job_id: str) -> None:
        self.connection = connection
        self.key = keys.job_stream(job_id)
        self.started = False
        self.deltas = 0
        #: a batch the flush timer could not append (Redis failed): the stream has a gap, so the
        #: job must not end as if its stream were whole
        self.broken = False
        self._pending: list[dict[str, Any]] = []
        self._timer: asyncio.TimerHandle | None = None

    def begin(self, facts: dict[str, Any]) -> None:
        """The ``start`` event: sent with the first delta, once a deployment is answering."""
        self._pending.append({"type": "start", **facts})
        self.started = True

    def delta(self, delta: Delta) -> None:
        if self.broken:
            raise StreamInterruptedError("part of the streamed answer could not be relayed (Redis failed)")
        self._pending.append(delta_to_dict(delta))
        self.deltas += 1
        if self.deltas == 1:
            self.flush()  # the first token is what a client waits for: no batching
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self._timed_flush)

    def _timed_flush(self) -> None:
        """The timer's flush: nobody awaits it, so a failure is remembered, not raised."""
        self._timer = None
        try:
            self.flush()
        except redis.RedisError:
            self.broken = True

    def flush(self, pipe: Pipeline | None = None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        events, self._pending = self._pending, []
        if pipe is not None:
            self._append(pipe, events)
            return
        with self.connection.pipeline(transaction=False) as own:
            self._append(own, events)
            own.execute()

    def end(self, pipe: Pipeline, facts: dict[str, Any]) -> None:
        """The ``end`` event, on the transaction that stores the job's result."""
        self._pending.append({"type": "end", **facts})
        self.flush(pipe)

    def error(self, error: dict[str, Any], *, final: bool) -> None:
        """The job's failure: ``final`` when no attempt follows (a retry will stream again)."""
        if not final and not self.started:
            self._pending.clear()
            return
        self._pending.append({"type": "error", "error": error})
        self.flush()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _append(self, pipe: Pipeline, events: list[dict[str, Any]]) -> None:
        pipe.xadd(self.key, _entry(events))
        pipe.expire(self.key, STREAM_TTL)


class StreamReader:
    """The API's side: one asyncio Redis pool per API process for every client being streamed to."""

    def __init__(self, redis_url: str, *, max_connections: int = 1000) -> None:
        # a blocking XREAD waits at most ``poll``; the socket timeout only ends a half-open connection
        self._client = aioredis.Redis.from_url(
            redis_url, max_connections=max_connections, socket_connect_timeout=1.0, socket_timeout=10.0,
            health_check_interval=10,
        )  # fmt: skip

    async def aclose(self) -> None:
        await self._client.aclose()

    async def events(
        self, job_id: str, *, poll: float, deadline: float
    ) -> AsyncGenerator[dict[str, Any] | None, None]:
        """The job's events as they arrive, from the first; ``None`` every ``poll`` seconds without
        one (the caller checks whether the job ended some other way), until ``deadline``
        (``time.monotonic()``)."""
        key = keys.job_stream(job_id)
        last = "0-0"
        while time.monotonic() < deadline:
            block = max(1, int(min(poll, deadline - time.monotonic()) * 1000))
            reply = cast(list[Any], await self._client.xread({key: last}, block=block, count=100))
            if not reply:
                yield None
                continue
            for _name, entries in reply:
                for entry_id, fields in entries:
                    last = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                    for event in json.loads(fields[b"e"]):
                        yield event
