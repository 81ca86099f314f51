"""The README's quick start, as a new user runs it: `aigw up`, a job, `aigw ask`, Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.audit import tail
from gateway.redis_server import free_port, ping
from tests.integration.harness import wait_until

AIGW = [sys.executable, "-m", "gateway.cli"]


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (read from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _comm(pid: int) -> str:
    """The process name: `aigw up` forks its API and workers, which name themselves ``aigw-...``
    (their command line is their fork server's)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def user_env(tmp_path: Path, config_dir: Path) -> Iterator[tuple[dict[str, str], Path, int, int]]:
    """A fresh $AIGW_HOME, no provider keys, no REDIS_URL: the embedded default."""
    redis_port, api_port = free_port(), free_port()
    gateway = yaml.safe_load((config_dir / "gateway.yaml").read_text())
    gateway["redis"]["embedded_port"] = redis_port
    (config_dir / "gateway.yaml").write_text(yaml.safe_dump(gateway))
    env = {
        k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ANTHROPIC_API_KEY", "OPENAI_API_KEY")
    }
    env.update({"AIGW_HOME": str(tmp_path / "home"), "AIGW_CONFIG": str(config_dir)})
    yield env, tmp_path / "home", redis_port, api_port


def _read_banner(process: subprocess.Popen[str], timeout: float = 60.0) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"aigw up exited early: {''.join(lines)}")
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            return lines
    raise AssertionError("no banner from aigw up")


