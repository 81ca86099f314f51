"""`aigw up` as a new user runs it: piped into `tee`, killed with -9, started twice, run from
another directory; and which Redis it will (and will never) use."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from gateway.home import stack_running
from gateway.redis_server import RedisServer, free_port, ping
from tests.integration.harness import wait_until

AIGW = [sys.executable, "-m", "gateway.cli"]
KEEPER = [sys.executable, "-m", "gateway.redis_keeper"]


@dataclass
class UserEnv:
    env: dict[str, str]
    home: Path
    config: Path
    elsewhere: Path  # a directory with nothing of aigw's in it
    api_port: int


@pytest.fixture
def user(tmp_path: Path, config_dir: Path) -> UserEnv:
    """A fresh $AIGW_HOME, no provider keys, no REDIS_URL, no AIGW_CONFIG: the config only by --config."""
    gateway = yaml.safe_load((config_dir / "gateway.yaml").read_text())
    gateway["redis"]["embedded_port"] = free_port()
    (config_dir / "gateway.yaml").write_text(yaml.safe_dump(gateway))
    dropped = ("REDIS_URL", "AIGW_CONFIG", "AIGW_URL", "ANTHROPIC_API_KEY", "OPENAI_API_KEY")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["AIGW_HOME"] = str(tmp_path / "home")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return UserEnv(env, tmp_path / "home", config_dir, elsewhere, free_port())


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _redis_servers_on(data_dir: Path) -> list[int]:
    """Every live redis-server whose working directory is ``data_dir``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            is_redis = "redis-server" in (proc / "cmdline").read_bytes().decode(errors="replace")
            if (
                is_redis
                and Path(os.readlink(proc / "cwd")) == data_dir.resolve()
                and _pid_alive(int(proc.name))
            ):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def start_up(user: UserEnv) -> subprocess.Popen[str]:
    """`aigw up --config DIR` started from a directory that is not the checkout; banner read."""
    with (user.elsewhere / "up.log").open("a") as log:
        process = subprocess.Popen(
            [*AIGW, "up", "--config", str(user.config), "--port", str(user.api_port)],
            env=user.env, cwd=user.elsewhere, stdout=subprocess.PIPE, stderr=log, text=True,
        )  # fmt: skip
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    banner: list[str] = []
    while "Ctrl-C stops everything" not in "".join(banner):
        line = process.stdout.readline()
        assert line and time.monotonic() < deadline, f"aigw up did not start: {''.join(banner)}"
        banner.append(line)
    return process


def stop_up(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
    assert process.stdout is not None
    process.stdout.close()


@pytest.fixture
def up(user: UserEnv) -> Iterator[subprocess.Popen[str]]:
    process = start_up(user)
    yield process
    stop_up(process)
    for pid in _redis_servers_on(user.home / "redis"):  # never leave one behind, even on failure
        os.kill(pid, signal.SIGKILL)


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _embedded_pid(user: UserEnv) -> int:
    return int(json.loads((user.home / "redis" / "server.json").read_text())["pid"])


def _aigw(user: UserEnv, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AIGW, *args], env=user.env, cwd=cwd or user.elsewhere, capture_output=True, text=True, timeout=60
    )


def test_up_piped_into_a_reader_that_is_gone_still_stops_everything(
    user: UserEnv, up: subprocess.Popen[str]
) -> None:
    redis_pid = _embedded_pid(user)
    assert up.stdout is not None
    up.stdout.close()  # `| tee up.log`: Ctrl-C stopped tee as well, so every print hits a broken pipe
    up.send_signal(signal.SIGINT)

    assert up.wait(timeout=60) == 0
    wait_until(lambda: not _pid_alive(redis_pid), "the embedded redis-server to stop", timeout=15)
    assert not (user.home / "api-url").exists() and not (user.home / "config-dir").exists()


def test_a_closed_terminal_sighup_stops_everything_like_ctrl_c(
    user: UserEnv, up: subprocess.Popen[str]
) -> None:
    redis_pid = _embedded_pid(user)
    up.send_signal(signal.SIGHUP)  # what a terminal sends its foreground job when it closes
    assert up.wait(timeout=60) == 0
    wait_until(lambda: not _pid_alive(redis_pid), "the embedded redis-server to stop", timeout=15)
    assert _redis_servers_on(user.home / "redis") == []  # the next `aigw up` finds its port free
    assert not (user.home / "api-url").exists()


def test_up_killed_with_9_takes_its_redis_and_workers_with_it(
    user: UserEnv, up: subprocess.Popen[str]
) -> None:
    redis_pid = _embedded_pid(user)
    redis_port = int(json.loads((user.home / "redis" / "server.json").read_text())["port"])
    children = [int(p) for p in Path(f"/proc/{up.pid}/task/{up.pid}/children").read_text().split()]
    assert len(children) >= 3  # the API and a worker per queue

    up.kill()
    up.wait()

    wait_until(lambda: not any(_pid_alive(pid) for pid in children), "API and workers to stop", timeout=30)
    wait_until(lambda: not _pid_alive(redis_pid), "the embedded redis-server to stop", timeout=30)
    assert not stack_running(user.home)  # its notes are left, and no command follows them now
    stranger = RedisServer.start(user.elsewhere / "not-aigws", redis_port)  # takes the noted port
    try:
        added = _aigw(user, "service", "add", "intruder", "--config", str(user.config))
        assert added.returncode == 1 and "no Redis to use" in added.stderr
        assert redis.Redis(port=redis_port).dbsize() == 0  # never written to
    finally:
        stranger.stop()
    restarted = start_up(user)  # and the next `aigw up` starts on the same data directory
    try:
        assert _ready(user.api_port)
        assert len(_redis_servers_on(user.home / "redis")) == 1
    finally:
        restarted.send_signal(signal.SIGINT)
        assert restarted.wait(timeout=60) == 0
        stop_up(restarted)
    assert _redis_servers_on(user.home / "redis") == []


