"""``aigw up``, ``aigw api``, ``aigw worker``: run a part of the stack in the foreground until stopped.

Split from ``commands.py``, which would pass 500 lines with them, along the line the commands
already draw: these three start processes. They set up logging, import the heavy sides (the
stack, the API app, the worker) only when they run, and supervise children until stopped. The
rest of the command line is a short call against a running stack, in ``commands.py``.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Annotated, Any

import redis
import typer

from gateway.cli.helpers import ConfigOpt, fail, out, read_config, redis_url, settings_of, setup_logging
from gateway.config import Config
from gateway.errors import GatewayError
from gateway.settings import Settings


def up(
    ctx: typer.Context,
    config: ConfigOpt = None,
    port: Annotated[int | None, typer.Option(help="API port.")] = None,
) -> None:
    """Start the whole local stack in the foreground: Redis, API, workers, audit writer."""
    from gateway.stack import Stack

    settings = settings_of(ctx)
    setup_logging(settings, "WARNING")
    cfg = read_config(settings, config, create=True)
    stack = Stack(cfg, settings, port if port is not None else cfg.gateway.api.port)
    stack.supervisor.watch_signals()  # a SIGTERM or SIGHUP from here on stops the stack in order
    try:
        token = stack.start()
    except KeyboardInterrupt:
        stack.stop(grace=5)
        raise typer.Exit(130) from None
    except (GatewayError, RuntimeError, redis.RedisError) as exc:
        stack.stop(grace=5)
        fail(str(exc))
    try:
        _banner(stack, token)
        stack.supervise()
    except KeyboardInterrupt:  # Ctrl-C before supervise() took over
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the drain short
        stack.stop()  # first: a print to a closed pipe (`| tee` gone with Ctrl-C) must not skip it
        _say_stopped()


def _say_stopped() -> None:
    """The last line, if anyone still reads: after Ctrl-C a `| tee` is gone too, and rich answers
    a broken pipe with exit 1 (stdout already pointed at /dev/null); the stack stopped fine."""
    with contextlib.suppress(SystemExit, BrokenPipeError):
        out.print("aigw stopped.")


def _banner(stack: Any, token: str | None) -> None:
    embedded = " (embedded, data in " + str(stack.redis_server.data_dir) + ")" if stack.redis_server else ""
    out.print(f"[bold green]aigw is up[/] at {stack.api_url}")
    out.print(f"  redis:   {stack.redis_url}{embedded}")
    out.print(f"  config:  {stack.config.directory}")
    out.print(f"  audit:   {stack.config.gateway.audit.path or stack.home / 'audit.log'}")
    if token:
        out.print("  token for service 'default' (shown once, stored only as a hash):")
        out.print(f"AIGW_TOKEN={token}", soft_wrap=True)
    else:
        out.print("  service 'default' already has a token (tokens live in Redis, shown only when created);")
        out.print("  make one of your own with `aigw service add NAME`")
    out.print("try:")
    out.print(f"  export AIGW_TOKEN={token or '<your token>'}", soft_wrap=True)
    out.print(
        f'  curl -s -H "Authorization: Bearer $AIGW_TOKEN" -d \'{{"prompt": "Hello"}}\' '
        f"'{stack.api_url}/v1/jobs?wait=10'",
        soft_wrap=True,
    )
    out.print("Ctrl-C stops everything.")


def api(
    ctx: typer.Context,
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
) -> None:
    """Run only the HTTP API (for compose or scale-out)."""
    from gateway.api import create_app
    from gateway.api.server import run

    settings = settings_of(ctx)
    setup_logging(settings)
    cfg = read_config(settings, config)
    app_ = create_app(cfg, redis_url(settings, cfg), settings)
    if not run(app_, cfg.gateway.api, host=host, port=port):  # could not bind, or startup failed
        raise typer.Exit(3)


def worker(
    ctx: typer.Context,
    config: ConfigOpt = None,
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", "-q", help="A queue to serve; repeat it for several (default: interactive)."),
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="Jobs in flight at once, per queue.")] = None,
    burst: Annotated[bool, typer.Option(help="Exit when the queues are empty.")] = False,
    processes: Annotated[
        int | None, typer.Option(help="Worker processes to run and supervise (default: workers.processes).")
    ] = None,
) -> None:
    """Run async worker processes on one queue or several; with several processes, restart any that dies."""
    settings = settings_of(ctx)
    setup_logging(settings)
    cfg = read_config(settings, config)
    queues = queue or ["interactive"]
    unknown = [q for q in queues if q not in cfg.gateway.queues]
    if unknown:
        fail(f"unknown queue {unknown[0]!r}; configured: {', '.join(cfg.gateway.queues)}")
    if len(set(queues)) != len(queues):
        fail(f"--queue names a queue twice: {', '.join(queues)}")
    count = processes or cfg.gateway.workers.processes
    if count == 1 or burst:
        from workers.main import main as worker_main

        worker_main(cfg, redis_url(settings, cfg), queues, concurrency, burst, settings)
        return
    _supervise_workers(settings, cfg, queues, count, concurrency)


def _supervise_workers(
    settings: Settings, cfg: Config, queues: list[str], count: int, concurrency: int | None
) -> None:
    import gc

    import workers.main  # noqa: F401  (imported once, here: the forked workers share it)
    from gateway.supervisor import Child, Supervisor

    url = redis_url(settings, cfg)
    env = {**settings.environ, "REDIS_URL": url}
    kwargs = {"config_dir": cfg.directory, "redis_url": url, "queues": queues, "concurrency": concurrency}
    target = "workers.main:serve"
    label = "-".join(queues)
    children = [
        Child(f"aigw-worker-{label}-{i}", [], env, target=target, kwargs=kwargs) for i in range(count)
    ]
    supervisor = Supervisor(children)
    supervisor.watch_signals()
    gc.collect()
    supervisor.start_all()
    try:
        supervisor.supervise()
    finally:
        supervisor.stop(cfg.gateway.workers.shutdown_grace + 5)
