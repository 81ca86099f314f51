"""Measured fixes to RQ's hot path: a faster writer of its JSON format, and two memos that
``install`` (called by the API and the workers at start) puts in RQ's modules.

**JSONSerializer**: RQ's JSON format (``rq.serializers.JSONSerializer`` reads it, so stock ``rq``
tooling with ``--serializer json`` does too), written by orjson: compact, UTF-8, a tenth of the
stdlib's time for a job's data. What orjson refuses and the stdlib takes (a non-string key, an
integer past 64 bits) is written by the stdlib, as before; reading stays the stdlib's, so nothing
read ever changes type.

**Serializer memo**: RQ resolves the serializer of every ``Job``, ``Result`` and registry object
it builds, checking ``isinstance(serializer, Serializer)`` against a runtime-checkable
``Protocol``, which Python 3.11 answers by walking the protocol's attributes each time: about
8 µs, five or six times per job, 5 % of a worker's CPU at 100 clients (docs/benchmarks.md).
``install`` makes RQ's modules use a memo of the same function: a serializer is resolved once,
and every later answer is the one RQ's own function gave. A serializer that cannot be a
dictionary key (an unhashable instance) is resolved by RQ's function each time, as before.

**Timestamp parser**: RQ parses each of a job's timestamps with ``strptime`` (12 µs, eight of
them per job read); the timestamps RQ writes, and only those, are parsed by ``fromisoformat``.
Anything else goes to RQ's own function, which accepts or refuses it as it always has.
"""

from __future__ import annotations

import datetime
import functools
import importlib
import json
from typing import Any

import orjson
from rq import serializers, utils

#: RQ's modules that imported ``resolve_serializer`` by name (RQ 3.x)
_MODULES = ("rq.job", "rq.queue", "rq.registry", "rq.results", "rq.scheduler", "rq.cron", "rq.worker.base")

_resolve = serializers.resolve_serializer
_utcparse = utils.utcparse


class JSONSerializer:
    """RQ's JSON format, written by orjson (see the module's docstring)."""

    @staticmethod
    def dumps(obj: Any) -> bytes:
        try:
            return orjson.dumps(obj)
        except TypeError:  # a non-string key, an integer past 64 bits: the stdlib writes those
            return json.dumps(obj).encode()

    @staticmethod
    def loads(data: bytes) -> Any:
        return json.loads(data)


@functools.lru_cache(maxsize=64)
def _memo(serializer: Any) -> serializers.Serializer:
    return _resolve(serializer)


def resolve_serializer(serializer: Any = None) -> serializers.Serializer:
    """RQ's ``resolve_serializer``, remembered per serializer."""
    try:
        return _memo(serializer)
    except TypeError:  # unhashable: nothing to remember it by
        return _resolve(serializer)


def utcparse(string: str) -> datetime.datetime:
    """RQ's ``utcparse``: the shape RQ writes (``2026-01-31T12:00:00.123456Z``) by ``fromisoformat``."""
    if (
        len(string) == 27
        and string[26] == "Z"
        and string[10] == "T"
        and string[19] == "."
        and string[4] == string[7] == "-"
        and string[13] == string[16] == ":"
        and string.isascii()
    ):
        try:
            return datetime.datetime.fromisoformat(string)  # aware, UTC (the Z)
        except ValueError:
            pass
    return _utcparse(string)


def install() -> None:
    """Point RQ's modules at the memos (idempotent; a module RQ no longer has is skipped)."""
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "resolve_serializer", None) is _resolve:
            module.resolve_serializer = resolve_serializer  # type: ignore[attr-defined]
    for name in ("rq.utils", "rq.scheduler"):  # str_to_date calls rq.utils.utcparse
        module = importlib.import_module(name)
        if getattr(module, "utcparse", None) is _utcparse:
            module.utcparse = utcparse  # type: ignore[attr-defined]
