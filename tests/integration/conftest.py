"""Integration harness: fake provider, a config pointing at it, the real API and the real worker."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
import yaml

from gateway import keys
from gateway.api import create_app
from gateway.audit import EVENT_FIELD
from gateway.config import Config, load_config
from gateway.redis_server import free_port
from gateway.services import ServiceRegistry
from tests.fakes.provider import FakeProvider
from workers.main import build_worker
from workers.worker import AsyncWorker

FAKE_KEY = "sk-test-fake-key-0123456789"


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeProvider]:
    with FakeProvider(api_key=FAKE_KEY) as fake:
        yield fake


@pytest.fixture
def fake(fake_server: FakeProvider) -> Iterator[FakeProvider]:
    fake_server.reset()
    yield fake_server
    fake_server.reset()


def fake_models(base_url: str) -> dict[str, object]:
    """models.yaml with one alias per wire format, all served by the fake provider."""
    price = {"input_per_mtok": 3.0, "output_per_mtok": 15.0}
    return {
        "default_model": "general",
        "models": {
            "general": {
                "provider": "anthropic", "model": "claude-fake", "api_base": base_url,
                "api_key_env": "AIGW_TEST_ANTHROPIC_KEY", "pricing": price, "use_for": ["drafting"],
                "fallbacks": ["offline"],
            },
            "openai": {
                "provider": "openai", "model": "gpt-fake", "api_base": f"{base_url}/v1",
                "api_key_env": "AIGW_TEST_OPENAI_KEY", "pricing": price, "use_for": ["classification"],
            },
            "sensitive": {
                "provider": "ollama", "model": "llama-fake", "api_base": base_url, "sensitive": True,
                "use_for": ["customer_data"],
            },
            "offline": {"provider": "offline", "model": "aigw-offline-1", "sensitive": True},
        },
    }  # fmt: skip


@pytest.fixture
def gateway_config(
    config_dir: Path, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., Config]:
    """Returns a factory: ``make(models=None, jobs=None)`` writes the YAML and loads it."""
    monkeypatch.setenv("AIGW_TEST_ANTHROPIC_KEY", FAKE_KEY)
    monkeypatch.setenv("AIGW_TEST_OPENAI_KEY", FAKE_KEY)
    monkeypatch.setenv("AIGW_HOME", str(tmp_path / "home"))

    def make(
        models: dict[str, object] | None = None,
        jobs: dict[str, object] | None = None,
        workers: dict[str, object] | None = None,
        policies: list[dict[str, object]] | None = None,
        services: dict[str, object] | None = None,
    ) -> Config:
        (config_dir / "models.yaml").write_text(yaml.safe_dump(models or fake_models(fake.base_url)))
        if policies is not None:  # else the shipped policies.yaml: SEED.md's three
            (config_dir / "policies.yaml").write_text(yaml.safe_dump({"policies": policies}))
        if services is not None:
            (config_dir / "services.yaml").write_text(yaml.safe_dump({"services": services}))
        gateway = yaml.safe_load((config_dir / "gateway.yaml").read_text())
        gateway["jobs"].update({"retry_intervals": [0], **(jobs or {})})
        gateway["workers"].update(workers or {})
        (config_dir / "gateway.yaml").write_text(yaml.safe_dump(gateway))
        return load_config(config_dir)

    return make


@dataclass
class Api:
    url: str
    token: str
    config: Config

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token or self.token}"}, timeout=30
        )


@dataclass
class WorkerHandle:
    worker: AsyncWorker
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop | None = None

    def stop(self) -> None:
        if self.loop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.worker.request_shutdown)
        self.thread.join(timeout=30)


@pytest.fixture
def start_api(redis_url: str) -> Iterator[Callable[[Config], Api]]:
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(config: Config, on_redis: str | None = None) -> Api:
        url = on_redis or redis_url
        connection = redis.Redis.from_url(url)
        token = ServiceRegistry(connection, config).create_token("svc-a")
        connection.close()
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(config, url), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_until(lambda: server.started, "API start")
        servers.append((server, thread))
        return Api(f"http://127.0.0.1:{port}", token, config)

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def start_worker(redis_url: str) -> Iterator[Callable[..., WorkerHandle]]:
    """Runs the project's async worker in a thread (its own loop), stopped at teardown."""
    handles: list[WorkerHandle] = []

    def start(
        config: Config, queue: str = "interactive", concurrency: int = 50, on_redis: str | None = None
    ) -> WorkerHandle:
        worker, pipeline = build_worker(config, on_redis or redis_url, queue, concurrency)
        handle = WorkerHandle(worker, threading.Thread(target=lambda: None))
        ready = threading.Event()

        def run() -> None:
            async def main() -> None:
                handle.loop = asyncio.get_running_loop()
                ready.set()
                try:
                    await worker.run()
                finally:
                    await pipeline.aclose()
                    worker.connection.close()

            asyncio.run(main())

        handle.thread = threading.Thread(target=run, daemon=True)
        handle.thread.start()
        ready.wait(10)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.stop()


@pytest.fixture
def spawn_worker(redis_url: str) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """`aigw worker` as a real subprocess (so it can be killed, or run beside others)."""
    processes: list[subprocess.Popen[bytes]] = []

    def spawn(config: Config, concurrency: int = 100) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "gateway.cli", "worker", "--config", config.directory]
        argv += ["--queue", "interactive", "--concurrency", str(concurrency)]
        env = {**os.environ, "REDIS_URL": redis_url, "AIGW_LOG_LEVEL": "WARNING"}
        process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
        processes.append(process)
        return process

    yield spawn
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


def run_burst(
    config: Config, redis_url: str, queue: str = "interactive", concurrency: int = 50
) -> AsyncWorker:
    """Run the project's worker in burst mode until the queue is empty; returns it for inspection."""
    worker, pipeline = build_worker(config, redis_url, queue, concurrency)

    async def main() -> None:
        try:
            await worker.run(burst=True)
        finally:
            await pipeline.aclose()
            worker.connection.close()

    asyncio.run(main())
    return worker


def audit_events(connection: redis.Redis) -> list[dict[str, Any]]:
    """The audit events in the Redis stream (what the writer would append to the log), oldest first."""
    entries: list[tuple[bytes, dict[bytes, bytes]]] = connection.xrange(keys.AUDIT_STREAM)  # type: ignore[assignment]
    return [json.loads(fields[EVENT_FIELD.encode()]) for _id, fields in entries]


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")
