"""``aigw skill …``: list, show, scaffold, test, deploy and roll back skills.

Mounted in ``gateway/cli/__init__.py`` with ``app.add_typer(skill_app, name="skill")``. Like the
rest of the CLI it may start the worker side (``aigw skill test`` runs scripts with the worker's
runner). Errors print one readable line and exit non-zero.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

from gateway.cli.helpers import ConfigOpt, config_dir, connect, fail, out, read_config, settings_of
from gateway.config import bundled_skills_dir, load_config
from gateway.errors import ConfigError, GatewayError
from gateway.skills import (
    DiskSkills,
    Skill,
    check_name,
    discover,
    missing_requirements,
)

if TYPE_CHECKING:
    from gateway.settings import Settings
    from gateway.skills import SkillRegistry
    from workers.skill_runner import SkillRunner
    from workers.skill_testing import FixtureResult

skill_app = typer.Typer(no_args_is_help=True, help="Skills: list, show, scaffold, test, deploy, roll back.")

DirOpt = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        "-d",
        envvar="AIGW_SKILLS_DIR",
        help="Folder of skill folders (default: skills.dir of the config, as the gateway uses).",
    ),
]
DEFAULT_DIR = None


def _skills_dir(settings: Settings, given: Path | None, config: Path | None = None) -> Path:
    """--dir / $AIGW_SKILLS_DIR, else the skills.dir of the config (as the gateway runs), else the bundled."""
    if given is not None:
        return given
    try:
        return load_config(config_dir(settings, config)).skills_dir()
    except GatewayError:
        return bundled_skills_dir()


def _disk_skill(skills_dir: Path, name: str, version: str | None = None) -> Skill:
    try:
        return DiskSkills(skills_dir).load(name, version)
    except GatewayError as exc:
        fail(exc.message)


def _registry(settings: Settings, config: Path | None) -> SkillRegistry:
    from gateway.skills import SkillRegistry

    cfg = read_config(settings, config)
    return SkillRegistry(connect(settings, cfg), settings.home / "skill-cache")


# --- list and show -------------------------------------------------------------------------------


@skill_app.command("list")
def list_skills(
    ctx: typer.Context,
    skills_dir: DirOpt = DEFAULT_DIR,
    deployed: Annotated[bool, typer.Option("--deployed", help="Show the registry in Redis instead.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Skills on disk with their version and whether this host can run them (or --deployed ones)."""
    settings = settings_of(ctx)
    if deployed:
        _list_deployed(_registry(settings, config))
        return
    errors: list[ConfigError] = []
    try:
        skills = discover(_skills_dir(settings, skills_dir, config), errors)
    except ConfigError as exc:
        fail(str(exc))
    table = Table("skill", "version", "status", "description")
    for skill in skills:
        reasons = missing_requirements(skill.spec, settings.environ)
        table.add_row(skill.name, skill.version, _status(reasons), escape(skill.spec.description))
    for error in errors:
        folder = Path(error.file).parent.name or error.file
        table.add_row(escape(folder), "?", f"[red]broken:[/] {escape(error.message)}", "")
    out.print(
        table if skills or errors else escape(f"no skills in {_skills_dir(settings, skills_dir, config)}")
    )
    if errors:
        raise typer.Exit(1)


def _list_deployed(registry: SkillRegistry) -> None:
    table = Table("skill", "current", "sha256", "deployed at", "versions")
    for name, record in registry.list().items():
        versions = ", ".join(v.version for v in registry.versions(name))
        table.add_row(name, record.version, record.sha256[:12], record.deployed_at, versions)
    out.print(table if table.row_count else "no skills deployed")


@skill_app.command("show")
def show(
    ctx: typer.Context,
    name: str,
    skills_dir: DirOpt = DEFAULT_DIR,
    version: Annotated[str | None, typer.Option(help="A deployed version (with --deployed).")] = None,
    deployed: Annotated[bool, typer.Option("--deployed", help="Show the deployed version.")] = False,
    config: ConfigOpt = None,
) -> None:
    """A skill's contract: requirements, inputs, outputs, scripts, model and prompt."""
    settings = settings_of(ctx)
    if deployed:
        try:
            skill = _registry(settings, config).load(name, version)
        except GatewayError as exc:
            fail(exc.message)
    else:
        skill = _disk_skill(_skills_dir(settings, skills_dir, config), name, version)
    _print_skill(skill, settings.environ)


