"""The job contract: what a service submits, what goes on the queue, what it reads back.

Everything here crosses a process boundary as JSON (RQ's JSON serializer), so it is pydantic
models with ``extra="forbid"`` at the edge. What goes on the queue is a ``QueuedJob``: the store
serialises one as the job's only argument, the worker parses it back, and nobody reads it by key.
"""

from __future__ import annotations

import json
import time
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.chat import Capability, Message, ResponseFormat, Tool, ToolCall, ToolChoice, request_needs

__all__ = ["Message"]  # re-exported: the job contract's messages are gateway.chat's

#: The dotted path RQ stores on every aigw job; the API never imports workers.
JOB_FUNC = "workers.pipeline.run_job"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED)


#: RQ's job status -> the state a caller sees.
RQ_STATUS_TO_STATE: dict[str, JobState] = {
    "queued": JobState.QUEUED,
    "deferred": JobState.QUEUED,
    "started": JobState.RUNNING,
    "scheduled": JobState.RETRYING,
    "finished": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
    "stopped": JobState.CANCELED,
    "rate_limited": JobState.QUEUED,  # held by a concurrent_jobs limit until a slot frees
    "canceled": JobState.CANCELED,
}


class JobRequest(BaseModel):
    """The body of ``POST /v1/jobs``. The service comes from the token, never from here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str | None = None
    messages: list[Message] | None = None
    skill: str | None = Field(
        None, description="A skill to run instead of a prompt, e.g. 'summarize' or 'summarize@1.0.0'."
    )
    inputs: dict[str, Any] | None = Field(None, description="The skill's inputs (its SKILL.md contract).")
    system: str | None = None
    model: str | None = Field(None, description="A model alias from models.yaml.")
    task: str | None = Field(None, description="A task tag matched against models' use_for.")
    embed: list[str] | None = Field(
        None, min_length=1, max_length=2048, description="Texts to embed instead of a prompt."
    )
    dimensions: int | None = Field(None, ge=1, le=65_536, description="Embedding size, where the model can.")
    max_tokens: int | None = Field(None, ge=1, le=200_000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stop: list[str] | None = Field(None, max_length=16)
    seed: int | None = None
    user: str | None = Field(None, max_length=256, description="The end user the service acts for.")
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None
    stream: bool = Field(False, description="Relay the answer's tokens as they come (the API's SSE routes).")
    queue: Literal["interactive", "batch"] | None = None
    priority: Literal["normal", "high"] = "normal"
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    cache: bool | None = Field(
        None, description="Use the exact-match response cache (default: the service's setting)."
    )
    metadata: dict[str, str] = Field(default_factory=dict, max_length=50)
    notify: list[str] = Field(
        default_factory=list, max_length=10, description="Channels (channels.yaml) told when the job ends."
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("prompt must not be empty")
        return value

    @model_validator(mode="after")
    def _one_input(self) -> JobRequest:
        if sum(x is not None for x in (self.prompt, self.messages, self.skill, self.embed)) != 1:
            raise ValueError("give exactly one of 'prompt', 'messages', 'skill' or 'embed'")
        if self.embed is not None and any(not text for text in self.embed):
            raise ValueError("embed: every text must be non-empty")
        if self.tool_choice is not None and not self.tools:
            raise ValueError("'tool_choice' goes with 'tools'")
        named = self.tool_choice.name if self.tool_choice is not None else None
        if named is not None and named not in {t.name for t in self.tools or []}:
            raise ValueError(f"tool_choice names {named!r}, which is not in 'tools'")
        if self.inputs is not None and self.skill is None:
            raise ValueError("'inputs' go with a 'skill'")
        if self.messages is not None and not self.messages:
            raise ValueError("messages must not be empty")
        if self.model is not None and self.task is not None:
            raise ValueError("give 'model' or 'task', not both")
        return self

    def all_messages(self) -> list[Message]:
        """The conversation to send: system first, then the prompt or the messages."""
        out = [Message(role="system", content=self.system)] if self.system else []
        if self.prompt is not None:
            out.append(Message(role="user", content=self.prompt))
        else:
            out.extend(self.messages or [])
        return out

    def needs(self) -> set[Capability]:
        """What a deployment must be able to do to serve this request (images, tools, ...)."""
        if self.embed is not None:
            return {"embeddings"}
        return request_needs(
            self.all_messages(), self.tools, self.response_format, self.seed, self.tool_choice
        )

    def size_bytes(self) -> int:
        """UTF-8 bytes of what will be sent (an upper bound of its input tokens)."""
        return len(self._sent_text().encode())

    def size_chars(self) -> int:
        return len(self._sent_text())

    def _sent_text(self) -> str:
        pieces = [text for m in self.all_messages() for _, text in m.texts()]
        pieces.extend(self.embed or [])
        if self.inputs:
            pieces.append(json.dumps(self.inputs, ensure_ascii=False))
        if self.tools:
            pieces.extend(t.model_dump_json() for t in self.tools)
        return "".join(pieces)


class ApprovedDraft(BaseModel):
    """The follow-up of a reviewed draft: run its held side-effect steps on its checked outputs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str  # the draft's job
    outputs: dict[str, Any]
    bundle_sha256: str | None = None  # the code that was reviewed, and no other


