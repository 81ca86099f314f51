"""Imports run one way (the design brief): gateway never imports workers, except the CLI commands that
start both; within the CLI package, command modules share ``helpers`` and never import each other;
inside gateway/skills/, each module imports only the ones below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
GATEWAY = ROOT / "gateway"
CLI = GATEWAY / "cli"
#: the command line is the one place that starts both sides; only its command modules may
CLI_COMMANDS = {
    CLI / "commands.py",
    CLI / "stack_commands.py",
    CLI / "skills.py",
    CLI / "audit_commands.py",
    CLI / "onboard.py",
}


def _imports(path: Path) -> set[str]:
    """Modules ``path`` imports by absolute name (``from a import b`` counts ``a`` and ``a.b``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _source(module: str) -> Path | None:
    """The file of one of aigw's own modules (None for a third-party name or a class)."""
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _reachable(module: str) -> set[str]:
    """Every aigw module that importing ``module`` loads, its packages' faces included."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            prefix = ".".join(parts[:depth])
            source = _source(prefix)
            if prefix not in seen and source is not None:
                seen.add(prefix)
                todo.extend(_imports(source))
    return seen


@pytest.mark.parametrize(
    "path",
    sorted(p for p in GATEWAY.rglob("*.py") if p not in CLI_COMMANDS and "sample_" not in str(p)),
    ids=str,
)
def test_gateway_modules_never_import_workers(path: Path) -> None:
    offending = sorted(n for n in _imports(path) if n == "workers" or n.startswith("workers."))
    assert not offending, f"{path.name} imports {offending}: the API side must not depend on workers"


def test_api_package_never_loads_workers() -> None:
    """Not through another gateway module either: everything gateway.api imports, lazily or not."""
    loaded = _reachable("gateway.api")
    assert {"gateway.api.app", "gateway.api.jobs", "gateway.api.admission"} <= loaded
    offending = sorted(n for n in loaded if n == "workers" or n.startswith("workers."))
    assert not offending, f"importing gateway.api loads {offending}"


SKILLS = GATEWAY / "skills"
#: gateway/skills/ from the bottom up: a module imports only those before it, so there are no circles
SKILL_LAYERS = ["template", "bundle", "contract", "manifest", "folder", "registry", "catalog"]


def test_skills_layers_name_every_module_of_the_package() -> None:
    modules = sorted(p.stem for p in SKILLS.glob("*.py") if p.stem != "__init__")
    assert modules == sorted(SKILL_LAYERS), "place a new gateway/skills/ module in SKILL_LAYERS"


@pytest.mark.parametrize("name", SKILL_LAYERS)
def test_skills_modules_import_only_the_ones_below(name: str) -> None:
    imported = _imports(SKILLS / f"{name}.py")
    modules = {n for n in imported if _source(n) is not None}  # not the names imported from them
    inside = {n for n in modules if n == "gateway.skills" or n.startswith("gateway.skills.")}
    allowed = {f"gateway.skills.{below}" for below in SKILL_LAYERS[: SKILL_LAYERS.index(name)]}
    assert inside <= allowed, f"gateway/skills/{name}.py imports {sorted(inside - allowed)}: not below it"


@pytest.mark.parametrize("path", sorted(CLI_COMMANDS | {CLI / "helpers.py"}), ids=str)
def test_cli_command_modules_import_only_helpers_of_the_cli(path: Path) -> None:
    # reading a module that was renamed away fails here, so the exemption above cannot go stale
    modules = {n for n in _imports(path) if _source(n) is not None}  # not the names imported from them
    cli = {n for n in modules if n == "gateway.cli" or n.startswith("gateway.cli.")}
    offending = sorted(cli - {"gateway.cli.helpers"})
    assert not offending, f"{path.name} imports {offending}: command modules share gateway.cli.helpers only"


WORKERS = ROOT / "workers"
#: the entry points, the only modules that read the environment (into gateway.settings.Settings);
#: the client reads it once in its constructor, like them, and imports nothing server-side
READS_ENVIRONMENT = {
    GATEWAY / "cli" / "__init__.py",
    GATEWAY / "api" / "app.py",
    WORKERS / "main.py",
    GATEWAY / "client.py",
    GATEWAY / "api" / "server.py",  # serve(): the entry point of the API `aigw up` forks
    GATEWAY / "supervisor.py",  # a forked child takes the environment it is given, as exec would
}


_ENVIRONMENT = {"environ", "environb", "getenv", "getenvb"}


def _environment_reads(path: Path) -> list[int]:
    """Lines where ``path`` touches ``os.environ`` or ``os.getenv`` (also imported by name)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        by_attribute = (
            isinstance(node, ast.Attribute)
            and node.attr in _ENVIRONMENT
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        )
        by_name = (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and any(alias.name in _ENVIRONMENT for alias in node.names)
        )
        if by_attribute or by_name:
            lines.append(getattr(node, "lineno", 0))
    return lines


@pytest.mark.parametrize(
    "path",
    sorted(p for root in (GATEWAY, WORKERS) for p in root.rglob("*.py") if "sample_" not in str(p)),
    ids=str,
)
def test_only_entry_points_read_the_environment(path: Path) -> None:
    lines = [] if path in READS_ENVIRONMENT else _environment_reads(path)
    assert not lines, (
        f"{path.relative_to(ROOT)} reads os.environ at line(s) {lines}: take gateway.settings.Settings "
        "(or its environ mapping) from the entry point instead"
    )


def test_environment_allow_list_names_files_that_still_read_it() -> None:
    stale = sorted(str(p.relative_to(ROOT)) for p in READS_ENVIRONMENT if not _environment_reads(p))
    assert not stale, f"{stale} no longer read the environment: drop them from READS_ENVIRONMENT"
