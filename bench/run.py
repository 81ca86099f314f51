"""``python -m bench.run [--scenario NAME ...] [--quick] [--workers K] [--profile] [--peers LIST] [--sweep]``.

Starts Redis, fake providers and aigw as subprocesses on 127.0.0.1, runs the scenarios (direct and
through aigw side by side), prints the tables and writes bench/results/latest.json. With
``--peers`` the latency, throughput and slow500 scenarios also measure aigw's /v1/chat/completions
and each peer (bench/peers.py); ``--sweep`` runs the scaling sweep instead (bench/sweep.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench import dropin, peers, scenarios
from bench.procs import machine_cpu
from bench.scenarios import Ctx
from bench.stack import REPO, BenchStack

RESULTS = REPO / "bench" / "results"
SCENARIOS = {**scenarios.SCENARIOS, "dropin": dropin.SCENARIO}
console = Console(highlight=False)
if not console.is_terminal:
    console = Console(highlight=False, width=160)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument(
        "--scenario", action="append", choices=list(SCENARIOS), help="repeatable; default all"
    )
    parser.add_argument("--quick", action="store_true", help="tiny versions of every scenario (smoke test)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--max-connections", type=int, default=1000,
        help="max_connections of the bench deployments in models.yaml (config allows 1..1000)",
    )  # fmt: skip
    parser.add_argument(
        "--policies", choices=["seed", "none"], default="seed",
        help="seed: the shipped policies.yaml (the seed article's three); none: no policies",
    )  # fmt: skip
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the API and workers in each aigw phase"
    )
    parser.add_argument(
        "--no-wait-quiet", action="store_true",
        help="do not wait (up to 60 s) for other processes to go quiet before each scenario",
    )  # fmt: skip
    parser.add_argument(
        "--retries", type=int, default=2,
        help="run a scenario again (keeping the quietest attempt) when other processes used the CPU",
    )  # fmt: skip
    parser.add_argument(
        "--max-foreign", type=float, default=0.1,
        help="cores other processes may use during a measured phase before it counts as disturbed",
    )  # fmt: skip
    parser.add_argument(
        "--peers", type=_peer_list, default=[],
        help="comma-separated peers to measure beside aigw: litellm, portkey (installed on first use)",
    )  # fmt: skip
    parser.add_argument("--sweep", action="store_true", help="run the scaling sweep (python -m bench.sweep)")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json", help="JSON result file")
    return parser.parse_args(argv)


def _peer_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in peers.NAMES:
            raise argparse.ArgumentTypeError(f"unknown peer {name!r} (known: {', '.join(peers.NAMES)})")
    return list(dict.fromkeys(names))


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    """First Ctrl-C/SIGTERM stops the run; later ones are ignored so the clean-up (bounded) completes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def _raise_fd_limit() -> None:
    """5,000 concurrent connections need more than the usual 1,024 descriptors (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 20_000 if hard == resource.RLIM_INFINITY else min(hard, 20_000)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def wait_quiet(log: Callable[[str], None], limit: float = 0.15, timeout: float = 60.0) -> float:
    """Wait until the machine's busy CPU over one second is below ``limit`` cores; returns the last."""
    deadline = time.monotonic() + timeout
    while True:
        before = machine_cpu()[0]
        time.sleep(1.0)
        busy = machine_cpu()[0] - before
        if busy < limit or time.monotonic() > deadline:
            if busy >= limit:
                log(f"[yellow]machine still busy ({100 * busy:.0f}% of a core); going ahead[/]")
            return busy
        log(f"machine busy ({100 * busy:.0f}% of a core besides the idle stack); waiting")


def _git(*args: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout
    return ""


def code_version() -> str:
    """Last commit of the code under test plus a digest of uncommitted changes (it may change mid-run)."""
    paths = ("gateway", "workers", "tests/fakes", "pyproject.toml")
    head = _git("log", "-1", "--format=%h", "--", *paths).strip()  # last commit that changed them
    diff = _git("diff", "HEAD", "--", *paths)
    return head + (f"+dirty:{hashlib.sha256(diff.encode()).hexdigest()[:8]}" if diff else "")


def foreign_cores(result: dict[str, Any]) -> float:
    """CPU other processes used during the measured phases, in cores (the worst phase)."""
    usage = result.get("usage") or {}
    figures = []
    if usage.get("wall_s"):
        figures.append(usage["machine_cpu_s"]["not_ours"] / usage["wall_s"])
    direct = usage.get("direct_phase") or {}
    wall = (result.get("direct") or {}).get("wall_s")
    if direct and wall:
        figures.append(direct["machine_busy_not_ours_s"] / wall)
    return round(max(figures, default=0.0), 3)


def run_scenario(
    name: str, stack: BenchStack, runner: asyncio.Runner, args: argparse.Namespace, log: Callable[[str], None]
) -> dict[str, Any]:
    _title, run, _latencies = SCENARIOS[name]
    busy_before = None if args.quick or args.no_wait_quiet else wait_quiet(log)
    ctx = Ctx(stack, runner, args.quick, log, RESULTS if args.profile else None)
    code = code_version()
    try:
        result = run(ctx)
    except (RuntimeError, TimeoutError, OSError) as exc:
        console.print(f"[bold red]{name} failed:[/] {exc}")
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result["code"] = code
    result["foreign_cores"] = foreign_cores(result)
    if busy_before is not None:
        result["machine_busy_before_cores"] = round(busy_before, 2)
    return result


def machine() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break

    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git("rev-parse", "HEAD").strip(),
        "git_dirty_files": [line[3:] for line in _git("status", "--porcelain").splitlines()],
    }


