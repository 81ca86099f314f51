"""The exact-match response cache: an identical request from the same service to the same model.

Opt-in (per service in services.yaml, or per request with ``"cache": true``). The key hashes the
service, the model alias, whether the route is sensitive, and the request exactly as it would be
sent (after redaction), so an answer is never shared across services and a sensitive answer is
never served to a non-sensitive route. A redacted request is cached with its placeholders, and
each job restores its own values into the cached answer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.client import Pipeline

from gateway import keys
from gateway.chat import ToolCall
from gateway.policies import Plan
from workers.providers.base import Completion, CompletionRequest
from workers.routing import RouteStep


@dataclass(frozen=True)
class CachedAnswer:
    deployment: str
    text: str
    provider_model: str
    finish_reason: str | None
    sensitive: bool
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    def completion(self) -> Completion:
        calls = tuple(ToolCall.model_validate(c) for c in self.tool_calls)
        return Completion(self.text, 0, 0, self.provider_model, self.finish_reason, tool_calls=calls)


class ResponseCache:
    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection

    def key(self, service: str, plan: Plan, request: CompletionRequest) -> str:
        sent = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)}
        sent["messages"] = [m.model_dump(mode="json", exclude_defaults=True) for m in request.messages]
        sent["tools"] = [t.model_dump(mode="json") for t in request.tools]
        for name in ("tool_choice", "response_format"):
            value = sent[name]
            sent[name] = None if value is None else value.model_dump(mode="json")
        canonical = json.dumps(
            {"model": plan.alias, "sensitive": plan.sensitive_only, **sent},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return keys.response_cache(service, hashlib.sha256(canonical.encode()).hexdigest())

    def lookup(self, key: str, *, sensitive_route: bool) -> CachedAnswer | None:
        raw = self.connection.get(key)
        if raw is None:
            return None
        data = json.loads(raw)
        answer = CachedAnswer(**data)
        if answer.sensitive and not sensitive_route:
            return None  # never hand an answer produced on a sensitive route to a cloud route's caller
        return answer

    def store(
        self, pipe: Pipeline, key: str, step: RouteStep, completion: Completion, plan: Plan, ttl: int
    ) -> None:
        """Queued on the result's transaction; the text is stored as sent back (placeholders intact)."""
        answer = {
            "deployment": step.name,
            "text": completion.text,
            "provider_model": completion.provider_model,
            "finish_reason": completion.finish_reason,
            "sensitive": plan.sensitive_only,
            "tool_calls": [c.model_dump() for c in completion.tool_calls],
        }
        pipe.set(key, json.dumps(answer, separators=(",", ":"), ensure_ascii=False), ex=ttl)
