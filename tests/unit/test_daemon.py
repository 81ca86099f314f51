"""The per-user service files `aigw daemon install` writes: parsed back, verified by systemd where
it can run, and the install/status/uninstall commands against a temporary XDG_CONFIG_HOME."""

from __future__ import annotations

import plistlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.daemon import daemon_environment, daemon_for, launchd_plist, systemd_unit, up_command
from gateway.home import copy_sample_config

runner = CliRunner()


def _unit_lines(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment: Environment= repeats, so not a dict."""
    section, found = "", []
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.append((section, key, value))
    return found


def _values(text: str, section: str, key: str) -> list[str]:
    return [v for s, k, v in _unit_lines(text) if s == section and k == key]


def test_systemd_unit_runs_aigw_up_with_its_home_and_restarts_on_failure(tmp_path: Path) -> None:
    config = tmp_path / "my config"  # a space: ExecStart words are quoted
    argv = up_command(config)
    env, notes = daemon_environment(tmp_path / "home", {"PATH": "/usr/bin:/bin"})
    unit = systemd_unit(argv, env, shutdown_grace=25)

    (exec_start,) = _values(unit, "Service", "ExecStart")
    expected = [sys.executable, "-m", "gateway.cli", "up", "--config", str(config.resolve())]
    assert shlex.split(exec_start) == expected
    assert Path(shlex.split(exec_start)[0]).is_absolute()
    environment = [shlex.split(v)[0] for v in _values(unit, "Service", "Environment")]
    assert f"AIGW_HOME={(tmp_path / 'home').resolve()}" in environment
    assert "PATH=/usr/bin:/bin" in environment
    assert _values(unit, "Service", "Restart") == ["on-failure"]
    assert _values(unit, "Service", "RestartSec") == ["5"]
    assert _values(unit, "Service", "KillSignal") == ["SIGTERM"]  # `aigw up`'s supervisor drains on it
    # to `aigw up` alone: its children and its Redis are stopped by it, in order
    assert _values(unit, "Service", "KillMode") == ["mixed"]
    assert int(_values(unit, "Service", "TimeoutStopSec")[0]) > 25 + 5
    assert _values(unit, "Install", "WantedBy") == ["default.target"]
    assert notes == []


def test_a_redis_url_with_a_password_stays_out_of_the_service_file(tmp_path: Path) -> None:
    env, notes = daemon_environment(tmp_path, {"REDIS_URL": "redis://:hunter2@10.0.0.5:6379/0"})
    assert "REDIS_URL" not in env
    assert "hunter2" not in " ".join(notes) and "password" in notes[0]
    plain, _ = daemon_environment(tmp_path, {"REDIS_URL": "redis://10.0.0.5:6379/0"})
    assert plain["REDIS_URL"] == "redis://10.0.0.5:6379/0"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    env, _ = daemon_environment(tmp_path / "home", {"PATH": "/usr/bin:/bin"})
    unit_dir = tmp_path / "xdg" / "systemd" / "user"
    unit_dir.mkdir(parents=True)
    path = unit_dir / "aigw.service"
    path.write_text(systemd_unit(up_command(tmp_path / "config"), env, shutdown_grace=25))
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    verify_env = {
        "PATH": "/usr/bin:/bin",
        "XDG_RUNTIME_DIR": str(runtime),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
    }
    done = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(path)], env=verify_env, capture_output=True, text=True
    )
    if "Failed to initialize manager" in done.stderr:  # no user manager can start in this place
        done = subprocess.run(
            ["systemd-analyze", "verify", str(path)], env=verify_env, capture_output=True, text=True
        )
    # verify exits 0 on a field it ignores, so any line about the file counts as a failure
    assert done.returncode == 0 and str(path) not in done.stderr, done.stderr


def test_launchd_plist_round_trips(tmp_path: Path) -> None:
    argv = up_command(tmp_path / "config")
    env, _ = daemon_environment(tmp_path / "home", {"PATH": "/usr/bin"})
    agent = plistlib.loads(launchd_plist(argv, env, shutdown_grace=25, log=tmp_path / "home" / "daemon.log"))
    assert agent["Label"] == "dev.aigw"
    assert agent["ProgramArguments"] == argv
    assert agent["EnvironmentVariables"]["AIGW_HOME"] == str((tmp_path / "home").resolve())
    assert agent["KeepAlive"] == {"SuccessfulExit": False}  # restarted when it fails, not after a clean stop
    assert agent["RunAtLoad"] is True
    assert agent["ExitTimeOut"] > 25 + 5
    assert agent["StandardErrorPath"] == str(tmp_path / "home" / "daemon.log")


def test_the_platform_picks_the_service_manager(tmp_path: Path) -> None:
    environ = {"HOME": str(tmp_path)}
    assert daemon_for("linux", environ).path == tmp_path / ".config" / "systemd" / "user" / "aigw.service"
    xdg = daemon_for("linux", {**environ, "XDG_CONFIG_HOME": str(tmp_path / "x")})
    assert xdg.path == tmp_path / "x" / "systemd" / "user" / "aigw.service"
    mac = daemon_for("darwin", environ)
    assert (mac.kind, mac.path) == ("launchd", tmp_path / "Library" / "LaunchAgents" / "dev.aigw.plist")
    with pytest.raises(ValueError, match="win32"):
        daemon_for("win32", environ)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the systemd flavour of the commands")
def test_daemon_install_status_uninstall(tmp_path: Path) -> None:
    config = tmp_path / "config"
    copy_sample_config(config)
    env = {
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "AIGW_HOME": str(tmp_path / "aigw"),
    }
    unit = tmp_path / "xdg" / "systemd" / "user" / "aigw.service"

    missing = runner.invoke(app, ["daemon", "status"], env=env)
    assert missing.exit_code == 0 and "not installed" in missing.output

    installed = runner.invoke(app, ["daemon", "install", "--config", str(config)], env=env)
    assert installed.exit_code == 0, installed.output
    assert f"AIGW_HOME={tmp_path / 'aigw'}" in unit.read_text()
    assert "systemctl --user daemon-reload && systemctl --user enable --now aigw" in installed.output
    assert "journalctl --user -u aigw -f" in installed.output

    status = runner.invoke(app, ["daemon", "status"], env=env)
    assert status.exit_code == 0 and f"installed: {unit}" in status.output
    state = [line for line in status.output.splitlines() if line.startswith("state:")]
    assert len(state) == 1  # one line, whether a user manager answers or not

    removed = runner.invoke(app, ["daemon", "uninstall"], env=env)
    assert removed.exit_code == 0 and not unit.exists()
    assert "systemctl --user disable --now aigw" in removed.output


def test_daemon_install_refuses_a_directory_without_config(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "AIGW_HOME": str(tmp_path / "aigw"),
    }
    result = runner.invoke(app, ["daemon", "install", "--config", str(tmp_path / "nothing")], env=env)
    assert result.exit_code == 1 and "aigw onboard" in result.output
    assert not (tmp_path / "xdg").exists()
