"""The serializer memo answers exactly as RQ's own resolve_serializer, and RQ's modules use it."""

from __future__ import annotations

import importlib

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
