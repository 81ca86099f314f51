"""The uvicorn settings of the API, built from gateway.yaml: one function for ``aigw api`` and the
tests' API alike, so the API under test is served the way production serves it.

* **Forwarded headers** (``X-Forwarded-For``, ``X-Forwarded-Proto``) are honoured only from the
  addresses in ``api.trusted_proxies``; with none (the default) they are ignored, so the client
  address, which the auth throttle counts per, is always the socket peer. (Left to its defaults,
  uvicorn trusts them from 127.0.0.1, which lets any local client pick its own address.)
* **Connections**: at most ``api.max_connections`` connections and requests in flight; past it
  uvicorn answers 503 at once, so stalled clients cannot pile up without bound. A body's arrival
  is bounded by ``api.body_timeout_seconds`` in ``gateway/api/bodies.py``.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import uvicorn

from gateway.config import ApiConfig


def uvicorn_config(
    app: Any, api: ApiConfig, *, host: str | None = None, port: int | None = None
) -> uvicorn.Config:
    """The uvicorn.Config serving ``app`` with ``api``'s settings (``host``/``port`` override them)."""
    trusted = list(api.trusted_proxies)
    return uvicorn.Config(
        app,
        host=host or api.host,
        port=api.port if port is None else port,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted,  # never None: uvicorn would read FORWARDED_ALLOW_IPS instead
        limit_concurrency=api.max_connections,
        log_level="warning",
        access_log=False,
    )


def run(app: Any, api: ApiConfig, *, host: str | None = None, port: int | None = None) -> bool:
    """Serve ``app`` until stopped (SIGINT or SIGTERM); False if it never started (it could not
    bind, or the app's startup failed: uvicorn logged why)."""
    server = uvicorn.Server(uvicorn_config(app, api, host=host, port=port))
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run does
        server.run()
    return bool(server.started)


def serve(config_dir: str, redis_url: str, port: int | None = None) -> int:
    """The API of `aigw up`, in a child forked from it (gateway/supervisor.py): the config read
    afresh (a restarted child sees the files as they are now), then served; exit code 0, or 3 if
    it never started (as `aigw api`)."""
    from gateway.api import create_app
    from gateway.config import load_config
    from gateway.settings import Settings

    config = load_config(config_dir)
    app = create_app(config, redis_url, Settings.from_environ(os.environ))
    return 0 if run(app, config.gateway.api, port=port) else 3
