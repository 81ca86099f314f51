"""``python -m bench.sweep [--quick]`` (or ``python -m bench.run --sweep``): how aigw's cost grows.

Two curves per worker-process count (1 and 2 by default), each point a few seconds long:

- **Load**: jobs/s and CPU per job (API, workers, Redis) at 1, 10, 100, 500 and 1,000 clients,
  each client sending ``POST /v1/jobs?wait=30`` back to back (bench/httpload.py's ``timed_loop``:
  a warm-up, then a fixed window in which completions and CPU are counted). The same for direct
  calls to the fake, once, as the ceiling.
- **Memory**: RSS and PSS (``/proc/PID/smaps_rollup``) of the API and the workers against jobs in
  flight, 100 to 10,000. Jobs go to a fake that holds each call for ``--hold`` seconds, enqueued
  without waiting; at each level the harness waits until RQ's started registry has them all
  (or stops growing), then samples memory for a second and keeps the peak.

Writes bench/results/sweep.json; ``python -m bench.plots bench/results/sweep.json`` draws it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from bench.httpload import Check, LoadResult, Request, closed_loop, percentile, timed_loop
from bench.procs import cpu_seconds, machine_cpu, pss_bytes, rss_bytes, self_cpu_seconds
from bench.run import _loop_factory, _raise_fd_limit, _raise_interrupt, code_version, machine, wait_quiet
from bench.scenarios import accepted, aigw_ok, aigw_request, direct_ok, direct_request
from bench.stack import QUEUE, Aigw, BenchStack, alias_for

RESULTS = Path(__file__).resolve().parent / "results"
MB = 1024 * 1024
console = Console(highlight=False)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test, ~1 min)")
    parser.add_argument("--workers-list", type=_ints, default=[1, 2], help="worker process counts (1,2)")
    parser.add_argument("--clients", type=_ints, default=None, help="client counts (1,10,100,500,1000)")
    parser.add_argument("--inflight", type=_ints, default=None, help="jobs in flight (100,...,10000)")
    parser.add_argument("--warmup-s", type=float, default=None, help="warm-up per load point (2 s)")
    parser.add_argument("--measure-s", type=float, default=None, help="window per load point (4 s)")
    parser.add_argument("--hold", type=float, default=120.0, help="seconds the fake holds a memory job")
    parser.add_argument(
        "--no-wait-quiet", action="store_true", help="do not wait for the machine to go quiet"
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "sweep.json", help="JSON result file")
    args = parser.parse_args(argv)
    quick = args.quick
    args.clients = args.clients or ([1, 10, 50] if quick else [1, 10, 100, 500, 1000])
    args.inflight = args.inflight or ([50, 200] if quick else [100, 500, 1000, 2000, 5000, 10000])
    args.warmup_s = args.warmup_s if args.warmup_s is not None else (0.5 if quick else 2.0)
    args.measure_s = args.measure_s if args.measure_s is not None else (1.0 if quick else 4.0)
    if quick:
        args.hold = min(args.hold, 20.0)
    return args


def log(message: str) -> None:
    console.print(f"  [dim]{time.strftime('%H:%M:%S')}[/] {message}")


# --- load points ------------------------------------------------------------------------------------


class Snapshots:
    """CPU of the processes that matter, read at the window's edges."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.before: dict[str, float] = {}
        self.after: dict[str, float] = {}

    def read(self) -> dict[str, float]:
        out = {name: sum(cpu_seconds(p) for p in pids()) for name, pids in self.groups.items()}
        out["harness"] = self_cpu_seconds()
        out["machine"] = machine_cpu()[0]
        return out

    def start(self) -> None:
        self.before = self.read()

    def end(self) -> None:
        self.after = self.read()

    def delta(self) -> dict[str, float]:
        return {k: self.after[k] - self.before[k] for k in self.before}


