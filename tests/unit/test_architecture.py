"""Imports run one way (DESIGN.md §2): gateway never imports workers, except the CLI that starts both."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
GATEWAY = ROOT / "gateway"
#: the command line is the one place that starts both sides
ALLOWED = {"cli.py", "cli_skills.py"}


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
    sorted(p for p in GATEWAY.rglob("*.py") if p.name not in ALLOWED and "sample_" not in str(p)),
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