def test_redis_keeper_waits_for_the_drain_before_it_stops_redis(tmp_path: Path) -> None:
    """After `aigw up` dies its workers drain into Redis: Redis must outlive every client."""
    server = RedisServer.start(tmp_path / "redis")
    keeper = subprocess.Popen(
        [*KEEPER, "--pid", str(server.pid), "--port", str(server.port), "--grace", "60"],
        stdout=subprocess.PIPE,
    )
    draining = redis.Redis(port=server.port)
    try:
        assert keeper.stdout is not None and keeper.stdout.readline() == b"ready\n"
        keeper.stdout.close()
        draining.ping()
        keeper.send_signal(signal.SIGTERM)  # what PR_SET_PDEATHSIG sends when `aigw up` dies
        time.sleep(1.0)  # a client still connected: Redis stays up however long the keeper waits
        assert draining.set("finished", "job-1") and _pid_alive(server.pid)
        draining.close()  # the last worker exits
        assert keeper.wait(timeout=30) == 0
        assert not _pid_alive(server.pid)
    finally:
        if keeper.poll() is None:
            keeper.kill()
            keeper.wait()
        server.stop()
    again = RedisServer.start(tmp_path / "redis")
    try:
        assert redis.Redis(port=again.port).get("finished") == b"job-1"  # written before the stop, kept
    finally:
        again.stop()


def test_a_second_up_on_the_same_home_refuses_clearly(user: UserEnv, up: subprocess.Popen[str]) -> None:
    second = _aigw(user, "up", "--config", str(user.config), "--port", str(free_port()))

    assert second.returncode == 1
    assert "another `aigw up` is running" in second.stderr
    assert len(_redis_servers_on(user.home / "redis")) == 1
    assert (user.home / "api-url").read_text() == f"http://127.0.0.1:{user.api_port}"  # its notes stay


def test_commands_from_another_directory_use_the_running_stacks_config(
    user: UserEnv, up: subprocess.Popen[str], tmp_path: Path
) -> None:
    checkout = tmp_path / "checkout"  # a ./config that is not the one the stack runs on
    (checkout / "config").mkdir(parents=True)
    (checkout / "config" / "models.yaml").write_text("models: [this is not the running config\n")

    for cwd in (user.elsewhere, checkout):
        for command in (
            ["gateway", "status", "--json"],
            ["service", "list"],
            ["audit", "tail"],
            ["jobs", "failed"],
            ["policy", "explain", "--service", "default", "--prompt", "hello"],
        ):
            result = _aigw(user, *command, cwd=cwd)
            assert result.returncode == 0, f"{command} in {cwd.name}: {result.stderr}"
    status = json.loads(_aigw(user, "gateway", "status", "--json").stdout)
    assert status["api"]["ok"]


def test_redis_server_adopts_the_live_server_on_its_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis"
    orphan = subprocess.run(  # a process that started an embedded Redis and died without stopping it
        [sys.executable, "-c", f"from pathlib import Path; from gateway.redis_server import RedisServer; "
         f"print(RedisServer.start(Path({str(data_dir)!r})).port)"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    port = int(orphan.stdout)
    assert ping(f"redis://127.0.0.1:{port}/0")

    server = RedisServer.start(data_dir, free_port())
    try:
        assert server.adopted and server.port == port
        assert len(_redis_servers_on(data_dir)) == 1  # no second server on the same AOF file
        redis.Redis(port=port).set("kept", "yes")
    finally:
        server.stop()
    assert _redis_servers_on(data_dir) == []
    again = RedisServer.start(data_dir)
    try:
        assert not again.adopted and redis.Redis(port=again.port).get("kept") == b"yes"  # the same AOF
    finally:
        again.stop()


def test_commands_never_use_a_redis_nobody_named(user: UserEnv) -> None:
    result = _aigw(user, "service", "add", "billing", "--config", str(user.config))

    assert result.returncode == 1
    assert "no Redis to use" in result.stderr and "aigw up" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_policy_explain_needs_no_stack(user: UserEnv) -> None:
    result = _aigw(
        user,
        "policy",
        "explain",
        "--config",
        str(user.config),
        "--service",
        "default",
        "--prompt",
        "mail ann@example.com",
    )

    assert result.returncode == 0, result.stderr
    assert "sensitive" in result.stdout  # the PII keeps it local, stack or no stack

    policies = yaml.safe_load((user.config / "policies.yaml").read_text())
    policies["policies"].append({"name": "cap", "rule": "budget", "limit_usd": 5.0, "period": "day"})
    (user.config / "policies.yaml").write_text(yaml.safe_dump(policies))
    capped = _aigw(
        user, "policy", "explain", "--config", str(user.config), "--service", "default", "--prompt", "hi"
    )
    assert capped.returncode == 0, capped.stderr
    assert "budget cap: not read (no Redis reachable)" in capped.stdout  # never silently left out


def test_probe_local_in_gateway_yaml_says_what_to_write_instead(user: UserEnv) -> None:
    gateway = yaml.safe_load((user.config / "gateway.yaml").read_text())
    for value, accepted in ((False, True), (True, False)):  # false is what aigw now always does
        gateway["redis"]["probe_local"] = value
        (user.config / "gateway.yaml").write_text(yaml.safe_dump(gateway))

        result = _aigw(user, "config", "check", str(user.config))

        assert (result.returncode == 0) is accepted, result.stderr
        if not accepted:
            assert "gateway.yaml" in result.stderr and "probe_local" in result.stderr
            assert "delete the line" in result.stderr and "url: redis://127.0.0.1:6379/0" in result.stderr
