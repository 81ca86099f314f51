"""Configuration: the YAML files in the config directory, validated by pydantic models.

Every model forbids unknown fields, so a typo is an error, and every error names the file, the
entry and the field (``models.yaml: models.general: pricing.input_per_mtok: ...``). Secrets never
live in these files: a deployment names the environment variable that holds its key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import Field, SerializeAsAny, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from gateway.chat import Capability
from gateway.errors import ConfigError, ModelNotFoundError, ValidationError
from gateway.pii.findings import DEFAULT_PHONE_REGIONS
from gateway.validation import Strict, first_error

ProviderKind = Literal["anthropic", "openai", "ollama", "offline"]
QueueName = Literal["interactive", "batch"]


# --- models.yaml ---------------------------------------------------------------------------------


class Timeouts(Strict):
    """Explicit httpx timeouts in seconds of one provider call: connect, read (per chunk) and the
    whole call. Not a skill's ``SkillTimeouts`` (its scripts, and its job's bound on the model)."""

    connect: float = Field(5.0, gt=0)
    read: float = Field(60.0, gt=0)
    total: float = Field(120.0, gt=0)


class Pricing(Strict):
    """USD per million tokens."""

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1_000_000


class Deployment(Strict):
    """One concrete place a model alias can be served from."""

    provider: ProviderKind
    model: str = Field(min_length=1)
    api_base: str | None = None
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    timeouts: Timeouts = Timeouts()
    pricing: Pricing = Pricing()
    max_connections: int = Field(50, ge=1, le=1000)
    weight: int = Field(1, ge=1)
    #: what this deployment can do beyond text, over its kind's defaults (``KIND_CAPABILITIES``):
    #: an OpenAI-compatible server without vision says ``{images: false}``
    capabilities: dict[Capability, bool] = {}

    def supports(self, capability: Capability) -> bool:
        return self.capabilities.get(capability, capability in KIND_CAPABILITIES[self.provider])


#: What each provider kind's API can do. Anthropic's Messages API has no seed, no JSON mode and no
#: embeddings; the offline stand-in honours the rest (deterministically) so a keyless stack serves
#: nearly every request shape.
KIND_CAPABILITIES: dict[str, frozenset[Capability]] = {
    # a chat model does not embed: an embedding deployment says `capabilities: {embeddings: true}`
    "openai": frozenset({"images", "tools", "tool_choice", "json_mode", "json_schema", "seed"}),
    "anthropic": frozenset({"images", "tools", "tool_choice"}),
    # Ollama has no tool_choice: it cannot be made to call a tool
    "ollama": frozenset({"images", "tools", "json_mode", "json_schema", "seed"}),
    # the offline stand-in never calls a tool, so it cannot honour a forced one either
    "offline": frozenset({"images", "tools", "json_mode", "json_schema", "seed", "embeddings"}),
}


_DEPLOYMENT_FIELDS = set(Deployment.model_fields)


class ModelAlias(Strict):
    """A name services use (``general``); the seed article's shorthand puts one deployment's fields inline."""

    deployments: list[Deployment] = Field(min_length=1)
    use_for: list[str] = []
    sensitive: bool = False
    fallbacks: list[str] = []
    description: str = ""
    #: how a job picks among several deployments: in listed order (the rest are failover),
    #: at random in proportion to ``weight``, or the one with the fewest calls in flight
    balance: Literal["ordered", "weighted", "least_in_flight"] = "ordered"

    @model_validator(mode="before")
    @classmethod
    def _inline_deployment(cls, data: Any) -> Any:
        if isinstance(data, dict) and "provider" in data and "deployments" not in data:
            inline = {k: v for k, v in data.items() if k in _DEPLOYMENT_FIELDS}
            rest = {k: v for k, v in data.items() if k not in _DEPLOYMENT_FIELDS}
            return {**rest, "deployments": [inline]}
        return data


def deployment_name(alias: str, index: int, deployment: Deployment) -> str:
    """A deployment's stable name wherever one is shown or keyed (breakers, audit lines, metrics,
    traces): ``<alias>/<index>:<provider kind>``, e.g. ``general/0:anthropic``."""
    return f"{alias}/{index}:{deployment.provider}"


class ModelsFile(Strict):
    models: dict[str, ModelAlias] = Field(min_length=1)
    default_model: str

    def named_deployments(self) -> Iterator[tuple[str, Deployment]]:
        """Every deployment of every alias with its ``deployment_name``, in the file's order."""
        for alias, entry in self.models.items():
            for index, deployment in enumerate(entry.deployments):
                yield deployment_name(alias, index, deployment), deployment

    @model_validator(mode="after")
    def _references_exist(self) -> Self:
        if self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} is not one of {sorted(self.models)}")
        for name, alias in self.models.items():
            for fallback in alias.fallbacks:
                if fallback not in self.models:
                    raise ValueError(
                        f"models.{name}.fallbacks: {fallback!r} is not a model alias ({sorted(self.models)})"
                    )
        return self

    def resolve_alias(self, model: str | None, task: str | None) -> str:
        """The alias a request asks for: its model, else the alias serving its task, else the default.

        ``model`` may also be ``auto`` (the default, then the policies, decide), a ``use_for`` task
        tag, or a provider's model name that an alias serves (``gpt-4o-mini``), so code written
        against a vendor's SDK works unchanged. An unknown name is a ``NotFoundError`` (404).
        """
        if model is not None:
            alias = self.alias_for_model(model)
            if alias is None:
                raise ModelNotFoundError(
                    f"unknown model {model!r}: not an alias ({', '.join(sorted(self.models))}), "
                    "a task tag, 'auto', or a provider model an alias serves"
                )
            return alias
        if task is not None:
            alias = self.alias_for_task(task)
            if alias is None:
                tags = sorted({t for a in self.models.values() for t in a.use_for})
                raise ValidationError(f"no model serves task {task!r}; known tasks: {', '.join(tags)}")
            return alias
        return self.default_model

    def alias_for_model(self, model: str) -> str | None:
        """The alias a ``model`` value names: an alias, ``auto``, a task tag, or the first alias (in
        file order) whose first deployment serves that provider model, else any deployment of it."""
        if model in self.models:
            return model
        if model == "auto":
            return self.default_model
        by_task = self.alias_for_task(model)
        if by_task is not None:
            return by_task
        for name, alias in self.models.items():
            if alias.deployments[0].model == model:
                return name
        return next(
            (name for name, alias in self.models.items() if any(d.model == model for d in alias.deployments)),
            None,
        )

    def alias_for_task(self, task: str) -> str | None:
        """The first alias whose ``use_for`` lists this task tag."""
        return next((name for name, alias in self.models.items() if task in alias.use_for), None)