def test_quickstart_up_job_ask_status_and_ctrl_c(user_env: tuple[dict[str, str], Path, int, int]) -> None:
    env, home, redis_port, api_port = user_env
    log = (home.parent / "up.log").open("w")
    up = subprocess.Popen(
        [*AIGW, "up", "--port", str(api_port)], env=env, stdout=subprocess.PIPE, stderr=log, text=True
    )
    try:
        banner = "".join(_read_banner(up))
        token_match = re.search(r"AIGW_TOKEN=(aigw_\S+)", banner)
        assert token_match, banner
        token = token_match.group(1)
        assert f"http://127.0.0.1:{api_port}" in banner and "curl" in banner
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        assert ping(redis_url)

        # the curl of the banner, through httpx
        response = httpx.post(
            f"http://127.0.0.1:{api_port}/v1/jobs",
            params={"wait": 10},
            json={"prompt": "Hello"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        job = response.json()
        assert job["status"] == "succeeded" and job["result"]["offline"] is True

        # no AIGW_URL: `aigw up --port N` noted its URL in $AIGW_HOME, where `aigw ask` looks
        ask_env = {k: v for k, v in env.items() if k != "AIGW_URL"} | {"AIGW_TOKEN": token}
        ask = subprocess.run(
            [*AIGW, "ask", "What is aigw?"], env=ask_env, capture_output=True, text=True, timeout=60
        )
        assert ask.returncode == 0, ask.stderr
        assert "aigw offline provider" in ask.stdout
        assert "What is aigw?" in ask.stdout
        assert "draft, pending review" in ask.stderr  # the drafts policy, said where it is read

        status = subprocess.run(
            [*AIGW, "gateway", "status", "--json"], env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        state = json.loads(status.stdout)
        assert state["api"]["ok"] and state["redis"]["aof_enabled"]
        assert {q for w in state["workers"] for q in w["queues"]} == {"interactive", "batch"}
        # workers.layout shared (the default): one process serves both queues, an RQ worker each
        assert len({w["pid"] for w in state["workers"]}) == 1 and len(state["workers"]) == 2
        assert state["queues"]["interactive"]["succeeded"] >= 2

        audit_log = home / "audit.log"
        wait_until(lambda: audit_log.exists() and len(tail(audit_log, 10)) >= 2, "audit lines")
        assert {line["job_id"] for line in tail(audit_log, 10)} >= {job["id"]}

        # supervision: a worker (a child forked from the fork server) killed with -9 is started again
        def live_workers() -> set[int]:
            return {p for p in _children(up.pid) if _comm(p).startswith("aigw-worker") and _alive(p)}

        workers = live_workers()
        assert len(workers) == 1
        os.kill(min(workers), signal.SIGKILL)
        wait_until(lambda: len(live_workers() - workers) == 1, "a replacement worker")

        def replacement_serves_both() -> bool:
            live = json.loads(subprocess.run(
                [*AIGW, "gateway", "status", "--json"], env=env, capture_output=True, text=True, timeout=60,
            ).stdout)["workers"]  # fmt: skip
            served = {q for w in live if w["pid"] in live_workers() for q in w["queues"]}
            return served == {"interactive", "batch"}

        wait_until(replacement_serves_both, "the replacement worker on both queues", timeout=30)
        children = _children(up.pid)
        assert len(children) >= 4  # redis-server, API, the worker, the audit writer
        api = {p for p in children if _comm(p) == "aigw-api"}
        assert len(api) == 1
        os.kill(api.pop(), signal.SIGKILL)  # the API too: forked again, answering on the same port
        wait_until(lambda: len({p for p in _children(up.pid) if _comm(p) == "aigw-api" and _alive(p)}) == 1,
                   "a replacement API")  # fmt: skip
        wait_until(lambda: _healthy(api_port), "the replacement API to answer", timeout=30)
        children = _children(up.pid)
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
        wait_until(lambda: not any(_alive(pid) for pid in children), "children to exit", timeout=10)
        assert not ping(redis_url)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{api_port}/healthz")
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        if up.stdout is not None:
            up.stdout.close()
        log.close()


def test_up_refuses_a_broken_config(
    user_env: tuple[dict[str, str], Path, int, int], config_dir: Path
) -> None:
    env, _home, _redis_port, api_port = user_env
    models = yaml.safe_load((config_dir / "models.yaml").read_text())
    models["models"]["general"]["pricing"]["input_per_mtok"] = "cheap"
    (config_dir / "models.yaml").write_text(yaml.safe_dump(models))
    result = subprocess.run(
        [*AIGW, "up", "--port", str(api_port)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "models.yaml" in result.stderr and "models.general" in result.stderr
    assert "input_per_mtok" in result.stderr


def test_up_rotates_the_audit_log_as_gateway_yaml_says(
    user_env: tuple[dict[str, str], Path, int, int], config_dir: Path
) -> None:
    """`aigw up`'s audit writer (a forked child) takes audit.rotate_bytes from gateway.yaml."""
    env, home, _redis_port, api_port = user_env
    gateway = yaml.safe_load((config_dir / "gateway.yaml").read_text())
    gateway.setdefault("audit", {})["rotate_bytes"] = 65_536  # the smallest allowed
    (config_dir / "gateway.yaml").write_text(yaml.safe_dump(gateway))
    log = (home.parent / "up.log").open("w")
    up = subprocess.Popen(
        [*AIGW, "up", "--port", str(api_port)], env=env, stdout=subprocess.PIPE, stderr=log, text=True
    )
    try:
        token_match = re.search(r"AIGW_TOKEN=(aigw_\S+)", "".join(_read_banner(up)))
        assert token_match
        headers = {"Authorization": f"Bearer {token_match.group(1)}"}
        prompt = "Summarise the quarterly figures for the board. " * 40  # ~2 KB, logged with the answer
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", headers=headers, timeout=30) as client:
            for _ in range(200):
                if (home / "audit.log.000001").exists():
                    break
                response = client.post("/v1/jobs", params={"wait": 10}, json={"prompt": prompt})
                assert response.status_code == 200, response.text
            else:
                raise AssertionError("the audit log never rotated")
        verify = subprocess.run(
            [*AIGW, "audit", "verify"], env=env, capture_output=True, text=True, timeout=60
        )  # fmt: skip
        assert verify.returncode == 0, verify.stdout + verify.stderr
        files = re.search(r"chain intact across (\d+) files", verify.stdout)
        assert files and int(files.group(1)) >= 2, verify.stdout
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
        assert up.stdout is not None
        up.stdout.close()
        log.close()
