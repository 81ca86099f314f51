"""Request bodies: bytes to the contract's pydantic models, with errors the envelope can show.

Routes read the body themselves (not a FastAPI body parameter) so a size limit is enforced
before parsing and a validation error names the first field in aigw's own words.
"""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from gateway.errors import BadJsonError, PayloadTooLargeError, ValidationError
from gateway.jobs import JobRequest
from gateway.validation import first_error

_Body = TypeVar("_Body", bound=BaseModel)


def parse_job_request(body: bytes, max_chars: int) -> JobRequest:
    limit = max_chars * 4 + 65_536  # a character is up to 4 bytes; refuse before parsing
    if len(body) > limit:
        raise PayloadTooLargeError(f"request body of {len(body)} bytes is over the limit of {limit} bytes")
    job_request = parse_model(body, JobRequest)
    if (size := job_request.size_chars()) > max_chars:
        raise PayloadTooLargeError(f"prompt is {size} characters; the limit is {max_chars}")
    return job_request


def parse_model(body: bytes, model: type[_Body]) -> _Body:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise BadJsonError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationError("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        first = first_error(exc)
        raise ValidationError(f"{first.where or 'body'}: {first.message()}") from None
