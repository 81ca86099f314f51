"""Where aigw keeps its state ($AIGW_HOME) and which config directory it reads.

A running `aigw up` holds an exclusive ``flock`` on ``$AIGW_HOME/up.lock`` for its whole life
(the kernel drops it when the process dies, ``kill -9`` included) and notes its API URL and
config directory beside it, so every other command run with the same ``AIGW_HOME``, from any
directory, talks to that stack and reads its config.

Standard library only: the Python client (gateway.client) finds the API through this module,
and must import nothing from the server side.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Mapping
from importlib import resources
from pathlib import Path


def aigw_home(environ: Mapping[str, str]) -> Path:
    """``$AIGW_HOME`` in ``environ``, default ``~/.aigw``: audit log, embedded Redis data, local state."""
    return Path(environ.get("AIGW_HOME") or Path.home() / ".aigw").expanduser()


def resolve_config_dir(explicit: str | Path | None, home: Path, *, create: bool = False) -> Path:
    """``explicit`` (``--config DIR``, else ``AIGW_CONFIG``: the caller's settings), else the
    config directory of the `aigw up` running on ``home``, else ``./config`` if present, else
    ``home/config``.

    ``create`` is `aigw up`'s own lookup: it never follows another stack's note, and it fills
    ``home/config`` from the shipped sample on first start.
    """
    if explicit:
        return Path(explicit)
    if not create and (noted := noted_config_dir(home)) is not None:
        return noted
    local = Path.cwd() / "config"
    if (local / "models.yaml").exists():
        return local
    home_config = home / "config"
    if create and not (home_config / "models.yaml").exists():
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        copy_sample_config(home_config)
    return home_config


def copy_sample_config(directory: Path, *, overwrite: bool = False) -> list[str]:
    """Fill ``directory`` with the shipped sample config (`aigw up`'s first start, `aigw onboard`);
    a file already there is kept unless ``overwrite``. Returns the names written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    sample = resources.files("gateway") / "sample_config"
    for item in sorted(sample.iterdir(), key=lambda i: i.name):
        if item.name.endswith(".yaml") and (overwrite or not (directory / item.name).exists()):
            with resources.as_file(item) as src:
                shutil.copyfile(src, directory / item.name)
            written.append(item.name)
    return written


def api_url_file(home: Path) -> Path:
    """Where `aigw up` notes its API's URL (it may run on another --port), for the other commands."""
    return home / "api-url"


def noted_api_url(default: str, environ: Mapping[str, str]) -> str:
    """The URL a running `aigw up` noted in $AIGW_HOME, else ``default``.

    Only while that stack runs: a note a ``kill -9`` left behind may name a port something else
    listens on now, and a client would send it its token.
    """
    home = aigw_home(environ)
    return read_note(api_url_file(home), home) or default


def read_note(path: Path, home: Path) -> str | None:
    """A note the `aigw up` running on ``home`` wrote; None when none runs or it wrote none."""
    if not stack_running(home):
        return None
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:  # it stopped between the check and the read
        return None


def config_dir_file(home: Path) -> Path:
    """Where `aigw up` notes the config directory it runs on, for the other commands."""
    return home / "config-dir"


def noted_config_dir(home: Path) -> Path | None:
    """The config directory of the `aigw up` running on ``home``; None when none runs."""
    noted = read_note(config_dir_file(home), home)
    return Path(noted) if noted else None


class StackLock:
    """`aigw up`'s claim on an ``AIGW_HOME``: one stack per home, released when the process ends."""

    def __init__(self, home: Path) -> None:
        self.path = home / "up.lock"
        self._fd: int | None = None

    def acquire(self, patience: float = 1.0) -> bool:
        """Take the lock; False when another live `aigw up` holds it.

        ``stack_running`` probes hold a shared lock for microseconds: retrying for ``patience``
        seconds keeps a status loop in another terminal from refusing a start.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by children
        deadline = time.monotonic() + patience
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                os.close(fd)
                return False
            self._fd = fd
            return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def stack_running(home: Path) -> bool:
    """Whether a live `aigw up` holds ``home`` (its lock is taken)."""
    path = home / "up.lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return False
