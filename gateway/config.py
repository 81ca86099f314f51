"""Configuration: the YAML files in the config directory, validated by pydantic models.

Every model forbids unknown fields, so a typo is an error, and every error names the file, the
entry and the field (``models.yaml: models.general: pricing.input_per_mtok: ...``). Secrets never
live in these files: a deployment names the environment variable that holds its key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from gateway.errors import ConfigError

ProviderKind = Literal["anthropic", "openai", "ollama", "offline"]
QueueName = Literal["interactive", "batch"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- models.yaml ---------------------------------------------------------------------------------


class Timeouts(Strict):
    """Explicit httpx timeouts in seconds: connect, read (per chunk) and the whole call."""

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


_DEPLOYMENT_FIELDS = set(Deployment.model_fields)


class ModelAlias(Strict):
    """A name services use (``general``); SEED.md's shorthand puts one deployment's fields inline."""

    deployments: list[Deployment] = Field(min_length=1)
    use_for: list[str] = []
    sensitive: bool = False
    fallbacks: list[str] = []
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _inline_deployment(cls, data: Any) -> Any:
        if isinstance(data, dict) and "provider" in data and "deployments" not in data:
            inline = {k: v for k, v in data.items() if k in _DEPLOYMENT_FIELDS}
            rest = {k: v for k, v in data.items() if k not in _DEPLOYMENT_FIELDS}
            return {**rest, "deployments": [inline]}
        return data


class ModelsFile(Strict):
    models: dict[str, ModelAlias] = Field(min_length=1)
    default_model: str

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

    def alias_for_task(self, task: str) -> str | None:
        """The first alias whose ``use_for`` lists this task tag."""
        return next((name for name, alias in self.models.items() if task in alias.use_for), None)


# --- gateway.yaml --------------------------------------------------------------------------------


class ApiConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(18789, ge=0, le=65535)
    max_prompt_chars: int = Field(200_000, ge=1)
    max_wait_seconds: float = Field(60.0, ge=0)


class RedisConfig(Strict):
    """Where Redis is. ``REDIS_URL`` in the environment wins over ``url``."""

    url: str | None = None
    #: use a Redis answering on 127.0.0.1:6379 before starting an embedded one
    probe_local: bool = True
    embedded_port: int = Field(6390, ge=1, le=65535)


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
    max_output_tokens: int = Field(1024, ge=1)


class BreakerConfig(Strict):
    """A deployment with ``failures`` retryable failures within ``window`` seconds cools down."""

    failures: int = Field(5, ge=1)
    window: int = Field(30, ge=1)
    cooldown: int = Field(30, ge=1)


class WorkersConfig(Strict):
    processes: int = Field(1, ge=1, le=64)
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


class AuditConfig(Strict):
    """``path`` defaults to ``$AIGW_HOME/audit.log``."""

    path: str | None = None


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


# --- services.yaml -------------------------------------------------------------------------------


class ServiceConfig(Strict):
    description: str = ""
    #: token hashes declared in config (e.g. for a compose stack); tokens made by the CLI live in Redis.
    token_sha256: list[str] = []
    default_queue: QueueName = "interactive"


class ServicesFile(Strict):
    services: dict[str, ServiceConfig] = {"default": ServiceConfig()}


# --- policies.yaml and channels.yaml (parsed now, given teeth by later work) ---------------------


class PolicyConfig(BaseModel):
    """One rule; its kind-specific parameters are kept as extra fields."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1)
    rule: str = Field(min_length=1)
    enforce: bool = True
    applies_to: dict[str, list[str]] = {}


class PoliciesFile(Strict):
    policies: list[PolicyConfig] = []


class ChannelConfig(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    type: Literal["cli", "slack", "webhook"]
    name: str = Field(min_length=1)


class ChannelsFile(Strict):
    channels: list[ChannelConfig] = []


# --- the whole directory -------------------------------------------------------------------------


class Config(Strict):
    directory: str
    models: ModelsFile
    gateway: GatewayFile
    services: ServicesFile
    policies: PoliciesFile
    channels: ChannelsFile

    def redis_url(self) -> str | None:
        return os.environ.get("REDIS_URL") or self.gateway.redis.url


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
    return Config(directory=str(root.resolve()), **parts)


def _load_file(path: Path, model: type[Strict], required: bool) -> Strict:
    if not path.exists():
        if required:
            raise ConfigError("file is missing", file=str(path))
        return model()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
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
        raise _config_error(path, exc) from exc


def _config_error(path: Path, exc: PydanticValidationError) -> ConfigError:
    """Turn pydantic's first error into 'file: entry: field: message'."""
    first = exc.errors()[0]
    loc = [str(part) for part in first["loc"]]
    entry = ".".join(loc[:2]) if len(loc) >= 2 else ".".join(loc)
    field = ".".join(loc[2:])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "field required"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return ConfigError(message + more, file=path.name, entry=entry, field=field)