# --- gateway.yaml --------------------------------------------------------------------------------


class ApiConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(18789, ge=0, le=65535)
    max_prompt_chars: int = Field(200_000, ge=1)
    max_wait_seconds: float = Field(60.0, ge=0)
    #: failed authentications per client address per minute before it gets 429 (gateway/auth_failures.py)
    auth_failures_per_minute: int = Field(30, ge=1, le=100_000)
    #: the API's in-memory cache of token hashes proven valid (gateway/services.py TokenCache)
    token_cache_size: int = Field(10_000, ge=1, le=10_000_000)
    token_cache_seconds: float = Field(5.0, ge=0, le=3600)
    #: addresses (or networks) of proxies whose X-Forwarded-For names the client; none by default
    trusted_proxies: list[str] = Field(default_factory=list, max_length=1000)
    #: the longest a request body may take to arrive in full before the API answers 408
    body_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    #: connections (and requests in flight) one API process takes; past it uvicorn answers 503
    max_connections: int = Field(1000, ge=1, le=1_000_000)
    #: how long a one-time dashboard link from `aigw dashboard` stays usable
    dashboard_link_seconds: float = Field(300.0, gt=0, le=86_400)
    #: how long a dashboard session (its cookie) lasts
    dashboard_session_seconds: float = Field(43_200.0, gt=0, le=30 * 86_400)

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        """IP addresses or networks (``10.0.0.0/8``), written the way uvicorn reads them; never
        ``*`` or a name, which would let any client pick its own address."""
        normal = []
        for entry in value:
            try:
                parsed = (
                    ipaddress.ip_network(entry, strict=False) if "/" in entry else ipaddress.ip_address(entry)
                )
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
            normal.append(str(parsed))
        return normal


