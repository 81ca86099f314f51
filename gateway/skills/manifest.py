"""SKILL.md: the manifest models (``SkillSpec``), and parsing the file into them with errors that
name the file, the line and the field; also skill names, refs and versions, and host requirements.

A skill folder holds ``SKILL.md`` (YAML front matter between ``---`` lines, then Markdown whose
``## Prompt`` section is the prompt template), ``scripts/`` and ``test/``. The front matter is
validated by pydantic models that forbid unknown keys. the seed article's layout (``metadata.openclaw``
with ``inputs``/``outputs`` as lists) is accepted as an alias of ``metadata.aigw``. Loading a
folder is ``folder.py``'s job, running the scripts ``workers/skill_runner.py``'s, and storing
versions ``registry.py``'s. The full format is in docs/skills.md.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import yaml
from pydantic import Field, StrictBool, StringConstraints, field_validator
from pydantic import ValidationError as PydanticValidationError

from gateway.errors import ConfigError, ValidationError
from gateway.skills.contract import TEXT_TYPES, FieldName, InputSpec, OutputSpec
from gateway.skills.template import Template, TemplateError
from gateway.validation import Strict, first_error

# --- the front matter ----------------------------------------------------------------------------

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,63}$"
SEMVER_PATTERN = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"
_NAME = re.compile(NAME_PATTERN)
_SEMVER = re.compile(SEMVER_PATTERN)
SKILL_FILE = "SKILL.md"
PROMPT_HEADING = "Prompt"
#: names the context always has, so inputs may not take them
RESERVED_NAMES = frozenset({"risk_flags", "this"})
#: never passed to a script even when a skill asks: aigw's own settings and provider keys
PROTECTED_ENV = re.compile(r"^(AIGW_.*|REDIS_URL|.*_API_KEY|ANTHROPIC_.*|OPENAI_.*)$")
BinName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._+-]+$")]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class ScriptSpec(Strict):
    run: str = Field(min_length=1, description="Path inside the skill folder.")
    args: list[str] = []
    #: a bin from requires.bins that runs the file (else the file itself must be executable)
    interpreter: BinName | None = None
    timeout: float | None = Field(None, gt=0, le=600)
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    #: acts on the world (posts a comment, sends a message): runs after the model, with ``outputs``
    #: in its context, and under the all_outputs_are_drafts policy only once a reviewer approves
    side_effects: bool = False

    @field_validator("run")
    @classmethod
    def _inside_folder(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or "\\" in value:
            raise ValueError("must be a relative path inside the skill folder (no '..', no absolute path)")
        return value

    @property
    def label(self) -> str:
        return self.name or PurePosixPath(self.run).name


class Requires(Strict):
    bins: list[BinName] = []
    env: list[EnvName] = []
    #: shown by `aigw skill show`; the scripts use them when present
    optional_bins: list[BinName] = []
    #: passed to the scripts when set
    optional_env: list[EnvName] = []
    #: the scripts share the host's network (loopback included): for trusted skills only
    network: StrictBool = False

    @field_validator("env", "optional_env")
    @classmethod
    def _not_protected(cls, names: list[str]) -> list[str]:
        for name in names:
            if PROTECTED_ENV.match(name):
                raise ValueError(f"{name} is a provider key or aigw setting and is never passed to scripts")
        return names


class SkillTimeouts(Strict):
    """``timeouts`` in SKILL.md: a skill's scripts, and its job's bound on the model call. Not the
    provider call timeouts of models.yaml (``gateway.config.Timeouts``: connect, read, total)."""

    #: seconds per script unless the script sets its own
    script: float = Field(30.0, gt=0, le=600)
    #: seconds for the model call (the pipeline's bound); None: the model's own timeouts
    model: float | None = Field(None, gt=0, le=3600)


class RunSpec(Strict):
    """What aigw needs to run the skill: ``metadata.aigw`` (or ``metadata.openclaw``) in SKILL.md."""

    requires: Requires = Requires()
    scripts: list[ScriptSpec] = []
    model: str | None = Field(None, min_length=1, description="A model alias from models.yaml.")
    task: str | None = Field(None, min_length=1, description="A task tag matched against use_for.")
    max_tokens: int | None = Field(None, ge=1, le=200_000)
    timeouts: SkillTimeouts = SkillTimeouts()


class SkillSpec(Strict):
    """The front matter of SKILL.md, normalised (``aigw`` is ``metadata.aigw`` in the file)."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(min_length=1)
    version: str = Field(pattern=SEMVER_PATTERN)
    inputs: dict[FieldName, InputSpec] = {}
    outputs: dict[FieldName, OutputSpec] = Field(min_length=1)
    aigw: RunSpec = RunSpec()

    @property
    def model_outputs(self) -> list[str]:
        return [name for name, out in self.outputs.items() if out.source == "model"]


