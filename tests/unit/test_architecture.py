"""Imports run one way (DESIGN.md §2): gateway never imports workers, except the CLI commands that
start both; and within the CLI package, command modules share ``helpers`` and never import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GATEWAY = Path(__file__).parents[2] / "gateway"
CLI = GATEWAY / "cli"
#: the command line is the one place that starts both sides; only its command modules may
CLI_COMMANDS = {CLI / "commands.py", CLI / "stack_commands.py", CLI / "skills.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "path",
    sorted(p for p in GATEWAY.rglob("*.py") if p not in CLI_COMMANDS and "sample_" not in str(p)),
    ids=str,
)
def test_gateway_modules_never_import_workers(path: Path) -> None:
    offending = sorted(n for n in _imports(path) if n == "workers" or n.startswith("workers."))
    assert not offending, f"{path.name} imports {offending}: the API side must not depend on workers"


@pytest.mark.parametrize("path", sorted(CLI_COMMANDS | {CLI / "helpers.py"}), ids=str)
def test_cli_command_modules_import_only_helpers_of_the_cli(path: Path) -> None:
    # reading a module that was renamed away fails here, so the exemption above cannot go stale
    cli = {n for n in _imports(path) if n == "gateway.cli" or n.startswith("gateway.cli.")}
    offending = sorted(cli - {"gateway.cli.helpers"})
    assert not offending, f"{path.name} imports {offending}: command modules share gateway.cli.helpers only"
