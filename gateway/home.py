"""Where aigw keeps its state ($AIGW_HOME) and which config directory it reads.

Standard library only: the Python client (gateway.client) finds the API through this module,
and must import nothing from the server side.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from importlib import resources
from pathlib import Path


def aigw_home(environ: Mapping[str, str] | None = None) -> Path:
    """``$AIGW_HOME``, default ``~/.aigw``: audit log, embedded Redis data, local state."""
    env = os.environ if environ is None else environ
    return Path(env.get("AIGW_HOME") or Path.home() / ".aigw").expanduser()


def resolve_config_dir(explicit: str | Path | None = None, *, create: bool = False) -> Path:
    """``--config DIR``, else ``AIGW_CONFIG``, else ``./config`` if present, else ``$AIGW_HOME/config``.

    With ``create`` the last one is filled from the shipped sample on first start.
    """
    if explicit:
        return Path(explicit)
    if env := os.environ.get("AIGW_CONFIG"):
        return Path(env)
    local = Path.cwd() / "config"
    if (local / "models.yaml").exists():
        return local
    home_config = aigw_home() / "config"
    if create and not (home_config / "models.yaml").exists():
        aigw_home().mkdir(mode=0o700, parents=True, exist_ok=True)
        home_config.mkdir(parents=True, exist_ok=True)
        sample = resources.files("gateway") / "sample_config"
        for item in sample.iterdir():
            if item.name.endswith(".yaml") and not (home_config / item.name).exists():
                with resources.as_file(item) as src:
                    shutil.copyfile(src, home_config / item.name)
    return home_config


def api_url_file(home: Path) -> Path:
    """Where `aigw up` notes its API's URL (it may run on another --port), for the other commands."""
    return home / "api-url"


def noted_api_url(default: str, environ: Mapping[str, str] | None = None) -> str:
    """The URL a running `aigw up` noted in $AIGW_HOME, else ``default``."""
    try:
        noted = api_url_file(aigw_home(environ)).read_text().strip()
    except FileNotFoundError:  # no stack running (or it stopped between a check and a read)
        return default
    return noted or default
