"""The built-in offline provider: a deterministic, clearly labelled answer with no network and no key.

It lets a fresh install answer every job end to end; the text says what it is, and the request's
digest in it proves which request it answered. Token counts are estimates (about 4 chars each).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from gateway.config import Deployment
from workers.providers.base import Completion, CompletionRequest

LABEL = "[aigw offline provider]"
CHARS_PER_TOKEN = 4
_PREVIEW_WORDS = 12
_PREVIEW_CHARS = 80


def estimate_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: about one token per 4 characters, at least 1."""
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def request_digest(request: CompletionRequest) -> str:
    """sha256 of the conversation (roles and contents), stable across processes."""
    canonical = json.dumps([[m.role, m.text] for m in request.messages], ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _preview(request: CompletionRequest) -> str:
    users = [m for m in request.messages if m.role == "user"] or request.messages
    words = users[-1].text.split() if users else []
    preview = " ".join(words[:_PREVIEW_WORDS])
    if len(preview) > _PREVIEW_CHARS:
        preview = preview[: _PREVIEW_CHARS - 3] + "..."
    elif len(words) > _PREVIEW_WORDS:
        preview += " ..."
    return preview


class OfflineProvider:
    kind: str = "offline"

    def __init__(
        self,
        name: str,
        deployment: Deployment,
        environ: Mapping[str, str] | None = None,
        *,
        max_retry_after: float = 0.0,
        max_response_bytes: int = 0,
    ) -> None:
        """``environ``, ``max_retry_after`` and ``max_response_bytes`` are accepted like every
        provider kind's; the offline provider has no key, is never rate limited and reads no answer."""
        self.name = name
        self.deployment = deployment

    def unavailable_reason(self) -> str | None:
        return None

    async def complete(self, request: CompletionRequest) -> Completion:
        text = (
            f"{LABEL} No model was called; this is a deterministic placeholder answer. "
            f"Request sha256:{request_digest(request)[:16]}, {len(request.messages)} message(s); "
            f'the last user message begins: "{_preview(request)}"'
        )
        finish_reason = "stop"
        limit = request.max_tokens * CHARS_PER_TOKEN
        if len(text) > limit:
            # Same contract as a real provider that hits max_tokens: cut short, say so.
            text, finish_reason = text[:limit], "length"
        return Completion(
            text=text,
            input_tokens=estimate_tokens("".join(m.text for m in request.messages)),
            output_tokens=estimate_tokens(text),
            provider_model=self.deployment.model,
            finish_reason=finish_reason,
            extra={"offline": "true"},
        )

    async def aclose(self) -> None:
        return None