def _print_skill(skill: Skill, environ: Mapping[str, str]) -> None:
    spec, run = skill.spec, skill.spec.aigw
    where = escape(f"({skill.source}: {skill.root})")
    out.print(f"[bold]{skill.ref}[/]  sha256 {skill.content_hash[:12]}  {where}")
    out.print(spec.description, markup=False)
    reasons = missing_requirements(spec, environ)
    out.print("status:   " + _status(reasons))
    out.print(f"requires: bins {run.requires.bins or '-'}, env {run.requires.env or '-'}", markup=False)
    if run.requires.optional_bins or run.requires.optional_env:
        out.print(
            f"optional: bins {run.requires.optional_bins}, env {run.requires.optional_env}", markup=False
        )
    route = f"model {run.model}" if run.model else f"task {run.task}" if run.task else "the default model"
    model_timeout = f"{run.timeouts.model:g}s" if run.timeouts.model else "the model's own"
    out.print(
        f"model:    {route}, max_tokens {run.max_tokens or 'default'}, timeout {model_timeout}", markup=False
    )
    inputs = Table("input", "type", "required", "constraints", "description", title="Inputs")
    for field_name, field in spec.inputs.items():
        rules = {"default": field.default, "pattern": field.pattern, "enum": field.enum, "items": field.items}
        inputs.add_row(field_name, field.type, _yes(field.required), _rules(rules), escape(field.description))
    outputs = Table("output", "type", "from", "constraints", "description", title="Outputs")
    for field_name, output in spec.outputs.items():
        rules = {"enum": output.enum, "enum_from": output.enum_from, "schema_from": output.schema_from}
        outputs.add_row(field_name, output.type, output.source, _rules(rules), escape(output.description))
    scripts = Table("#", "script", "interpreter", "args", "timeout", title="Scripts")
    for index, script in enumerate(run.scripts, start=1):
        timeout = f"{script.timeout or run.timeouts.script:g}s"
        args = escape(json.dumps(script.args))
        scripts.add_row(str(index), escape(script.run), script.interpreter or "-", args, timeout)
    for table in (inputs, outputs, scripts):
        out.print(table)
    if skill.prompt is not None:
        out.print("[bold]Prompt[/]")
        out.print(skill.prompt.source, markup=False)


def _rules(rules: dict[str, Any]) -> str:
    return escape(", ".join(f"{k} {json.dumps(v)}" for k, v in rules.items() if v is not None))


def _status(reasons: list[str]) -> str:
    return "[green]available[/]" if not reasons else "[yellow]unavailable:[/] " + escape("; ".join(reasons))


def _yes(value: bool) -> str:
    return "yes" if value else "no"


# --- new and test --------------------------------------------------------------------------------


@skill_app.command("new")
def new(ctx: typer.Context, name: str, skills_dir: DirOpt = DEFAULT_DIR, config: ConfigOpt = None) -> None:
    """Scaffold a skill folder that passes its own test."""
    settings = settings_of(ctx)
    try:
        check_name(name)
    except GatewayError as exc:
        fail(exc.message)
    skills_dir = _skills_dir(settings, skills_dir, config)
    target = skills_dir / name
    if target.exists():
        fail(f"{target} already exists")
    for path, content in scaffold(name).items():
        file = target / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(content, encoding="utf-8")
    out.print(f"[green]created[/] {escape(str(target))}")
    out.print(
        f"next: edit {target / 'SKILL.md'}, then `aigw skill test {name} --dir {skills_dir}`", markup=False
    )