class RedisConfig(Strict):
    """Where Redis is. ``REDIS_URL`` in the environment wins over ``url``."""

    url: str | None = None
    embedded_port: int = Field(6390, ge=1, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _no_probe_local(cls, data: Any) -> Any:
        """``probe_local`` is gone. ``false`` (what aigw now always does) is dropped, so a config
        copied from an older sample still loads; ``true`` asked for what aigw no longer does."""
        if not isinstance(data, dict) or "probe_local" not in data:
            return data
        if data["probe_local"] not in (False, "false", "no", 0):
            raise ValueError(
                "probe_local was removed: delete the line (aigw never uses a Redis it was not told "
                "about); to use the one on 6379, set url: redis://127.0.0.1:6379/0"
            )
        return {k: v for k, v in data.items() if k != "probe_local"}


#: seconds (``jobs.max_retry_after``); also the providers' cap when no config is handed in (tests, CLI)
DEFAULT_MAX_RETRY_AFTER = 300
#: bytes (``jobs.max_response_bytes``): the largest provider answer a worker reads; also the
#: providers' cap when no config is handed in (tests, CLI)
DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class QueueConfig(Strict):
    concurrency: int = Field(200, ge=1, le=10_000)
    timeout: float = Field(300.0, gt=0)


class JobsConfig(Strict):
    result_ttl: int = Field(86_400, ge=1)
    failure_ttl: int = Field(7 * 86_400, ge=1)
    #: attempts per job (RQ requeues); each attempt walks the deployment chain once
    max_attempts: int = Field(3, ge=1, le=20)
    #: seconds before attempt 2, 3, ... (the last value repeats); a Retry-After can only lengthen it
    retry_intervals: list[Annotated[int, Field(ge=0, le=86_400)]] = Field([1, 5, 30], min_length=1)
    #: hard cap on provider calls per job across all attempts and failovers
    max_provider_calls: int = Field(8, ge=1, le=100)
    #: the longest a provider's Retry-After may push the next attempt out; a longer one is capped
    max_retry_after: int = Field(DEFAULT_MAX_RETRY_AFTER, ge=1, le=86_400)
    #: the largest provider answer (body bytes) a worker reads; a larger one fails the call
    max_response_bytes: int = Field(DEFAULT_MAX_RESPONSE_BYTES, ge=1024, le=1024**3)
    max_output_tokens: int = Field(1024, ge=1)


class BreakerConfig(Strict):
    """A deployment with ``failures`` retryable failures within ``window`` seconds cools down."""

    failures: int = Field(5, ge=1)
    window: int = Field(30, ge=1)
    cooldown: int = Field(30, ge=1)


class WorkersConfig(Strict):
    processes: int = Field(1, ge=1, le=64)
    #: how `aigw up` lays out its worker processes: ``shared``, each of the ``processes`` serves
    #: every queue (each queue keeps its own slots); ``per_queue``, ``processes`` of them per queue
    layout: Literal["shared", "per_queue"] = "shared"
    heartbeat_interval: float = Field(3.0, gt=0)
    #: an in-flight job whose worker stops heartbeating is recovered after this many seconds
    heartbeat_ttl: int = Field(15, ge=2)
    reap_interval: float = Field(5.0, gt=0)
    #: on SIGTERM, in-flight jobs get this long to finish before they are requeued
    shutdown_grace: float = Field(25.0, ge=0)

    @model_validator(mode="after")
    def _ttl_outlives_heartbeats(self) -> Self:
        if self.heartbeat_ttl < 2 * self.heartbeat_interval:
            raise ValueError(
                "heartbeat_ttl must be at least twice heartbeat_interval, or live jobs look dead"
            )
        return self


#: ``audit.rotate_bytes`` when gateway.yaml does not say: 100 MiB
DEFAULT_AUDIT_ROTATE_BYTES = 100 * 1024 * 1024


class AuditConfig(Strict):
    """``path`` defaults to ``$AIGW_HOME/audit.log``. Past ``rotate_bytes`` the writer renames the
    file to ``audit.log.000001``, ``.000002``, ... (``gateway/audit/files.py``) and starts a new
    one whose first line chains to the last line of the old; ``null`` never rotates. ``keep``
    rotated files are kept (the oldest are deleted past it); ``null`` keeps them all."""

    path: str | None = None
    rotate_bytes: int | None = Field(DEFAULT_AUDIT_ROTATE_BYTES, ge=65_536, le=1 << 50)
    keep: int | None = Field(None, ge=1, le=1_000_000)


class SandboxLimits(Strict):
    """Per-script resource limits (setrlimit inside the sandbox); a script past one is killed or refused."""

    #: CPU seconds (SIGXCPU, then SIGKILL a second later); wall time is the script's timeout
    cpu_seconds: int = Field(60, ge=1, le=3600)
    #: address space per process (RLIMIT_AS): an allocation past it fails (Python: MemoryError).
    #: Per process, not per sandbox: a script's bound is ``processes`` x ``memory_mb``
    memory_mb: int = Field(512, ge=64, le=1_048_576)
    #: processes and threads the sandbox may run at once (RLIMIT_NPROC, counted per sandbox)
    processes: int = Field(16, ge=4, le=4096)
    #: the largest file a script may write (RLIMIT_FSIZE; SIGXFSZ past it)
    file_size_mb: int = Field(64, ge=1, le=1_048_576)
    #: what one run's scripts may keep in their working directory (/work and /tmp) together; past
    #: it the script is killed and the job fails (checked while it runs and after it ends)
    disk_mb: int = Field(256, ge=1, le=1_048_576)


class SandboxConfig(Strict):
    """How skill scripts are isolated: ``bwrap`` (bubblewrap, the default) or ``none`` (trusted only)."""

    mode: Literal["bwrap", "none"] = "bwrap"
    limits: SandboxLimits = SandboxLimits()
    #: host directories every script may read, bound read-only at the same path (e.g. git checkouts)
    read_paths: list[str] = []
    #: the host uid and gid scripts run as when the worker runs as root (else the worker's own)
    run_as: int = Field(65534, ge=1, le=4_294_967_294)

    @field_validator("read_paths")
    @classmethod
    def _absolute(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not path.startswith("/") or ".." in path.split("/"):
                raise ValueError(f"{path!r} must be an absolute path without '..'")
        return paths


class SkillsConfig(Strict):
    """Where skill jobs find their skills.

    ``registry``: deployed versions only (``aigw skill deploy``), the same bundle on every host.
    ``disk``: the folders under ``dir``, read at every job, so an edit takes effect at once.
    ``auto``: the deployed version when there is one, else the folder (development and production mixed).
    """

    source: Literal["auto", "registry", "disk"] = "auto"
    #: folder of skill folders; default: ``skills/`` beside the config directory
    dir: str | None = None
    #: a script's stdout and stderr are cut off (and the job fails) past this many bytes
    max_output_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    #: ``none`` (or ``{mode: none}``) runs scripts unsandboxed: for trusted skills only
    sandbox: SandboxConfig = SandboxConfig()

    @field_validator("sandbox", mode="before")
    @classmethod
    def _mode_shorthand(cls, value: Any) -> Any:
        return {"mode": value} if isinstance(value, str) else value


class GatewayFile(Strict):
    api: ApiConfig = ApiConfig()
    redis: RedisConfig = RedisConfig()
    queues: dict[QueueName, QueueConfig] = {
        "interactive": QueueConfig(concurrency=200),
        "batch": QueueConfig(concurrency=50, timeout=1800),
    }
    jobs: JobsConfig = JobsConfig()
    breaker: BreakerConfig = BreakerConfig()
    workers: WorkersConfig = WorkersConfig()
    audit: AuditConfig = AuditConfig()
    skills: SkillsConfig = SkillsConfig()


# --- services.yaml -------------------------------------------------------------------------------


class ServiceConfig(Strict):
    description: str = ""
    #: token hashes declared in config (e.g. for a compose stack); tokens made by the CLI live in Redis.
    token_sha256: list[str] = []
    default_queue: QueueName = "interactive"
    #: answer identical requests from the exact-match response cache (a request may override)
    cache: bool = False
    cache_ttl: int = Field(300, ge=1, le=30 * 86_400)
    #: every job of this service stays on a sensitive (local) alias, with no PII detection needed:
    #: for services that only ever handle sensitive data (gateway.policies enforces it)
    always_local: bool = False


class ServicesFile(Strict):
    services: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")], ServiceConfig] = {
        "default": ServiceConfig()
    }

    def default_queue(self, service: str) -> QueueName:
        """The queue a service's jobs go to when they name none (a service made by the CLI: interactive)."""
        entry = self.services.get(service)
        return entry.default_queue if entry else "interactive"


# --- policies.yaml -------------------------------------------------------------------------------

#: what the PII detector can find (gateway.pii); secrets are the subset block_secrets acts on
PiiCategory = Literal[
    "email", "phone", "credit_card", "iban", "us_ssn", "ip_address", "date_of_birth",
    "postal_address", "national_id", "passport", "api_key", "private_key", "jwt", "url_password", "password",
]  # fmt: skip
SecretCategory = Literal["api_key", "private_key", "jwt", "url_password", "password"]
DetectorEngine = Literal["builtin", "presidio", "auto"]


class AppliesTo(Strict):
    """Scope of one policy; an empty or missing list means every one."""

    services: list[str] = []
    models: list[str] = []
    queues: list[QueueName] = []
    skills: list[str] = []


class DraftsRule(Strict):
    #: services that may approve or reject another service's drafts; the job's own service always may
    reviewers: list[str] = []


class PiiRouteRule(Strict):
    categories: list[PiiCategory] | None = None
    engine: DetectorEngine = "builtin"
    #: where a phone number without a leading + may be from (ISO 3166 codes), for the detector
    phone_regions: list[str] = Field(default_factory=lambda: list(DEFAULT_PHONE_REGIONS))
    #: the sensitive alias a PII job goes to when it asked for a cloud one (default: the first one)
    route_to: str | None = None
    #: job ``metadata`` tags that keep a job local with no detection: a job whose metadata holds any
    #: one of these key/value pairs (``{data_class: restricted}``) stays on a sensitive alias
    local_metadata: dict[str, str] = {}
    #: what a job gets when detection itself raises: ``local`` keeps it on a sensitive alias (the
    #: safe default: a broken detector must not send a job to the cloud), ``deny`` refuses it
    on_detector_error: Literal["local", "deny"] = "local"


class AuditBodiesRule(Strict):
    #: mask PII values (by category) in the logged bodies; secrets are always redacted
    mask_pii: bool = True
    max_body_chars: int = Field(100_000, ge=100)


class RedactRule(Strict):
    categories: list[PiiCategory] | None = None
    engine: DetectorEngine = "builtin"
    #: where a phone number without a leading + may be from (ISO 3166 codes), for the detector
    phone_regions: list[str] = Field(default_factory=lambda: list(DEFAULT_PHONE_REGIONS))


class BlockSecretsRule(Strict):
    categories: list[SecretCategory] | None = None


class BudgetRule(Strict):
    limit_usd: float = Field(gt=0)
    period: Literal["day", "month"] = "day"
    #: a separate cap for each model alias a service uses, instead of one for all of them
    per_model: bool = False


class RateLimitRule(Strict):
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    concurrent_jobs: int | None = Field(None, ge=1, le=100_000)

    @model_validator(mode="after")
    def _one_limit(self) -> Self:
        if not (self.requests_per_minute or self.tokens_per_minute or self.concurrent_jobs):
            raise ValueError("set at least one of requests_per_minute, tokens_per_minute, concurrent_jobs")
        return self


class AllowModelsRule(Strict):
    models: list[str] = Field(min_length=1)


class AllowSkillsRule(Strict):
    skills: list[str] = Field(min_length=1)


class MaxTokensRule(Strict):
    limit: int = Field(ge=1)
    #: clamp: lower a larger request to the limit; reject: refuse it (403 policy_denied).
    #: A job that sets no max_tokens is clamped either way (the configured default is not its request).
    mode: Literal["clamp", "reject"] = "clamp"


#: rule kind -> its parameters; the policy engine (gateway.policies) gives each its meaning
RULE_KINDS: dict[str, type[Strict]] = {
    "all_outputs_are_drafts": DraftsRule,
    "if_context_contains_pii_use_sensitive_model": PiiRouteRule,
    "log_all_requests_and_responses": AuditBodiesRule,
    "redact_pii": RedactRule,
    "block_secrets": BlockSecretsRule,
    "budget": BudgetRule,
    "rate_limit": RateLimitRule,
    "allow_models": AllowModelsRule,
    "allow_skills": AllowSkillsRule,
    "max_tokens": MaxTokensRule,
}
_POLICY_FIELDS = {"name", "rule", "enforce", "applies_to"}


class PolicyConfig(Strict):
    """One rule: ``name``, ``rule`` (a kind in RULE_KINDS), ``enforce``, ``applies_to``, its parameters."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    rule: str
    #: false = monitor mode: evaluated and recorded in the result and the audit, not acted on
    enforce: bool = True
    applies_to: AppliesTo = AppliesTo()
    params: SerializeAsAny[Strict]

    @model_validator(mode="before")
    @classmethod
    def _split_params(cls, data: Any) -> Any:
        """YAML puts parameters beside name/rule; validate them with the rule kind's own model."""
        if not isinstance(data, dict) or isinstance(data.get("params"), Strict):
            return data  # built in code, already typed
        kind = data.get("rule")
        if kind not in RULE_KINDS:
            raise ValueError(f"rule: unknown rule kind {kind!r}; valid: {', '.join(RULE_KINDS)}")
        params = {k: v for k, v in data.items() if k not in _POLICY_FIELDS}
        try:
            parsed = RULE_KINDS[kind].model_validate(params)
        except PydanticValidationError as exc:
            first = first_error(exc)
            message = first.message(unknown="unknown parameter")
            valid = ", ".join(RULE_KINDS[kind].model_fields) or "none"
            raise ValueError(
                f"{first.where or '(parameters)'}: {message} (parameters of {kind}: {valid})"
            ) from None
        return {**{k: v for k, v in data.items() if k in _POLICY_FIELDS}, "params": parsed}


class PoliciesFile(Strict):
    policies: list[PolicyConfig] = []

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [p.name for p in self.policies]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"policy names must be unique; repeated: {', '.join(dupes)}")
        return self


