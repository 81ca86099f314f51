"""Skill scripts in the bubblewrap sandbox, attacked the way the issue's attacker did.

Each attack runs in a worker-like process whose environment holds a provider key and REDIS_URL,
as a real worker's does, so ``/proc/<parent>/environ`` would give them away without the sandbox
(the control tests run the same attacks with ``skills.sandbox: none`` and find them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from gateway.config import SandboxConfig, SandboxLimits
from gateway.errors import SkillUnavailableError
from gateway.skills import DiskSkills
from workers.skill_runner import SkillRunner

EVIL = Path(__file__).resolve().parents[1] / "fixtures" / "skills" / "evil"
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

WORKER = """
import asyncio, json, os, sys
from pathlib import Path
from gateway.config import SandboxConfig
from gateway.errors import GatewayError
from gateway.skills import DiskSkills
from workers.skill_runner import SkillRunner

args = json.loads(sys.argv[1])
runner = SkillRunner(environ=os.environ, sandbox=SandboxConfig.model_validate(args["sandbox"]))
skill = DiskSkills(Path(args["skills"])).load("evil")
try:
    print(json.dumps({"facts": asyncio.run(runner.prepare(skill, args["inputs"])).facts}))
except GatewayError as exc:
    print(json.dumps({"error": exc.type, "message": exc.message}))
