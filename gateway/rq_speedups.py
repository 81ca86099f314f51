"""One measured fix to RQ's hot path, installed by the API and the workers at start.

RQ resolves the serializer of every ``Job``, ``Result`` and registry object it builds, and its
check is ``isinstance(serializer, Serializer)`` against a runtime-checkable ``Protocol``, which
Python 3.11 answers by walking the protocol's attributes each time: about 8 µs, five or six times
per job, 5 % of a worker's CPU at 100 clients (docs/benchmarks.md). ``install`` makes RQ's modules
use a memo of the same function: a serializer is resolved once, and every later answer is the one
RQ's own function gave. The modules keep every other behaviour; a serializer that cannot be a
dictionary key (an unhashable instance) is resolved by RQ's function each time, as before.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from rq import serializers

#: RQ's modules that imported ``resolve_serializer`` by name (RQ 3.x)
_MODULES = ("rq.job", "rq.queue", "rq.registry", "rq.results", "rq.scheduler", "rq.cron", "rq.worker.base")

_resolve = serializers.resolve_serializer


@functools.lru_cache(maxsize=64)
def _memo(serializer: Any) -> serializers.Serializer:
    return _resolve(serializer)


def resolve_serializer(serializer: Any = None) -> serializers.Serializer:
    """RQ's ``resolve_serializer``, remembered per serializer."""
    try:
        return _memo(serializer)
    except TypeError:  # unhashable: nothing to remember it by
        return _resolve(serializer)


def install() -> None:
    """Point RQ's modules at the memo (idempotent; a module RQ no longer has is skipped)."""
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "resolve_serializer", None) is _resolve:
            module.resolve_serializer = resolve_serializer  # type: ignore[attr-defined]
