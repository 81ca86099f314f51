"""The HTTP API (the app in app.py)."""

from gateway.api.app import create_app

__all__ = ["create_app"]
