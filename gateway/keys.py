"""Every Redis key and channel name aigw owns, in one place (RQ owns its own `rq:` keys)."""

from __future__ import annotations

PREFIX = "aigw"

#: pub/sub channel: a job id is published here when the job reaches a final state.
DONE_CHANNEL = f"{PREFIX}:done"
#: pub/sub channel: a job id is published here when a caller cancels a running job.
CANCEL_CHANNEL = f"{PREFIX}:cancel"
#: pub/sub channel: "<deployment> <seconds>" when a worker opens a deployment's circuit breaker.
BREAKER_CHANNEL = f"{PREFIX}:breaker"
#: stream of audit events, drained by the single audit writer.
AUDIT_STREAM = f"{PREFIX}:audit"
AUDIT_GROUP = "audit-writer"
#: the notification outbox: an entry per final job that asked to notify, delivered by any worker
NOTIFY_STREAM = f"{PREFIX}:notify"
NOTIFY_GROUP = "notifiers"
#: hash: sha256(token) -> service name, for every token valid without an expiry (one HGET a
#: lookup); a token in a rotation's grace is only in its :func:`token_record`, with a TTL.
TOKENS = f"{PREFIX}:tokens"
#: hash of every stored metric (gateway/metrics/schema.py): field -> integer amount, added to by
#: every worker and API process on every host
METRICS = f"{PREFIX}:metrics"


def idempotency(service: str, key: str) -> str:
    """Maps (service, idempotency key) to the job id first created for it."""
    return f"{PREFIX}:idem:{service}:{key}"


def service_tokens(service: str) -> str:
    """Set of token hashes that belong to one service, live or in a rotation's grace (for
    rotate/remove/list)."""
    return f"{PREFIX}:service:{service}:tokens"


def token_record(digest: str) -> str:
    """Hash of one token's record by its SHA-256: service, created_at, last_used_at, expires_at
    (unix seconds). A token rotated away has its digest out of ``TOKENS`` and a TTL here."""
    return f"{PREFIX}:token:{digest}"


def text(value: bytes | str | None) -> str | None:
    """Decode what redis-py returns (bytes unless the client decodes responses)."""
    return value.decode() if isinstance(value, bytes) else value


def job_calls(job_id: str) -> str:
    """List of JSON provider-call records of a job's earlier attempts (written only on retry)."""
    return f"{PREFIX}:job:{job_id}:calls"


def deployment_failures(deployment: str) -> str:
    return f"{PREFIX}:breaker:{deployment}:failures"


def deployment_cooldown(deployment: str) -> str:
    return f"{PREFIX}:breaker:{deployment}:open"


def intermediate_seen(job_id: str) -> str:
    """When the reaper first saw a job sitting in a queue's intermediate list without a worker."""
    return f"{PREFIX}:intermediate-seen:{job_id}"


def scheduler_lock(queue: str) -> str:
    """Held by the one worker that moves a queue's due retries back onto it."""
    return f"{PREFIX}:scheduler:{queue}"


def spend_ledger(scope: str, period_id: str) -> str:
    """Hash of one budget period: "spent" -> micro-USD, "hold:<holder>" -> "<micro> <expires_at>"."""
    return f"{PREFIX}:spend:{scope}:{period_id}"


def concurrency_limit(policy: str, service: str) -> str:
    """The key of RQ's ``RateLimit`` for one policy's ``concurrent_jobs`` and one service (RQ puts
    its own ``rq:rl:`` in front)."""
    return f"{PREFIX}:{policy}:{service}"


def rate_window(scope: str, window_seconds: float) -> str:
    """Hash of one sliding-window counter: bucket number -> amount counted in that bucket."""
    return f"{PREFIX}:rate:{scope}:{window_seconds:g}s"


def response_cache(service: str, digest: str) -> str:
    """An exact-match cached answer; the service is part of the key, so no answer crosses services."""
    return f"{PREFIX}:cache:{service}:{digest}"


def review(job_id: str) -> str:
    """The review (approve/reject) of a draft result."""
    return f"{PREFIX}:review:{job_id}"


def skills_index() -> str:
    """Set of every skill name ever deployed."""
    return f"{PREFIX}:skills"


def skill_versions(name: str) -> str:
    """Hash: version -> JSON record (version, bundle sha256, size, deployed_at) of one skill."""
    return f"{PREFIX}:skill:{name}:versions"


def skill_current(name: str) -> str:
    """The JSON record of the version jobs run when they do not pin one."""
    return f"{PREFIX}:skill:{name}:current"


def skill_history(name: str) -> str:
    """List of versions in the order they were made current; rollback pops the last."""
    return f"{PREFIX}:skill:{name}:history"


def skill_bundle(content_hash: str) -> str:
    """A skill bundle (zlib-compressed JSON of its files), content-addressed and never rewritten."""
    return f"{PREFIX}:skill-bundle:{content_hash}"


def side_effects_claim(job_id: str) -> str:
    """Set (NX) before a job's side-effect steps run: they run at most once, whatever is retried."""
    return f"{PREFIX}:side-effects:{job_id}"


def auth_audit_marker(address: str) -> str:
    """Set (NX, one window) when a failed authentication from ``address`` was written to the audit."""
    return f"{PREFIX}:auth-audit:{address}:written"


def auth_audit_unwritten(address: str) -> str:
    """Failed authentications from ``address`` since its last audit line (the next line says how many)."""
    return f"{PREFIX}:auth-audit:{address}:unwritten"


def auth_failure_counts(minute: int) -> str:
    """Hash of one minute (unix time // 60), all addresses: "refused" (401) and "throttled" (429)."""
    return f"{PREFIX}:auth-failures:{minute}"


def job_stream(job_id: str) -> str:
    """A streamed job's events (a Redis stream): the worker appends deltas, the API relays them."""
    return f"{PREFIX}:job:{job_id}:stream"


def dashboard_login(digest: str) -> str:
    """A one-time dashboard login link, by the SHA-256 of its token; deleted when used."""
    return f"{PREFIX}:dashboard:login:{digest}"


def dashboard_session(digest: str) -> str:
    """A dashboard session, by the SHA-256 of its cookie: who it is for, with a TTL."""
    return f"{PREFIX}:dashboard:session:{digest}"