def _quiet(log: Callable[[str], None], skip: bool) -> Callable[[], None]:
    """What to do before each peer phase: wait for the machine to go quiet (unless told not to)."""

    def wait() -> None:
        if not skip:
            wait_quiet(log)

    return wait


def install_peers(names: list[str], report: dict[str, Any]) -> list[peers.Installed]:
    """Install (or find) each peer; one that fails is reported as such and left out."""
    installed = []
    for name in names:
        try:
            peer = peers.install(name, lambda message: console.print(f"  [dim]peers:[/] {escape(message)}"))
        except peers.PeerUnavailable as exc:
            console.print(f"[bold red]{name} unavailable:[/] {escape(str(exc)[:400])}")
            report["peers"][name] = {"error": f"install: {exc}"}
            continue
        report["peers"][name] = peer.to_dict()
        console.print(f"  [dim]peers:[/] {name} {peer.version}: {escape(peer.settings)}")
        installed.append(peer)
    return installed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sweep:
        from bench import sweep

        return sweep.main(["--workers-list", "1,2"] + (["--quick"] if args.quick else []))
    names = args.scenario or list(SCENARIOS)
    # our own handlers (not asyncio.Runner's SIGINT one, which only cancels the running task)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    _raise_fd_limit()
    report: dict[str, Any] = {
        "command": "python -m bench.run " + " ".join(sys.argv[1:] if argv is None else argv),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "workers": args.workers,
        "max_connections": args.max_connections,
        "policies": args.policies,
        "machine": machine(),
        "scenarios": {},
    }
    if args.peers:
        report["peers"] = {}
        installed = install_peers(args.peers, report)
    latencies = sorted({lat for name in names for lat in SCENARIOS[name][2]})
    began = time.monotonic()
    failed = False
    try:
        with (
            BenchStack(
                latencies,
                workers=args.workers,
                max_connections=args.max_connections,
                shared=args.quick,
                policies=args.policies,
            ) as stack,
            asyncio.Runner(loop_factory=_loop_factory()) as runner,
        ):
            for name in names:
                title = SCENARIOS[name][0]
                console.rule(f"[bold]{name}[/]: {title}")

                def log(message: str, name: str = name) -> None:
                    console.print(f"  [dim]{time.monotonic() - began:6.1f}s[/] {name}: {message}")

                attempts: list[dict[str, Any]] = []
                for attempt in range(1 + (0 if args.quick or args.profile else args.retries)):
                    if attempt:
                        busy = attempts[-1]["foreign_cores"]
                        log(f"[yellow]other processes used {busy:.2f} cores; running it again[/]")
                    result = run_scenario(name, stack, runner, args, log)
                    attempts.append(result)
                    if result.get("foreign_cores", 0.0) <= args.max_foreign or "error" in result:
                        break
                best = min(attempts, key=lambda r: float(r.get("foreign_cores", 0.0)))
                best["attempts"] = len(attempts)
                if args.peers and name in peers.COMPARED and "error" not in best:
                    ctx = Ctx(stack, runner, args.quick, log)
                    quiet = _quiet(log, args.quick or args.no_wait_quiet)
                    retries = 0 if args.quick or args.profile else args.retries
                    best["peers"] = peers.compare(
                        ctx, name, best["params"], installed, quiet, retries, args.max_foreign
                    )
                failed = failed or "error" in best
                report["scenarios"][name] = {"title": title, **best}
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; everything started has been stopped[/]")
        return 130
    report["duration_s"] = round(time.monotonic() - began, 1)
    versions = sorted({str(r.get("code")) for r in report["scenarios"].values()})
    report["code"] = versions[0] if len(versions) == 1 else versions
    report["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # nothing left to clean up
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    print_report(report)
    if "peers" in report:
        print_peers(report)
    if isinstance(report["code"], list):
        console.print(f"[bold yellow]the code under test changed during the run:[/] {', '.join(versions)}")
    console.print(f"\ncode under test: {report['code']}; results: {args.output}")
    return 1 if failed else 0


def print_report(report: dict[str, Any]) -> None:
    scenarios: dict[str, Any] = report["scenarios"]
    note = " (--quick: tiny sizes, not comparable with the targets)" if report["quick"] else ""
    table = Table(title=f"aigw vs direct, {report['workers']} worker process(es){note}")
    for column in ("scenario", "measure", "target", "direct", "aigw", "measured", "met?"):
        table.add_column(column)
    for name, result in scenarios.items():
        for r in result.get("rows", []):
            met = {True: "[green]yes[/]", False: "[red]no[/]", None: ""}[r["met"]]
            table.add_row(name, r["measure"], r["target"], r["direct"], r["aigw"], r["measured"], met)
        if "error" in result:
            table.add_row(name, "[red]error[/]", "", "", "", result["error"], "[red]no[/]")
    console.print(table)

    cpu = Table(title="Where the time goes (aigw phase): CPU ms per job, CPU utilisation")
    columns = ("scenario", "jobs", "wall s", "API", "workers", "redis", "fake", "harness", "peak RSS MB",
               "machine busy (not ours)")  # fmt: skip
    for column in columns:
        cpu.add_column(column, justify="right")
    redis_table = Table(title="Redis per job (aigw phase)")
    for column in ("scenario", "commands", "socket reads (≈ round trips)", "by command"):
        redis_table.add_column(column)
    for name, result in scenarios.items():
        usage = result.get("usage")
        if not usage:
            continue
        per, util = usage["cpu_ms_per_job"], usage["cpu_util_pct"]
        cells = [
            f"{per[k]:.2f} ({util.get(k, 0):.0f}%)" for k in ("api", "workers", "redis", "fake", "harness")
        ]
        rss, box, wall = usage["peak_rss_mb"], usage["machine_cpu_s"], usage["wall_s"] or 1
        machine = f"{100 * box['busy'] / wall:.0f}% ({100 * box['not_ours'] / wall:.0f}%)"
        cpu.add_row(name, str(usage["jobs"]), f"{usage['wall_s']:.2f}", *cells,
                    f"{rss['api']:.0f} + {rss['workers']:.0f}", machine)  # fmt: skip
        r = usage["redis"]
        top = ", ".join(f"{k} {v:g}" for k, v in list(r["by_command_per_job"].items())[:12])
        redis_table.add_row(name, f"{r['commands_per_job']:g}", f"{r['socket_reads_per_job']:g}", top)
    console.print(cpu)
    console.print(redis_table)
    for name, result in scenarios.items():
        for label, summary in result.get("usage", {}).get("profile", {}).items():
            prof = Table(title=f"py-spy {name} {label}: {summary['samples']} active samples (self %)")
            prof.add_column("function")
            prof.add_column("self %", justify="right")
            for entry in summary["self"][:12]:
                prof.add_row(entry["function"], f"{entry['pct']:.1f}")
            console.print(prof)


def _cell(value: float | None, key: str, direct: float | None) -> str:
    if value is None:
        return "—"
    text = (
        f"{value:,.0f} /s"
        if key == "throughput_per_s"
        else f"{value:.2f} ms"
        if value < 100
        else f"{value:,.0f} ms"
    )
    times = peers.ratio(value, direct) if not key.startswith(("added", "cpu")) else None
    return text if times is None else f"{text} ×{times:.1f}" if times >= 10 else f"{text} ×{times:.2f}"


def print_peers(report: dict[str, Any]) -> None:
    """Each figure with its ratio to direct, and aigw (native API / chat endpoint) ÷ each peer."""
    names = [n for n in report["peers"] if "error" not in report["peers"][n]]
    table = Table(
        title="Beside the peers: value ×(ratio to direct); aigw ÷ peer, native /v1/jobs / chat completions"
    )
    for column in (
        "scenario",
        "measure",
        "direct",
        "aigw",
        "aigw chat",
        *names,
        *(f"aigw ÷ {n}" for n in names),
    ):
        table.add_column(column, justify="right")
    for scenario, label, key, _higher in peers.MEASURES:
        result = report["scenarios"].get(scenario)
        if not result or "peers" not in result:
            continue
        fig = peers.figures(result)
        direct = fig["direct"].get(key)
        systems = ["aigw", "aigw-chat", *names]
        cells = [_cell(fig.get(s, {}).get(key), key, direct) for s in systems]
        ratios = []
        for name in names:
            peer = fig.get(name, {}).get(key)
            pair = [peers.ratio(fig.get(s, {}).get(key), peer) for s in ("aigw", "aigw-chat")]
            ratios.append(" / ".join("—" if r is None else f"{r:.2f}" for r in pair))
        first = "—" if key.startswith(("added", "cpu")) else _cell(direct, key, None)
        table.add_row(scenario, label, first, *cells, *ratios)
    console.print(table)
    noise = []
    for scenario in peers.COMPARED:
        result = report["scenarios"].get(scenario) or {}
        parts = [f"aigw {result.get('foreign_cores', 0):.2f}"] if result else []
        for name, peer in (result.get("peers") or {}).items():
            if "usage" in peer:
                parts.append(
                    f"{name} {peer['usage']['foreign_cores']:.2f} ({peer.get('attempts', 1)} attempt(s))"
                )
        if parts:
            noise.append(f"{scenario}: " + ", ".join(parts))
    console.print("[dim]cores other processes used during each kept phase: " + "; ".join(noise) + "[/]")
    for name, error in peers.unavailable(report).items():
        console.print(f"[bold red]{name}:[/] unavailable: {escape(error[:300])}")
    for name, info in report["peers"].items():
        if "error" not in info:
            console.print(f"[dim]{name} {info['version']}: {escape(info['settings'])}[/]")


if __name__ == "__main__":
    sys.exit(main())
