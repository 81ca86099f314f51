"""Child processes kept alive: start them, restart one that dies (backing off), stop them all."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from loguru import logger


@dataclass
class Child:
    """A supervised child process and how to start it again."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0

    def start(self) -> None:
        # SIGTERM (a clean drain) if the supervisor dies, even by kill -9: no orphaned workers
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdin=subprocess.DEVNULL, preexec_fn=parent_death_signal(signal.SIGTERM)
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Supervisor:
    children: list[Child] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)

    def start_all(self) -> None:
        for child in self.children:
            child.start()

    def supervise(self) -> None:
        """Restart children that die until SIGTERM, SIGINT, SIGHUP or ``stop_event``."""
        # SIGHUP too: a closed terminal must stop the stack cleanly, embedded Redis included
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda *_: self.stop_event.set())
        try:
            while not self.stop_event.wait(0.5):
                for child in self.children:
                    self._restart_if_dead(child)
        except KeyboardInterrupt:
            pass

    def _restart_if_dead(self, child: Child) -> None:
        if child.alive() or time.monotonic() < child.next_start:
            return
        code = child.process.returncode if child.process else None
        child.restarts += 1
        child.next_start = time.monotonic() + min(30.0, 0.5 * 2 ** min(child.restarts, 6))
        logger.warning("{} exited with code {}; restarting (restart #{})", child.name, code, child.restarts)
        child.start()

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM every child (workers drain in-flight jobs), then kill what is left at the deadline."""
        self.stop_event.set()
        for child in self.children:
            if child.alive() and child.process is not None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()


def parent_death_signal(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child get ``sig`` when its parent dies (Linux's
    PR_SET_PDEATHSIG); None elsewhere, where an orphan is adopted by the next start instead."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(1, int(sig))  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the prctl: nobody will signal us
            os.kill(os.getpid(), int(sig))

    return preexec


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` names a live process (ours or not; one we may not signal counts as live)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM a process that is not our child (no ``wait()`` on it), then SIGKILL at the deadline."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
