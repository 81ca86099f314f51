"""What every ``aigw`` command module shares: the consoles, the error exit, logging, and the
lookup of config and Redis. Command modules import this and never each other.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, NoReturn

import redis
import typer
from loguru import logger
from rich.console import Console
from rich.markup import escape

from gateway.config import Config, load_config
from gateway.errors import ConfigError
from gateway.home import aigw_home, resolve_config_dir
from gateway.redis_server import known_redis_url

# soft_wrap: never break lines at 80 columns when output goes to a pipe or a file
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Config directory.")]

#: the width of ``out`` when it is a pipe or a file and COLUMNS is not set
PIPE_WIDTH = 160


def size_consoles(environ: Mapping[str, str]) -> None:
    """A pipe or CI log gets room for tables, not 80 columns (called once, at the entry point)."""
    if not out.is_terminal and "COLUMNS" not in environ:
        out.width = PIPE_WIDTH


def fail(message: str, code: int = 1) -> NoReturn:
    """One readable line on stderr, then a non-zero exit; the message is printed as is, not as markup."""
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def setup_logging(level: str = "INFO") -> None:
    logger.remove()
    logger.add(
        sys.stderr,
        level=os.environ.get("AIGW_LOG_LEVEL", level),
        format="{time:HH:mm:ss} {level:<7} {message}",
        diagnose=False,  # a traceback must not print local variables: prompts, PII, keys
    )


def read_config(path: Path | None, *, create: bool = False) -> Config:
    """The config directory ``resolve_config_dir`` picks, loaded; a config error exits with its line."""
    try:
        return load_config(resolve_config_dir(path, create=create))
    except ConfigError as exc:
        fail(str(exc))


def redis_url(config: Config) -> str:
    """REDIS_URL or config, else the embedded Redis a running `aigw up` noted; never a guess."""
    url = known_redis_url(config.redis_url(), aigw_home())
    if url is None:
        fail(
            "no Redis to use: start the stack with `aigw up`, or set REDIS_URL (or redis.url in gateway.yaml)"
        )
    return url


def connect(config: Config) -> redis.Redis:
    """A client that answered PING; an unreachable Redis exits with a hint."""
    client = redis.Redis.from_url(redis_url(config), socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        fail(f"cannot reach Redis at {redis_url(config)}: {exc} (is `aigw up` running? set REDIS_URL)")
    return client


def try_connect(config: Config) -> redis.Redis | None:
    """A client that answered PING, or None: for commands that work without Redis too (no Redis
    known at all is one more None, not an error)."""
    url = known_redis_url(config.redis_url(), aigw_home())
    if url is None:
        return None
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        return None
    return client
