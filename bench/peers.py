"""The peers: LiteLLM's proxy and Portkey's gateway, installed on first use and measured like aigw.

``python -m bench.run --peers litellm,portkey`` installs each peer into a cache outside the
repository (``$AIGW_BENCH_CACHE``, else ``~/.cache/aigw-bench/``): LiteLLM's proxy from PyPI into
a venv of its own, Portkey's gateway from npm (run with node). Both are pinned below. After the
latency, throughput and slow500 scenarios, :func:`compare` measures aigw's
``/v1/chat/completions`` and then each peer, started fresh and pointed at the same fake provider,
with the same load generator, warm-up and sizes as the scenario measured direct and aigw with.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.markup import escape

from bench.httpload import Check, Connection, Request, closed_loop
from bench.procs import Child, RssSampler, cpu_seconds, descendants, machine_cpu, self_cpu_seconds
from bench.scenarios import PROMPT, Ctx, _minus, alternating, direct_ok, direct_request, stats
from bench.stack import FAKE_MODEL, Aigw, BenchStack, alias_for
from gateway.redis_server import free_port

#: the versions the numbers in docs/benchmarks.md were measured with; bump them deliberately
LITELLM_VERSION = "1.108.7"
PORTKEY_VERSION = "1.15.2"
NAMES = ("litellm", "portkey")
MB = 1024 * 1024
#: scenarios that get a peers comparison, and the figures the table shows for each
COMPARED = ("latency", "throughput", "slow500")


class PeerUnavailable(Exception):
    """A peer could not be installed or started; the run reports it and goes on."""


def cache_root() -> Path:
    return Path(os.environ.get("AIGW_BENCH_CACHE") or Path.home() / ".cache" / "aigw-bench")


def _tail(text: str | bytes | None, chars: int = 600) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "").strip()[-chars:]


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 1200) -> None:
    try:
        subprocess.run(
            argv, cwd=cwd, check=True, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.CalledProcessError as exc:
        raise PeerUnavailable(
            f"{' '.join(argv[:3])} … failed: {_tail(exc.stderr) or _tail(exc.stdout)}"
        ) from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"{' '.join(argv[:3])} … failed: {exc}") from exc


@dataclass(frozen=True)
class Installed:
    """An installed peer: what to run, and the settings the report states."""

    name: str
    version: str
    entry: Path
    settings: str

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "entry": str(self.entry), "settings": self.settings}


def litellm_workers() -> int:
    """LiteLLM's production guide: one worker process per CPU core (2 on the bench machine)."""
    return os.cpu_count() or 2


