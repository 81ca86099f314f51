"""aigw gateway: the front door (HTTP API, CLI, client) and the contract shared with the workers."""

__version__ = "0.1.0"
