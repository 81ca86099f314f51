"""Job notifications: deliver the outbox (gateway/notifications.py) to webhooks and Slack.

Every worker runs a delivery loop on the outbox stream through one consumer group, so each entry
goes out once in the normal case, and an entry a dead worker had taken is claimed by another
after ``CLAIM_IDLE_MS`` (at-least-once). Per channel: a few quick retries on a transport error or
a 5xx, then a logged warning naming the channel (never its URL). The job's own state never
depends on delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

import httpx
import redis
import redis.asyncio as aredis
from loguru import logger
from rq.job import Job
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from gateway import keys, notifications
from gateway.config import Config
from gateway.jobs import QueuedJob
from gateway.loop_guard import LoopGuard

SIGNATURE_HEADER = "X-Aigw-Signature"
#: an entry taken by a worker that then died is delivered by another after this long
CLAIM_IDLE_MS = 30_000
#: what every event carries as text (what a delivery and a Slack message read)
_EVENT_TEXT = ("job_id", "service", "status", "path")


class _RetryableDelivery(Exception):
    """A 5xx from the receiver: worth another try."""


class Notifier:
    def __init__(self, config: Config, environ: Mapping[str, str]) -> None:
        self.channels = config.channels
        self._environ = environ  # URLs and secrets named by *_env are read at delivery, by name
        self._client: httpx.AsyncClient | None = None
        self.guard = LoopGuard("notification outbox")

    def on_final(self, connection: redis.Redis, job: Job, status: str, detail: Any) -> None:
        """A job that failed for good or was canceled while running: queue its notification.

        (A succeeded job's entry is written in the result's own transaction by the pipeline.)
        """
        if status == "succeeded":
            return
        queued = QueuedJob.model_validate(job.args[0])
        if queued.request.notify:
            notifications.append(
                connection,
                notifications.job_event(job.id, queued.service, status, detail, queued.request.notify),
            )

    async def run(self, redis_url: str, consumer: str, stopping: asyncio.Event) -> None:
        """Deliver outbox entries until ``stopping``: new ones, and ones a dead worker left unacked.

        Its own connection, so a blocking read never shares the worker's; it stops between reads.
        """
        aconn = aredis.Redis.from_url(redis_url, socket_keepalive=True)
        try:
            await self._run(aconn, consumer, stopping)
        finally:
            await asyncio.shield(aconn.aclose())

    async def _run(self, aconn: aredis.Redis, consumer: str, stopping: asyncio.Event) -> None:
        """Deliver under the loop guard: Redis trouble or an unexpected error (a stream or group
        deleted under us) waits and starts again, creating the group afresh."""
        await self.guard.supervise(lambda: self._deliver_until(aconn, consumer, stopping), stopping)

    async def _deliver_until(self, aconn: aredis.Redis, consumer: str, stopping: asyncio.Event) -> None:
        with contextlib.suppress(aredis.ResponseError):  # BUSYGROUP: it exists already
            await aconn.xgroup_create(keys.NOTIFY_STREAM, keys.NOTIFY_GROUP, id="0", mkstream=True)
        while not stopping.is_set():
            claimed = await aconn.xautoclaim(
                keys.NOTIFY_STREAM, keys.NOTIFY_GROUP, consumer, CLAIM_IDLE_MS, "0-0", count=20
            )
            entries: list[Any] = list(claimed[1]) if claimed else []
            fresh: list[Any] = await aconn.xreadgroup(  # type: ignore[assignment]
                keys.NOTIFY_GROUP, consumer, {keys.NOTIFY_STREAM: ">"}, count=20, block=500
            )
            self.guard.healthy()
            for _stream, items in fresh or []:
                entries.extend(items)
            for entry_id, fields in entries:
                await self._deliver_entry(aconn, entry_id, fields)

    async def _deliver_entry(self, aconn: aredis.Redis, entry_id: Any, fields: dict[bytes, bytes]) -> None:
        """Deliver one entry and drop it from the outbox; a malformed one is dropped undelivered
        (it would come back on every claim otherwise), and so is one trimmed away (no fields)."""
        if fields:
            with self.guard.message(f"entry on {keys.NOTIFY_STREAM}"):
                channels, event = _read_entry(fields)
                await asyncio.gather(*(self._deliver(name, event) for name in channels))
        await aconn.xack(keys.NOTIFY_STREAM, keys.NOTIFY_GROUP, entry_id)
        await aconn.xdel(keys.NOTIFY_STREAM, entry_id)

    async def _deliver(self, name: str, event: dict[str, Any]) -> None:
        channel = self.channels.deliverable(name)
        if channel is None:  # the API checks names; a config changed since then lands here
            logger.warning("job {}: notify channel {} is not configured", event["job_id"], name)
            return
        url = (channel.url or self._environ.get(channel.url_env or "", "")).strip()
        if not url:
            logger.warning("channel {}: {} is not set; notification dropped", name, channel.url_env)
            return
        secret = self._environ.get(channel.secret_env or "", "")
        if channel.secret_env and not secret:  # configured to sign: never send unsigned instead
            logger.warning("channel {}: {} is not set; notification dropped", name, channel.secret_env)
            return
        body = _slack_message(event) if channel.type == "slack" else event
        raw = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", **_signature(secret, raw)}
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(3),
                wait=wait_exponential(multiplier=0.2, max=2),
                retry=retry_if_exception_type((httpx.TransportError, _RetryableDelivery)),
                reraise=True,
            ):
                with attempt:
                    response = await self._http().post(
                        url, content=raw, headers=headers, timeout=channel.timeout
                    )
                    if response.status_code >= 500:
                        raise _RetryableDelivery(f"HTTP {response.status_code}")
                    if response.status_code >= 400:
                        logger.warning("channel {} refused job {}'s notification: HTTP {}",
                                       name, event["job_id"], response.status_code)  # fmt: skip
        except Exception as exc:  # a bad URL, a closed client: a notification never takes the worker down
            # the URL may carry a secret (Slack's do): name the channel, never the URL or the message
            logger.warning("channel {}: notification of job {} not delivered: {}",
                           name, event["job_id"], type(exc).__name__)  # fmt: skip

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(limits=httpx.Limits(max_connections=20))
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _read_entry(fields: dict[bytes, bytes]) -> tuple[list[str], dict[str, Any]]:
    """The channels and event of an outbox entry (``notifications.job_event``); ValueError if it is
    not one, since anyone who can reach Redis can add to the stream."""
    raw = fields[notifications.EVENT_FIELD.encode()]
    entry = json.loads(raw)
    channels, event = entry["channels"], entry["event"]
    if not (isinstance(channels, list) and all(isinstance(name, str) for name in channels)):
        raise ValueError("channels is not a list of names")
    if not (isinstance(event, dict) and all(isinstance(event.get(k), str) for k in _EVENT_TEXT)):
        raise ValueError(f"the event lacks one of {', '.join(_EVENT_TEXT)}")
    return channels, event


def _slack_message(event: dict[str, Any]) -> dict[str, str]:
    state = event["status"]
    if event.get("draft"):
        state += ": DRAFT, pending review"
    if event.get("error_type"):
        state += f" ({event['error_type']})"
    model = f" on {event['model']}" if event.get("model") else ""
    job = f"aigw job {event['job_id']} from {event['service']}"
    return {"text": f"{job} {state}{model}. Read it: GET {event['path']}"}


def _signature(secret: str, raw: bytes) -> dict[str, str]:
    """HMAC-SHA256 of the body with the channel's secret, so a receiver can trust the sender."""
    if not secret:
        return {}
    digest = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return {SIGNATURE_HEADER: f"sha256={digest}"}