# --- channels.yaml -------------------------------------------------------------------------------


class ChannelConfig(Strict):
    """Where job notifications go: a job lists channel names in ``notify``.

    ``webhook``: a JSON POST to ``url`` (signed with HMAC-SHA256 when ``secret_env`` names a
    secret); ``slack``: a Slack incoming webhook, whose URL is a secret, so only ``url_env``;
    ``cli``: the terminal that waits for its own job (``aigw ask``), which needs no delivery.
    Notifications carry the job's state, never its content: the result is read through the API.
    """

    type: Literal["cli", "slack", "webhook"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    url: str | None = Field(None, pattern=r"^https?://")
    url_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    secret_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    timeout: float = Field(5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _where_it_goes(self) -> Self:
        if self.type == "cli":
            if self.url or self.url_env or self.secret_env:
                raise ValueError("a cli channel takes no url, url_env or secret_env")
        elif self.type == "slack":
            if self.url or not self.url_env:
                raise ValueError(
                    "a slack webhook URL is a secret: give url_env (the variable holding it), not url"
                )
        elif (self.url is None) == (self.url_env is None):
            raise ValueError("a webhook needs exactly one of url or url_env")
        return self


class ChannelsFile(Strict):
    channels: list[ChannelConfig] = []

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [c.name for c in self.channels]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"channel names must be unique; repeated: {', '.join(dupes)}")
        return self

    def deliverable(self, name: str) -> ChannelConfig | None:
        """The slack or webhook channel called ``name`` (a cli channel receives nothing)."""
        return next((c for c in self.channels if c.name == name and c.type != "cli"), None)


# --- the whole directory -------------------------------------------------------------------------


class Config(Strict):
    directory: str
    models: ModelsFile
    gateway: GatewayFile
    services: ServicesFile
    policies: PoliciesFile
    channels: ChannelsFile

    def redis_url(self, override: str | None) -> str | None:
        """``override`` (``$REDIS_URL``, from the entry point's settings), else ``redis.url``."""
        return override or self.gateway.redis.url

    def skills_dir(self) -> Path:
        """``skills.dir`` (relative to the config directory), else ``skills/`` beside it, else the
        skills shipped with aigw (a config in ``$AIGW_HOME/config`` has no folder beside it)."""
        configured = self.gateway.skills.dir
        base = Path(self.directory)
        if configured:
            return (base / Path(configured).expanduser()).resolve()
        beside = base.parent / "skills"
        return beside if beside.is_dir() else bundled_skills_dir()


def bundled_skills_dir() -> Path:
    """The skills shipped with aigw (pr-review-prep, summarize, classify, extract)."""
    return Path(str(resources.files("gateway") / "sample_skills"))


_FILES: dict[str, tuple[str, type[Strict], bool]] = {
    # field on Config: (file name, model, required)
    "models": ("models.yaml", ModelsFile, True),
    "gateway": ("gateway.yaml", GatewayFile, False),
    "services": ("services.yaml", ServicesFile, False),
    "policies": ("policies.yaml", PoliciesFile, False),
    "channels": ("channels.yaml", ChannelsFile, False),
}


def load_config(directory: str | Path) -> Config:
    """Read and validate every config file in ``directory``; the first error raises ConfigError."""
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"config directory {root} does not exist")
    parts: dict[str, Any] = {}
    for attr, (filename, model, required) in _FILES.items():
        parts[attr] = _load_file(root / filename, model, required)
    config = Config(directory=str(root.resolve()), **parts)
    _check_policy_references(config)
    return config