_TOP_LEVEL = ("name", "description", "version", "inputs", "outputs", "metadata")
_NAMESPACES = ("aigw", "openclaw")


# --- names, refs and versions --------------------------------------------------------------------


def check_name(name: str) -> str:
    """A skill name is also a folder and key name, so it is kept to ``^[a-z][a-z0-9-]{0,63}$``."""
    if not _NAME.match(name):
        raise ValidationError(
            f"skill: invalid skill name {name!r} (lowercase letters, digits and '-', starting with a letter)"
        )
    return name


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``"pr-review-prep@1.2.0"`` -> ``("pr-review-prep", "1.2.0")``; without ``@`` the version is None."""
    name, at, version = ref.partition("@")
    check_name(name)
    if at and not _SEMVER.match(version):
        raise ValidationError(f"skill: invalid version {version!r} in {ref!r} (semver, e.g. 1.2.0)")
    return name, version if at else None


def version_key(version: str) -> tuple[int, int, int, int, str]:
    """Sort key for semver strings: a pre-release sorts before its release."""
    match = _SEMVER.match(version)
    if not match:
        return (-1, -1, -1, -1, version)
    core, _, rest = version.partition("+")[0].partition("-")
    major, minor, patch = (int(part) for part in core.split("."))
    return (major, minor, patch, 0 if rest else 1, rest)


# --- availability --------------------------------------------------------------------------------


def is_protected_env(name: str, extra: Iterable[str] = ()) -> bool:
    return bool(PROTECTED_ENV.match(name)) or name in set(extra)


def missing_requirements(
    spec: SkillSpec, environ: Mapping[str, str], protected: Iterable[str] = ()
) -> list[str]:
    """Why this host cannot run the skill (empty: it can): each missing bin or env var, named."""
    path = environ.get("PATH", os.defpath)
    protected = frozenset(protected)
    reasons = [f"missing bin: {b}" for b in spec.aigw.requires.bins if shutil.which(b, path=path) is None]
    for name in spec.aigw.requires.env + spec.aigw.requires.optional_env:
        if is_protected_env(name, protected):
            reasons.append(f"env {name} holds a provider key and is never passed to scripts")
        elif name in spec.aigw.requires.env and not environ.get(name):
            reasons.append(f"missing env: {name}")
    return reasons


# --- parsing SKILL.md ----------------------------------------------------------------------------

_Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class SkillFile:
    """A parsed SKILL.md: its validated spec and body, and what names the line of a later error."""

    path: Path
    spec: SkillSpec
    node: yaml.Node  # the front matter's YAML node tree, for line numbers
    moves: list[tuple[_Loc, _Loc]]  # canonical loc prefix -> where it is written in the file
    body: str
    body_line: int  # the file line the body starts on

    def error(self, loc: _Loc, message: str) -> ConfigError:
        """A ConfigError for the field at ``loc`` (canonical), naming its line in the file."""
        return _error_at(self.path, self.node, self.moves, loc, message)


def parse_skill_file(text: str, path: Path) -> SkillFile:
    """The validated spec, with what is needed to name lines in later errors."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise ConfigError(
            "must start with a '---' line opening the YAML front matter", file=str(path), entry="line 1"
        )
    end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
    if end is None:
        raise ConfigError("the front matter is never closed with '---'", file=str(path), entry="line 1")
    source = "".join(lines[1:end])
    try:
        node = yaml.compose(source, Loader=yaml.SafeLoader)
        data = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 1
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"not valid YAML: {problem}", file=str(path), entry=f"line {line}") from None
    if not isinstance(data, dict) or node is None:
        raise ConfigError("the front matter must be a YAML mapping", file=str(path), entry="line 2")
    _check_duplicate_keys(node, path)
    normalised, moves = _normalise(data, node, path)
    try:
        spec = SkillSpec.model_validate(normalised)
    except PydanticValidationError as exc:
        first = first_error(exc)
        raise _error_at(path, node, moves, first.loc, first.message(missing="field required")) from None
    if problem := next(iter(_cross_checks(spec)), None):
        raise _error_at(path, node, moves, *problem)
    return SkillFile(path, spec, node, moves, "".join(lines[end + 1 :]), end + 2)


