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