@skill_app.command("test")
def test(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="The skill to test.")] = None,
    all_skills: Annotated[bool, typer.Option("--all", help="Test every skill in --dir.")] = False,
    skills_dir: DirOpt = DEFAULT_DIR,
    model: Annotated[
        str | None, typer.Option("--model", help="Run against this model alias; checks the contract only.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Run every fixture: scripts' results must equal the expected ones; outputs must meet the contract."""
    from workers.skill_testing import all_passed, model_call, run_fixtures

    settings = settings_of(ctx)
    if (name is None) == (not all_skills):
        fail("give a skill name or --all")
    errors: list[ConfigError] = []
    if all_skills:
        try:
            skills = discover(_skills_dir(settings, skills_dir, config), errors)
        except ConfigError as exc:
            fail(str(exc))
    else:
        skills = [_disk_skill(_skills_dir(settings, skills_dir, config), name or "")]
    complete = None
    if model is not None:
        try:
            complete = model_call(read_config(settings, config), model, settings.environ)
        except GatewayError as exc:
            fail(exc.message)
    runner = _runner(settings, config)

    async def run_all() -> list[FixtureResult]:
        return [result for skill in skills for result in await run_fixtures(skill, runner, complete)]

    results = asyncio.run(run_all())
    _print_results(results, errors)
    if errors or not all_passed(results):
        raise typer.Exit(1)


def _runner(settings: Settings, config: Path | None) -> SkillRunner:
    """The worker's runner: provider key variables named in the config (if one loads) stay hidden, and
    scripts run in the config's sandbox."""
    from workers.skill_runner import SkillRunner, provider_key_names

    try:
        loaded = load_config(config_dir(settings, config))
    except ConfigError:  # no config here: the defaults, sandbox included
        return SkillRunner(environ=settings.environ)
    return SkillRunner(
        protected_env=provider_key_names(loaded),
        environ=settings.environ,
        sandbox=loaded.gateway.skills.sandbox,
    )


def _print_results(results: list[FixtureResult], errors: list[ConfigError]) -> None:
    table = Table(Column("skill", no_wrap=True), Column("fixture", no_wrap=True), "model", "result", "detail")
    for result in results:
        verdict = "[green]pass[/]" if result.passed else "[bold red]FAIL[/]"
        row = (f"{result.skill}@{result.version}", result.fixture, result.mode)
        table.add_row(*map(escape, row), verdict, escape(result.detail))
    for error in errors:
        table.add_row(
            escape(Path(error.file).parent.name), "-", "-", "[bold red]FAIL[/]", escape(error.message)
        )
    out.print(table)
    failed = sum(not r.passed for r in results) + len(errors)
    out.print(f"{len(results) + len(errors) - failed} passed, {failed} failed")


# --- deploy and rollback -------------------------------------------------------------------------


@skill_app.command("deploy")
def deploy(
    ctx: typer.Context,
    name: str,
    skills_dir: DirOpt = DEFAULT_DIR,
    run_tests: Annotated[bool, typer.Option("--test/--no-test", help="Run the fixtures first.")] = True,
    config: ConfigOpt = None,
) -> None:
    """Store the skill folder as a new version in the registry and make it current on every worker."""
    settings = settings_of(ctx)
    skill = _disk_skill(_skills_dir(settings, skills_dir, config), name)
    if run_tests:
        from workers.skill_testing import all_passed, run_fixtures

        results = asyncio.run(run_fixtures(skill, _runner(settings, config)))
        if not all_passed(results):
            _print_results(results, [])
            fail(f"not deployed: {sum(not r.passed for r in results)} fixture(s) of {skill.ref} failed")
    try:
        result = _registry(settings, config).deploy(skill)
    except GatewayError as exc:
        fail(exc.message)
    record = result.deployed
    was = f" (was {result.previous})" if result.previous and result.previous != record.version else ""
    again = "" if result.new else " (already deployed; current again)"
    out.print(f"[green]deployed[/] {record.name}@{record.version} sha256 {record.sha256[:12]}{was}{again}")


@skill_app.command("rollback")
def rollback(
    ctx: typer.Context,
    name: str,
    to: Annotated[str | None, typer.Option("--to", help="The version to make current.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Make an earlier version current again: the previous one, or --to VERSION."""
    settings = settings_of(ctx)
    try:
        before, now = _registry(settings, config).rollback(name, to)
    except GatewayError as exc:
        fail(exc.message)
    out.print(f"[green]rolled back[/] {name}: {before.version} -> {now.version} (sha256 {now.sha256[:12]})")


# --- the scaffold --------------------------------------------------------------------------------


def scaffold(name: str) -> dict[str, str]:
    """The files of a new skill: a contract, one script, one fixture with its expected result."""
    skill_md = f"""---
name: {name}
description: "Say what {name} does in one sentence"
version: 0.1.0
inputs:
  text:
    type: string
    description: The text to work on.
outputs:
  answer:
    type: markdown
metadata:
  aigw:
    requires:
      bins: [python3]
    scripts:
      - run: scripts/prepare.py
        interpreter: python3
        timeout: 10
---

# {name}

What the skill is for, who calls it, and what the script decides.

## Prompt

Answer about the text below in Markdown. It has {{{{ stats.words }}}} words.
{{{{#each risk_flags}}}}
Note ({{{{ this.id }}}}): {{{{ this.text }}}}
{{{{/each}}}}

\"\"\"
{{{{ text }}}}
\"\"\"
"""
    script = '''"""Deterministic pre-processing: context as JSON on stdin; flag lines, one JSON object out."""

import json
import sys

ctx = json.load(sys.stdin)
words = len(ctx["text"].split())
if words > 2000:
    print("flag:long-text — the text is long; summarise the key points first")
print(json.dumps({"stats": {"words": words}}))
'''
    fixture = {
        "description": "A short text; the offline provider answers.",
        "inputs": {"text": "Hello from aigw."},
    }
    expected = {"risk_flags": [], "facts": {"stats": {"words": 3}}}
    return {
        "SKILL.md": skill_md,
        "scripts/prepare.py": script,
        "test/fixtures/example.json": json.dumps(fixture, indent=2) + "\n",
        "test/expected/example.json": json.dumps(expected, indent=2) + "\n",
    }
