"""Child processes kept alive: start them, restart one that dies (backing off), stop them all.

A child is either exec'd (``argv``) or forked from this process (``target``, a ``module:function``
it calls). `aigw up` (gateway/stack.py) imports the API's and the workers' modules once and forks
its API, its workers and its audit writer from itself, after ``gc.freeze()``, so their pages are
shared instead of each child importing its own copy. A process that forks holds no other thread,
event loop or open connection (``fork_child`` refuses while another thread runs).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# No loguru at import: the redis keeper imports this module and must stay small (loguru brings
# asyncio and ssl). The supervisor imports it when it first has something to say.


class ForkedProcess:
    """A child forked from this process, with the part of ``subprocess.Popen``'s interface the
    supervisor uses (``poll``, ``wait``, ``send_signal``, ``kill``, ``returncode``)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: gone, and how it ended is not known
                self.returncode = -1
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(0.02)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@dataclass
class Child:
    """A supervised child process and how to start it again: exec ``argv`` with ``env``, or, with
    ``target`` (``"module:function"``), fork this process and call it with ``kwargs``."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | ForkedProcess | None = None
    restarts: int = 0
    next_start: float = 0.0
    target: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: stopped only once every other child has exited (the audit writer: the workers' last events)
    stop_last: bool = False

    def start(self) -> None:
        if self.target:
            self.process = fork_child(self.name, self.target, self.kwargs, self.env)
            return
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

    def watch_signals(self) -> None:
        """SIGTERM and SIGHUP set ``stop_event`` from now on (``supervise`` then returns and the
        caller stops everything in order). Call it before starting children: a signal that lands
        while they start is kept, where the default action would kill this process and leave them.
        SIGHUP too: a closed terminal must stop the stack cleanly, embedded Redis included."""
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda *_: self.stop_event.set())

    def supervise(self) -> None:
        """Restart children that die until SIGTERM, SIGINT, SIGHUP or ``stop_event``."""
        self.watch_signals()
        try:
            while not self.stop_event.wait(0.5):
                for child in self.children:
                    self._restart_if_dead(child)
        except KeyboardInterrupt:
            pass

    def _restart_if_dead(self, child: Child) -> None:
        if child.alive() or time.monotonic() < child.next_start:
            return
        from loguru import logger

        code = child.process.returncode if child.process else None
        child.restarts += 1
        child.next_start = time.monotonic() + min(30.0, 0.5 * 2 ** min(child.restarts, 6))
        logger.warning("{} exited with code {}; restarting (restart #{})", child.name, code, child.restarts)
        child.start()

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM every child (workers drain in-flight jobs), then kill what is left at the deadline;
        the ``stop_last`` ones once the others have exited, with what is left of ``grace`` (at least
        10 s)."""
        self.stop_event.set()
        deadline = time.monotonic() + grace
        first = [child for child in self.children if not child.stop_last]
        _stop_all(first, deadline)
        _stop_all([c for c in self.children if c.stop_last], max(deadline, time.monotonic() + 10))


def _stop_all(children: list[Child], deadline: float) -> None:
    for child in children:
        if child.alive() and child.process is not None:
            child.process.send_signal(signal.SIGTERM)
    for child in children:
        if child.process is None:
            continue
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def fork_child(
    name: str, target: str, kwargs: dict[str, Any], env: dict[str, str] | None = None
) -> ForkedProcess:
    """Fork this process; the child becomes ``name``, takes ``env`` (if given) as its environment
    and runs ``target(**kwargs)``, then exits with its return value (an int; None is 0). Refused
    while another thread runs: a fork copies only the calling thread, and any lock another one held
    stays locked in the child for good."""
    if threading.active_count() > 1:
        raise RuntimeError(f"cannot fork {name}: other threads are running ({threading.enumerate()})")
    parent = os.getpid()
    gc.freeze()  # what is imported so far stays out of the collector's way: its pages stay shared
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return ForkedProcess(pid)
    code = 1
    try:
        _become_child(name, parent, env)
        module, _, function = target.partition(":")
        result = getattr(importlib.import_module(module), function)(**kwargs)
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)  # never the parent's atexit handlers or its finally blocks


def _become_child(name: str, parent: int, env: dict[str, str] | None) -> None:
    """In a forked child: what an exec'd child of ``subprocess`` starts with (no descriptor but
    stdin, stdout and stderr; ``env``; a fresh interpreter's signals and logging), SIGTERM when the
    parent dies (as ``parent_death_signal`` gives an exec'd child), and ``name`` as its process name."""
    # The parent's open files are not the child's: `aigw up`'s stack lock above all, which would
    # stay held (and the stack look alive) for as long as a child drains. Nothing in the parent at
    # fork time wraps a descriptor it could later close by number (see fork_child's callers).
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    null = os.open(os.devnull, os.O_RDONLY)  # stdin: a terminal's input is `aigw up`'s
    os.dup2(null, 0)
    os.close(null)
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # ignored stays ignored, as on exec
        signal.signal(signal.SIGINT, signal.default_int_handler)
    from loguru import logger  # the parent's level is its own (`aigw up` logs warnings only)

    logger.remove()
    logger.add(
        sys.stderr,
        level=os.environ.get("AIGW_LOG_LEVEL") or "INFO",
        format="{time:HH:mm:ss} {level:<7} {message}",
        diagnose=False,  # a traceback must not print local variables: prompts, PII, keys
    )
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        libc.prctl(15, ctypes.c_char_p(name.encode()[:15]))  # PR_SET_NAME: what ps and top show
    if os.getppid() != parent:  # the parent died before the prctl: nobody will signal us
        os.kill(os.getpid(), signal.SIGTERM)


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
