"""``aigw onboard`` and ``aigw daemon install|uninstall|status``: a first run, guided.

Onboarding looks at what the machine has (provider keys by name, never by value; a local Ollama
and its models), asks where the config goes, which model backs ``sensitive`` and which service
gets the first token, writes the config from the shipped sample, creates that token in the
Redis `aigw up` will use, and prints what to run next. ``--yes`` takes every default. The
daemon commands write a per-user service file (gateway.daemon) and print how to enable it.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import redis
import typer
from rich.prompt import Confirm, Prompt

from gateway.cli.helpers import ConfigOpt, config_dir, fail, out, settings_of
from gateway.config import Config, load_config
from gateway.daemon import (
    Daemon,
    daemon_environment,
    daemon_for,
    launchd_plist,
    service_state,
    systemd_unit,
    up_command,
)
from gateway.errors import ConfigError, GatewayError, ValidationError
from gateway.home import copy_sample_config
from gateway.redis_server import RedisServer, known_redis_url, ping, resolve_redis
from gateway.services import ServiceRegistry, check_service_name
from gateway.settings import Settings

daemon_app = typer.Typer(
    no_args_is_help=True, help="Run `aigw up` as a per-user service (systemd or launchd)."
)

DEFAULT_OLLAMA = "http://127.0.0.1:11434"
#: the keys the shipped sample names, listed even when a config names none of them
KNOWN_KEYS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")

HomeOpt = Annotated[
    Path | None, typer.Option("--home", help="AIGW_HOME to use (default: $AIGW_HOME or ~/.aigw).")
]


def onboard(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Take every default without asking.")] = False,
    home: HomeOpt = None,
    config: ConfigOpt = None,
    install_daemon: Annotated[
        bool, typer.Option("--install-daemon", help="Then install the per-user service that runs `aigw up`.")
    ] = False,
) -> None:
    """Set up a first run: config directory, the `sensitive` model, a service token, next steps."""
    settings = _with_home(settings_of(ctx), home)
    environ = settings.environ
    sample = _sample_config()
    _report_keys(sample, environ)
    ollama_url = _ollama_url(environ.get("OLLAMA_HOST"))
    ollama_models = _ollama_models(ollama_url)
    sensitive = sample.models.models["sensitive"].deployments[0].model
    if ollama_models is None:
        out.print(
            f"ollama:   none answered at {ollama_url}; the `sensitive` alias keeps {sensitive} for when it "
            "runs, and the built-in offline provider stands in for the cloud aliases without a key"
        )
    else:
        out.print(f"ollama:   {ollama_url} has {', '.join(ollama_models) or 'no models (ollama pull one)'}")

    default_dir = config or settings.config_dir or settings.home / "config"
    directory = Path(
        default_dir
        if yes or config
        else Prompt.ask("Config directory", default=str(default_dir), console=out)
    )
    directory = directory.expanduser().resolve()
    keep = (directory / "models.yaml").exists()
    if keep and yes:
        out.print(f"config:   {directory} already has a config: kept as it is (--yes never overwrites)")
    elif keep:
        keep = not Confirm.ask(f"{directory} already has a config. Overwrite it?", default=False, console=out)
        if keep:
            out.print(f"config:   kept the files in {directory}")
    model = None
    if not keep and ollama_models:
        default_model = sensitive if sensitive in ollama_models else ollama_models[0]
        model = (
            default_model
            if yes
            else Prompt.ask(
                "Ollama model for the `sensitive` alias",
                choices=ollama_models,
                default=default_model,
                console=out,
            )
        )
    service = "default" if yes else _ask_service_name()

    if not keep:
        written = copy_sample_config(directory, overwrite=True)
        if ollama_models is not None:  # it answered: the alias points at it, with the model chosen
            _set_sensitive_model(directory / "models.yaml", model, ollama_url)
        out.print(f"config:   wrote {', '.join(written)} to {directory}")
    try:
        cfg = load_config(directory)
    except ConfigError as exc:
        fail(f"the config in {directory} does not load: {exc}")
    token = _create_token(settings, cfg, service)
    out.print(f"token for service {service!r} (shown once, stored only as a hash):")
    out.print(f"export AIGW_TOKEN={token}", soft_wrap=True)
    _next_steps(settings, cfg, directory)
    if install_daemon:
        _install(settings, cfg)


def _ask_service_name() -> str:
    """Asked again until it is a name a token can be created for (before anything is written)."""
    while True:
        name = Prompt.ask("Service name for the first token", default="default", console=out)
        try:
            check_service_name(name)
        except ValidationError as exc:
            out.print(str(exc))
            continue
        return name


def _with_home(settings: Settings, home: Path | None) -> Settings:
    return settings if home is None else dataclasses.replace(settings, home=home.expanduser().resolve())


def _sample_config() -> Config:
    from importlib import resources

    with resources.as_file(resources.files("gateway") / "sample_config") as sample:
        return load_config(sample)


def _report_keys(cfg: Config, environ: Mapping[str, str]) -> None:
    """Which provider-key variables are set, by name, with the aliases that use them: never a value."""
    users: dict[str, list[str]] = {name: [] for name in KNOWN_KEYS}
    for alias, spec in cfg.models.models.items():
        for deployment in spec.deployments:
            if deployment.api_key_env:
                users.setdefault(deployment.api_key_env, []).append(alias)
    for name, aliases in users.items():
        state = "set" if environ.get(name) else "not set"
        used = f" (used by {', '.join(dict.fromkeys(aliases))})" if aliases else ""
        out.print(f"key:      {name} {state}{used}")


def _ollama_url(host: str | None) -> str:
    """OLLAMA_HOST as Ollama reads it (``host:port`` with no scheme is allowed), else the default."""
    if not host:
        return DEFAULT_OLLAMA
    return (host if "://" in host else f"http://{host}").rstrip("/")


def _ollama_models(url: str) -> list[str] | None:
    """The models a local Ollama lists at /api/tags; None when nothing answers like one."""
    import httpx

    try:
        reply = httpx.get(f"{url}/api/tags", timeout=1.5)
        reply.raise_for_status()
        return [str(m["name"]) for m in reply.json().get("models", [])]
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _set_sensitive_model(path: Path, model: str | None, api_base: str) -> None:
    """Point the sample's `sensitive` alias at ``api_base`` (and ``model``, when one was chosen),
    keeping the file's comments."""
    lines = path.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.rstrip() == "  sensitive:")
    for i in range(start + 1, len(lines)):
        if re.match(r"^  \S", lines[i]):  # the next alias: the block had no such field
            break
        if lines[i].startswith("    model:") and model is not None:
            lines[i] = f"    model: {_yaml_scalar(model)}\n"
        elif lines[i].startswith("    api_base:"):
            lines[i] = f"    api_base: {_yaml_scalar(api_base)}\n"
    path.write_text("".join(lines))