def _install_litellm(log: Callable[[str], None]) -> Installed:
    root = cache_root() / f"litellm-{LITELLM_VERSION}"
    exe = root / "venv" / "bin" / "litellm"
    marker = root / "installed"
    if not (marker.exists() and exe.exists()):
        log(f"installing litellm[proxy]=={LITELLM_VERSION} into {root} (first use; a few minutes)")
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        _run([sys.executable, "-m", "venv", str(root / "venv")])
        _run([str(root / "venv" / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"])
        marker.write_text(LITELLM_VERSION + "\n")
    settings = (
        f"litellm --config (one model per fake latency, openai/{FAKE_MODEL} at the fake's api_base; "
        "set_verbose false, disable_spend_logs, disable_error_logs; no database, no cache, no callbacks) "
        f"--num_workers {litellm_workers()} (uvicorn; one per core, as its production guide says); "
        "a master key (LiteLLM refuses to start without one); LITELLM_LOG=ERROR, "
        "LITELLM_LOCAL_MODEL_COST_MAP=True (no fetch of the cost map), LITELLM_MODE=PRODUCTION"
    )
    return Installed("litellm", LITELLM_VERSION, exe, settings)


def _install_portkey(log: Callable[[str], None]) -> Installed:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise PeerUnavailable("node and npm are not on PATH (apt-get install nodejs npm)")
    root = cache_root() / f"portkey-{PORTKEY_VERSION}"
    entry = root / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    marker = root / "installed"
    if not (marker.exists() and entry.exists()):
        log(f"installing @portkey-ai/gateway@{PORTKEY_VERSION} into {root} (first use)")
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        (root / "package.json").write_text('{"name": "aigw-bench-portkey", "private": true}\n')
        _run([npm, "install", "--no-audit", "--no-fund", f"@portkey-ai/gateway@{PORTKEY_VERSION}"], cwd=root)
        marker.write_text(PORTKEY_VERSION + "\n")
    version = _run_text([node, "--version"])
    settings = (
        f"node {version} build/start-server.js --port=P --headless (its default Node server, one process; "
        "--headless drops the log UI and its log stream), NODE_ENV=production; each request carries "
        "x-portkey-provider: openai and x-portkey-custom-host: http://127.0.0.1:FAKE/v1"
    )
    return Installed("portkey", PORTKEY_VERSION, entry, settings)


def _run_text(argv: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    return "?"


def install(name: str, log: Callable[[str], None]) -> Installed:
    """Install (or find in the cache) one peer; PeerUnavailable when that fails."""
    if name == "litellm":
        return _install_litellm(log)
    if name == "portkey":
        return _install_portkey(log)
    raise PeerUnavailable(f"unknown peer {name!r} (known: {', '.join(NAMES)})")


# --- a running peer ---------------------------------------------------------------------------------


@dataclass
class Peer:
    """One running peer, as a phase sees it."""

    installed: Installed
    port: int
    child: Child
    stack: BenchStack
    key: str

    @property
    def name(self) -> str:
        return self.installed.name

    def pids(self) -> list[int]:
        """The peer's whole process tree (LiteLLM's uvicorn workers are children of its parent)."""
        return [self.child.pid, *descendants(self.child.pid)]

    def request(self, latency: float) -> Request:
        messages = [{"role": "user", "content": PROMPT}]
        if self.name == "litellm":
            body = {"model": alias_for(latency), "messages": messages, "max_tokens": 1024}
            headers = {"Authorization": f"Bearer {self.key}"}
        else:
            body = {"model": FAKE_MODEL, "messages": messages, "max_tokens": 1024}
            headers = {
                "Authorization": "Bearer sk-bench-dummy-key",
                "x-portkey-provider": "openai",
                "x-portkey-custom-host": f"http://127.0.0.1:{self.stack.fake_port(latency)}/v1",
            }
        return Request.build("POST", "/v1/chat/completions", self.port, json.dumps(body).encode(), headers)

    def check_alive(self) -> None:
        if not self.child.alive():
            raise RuntimeError(f"{self.name} exited ({self.child.process.returncode}): {self.child.tail()}")


def peer_ok(status: int, body: bytes) -> bool:
    return status == 200 and b'"choices"' in body


def _peer_env(extra: dict[str, str]) -> dict[str, str]:
    drop = ("REDIS", "DATABASE_URL", "AIGW_", "LITELLM_", "PORTKEY_", "OPENAI_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def _litellm_argv(
    installed: Installed, stack: BenchStack, port: int
) -> tuple[list[str], dict[str, str], str]:
    key = "sk-" + secrets.token_hex(32)
    config: dict[str, Any] = {
        "model_list": [
            {
                "model_name": alias_for(latency),
                "litellm_params": {
                    "model": f"openai/{FAKE_MODEL}",
                    "api_base": f"http://127.0.0.1:{fake_port}/v1",
                    "api_key": "sk-bench-dummy-key",
                },
            }
            for latency, (fake_port, _child) in sorted(stack.fakes.items())
        ],
        "litellm_settings": {"set_verbose": False, "request_timeout": 60},
        "general_settings": {"disable_spend_logs": True, "disable_error_logs": True},
    }
    path = stack.root / "peers" / "litellm.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [str(installed.entry), "--config", str(path), "--host", "127.0.0.1", "--port", str(port),
            "--num_workers", str(litellm_workers())]  # fmt: skip
    env = _peer_env({
        "LITELLM_MASTER_KEY": key, "LITELLM_LOG": "ERROR", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_MODE": "PRODUCTION", "PYTHONUNBUFFERED": "1",
    })  # fmt: skip
    return argv, env, key


def _stop_tree(peer: Peer) -> None:
    """SIGTERM the peer's parent (uvicorn stops its workers), then SIGKILL whatever of its tree is left."""
    tree = descendants(peer.child.pid)
    peer.child.stop(grace=15)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    peer.stack.forget(peer.child)


def _wait_ready(peer: Peer, timeout: float) -> None:
    """Until one real chat completion through the peer succeeds (it has loaded and can reach the fake)."""
    raw = peer.request(0.0).raw
    head, _, body = raw.partition(b"\r\n\r\n")
    headers = dict(
        line.split(": ", 1)
        for line in head.decode().split("\r\n")[1:]
        if not line.lower().startswith(("host", "content-length"))
    )
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        peer.check_alive()
        try:
            answer = httpx.post(f"http://127.0.0.1:{peer.port}/v1/chat/completions", content=body,
                                headers=headers, timeout=5)  # fmt: skip
            if peer_ok(answer.status_code, answer.content):
                return
            last = f"HTTP {answer.status_code}: {answer.text[:200]}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    raise TimeoutError(f"{peer.name} not ready after {timeout:g} s ({last}): {peer.child.tail(300)}")


@contextlib.contextmanager
def running(installed: Installed, stack: BenchStack, timeout: float = 180.0) -> Iterator[Peer]:
    """A fresh peer on a free port, ready for requests; stopped (its whole tree) when the block ends."""
    port = free_port()
    if installed.name == "litellm":
        argv, env, key = _litellm_argv(installed, stack, port)
        cwd = stack.root / "peers"
    else:
        argv = ["node", str(installed.entry), f"--port={port}", "--headless"]
        env, key, cwd = _peer_env({"NODE_ENV": "production"}), "", installed.entry.parents[3]
    child = stack.spawn(installed.name, argv, env=env, cwd=cwd)
    peer = Peer(installed, port, child, stack, key)
    try:
        _wait_ready(peer, timeout)
        yield peer
    finally:
        _stop_tree(peer)


# --- the phases ---------------------------------------------------------------------------------------


def chat_request(aigw: Aigw, latency: float) -> Request:
    """aigw's drop-in endpoint with the body a peer gets (model: the alias of the fake's latency)."""
    body = {
        "model": alias_for(latency),
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 1024,
    }
    return Request.build("POST", "/v1/chat/completions", aigw.port, json.dumps(body).encode(),
                         {"Authorization": f"Bearer {aigw.token}"})  # fmt: skip


def chat_ok(status: int, body: bytes) -> bool:
    return status == 200 and b'"chat.completion"' in body


@dataclass
class Target:
    """What a phase loads: a port, the request and its check, and the processes that serve it."""

    name: str
    port: int
    request: Request
    check: Check
    cpu_pids: list[int]
    rss_pids: list[int]


def _one_client(ctx: Ctx, target: Target, n: int, warmup: int) -> dict[str, Any]:
    """Direct and the target alternately, one request at a time (as the latency scenario does)."""
    fake = ctx.stack.fake_port(0.0)
    ways: list[tuple[Connection, Request, Check]] = [
        (Connection(fake), direct_request(fake), direct_ok),
        (Connection(target.port), target.request, target.check),
    ]
    ctx.log(
        f"{target.name}: warm-up {warmup} pairs, then {n} direct and {n} {target.name} calls, alternating"
    )
    ctx.run(alternating(ways, warmup, 60))
    with _usage(ctx, target) as usage:
        d, t = ctx.run(alternating(ways, n, 120))
        usage["requests"] = t.ok
    for connection, _request, _check in ways:
        ctx.run(connection.close())
    ds, ts = stats(d), stats(t)
    added = {"p50": _minus(ts["p50_ms"], ds["p50_ms"]), "p99": _minus(ts["p99_ms"], ds["p99_ms"])}
    return {**ts, "direct": ds, "added_ms": added, "usage": usage}


def _concurrent(
    ctx: Ctx, target: Target, clients: int, jobs: int, warmup: int, deadline_s: float
) -> dict[str, Any]:
    ctx.log(f"{target.name}: warm-up {warmup}, then {jobs} requests from {clients} clients")
    ctx.run(closed_loop(target.port, clients, warmup, target.request, target.check, deadline_s=60,
                        request_timeout_s=35))  # fmt: skip
    with _usage(ctx, target) as usage:
        result = ctx.run(closed_loop(target.port, clients, jobs, target.request, target.check,
                                     deadline_s=deadline_s, request_timeout_s=35))  # fmt: skip
        usage["requests"] = result.ok
    return {**stats(result), "usage": usage}


@contextlib.contextmanager
def _usage(ctx: Ctx, target: Target) -> Iterator[dict[str, Any]]:
    """CPU per request of the target's processes, their peak RSS, and other processes' CPU."""
    out: dict[str, Any] = {}
    fakes = ctx.stack.fake_pids()

    def ours() -> tuple[float, float]:
        return sum(cpu_seconds(p) for p in target.cpu_pids), sum(cpu_seconds(p) for p in fakes)

    (serving0, fake0), harness0, busy0 = ours(), self_cpu_seconds(), machine_cpu()[0]
    started = time.perf_counter()
    with RssSampler(target.rss_pids) as sampler:
        yield out
    wall = time.perf_counter() - started
    (serving1, fake1), harness1, busy1 = ours(), self_cpu_seconds(), machine_cpu()[0]
    serving, fake, harness = serving1 - serving0, fake1 - fake0, harness1 - harness0
    requests = max(int(out.get("requests", 0)), 1)
    out.update(
        wall_s=round(wall, 3),
        cpu_ms_per_request={
            "serving": round(1000 * serving / requests, 3),
            "fake": round(1000 * fake / requests, 3),
            "harness": round(1000 * harness / requests, 3),
        },  # fmt: skip
        peak_rss_mb=round(sampler.peak_total / MB, 1),
        processes=len(target.rss_pids),
        foreign_cores=round(max(0.0, busy1 - busy0 - serving - fake - harness) / wall, 3) if wall else 0.0,
    )


def _phase(ctx: Ctx, scenario: str, params: dict[str, Any], target: Target) -> dict[str, Any]:
    if scenario == "latency":
        return _one_client(ctx, target, int(params["requests"]), int(params["warmup"]))
    deadline = 30.0 if ctx.quick else 120.0
    return _concurrent(
        ctx, target, int(params["clients"]), int(params["jobs"]), int(params["warmup"]), deadline
    )


def _quietest(
    ctx: Ctx, run: Callable[[], dict[str, Any]], before: Callable[[], None], retries: int, max_foreign: float
) -> dict[str, Any]:
    """Run a phase again (up to ``retries`` times) while other processes took more than
    ``max_foreign`` cores during it; keep the quietest attempt (as bench.run does for a scenario)."""
    attempts: list[dict[str, Any]] = []
    for attempt in range(1 + retries):
        if attempt:
            busy = attempts[-1]["usage"]["foreign_cores"]
            ctx.log(f"[yellow]other processes used {busy:.2f} cores; running the phase again[/]")
            before()
        attempts.append(run())
        if attempts[-1]["usage"]["foreign_cores"] <= max_foreign:
            break
    best = min(attempts, key=lambda r: float(r["usage"]["foreign_cores"]))
    best["attempts"] = len(attempts)
    return best


def compare(
    ctx: Ctx,
    scenario: str,
    params: dict[str, Any],
    peers: list[Installed],
    before_phase: Callable[[], None],
    retries: int = 0,
    max_foreign: float = 0.1,
) -> dict[str, Any]:
    """aigw's /v1/chat/completions, then every peer, at the sizes the scenario ran direct and aigw with."""
    stack = ctx.stack
    latency = float(params.get("provider_latency_s", 0.0))
    out: dict[str, Any] = {}
    before_phase()
    try:
        with stack.aigw(concurrency=1000) as aigw:
            api_workers = [aigw.api.pid, *(w.pid for w in aigw.workers)]
            target = Target("aigw-chat", aigw.port, chat_request(aigw, latency), chat_ok,
                            [*api_workers, stack.redis_pid], api_workers)  # fmt: skip
            phase = functools.partial(_phase, ctx, scenario, params, target)
            out["aigw-chat"] = _quietest(ctx, phase, before_phase, retries, max_foreign)
            aigw.check_alive()
    except (RuntimeError, TimeoutError, OSError) as exc:
        out["aigw-chat"] = {"error": f"{type(exc).__name__}: {exc}"}
    for installed in peers:
        before_phase()
        try:
            ctx.log(f"starting {installed.name} {installed.version}")
            with running(installed, stack) as peer:
                pids = peer.pids()
                target = Target(installed.name, peer.port, peer.request(latency), peer_ok, pids, pids)
                phase = functools.partial(_phase, ctx, scenario, params, target)
                out[installed.name] = _quietest(ctx, phase, before_phase, retries, max_foreign)
                peer.check_alive()
        except (PeerUnavailable, RuntimeError, TimeoutError, OSError) as exc:
            out[installed.name] = {"error": f"{type(exc).__name__}: {exc}"}
            ctx.log(f"[red]{installed.name} failed:[/] {escape(out[installed.name]['error'][:300])}")
    return out


# --- the figures the table and the plots show -----------------------------------------------------------


def figures(result: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per system (direct, aigw, aigw-chat, each peer): p50/p99 ms, added ms, req/s, CPU ms per request."""
    out: dict[str, dict[str, float | None]] = {}
    direct = result.get("direct") or {}
    out["direct"] = {"p50_ms": direct.get("p50_ms"), "p99_ms": direct.get("p99_ms"),
                     "throughput_per_s": direct.get("throughput_per_s")}  # fmt: skip
    aigw = result.get("aigw") or {}
    per = (result.get("usage") or {}).get("cpu_ms_per_job") or {}
    added = result.get("added_ms") or {}
    cpu = round(sum(per.get(k, 0.0) for k in ("api", "workers", "redis")), 3) if per else None
    out["aigw"] = {
        "p50_ms": aigw.get("p50_ms"), "p99_ms": aigw.get("p99_ms"),
        "added_p50_ms": added.get("p50"), "added_p99_ms": added.get("p99"),
        "throughput_per_s": aigw.get("throughput_per_s"),
        "cpu_ms_per_request": cpu,
    }  # fmt: skip
    for name, peer in (result.get("peers") or {}).items():
        if "error" in peer:
            continue
        added = peer.get("added_ms") or {}
        out[name] = {
            "p50_ms": peer.get("p50_ms"), "p99_ms": peer.get("p99_ms"),
            "added_p50_ms": added.get("p50"), "added_p99_ms": added.get("p99"),
            "throughput_per_s": peer.get("throughput_per_s"),
            "cpu_ms_per_request": (peer.get("usage") or {}).get("cpu_ms_per_request", {}).get("serving"),
        }  # fmt: skip
    return out


#: (scenario, measure label, figure key, higher is better)
MEASURES: tuple[tuple[str, str, str, bool], ...] = (
    ("latency", "p50", "p50_ms", False),
    ("latency", "p99", "p99_ms", False),
    ("latency", "added p50", "added_p50_ms", False),
    ("latency", "added p99", "added_p99_ms", False),
    ("throughput", "req/s", "throughput_per_s", True),
    ("throughput", "p50", "p50_ms", False),
    ("throughput", "CPU/request", "cpu_ms_per_request", False),
    ("slow500", "req/s", "throughput_per_s", True),
    ("slow500", "p50", "p50_ms", False),
)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def unavailable(report: dict[str, Any]) -> dict[str, str]:
    """Peers that failed to install, or to start or run in some scenario: name -> the first error."""
    out = {name: info["error"] for name, info in (report.get("peers") or {}).items() if "error" in info}
    for scenario in report.get("scenarios", {}).values():
        for name, peer in (scenario.get("peers") or {}).items():
            if "error" in peer:
                out.setdefault(name, peer["error"])
    return out
