"""The skill scripts' sandbox: a bubblewrap (``bwrap``) command line for one script, from a small policy.

Each script runs in fresh namespaces (``--unshare-all``): its own PID namespace (its ``/proc``
shows only itself, and when it exits the namespace and everything still running in it die), no
network unless the skill declares ``requires.network``, uid and gid 65534 inside. The filesystem
is a read-only root holding the system directories and a few files of ``/etc``, the skill's
bundle (a copy, read-only, at ``/skill``), the run's working directory (read-write, at ``/work``,
also ``/tmp``), a fresh read-only ``/dev`` whose ``/dev/shm`` is a tmpfs of ``SHM_BYTES``, and the operator's
``read_paths``; nothing else of the host exists in there. bwrap starts with an empty environment,
since the sandbox's PID 1 is bwrap itself and its environ is readable; the script's variables are
set with ``--setenv`` options that bwrap reads from a file descriptor (``--args FD``,
``hidden_args``), so no input or ``requires.env`` value is on a command line that every local
user can read in ``/proc/<pid>/cmdline``. ``prlimit`` (util-linux), inside the sandbox, sets CPU,
memory, process and file-size limits before the script starts: set there, RLIMIT_NPROC counts
only the sandbox's own processes.

A worker running as root starts bwrap through ``setpriv`` (util-linux) as ``run_as`` (65534 by
default), its groups cleared: RLIMIT_NPROC does not apply to root, and an unprivileged host uid
reads nothing the sandbox can reach by mistake. (``setpriv`` rather than the ``user=`` arguments
of ``create_subprocess_exec``, which uvloop, the workers' loop, does not accept.)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.config import SandboxConfig, SandboxLimits
from gateway.errors import SkillUnavailableError

#: the PATH scripts see, and where their bins are looked up (the host's, bound read-only)
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
#: where the skill's bundle and the run's working directory appear inside the sandbox
SKILL_DIR = "/skill"
WORK_DIR = "/work"
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install it)"

#: top-level system directories: bound read-only, or recreated as the symlinks they are (merged /usr)
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: what of /etc a program needs to start and find its libraries; never shadow, never the host's secrets
_ETC = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "passwd", "group",
    "nsswitch.conf", "ssl", "ca-certificates", "mime.types",
)  # fmt: skip
#: added for a skill that declares ``requires.network``
_ETC_NETWORK = ("resolv.conf", "hosts", "host.conf", "gai.conf", "services", "protocols")
_MIB = 1_048_576
#: the size of the sandbox's /dev/shm (a tmpfs: host RAM outside every rlimit, so kept small)
SHM_BYTES = 16 * _MIB


@dataclass(frozen=True)
class SandboxRun:
    """One script's sandbox: what it runs, with which variables, over which directories."""

    argv: Sequence[str]
    env: Mapping[str, str]
    bundle: Path
    workdir: Path
    network: bool = False


