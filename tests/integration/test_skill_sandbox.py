"""Skill scripts in the bubblewrap sandbox, attacked the way the issue's attacker did.

Each attack runs in a worker-like process whose environment holds a provider key and REDIS_URL,
as a real worker's does, so ``/proc/<parent>/environ`` would give them away without the sandbox
(the control tests run the same attacks with ``skills.sandbox: none`` and find them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gateway.config import SandboxConfig, SandboxLimits
from gateway.errors import SkillUnavailableError
from gateway.skills import DiskSkills, remove_tree
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
work_root = Path(args["work_root"]) if args["work_root"] else None
sandbox = SandboxConfig.model_validate(args["sandbox"])
runner = SkillRunner(environ=os.environ, sandbox=sandbox, work_root=work_root)
skill = DiskSkills(Path(args["skills"])).load("evil")
if args["loop"] == "uvloop":  # as workers/main.py runs a worker
    import uvloop

    loop_factory = uvloop.new_event_loop
else:
    loop_factory = None
try:
    with asyncio.Runner(loop_factory=loop_factory) as loop:
        prepared = loop.run(runner.prepare(skill, args["inputs"]))
    print(json.dumps({"facts": prepared.facts}))
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

    def start(
        self,
        inputs: dict[str, Any],
        sandbox: dict[str, Any] | None = None,
        *,
        loop: str = "asyncio",
        work_root: Path | None = None,
    ) -> subprocess.Popen[str]:
        args = {
            "skills": str(self.skills),
            "inputs": inputs,
            "sandbox": sandbox or {},
            "loop": loop,
            "work_root": str(work_root) if work_root else None,
        }
        return subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(args)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    def run(
        self,
        inputs: dict[str, Any],
        sandbox: dict[str, Any] | None = None,
        *,
        loop: str = "asyncio",
        work_root: Path | None = None,
    ) -> tuple[dict[str, Any], str]:
        """(the parsed answer, the raw stdout, to search for leaked secrets)."""
        return self.result(self.start(inputs, sandbox, loop=loop, work_root=work_root))

    @staticmethod
    def result(proc: subprocess.Popen[str]) -> tuple[dict[str, Any], str]:
        stdout, stderr = proc.communicate(timeout=90)
        assert proc.returncode == 0, stderr
        answer: dict[str, Any] = json.loads(stdout)
        return answer, stdout


@pytest.fixture
def worker(tmp_path: Path, redis_url: str) -> Worker:
    skills = tmp_path / "skills"
    shutil.copytree(EVIL, skills / "evil")
    return Worker(skills, redis_url)


@pytest.fixture
def work_root() -> Iterator[Path]:
    """An empty folder for the runner's workspaces that run_as (65534) can pass through, unlike
    pytest's tmp_path (below a 0700 folder of root's)."""
    folder = Path(tempfile.mkdtemp(prefix="aigw-test-work-"))
    folder.chmod(0o755)
    yield folder
    remove_tree(folder)


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


def test_skill_sandbox_default_limits_allow_few_processes(worker: Worker) -> None:
    """Memory is per process: the defaults keep processes x memory_mb small (16 x 512 MiB)."""
    facts = worker.run({"attack": "limits"})[0]["facts"]
    assert facts["memory"] == "MemoryError"  # 2 GiB in one process
    assert facts["processes"].startswith("BlockingIOError after ")
    assert int(facts["processes"].rsplit(" ", 1)[1]) < 16


def test_skill_sandbox_dev_is_read_only_and_dev_shm_a_small_tmpfs(worker: Worker) -> None:
    facts = worker.run({"attack": "shm", "size_mb": 64})[0]["facts"]
    assert facts["shm"].startswith("OSError after "), facts  # ENOSPC: host RAM is not up for grabs
    assert int(facts["shm"].rsplit(" ", 2)[1]) <= 16
    assert facts["dev"] == "OSError after 0 MiB"  # EROFS


@pytest.mark.parametrize("sleep", [0, 30])
def test_skill_sandbox_disk_written_by_a_run_is_capped(worker: Worker, work_root: Path, sleep: int) -> None:
    """Past ``disk_mb`` (in /work and /tmp together) the job fails; a script that keeps running is
    killed at once, long before its timeout."""
    started = time.monotonic()
    answer, _ = worker.run(
        {"attack": "disk", "size_mb": 24, "sleep": sleep}, {"limits": {"disk_mb": 8}}, work_root=work_root
    )
    assert answer["error"] == "skill_failed", answer
    assert "wrote more than 8 MiB into its working directory" in answer["message"]
    assert time.monotonic() - started < 15
    assert list(work_root.iterdir()) == []


# --- privileges, cleanup, command lines -------------------------------------------------------------


def test_skill_sandbox_runs_on_uvloop_like_a_worker(worker: Worker, work_root: Path) -> None:
    """The workers' loop is uvloop, whose subprocess_exec takes no user=/group=: a root worker's scripts
    still start, unprivileged inside and (as run_as) on the host: every process below the worker."""
    proc = worker.start({"attack": "whoami", "sleep": 2}, loop="uvloop", work_root=work_root)
    host_uids: dict[str, int] = {}
    deadline = time.monotonic() + 20
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            for pid in descendants(proc.pid):  # the worker's own du (the disk check) aside
                with contextlib.suppress(OSError, StopIteration):
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    script = any(arg.endswith(b"/attack.py") for arg in argv)
                    what = "bwrap" if argv[0].endswith(b"bwrap") else "script" if script else None
                    status = Path(f"/proc/{pid}/status").read_text()
                    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
                    if what is not None:
                        host_uids[what] = int(uid_line.split()[1])
            time.sleep(0.05)
    finally:
        answer, _ = worker.result(proc)
    assert answer == {"facts": {"uid": 65534}}
    expected = 65534 if os.geteuid() == 0 else os.geteuid()
    assert host_uids == {"bwrap": expected, "script": expected}


def test_skill_sandbox_a_deep_tree_in_work_is_cleaned_up(worker: Worker, work_root: Path) -> None:
    answer, _ = worker.run({"attack": "deep"}, work_root=work_root)
    assert answer == {"facts": {"depth": 1500}}
    assert list(work_root.iterdir()) == []


def test_skill_sandbox_a_deep_tree_in_aigw_skill_test_is_a_row(tmp_path: Path, work_root: Path) -> None:
    skills = tmp_path / "skills"
    shutil.copytree(EVIL, skills / "evil")
    for kind, data in {
        "fixtures": {"inputs": {"attack": "deep"}, "model_response": "ok"},
        "expected": {"risk_flags": [], "facts": {"depth": 1500}, "outputs": {"answer": "ok"}},
    }.items():
        (skills / "evil" / "test" / kind).mkdir(parents=True)
        (skills / "evil" / "test" / kind / "deep.json").write_text(json.dumps(data))
    temp = work_root
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(tmp_path),
        "AIGW_HOME": str(tmp_path / "home"),
        "TMPDIR": str(temp),
        "COLUMNS": "300",
    }
    done = subprocess.run(
        [str(Path(sys.executable).parent / "aigw"), "skill", "test", "evil", "--dir", str(skills)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert done.returncode == 0, done.stdout
    assert "evil@1.0.0" in done.stdout and "deep" in done.stdout and "1 passed, 0 failed" in done.stdout
    assert list(temp.iterdir()) == []


def test_skill_sandbox_inputs_and_env_are_not_on_a_command_line(worker: Worker, work_root: Path) -> None:
    """/proc/<pid>/cmdline is readable by every local user: bwrap gets the variables from an fd."""
    token = f"tok-{uuid.uuid4().hex}"
    setting = f"set-{uuid.uuid4().hex}"
    worker.env["EVIL_SETTING"] = setting
    proc = worker.start({"attack": "wait", "token": token, "sleep": 3}, work_root=work_root)
    seen_bwrap = False
    deadline = time.monotonic() + 20
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            for pid, cmdline in command_lines().items():
                if pid == proc.pid:
                    continue  # the test's worker got the inputs on its own argv
                assert token.encode() not in cmdline and setting.encode() not in cmdline, cmdline
                seen_bwrap |= b"bwrap" in cmdline and str(work_root).encode() in cmdline
            time.sleep(0.05)
    finally:
        answer, _ = worker.result(proc)
    assert seen_bwrap, "the script ended before its sandbox was looked at"
    assert answer == {"facts": {"token": token, "setting": setting}}


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


def descendants(root: int) -> list[int]:
    """The processes below ``root``, from the parent pids in /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def command_lines() -> dict[int, bytes]:
    lines = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:
                continue
    return lines


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