def _normalise(
    data: dict[str, Any], node: yaml.Node, path: Path
) -> tuple[dict[str, Any], list[tuple[_Loc, _Loc]]]:
    """Bring the seed article's layout to the canonical one; ``moves`` maps canonical locs back."""
    for key in data:
        if key not in _TOP_LEVEL:
            raise _error_at(path, node, [], (key,), f"unknown field (allowed: {', '.join(_TOP_LEVEL)})")
    out = {k: v for k, v in data.items() if k != "metadata"}
    moves: list[tuple[_Loc, _Loc]] = []
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise _error_at(path, node, [], ("metadata",), "must be a mapping")
    present = [ns for ns in _NAMESPACES if ns in metadata]
    if len(present) > 1:
        raise _error_at(path, node, [], ("metadata",), "give metadata.aigw or metadata.openclaw, not both")
    if present:
        run = metadata[present[0]]
        moves.append((("aigw",), ("metadata", present[0])))
        if isinstance(run, dict):
            run = dict(run)
            for key in ("inputs", "outputs"):
                if key in run:
                    if key in out:
                        loc = ("metadata", present[0], key)
                        raise _error_at(
                            path, node, [], loc, f"'{key}' is given both here and at the top level"
                        )
                    out[key] = run.pop(key)
                    moves.insert(0, ((key,), ("metadata", present[0], key)))
        out["aigw"] = run
    for key in ("inputs", "outputs"):
        if isinstance(out.get(key), list):
            out[key] = _list_to_mapping(out[key], path, node, moves, key)
    return out, moves


def _list_to_mapping(
    items: list[Any], path: Path, node: yaml.Node, moves: list[tuple[_Loc, _Loc]], key: str
) -> dict[str, Any]:
    """the seed article writes ``inputs: [- pr_number: integer, - repo: string]``."""
    mapping: dict[str, Any] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict) or len(item) != 1:
            raise _error_at(path, node, moves, (key, index), "each list item must be one 'name: type' pair")
        mapping.update(item)
    return mapping


def _cross_checks(spec: SkillSpec) -> Iterable[tuple[_Loc, str]]:
    """Rules that span fields, each with the loc of the field to blame."""
    run = spec.aigw
    if run.model and run.task:
        yield ("aigw", "task"), "give 'model' or 'task', not both"
    for name in spec.inputs:
        if name in RESERVED_NAMES:
            yield ("inputs", name), f"'{name}' is reserved"
    for index, script in enumerate(run.scripts):
        if script.interpreter and script.interpreter not in run.requires.bins:
            yield (
                ("aigw", "scripts", index, "interpreter"),
                f"{script.interpreter!r} must be listed in requires.bins",
            )
    for name, out in spec.outputs.items():
        yield from _output_checks(spec, name, out)


def _output_checks(spec: SkillSpec, name: str, out: OutputSpec) -> Iterable[tuple[_Loc, str]]:
    if out.source == "scripts" and not spec.aigw.scripts:
        yield ("outputs", name, "source"), "the skill has no scripts"
    for key, ref, wanted in (
        ("enum_from", out.enum_from, "array"),
        ("schema_from", out.schema_from, "object"),
    ):
        if ref is None:
            continue
        if ref not in spec.inputs:
            yield ("outputs", name, key), f"{ref!r} is not an input of this skill"
        elif spec.inputs[ref].type != wanted:
            yield ("outputs", name, key), f"input {ref!r} must be of type {wanted}"
    if out.enum_from and out.type not in TEXT_TYPES:
        yield ("outputs", name, "enum_from"), "applies to string outputs only"


def arg_templates(parsed: SkillFile, index: int) -> tuple[Template, ...]:
    templates = []
    for position, arg in enumerate(parsed.spec.aigw.scripts[index].args):
        try:
            templates.append(Template(arg))
        except TemplateError as exc:
            raise parsed.error(("aigw", "scripts", index, "args", position), exc.reason) from None
    return tuple(templates)


