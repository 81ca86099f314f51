"""Shared fixtures: a real redis-server on a free port for the whole session, flushed per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from gateway.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer.start(tmp_path_factory.mktemp("redis"), appendonly=True)
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A copy of the shipped sample config that a test may edit."""
    target = tmp_path / "config"
    target.mkdir()
    for src in (Path(__file__).parent.parent / "config").glob("*.yaml"):
        (target / src.name).write_text(src.read_text())
    return target
