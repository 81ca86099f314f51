"""``aigw up``: the whole local stack in the foreground, supervised, stopped cleanly by Ctrl-C.

It finds or starts Redis, makes sure the ``default`` service has a token, runs the API and one
worker process per queue (times ``workers.processes``) as child processes, restarts a child
that dies, and drains the audit stream into ``$AIGW_HOME/audit.log`` in a thread of its own.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from gateway.audit import AuditWriter
from gateway.config import Config
from gateway.home import StackLock, api_url_file, config_dir_file
from gateway.redis_server import RedisServer, embedded_url_file, port_free, resolve_redis
from gateway.services import ServiceRegistry
from gateway.settings import Settings
from gateway.supervisor import Child, Supervisor, parent_death_signal

#: what the fork server imports before it forks the API and the workers: everything both import,
#: so it is in memory once, shared by every child (measured in docs/benchmarks.md, "Memory")
FORK_PRELOAD = ("gateway.api", "gateway.api.server", "workers.main")


@dataclass
class Stack:
    config: Config
    settings: Settings
    port: int
    redis_url: str = ""
    redis_server: RedisServer | None = None
    supervisor: Supervisor = field(default_factory=Supervisor)
    writer_stop: threading.Event = field(default_factory=threading.Event)
    writer_thread: threading.Thread | None = None
    keeper: subprocess.Popen[bytes] | None = None
    _lock: StackLock | None = None

    @property
    def home(self) -> Path:
        return self.settings.home

    @property
    def api_url(self) -> str:
        return f"http://{self.config.gateway.api.host}:{self.port}"

    def start(self) -> str | None:
        """Start everything; returns a new token for ``default`` when one had to be created."""
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        gw = self.config.gateway
        lock = StackLock(self.home)
        if not lock.acquire():
            raise RuntimeError(
                f"another `aigw up` is running on AIGW_HOME={self.home}: stop it first "
                "(or give this one its own AIGW_HOME)"
            )
        self._lock = lock
        if not port_free(self.port, gw.api.host):
            raise RuntimeError(
                f"port {self.port} on {gw.api.host} is in use (is another `aigw up` running?); "
                "stop it or pass --port"
            )
        self.redis_url, self.redis_server = resolve_redis(
            self.config.redis_url(self.settings.redis_url), self.home, gw.redis.embedded_port
        )
        if self.redis_server is not None:  # so `aigw gateway status` etc. find the embedded Redis
            embedded_url_file(self.home).write_text(self.redis_url)
            self._start_keeper(self.redis_server)
        connection = redis.Redis.from_url(self.redis_url)
        try:
            registry = ServiceRegistry(connection, self.config)
            token = None if registry.has_tokens("default") else registry.create_token("default")
        finally:
            connection.close()
        env = {**self.settings.environ, "REDIS_URL": self.redis_url, "AIGW_HOME": str(self.home)}
        self.supervisor.children.append(Child("fork server", self._fork_server_argv(), env))
        self.supervisor.start_all()
        self._start_audit_writer()
        self._wait_for_api()
        forks = self.supervisor.children[0].process
        if forks is not None:  # start-up is over: from now on the fork server restarts the API too
            forks.send_signal(signal.SIGUSR1)
        # so every other command finds this stack's API (on any --port) and config (any --config)
        api_url_file(self.home).write_text(self.api_url)
        config_dir_file(self.home).write_text(str(Path(self.config.directory).resolve()))
        return token

    def _fork_server_argv(self) -> list[str]:
        """The one child `aigw up` starts itself: ``gateway.supervisor``'s fork server, which
        imports the API's and the workers' code once and forks the API and a worker per queue
        (times ``workers.processes``) from itself, so they share those pages (docs/architecture.md)."""
        gw = self.config.gateway
        common = {"config_dir": self.config.directory, "redis_url": self.redis_url}
        children: list[dict[str, Any]] = [
            {"name": "aigw-api", "target": "gateway.api.server:serve", "essential": True,
             "kwargs": {**common, "port": self.port}},
        ]  # fmt: skip
        for queue in gw.queues:
            for index in range(gw.workers.processes):
                children.append(
                    {"name": f"aigw-worker-{queue}-{index}", "target": "workers.main:serve",
                     "kwargs": {**common, "queue": queue}}
                )  # fmt: skip
        spec = {"preload": list(FORK_PRELOAD), "grace": gw.workers.shutdown_grace + 5, "children": children}
        return [sys.executable, "-m", "gateway.supervisor", json.dumps(spec)]

    def _start_keeper(self, server: RedisServer) -> None:
        """The process that stops our Redis after the children drain if this one dies (kill -9)."""
        grace = self.config.gateway.workers.shutdown_grace + 10
        argv = [sys.executable, "-m", "gateway.redis_keeper", "--pid", str(server.pid)]
        argv += ["--port", str(server.port), "--grace", str(grace)]
        self.keeper = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,  # a terminal's Ctrl-C is for us; the keeper waits for our word
            preexec_fn=parent_death_signal(signal.SIGTERM),
        )
        assert self.keeper.stdout is not None
        with self.keeper.stdout:  # "ready": its SIGTERM handler is in place
            if self.keeper.stdout.readline().strip() != b"ready":
                raise RuntimeError("the embedded Redis's keeper process did not start")

    def _start_audit_writer(self) -> None:
        path = Path(self.config.gateway.audit.path or self.home / "audit.log").expanduser()
        client = redis.Redis.from_url(self.redis_url)
        writer = AuditWriter(client, path, consumer=f"up-{os.getpid()}")
        self.writer_thread = threading.Thread(
            target=writer.run, args=(self.writer_stop,), name="audit-writer", daemon=True
        )
        self.writer_thread.start()

    def _wait_for_api(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.supervisor.children[0].alive():
                raise RuntimeError("the API process exited during start-up (see its log above)")
            if self._api_ready():  # Redis answers and every queue has a live worker
                return
            time.sleep(0.1)
        raise RuntimeError(f"the API did not answer on {self.api_url} within {timeout:.0f}s")

    def _api_ready(self) -> bool:
        # http.client, not httpx: this process idles for as long as the stack runs, and httpx
        # would be 3.6 MB of it for this one poll (docs/benchmarks.md, "Memory")
        connection = http.client.HTTPConnection(self.config.gateway.api.host, self.port, timeout=1.0)
        try:
            connection.request("GET", "/readyz")
            return connection.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    def supervise(self) -> None:
        self.supervisor.supervise()

    def stop(self, grace: float | None = None) -> None:
        """Workers first (they drain), then the audit writer, then Redis if it is ours."""
        if self._lock is None:  # it never started: the notes, if any, are another stack's
            return
        api_url_file(self.home).unlink(missing_ok=True)
        config_dir_file(self.home).unlink(missing_ok=True)
        # the fork server drains its children within shutdown_grace + 5 s, then kills what is left
        self.supervisor.stop(grace if grace is not None else self.config.gateway.workers.shutdown_grace + 10)
        self.writer_stop.set()  # after the workers: their last audit events get written now
        if self.writer_thread is not None:
            self.writer_thread.join(timeout=10)
        if self.redis_server is not None:
            self.redis_server.stop()
            embedded_url_file(self.home).unlink(missing_ok=True)
        if self.keeper is not None:  # Redis is stopped: the keeper has nothing left to keep
            self.keeper.terminate()
            self.keeper.wait(timeout=10)
            self.keeper = None
        self._lock.release()
        self._lock = None
