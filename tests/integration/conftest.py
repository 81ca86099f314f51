"""Integration fixtures: the fake provider, a config pointing at it, and the pieces of harness.py
started per test and stopped at its teardown."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import Config, load_config
from tests.fakes.provider import FakeProvider
from tests.integration import harness
from tests.integration.harness import (
    FAKE_KEY,
    Api,
    ConfigFactory,
    Receiver,
    SpawnWorker,
    Stack,
    StartApi,
    StartStack,
    StartWorker,
    WorkerHandle,
    fake_models,
)


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeProvider]:
    with FakeProvider(api_key=FAKE_KEY) as fake:
        yield fake


@pytest.fixture
def fake(fake_server: FakeProvider) -> Iterator[FakeProvider]:
    fake_server.reset()
    yield fake_server
    fake_server.reset()


@pytest.fixture
def gateway_config(
    config_dir: Path, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> ConfigFactory:
    """Returns a factory: ``make(models=None, jobs=None, ...)`` writes the YAML and loads it."""
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
        if policies is not None:  # else the shipped policies.yaml: the seed article's three
            (config_dir / "policies.yaml").write_text(yaml.safe_dump({"policies": policies}))
        if services is not None:
            (config_dir / "services.yaml").write_text(yaml.safe_dump({"services": services}))
        gateway = yaml.safe_load((config_dir / "gateway.yaml").read_text())
        gateway["jobs"].update({"retry_intervals": [0], **(jobs or {})})
        gateway["workers"].update(workers or {})
        (config_dir / "gateway.yaml").write_text(yaml.safe_dump(gateway))
        return load_config(config_dir)

    return make


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1 (harness.Receiver), stopped at teardown."""
    state = Receiver()
    server = harness.serve_receiver(state)
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def start_api(redis_url: str) -> Iterator[StartApi]:
    """Returns ``start(config, on_redis=None)``: an API server on 127.0.0.1, stopped at teardown."""
    apis: list[Api] = []

    def start(config: Config, on_redis: str | None = None) -> Api:
        apis.append(harness.start_api(config, on_redis or redis_url))
        return apis[-1]

    yield start
    for api in apis:
        api.stop()


@pytest.fixture
def start_worker(redis_url: str) -> Iterator[StartWorker]:
    """Returns ``start(config, queue, concurrency, on_redis)``: a worker thread, stopped at teardown."""
    handles: list[WorkerHandle] = []

    def start(
        config: Config, queue: str = "interactive", concurrency: int = 50, on_redis: str | None = None
    ) -> WorkerHandle:
        handles.append(harness.start_worker(config, on_redis or redis_url, queue, concurrency))
        return handles[-1]

    yield start
    for handle in handles:
        handle.stop()


@pytest.fixture
def spawn_worker(redis_url: str) -> Iterator[SpawnWorker]:
    """Returns ``spawn(config, concurrency=100)``: `aigw worker` as a subprocess, killed at teardown."""
    processes: list[subprocess.Popen[bytes]] = []

    def spawn(config: Config, concurrency: int = 100) -> subprocess.Popen[bytes]:
        processes.append(harness.spawn_worker(config, redis_url, concurrency))
        return processes[-1]

    yield spawn
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.fixture
def stack(
    gateway_config: ConfigFactory, start_api: StartApi, start_worker: StartWorker, fake: FakeProvider
) -> StartStack:
    """Returns ``stack(config=None, **settings)``: the API and one interactive worker on ``config``,
    or on ``gateway_config(**settings)`` when no config is given."""

    def start(config: Config | None = None, **settings: Any) -> Stack:
        if config is None:
            config = gateway_config(**settings)
        elif settings:
            raise TypeError("stack() takes a Config or settings for gateway_config, not both")
        return Stack(config, start_api(config), start_worker(config), fake)

    return start
