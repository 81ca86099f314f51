"""The serializer memo answers exactly as RQ's own resolve_serializer, and RQ's modules use it."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime

import pytest
import redis
from rq import serializers
from rq.job import Job
from rq.serializers import JSONSerializer

from gateway import rq_speedups


@pytest.mark.parametrize("given", [None, "json", "pickle", "rq.serializers.JSONSerializer", JSONSerializer])
def test_the_memo_resolves_as_rq_does(given: object) -> None:
    assert rq_speedups.resolve_serializer(given) is serializers.resolve_serializer(given)  # type: ignore[arg-type]
    assert rq_speedups.resolve_serializer(given) is rq_speedups.resolve_serializer(given)


def test_a_bad_serializer_is_refused_every_time_as_rq_refuses_it() -> None:
    class NoLoads:
        def dumps(self, obj: object) -> bytes:
            return b""

    for _ in range(2):
        with pytest.raises(NotImplementedError):
            rq_speedups.resolve_serializer(NoLoads())


def test_rq_builds_its_objects_with_the_memo_once_installed() -> None:
    rq_speedups.install()
    rq_speedups.install()  # idempotent
    for name in rq_speedups._MODULES:
        module = importlib.import_module(name)
        assert module.resolve_serializer is rq_speedups.resolve_serializer, name
    job = Job(serializer=JSONSerializer, connection=redis.Redis(port=1))  # connects on first command only
    assert job.serializer is JSONSerializer


@pytest.mark.parametrize(
    "value",
    [
        {"prompt": "héllo ✓", "n": [1, 2.5, None, True], "nested": {"a": {"b": []}}},
        {1: "an int key"},  # orjson refuses it; the stdlib writes it (as "1"), as RQ's serializer does
        [2**70, "an integer past 64 bits"],
        ("a", "tuple"),
    ],
    ids=["unicode", "int-key", "big-int", "tuple"],
)
def test_the_json_serializer_writes_what_rqs_reads_back_as_it_would_its_own(value: object) -> None:
    written = rq_speedups.JSONSerializer.dumps(value)
    assert JSONSerializer.loads(written) == JSONSerializer.loads(JSONSerializer.dumps(value))
    assert rq_speedups.JSONSerializer.loads(written) == JSONSerializer.loads(written)


def test_timestamps_parse_as_rq_parses_them() -> None:
    from rq.utils import utcformat, utcparse

    now = datetime.now(UTC)
    for written in (
        utcformat(now),
        utcformat(now.replace(microsecond=0)),
        now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    ):
        assert rq_speedups.utcparse(written) == utcparse(written)
        assert rq_speedups.utcparse(written).tzinfo == utcparse(written).tzinfo
    for bad in ("", "yesterday", utcformat(now).replace("T", " "), "2026-13-99T99:99:99.999999Z"):
        with pytest.raises(ValueError):
            utcparse(bad)
        with pytest.raises(ValueError):
            rq_speedups.utcparse(bad)
