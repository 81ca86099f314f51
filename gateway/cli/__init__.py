"""The ``aigw`` command. The one place that starts both sides (API and workers).

    helpers.py          the consoles (out, err), fail(), logging set-up, config and Redis lookup
    stack_commands.py   up, api, worker: run a part of the stack in the foreground
    commands.py         ask, dashboard, gateway status, config check, service, jobs, policy explain
    audit_commands.py   aigw audit tail|verify|report|anomalies|writer
    skills.py           aigw skill list|show|new|test|deploy|rollback
    onboard.py          aigw onboard, aigw daemon install|uninstall|status

Command modules import ``helpers`` and never each other; this module mounts them on ``app``.
Errors print one readable line and exit non-zero; nothing here prints a secret except the new
token a user asked for (``aigw up`` on first start, ``aigw onboard``, ``aigw service add|rotate``)
and the one-time dashboard link ``aigw dashboard`` prints.
"""

from __future__ import annotations

import os

import typer

from gateway.cli import audit_commands, commands, helpers, onboard, stack_commands
from gateway.cli.skills import skill_app
from gateway.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="aigw: the local AI gateway.")
app.command()(stack_commands.up)
app.command()(stack_commands.api)
app.command()(stack_commands.worker)
app.command()(commands.ask)
app.command()(commands.dashboard)
app.command()(onboard.onboard)
app.add_typer(commands.gateway_app, name="gateway")
app.add_typer(commands.config_app, name="config")
app.add_typer(commands.service_app, name="service")
app.add_typer(audit_commands.audit_app, name="audit")
app.add_typer(commands.jobs_app, name="jobs")
app.add_typer(commands.policy_app, name="policy")
app.add_typer(skill_app, name="skill")
app.add_typer(onboard.daemon_app, name="daemon")


@app.callback()
def _entry(ctx: typer.Context) -> None:
    # Runs before every command, whether from main() or a test's CliRunner: the environment is
    # read here, at the entry point, and not when the module is imported. The settings ride on
    # ctx.obj, which every subcommand's context inherits (helpers.settings_of(ctx)).
    ctx.obj = Settings.from_environ(os.environ)
    helpers.size_consoles(ctx.obj.environ)


def main() -> None:
    app()
