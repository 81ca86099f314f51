"""The hash chain of ``audit.log``: each line carries the previous line's hash.

Each line is a JSON object whose ``prev`` is the previous line's ``hash`` and whose ``hash`` is the
SHA-256 of the canonical JSON of the line without ``hash``. An edited line fails its own hash; a
deleted, inserted or reordered line breaks the next ``prev``. Cutting lines off the end of the
file is not detectable from the file alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

#: ``prev`` of the first line of a file.
GENESIS_HASH = "0" * 64


def canonical_json(value: object) -> bytes:
    """Sorted keys, no spaces, UTF-8, no NaN: the bytes every hash in the audit path is taken over."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_jsonable
    ).encode("utf-8")


def _jsonable(value: object) -> object:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def line_hash(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def seal(record: Mapping[str, Any], prev: str) -> dict[str, Any]:
    """The record with ``prev`` and ``hash`` added, ready to be written as the next line."""
    sealed = {**record, "prev": prev}
    sealed["hash"] = line_hash(sealed)
    return sealed


def encode_line(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode() + b"\n"
