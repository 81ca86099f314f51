"""Request bodies: bytes to the contract's pydantic models, with errors the envelope can show.

Routes read the body themselves (not a FastAPI body parameter) so the size limit is enforced
while reading, and a validation error names the first field in aigw's own words.

Bad input stops here, as a 4xx, before anything is enqueued: a ``Content-Length`` over the
limit is refused before a byte is read, and a body without one (chunked) is refused as soon as
it passes the limit, so no body larger than the limit is ever held in memory. A body must also
arrive in full within ``api.body_timeout_seconds`` (408), so a stalled sender holds its part of a
body that long at most. JSON nested past
``MAX_DEPTH`` (or past the parser's own recursion limit), ``NaN`` and ``Infinity`` are not
JSON aigw accepts (400). A string with an unpaired surrogate anywhere, key or value, cannot be
encoded as UTF-8 and so cannot be stored, sent to a model or audited: it is a 422 naming where.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import Request

from gateway.config import ApiConfig
from gateway.errors import BadJsonError, PayloadTooLargeError, RequestTimeoutError, ValidationError
from gateway.jobs import JobRequest
from gateway.validation import LONE_SURROGATE, first_error

_Body = TypeVar("_Body", bound=BaseModel)

#: The deepest nesting of arrays and objects a body may have; a skill's inputs need far less.
MAX_DEPTH = 64
#: The bytes a review body may take: a decision and a comment of at most 2,000 characters.
REVIEW_BODY_LIMIT = 16_384

_Path = tuple[str | int, ...]


#: what images (base64, in the body) may add to a drop-in body beyond its text: a few photos
IMAGE_ALLOWANCE = 20 * 1024 * 1024


def job_body_limit(max_chars: int, *, images: bool = False) -> int:
    """The bytes a job body may take: ``max_chars`` characters of up to 4 bytes, plus the rest,
    plus ``IMAGE_ALLOWANCE`` where a body may carry images (the drop-in chat routes)."""
    return max_chars * 4 + 65_536 + (IMAGE_ALLOWANCE if images else 0)


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request's body, refused (413) once it is declared or found to be over ``limit`` bytes,
    or (408) when it has not all arrived ``timeout`` seconds after the first read began."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body of {declared} bytes is over the limit of {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise PayloadTooLargeError(f"request body is over the limit of {limit} bytes")
    except TimeoutError:
        raise RequestTimeoutError(
            f"request body did not arrive within {timeout:g} s ({len(body)} bytes came)"
        ) from None
    return bytes(body)


def parse_job_request(body: bytes, max_chars: int) -> JobRequest:
    job_request = parse_model(body, JobRequest)
    check_size(job_request, max_chars)
    return job_request


async def read_json(request: Request, api: ApiConfig) -> Any:
    """A drop-in chat body, read within the limits (images allowed) and parsed by ``parse_json``."""
    limit = job_body_limit(api.max_prompt_chars, images=True)
    return parse_json(await read_body(request, limit, api.body_timeout_seconds))


def parse_json(body: bytes) -> Any:
    """A drop-in body: strict JSON (400 otherwise) without unpaired surrogates (422)."""
    data = load_json(body)
    refuse_surrogates(data)
    return data


def check_size(job_request: JobRequest, max_chars: int) -> None:
    if (size := job_request.size_chars()) > max_chars:
        raise PayloadTooLargeError(f"prompt is {size} characters; the limit is {max_chars}")


def parse_model(body: bytes, model: type[_Body]) -> _Body:
    data = load_json(body)
    if not isinstance(data, dict):
        raise ValidationError("request body must be a JSON object")
    refuse_surrogates(data)
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        first = first_error(exc)
        raise ValidationError(f"{first.where or 'body'}: {first.message()}") from None


def load_json(body: bytes) -> Any:
    """``body`` parsed as strict JSON no deeper than ``MAX_DEPTH``, else a BadJsonError (400)."""
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadJsonError(f"request body is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:
        raise BadJsonError(f"request body is not valid JSON: {exc}") from None
    if _depth(data) > MAX_DEPTH:
        raise BadJsonError(f"request body is nested more than {MAX_DEPTH} levels deep")
    return data


def refuse_surrogates(data: Any) -> None:
    """A ValidationError (422) naming the first key or string value with an unpaired surrogate."""
    for path, text, is_key in _strings(data):
        if found := LONE_SURROGATE.search(text):
            where = ".".join(str(part) for part in path) or "body"
            what = "a key contains" if is_key else "contains"
            raise ValidationError(f"{where}: {what} an unpaired surrogate (\\u{ord(found.group()):04x})")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _depth(data: Any) -> int:
    """How deeply arrays and objects nest in ``data`` (0 for a scalar), without recursing."""
    deepest, stack = 0, [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, depth + 1)
            stack.extend((item, depth + 1) for item in _children(value))
    return deepest


def _strings(data: Any) -> Iterator[tuple[_Path, str, bool]]:
    """Every key and string value in ``data`` in document order: ``(where, text, is_key)``."""
    stack: list[tuple[_Path, Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            yield path, value, False
        elif isinstance(value, dict):
            for key in value:
                yield path, key, True
            stack.extend(reversed([((*path, key), item) for key, item in value.items()]))
        elif isinstance(value, list):
            stack.extend(reversed([((*path, index), item) for index, item in enumerate(value)]))


def _children(value: dict[str, Any] | list[Any]) -> Iterator[Any]:
    return iter(value.values()) if isinstance(value, dict) else iter(value)
