"""Imports run one way (DESIGN.md §2): gateway never imports workers, except the CLI that starts both;
inside gateway/skills/, each module imports only the ones below it."""

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


SKILLS = GATEWAY / "skills"
#: gateway/skills/ from the bottom up: a module imports only those before it, so there are no circles
SKILL_LAYERS = ["template", "bundle", "contract", "manifest", "folder", "registry", "catalog"]


def test_skills_layers_name_every_module_of_the_package() -> None:
    modules = sorted(p.stem for p in SKILLS.glob("*.py") if p.stem != "__init__")
    assert modules == sorted(SKILL_LAYERS), "place a new gateway/skills/ module in SKILL_LAYERS"


@pytest.mark.parametrize("name", SKILL_LAYERS)
def test_skills_modules_import_only_the_ones_below(name: str) -> None:
    imported = _imports(SKILLS / f"{name}.py")
    inside = {n for n in imported if n == "gateway.skills" or n.startswith("gateway.skills.")}
    allowed = {f"gateway.skills.{below}" for below in SKILL_LAYERS[: SKILL_LAYERS.index(name)]}
    assert inside <= allowed, f"gateway/skills/{name}.py imports {sorted(inside - allowed)}: not below it"
