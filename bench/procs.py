"""Child processes the harness owns (killed with it, even on SIGKILL) and /proc readings of them."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to this child when the harness dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """A subprocess in its own session (Ctrl-C reaches only the harness, which stops it in order)."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.name = name
        self.log = log
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(
            list(argv),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, chars: int = 800) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""

    def stop(self, grace: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """Signal, wait up to ``grace`` seconds, then SIGKILL; never leaves the process behind."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log_file.close()


def guard(pid: int, directory: Path) -> subprocess.Popen[bytes]:
    """A watchdog for when the harness is killed outright (SIGKILL): it ends ``pid`` (a child
    started by code we do not control, so without a parent-death signal) and removes ``directory``.
    """
    code = (
        "import os, shutil, signal, sys, time\n"
        "def end(*_):\n"
        "    pid = int(sys.argv[1])\n"
        "    try:\n"
        "        os.kill(pid, signal.SIGTERM)\n"
        "        for _ in range(100):\n"
        "            os.kill(pid, 0)\n"
        "            time.sleep(0.1)\n"
        "    except OSError:\n"
        "        pass\n"
        "    shutil.rmtree(sys.argv[2], ignore_errors=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, end)\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "while True: signal.pause()\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(pid), str(directory)],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


def end_guard(process: subprocess.Popen[bytes]) -> None:
    """Stop a watchdog without letting it act (it would only SIGTERM an already stopped pid)."""
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc/PID/stat; 0.0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # fields 14 and 15 of proc(5)


def rss_bytes(pid: int) -> int:
    """VmRSS of a live process, from /proc/PID/status; 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def pss_bytes(pid: int) -> int:
    """Pss of a live process (its RSS with shared pages split among their users), from
    /proc/PID/smaps_rollup; 0 if it is gone or the kernel has no rollup."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children, their children, ...), from /proc/PID/stat."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def context_switches(pid: int) -> int:
    """Voluntary context switches (the process blocked, e.g. on a Redis reply) so far; 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq) / _CLOCK_TICKS, steal / _CLOCK_TICKS


def self_cpu_seconds() -> float:
    """CPU of the harness itself (the load generator), all threads."""
    times = os.times()
    return times.user + times.system


class RssSampler:
    """Samples the summed RSS of some processes in a thread; keeps the peak of the sum."""

    def __init__(self, pids: Iterable[int], interval: float = 0.05) -> None:
        self.pids = list(pids)
        self.interval = interval
        self.peak_total = 0
        self.peak_by_pid: dict[int, int] = dict.fromkeys(self.pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()

    def sample(self) -> None:
        total = 0
        for pid in self.pids:
            rss = rss_bytes(pid)
            total += rss
            self.peak_by_pid[pid] = max(self.peak_by_pid[pid], rss)
        self.peak_total = max(self.peak_total, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)


def wait_for(predicate: object, what: str, timeout: float, interval: float = 0.05) -> None:
    """Poll ``predicate()`` until true; TimeoutError naming ``what`` otherwise."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
