"""The integration harness: the real API, the real worker and readers of what they leave in Redis.

Test modules import from here; tests/integration/conftest.py holds only the fixtures, which start
these pieces for a test and stop them at its teardown. Everything runs on 127.0.0.1 against the
session's redis-server and the fake provider (tests/fakes/provider.py): the API under uvicorn in a
thread, the project's worker in a thread with its own event loop, in burst mode, or as a real
``aigw worker`` subprocess when a test has to kill it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import redis
import uvicorn
import yaml

from gateway import keys
from gateway.api import create_app
from gateway.api.server import uvicorn_config
from gateway.audit import EVENT_FIELD
from gateway.config import Config, load_config
from gateway.redis_server import free_port
from gateway.services import ServiceRegistry
from tests.fakes.provider import FakeProvider
from workers.main import build_worker
from workers.worker import AsyncWorker

FAKE_KEY = "sk-test-fake-key-0123456789"
SERVICE = "svc-a"  # the service whose token every started API hands out


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
                "capabilities": {"embeddings": True},
            },
            "sensitive": {
                "provider": "ollama", "model": "llama-fake", "api_base": base_url, "sensitive": True,
                "use_for": ["customer_data"], "capabilities": {"embeddings": True},
            },
            "offline": {"provider": "offline", "model": "aigw-offline-1", "sensitive": True},
        },
    }  # fmt: skip


@dataclass
class Api:
    """A running API server and a token for ``SERVICE`` on it."""

    url: str
    token: str
    config: Config
    server: uvicorn.Server = field(repr=False)
    thread: threading.Thread = field(repr=False)

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token or self.token}"}, timeout=30
        )

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class WorkerHandle:
    """The project's async worker running in a thread on its own event loop."""

    worker: AsyncWorker
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop | None = None

    def stop(self) -> None:
        if self.loop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.worker.request_shutdown)
        self.thread.join(timeout=30)


@dataclass(frozen=True)
class Stack:
    """Config, API and one interactive worker started together: what most end-to-end tests need."""

    config: Config
    api: Api
    worker: WorkerHandle
    fake: FakeProvider


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1 that records what it gets; ``fail_first`` answers 500 first."""

    url: str = ""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    fail_first: int = 0
    calls: int = 0


def serve_receiver(state: Receiver) -> ThreadingHTTPServer:
    """Serve ``state`` on a free port in a thread; ``shutdown()`` and ``server_close()`` end it."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.calls += 1
            if state.calls <= state.fail_first:
                self.send_response(500)
            else:
                state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def with_channels(config: Config, channels: list[dict[str, Any]]) -> Config:
    (Path(config.directory) / "channels.yaml").write_text(yaml.safe_dump({"channels": channels}))
    return load_config(config.directory)


ConfigFactory = Callable[..., Config]  # the gateway_config fixture: models=, jobs=, workers=, ...
StartApi = Callable[..., Api]
StartWorker = Callable[..., WorkerHandle]
SpawnWorker = Callable[..., subprocess.Popen[bytes]]
StartStack = Callable[..., Stack]


def with_api_settings(config_dir: Path, gateway_config: ConfigFactory, **api: Any) -> Config:
    """The test config with ``api`` settings written into gateway.yaml first."""
    path = config_dir / "gateway.yaml"
    gateway = yaml.safe_load(path.read_text())
    gateway["api"].update(api)
    path.write_text(yaml.safe_dump(gateway))
    return gateway_config()


def start_api(config: Config, redis_url: str) -> Api:
    """Serve the app on a free port of 127.0.0.1 and return once it accepts connections."""
    connection = redis.Redis.from_url(redis_url)
    token = ServiceRegistry(connection, config).create_token(SERVICE)
    connection.close()
    port = free_port()
    app = create_app(config, redis_url)
    server = uvicorn.Server(uvicorn_config(app, config.gateway.api, host="127.0.0.1", port=port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "API start")
    return Api(f"http://127.0.0.1:{port}", token, config, server, thread)


def start_worker(config: Config, redis_url: str, queue: str, concurrency: int) -> WorkerHandle:
    """Run the project's worker in a thread until ``stop()``; returns once its loop is running."""
    worker, pipeline = build_worker(config, redis_url, queue, concurrency)
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
    return handle


def spawn_worker(config: Config, redis_url: str, concurrency: int) -> subprocess.Popen[bytes]:
    """`aigw worker` on the interactive queue as a real subprocess (so it can be killed)."""
    argv = [sys.executable, "-m", "gateway.cli", "worker", "--config", config.directory]
    argv += ["--queue", "interactive", "--concurrency", str(concurrency)]
    env = {**os.environ, "REDIS_URL": redis_url, "AIGW_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)


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


def submit(api: Api, body: dict[str, Any], token: str | None = None, wait: float = 20) -> httpx.Response:
    """POST one job and long-poll up to ``wait`` seconds for its end (0: answer at once)."""
    with api.client(token) as client:
        return client.post("/v1/jobs", params={"wait": wait}, json=body)


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
