"""The drop-in scenario: ``/v1/chat/completions`` beside the native job API and a direct call, in one run.

Three phases on one aigw: one client alternating direct / native / drop-in calls (added latency
p50 and p99 of each way in), 100 clients on each way in turn (jobs/s and CPU per job, to check the
drop-in costs at most 10% more CPU than the native API), and one client streaming (time to the
first content chunk, direct from the fake and through aigw's queue, relay and SSE re-encoding).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bench.httpload import Check, Connection, HttpError, LoadResult, Request, closed_loop, percentile
from bench.scenarios import (
    PROMPT,
    Ctx,
    _complete,
    _minus,
    aigw_ok,
    aigw_request,
    alternating,
    direct_ok,
    direct_request,
    fmt_ms,
    measure,
    row,
    stats,
)
from bench.stack import FAKE_MODEL, Aigw, alias_for


def dropin_request(aigw: Aigw, *, stream: bool = False) -> Request:
    body = {"model": alias_for(0), "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
    return Request.build(
        "POST", "/v1/chat/completions", aigw.port, json.dumps(body).encode(),
        {"Authorization": f"Bearer {aigw.token}"},
    )  # fmt: skip


def dropin_ok(status: int, body: bytes) -> bool:
    return status == 200 and b'"chat.completion"' in body


async def _first_chunk(port: int, request: Request, marker: bytes) -> float:
    """Seconds from sending ``request`` on a fresh connection until ``marker`` (the first content
    delta) arrives in the streamed body; the rest is read to the end and the connection closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        began = time.perf_counter()
        writer.write(request.raw)
        await writer.drain()
        seen = b""
        first: float | None = None
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            seen += chunk
            if first is None and marker in seen:
                first = time.perf_counter() - began
            if b"[DONE]" in seen or b'"done":true' in seen:
                break
        if first is None:
            raise HttpError(f"no content delta in the stream: {seen[:200]!r}")
        return first
    finally:
        writer.close()


async def _ttft(ways: list[tuple[int, Request, bytes]], n: int) -> list[list[float]]:
    out: list[list[float]] = [[] for _ in ways]
    for _ in range(n):
        for (port, request, marker), samples in zip(ways, out, strict=True):
            samples.append(await _first_chunk(port, request, marker))
    return out


def direct_stream_request(port: int) -> Request:
    body = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": PROMPT}], "stream": True,
            "max_tokens": 1024}  # fmt: skip
    return Request.build("POST", "/v1/chat/completions", port, json.dumps(body).encode(),
                         {"Authorization": "Bearer sk-bench-dummy-key"})  # fmt: skip


