"""Which audit lines a reader wants: ``--since`` read as a duration or a time, and the filter of
``aigw audit tail`` (service, model, status, since)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from gateway.audit.event import Status

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"(\d+)([smhdw])")
STATUSES: tuple[str, ...] = get_args(Status)


def parse_since(text: str, now: datetime) -> datetime:
    """``30m``, ``1h``, ``7d``, ``2w`` (before ``now``) or an ISO time (without a zone: UTC).

    A bad value raises ``ValueError`` with a message that can be shown as is.
    """
    value = text.strip()
    if match := _DURATION.fullmatch(value):
        amount, unit = int(match.group(1)), match.group(2)
        try:
            return now - timedelta(**{_UNITS[unit]: amount})
        except OverflowError:
            raise ValueError(f"--since {text!r} reaches back before the year 1") from None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a duration (30m, 1h, 7d, 2w) or an ISO time (2025-01-31T12:00Z)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def line_time(line: Mapping[str, Any]) -> datetime:
    """The ``time`` of a line (always UTC with a ``Z``, written by :class:`AuditEvent`)."""
    return datetime.fromisoformat(str(line["time"]))


@dataclass(frozen=True)
class LineFilter:
    """The lines ``aigw audit tail`` shows; a field left ``None`` matches everything."""

    service: str | None = None
    model: str | None = None
    status: str | None = None
    since: datetime | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"--status {self.status!r}: one of {', '.join(STATUSES)}")

    def __call__(self, line: Mapping[str, Any]) -> bool:
        return (
            (self.service is None or line.get("service") == self.service)
            and (self.model is None or line.get("model") == self.model)
            and (self.status is None or line.get("status") == self.status)
            and (self.since is None or line_time(line) >= self.since)
        )
