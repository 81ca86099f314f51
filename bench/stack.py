"""The system under test: Redis, fake providers, and the aigw API and workers as real subprocesses.

Redis and the fakes (one per latency) live for the whole run; the API and the worker(s) start
fresh for every scenario on a flushed Redis, so each scenario's CPU and RSS are its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import redis
import yaml

from bench.procs import Child, end_guard, guard, wait_for
from gateway.config import load_config
from gateway.redis_server import RedisServer, free_port
from gateway.services import ServiceRegistry

REPO = Path(__file__).resolve().parent.parent
#: the env var named by models.yaml's api_key_env; the fake accepts any key
KEY_ENV = "AIGW_BENCH_KEY"
FAKE_MODEL = "bench-fake"
QUEUE = "interactive"


def alias_for(latency: float) -> str:
    """The model alias served by the fake with this latency: ``bench``, ``bench-500ms``, …"""
    return "bench" if latency == 0 else f"bench-{round(latency * 1000)}ms"


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Aigw:
    """One running API + worker(s), as a scenario sees it."""

    port: int
    token: str
    api: Child
    workers: list[Child]

    @property
    def pids(self) -> dict[str, list[int]]:
        return {"api": [self.api.pid], "workers": [w.pid for w in self.workers]}

    def check_alive(self) -> None:
        for child in (self.api, *self.workers):
            if not child.alive():
                raise RuntimeError(f"{child.name} exited ({child.process.returncode}): {child.tail()}")


@dataclass
class BenchStack:
    """Owns every process of a run; ``close()`` (or leaving the ``with``) stops all of them."""

    latencies: list[float]
    workers: int = 1
    max_connections: int = 1000
    #: "seed": the shipped policies.yaml (the seed article's three, as a user runs it); "none": no policies
    policies: str = "seed"
    #: one API + worker(s) for every scenario (--quick) instead of a fresh one per scenario
    shared: bool = False
    shared_concurrency: int = 5000
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="aigw-bench-")))
    redis_server: RedisServer | None = None
    fakes: dict[float, tuple[int, Child]] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)
    _guards: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _shared_aigw: Aigw | None = None

    # --- whole run ------------------------------------------------------------------------------

    def __enter__(self) -> BenchStack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def redis_url(self) -> str:
        assert self.redis_server is not None
        return self.redis_server.url

    @property
    def redis_port(self) -> int:
        assert self.redis_server is not None
        return self.redis_server.port

    @property
    def redis_pid(self) -> int:
        assert self.redis_server is not None
        return self.redis_server.pid

    def fake_port(self, latency: float) -> int:
        return self.fakes[latency][0]

    def fake_pids(self) -> list[int]:
        return [child.pid for _port, child in self.fakes.values()]

    def start(self) -> None:
        self.redis_server = RedisServer.start(self.root / "redis", appendonly=True)
        self._guards.append(guard(self.redis_server.pid, self.root))
        for latency in sorted(set(self.latencies) | {0.0}):
            port = free_port()
            argv = [
                sys.executable,
                "-m",
                "tests.fakes.provider",
                "--port",
                str(port),
                "--latency",
                str(latency),
            ]
            child = self._spawn(f"fake-{alias_for(latency)}", argv)
            self.fakes[latency] = (port, child)
        for port, child in self.fakes.values():
            wait_for(lambda p=port, c=child: _port_open(p) or not c.alive(), f"{child.name} to listen", 20)
            if not child.alive():
                raise RuntimeError(f"{child.name} exited: {child.tail()}")
        self._write_config()

    def close(self) -> None:
        self._shared_aigw = None
        for child in reversed(self.children):
            child.stop(grace=10)
        self.children.clear()
        if self.redis_server is not None:
            self.redis_server.stop()
        for process in self._guards:
            end_guard(process)
        self._guards.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("AIGW_CONFIG", "AIGW_URL", "AIGW_TOKEN")}
        env.update(
            REDIS_URL=self.redis_url,
            AIGW_HOME=str(self.root / "home"),
            AIGW_LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
        )
        env[KEY_ENV] = "sk-bench-dummy-key"
        return env

    def _spawn(self, name: str, argv: list[str]) -> Child:
        return self.spawn(name, argv)

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> Child:
        """A child that ``close()`` stops; its output goes to a log in the run's temp dir."""
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}-{time.monotonic_ns()}.log"
        child = Child(name, argv, self.env() if env is None else env, log, cwd or REPO)
        self.children.append(child)
        return child

    def forget(self, child: Child) -> None:
        """A child the caller has stopped: ``close()`` need not stop it again."""
        with contextlib.suppress(ValueError):
            self.children.remove(child)

    def _write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        for src in (REPO / "config").glob("*.yaml"):
            shutil.copyfile(src, self.config_dir / src.name)
        models: dict[str, Any] = {"default_model": "bench", "models": {}}
        for latency, (port, _child) in self.fakes.items():
            models["models"][alias_for(latency)] = {
                "provider": "openai",
                "model": FAKE_MODEL,
                "api_base": f"http://127.0.0.1:{port}/v1",
                "api_key_env": KEY_ENV,
                "max_connections": self.max_connections,
                # a fake that holds calls (the sweep's in-flight jobs) gets the time it takes
                "timeouts": {"connect": 5, "read": max(60, latency + 60), "total": max(120, latency + 120)},
            }
        # the PII policy needs a sensitive alias to route to; the bench prompts carry no PII
        models["models"]["offline"] = {"provider": "offline", "model": "aigw-offline-1", "sensitive": True}
        (self.config_dir / "models.yaml").write_text(yaml.safe_dump(models, sort_keys=False))
        if self.policies == "none":
            (self.config_dir / "policies.yaml").write_text("policies: []\n")
        gateway_file = self.config_dir / "gateway.yaml"
        gateway = yaml.safe_load(gateway_file.read_text()) or {}
        gateway.setdefault("queues", {}).setdefault(QUEUE, {})["concurrency"] = 1000
        gateway.setdefault("jobs", {})["max_attempts"] = 1
        gateway.setdefault("workers", {})["processes"] = 1  # `aigw worker` runs inline, no supervisor
        gateway_file.write_text(yaml.safe_dump(gateway, sort_keys=False))
        load_config(self.config_dir)  # fail here, with the config error, not in a child

    # --- per scenario ---------------------------------------------------------------------------

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=10)

    @contextlib.contextmanager
    def aigw(self, concurrency: int) -> Iterator[Aigw]:
        """A fresh API + worker(s) on a flushed Redis, stopped when the block ends.

        With ``shared`` the first call starts one (at ``shared_concurrency``) that every later
        scenario reuses; ``close()`` stops it.
        """
        if self.shared:
            if self._shared_aigw is None:
                self._shared_aigw = self._start_aigw(self.shared_concurrency)
            self._shared_aigw.check_alive()
            yield self._shared_aigw
            return
        handle = self._start_aigw(concurrency)
        try:
            yield handle
        finally:
            for child in (*handle.workers, handle.api):
                child.stop(grace=15)
                with contextlib.suppress(ValueError):
                    self.children.remove(child)

    def _start_aigw(self, concurrency: int) -> Aigw:
        connection = self.redis()
        try:
            connection.flushall()
            token = ServiceRegistry(connection, load_config(self.config_dir)).create_token("bench")
        finally:
            connection.close()
        port = free_port()
        cli = [sys.executable, "-m", "gateway.cli"]
        api = self._spawn("api", [*cli, "api", "--config", str(self.config_dir), "--port", str(port)])
        workers = [
            self._spawn(
                f"worker-{i}",
                [
                    *cli,
                    "worker",
                    "--config",
                    str(self.config_dir),
                    "--queue",
                    QUEUE,
                    "--concurrency",
                    str(concurrency),
                ],
            )  # fmt: skip
            for i in range(self.workers)
        ]
        handle = Aigw(port, token, api, workers)
        self._wait_ready(handle)  # on failure close() stops the children
        return handle

    def _wait_ready(self, handle: Aigw, timeout: float = 30.0) -> None:
        url = f"http://127.0.0.1:{handle.port}/readyz"

        def ready() -> bool:
            handle.check_alive()
            try:
                body = httpx.get(url, timeout=1.0).json()
            except (httpx.HTTPError, json.JSONDecodeError):
                return False
            return int(body.get("workers", {}).get(QUEUE, 0)) >= len(handle.workers)

        wait_for(ready, "the API and worker(s) to be ready", timeout, interval=0.1)