def prompt_template(parsed: SkillFile) -> Template | None:
    found = _prompt_section(parsed.body, parsed.body_line, parsed.path)
    if found is None:
        if parsed.spec.model_outputs:
            outputs = ", ".join(parsed.spec.model_outputs)
            message = f"no '## {PROMPT_HEADING}' section, but outputs {outputs} come from the model"
            raise ConfigError(message, file=str(parsed.path), field="prompt")
        return None
    text, first_line = found
    try:
        return Template(text, first_line=first_line)
    except TemplateError as exc:
        raise ConfigError(
            exc.reason, file=str(parsed.path), entry=f"line {exc.line}", field="prompt"
        ) from None


def _prompt_section(body: str, body_line: int, path: Path) -> tuple[str, int] | None:
    """The text under ``## Prompt`` up to the next level-1 or -2 heading (fenced code respected)."""
    lines = body.splitlines(keepends=True)
    headings = _headings(lines)
    found = [n for n, (_, title) in enumerate(headings) if title.lower() == PROMPT_HEADING.lower()]
    if not found:
        return None
    if len(found) > 1:
        line = body_line + headings[found[1]][0]
        raise ConfigError(f"a second '## {PROMPT_HEADING}' section", file=str(path), entry=f"line {line}")
    start = headings[found[0]][0] + 1
    end = headings[found[0] + 1][0] if found[0] + 1 < len(headings) else len(lines)
    return _section_text(lines[start:end], body_line + start, path)


def _headings(lines: list[str]) -> list[tuple[int, str]]:
    """(line index, title) of every level-1 or -2 heading outside fenced code."""
    found: list[tuple[int, str]] = []
    fence: str | None = None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if fence is not None:
            fence = None if stripped.startswith(fence) else fence
        elif stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
        elif heading := re.match(r"^#{1,2}\s+(.*?)[\s#]*$", line):
            found.append((index, heading.group(1).strip()))
    return found


def _section_text(section: list[str], first_line: int, path: Path) -> tuple[str, int]:
    """Trim blank lines; a section that is exactly one fenced block loses its fence (so the prompt
    may be fenced to read verbatim on GitHub)."""
    while section and not section[0].strip():
        section, first_line = section[1:], first_line + 1
    while section and not section[-1].strip():
        section = section[:-1]
    opening = section[0].strip()[:3] if section else ""
    if len(section) >= 2 and opening in ("```", "~~~") and section[-1].strip() == opening:
        section, first_line = section[1:-1], first_line + 1
    if not section:
        raise ConfigError(f"the '## {PROMPT_HEADING}' section is empty", file=str(path), field="prompt")
    return "".join(section).rstrip("\n"), first_line


# --- errors that name the line -------------------------------------------------------------------


def _error_at(
    path: Path, node: yaml.Node, moves: list[tuple[_Loc, _Loc]], loc: _Loc, message: str
) -> ConfigError:
    """A ConfigError naming the file, the line of the field in the file, and the field as written there."""
    original = _original_loc(loc, moves)
    field = ".".join(str(part) for part in original if part != "[key]")
    return ConfigError(message, file=str(path), entry=f"line {_line_of(node, original)}", field=field)


def _original_loc(loc: _Loc, moves: list[tuple[_Loc, _Loc]]) -> _Loc:
    for canonical, original in moves:
        if loc[: len(canonical)] == canonical:
            return original + loc[len(canonical) :]
    return loc


def _line_of(node: yaml.Node, loc: _Loc) -> int:
    """The file line (1-based; the front matter starts on line 2) of the deepest node ``loc`` reaches."""
    line = node.start_mark.line
    for part in loc:
        step = _child(node, part)
        if step is None:
            break
        line, node = step
    return line + 2


def _child(node: yaml.Node, part: str | int) -> tuple[int, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == str(part):
                return key.start_mark.line, value
    if isinstance(node, yaml.SequenceNode):
        if isinstance(part, int) and part < len(node.value):
            return node.value[part].start_mark.line, node.value[part]
        for item in node.value:  # the seed article's list of single "name: type" pairs
            if found := _child(item, part) if isinstance(item, yaml.MappingNode) else None:
                return found
    return None


def _check_duplicate_keys(node: yaml.Node, path: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                raise ConfigError(
                    f"duplicate key {key.value!r}", file=str(path), entry=f"line {key.start_mark.line + 2}"
                )
            seen.add(key.value)
            _check_duplicate_keys(value, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicate_keys(item, path)