def dropin(ctx: Ctx) -> dict[str, Any]:
    n, clients, jobs, warmup, streams = (20, 20, 200, 20, 10) if ctx.quick else (300, 100, 3000, 300, 200)
    stack = ctx.stack
    port = stack.fake_port(0)
    with stack.aigw(concurrency=1000) as aigw:
        ways: list[tuple[Connection, Request, Check]] = [
            (Connection(port), direct_request(port), direct_ok),
            (Connection(aigw.port), aigw_request(aigw, 0), aigw_ok),
            (Connection(aigw.port), dropin_request(aigw), dropin_ok),
        ]
        ctx.log(f"one client: warm-up, then {n} rounds of direct / native / drop-in")
        ctx.run(alternating(ways, warmup // 5 or 1, 60))
        d, native1, compat1 = ctx.run(alternating(ways, n, 180))
        for connection, _request, _check in ways:
            ctx.run(connection.close())

        loads: dict[str, tuple[LoadResult, dict[str, Any]]] = {}
        for name, request, check in (("native", aigw_request(aigw, 0), aigw_ok),
                                     ("drop-in", dropin_request(aigw), dropin_ok)):  # fmt: skip
            ctx.log(f"{clients} clients: {name}, warm-up {warmup}, then {jobs} jobs")
            ctx.run(
                closed_loop(aigw.port, clients, warmup, request, check, deadline_s=60, request_timeout_s=35)
            )
            with measure(ctx, aigw, f"dropin-{name}") as usage:
                result = ctx.run(
                    closed_loop(
                        aigw.port, clients, jobs, request, check, deadline_s=120, request_timeout_s=35
                    )
                )
            usage.jobs = result.ok
            loads[name] = (result, usage.to_dict())

        ctx.log(f"time to first token: {streams} streams direct and through aigw, alternating")
        ttft_ways = [(port, direct_stream_request(port), b"echo"),
                     (aigw.port, dropin_request(aigw, stream=True), b"echo")]  # fmt: skip
        ctx.run(_ttft(ttft_ways, 3))
        direct_ttft, aigw_ttft = ctx.run(_ttft(ttft_ways, streams))
        aigw.check_alive()

    ds, ns, cs = stats(d), stats(native1), stats(compat1)
    native_load, native_usage = loads["native"]
    compat_load, compat_usage = loads["drop-in"]

    def cpu_per_job(usage: dict[str, Any]) -> float:
        per = usage["cpu_ms_per_job"]
        return float(per["api"] + per["workers"] + per["redis"])

    native_cpu, compat_cpu = cpu_per_job(native_usage), cpu_per_job(compat_usage)
    ratio = compat_cpu / native_cpu if native_cpu else None
    t50 = {k: percentile(v, 50) for k, v in (("direct", direct_ttft), ("aigw", aigw_ttft))}
    ttft_added = None if None in t50.values() else round(1000 * (t50["aigw"] - t50["direct"]), 3)  # type: ignore[operator]
    ok = _complete(d, native1, compat1, native_load, compat_load)
    add = {
        "native": {"p50": _minus(ns["p50_ms"], ds["p50_ms"]), "p99": _minus(ns["p99_ms"], ds["p99_ms"])},
        "drop-in": {"p50": _minus(cs["p50_ms"], ds["p50_ms"]), "p99": _minus(cs["p99_ms"], ds["p99_ms"])},
    }
    throughput = {k: round(v[0].throughput, 1) for k, v in loads.items()}
    return {
        "params": {"rounds": n, "clients": clients, "jobs": jobs, "warmup": warmup, "streams": streams},
        "direct": ds,
        "native": ns,
        "dropin": cs,
        "added_ms": add,
        "throughput_per_s": throughput,
        "cpu_ms_per_job": {"native": round(native_cpu, 3), "drop-in": round(compat_cpu, 3)},
        "ttft_ms": {k: None if v is None else round(v * 1000, 3) for k, v in t50.items()},
        "rows": [
            row(
                "added p50, native / drop-in",
                "—",
                fmt_ms(ds["p50_ms"]),
                f"{fmt_ms(ns['p50_ms'])} / {fmt_ms(cs['p50_ms'])}",
                f"{fmt_ms(add['native']['p50'])} / {fmt_ms(add['drop-in']['p50'])}",
                None,
            ),
            row(
                "added p99, native / drop-in",
                "—",
                fmt_ms(ds["p99_ms"]),
                f"{fmt_ms(ns['p99_ms'])} / {fmt_ms(cs['p99_ms'])}",
                f"{fmt_ms(add['native']['p99'])} / {fmt_ms(add['drop-in']['p99'])}",
                None,
            ),
            row(
                f"jobs/s at {clients} clients, native / drop-in",
                "—",
                "",
                f"{throughput['native']:,.0f} / {throughput['drop-in']:,.0f}",
                "",
                None,
            ),
            row(
                "CPU per job (API+workers+Redis), drop-in vs native",
                "≤ 1.10 ×",
                "",
                f"{native_cpu:.2f} / {compat_cpu:.2f} ms",
                "—" if ratio is None else f"{ratio:.2f} ×",
                ok and ratio is not None and ratio <= 1.10,
            ),
            row(
                "time to first token added, streamed",
                "≤ 5 ms",
                fmt_ms(None if t50["direct"] is None else t50["direct"] * 1000),
                fmt_ms(None if t50["aigw"] is None else t50["aigw"] * 1000),
                fmt_ms(ttft_added),
                ok and ttft_added is not None and ttft_added <= 5,
            ),
        ],  # fmt: skip
        "usage": compat_usage,
        "native_usage": native_usage,
    }


#: registered in bench/run.py beside the scenarios of bench/scenarios.py
SCENARIO = ("drop-in /v1/chat/completions beside the native API and a direct call", dropin, (0.0,))
