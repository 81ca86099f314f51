"""The five scenarios of issue 3: each measures direct calls to the fake and the same calls via aigw.

A scenario returns a plain dict (the JSON result): parameters, both sides' figures, the rows
compared with the targets, and what the aigw processes used (CPU, RSS, Redis commands).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aredis
from rq.registry import FailedJobRegistry, FinishedJobRegistry

from bench import redistrace
from bench.httpload import Check, Connection, HttpError, LoadResult, Request, closed_loop, percentile
from bench.procs import (
    RssSampler,
    context_switches,
    cpu_seconds,
    machine_cpu,
    rss_bytes,
    self_cpu_seconds,
)
from bench.profile import Profiler
from bench.stack import FAKE_MODEL, QUEUE, Aigw, BenchStack, alias_for

T = TypeVar("T")
PROMPT = "Summarise the benchmark in one sentence, please."
MB = 1024 * 1024


# --- requests and checks -------------------------------------------------------------------------


def direct_request(port: int) -> Request:
    body = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 1024}
    headers = {"Authorization": "Bearer sk-bench-dummy-key"}
    return Request.build("POST", "/v1/chat/completions", port, json.dumps(body).encode(), headers)


def aigw_request(aigw: Aigw, latency: float, wait: float | None = 30) -> Request:
    body = json.dumps({"prompt": PROMPT, "model": alias_for(latency)}).encode()
    target = "/v1/jobs" if wait is None else f"/v1/jobs?wait={wait:g}"
    return Request.build("POST", target, aigw.port, body, {"Authorization": f"Bearer {aigw.token}"})


def direct_ok(status: int, body: bytes) -> bool:
    return status == 200 and b'"choices"' in body


def aigw_ok(status: int, body: bytes) -> bool:
    """200 with status succeeded (compact JSON is searched first; anything else is parsed)."""
    if status != 200:
        return False
    if b'"status":"succeeded"' in body:
        return True
    with contextlib.suppress(ValueError):
        return bool(json.loads(body).get("status") == "succeeded")
    return False


def accepted(status: int, body: bytes) -> bool:
    return status == 202 and b'"id"' in body


# --- context and resource accounting -------------------------------------------------------------


@dataclass
class Ctx:
    """What every scenario gets from the CLI."""

    stack: BenchStack
    runner: asyncio.Runner
    quick: bool
    log: Callable[[str], None]
    profile_dir: Path | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)


@dataclass
class Usage:
    """Filled in when a ``measure`` block ends."""

    jobs: int = 0
    wall_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    redis_calls: dict[str, int] = field(default_factory=dict)
    redis_reads: int = 0
    #: whole machine: busy and steal CPU seconds, and busy seconds of processes not ours
    machine: dict[str, float] = field(default_factory=dict)
    #: voluntary context switches of the API and the workers (times they blocked)
    switches: dict[str, int] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    #: the same figures for the direct phase (fake and harness only)
    direct: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        per_job = self.jobs or 1
        calls = sum(self.redis_calls.values())
        return {
            "jobs": self.jobs,
            "wall_s": round(self.wall_s, 3),
            "cpu_s": {k: round(v, 3) for k, v in self.cpu_s.items()},
            "cpu_ms_per_job": {k: round(1000 * v / per_job, 3) for k, v in self.cpu_s.items()},
            "cpu_util_pct": {k: round(100 * v / self.wall_s, 1) for k, v in self.cpu_s.items()}
            if self.wall_s
            else {},
            "machine_cpu_s": {k: round(v, 2) for k, v in self.machine.items()},
            "peak_rss_mb": self.peak_rss_mb,
            "blocking_waits_per_job": {k: round(v / per_job, 2) for k, v in self.switches.items()},
            "redis": {
                "commands_per_job": round(calls / per_job, 2),
                "socket_reads_per_job": round(self.redis_reads / per_job, 2),
                "by_command_per_job": {
                    k: round(v / per_job, 2)
                    for k, v in sorted(self.redis_calls.items(), key=lambda kv: -kv[1])
                },
            },
            **({"direct_phase": self.direct} if self.direct else {}),
            **({"profile": self.profile} if self.profile else {}),
        }


def _cpu_snapshot(ctx: Ctx, aigw: Aigw) -> dict[str, float]:
    return {
        "api": cpu_seconds(aigw.api.pid),
        "workers": sum(cpu_seconds(w.pid) for w in aigw.workers),
        "redis": cpu_seconds(ctx.stack.redis_pid),
        "fake": sum(cpu_seconds(pid) for pid in ctx.stack.fake_pids()),
        "harness": self_cpu_seconds(),
    }


def _switches(aigw: Aigw) -> dict[str, int]:
    return {
        "api": context_switches(aigw.api.pid),
        "workers": sum(context_switches(w.pid) for w in aigw.workers),
    }


def _redis_counters(ctx: Ctx) -> tuple[dict[str, int], int]:
    connection = ctx.stack.redis()
    try:
        stats = connection.info("commandstats")
        reads = int(connection.info("stats")["total_reads_processed"])
    finally:
        connection.close()
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    return calls, reads


@contextlib.contextmanager
def measure(ctx: Ctx, aigw: Aigw, tag: str, *, profile: bool = True) -> Iterator[Usage]:
    """CPU, peak RSS, Redis commands (and a py-spy profile with --profile) over an aigw phase."""
    usage = Usage()
    calls_before, reads_before = _redis_counters(ctx)
    cpu_before = _cpu_snapshot(ctx, aigw)
    switches_before = _switches(aigw)
    busy_before, steal_before = machine_cpu()
    pids = {"api": [aigw.api.pid], "workers": [w.pid for w in aigw.workers]}
    profiler = None
    if profile and ctx.profile_dir is not None:
        targets = {"api": aigw.api.pid} | {f"worker{i}": w.pid for i, w in enumerate(aigw.workers)}
        profiler = Profiler(targets, ctx.profile_dir, tag)
    started = time.perf_counter()
    with RssSampler([pid for group in pids.values() for pid in group]) as sampler:
        with profiler if profiler is not None else contextlib.nullcontext():
            yield usage
        usage.wall_s = time.perf_counter() - started
    cpu_after = _cpu_snapshot(ctx, aigw)
    usage.cpu_s = {k: cpu_after[k] - cpu_before[k] for k in cpu_before}
    switches_after = _switches(aigw)
    busy_after, steal_after = machine_cpu()
    busy = busy_after - busy_before
    usage.machine = {
        "busy": busy,
        "steal": steal_after - steal_before,
        "not_ours": max(0.0, busy - sum(usage.cpu_s.values())),
    }
    usage.switches = {k: switches_after[k] - switches_before[k] for k in switches_before}
    calls_after, reads_after = _redis_counters(ctx)
    usage.redis_calls = {
        k: v - calls_before.get(k, 0)
        for k, v in calls_after.items()
        if v - calls_before.get(k, 0) > 0 and k != "info"
    }
    usage.redis_reads = reads_after - reads_before - 2  # our own two INFO calls
    usage.peak_rss_mb = {
        "api": round(sum(sampler.peak_by_pid[p] for p in pids["api"]) / MB, 1),
        "workers": round(sum(sampler.peak_by_pid[p] for p in pids["workers"]) / MB, 1),
        "total": round(sampler.peak_total / MB, 1),
    }
    if profiler is not None:
        usage.profile = profiler.summaries()


@contextlib.contextmanager
def measure_direct(ctx: Ctx) -> Iterator[dict[str, Any]]:
    """CPU of the fake and of the harness over a direct phase; filled in when the block ends."""
    out: dict[str, Any] = {}
    fake_before, harness_before = sum(cpu_seconds(p) for p in ctx.stack.fake_pids()), self_cpu_seconds()
    busy_before, _steal = machine_cpu()
    yield out
    fake = sum(cpu_seconds(p) for p in ctx.stack.fake_pids()) - fake_before
    harness = self_cpu_seconds() - harness_before
    busy = machine_cpu()[0] - busy_before
    requests = max(int(out.get("requests", 0)), 1)
    out.update(
        cpu_ms_per_request={
            "fake": round(1000 * fake / requests, 3),
            "harness": round(1000 * harness / requests, 3),
        },
        machine_busy_not_ours_s=round(max(0.0, busy - fake - harness), 2),
    )


# --- figures --------------------------------------------------------------------------------------


def stats(result: LoadResult) -> dict[str, Any]:
    lat = result.latencies
    ms = {f"p{q}_ms": _ms(percentile(lat, q)) for q in (50, 90, 99)}
    return {
        "ok": result.ok,
        "failed": result.failed,
        "errors": dict(result.errors),
        **({"failure_samples": result.failure_samples} if result.failure_samples else {}),
        "timed_out": result.timed_out,
        "wall_s": round(result.wall_s, 3),
        "throughput_per_s": round(result.throughput, 1),
        **ms,
        "mean_ms": _ms(sum(lat) / len(lat)) if lat else None,
        "max_ms": _ms(max(lat)) if lat else None,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def row(measure: str, target: str, direct: str, aigw: str, measured: str, met: bool | None) -> dict[str, Any]:
    return {"measure": measure, "target": target, "direct": direct, "aigw": aigw, "measured": measured,
            "met": met}  # fmt: skip


def fmt_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} ms" if value < 100 else f"{value:.0f} ms"


def _complete(*results: LoadResult) -> bool:
    """Every request of every phase answered correctly and in time (a target needs this)."""
    return all(r.failed == 0 and not r.timed_out and r.ok > 0 for r in results)


def _le(value: float | None, limit: float) -> bool:
    return value is not None and value <= limit


# --- scenario 1: one client, added latency --------------------------------------------------------


async def _sequential_pairs(
    direct: tuple[Connection, Request], aigw: tuple[Connection, Request], n: int, deadline_s: float
) -> tuple[LoadResult, LoadResult]:
    """Direct and aigw calls alternately, one at a time, so both see the same machine state."""
    d, a = await alternating([(*direct, direct_ok), (*aigw, aigw_ok)], n, deadline_s)
    return d, a


async def alternating(
    ways: list[tuple[Connection, Request, Check]], n: int, deadline_s: float
) -> list[LoadResult]:
    """Each way once per round, one request at a time, so all see the same machine state."""
    results = [LoadResult() for _ in ways]
    started = time.perf_counter()
    for _ in range(n):
        if time.perf_counter() - started > deadline_s:
            for result in results:
                result.timed_out = True
            break
        for (connection, request, check), result in zip(ways, results, strict=True):
            began = time.perf_counter()
            try:
                async with asyncio.timeout(35):
                    status, body = await connection.send(request)
            except (OSError, HttpError, TimeoutError, ValueError) as exc:
                result.failed += 1
                result.errors[type(exc).__name__] += 1
                continue
            elapsed = time.perf_counter() - began
            result.wall_s += elapsed
            if check(status, body):
                result.ok += 1
                result.latencies.append(elapsed)
            else:
                result.failed_answer(status, body)
    return results


def latency(ctx: Ctx) -> dict[str, Any]:
    n, warmup, trace_jobs = (20, 5, 10) if ctx.quick else (500, 50, 100)
    stack = ctx.stack
    with stack.aigw(concurrency=1000) as aigw:
        direct = (Connection(stack.fake_port(0)), direct_request(stack.fake_port(0)))
        via = (Connection(aigw.port), aigw_request(aigw, 0))
        ctx.log(f"warm-up: {warmup} pairs")
        ctx.run(_sequential_pairs(direct, via, warmup, 60))
        ctx.log(f"measuring: {n} direct and {n} aigw requests, alternating")
        with measure(ctx, aigw, "latency") as usage:
            d, a = ctx.run(_sequential_pairs(direct, via, n, 120))
        usage.jobs = a.ok
        ctx.run(direct[0].close())
        ctx.run(via[0].close())
        ctx.log(f"tracing Redis (MONITOR) over {trace_jobs} more sequential jobs")
        trace = trace_redis(ctx, aigw, trace_jobs)
    ds, as_ = stats(d), stats(a)
    add50 = _minus(as_["p50_ms"], ds["p50_ms"])
    add99 = _minus(as_["p99_ms"], ds["p99_ms"])
    ok = _complete(d, a)
    return {
        "params": {"requests": n, "warmup": warmup, "clients": 1, "provider_latency_s": 0},
        "direct": ds,
        "aigw": as_,
        "added_ms": {"p50": add50, "p99": add99},
        "rows": [
            row(
                "added latency p50",
                "≤ 2 ms",
                fmt_ms(ds["p50_ms"]),
                fmt_ms(as_["p50_ms"]),
                fmt_ms(add50),
                ok and _le(add50, 2),
            ),
            row(
                "added latency p99",
                "≤ 6 ms",
                fmt_ms(ds["p99_ms"]),
                fmt_ms(as_["p99_ms"]),
                fmt_ms(add99),
                ok and _le(add99, 6),
            ),
        ],  # fmt: skip
        "usage": usage.to_dict(),
        "redis_trace": trace,
    }


def trace_redis(ctx: Ctx, aigw: Aigw, jobs: int) -> dict[str, Any]:
    """Commands and round trips per job by process, from MONITOR over ``jobs`` sequential jobs."""
    monitor = redistrace.Monitor(ctx.stack.redis_url)
    monitor.start()
    try:
        result = ctx.run(
            closed_loop(
                aigw.port, 1, jobs, aigw_request(aigw, 0), aigw_ok, deadline_s=60, request_timeout_s=35
            )
        )
        roles = redistrace.client_ports({"api": [aigw.api.pid], "worker": [w.pid for w in aigw.workers]},
                                        ctx.stack.redis_port)  # fmt: skip
    finally:
        monitor.stop()
    return {"jobs": result.ok, **redistrace.summarise(monitor.entries, roles, result.ok)}


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


# --- scenarios 2 and 3: many concurrent clients ---------------------------------------------------


def _concurrent(
    ctx: Ctx, tag: str, clients: int, jobs: int, warmup: int, provider_latency: float, deadline_s: float
) -> tuple[LoadResult, LoadResult, Usage]:
    stack = ctx.stack
    port = stack.fake_port(provider_latency)
    direct = direct_request(port)
    ctx.log(f"direct: warm-up {warmup}, then {jobs} requests from {clients} clients")
    ctx.run(closed_loop(port, clients, warmup, direct, direct_ok, deadline_s=60, request_timeout_s=30))
    with measure_direct(ctx) as direct_usage:
        d = ctx.run(
            closed_loop(port, clients, jobs, direct, direct_ok, deadline_s=deadline_s, request_timeout_s=30)
        )
        direct_usage["requests"] = d.ok
    with stack.aigw(concurrency=1000) as aigw:
        request = aigw_request(aigw, provider_latency)
        ctx.log(f"aigw: warm-up {warmup}, then {jobs} jobs from {clients} clients")
        ctx.run(
            closed_loop(aigw.port, clients, warmup, request, aigw_ok, deadline_s=60, request_timeout_s=35)
        )
        with measure(ctx, aigw, tag) as usage:
            a = ctx.run(
                closed_loop(
                    aigw.port, clients, jobs, request, aigw_ok, deadline_s=deadline_s, request_timeout_s=35
                )
            )
        usage.jobs = a.ok
        aigw.check_alive()
    usage.direct = direct_usage
    return d, a, usage


def throughput(ctx: Ctx) -> dict[str, Any]:
    clients, jobs, warmup = (20, 200, 20) if ctx.quick else (100, 5000, 500)
    d, a, usage = _concurrent(ctx, "throughput", clients, jobs, warmup, 0.0, 30 if ctx.quick else 120)
    ds, as_ = stats(d), stats(a)
    ok = _complete(d, a)
    return {
        "params": {"clients": clients, "jobs": jobs, "warmup": warmup, "provider_latency_s": 0},
        "direct": ds,
        "aigw": as_,
        "rows": [
            row(
                "jobs completed per second",
                "≥ 1,000 /s",
                f"{ds['throughput_per_s']:,.0f} /s",
                f"{as_['throughput_per_s']:,.0f} /s",
                f"{as_['throughput_per_s']:,.0f} /s",
                ok and as_["throughput_per_s"] >= 1000,
            ),
            row(
                "latency p50 / p99",
                "—",
                f"{fmt_ms(ds['p50_ms'])} / {fmt_ms(ds['p99_ms'])}",
                f"{fmt_ms(as_['p50_ms'])} / {fmt_ms(as_['p99_ms'])}",
                "",
                None,
            ),
        ],  # fmt: skip
        "usage": usage.to_dict(),
    }


def slow_provider(ctx: Ctx) -> dict[str, Any]:
    clients, jobs, warmup = (25, 50, 25) if ctx.quick else (500, 5000, 500)
    d, a, usage = _concurrent(ctx, "slow500", clients, jobs, warmup, 0.5, 30 if ctx.quick else 120)
    ds, as_ = stats(d), stats(a)
    ratio = round(as_["throughput_per_s"] / ds["throughput_per_s"], 3) if ds["throughput_per_s"] else None
    ok = _complete(d, a)
    return {
        "params": {"clients": clients, "jobs": jobs, "warmup": warmup, "provider_latency_s": 0.5},
        "direct": ds,
        "aigw": as_,
        "throughput_ratio": ratio,
        "rows": [
            row(
                "latency p50",
                "≤ 560 ms",
                fmt_ms(ds["p50_ms"]),
                fmt_ms(as_["p50_ms"]),
                fmt_ms(as_["p50_ms"]),
                ok and _le(as_["p50_ms"], 560),
            ),
            row(
                "throughput vs direct",
                "≥ 0.9 × direct",
                f"{ds['throughput_per_s']:,.0f} /s",
                f"{as_['throughput_per_s']:,.0f} /s",
                "—" if ratio is None else f"{ratio:.3f} ×",
                ok and ratio is not None and ratio >= 0.9,
            ),
            row("latency p99", "—", fmt_ms(ds["p99_ms"]), fmt_ms(as_["p99_ms"]), "", None),
        ],  # fmt: skip
        "usage": usage.to_dict(),
    }


# --- scenario 4: a burst of slow jobs enqueued at once ------------------------------------------


@dataclass
class BurstResult:
    enqueued: int = 0
    enqueue_failed: int = 0
    enqueue_s: float = 0.0
    finished: int = 0
    failed: int = 0
    wall_s: float = 0.0
    timed_out: bool = False
    job_ids: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    failed_ids: list[str] = field(default_factory=list)


async def _burst_aigw(ctx: Ctx, aigw: Aigw, jobs: int, clients: int, deadline_s: float) -> BurstResult:
    """Enqueue ``jobs`` through the API (no wait), then watch RQ's registries until all are done."""
    out = BurstResult()
    sync = ctx.stack.redis()
    finished_key = FinishedJobRegistry(QUEUE, connection=sync).key
    failed_key = FailedJobRegistry(QUEUE, connection=sync).key
    sync.close()
    client = aredis.Redis.from_url(ctx.stack.redis_url)
    try:

        async def done() -> tuple[int, int]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.zcard(finished_key)
                pipe.zcard(failed_key)
                finished, failed = await pipe.execute()
            return int(finished), int(failed)

        base_finished, base_failed = await done()
        started = time.perf_counter()
        request = aigw_request(aigw, 1.0, wait=None)
        enqueue = await closed_loop(
            aigw.port, clients, jobs, request, accepted,
            deadline_s=deadline_s, request_timeout_s=30, keep_bodies=True, preopen=False,
        )  # fmt: skip
        out.enqueue_s = time.perf_counter() - started
        out.enqueued, out.enqueue_failed, out.errors = enqueue.ok, enqueue.failed, dict(enqueue.errors)
        out.job_ids = [json.loads(body)["id"] for body in enqueue.bodies]
        while True:
            finished, failed = await done()
            out.finished, out.failed = finished - base_finished, failed - base_failed
            if out.finished + out.failed >= out.enqueued:
                break
            if time.perf_counter() - started > deadline_s:
                out.timed_out = True
                break
            await asyncio.sleep(0.02)
        out.wall_s = time.perf_counter() - started
        out.failed_ids = [
            i.decode() if isinstance(i, bytes) else str(i) for i in await client.zrange(failed_key, 0, 9)
        ]
    finally:
        await client.aclose()
    return out


