"""Circuit breaker per deployment, shared by every worker through Redis.

A retryable failure bumps a short-lived counter; at the threshold the deployment's cooldown key
is set with a TTL and every worker skips it until the key expires, then tries it again. Reading
the state costs nothing on the job path: each worker refreshes its view of open breakers with
one read on its heartbeat, and a worker that opens a breaker tells the others at once over
pub/sub (``keys.BREAKER_CHANNEL``), so none of them calls the failing deployment again.
"""

from __future__ import annotations

import math
import time

import redis

from gateway import keys
from gateway.config import BreakerConfig


class Breakers:
    def __init__(self, connection: redis.Redis, config: BreakerConfig, deployments: list[str]) -> None:
        self.connection = connection
        self.config = config
        self.deployments = deployments
        self._open_until: dict[str, float] = {}

    def is_open(self, deployment: str) -> bool:
        until = self._open_until.get(deployment)
        return until is not None and until > time.monotonic()

    def record_failure(self, deployment: str) -> bool:
        """Count one retryable failure; returns True when this one opened the breaker."""
        counter = keys.deployment_failures(deployment)
        with self.connection.pipeline(transaction=True) as pipe:
            pipe.incr(counter)
            pipe.expire(counter, self.config.window, nx=True)
            count, _ = pipe.execute()
        if int(count) < self.config.failures:
            return False
        with self.connection.pipeline(transaction=True) as pipe:
            pipe.set(keys.deployment_cooldown(deployment), "1", ex=self.config.cooldown)
            pipe.delete(counter)
            pipe.publish(keys.BREAKER_CHANNEL, f"{deployment} {self.config.cooldown}")
            pipe.execute()
        self._open_until[deployment] = time.monotonic() + self.config.cooldown
        return True

    def on_message(self, message: str) -> None:
        """Another worker opened a breaker: ``"<deployment> <seconds>"``.

        Anything else raises ValueError (the worker's control listener logs and skips it). The
        seconds must be a finite, positive number: ``inf`` would hold a breaker open until the
        next heartbeat re-reads the real cooldowns from Redis.
        """
        name, space, text = message.rpartition(" ")
        seconds = float(text)
        if not space or not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"not '<deployment> <seconds>': {message[:100]!r}")
        if name in self.deployments:
            self._open_until[name] = time.monotonic() + seconds

    def refresh(self) -> None:
        """Re-read which breakers are open (called from the worker's heartbeat, not per job)."""
        if not self.deployments:
            return
        with self.connection.pipeline(transaction=False) as pipe:
            for name in self.deployments:
                pipe.pttl(keys.deployment_cooldown(name))
            ttls = pipe.execute()
        now = time.monotonic()
        pairs = zip(self.deployments, ttls, strict=True)
        self._open_until = {name: now + ttl / 1000 for name, ttl in pairs if ttl > 0}
