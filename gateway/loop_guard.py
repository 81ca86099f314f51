"""What a background loop does with a malformed message and with an unexpected error: it goes on.

Every long-lived loop (the worker's control listener, heartbeat, reaper and dequeue loop, the
outbox delivery, the API's completion waiter, the audit writer) owns a ``LoopGuard``, and tells
three kinds of trouble apart:

* **Redis unreachable** (``REDIS_DOWN``): not the loop's fault nor its input's. Logged at WARNING
  and retried after a growing backoff; nothing is counted.
* **A malformed message** (``MALFORMED``: non-UTF-8 bytes, a missing or extra field, not a number,
  bad JSON, the wrong shape): ``with guard.message("what"):`` around the handling of one message
  logs it at WARNING, counts it in ``malformed`` and skips it; the next message is handled as usual.
  Anyone who can reach Redis can publish, so garbage is an input, not a bug.
* **Anything else**: logged at ERROR with its type and traceback, counted in ``restarts``; the loop
  runs again after a short, growing backoff (``supervise`` for a loop body, ``trouble`` where a
  loop handles its own turns). A loop that dies silently is the one outcome ruled out.

The counters are plain attributes until the gateway has metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator

import redis
from loguru import logger
from pydantic import ValidationError

#: what reading garbage raises (UnicodeDecodeError, json's and pydantic's errors are ValueErrors)
MALFORMED: tuple[type[Exception], ...] = (ValueError, TypeError, KeyError, IndexError)
#: Redis went away or did not answer in time (redis-py wraps socket errors; OSError is the rest)
REDIS_DOWN: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, OSError)
#: how much of an error's text a log line carries: a garbage message may be megabytes long
_TEXT_LIMIT = 200


class LoopGuard:
    """One background loop's answer to bad input and to errors, and its count of both."""

    def __init__(self, name: str, *, min_backoff: float = 0.2, max_backoff: float = 5.0) -> None:
        self.name = name
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        #: messages skipped because they could not be read
        self.malformed = 0
        #: unexpected errors the loop was restarted after
        self.restarts = 0
        self._backoff = min_backoff

    @contextlib.contextmanager
    def message(self, what: str) -> Iterator[None]:
        """Handle one message: if it turns out to be garbage, log it, count it and skip it."""
        try:
            yield
        except MALFORMED as exc:
            self.skipped(what, exc)

    def skipped(self, what: str, exc: BaseException) -> None:
        """Count one malformed message; for loops that also keep it somewhere (the audit writer)."""
        self.malformed += 1
        logger.warning("{}: skipped a malformed {} ({})", self.name, what, describe(exc))

    def trouble(self, exc: Exception) -> float:
        """Log ``exc`` as Redis trouble or an unexpected error; returns the seconds to wait."""
        delay = self._backoff
        self._backoff = min(delay * 2, self.max_backoff)
        if isinstance(exc, REDIS_DOWN):
            logger.warning("{}: Redis unreachable ({}); retrying in {:.1f}s", self.name, describe(exc), delay)
        else:
            self.restarts += 1
            logger.opt(exception=exc).error(
                "{}: unexpected {}; restarting in {:.1f}s", self.name, type(exc).__name__, delay
            )
        return delay

    def healthy(self) -> None:
        """The loop did its work again: the next trouble starts from the shortest backoff."""
        self._backoff = self.min_backoff

    async def supervise(
        self, body: Callable[[], Awaitable[None]], stopping: asyncio.Event | None = None
    ) -> None:
        """Run ``body`` until it returns or ``stopping`` is set, again after every error.

        A body that ran longer than the longest backoff before failing counts as having been
        healthy, so a listener that loses Redis once a day reconnects at once each time.
        """
        while stopping is None or not stopping.is_set():
            started = time.monotonic()
            try:
                await body()
                return
            except Exception as exc:  # CancelledError is not an Exception: cancelling still stops it
                if time.monotonic() - started > self.max_backoff:
                    self.healthy()
                delay = self.trouble(exc)
            await _sleep(delay, stopping)


def describe(exc: BaseException) -> str:
    """``Type: text`` of an error, its text cut short (it may quote a huge garbage message);
    pydantic's errors without the input, which may be the very secret a log must not carry."""
    if isinstance(exc, ValidationError):
        problems = exc.errors(include_input=False, include_url=False)
        text = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems)
    else:
        text = str(exc)
    if len(text) > _TEXT_LIMIT:
        text = text[:_TEXT_LIMIT] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _sleep(seconds: float, stopping: asyncio.Event | None) -> None:
    if stopping is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
