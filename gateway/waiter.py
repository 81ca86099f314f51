"""Long-poll support: wake the requests waiting on a job the moment a worker finishes it.

One pub/sub subscription per API process (to ``keys.DONE_CHANNEL``) fans completions out to
futures keyed by job id, so a thousand waiting requests cost one Redis connection, not a
thousand polls. A waiter re-reads the job after registering, so a completion published before
the subscription cannot be missed.

A completion published while the subscription is down (Redis restarting, the connection
dropped) reaches nobody, so every time the subscription is (re)made the waiter reads the state of
each job it is waiting for, once, and wakes those that ended meanwhile. Waiters are not woken
when the connection drops: they would re-read a job that has not ended, or a Redis that is not
back. A message that is not a job id is logged, counted and skipped (``gateway/loop_guard.py``).

A succeeded job's message carries its final view (``gateway/completion.py``): the woken request
answers with it instead of reading the job again.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aredis
from rq.job import Job

from gateway import completion, keys
from gateway.jobs import RQ_STATUS_TO_STATE, JobState
from gateway.loop_guard import LoopGuard

#: how many completions the waiter remembers: at 1,000 jobs/s the last ten seconds, far longer
#: than a read and the wait after it are ever apart
RECENT_COMPLETIONS = 10_000


class CompletionWaiter:
    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.guard = LoopGuard("completion waiter")
        self._waiters: dict[str, set[asyncio.Future[bytes | None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        #: the last completions heard, oldest first (a dict keeps insertion order)
        self._recent: dict[str, None] = {}

    async def start(self) -> None:
        self._task = asyncio.create_task(self.guard.supervise(self._listen), name="completion-waiter")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=5)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def is_waiting(self, job_id: str) -> bool:
        """Whether a request is waiting on ``job_id`` now."""
        return bool(self._waiters.get(job_id))

    async def wait_view(self, job_id: str, timeout: float) -> Woken | None:
        """How ``job_id`` was published as done (its final view, when the message held one), or
        None when ``timeout`` passes first.

        Call it after reading the job: a completion published after that read either reaches the
        future registered here, or was handled before this call and is among the recent ones (the
        read may await a shared round trip, so the listener can run in between; that one wakes
        without its view). A spurious wake-up is harmless; the caller re-reads.
        """
        if self._recent.pop(job_id, 0) is None:  # published between the caller's read and this call
            return Woken(None)
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, set()).add(future)
        try:
            try:
                return Woken(await asyncio.wait_for(future, timeout))
            except TimeoutError:
                return None
        finally:
            futures = self._waiters.get(job_id)
            if futures is not None:
                futures.discard(future)
                if not futures:
                    del self._waiters[job_id]

    async def _listen(self) -> None:
        """One subscription, until its connection fails (``guard.supervise`` makes the next)."""
        client = aredis.Redis.from_url(self.redis_url)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(keys.DONE_CHANNEL)
                async for message in pubsub.listen():
                    await self._handle(client, message)
            raise redis.ConnectionError(f"the subscription to {keys.DONE_CHANNEL} ended")
        finally:
            self._subscribed.clear()
            await client.aclose()

    async def _handle(self, client: aredis.Redis, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "subscribe":  # the subscription is in place: from here on no completion is missed
            self._subscribed.set()
            self.guard.healthy()
            await self._recheck(client)
        elif kind == "message":
            with self.guard.message(f"message on {keys.DONE_CHANNEL}"):
                self._wake(*completion.parse(message["data"]))

    async def _recheck(self, client: aredis.Redis) -> None:
        """Wake the waiters whose jobs ended (or expired) while nobody was subscribed."""
        job_ids = list(self._waiters)
        if not job_ids:
            return
        async with client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(Job.key_for(job_id), "status")
            statuses = await pipe.execute()
        for job_id, status in zip(job_ids, statuses, strict=True):
            if status is None or _is_final(status):
                self._wake(job_id)

    def _wake(self, job_id: str, view: bytes | None = None) -> None:
        self._recent[job_id] = None  # for a request that read the job before this and waits after
        if len(self._recent) > RECENT_COMPLETIONS:
            del self._recent[next(iter(self._recent))]
        for future in self._waiters.get(job_id, ()):
            if not future.done():
                future.set_result(view)


@dataclass(frozen=True, slots=True)
class Woken:
    """A wait that ended because the job did: ``view`` is its final view as the worker published it
    (the bytes ``GET /v1/jobs/{id}`` answers), or None when the caller must read the job."""

    view: bytes | None


def _is_final(rq_status: bytes) -> bool:
    return RQ_STATUS_TO_STATE.get(rq_status.decode(errors="replace"), JobState.QUEUED).is_final
