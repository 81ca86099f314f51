"""One audit event: the model a worker (or the API, for a refusal) reports, the request hash, the
scrubbing of secrets, and the append to the Redis stream the writer drains.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import redis
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from gateway import keys
from gateway.audit.chain import canonical_json

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
    absent = {body for body in ("request", "response") if getattr(event, body) is None}
    payload = event.model_dump_json(exclude=absent)  # record()'s fields, written by pydantic's JSON
    pipe_or_client.xadd(keys.AUDIT_STREAM, {EVENT_FIELD: payload}, maxlen=maxlen, approximate=True)
