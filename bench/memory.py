"""``python -m bench.memory``: the idle memory of a whole ``aigw up`` tree, per process.

Starts ``aigw up`` (``python -m gateway.cli up``) in a fresh temporary ``AIGW_HOME`` on a free
port, with no ``REDIS_URL`` (so it starts its embedded Redis and the keeper) and no provider keys
(the offline provider answers), waits until ``/readyz`` answers, sends a few jobs through it, lets
it idle, then reads ``/proc/PID/smaps_rollup`` of every process in the tree: RSS, PSS (shared
pages split among their users) and USS (private pages only). Prints a table and writes the JSON to
``bench/results/memory.json``. Issue 13's targets: API + a worker per queue ≤ 150 MB RSS; the
whole tree, embedded Redis included, ≤ 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from bench.procs import descendants

RESULTS = Path(__file__).resolve().parent / "results"
MB = 1024 * 1024
console = Console(highlight=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rollup(pid: int) -> dict[str, int]:
    """Rss, Pss, USS (Private_Clean + Private_Dirty) and Shared of ``pid`` in bytes; {} if gone."""
    fields: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[name] = int(parts[0]) * 1024
    private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    shared = fields.get("Shared_Clean", 0) + fields.get("Shared_Dirty", 0)
    return {"rss": fields.get("Rss", 0), "pss": fields.get("Pss", 0), "uss": private, "shared": shared}


def label(pid: int) -> str:
    """What a process of the tree is: its name (``aigw-api``, ``aigw-worker-batch`` ... as the
    forked children set it) or, for one started by exec, what its command line says."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    args = [a.decode(errors="replace") for a in argv if a]
    if comm.startswith("aigw-"):
        return comm
    if "redis-server" in comm or (args and args[0].endswith("redis-server")):
        return "redis-server"
    if "gateway.redis_keeper" in args:
        return "redis-keeper"
    if "api" in args:
        return "aigw-api"
    if "worker" in args and "--queue" in args:
        return "aigw-worker-" + args[args.index("--queue") + 1]
    if "up" in args:
        return "aigw up"
    return comm


def is_api_or_worker(name: str) -> bool:
    return name.startswith(("aigw-api", "aigw-worker"))


def measure(requests: int, idle_s: float, extra_env: dict[str, str]) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="aigw-mem-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIGW_", "REDIS_URL"))}
    for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        env.pop(key, None)
    env.update({"AIGW_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200", **extra_env})
    log = (home / "up.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "up", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        token = _wait_up(process, home / "up.log", url)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            for index in range(requests):
                answer = client.post("/v1/jobs", params={"wait": 10}, json={"prompt": f"hello {index}"})
                answer.raise_for_status()
        time.sleep(idle_s)
        pids = [process.pid, *descendants(process.pid)]
        rows: list[dict[str, Any]] = [{"pid": pid, "name": label(pid), **rollup(pid)} for pid in pids]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
    rows = [r for r in rows if r.get("rss")]
    rows.sort(key=lambda r: (r["name"] != "aigw up", r["name"]))

    def total(selected: list[dict[str, Any]]) -> dict[str, int]:
        return {k: sum(r[k] for r in selected) for k in ("rss", "pss", "uss")}

    return {
        "processes": rows,
        "api_and_workers": total([r for r in rows if is_api_or_worker(r["name"])]),
        "tree": total(rows),
        "requests": requests,
        "idle_s": idle_s,
        "stopped_cleanly": process.returncode == 0,
    }


def _wait_up(process: subprocess.Popen[bytes], log: Path, url: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"aigw up exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        text = log.read_text(errors="replace")
        if "Ctrl-C stops everything" in text and httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
            for line in text.splitlines():
                if line.startswith("AIGW_TOKEN="):
                    return line.split("=", 1)[1].strip()
        time.sleep(0.1)
    raise TimeoutError(f"aigw up did not come up within {timeout:g}s:\n{log.read_text()[-2000:]}")


def _mb(value: int) -> str:
    return f"{value / MB:.1f}"


def show(result: dict[str, Any]) -> None:
    table = Table(title=f"idle memory of `aigw up` (MB), after {result['requests']} jobs and "
                  f"{result['idle_s']:g} s idle")  # fmt: skip
    for column in ("process", "pid", "RSS", "PSS", "USS"):
        table.add_column(column, justify="left" if column == "process" else "right")
    for r in result["processes"]:
        table.add_row(r["name"], str(r["pid"]), _mb(r["rss"]), _mb(r["pss"]), _mb(r["uss"]))
    table.add_section()
    for title, key, target in (
        ("API + workers", "api_and_workers", "≤ 150 MB RSS"),
        ("whole tree", "tree", "≤ 200 MB RSS"),
    ):
        if not (t := result.get(key)) or not t["rss"]:
            continue
        title += f" (target {target})" if target else ""
        table.add_row(title, "", _mb(t["rss"]), _mb(t["pss"]), _mb(t["uss"]))
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--requests", type=int, default=20, help="jobs sent before idling (20)")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds idle before reading (5)")
    parser.add_argument("--runs", type=int, default=1, help="repeat, each on a fresh stack (1)")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra environment for aigw up"
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "memory.json", help="JSON result file")
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.env)
    runs = []
    for _ in range(args.runs):
        result = measure(args.requests, args.idle, extra)
        show(result)
        runs.append(result)
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
        "env": extra,
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    console.print(f"written {args.output}")


def _commit() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True)
        return out.stdout.strip()
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
