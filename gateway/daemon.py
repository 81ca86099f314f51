"""`aigw up` as a per-user service: a systemd user unit on Linux, a launchd agent on macOS.

The files are built by pure functions (tested by parsing them back) and written where the user's
service manager looks, never anywhere that needs root. Nothing here starts or stops the service:
the CLI prints the `systemctl --user` / `launchctl` commands. No secret goes into either file:
provider keys stay in the user's environment or their own files, and a ``REDIS_URL`` that holds a
password is left out (``daemon_environment`` says so).
"""

from __future__ import annotations

import plistlib
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

UNIT_NAME = "aigw.service"
LAUNCHD_LABEL = "dev.aigw"
#: seconds `aigw up` may take past ``workers.shutdown_grace`` to stop: its own +5 for the
#: workers' drain, then the audit writer and the embedded Redis (its AOF fsync)
STOP_MARGIN = 15


@dataclass(frozen=True)
class Daemon:
    """Which service manager runs aigw for this user, and where its file lives."""

    kind: str  # "systemd" or "launchd"
    path: Path

    def enable_hint(self) -> list[str]:
        """The commands that start it now and at every login, then follow its log."""
        if self.kind == "systemd":
            return [
                "systemctl --user daemon-reload && systemctl --user enable --now aigw",
                "journalctl --user -u aigw -f",
            ]
        return [f"launchctl bootstrap gui/$(id -u) {self.path}", "tail -f <AIGW_HOME>/daemon.log"]

    def disable_hint(self) -> str:
        """The command that stops a running one (its file may already be gone)."""
        if self.kind == "systemd":
            return "systemctl --user disable --now aigw && systemctl --user daemon-reload"
        return f"launchctl bootout gui/$(id -u)/{LAUNCHD_LABEL}"


def daemon_for(platform: str, environ: Mapping[str, str]) -> Daemon:
    """The daemon kind of ``platform`` (``sys.platform``) and its file; ValueError elsewhere."""
    user_home = Path(environ.get("HOME") or Path.home())
    if platform.startswith("linux"):
        base = Path(environ.get("XDG_CONFIG_HOME") or user_home / ".config")
        return Daemon("systemd", base / "systemd" / "user" / UNIT_NAME)
    if platform == "darwin":
        return Daemon("launchd", user_home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist")
    raise ValueError(
        f"no per-user service manager aigw knows on {platform!r} (systemd on Linux, launchd on macOS)"
    )


def up_command(config_dir: Path) -> list[str]:
    """The running interpreter's `aigw up` on ``config_dir``: the same install the user onboarded with."""
    return [sys.executable, "-m", "gateway.cli", "up", "--config", str(config_dir.resolve())]


def daemon_environment(home: Path, environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The variables the daemon needs (AIGW_HOME, the PATH and PYTHONPATH that find redis-server and
    aigw, a REDIS_URL the user set) and notes on what was left out and why."""
    env = {"AIGW_HOME": str(home.resolve())}
    notes: list[str] = []
    for name in ("PATH", "PYTHONPATH"):  # the redis-server and the aigw this shell finds
        if value := environ.get(name):
            env[name] = value
    if url := environ.get("REDIS_URL"):
        if urlsplit(url).password:
            notes.append(
                "REDIS_URL holds a password, so it is not written into the service file: "
                "set redis.url in gateway.yaml or add it with `systemctl --user edit aigw`"
            )
        else:
            env["REDIS_URL"] = url
    return env, notes


def _systemd_quote(word: str, *, command: bool = False) -> str:
    """One ExecStart (``command``) or Environment word as systemd reads it: quoted, with its
    specifiers escaped, and in a command line its variables too (systemd expands them there only)."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    if command:
        escaped = escaped.replace("$", "$$")
    return f'"{escaped}"'


def systemd_unit(argv: Sequence[str], env: Mapping[str, str], shutdown_grace: float) -> str:
    """A user unit that runs ``argv`` (`aigw up`), restarts it on failure and stops it the way
    Ctrl-C does: SIGTERM to `aigw up` alone (KillMode=mixed), which drains its workers, stops its
    audit writer and its Redis, then exits; whatever is left at TimeoutStopSec is killed."""
    environment = "\n".join(f"Environment={_systemd_quote(f'{k}={v}')}" for k, v in env.items())
    return f"""[Unit]
Description=aigw, the local AI gateway (aigw up)
After=network-online.target

[Service]
Type=simple
ExecStart={" ".join(_systemd_quote(word, command=True) for word in argv)}
{environment}
Restart=on-failure
RestartSec=5
KillSignal=SIGTERM
KillMode=mixed
TimeoutStopSec={int(shutdown_grace) + STOP_MARGIN}

[Install]
WantedBy=default.target
"""


def launchd_plist(argv: Sequence[str], env: Mapping[str, str], shutdown_grace: float, log: Path) -> bytes:
    """A launch agent that runs ``argv`` at login and again when it exits with a failure;
    launchd stops it with SIGTERM and kills it ``ExitTimeOut`` seconds later."""
    agent = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(argv),
        "EnvironmentVariables": dict(env),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 5,
        "ExitTimeOut": int(shutdown_grace) + STOP_MARGIN,
        "StandardOutPath": str(log),
        "StandardErrorPath": str(log),
    }
    return plistlib.dumps(agent)


def service_state(daemon: Daemon) -> str:
    """One line: what the service manager says about the service, or why it cannot say."""
    tool = "systemctl" if daemon.kind == "systemd" else "launchctl"
    binary = shutil.which(tool)
    if binary is None:
        return f"{tool} not found: cannot ask the service manager"
    argv = (
        [binary, "--user", "show", "aigw", "--property=LoadState,ActiveState,SubState,UnitFileState"]
        if daemon.kind == "systemd"
        else [binary, "list", LAUNCHD_LABEL]
    )
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{tool} did not answer: {exc}"
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[0]
        if daemon.kind == "systemd":
            return f"no user session: `systemctl --user` cannot reach a user manager ({reason})"
        return f"not loaded in launchd ({reason})"
    if daemon.kind == "launchd":
        return "loaded in launchd"
    props = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return (
        f"{props.get('ActiveState', '?')} ({props.get('SubState', '?')}), "
        f"loaded: {props.get('LoadState', '?')}, enabled: {props.get('UnitFileState', '?') or 'no'}"
    )
