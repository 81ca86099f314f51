"""gateway/job_stream.py on a real Redis: what a worker appends is what the API reads, in order."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis

from gateway import keys
from gateway.chat import TextDelta, ToolCallDelta
from gateway.job_stream import STREAM_TTL, StreamReader, StreamWriter


async def _read_all(url: str, job_id: str, until: str) -> list[dict[str, Any]]:
    reader = StreamReader(url)
    seen: list[dict[str, Any]] = []
    try:
        async for event in reader.events(job_id, poll=0.2, deadline=time.monotonic() + 10):
            if event is None:
                continue
            seen.append(event)
            if event["type"] == until:
                break
    finally:
        await reader.aclose()
    return seen


def test_a_stream_reads_back_in_order_with_its_end_in_the_result_transaction(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async def scenario() -> list[dict[str, Any]]:
        writer = StreamWriter(redis_client, "job-1")
        writer.begin({"model": "general"})
        writer.delta(TextDelta("a"))  # the first delta goes at once...
        assert redis_client.xlen(keys.job_stream("job-1")) == 1
        writer.delta(TextDelta("b"))  # ...later ones are batched
        writer.delta(ToolCallDelta(0, "c1", "f", '{"x"'))
        writer.delta(ToolCallDelta(0, arguments=": 1}"))
        await asyncio.sleep(0.05)  # the flush timer fires
        with redis_client.pipeline() as pipe:
            writer.end(pipe, {"finish_reason": "stop"})
            pipe.execute()
        return await _read_all(redis_url, "job-1", until="end")

    events = asyncio.run(scenario())
    assert [e["type"] for e in events] == ["start", "text", "text", "tool_call", "tool_call", "end"]
    assert "".join(e.get("text", "") for e in events) == "ab"
    assert events[3] == {"type": "tool_call", "index": 0, "id": "c1", "name": "f", "arguments": '{"x"'}
    assert redis_client.xlen(keys.job_stream("job-1")) == 3  # three round trips for six events
    assert 0 < redis_client.ttl(keys.job_stream("job-1")) <= STREAM_TTL


def test_a_failure_before_the_first_delta_is_silent_until_it_is_final(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async def scenario() -> list[dict[str, Any]]:
        writer = StreamWriter(redis_client, "job-2")
        writer.error({"type": "provider_unavailable", "message": "503"}, final=False)  # a retry follows
        assert redis_client.exists(keys.job_stream("job-2")) == 0
        writer.error({"type": "provider_unavailable", "message": "503"}, final=True)
        return await _read_all(redis_url, "job-2", until="error")

    events = asyncio.run(scenario())
    assert events == [{"type": "error", "error": {"type": "provider_unavailable", "message": "503"}}]
