"""Job notifications: tell the channels a job named in ``notify`` that it has ended.

A notification says what happened (state, draft or not, model, error type), never what was said:
the output may hold PII that a policy kept on a local model, so a channel gets a pointer
(``GET /v1/jobs/{id}``) and the caller reads the result through the API with its token.
Delivery is best effort after the result is stored: a few quick retries on a transport error or
a 5xx, then a logged warning. The job's own state never depends on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
from typing import Any

import httpx
from loguru import logger
from rq.job import Job
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from gateway.config import Config

SIGNATURE_HEADER = "X-Aigw-Signature"


class _RetryableDelivery(Exception):
    """A 5xx from the receiver: worth another try."""


class Notifier:
    def __init__(self, config: Config) -> None:
        self.channels = config.channels
        self._client: httpx.AsyncClient | None = None

    async def on_final(self, job: Job, status: str, detail: Any) -> None:
        """The worker's hook: one message to each channel the job asked for."""
        payload: dict[str, Any] = job.args[0]
        names: list[str] = payload["request"].get("notify") or []
        if not names:
            return
        event = _event(job.id, payload["service"], status, detail)
        await asyncio.gather(*(self._deliver(name, event) for name in names))

    async def _deliver(self, name: str, event: dict[str, Any]) -> None:
        channel = self.channels.deliverable(name)
        if channel is None:  # the API checks names; a config changed since then lands here
            logger.warning("job {}: notify channel {} is not configured", event["job_id"], name)
            return
        url = (channel.url or os.environ.get(channel.url_env or "", "")).strip()
        if not url:
            logger.warning("channel {}: {} is not set; notification dropped", name, channel.url_env)
            return
        secret = os.environ.get(channel.secret_env or "", "")
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


def _event(job_id: str, service: str, status: str, detail: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event": "job.finished",
        "job_id": job_id,
        "service": service,
        "status": status,
        "path": f"/v1/jobs/{job_id}",
    }
    if status == "succeeded" and isinstance(detail, dict):
        event.update(model=detail.get("model"), draft=bool(detail.get("draft")))
        if detail.get("draft"):
            event["review"] = "pending"
    elif status == "failed" and isinstance(detail, dict):
        event["error_type"] = detail.get("type")
    return event


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