def _yaml_scalar(text: str) -> str:
    """``text`` as a double-quoted YAML string (a tag such as ``qwen2.5:7b`` has a colon)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _create_token(settings: Settings, cfg: Config, service: str) -> str:
    """A token in the Redis `aigw up` will use: the configured one (which must answer), else the
    embedded one of a running stack, else the embedded server started here on its AOF under
    AIGW_HOME and stopped again, so `aigw up` finds the token where it looks."""
    configured = cfg.redis_url(settings.redis_url)
    url = known_redis_url(configured, settings.home)
    server: RedisServer | None = None
    if url is not None and not ping(url, timeout=2):
        fail(
            f"cannot reach Redis at {url} (REDIS_URL or redis.url): start it, or unset both to use the "
            "embedded one"
        )
    try:
        if url is None:
            settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            url, server = resolve_redis(None, settings.home, cfg.gateway.redis.embedded_port)
            out.print(f"redis:    started the embedded Redis on {settings.home / 'redis'} for the token")
        connection = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        try:
            return ServiceRegistry(connection, cfg).create_token(service)
        finally:
            connection.close()
    except (GatewayError, redis.RedisError) as exc:
        fail(str(exc))
    finally:
        if server is not None and not server.adopted:  # as `aigw up` would find it: not running
            server.stop()


def _next_steps(settings: Settings, cfg: Config, directory: Path) -> None:
    api = f"http://{cfg.gateway.api.host}:{cfg.gateway.api.port}"
    prefix = f"AIGW_HOME={settings.home} " if settings.environ.get("AIGW_HOME") != str(settings.home) else ""
    out.print("next:")
    out.print(f"  1. {prefix}aigw up --config {directory}", soft_wrap=True)
    body = '{"prompt": "Hello"}'
    curl = f"curl -s -H \"Authorization: Bearer $AIGW_TOKEN\" -d '{body}' '{api}/v1/jobs?wait=10'"
    out.print(f"  2. {curl}", soft_wrap=True)
    out.print(f"  3. {prefix}aigw dashboard", soft_wrap=True)


# --- the daemon ----------------------------------------------------------------------------------


def _daemon(settings: Settings) -> Daemon:
    try:
        return daemon_for(sys.platform, settings.environ)
    except ValueError as exc:
        fail(str(exc))


def _install(settings: Settings, cfg: Config) -> None:
    daemon = _daemon(settings)
    argv = up_command(Path(cfg.directory))
    env, notes = daemon_environment(settings.home, settings.environ)
    grace = cfg.gateway.workers.shutdown_grace
    if daemon.kind == "systemd":
        content = systemd_unit(argv, env, grace).encode()
    else:
        content = launchd_plist(argv, env, grace, settings.home.resolve() / "daemon.log")
    daemon.path.parent.mkdir(parents=True, exist_ok=True)
    daemon.path.write_bytes(content)
    out.print(f"daemon:   wrote {daemon.path} (runs `aigw up --config {cfg.directory}`)")
    for note in notes:
        out.print(f"  note: {note}")
    out.print("  enable and start it, then follow its log:")
    for line in daemon.enable_hint():
        out.print(f"    {line}", soft_wrap=True)


@daemon_app.command("install")
def daemon_install(ctx: typer.Context, config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """Write the per-user service file that runs `aigw up` (never needs root; starts nothing)."""
    settings = _with_home(settings_of(ctx), home)
    directory = config_dir(settings, config).expanduser().resolve()
    if not (directory / "models.yaml").exists():
        fail(f"no config in {directory}: run `aigw onboard` first, or pass --config DIR")
    try:
        cfg = load_config(directory)
    except ConfigError as exc:
        fail(str(exc))
    _install(settings, cfg)


@daemon_app.command("uninstall")
def daemon_uninstall(ctx: typer.Context) -> None:
    """Remove the service file, and print the command that stops a running one."""
    daemon = _daemon(settings_of(ctx))
    if not daemon.path.exists():
        out.print(f"no service file at {daemon.path}: nothing to remove")
        return
    daemon.path.unlink()
    out.print(f"removed {daemon.path}; stop it if it runs:")
    out.print(f"  {daemon.disable_hint()}", soft_wrap=True)


@daemon_app.command("status")
def daemon_status(ctx: typer.Context) -> None:
    """Whether the service file exists and what the service manager says about it."""
    daemon = _daemon(settings_of(ctx))
    if not daemon.path.exists():
        out.print(f"not installed: no {daemon.path} (`aigw daemon install` writes it)")
        return
    out.print(f"installed: {daemon.path}")
    out.print(f"state:     {service_state(daemon)}")
