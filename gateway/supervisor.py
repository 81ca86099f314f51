"""Child processes kept alive: start them, restart one that dies (backing off), stop them all."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
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
        self.process = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL)

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