def _point(
    runner: asyncio.Runner,
    port: int,
    clients: int,
    request: Request,
    check: Check,
    groups: dict[str, Callable[[], list[int]]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    snaps = Snapshots(groups)
    result: LoadResult = runner.run(
        timed_loop(port, clients, request, check, warmup_s=args.warmup_s, measure_s=args.measure_s,
                   request_timeout_s=40, on_start=snaps.start, on_end=snaps.end)
    )  # fmt: skip
    cpu = snaps.delta()
    jobs = max(result.ok, 1)
    wall = result.wall_s or 1.0
    ours = sum(v for k, v in cpu.items() if k != "machine")
    per_job = {
        k: round(1000 * v / jobs, 3) for k, v in cpu.items() if k not in ("machine", "harness", "fake")
    }
    return {
        "clients": clients,
        "ok": result.ok,
        "failed": result.failed,
        "errors": dict(result.errors),
        **({"failure_samples": result.failure_samples} if result.failure_samples else {}),
        "window_s": round(result.wall_s, 3),
        "jobs_per_s": round(result.ok / wall, 1),
        "p50_ms": _ms(percentile(result.latencies, 50)),
        "p99_ms": _ms(percentile(result.latencies, 99)),
        "cpu_ms_per_job": {**per_job, "total": round(sum(per_job.values()), 3)},
        "cpu_ms_per_job_fake": round(1000 * cpu.get("fake", 0.0) / jobs, 3),
        "cpu_ms_per_job_harness": round(1000 * cpu["harness"] / jobs, 3),
        "foreign_cores": round(max(0.0, cpu["machine"] - ours) / wall, 3),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 3)


def load_curve(stack: BenchStack, runner: asyncio.Runner, args: argparse.Namespace) -> list[dict[str, Any]]:
    points = []
    with stack.aigw(concurrency=1000) as aigw:
        groups: dict[str, Callable[[], list[int]]] = {
            "api": lambda: [aigw.api.pid],
            "workers": lambda: [w.pid for w in aigw.workers],
            "redis": lambda: [stack.redis_pid],
            "fake": stack.fake_pids,
        }
        for clients in args.clients:
            _quiet(args)
            point = _point(runner, aigw.port, clients, aigw_request(aigw, 0), aigw_ok, groups, args)
            cpu = point["cpu_ms_per_job"]["total"]
            rate = point["jobs_per_s"]
            log(f"aigw × {stack.workers} worker(s), {clients:>5} clients: {rate:8,.1f} jobs/s, "
                f"CPU {cpu:.2f} ms/job, p50 {point['p50_ms']} ms")  # fmt: skip
            points.append(point)
            aigw.check_alive()
    return points


def direct_curve(stack: BenchStack, runner: asyncio.Runner, args: argparse.Namespace) -> list[dict[str, Any]]:
    port = stack.fake_port(0.0)
    groups: dict[str, Callable[[], list[int]]] = {"fake": stack.fake_pids}
    points = []
    for clients in args.clients:
        _quiet(args)
        point = _point(runner, port, clients, direct_request(port), direct_ok, groups, args)
        log(f"direct, {clients:>5} clients: {point['jobs_per_s']:8,.1f} req/s, p50 {point['p50_ms']} ms")
        points.append(point)
    return points


# --- memory against jobs in flight ------------------------------------------------------------------------


def _memory(aigw: Aigw, redis_pid: int) -> dict[str, Any]:
    api_rss, api_pss = rss_bytes(aigw.api.pid), pss_bytes(aigw.api.pid)
    workers_rss = sum(rss_bytes(w.pid) for w in aigw.workers)
    workers_pss = sum(pss_bytes(w.pid) for w in aigw.workers)
    return {
        "rss_mb": {"api": api_rss / MB, "workers": workers_rss / MB, "total": (api_rss + workers_rss) / MB},
        "pss_mb": {"api": api_pss / MB, "workers": workers_pss / MB, "total": (api_pss + workers_pss) / MB},
        "redis_rss_mb": rss_bytes(redis_pid) / MB,
    }


def _peak(samples: list[dict[str, Any]]) -> dict[str, Any]:
    best = max(samples, key=lambda s: float(s["rss_mb"]["total"]))
    pss = max(samples, key=lambda s: float(s["pss_mb"]["total"]))
    return {
        "rss_mb": {k: round(v, 1) for k, v in best["rss_mb"].items()},
        "pss_mb": {k: round(v, 1) for k, v in pss["pss_mb"].items()},
        "redis_rss_mb": round(max(float(s["redis_rss_mb"]) for s in samples), 1),
    }


def memory_curve(stack: BenchStack, runner: asyncio.Runner, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Enqueue up to each level (cumulatively: held jobs stay in flight), then sample memory."""
    points = []
    hold = args.hold
    levels = sorted(args.inflight)
    per_worker = max(1, min(10_000, -(-levels[-1] // stack.workers)))  # config allows up to 10,000
    _quiet(args)
    with stack.aigw(concurrency=per_worker) as aigw:
        sync = stack.redis()
        started = StartedJobRegistry(QUEUE, connection=sync)
        done_keys = [
            FinishedJobRegistry(QUEUE, connection=sync).key,
            FailedJobRegistry(QUEUE, connection=sync).key,
        ]
        try:
            runner.run(closed_loop(aigw.port, 5, 20, aigw_request(aigw, 0), aigw_ok, deadline_s=30,
                                   request_timeout_s=35))  # fmt: skip
            time.sleep(1.0)
            idle = _peak([_memory(aigw, stack.redis_pid)])
            points.append({"target": 0, "in_flight": 0, "enqueued": 0, **idle})
            log(f"aigw × {stack.workers} worker(s), idle: RSS {idle['rss_mb']['total']:.0f} MB, "
                f"PSS {idle['pss_mb']['total']:.0f} MB")  # fmt: skip
            base_done = sum(int(sync.zcard(k)) for k in done_keys)
            enqueued, began = 0, time.monotonic()
            request = aigw_request(aigw, hold, wait=None)
            for level in levels:
                batch = level - enqueued
                load = closed_loop(aigw.port, min(200, batch), batch, request, accepted,
                                   deadline_s=120, request_timeout_s=30, preopen=False)  # fmt: skip
                enqueue = runner.run(load)
                enqueued += enqueue.ok
                in_flight = _wait_started(started, enqueued, timeout=30)
                samples = []
                for _ in range(10):
                    samples.append(_memory(aigw, stack.redis_pid))
                    time.sleep(0.1)
                done = sum(int(sync.zcard(k)) for k in done_keys) - base_done
                peak = _peak(samples)
                elapsed = time.monotonic() - began
                points.append({"target": level, "in_flight": in_flight, "enqueued": enqueued,
                               "enqueue_failed": enqueue.failed, "already_done": done,
                               "elapsed_s": round(elapsed, 1), **peak})  # fmt: skip
                rss, pss = peak["rss_mb"]["total"], peak["pss_mb"]["total"]
                log(f"aigw × {stack.workers} worker(s), {in_flight:>6} in flight ({enqueued} enqueued, "
                    f"{done} done, {elapsed:.0f} s): RSS {rss:.0f} MB, PSS {pss:.0f} MB, "
                    f"Redis {peak['redis_rss_mb']:.0f} MB")  # fmt: skip
                if elapsed > hold * 0.8:
                    log(
                        f"[yellow]{elapsed:.0f} s after the first enqueue: held jobs start to finish; stop[/]"
                    )
                    break
            aigw.check_alive()
        finally:
            sync.close()
    return points


def _wait_started(started: StartedJobRegistry, want: int, timeout: float) -> int:
    """Until RQ's started registry holds ``want`` jobs, or stops growing for 2 s; returns its count."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while True:
        count = int(started.count)
        now = time.monotonic()
        if count != last:
            last, last_change = count, now
        if count >= want or now - last_change > 2.0 or now > deadline:
            return count
        time.sleep(0.1)


def _quiet(args: argparse.Namespace) -> None:
    if not (args.quick or args.no_wait_quiet):
        wait_quiet(log)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    _raise_fd_limit()
    report: dict[str, Any] = {
        "kind": "sweep",
        "command": "python -m bench.sweep " + " ".join(sys.argv[1:] if argv is None else argv),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(),
        "code": code_version(),
        "params": {
            "clients": args.clients,
            "inflight": args.inflight,
            "workers": args.workers_list,
            "warmup_s": args.warmup_s,
            "measure_s": args.measure_s,
            "hold_s": args.hold,
            "request": "POST /v1/jobs?wait=30, provider answers at once",
            "memory_request": f"POST /v1/jobs (no wait) to {alias_for(args.hold)}",
        },  # fmt: skip
        "direct": [],
        "load": {},
        "memory": {},
    }
    began = time.monotonic()
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            for index, workers in enumerate(args.workers_list):
                console.rule(f"[bold]{workers} worker process(es)[/]")
                with BenchStack([0.0, args.hold], workers=workers) as stack:
                    if index == 0:
                        report["direct"] = direct_curve(stack, runner, args)
                    report["load"][str(workers)] = load_curve(stack, runner, args)
                    report["memory"][str(workers)] = memory_curve(stack, runner, args)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; everything started has been stopped[/]")
        return 130
    report["duration_s"] = round(time.monotonic() - began, 1)
    report["code_at_end"] = code_version()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    console.print(
        f"\nsweep done in {report['duration_s']:.0f} s; code under test {report['code']}; {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