def _check_policy_references(config: Config) -> None:
    """Policies name models; a name that is not in models.yaml is an error here, not at run time."""
    for index, policy in enumerate(config.policies.policies):
        problem = _policy_reference_problem(policy, config.models.models)
        if problem is not None:
            field, message = problem
            raise ConfigError(
                message, file="policies.yaml", entry=f"policies[{index}] ({policy.name})", field=field
            )


def _policy_reference_problem(policy: PolicyConfig, aliases: dict[str, ModelAlias]) -> tuple[str, str] | None:
    """(field, message) of the first thing ``policy`` names that does not exist or cannot work."""
    known = ", ".join(sorted(aliases))
    for name in policy.applies_to.models:
        if name not in aliases:
            return "applies_to.models", f"{name!r} is not a model alias (known: {known})"
    params = policy.params
    if isinstance(params, AllowModelsRule):
        for name in params.models:
            if name not in aliases:
                return "models", f"{name!r} is not a model alias (known: {known})"
    if isinstance(params, PiiRouteRule | RedactRule) and not _engine_installed(params.engine):
        return "engine", "'presidio' needs the presidio-analyzer package: pip install presidio-analyzer"
    if isinstance(params, PiiRouteRule):
        sensitive = [n for n, a in aliases.items() if a.sensitive]
        if not sensitive:
            return "rule", "no model alias has `sensitive: true`, so PII could never be routed"
        if params.route_to is not None and params.route_to not in sensitive:
            return (
                "route_to",
                f"{params.route_to!r} is not a sensitive model alias (sensitive: {', '.join(sensitive)})",
            )
    return None