async def _job_errors(aigw: Aigw, job_ids: list[str]) -> list[Any]:
    """The error of each (failed) job, as the API reports it."""
    connection = Connection(aigw.port)
    errors: list[Any] = []
    try:
        for job_id in job_ids:
            request = Request.build(
                "GET", f"/v1/jobs/{job_id}", aigw.port, headers={"Authorization": f"Bearer {aigw.token}"}
            )
            _status, body = await connection.send(request)
            with contextlib.suppress(ValueError):
                errors.append(json.loads(body).get("error"))
    finally:
        await connection.close()
    return errors


async def _verify_sample(aigw: Aigw, job_ids: list[str], size: int) -> tuple[int, int]:
    """GET a random sample of jobs through the API: (succeeded, sampled)."""
    sample = random.sample(job_ids, min(size, len(job_ids)))
    connection = Connection(aigw.port)
    succeeded = 0
    try:
        for job_id in sample:
            request = Request.build(
                "GET", f"/v1/jobs/{job_id}", aigw.port, headers={"Authorization": f"Bearer {aigw.token}"}
            )
            status, body = await connection.send(request)
            succeeded += aigw_ok(status, body)
    finally:
        await connection.close()
    return succeeded, len(sample)


def burst(ctx: Ctx) -> dict[str, Any]:
    jobs, concurrency, enqueue_clients = (100, 5000, 20) if ctx.quick else (5000, 5000, 200)
    deadline = 30 if ctx.quick else 180
    stack = ctx.stack
    port = stack.fake_port(1.0)
    ctx.log(f"direct: {jobs} concurrent calls (connections opened first)")
    request = direct_request(port)
    with measure_direct(ctx) as direct_usage:
        d = ctx.run(
            closed_loop(port, jobs, jobs, request, direct_ok, deadline_s=deadline, request_timeout_s=60)
        )
        direct_usage["requests"] = d.ok
    with stack.aigw(concurrency=concurrency) as aigw:
        ctx.log("aigw: warm-up 20 jobs")
        warm = aigw_request(aigw, 0)
        ctx.run(closed_loop(aigw.port, 20, 20, warm, aigw_ok, deadline_s=30, request_timeout_s=35))
        ctx.log(f"aigw: enqueue {jobs} jobs of 1 s through the API, wait until all are done")
        with measure(ctx, aigw, "burst") as usage:
            b = ctx.run(_burst_aigw(ctx, aigw, jobs, enqueue_clients, deadline))
        usage.jobs = b.finished
        usage.direct = direct_usage
        verified, sampled = ctx.run(_verify_sample(aigw, b.job_ids, 100))
        failures = ctx.run(_job_errors(aigw, b.failed_ids))
        aigw.check_alive()
    ds = stats(d)
    # every accepted job reached a final state in time (the RSS figure covers the whole burst) ...
    finished_all = not b.timed_out and b.enqueue_failed == 0 and b.finished + b.failed >= b.enqueued
    # ... and every one succeeded, as did every direct call (the wall-time target needs this)
    clean = finished_all and b.failed == 0 and verified == sampled and _complete(d)
    if clean:
        note = ""
    elif not finished_all:
        note = " (timed out)"
    else:
        note = f" ({b.failed} job(s) failed)"
    rss = usage.peak_rss_mb["total"]
    aigw_stats = {
        "enqueued": b.enqueued,
        "enqueue_failed": b.enqueue_failed,
        "enqueue_errors": b.errors,
        "enqueue_s": round(b.enqueue_s, 3),
        "finished": b.finished,
        "failed": b.failed,
        "timed_out": b.timed_out,
        "wall_s": round(b.wall_s, 3),
        "throughput_per_s": round(b.finished / b.wall_s, 1) if b.wall_s else 0.0,
        "verified_succeeded": verified,
        "verified_sampled": sampled,
        "failed_job_errors": failures,
    }
    wall = f"{b.wall_s:.2f} s"
    return {
        "params": {
            "jobs": jobs,
            "provider_latency_s": 1.0,
            "worker_concurrency": concurrency,
            "enqueue_clients": enqueue_clients,
            "max_connections": stack.max_connections,
        },
        "direct": ds,
        "aigw": aigw_stats,
        "rows": [
            row(
                "wall time until all done",
                "≤ 12 s",
                f"{ds['wall_s']:.2f} s",
                wall,
                f"{wall} (enqueue {b.enqueue_s:.2f} s){note}",
                clean and b.wall_s <= 12,
            ),
            row(
                "total RSS (API + workers, peak)",
                "≤ 400 MB",
                "—",
                f"{rss:.0f} MB",
                f"{rss:.0f} MB" + ("" if finished_all else " (timed out)"),
                finished_all and rss <= 400,
            ),
        ],  # fmt: skip
        "usage": usage.to_dict(),
    }


