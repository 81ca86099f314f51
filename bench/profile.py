"""py-spy sampling of the aigw processes during a measured phase, and a summary of the samples.

Records collapsed stacks (``--format raw``, loadable in speedscope) and reduces them to the top
functions by self and inclusive share of the active (non-idle) samples, and by package.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<path>[^()]*)\)$")


def py_spy_binary() -> str | None:
    venv_bin = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "py-spy"
    return str(venv_bin) if venv_bin.exists() else shutil.which("py-spy")


@dataclass
class Profiler:
    """``with Profiler({"api": pid, ...}, out_dir, "throughput"):`` samples each pid at ``rate`` Hz."""

    targets: dict[str, int]
    out_dir: Path
    tag: str
    rate: int = 200
    files: dict[str, Path] = field(default_factory=dict)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __enter__(self) -> Profiler:
        binary = py_spy_binary()
        if binary is None:
            raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for label, pid in self.targets.items():
            out = self.out_dir / f"profile-{self.tag}-{label}.txt"
            argv = [binary, "record", "--pid", str(pid), "--rate", str(self.rate), "--format", "raw",
                    "--nolineno", "--output", str(out)]  # fmt: skip
            self._procs[label] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True,
            )  # fmt: skip
            self.files[label] = out
        return self

    def __exit__(self, *_exc: object) -> None:
        for process in self._procs.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for process in self._procs.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def summaries(self, top: int = 15) -> dict[str, dict[str, Any]]:
        return {label: summarise(path, top) for label, path in self.files.items() if path.exists()}


def _short(path: str) -> tuple[str, str]:
    """(display path, package) for a frame's file; py-spy already shortens paths to sys.path entries."""
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/lib/python3":
                path = path.split("/", 1)[-1]
    top = path.split("/", 1)[0].removesuffix(".py")
    if top in ("gateway", "workers", "tests", "bench"):
        return path, f"aigw:{top}"
    if top in sys.stdlib_module_names:
        return path, f"stdlib:{top}"
    return path, top


def _frames(stack: str) -> list[tuple[str, str]]:
    """[(function label, package)] from one collapsed stack, outermost first (process/thread dropped)."""
    frames: list[tuple[str, str]] = []
    for raw in stack.split(";"):
        match = _FRAME.match(raw.strip())
        if match is None:
            continue  # "process 123:..." and "thread (0x..)" headers
        path, package = _short(match["path"])
        frames.append((f"{match['func']} ({path})", package))
    return frames


def summarise(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive shares (% of active samples) per function, and self share per package."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        if not frames:
            continue
        total += count
        self_counts[frames[-1][0]] += count
        packages[frames[-1][1]] += count
        for label in {label for label, _package in frames}:
            inclusive[label] += count

    def share(counter: Counter[str], skip_scaffolding: bool = False) -> list[dict[str, Any]]:
        # in ~every sample (the entry point, the event loop): says nothing about where time goes
        rows = [(k, v) for k, v in counter.most_common() if not (skip_scaffolding and v >= 0.97 * total)]
        return [{"function": k, "pct": round(100 * v / total, 1)} for k, v in rows[:top]]

    return {
        "file": str(path),
        "samples": total,
        "self": share(self_counts),
        "inclusive": share(inclusive, skip_scaffolding=True),
        "packages": [{"package": k, "pct": round(100 * v / total, 1)} for k, v in packages.most_common(top)]
        if total
        else [],
    }