def _engine_installed(engine: str) -> bool:
    from gateway.pii import presidio_available  # the detector module, only when a policy names one

    return engine != "presidio" or presidio_available()


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping: YAML would keep the last
    silently, so an alias or a field written twice (a bad merge, a copy-paste) would hide the other."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} is given twice in this mapping", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _load_file(path: Path, model: type[Strict], required: bool) -> Strict:
    if not path.exists():
        if required:
            raise ConfigError("file is missing", file=str(path))
        return model()
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"not valid YAML: {getattr(exc, 'problem', exc)}", file=str(path), entry=where
        ) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping", file=str(path))
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise _config_error(path, exc, data) from exc


def _config_error(path: Path, exc: PydanticValidationError, data: dict[str, Any]) -> ConfigError:
    """Turn pydantic's first error into 'file: entry: field: message'.

    A list entry is named by its index and, when it has one, its ``name``: ``policies[1] (pii)``.
    """
    first = first_error(exc)
    loc = [str(part) for part in first.loc]
    entry = ".".join(loc[:2]) if len(loc) >= 2 else ".".join(loc)
    raw = first.loc
    if len(raw) >= 2 and isinstance(raw[1], int):
        items = data.get(str(raw[0]))
        item = items[raw[1]] if isinstance(items, list) and raw[1] < len(items) else None
        name = item.get("name") if isinstance(item, dict) else None
        entry = f"{raw[0]}[{raw[1]}]" + (f" ({name})" if name else "")
    field = ".".join(loc[2:])
    message = first.message(missing="field required")
    if ": " in message and not field and message.split(": ", 1)[0].replace(".", "").isidentifier():
        field, message = message.split(": ", 1)  # a validator that names the field it refuses
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return ConfigError(message + more, file=path.name, entry=entry, field=field)