"""


class Worker:
    """Runs the evil skill the way a worker does, with secrets in the worker's own environment."""

    def __init__(self, skills: Path, redis_url: str) -> None:
        self.skills = skills
        self.secret = f"sk-live-{uuid.uuid4().hex}"
        self.env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "OPENAI_API_KEY": self.secret,
            "REDIS_URL": redis_url,
        }

    def run(
        self, inputs: dict[str, Any], sandbox: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], str]:
        """(the parsed answer, the raw stdout, to search for leaked secrets)."""
        args = {"skills": str(self.skills), "inputs": inputs, "sandbox": sandbox or {}}
        done = subprocess.run(
            [sys.executable, "-c", WORKER, json.dumps(args)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=90,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer, done.stdout


@pytest.fixture
def worker(tmp_path: Path, redis_url: str) -> Worker:
    skills = tmp_path / "skills"
    shutil.copytree(EVIL, skills / "evil")
    return Worker(skills, redis_url)


def redis_port(url: str) -> int:
    port = redis.Redis.from_url(url).connection_pool.connection_kwargs["port"]
    assert isinstance(port, int)
    return port


# --- (a) the worker's environment -----------------------------------------------------------------


def test_skill_sandbox_a_script_sees_no_process_of_the_worker_and_no_secret(worker: Worker) -> None:
    answer, raw = worker.run({"attack": "environ"})
    assert worker.secret not in raw and "REDIS_URL" not in raw
    assert answer["facts"]["found"] == []
    # its own PID namespace: bwrap's init, the script and what it runs; nothing of the host
    assert all(int(pid) < 10 for pid in answer["facts"]["pids"]), answer["facts"]["pids"]


def test_skill_sandbox_control_unsandboxed_the_same_script_finds_the_key(worker: Worker) -> None:
    """The attack is real: with the opt-out it reads the provider key from its parent's environ."""
    _, raw = worker.run({"attack": "environ"}, {"mode": "none"})
    assert worker.secret in raw


# --- (b) the network --------------------------------------------------------------------------------


def test_skill_sandbox_a_script_cannot_reach_redis_on_loopback(
    worker: Worker, redis_url: str, redis_client: redis.Redis
) -> None:
    answer, _ = worker.run({"attack": "redis", "port": redis_port(redis_url)})
    assert answer["facts"] == {"connected": False, "error": "ConnectionRefusedError"}
    assert redis_client.get("aigw:evil:planted") is None


def test_skill_sandbox_network_is_shared_only_when_the_skill_declares_it(
    worker: Worker, redis_url: str, redis_client: redis.Redis
) -> None:
    manifest = worker.skills / "evil" / "SKILL.md"
    manifest.write_text(
        manifest.read_text().replace("bins: [python3]\n", "bins: [python3]\n      network: true\n")
    )
    answer, _ = worker.run({"attack": "redis", "port": redis_port(redis_url)})
    assert answer["facts"]["connected"] is True  # the host's network, loopback included: trusted skills only
    assert redis_client.get("aigw:evil:planted") == b"yes"


# --- (c) its own folder -------------------------------------------------------------------------------


def test_skill_sandbox_a_disk_skill_cannot_write_into_its_own_folder(worker: Worker) -> None:
    folder = worker.skills / "evil"
    before = {
        p.relative_to(folder): (p.read_bytes(), p.stat().st_mode) for p in folder.rglob("*") if p.is_file()
    }
    answer, _ = worker.run({"attack": "tamper"})
    assert sorted(answer["facts"]) == ["append", "chmod", "create", "unlink"]
    assert "done" not in answer["facts"].values()  # each refused: a read-only copy, not its own files
    after = {
        p.relative_to(folder): (p.read_bytes(), p.stat().st_mode) for p in folder.rglob("*") if p.is_file()
    }
    assert after == before


# --- (d) a child that outlives the step ---------------------------------------------------------------


def test_skill_sandbox_a_setsid_child_dies_with_the_step(worker: Worker) -> None:
    token = f"{uuid.uuid4().int % 10**12:012d}"  # digits: it is also sleep's fraction
    marker = Path(f"/tmp/aigw-escaped-{token}")
    answer, _ = worker.run({"attack": "escape", "token": token})
    assert answer["facts"] == {"spawned": True}
    assert_no_process_with(token)  # gone now, so the marker can never be written
    assert not marker.exists()


def test_skill_sandbox_control_unsandboxed_a_setsid_child_escapes(worker: Worker) -> None:
    token = f"{uuid.uuid4().int % 10**12:012d}"  # digits: it is also sleep's fraction
    worker.run({"attack": "escape", "token": token}, {"mode": "none"})
    try:
        assert processes_with(token), "the control expects the unsandboxed child to survive its step"
    finally:
        for pid in processes_with(token):
            os.kill(pid, 9)
        Path(f"/tmp/aigw-escaped-{token}").unlink(missing_ok=True)


# --- (e) resource limits ---------------------------------------------------------------------------


def test_skill_sandbox_memory_file_size_and_processes_are_limited(worker: Worker) -> None:
    limits = {"memory_mb": 256, "file_size_mb": 1, "processes": 8}
    answer, _ = worker.run({"attack": "limits"}, {"limits": limits})
    facts = answer["facts"]
    assert facts["memory"] == "MemoryError"
    assert facts["file_size"] == "OSError"  # EFBIG (Python ignores SIGXFSZ)
    assert facts["processes"].startswith("BlockingIOError after ")
    assert int(facts["processes"].rsplit(" ", 1)[1]) < 8


def test_skill_sandbox_cpu_time_is_limited(worker: Worker) -> None:
    answer, _ = worker.run({"attack": "cpu"}, {"limits": {"cpu_seconds": 1}})
    assert answer["error"] == "skill_failed"
    assert "was killed by signal 24 (SIGXCPU, its CPU time limit)" in answer["message"]


# --- without bubblewrap ----------------------------------------------------------------------------


def test_skill_sandbox_missing_bwrap_makes_the_skill_unavailable_and_says_what_to_install(
    tmp_path: Path, worker: Worker
) -> None:
    runner = SkillRunner(environ={"PATH": str(tmp_path)}, sandbox=SandboxConfig(limits=SandboxLimits()))
    skill = DiskSkills(worker.skills).load("evil")
    with pytest.raises(SkillUnavailableError, match=r"install bubblewrap .*or set skills.sandbox: none"):
        runner.check_available(skill)


def test_skill_sandbox_missing_bwrap_in_aigw_skill_test_says_what_to_install(tmp_path: Path) -> None:
    aigw = Path(sys.executable).parent / "aigw"
    env = {
        "PATH": str(tmp_path),
        "HOME": str(tmp_path),
        "AIGW_HOME": str(tmp_path / "home"),
        "COLUMNS": "300",
    }
    done = subprocess.run(
        [str(aigw), "skill", "test", "summarize", "--dir", str(ROOT / "skills")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "skill_unavailable" in done.stdout and "install bubblewrap" in done.stdout


# --- helpers -------------------------------------------------------------------------------------


def processes_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if token.encode() in cmdline:
                found.append(int(entry.name))
    return found


def assert_no_process_with(token: str) -> None:
    deadline = time.monotonic() + 5
    while processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(token) == []