class QueuedJob(BaseModel):
    """The one argument of every aigw job on the queue (``JOB_FUNC``), as JSON.

    ``to_payload`` is what the store enqueues; a worker reads it with ``model_validate``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str
    request: JobRequest  # as sent, less the idempotency key (the API's business, not the worker's)
    max_attempts: int = Field(ge=1)
    submitted_at: float  # Unix time the store enqueued it
    #: what the quotas decided at the door (Decision.to_dict()), recorded with the result
    admission: list[dict[str, Any]] = []
    apply: ApprovedDraft | None = None

    @classmethod
    def submitted(
        cls,
        service: str,
        request: JobRequest,
        *,
        max_attempts: int,
        admission: list[dict[str, Any]] | None = None,
        apply: ApprovedDraft | None = None,
    ) -> QueuedJob:
        return cls(
            service=service,
            request=request.model_copy(update={"idempotency_key": None}),
            max_attempts=max_attempts,
            submitted_at=time.time(),
            admission=admission or [],
            apply=apply,
        )

    def to_payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class ReviewRequest(BaseModel):
    """The body of ``POST /v1/jobs/{id}/review``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision: Literal["approve", "reject"]
    comment: str | None = Field(None, max_length=2000)


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0


class ProviderCall(BaseModel):
    """One provider call (or a deployment skipped without a call) within one job attempt."""

    attempt: int
    model: str
    deployment: str
    provider: str
    outcome: Literal["ok", "error", "skipped"]
    error: dict[str, Any] | None = None
    latency_ms: float | None = None


class JobResult(BaseModel):
    """What a worker stores as the RQ result of a succeeded job."""

    output: str
    model: str
    provider: str
    provider_model: str
    offline: bool = False
    usage: Usage
    cost_usd: float
    attempt: int
    calls: list[ProviderCall]
    timings: dict[str, float]
    finish_reason: str | None = None
    #: answered from the exact-match response cache (no provider call, no cost)
    cached: bool = False
    #: all_outputs_are_drafts holds: the output waits for a reviewer (see JobView.review)
    draft: bool = False
    #: what each policy decided for this job (categories and places, never values)
    policy: list[dict[str, Any]] = []
    #: a skill job's outputs, checked against its contract (``output`` holds the model's raw answer)
    outputs: dict[str, Any] | None = None
    #: a skill job: name, version, bundle_sha256, source, risk_flags, scripts
    skill: dict[str, Any] | None = None
    #: the calls the model asked for (finish_reason "tool_calls")
    tool_calls: list[ToolCall] | None = None
    #: an embedding job's vectors, one per text in ``embed``
    embeddings: list[list[float]] | None = None
    #: the job streamed its answer (the API relayed it as it came)
    streamed: bool = False


class JobView(BaseModel):
    """What ``GET /v1/jobs/{id}`` returns."""

    id: str
    status: JobState
    service: str
    queue: str
    created_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    request: dict[str, Any] | None = None
    result: JobResult | None = None
    error: dict[str, Any] | None = None
    attempts: int = 0
    #: provider calls of earlier (failed) attempts, for a job that is retrying or failed
    calls: list[ProviderCall] | None = None
    #: when a retrying job's next attempt is due (ISO-8601 UTC)
    next_attempt_at: str | None = None
    #: a draft's review: {"state": "pending" | "approved" | "rejected", "by", "at", "comment"}
    review: dict[str, Any] | None = None
    metadata: dict[str, str] = {}
