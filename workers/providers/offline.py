"""The built-in offline provider: a deterministic, clearly labelled answer with no network and no key.

It lets a fresh install answer every job end to end; the text says what it is, and the request's
digest in it proves which request it answered. Token counts are estimates (about 4 chars each).
It honours every request shape so a keyless stack serves the drop-in endpoints too: it streams
(a word per delta), answers JSON mode with a JSON object, never calls a tool, and embeds with
deterministic unit vectors derived from each text's SHA-256 (equal texts, equal vectors; nothing
semantic about them).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Mapping

from gateway.chat import CHARS_PER_TOKEN, EmbeddingRequest, Embeddings, Emit, TextDelta, estimate_tokens
from gateway.config import Deployment
from workers.providers.base import Completion, CompletionRequest

LABEL = "[aigw offline provider]"
__all__ = ["LABEL", "OfflineProvider", "estimate_tokens"]
_PREVIEW_WORDS = 12
_PREVIEW_CHARS = 80
#: the size of an offline embedding when the request names none
EMBEDDING_DIMENSIONS = 256
_PIECES = re.compile(r"\S+\s*|\s+")


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
        fmt = request.response_format
        if fmt is not None and fmt.type != "text":
            # JSON mode: the same words as a JSON object (a schema's fields are not invented)
            text = json.dumps({"aigw_offline": text}, ensure_ascii=False)
        elif len(text) > limit:
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

    async def stream(self, request: CompletionRequest, emit: Emit) -> Completion:
        """The same answer as ``complete``, a word (with its trailing space) per delta."""
        completion = await self.complete(request)
        for piece in _PIECES.findall(completion.text):
            emit(TextDelta(piece))
        return completion

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        size = request.dimensions or EMBEDDING_DIMENSIONS
        return Embeddings(
            vectors=[_vector(text, size) for text in request.inputs],
            input_tokens=sum(estimate_tokens(text) for text in request.inputs),
            provider_model=self.deployment.model,
        )

    async def aclose(self) -> None:
        return None


def _vector(text: str, size: int) -> list[float]:
    """A unit vector of ``size`` floats from SHA-256 in counter mode over ``text``."""
    raw = bytearray()
    counter = 0
    while len(raw) < size * 4:
        raw += hashlib.sha256(counter.to_bytes(4, "big") + text.encode()).digest()
        counter += 1
    values = [(n / 0xFFFFFFFF) * 2 - 1 for n in struct.unpack(f">{size}I", bytes(raw[: size * 4]))]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]
