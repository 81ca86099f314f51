"""Loading skills from folders on disk: ``Skill`` (a parsed, checked folder), ``load_skill_dir``,
``discover`` and ``DiskSkills``, the development source of skills.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from gateway.errors import ConfigError, SkillNotFoundError
from gateway.skills.bundle import bundle_hash, read_bundle
from gateway.skills.manifest import (
    SKILL_FILE,
    SkillFile,
    SkillSpec,
    arg_templates,
    check_name,
    parse_skill_file,
    prompt_template,
)
from gateway.skills.template import Template


@dataclass(frozen=True)
class Skill:
    """A parsed, checked skill folder (on disk in development, or materialised from the registry)."""

    spec: SkillSpec
    root: Path
    prompt: Template | None
    #: each script's arguments, parsed as templates
    script_args: tuple[tuple[Template, ...], ...]
    content_hash: str
    source: Literal["disk", "registry"] = "disk"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def ref(self) -> str:
        return f"{self.spec.name}@{self.spec.version}"


class SkillSource(Protocol):
    """Where a worker gets a skill: the registry in Redis, or folders on disk in development."""

    def load(self, name: str, version: str | None = None) -> Skill: ...


def load_skill_dir(path: str | Path, *, source: Literal["disk", "registry"] = "disk") -> Skill:
    """Parse and check one skill folder; any problem raises ConfigError naming file, line and field."""
    root = Path(path)
    skill_file = root / SKILL_FILE
    if not skill_file.is_file():
        raise ConfigError(f"no {SKILL_FILE} in this folder", file=str(root))
    content_hash = bundle_hash(read_bundle(root))
    parsed = parse_skill_file(skill_file.read_text(encoding="utf-8"), skill_file)
    _check_files(parsed, root)
    prompt = prompt_template(parsed)
    args = tuple(arg_templates(parsed, i) for i in range(len(parsed.spec.aigw.scripts)))
    return Skill(parsed.spec, root, prompt, args, content_hash, source)


def discover(skills_root: str | Path, errors: list[ConfigError] | None = None) -> list[Skill]:
    """Every skill folder directly under ``skills_root``, by name.

    A broken skill raises, unless ``errors`` is given: then it is appended there and skipped, so
    one bad folder does not hide the others (``aigw skill list``).
    """
    root = Path(skills_root)
    if not root.is_dir():
        raise ConfigError("skills directory does not exist", file=str(root))
    found: list[Skill] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (folder / SKILL_FILE).exists():
            continue
        try:
            found.append(_load_named(folder))
        except ConfigError as exc:
            if errors is None:
                raise
            errors.append(exc)
    return found


class DiskSkills:
    """Skills read from folders at every load, so an edited SKILL.md or script takes effect at once."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def load(self, name: str, version: str | None = None) -> Skill:
        check_name(name)
        folder = self.root / name
        if not (folder / SKILL_FILE).is_file():
            raise SkillNotFoundError(f"no skill {name!r} in {self.root}")
        skill = _load_named(folder)
        if version is not None and version != skill.version:
            raise SkillNotFoundError(
                f"skill {name}@{version} not found: {folder} has version {skill.version}"
            )
        return skill


def _load_named(folder: Path) -> Skill:
    skill = load_skill_dir(folder)
    if skill.name != folder.name:
        raise ConfigError(
            f"the skill is named {skill.name!r} but its folder is {folder.name!r}",
            file=str(folder / SKILL_FILE),
            field="name",
        )
    return skill


def _check_files(parsed: SkillFile, root: Path) -> None:
    for index, script in enumerate(parsed.spec.aigw.scripts):
        target = (root / script.run).resolve()
        if not target.is_relative_to(root.resolve()) or not target.is_file():
            raise parsed.error(("aigw", "scripts", index, "run"), "no such file in the skill folder")
