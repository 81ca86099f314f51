"""Children forked from the supervisor's process (how `aigw up` starts its API, workers and audit
writer): restarted after kill -9, stopped with SIGTERM, the ``stop_last`` ones after the others."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway.supervisor import Child, ForkedProcess, Supervisor, fork_child
from tests.integration.harness import wait_until


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _drain_then_mark(marker: str, drain: float) -> None:
    """A worker: on SIGTERM it takes ``drain`` seconds, then leaves ``marker``."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait(60)
    time.sleep(drain)
    Path(marker).write_text("drained")


def _note_marker_at_stop(marker: str, note: str) -> None:
    """An audit writer: on SIGTERM it notes whether the worker had drained already."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait(60)
    Path(note).write_text(str(Path(marker).exists()))


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def _in_a_fresh_process(scenario: str, *args: str) -> None:
    """Run ``scenario`` in a new interpreter: the supervisor refuses to fork while other threads run,
    and the test process has some (earlier tests' servers), as `aigw up` never does."""
    root = Path(__file__).resolve().parents[2]
    code = f"import sys; from tests.unit.test_supervisor import {scenario} as s; s(*sys.argv[1:])"
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=root, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(not Path("/proc/self/comm").exists(), reason="reads /proc")
def test_a_forked_child_named_restarted_after_kill_9_and_stopped_by_sigterm() -> None:
    _in_a_fresh_process("_restart_scenario")


def test_stop_last_children_are_stopped_after_the_others_have_exited(tmp_path: Path) -> None:
    _in_a_fresh_process("_stop_order_scenario", str(tmp_path))


def _restart_scenario() -> None:
    child = Child("aigw-test-sleep", [], {}, target=f"{__name__}:_sleep", kwargs={"seconds": 60})
    supervisor = Supervisor([child])
    supervisor.start_all()
    try:
        assert isinstance(child.process, ForkedProcess)
        first = child.process.pid
        wait_until(lambda: _comm(first) == "aigw-test-sleep", "the child to name itself")
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: not child.alive(), "the child to die")
        assert child.process.returncode == -signal.SIGKILL
        supervisor._restart_if_dead(child)  # what supervise() does every half second
        assert child.alive() and child.process.pid != first and child.restarts == 1
    finally:
        supervisor.stop(grace=5)
    assert child.process.returncode == -signal.SIGTERM


def _stop_order_scenario(directory: str) -> None:
    tmp_path = Path(directory)
    marker, note = str(tmp_path / "drained"), str(tmp_path / "note")
    drains = {"marker": marker, "drain": 0.5}
    worker = Child("aigw-test-w", [], {}, target=f"{__name__}:_drain_then_mark", kwargs=drains)
    notes = {"marker": marker, "note": note}
    audit = Child(
        "aigw-test-a", [], {}, target=f"{__name__}:_note_marker_at_stop", kwargs=notes, stop_last=True
    )
    supervisor = Supervisor([audit, worker])
    supervisor.start_all()
    time.sleep(0.3)  # both have their SIGTERM handlers
    supervisor.stop(grace=10)
    assert Path(note).read_text() == "True"
    assert worker.process is not None and worker.process.returncode == 0


def test_no_fork_while_another_thread_runs() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    try:
        with pytest.raises(RuntimeError, match="other threads are running"):
            fork_child("aigw-test", f"{__name__}:_sleep", {"seconds": 0})
    finally:
        stop.set()
        thread.join()