@dataclass(frozen=True)
class Sandbox:
    """The sandbox policy of one worker; ``command`` turns a ``SandboxRun`` into bwrap's argv."""

    bwrap: str | None
    prlimit: str | None
    #: ``setpriv`` (util-linux): how a root worker drops to ``run_as`` before bwrap starts
    setpriv: str | None = None
    limits: SandboxLimits = SandboxLimits()
    read_paths: tuple[str, ...] = ()
    run_as: int = 65534

    @classmethod
    def from_config(cls, config: SandboxConfig, environ: Mapping[str, str]) -> Sandbox:
        """``bwrap`` is looked up on the worker's PATH, ``prlimit`` where the scripts will look."""
        return cls(
            bwrap=shutil.which("bwrap", path=environ.get("PATH", os.defpath)),
            prlimit=shutil.which("prlimit", path=SANDBOX_PATH),
            setpriv=shutil.which("setpriv", path=SANDBOX_PATH + ":/usr/sbin:/sbin"),
            limits=config.limits,
            read_paths=tuple(config.read_paths),
            run_as=config.run_as,
        )

    def check(self, where: str) -> None:
        """SkillUnavailableError when this host cannot sandbox a script, saying what to install."""
        if self.bwrap is None:
            reason = f"bubblewrap (bwrap) is not installed: {INSTALL_HINT}"
        elif self.prlimit is None:
            reason = "prlimit (util-linux) is not installed in /usr/bin or /bin"
        elif self.setpriv is None and self.host_user() is not None:
            reason = "setpriv (util-linux) is not installed: a root worker needs it to drop privileges"
        else:
            return
        raise SkillUnavailableError(
            f"{where} cannot run: {reason}, or set skills.sandbox: none in gateway.yaml "
            "for trusted skills only",
            reasons=[reason],
        )

    def host_user(self) -> int | None:
        """The uid (and gid) bwrap is started as: ``run_as`` when the worker is root, else its own."""
        return self.run_as if os.geteuid() == 0 else None

    def command(self, run: SandboxRun, args_fd: int) -> list[str]:
        """bwrap's argv for ``run``; start it with an empty environment and ``hidden_args(run)``
        readable from ``args_fd`` (passed to it, at its start offset)."""
        assert self.bwrap is not None and self.prlimit is not None, "call check() first"
        argv: list[str] = []
        if (uid := self.host_user()) is not None:
            assert self.setpriv is not None, "call check() first"
            argv += [self.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
        argv += [self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns"]
        argv += ["--share-net"] if run.network else []
        argv += ["--die-with-parent", "--new-session", "--uid", "65534", "--gid", "65534"]
        argv += [*_system_binds(), *_etc_binds(run.network), "--proc", "/proc", "--dev", "/dev"]
        # --dev's tmpfs has no size and the sandbox's uid owns it: writable, it would be uncapped host
        # RAM; so it is read-only, with a small tmpfs at /dev/shm
        argv += ["--remount-ro", "/dev", "--size", str(SHM_BYTES), "--perms", "1777", "--tmpfs", "/dev/shm"]
        argv += ["--ro-bind", str(run.bundle), SKILL_DIR, "--bind", str(run.workdir), WORK_DIR]
        argv += ["--bind", str(run.workdir / ".tmp"), "/tmp"]
        for path in self.read_paths:
            argv += ["--ro-bind-try", path, path]
        argv += ["--chdir", WORK_DIR, "--remount-ro", "/", "--clearenv", "--args", str(args_fd)]
        return [*argv, "--", *self._limited(run.argv)]

    @staticmethod
    def hidden_args(run: SandboxRun) -> bytes:
        """The ``--setenv`` options for ``run``, NUL-separated, for bwrap's ``--args FD``: inputs and
        ``requires.env`` values never appear on its command line."""
        options: list[str] = []
        for name, value in run.env.items():
            options += ["--setenv", name, value]
        return b"".join(os.fsencode(option) + b"\0" for option in options)

    def _limited(self, argv: Sequence[str]) -> list[str]:
        limits = self.limits
        return [
            str(self.prlimit),
            f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}",  # SIGXCPU first, SIGKILL a second later
            f"--as={limits.memory_mb * _MIB}",
            f"--nproc={limits.processes}",
            f"--fsize={limits.file_size_mb * _MIB}",
            "--",
            *argv,
        ]


def _system_binds() -> list[str]:
    argv: list[str] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    return argv


def _etc_binds(network: bool) -> list[str]:
    argv: list[str] = []
    for name in _ETC + (_ETC_NETWORK if network else ()):
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return argv


def stage_bundle(source: Path, dest: Path) -> None:
    """Copy a skill's folder for the sandbox: world-readable, so bwrap started as ``run_as`` can bind
    it whatever the original's parents allow; symlinks stay links and resolve inside the sandbox."""
    shutil.copytree(
        source, dest, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", ".git", "*.pyc")
    )
    for dirpath, _, filenames in os.walk(dest):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & 0o111
                os.chmod(path, 0o755 if executable else 0o644)


def hand_over(outer: Path, workdir: Path, uid: int) -> None:
    """Let ``uid`` (bwrap's host uid) through ``outer`` and own the working directory tree."""
    os.chmod(outer, 0o711)
    for dirpath, _, filenames in os.walk(workdir):
        os.chown(dirpath, uid, uid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), uid, uid, follow_symlinks=False)
