"""`aigw onboard` as a user meets it: under a pseudo-terminal, answering its prompts, with a real
(tiny) Ollama answering /api/tags and a real redis-server holding the token it creates."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pexpect  # type: ignore[import-untyped,unused-ignore]
import pytest
import redis
import yaml

from gateway.config import load_config
from gateway.redis_server import RedisServer, free_port
from gateway.services import ServiceRegistry
from gateway.supervisor import pid_alive

ROOT = Path(__file__).parents[2]
SECRET = "sk-test-secret-value"
OLLAMA_MODELS = ["llama3.2:3b", "qwen2.5:7b"]
TOKEN = re.compile(r"export AIGW_TOKEN=(aigw_\S+)")


class _Tags(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path != "/api/tags":
            self.send_error(404)
            return
        body = json.dumps({"models": [{"name": name, "size": 1} for name in OLLAMA_MODELS]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ollama() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Tags)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A user's shell: its own HOME and AIGW_HOME, a provider key set, no REDIS_URL."""
    return {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path),
        "AIGW_HOME": str(tmp_path / "aigw"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "ANTHROPIC_API_KEY": SECRET,
        "COLUMNS": "250",
        "TERM": "dumb",
        **extra,
    }


def _onboard(env: dict[str, str], *args: str) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable, ["-m", "gateway.cli", "onboard", *args], env=env, cwd=str(env["HOME"]),
        encoding="utf-8", timeout=60, dimensions=(50, 250),
    )  # fmt: skip


def _finish(child: pexpect.spawn) -> str:
    child.expect(pexpect.EOF)
    child.close()
    output = str(child.before)
    assert child.exitstatus == 0, output
    return output


def _authenticates(url: str, config_dir: Path, token: str) -> str:
    connection = redis.Redis.from_url(url)
    try:
        return ServiceRegistry(connection, load_config(config_dir)).authenticate(token)
    finally:
        connection.close()


def _embedded_stopped(data_dir: Path) -> bool:
    noted = json.loads((data_dir / "server.json").read_text())
    return not pid_alive(int(noted["pid"]))


def test_interactive_onboarding_with_a_local_ollama(tmp_path: Path, ollama: str) -> None:
    env = _env(tmp_path, OLLAMA_HOST=ollama)
    config_dir = tmp_path / "cfg"
    child = _onboard(env)
    transcript = []
    child.expect(r"Config directory.*\((.+)\):")
    assert str(tmp_path / "aigw" / "config") in str(child.match.group(1))  # the default, shown
    transcript.append(str(child.before) + str(child.after))
    child.sendline(str(config_dir))
    child.expect(r"Ollama model for the `sensitive` alias.*:")
    assert "llama3.2:3b/qwen2.5:7b" in str(child.after)
    transcript.append(str(child.before) + str(child.after))
    child.sendline("qwen2.5:7b")
    child.expect(r"Service name for the first token.*\(default\):")
    transcript.append(str(child.before) + str(child.after))
    child.sendline("../etc")  # not a service name: asked again, nothing written yet
    child.expect(r"a service name is 1-64 letters.*Service name for the first token.*\(default\):")
    assert not config_dir.exists()
    transcript.append(str(child.before) + str(child.after))
    child.sendline("billing")
    output = "".join(transcript) + _finish(child)

    assert SECRET not in output
    assert "ANTHROPIC_API_KEY set" in output and "OPENAI_API_KEY not set" in output
    assert f"{ollama} has llama3.2:3b, qwen2.5:7b" in output
    config = load_config(config_dir)  # written and valid
    sensitive = config.models.models["sensitive"].deployments[0]
    assert (sensitive.model, sensitive.api_base) == ("qwen2.5:7b", ollama)
    written = (config_dir / "models.yaml").read_text()
    assert "# a real, small Ollama tag" not in written  # that line was replaced
    assert "# Local only" in written  # the rest kept its comments

    (token,) = TOKEN.findall(output)
    assert output.count(token) == 1  # printed once
    assert f"aigw up --config {config_dir}" in output
    assert 'curl -s -H "Authorization: Bearer $AIGW_TOKEN"' in output and "/v1/jobs" in output
    assert "aigw dashboard" in output

    # the token is in the embedded Redis's AOF, and that Redis is stopped again, as `aigw up` finds it
    data_dir = tmp_path / "aigw" / "redis"
    assert _embedded_stopped(data_dir)
    server = RedisServer.start(data_dir, free_port())
    try:
        assert _authenticates(server.url, config_dir, token) == "billing"

        # again: the config exists; the user keeps it, and gets a second token
        server.stop()
        child = _onboard(env, "--config", str(config_dir))
        child.expect(r"already has a\s+config\.\s+Overwrite\s+it\?.*:")
        child.sendline("n")
        child.expect(r"Service name for the first token.*:")
        asked = str(child.before) + str(child.after)
        child.sendline("")
        again = asked + _finish(child)
        assert "kept the files" in again and SECRET not in again
        assert load_config(config_dir).models.models["sensitive"].deployments[0].model == "qwen2.5:7b"
        (second,) = TOKEN.findall(again)
        server = RedisServer.start(data_dir, free_port())
        assert _authenticates(server.url, config_dir, second) == "default"
        assert _authenticates(server.url, config_dir, token) == "billing"
    finally:
        server.stop()


def test_yes_takes_the_defaults_and_uses_the_configured_redis(tmp_path: Path, redis_url: str) -> None:
    closed = f"127.0.0.1:{free_port()}"  # no Ollama: OLLAMA_HOST as Ollama writes it, no scheme
    env = _env(tmp_path, OLLAMA_HOST=closed, REDIS_URL=redis_url)
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "onboard", "--yes", "--install-daemon"],
        env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert SECRET not in output
    assert "offline provider stands in" in output
    config_dir = tmp_path / "aigw" / "config"
    sample = yaml.safe_load((ROOT / "gateway" / "sample_config" / "models.yaml").read_text())
    assert yaml.safe_load((config_dir / "models.yaml").read_text()) == sample  # the sample, untouched
    (token,) = TOKEN.findall(output)
    assert _authenticates(redis_url, config_dir, token) == "default"
    assert not (tmp_path / "aigw" / "redis").exists()  # no embedded Redis was needed
    unit = tmp_path / "xdg" / "systemd" / "user" / "aigw.service"
    assert f'--config" "{config_dir}"' in unit.read_text()
    assert f'"REDIS_URL={redis_url}"' in unit.read_text()

    # again with --yes: the existing config is kept, and it says so
    (config_dir / "models.yaml").write_text((config_dir / "models.yaml").read_text() + "# mine\n")
    again = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "onboard", "--yes"],
        env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "already has a config: kept" in again.stdout
    assert (config_dir / "models.yaml").read_text().endswith("# mine\n")


def test_an_unreachable_configured_redis_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    env = _env(
        tmp_path, OLLAMA_HOST=f"127.0.0.1:{free_port()}", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"
    )
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "onboard", "--yes"],
        env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert "cannot reach Redis" in line and "REDIS_URL" in line
    assert "AIGW_TOKEN" not in done.stdout
