"""What aigw takes from the environment, read once by an entry point and passed down.

The entry points (the CLI's callback, ``create_app``, the worker's ``build_worker``) call
``Settings.from_environ(os.environ)``; nothing else reads the environment. A test hands in its
own mapping. Provider keys, channel URLs and secrets, and the variables a skill's scripts may
see are looked up by name in ``environ`` when they are used, not copied here, so a rotated key
is picked up without a restart: pass ``os.environ`` itself and a change to it is seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.home import aigw_home


@dataclass(frozen=True)
class Settings:
    #: ``$AIGW_HOME``, default ``~/.aigw``: audit log, embedded Redis data, skill cache, notes
    home: Path
    #: ``$REDIS_URL``: overrides ``redis.url`` in gateway.yaml
    redis_url: str | None = None
    #: ``$AIGW_CONFIG``: the config directory when ``--config`` is not given
    config_dir: Path | None = None
    #: ``$AIGW_LOG_LEVEL``: overrides an entry point's default log level
    log_level: str | None = None
    #: the environment itself, for names looked up at call time; never printed (it holds keys)
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """The settings in ``environ``; an empty variable counts as unset."""
        config_dir = environ.get("AIGW_CONFIG")
        return cls(
            home=aigw_home(environ),
            redis_url=environ.get("REDIS_URL") or None,
            config_dir=Path(config_dir) if config_dir else None,
            log_level=environ.get("AIGW_LOG_LEVEL") or None,
            environ=environ,
        )
