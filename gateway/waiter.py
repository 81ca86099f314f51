"""Long-poll support: wake the requests waiting on a job the moment a worker finishes it.

One pub/sub subscription per API process (to ``keys.DONE_CHANNEL``) fans completions out to
futures keyed by job id, so a thousand waiting requests cost one Redis connection, not a
thousand polls. A waiter re-reads the job after registering, so a completion published before
the subscription cannot be missed; on a lost connection waiters fall back to the re-read.
"""

from __future__ import annotations

import asyncio
import contextlib

import redis
import redis.asyncio as aredis
from loguru import logger

from gateway import keys


class CompletionWaiter:
    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="completion-waiter")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=5)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait(self, job_id: str, timeout: float) -> bool:
        """True when ``job_id`` is published as done, False when ``timeout`` passes first.

        Call it right after reading the job, with no ``await`` in between: the listener only runs
        when this coroutine yields, so a completion published after that read still reaches the
        future registered here (a spurious wake-up is harmless; the caller re-reads).
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, set()).add(future)
        try:
            try:
                await asyncio.wait_for(future, timeout)
            except TimeoutError:
                return False
            return True
        finally:
            futures = self._waiters.get(job_id)
            if futures is not None:
                futures.discard(future)
                if not futures:
                    del self._waiters[job_id]

    async def _listen(self) -> None:
        while True:
            client = aredis.Redis.from_url(self.redis_url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(keys.DONE_CHANNEL)
                    self._subscribed.set()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._wake(message["data"].decode())
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                logger.warning("completion waiter lost Redis ({}); reconnecting", exc)
                self._subscribed.clear()
                self._wake_all()
                await asyncio.sleep(0.5)
            finally:
                await client.aclose()

    def _wake(self, job_id: str) -> None:
        for future in self._waiters.get(job_id, ()):
            if not future.done():
                future.set_result(None)

    def _wake_all(self) -> None:
        for job_id in list(self._waiters):
            self._wake(job_id)
