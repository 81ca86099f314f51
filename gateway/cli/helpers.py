"""What every ``aigw`` command module shares: the consoles, the error exit, logging, the
settings the entry point read, and the lookup of config and Redis. Command modules import this
and never each other.
"""

from __future__ import annotations

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
from gateway.home import resolve_config_dir
from gateway.redis_server import known_redis_url
from gateway.settings import Settings

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


def settings_of(ctx: typer.Context) -> Settings:
    """The settings ``aigw``'s callback read from the environment (``ctx.obj``, which every
    subcommand's context inherits)."""
    if not isinstance(ctx.obj, Settings):
        raise RuntimeError("aigw commands run through gateway.cli.app, whose callback reads the environment")
    return ctx.obj


def setup_logging(settings: Settings, level: str = "INFO") -> None:
    """``level`` unless AIGW_LOG_LEVEL overrides it."""
    logger.remove()
    logger.add(
        sys.stderr,
        level=settings.log_level or level,
        format="{time:HH:mm:ss} {level:<7} {message}",
        diagnose=False,  # a traceback must not print local variables: prompts, PII, keys
    )


def config_dir(settings: Settings, path: Path | None, *, create: bool = False) -> Path:
    """``--config DIR``, else AIGW_CONFIG, else the lookup of ``resolve_config_dir``."""
    return resolve_config_dir(path or settings.config_dir, settings.home, create=create)


def read_config(settings: Settings, path: Path | None, *, create: bool = False) -> Config:
    """The config directory ``config_dir`` picks, loaded; a config error exits with its line."""
    try:
        return load_config(config_dir(settings, path, create=create))
    except ConfigError as exc:
        fail(str(exc))


def redis_url(settings: Settings, config: Config) -> str:
    """REDIS_URL or config, else the embedded Redis a running `aigw up` noted; never a guess."""
    url = known_redis_url(config.redis_url(settings.redis_url), settings.home)
    if url is None:
        fail(
            "no Redis to use: start the stack with `aigw up`, or set REDIS_URL (or redis.url in gateway.yaml)"
        )
    return url


def connect(settings: Settings, config: Config) -> redis.Redis:
    """A client that answered PING; an unreachable Redis exits with a hint."""
    url = redis_url(settings, config)
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        fail(f"cannot reach Redis at {url}: {exc} (is `aigw up` running? set REDIS_URL)")
    return client


def try_connect(settings: Settings, config: Config) -> redis.Redis | None:
    """A client that answered PING, or None: for commands that work without Redis too (no Redis
    known at all is one more None, not an error)."""
    url = known_redis_url(config.redis_url(settings.redis_url), settings.home)
    if url is None:
        return None
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        return None
    return client