# --- scenario 5: idle footprint -------------------------------------------------------------------


def idle(ctx: Ctx) -> dict[str, Any]:
    requests, settle = (5, 0.5) if ctx.quick else (20, 2.0)
    with ctx.stack.aigw(concurrency=1000) as aigw:
        ctx.log(f"{requests} requests, then {settle:g} s idle")
        result = ctx.run(
            closed_loop(
                aigw.port, 1, requests, aigw_request(aigw, 0), aigw_ok, deadline_s=30, request_timeout_s=35
            )
        )
        time.sleep(settle)
        api = rss_bytes(aigw.api.pid) / MB
        workers = [rss_bytes(w.pid) / MB for w in aigw.workers]
        redis_rss = rss_bytes(ctx.stack.redis_pid) / MB
        aigw.check_alive()
    total = api + sum(workers)
    ok = _complete(result)
    return {
        "params": {"requests": requests, "workers": len(workers)},
        "aigw": {
            "ok": result.ok,
            "failed": result.failed,
            "rss_mb": {
                "api": round(api, 1),
                "workers": [round(w, 1) for w in workers],
                "total": round(total, 1),
                "redis (not counted)": round(redis_rss, 1),
            },
        },  # fmt: skip
        "rows": [
            row(
                "idle RSS (API + workers)",
                "≤ 150 MB",
                "—",
                f"{total:.0f} MB",
                f"{total:.0f} MB (API {api:.0f}, workers {' + '.join(f'{w:.0f}' for w in workers)})",
                ok and total <= 150,
            ),
        ],  # fmt: skip
    }


#: name -> (title, runner, fake latencies it needs)
SCENARIOS: dict[str, tuple[str, Callable[[Ctx], dict[str, Any]], tuple[float, ...]]] = {
    # idle first: with --quick every scenario shares one stack, and idle means "just started"
    "idle": ("idle stack (API + workers, without Redis)", idle, (0.0,)),
    "latency": ("1 client, provider answers at once", latency, (0.0,)),
    "throughput": ("100 concurrent clients, provider answers at once", throughput, (0.0,)),
    "slow500": ("500 concurrent clients, provider takes 500 ms", slow_provider, (0.5,)),
    "burst": ("5,000 jobs of 1 s each enqueued at once", burst, (1.0,)),
}
