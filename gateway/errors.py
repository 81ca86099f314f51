"""One exception tree for aigw; each error maps to an HTTP status, a CLI exit or a job state here.

GatewayError                  .type (stable string), .http_status, .retryable, .retry_after (None)
├── ConfigError               .file, .entry, .field
├── AuthError                 401
├── TooManyAuthFailuresError  429: bad token, throttled address (gateway/auth_failures.py); .retry_after
├── ForbiddenError            403
├── NotFoundError             404
│   └── ModelNotFoundError         no alias, task tag or provider model of that name
├── ValidationError           422 (bad job request)
│   ├── IdempotencyKeyReusedError  the key already names a job with another body
│   └── UnsupportedContentError    the routed model cannot take this content (images); .param
├── UnsupportedFieldError     400: a field aigw cannot honour for the routed model; .param
├── PayloadTooLargeError      413
├── RequestTimeoutError       408 (a body that did not arrive within api.body_timeout_seconds)
├── BadJsonError              400 (a request body that is not JSON)
├── ConflictError             409 (the state forbids it: review twice or a non-draft, retry a job not failed)
├── UnavailableError          503 (Redis down); .retry_after
├── PolicyDeniedError         403 or a failed job; .rule
├── QuotaExceededError        429; .rule, .retry_after
│   ├── BudgetExceededError        a spend cap is reached until its period resets
│   └── RateLimitExceededError     requests or tokens per minute; retryable in a worker
├── CallBoundError            a job reached jobs.max_provider_calls
├── NoDeploymentError         503: every deployment skipped; retryable when a circuit is open
├── InterruptedAttemptError   an attempt canceled or cut short by shutdown (audit only)
├── StreamInterruptedError    a provider's stream broke after its first token: never retried
├── RecordedError             a stored job failure raised again where its caller waits (drop-in)
├── ProviderError             .deployment
│   ├── ProviderUnavailableError   transport error or 5xx; retryable
│   ├── RateLimitedError           429/529; retryable; .retry_after, .retry_after_capped
│   ├── ProviderAuthError          401/403 from the provider (names the env var, never the key)
│   ├── ProviderRequestError       other 4xx: the request itself is wrong; not retryable
│   └── BadProviderResponseError   a body that is not valid for its wire format
├── JobTimeoutError           the job ran past its deadline
└── SkillError                a skill could not run, or broke its contract (gateway/skills/)
    ├── SkillNotFoundError        404: no such skill or version
    ├── SkillUnavailableError     503: a required bin or env var is missing on this host; .reasons
    ├── SkillTimeoutError         504: a script ran past its timeout
    ├── SkillFailedError          a script failed or the prompt did not render; .exit_code, .stderr_tail
    └── SkillOutputError          502: the model's answer breaks the outputs contract; retryable
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class GatewayError(Exception):
    """Base of every error aigw raises on purpose."""

    type: str = "gateway_error"
    http_status: int = 500
    retryable: bool = False
    #: seconds the caller should wait before trying again (a Retry-After), when the error knows
    retry_after: float | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        """The JSON error envelope's inner object: what an HTTP client or a job record shows."""
        return {"type": self.type, "message": self.message}


class ConfigError(GatewayError):
    type = "config_error"

    def __init__(self, message: str, *, file: str = "", entry: str = "", field: str = "") -> None:
        where = ": ".join(part for part in (file, entry, field) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.file, self.entry, self.field = file, entry, field


class AuthError(GatewayError):
    type = "authentication_error"
    http_status = 401


class TooManyAuthFailuresError(GatewayError):
    """The caller's address failed authentication too often in the last minute, and failed again."""

    type = "too_many_auth_failures"
    http_status = 429

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ForbiddenError(GatewayError):
    type = "permission_error"
    http_status = 403


class NotFoundError(GatewayError):
    type = "not_found"
    http_status = 404


class ModelNotFoundError(NotFoundError):
    type = "model_not_found"


class ValidationError(GatewayError):
    type = "invalid_request"
    http_status = 422


class UnsupportedContentError(ValidationError):
    """The routed model cannot take part of the content (an image to a text-only model)."""

    type = "unsupported_content"

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "param": self.param}


class UnsupportedFieldError(GatewayError):
    """A request field aigw cannot honour for the routed model: refused, never silently dropped."""

    type = "unsupported_field"
    http_status = 400

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "param": self.param}


class StreamInterruptedError(GatewayError):
    """A streamed answer broke after the client had its first token: the job fails (a retry would
    send a second, different answer down a stream the client has half read)."""

    type = "stream_interrupted"
    http_status = 502


class PayloadTooLargeError(GatewayError):
    type = "payload_too_large"
    http_status = 413


class RequestTimeoutError(GatewayError):
    """The request's body did not arrive in full within ``api.body_timeout_seconds``."""

    type = "request_timeout"
    http_status = 408


class IdempotencyKeyReusedError(ValidationError):
    """An idempotency key sent again with a different body: a client bug, never the first job back
    (as the IETF Idempotency-Key draft says: 422)."""

    type = "idempotency_key_reused"


class ConflictError(GatewayError):
    type = "conflict"
    http_status = 409


class UnavailableError(GatewayError):
    type = "unavailable"
    http_status = 503
    retryable = True

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PolicyDeniedError(GatewayError):
    type = "policy_denied"
    http_status = 403

    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


