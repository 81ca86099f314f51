"""pydantic at the edges: ``Strict``, the base of every model aigw validates input with, and
``first_error``, the first problem of a failed validation in the words aigw's messages use; and
``LONE_SURROGATE``, the text no input or answer may carry into Redis.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

#: Half of a UTF-16 surrogate pair. JSON may carry one as an escape (``"\\ud800"``) and Python's
#: decoder keeps it (a whole pair it joins into one character, so whatever matches is alone);
#: such a string cannot be encoded as UTF-8, so it can be neither stored in Redis nor shown.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class Strict(BaseModel):
    """Unknown fields are an error (a typo never passes silently) and a parsed value never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Failed(Protocol):
    """pydantic's ValidationError, or FastAPI's RequestValidationError."""

    def errors(self) -> Sequence[Any]: ...


@dataclass(frozen=True)
class FirstError:
    #: where, as pydantic names it: ``("policies", 0, "limit_usd")``; empty at the top level
    loc: tuple[int | str, ...]
    #: pydantic's error type: ``extra_forbidden``, ``missing``, ``value_error``, ...
    kind: str
    #: pydantic's own message
    msg: str

    @property
    def where(self) -> str:
        """The location dotted: ``policies.0.limit_usd`` ("" at the top level)."""
        return ".".join(str(part) for part in self.loc)

    def message(self, *, unknown: str = "unknown field", missing: str | None = None) -> str:
        """aigw's words: a forbidden key is ``unknown``, a missing one ``missing`` (pydantic's own
        words when None), and a validator's message loses pydantic's "Value error, " prefix."""
        if self.kind == "extra_forbidden":
            return unknown
        if self.kind == "missing" and missing is not None:
            return missing
        return self.msg.removeprefix("Value error, ")


def first_error(exc: _Failed) -> FirstError:
    """The first error of ``exc`` (an empty one, message "invalid", when it lists none)."""
    errors = exc.errors()
    if not errors:
        return FirstError((), "", "invalid")
    first = errors[0]
    return FirstError(
        tuple(first.get("loc", ())), str(first.get("type", "")), str(first.get("msg", "invalid"))
    )
