"""Imports run one way (DESIGN.md §2): gateway never imports workers, except the CLI that starts both."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GATEWAY = Path(__file__).parents[2] / "gateway"
#: the command line is the one place that starts both sides
ALLOWED = {"cli.py", "cli_skills.py"}


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
    sorted(p for p in GATEWAY.rglob("*.py") if p.name not in ALLOWED and "sample_" not in str(p)),
    ids=str,
)
def test_gateway_modules_never_import_workers(path: Path) -> None:
    offending = sorted(n for n in _imports(path) if n == "workers" or n.startswith("workers."))
    assert not offending, f"{path.name} imports {offending}: the API side must not depend on workers"