class QuotaExceededError(GatewayError):
    """A budget or rate limit policy refused the job; ``retry_after`` says when it would fit."""

    http_status = 429

    def __init__(self, message: str, *, rule: str, retry_after: float) -> None:
        super().__init__(message)
        self.rule = rule
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        """With ``retry_after``, so a job that failed on a quota in the worker still says when."""
        return {**super().to_dict(), "retry_after": self.retry_after}


class BudgetExceededError(QuotaExceededError):
    type = "budget_exceeded"


class RateLimitExceededError(QuotaExceededError):
    type = "rate_limit_exceeded"
    retryable = True  # in a worker: the job waits for the window to pass (an RQ requeue)


class JobTimeoutError(GatewayError):
    type = "job_timeout"
    http_status = 504


class ProviderError(GatewayError):
    type = "provider_error"
    http_status = 502

    def __init__(self, message: str, *, deployment: str) -> None:
        super().__init__(message)
        self.deployment = deployment


class ProviderUnavailableError(ProviderError):
    type = "provider_unavailable"
    retryable = True


class RateLimitedError(ProviderError):
    """``retry_after`` is the wait the worker honours; ``retry_after_capped`` says the provider asked
    for longer and ``jobs.max_retry_after`` cut it short (shown in the job view's error)."""

    type = "rate_limited"
    http_status = 429
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        deployment: str,
        retry_after: float | None = None,
        retry_after_capped: bool = False,
    ) -> None:
        super().__init__(message, deployment=deployment)
        self.retry_after = retry_after
        self.retry_after_capped = retry_after_capped

    def to_dict(self) -> dict[str, Any]:
        record = super().to_dict()
        if self.retry_after is not None:
            record["retry_after"] = self.retry_after
        if self.retry_after_capped:
            record["retry_after_capped"] = True
        return record


class ProviderAuthError(ProviderError):
    type = "provider_auth_error"


class ProviderRequestError(ProviderError):
    type = "provider_bad_request"


class BadProviderResponseError(ProviderError):
    type = "bad_provider_response"


class BadJsonError(GatewayError):
    """A request body the API cannot parse as JSON (valid JSON of the wrong shape is a ValidationError)."""

    type = "invalid_json"
    http_status = 400


# --- skills (gateway/skills/, workers/skill_runner.py) ------------------------------------------


class SkillError(GatewayError):
    """A skill could not run or produced something its contract does not allow.

    Only SkillOutputError is retryable: the model may answer within the contract next time.
    """

    type = "skill_error"


class SkillNotFoundError(SkillError):
    type = "skill_not_found"
    http_status = 404


class SkillUnavailableError(SkillError):
    """Required bins or env vars are missing on this host: the skill is not run at all."""

    type = "skill_unavailable"
    http_status = 503

    def __init__(self, message: str, *, reasons: Sequence[str]) -> None:
        super().__init__(message)
        self.reasons = list(reasons)


class SkillTimeoutError(SkillError):
    type = "skill_timeout"
    http_status = 504


class SkillFailedError(SkillError):
    """A script failed (exit code, flood, bad output, writes into its folder) or the prompt did not render."""

    type = "skill_failed"

    def __init__(self, message: str, *, exit_code: int | None = None, stderr_tail: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail


class SkillOutputError(SkillError):
    """The model's answer does not match the skill's ``outputs`` contract: a failed attempt."""

    type = "skill_output_invalid"
    http_status = 502
    retryable = True


class CallBoundError(GatewayError):
    """The job reached ``jobs.max_provider_calls``: no layer may multiply calls past it."""

    type = "call_bound_reached"
    http_status = 502


class NoDeploymentError(GatewayError):
    """Every deployment of a chain was skipped without a call: no key configured, or its circuit is
    open. Only an open circuit makes it retryable: it closes again, a missing key does not appear."""

    type = "no_deployment_available"
    http_status = 503

    def __init__(self, message: str, *, circuit_open: bool) -> None:
        super().__init__(message)
        self.circuit_open = circuit_open
        self.retryable = circuit_open


class InterruptedAttemptError(GatewayError):
    """An attempt canceled by its caller or cut short by shutdown, as its audit line records it."""

    type = "interrupted"


class RecordedError(GatewayError):
    """A job's stored failure raised again where its caller waits (the drop-in endpoints), with the
    type, status and Retry-After its class had when the worker raised it."""

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(str(record.get("message") or "the job failed"))
        self.type = str(record.get("type") or "job_failed")
        self.http_status = status_for_type(self.type)
        wait = record.get("retry_after")
        self.retry_after = float(wait) if isinstance(wait, int | float) else None
        self.record = record

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message}


#: statuses of job states that are not an error class of their own
_STATE_STATUSES = {"canceled": 409, "job_failed": 500}


def status_for_type(error_type: str) -> int:
    """The HTTP status of the error class whose ``type`` this is (500 for one aigw never raises)."""
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        cls = pending.pop()
        if cls.__dict__.get("type") == error_type:
            return cls.http_status
        pending.extend(cls.__subclasses__())
    return _STATE_STATUSES.get(error_type, 500)


def error_from_record(record: dict[str, Any]) -> GatewayError:
    return RecordedError(record)
