"""``aigw up``: the whole local stack in the foreground, supervised, stopped cleanly by Ctrl-C.

It finds or starts Redis, makes sure the ``default`` service has a token, runs the API, one
worker process per queue (times ``workers.processes``) and the audit writer (the audit stream
into ``$AIGW_HOME/audit.log``) as child processes forked from itself, and restarts a child that
dies. It imports their code once before the first fork, so they share it; and it holds no
thread and no open connection of its own, so that any fork, a restart too, starts clean.
"""

from __future__ import annotations

import gc
import http.client
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from gateway.audit import AuditWriter
from gateway.config import Config
from gateway.home import StackLock, api_url_file, config_dir_file
from gateway.redis_server import RedisServer, embedded_url_file, port_free, resolve_redis
from gateway.services import ServiceRegistry
from gateway.settings import Settings
from gateway.supervisor import Child, Supervisor, parent_death_signal

#: what `aigw up` imports before it forks its children, so it is in memory once for all of them:
#: what the API and the workers both use (the policies and PII detector, the wire formats, RQ, the
#: audit event). Not what one process alone uses (FastAPI and uvicorn; aiohttp, httpx and the
#: providers): a page the parent holds counts in the RSS of every child that maps it, so
#: preloading those would save no memory and add to every other child's RSS (docs/benchmarks.md)
FORK_PRELOAD = (
    "gateway.policies",
    "gateway.wire.openai",
    "gateway.wire.anthropic",
    "gateway.audit.writer",
    "gateway.quotas",
    "gateway.job_stream",
    "gateway.scripted_pipeline",
    "rq.worker",
)


@dataclass
class Stack:
    config: Config
    settings: Settings
    port: int
    redis_url: str = ""
    redis_server: RedisServer | None = None
    supervisor: Supervisor = field(default_factory=Supervisor)
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
        self.supervisor.children.extend(self._children(env))
        for module in FORK_PRELOAD:  # once, here: every child forked from this process shares it
            importlib.import_module(module)
        gc.collect()  # the import garbage goes before the freeze (fork_child), not into every child
        self.supervisor.start_all()
        self._wait_for_api()
        # so every other command finds this stack's API (on any --port) and config (any --config)
        api_url_file(self.home).write_text(self.api_url)
        config_dir_file(self.home).write_text(str(Path(self.config.directory).resolve()))
        return token

    def _children(self, env: dict[str, str]) -> list[Child]:
        """The API, the worker processes and the audit writer, each forked from this process
        (docs/architecture.md: "aigw up forks its children"). ``workers.layout: shared`` runs
        ``workers.processes`` workers that each serve every queue; ``per_queue`` that many per queue."""
        gw = self.config.gateway
        common = {"config_dir": self.config.directory, "redis_url": self.redis_url}
        api = {**common, "port": self.port}
        children = [Child("aigw-api", [], env, target="gateway.api.server:serve", kwargs=api)]
        groups = [list(gw.queues)] if gw.workers.layout == "shared" else [[q] for q in gw.queues]
        for queues in groups:
            label = "" if gw.workers.layout == "shared" else f"{queues[0]}-"
            for index in range(gw.workers.processes):
                worker = {**common, "queues": queues}
                children.append(
                    Child(f"aigw-worker-{label}{index}", [], env, target="workers.main:serve", kwargs=worker)
                )
        path = Path(gw.audit.path or self.home / "audit.log").expanduser()
        audit_config = self.config.gateway.audit
        audit = {
            "redis_url": self.redis_url,
            "path": str(path),
            "consumer": f"up-{os.getpid()}",
            "rotate_bytes": audit_config.rotate_bytes,
            "keep": audit_config.keep,
        }
        children.append(
            Child(
                "aigw-audit", [], env, target="gateway.stack:run_audit_writer", kwargs=audit, stop_last=True
            )
        )
        return children

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
        # the audit writer last: the workers' last audit events get written after they exit
        self.supervisor.stop(grace if grace is not None else self.config.gateway.workers.shutdown_grace + 5)
        if self.redis_server is not None:
            self.redis_server.stop()
            embedded_url_file(self.home).unlink(missing_ok=True)
        if self.keeper is not None:  # Redis is stopped: the keeper has nothing left to keep
            self.keeper.terminate()
            self.keeper.wait(timeout=10)
            self.keeper = None
        self._lock.release()
        self._lock = None


def run_audit_writer(
    redis_url: str, path: str, consumer: str, rotate_bytes: int | None, keep: int | None
) -> None:
    """`aigw up`'s audit writer, in a child forked from it: drains the audit stream into ``path``
    until SIGTERM (`aigw up` sends it once the workers have exited, or the kernel when `aigw up`
    dies). Ctrl-C is not for it: the workers' last events are still to come."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client = redis.Redis.from_url(redis_url)
    try:
        AuditWriter(client, Path(path), consumer=consumer, rotate_bytes=rotate_bytes, keep=keep).run(stop)
    finally:
        client.close()
