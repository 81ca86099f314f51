"""Skills: the SKILL.md contract, loading a skill folder, and checking inputs and outputs against it.

A skill folder holds ``SKILL.md`` (YAML front matter between ``---`` lines, then Markdown whose
``## Prompt`` section is the prompt template), ``scripts/`` and ``test/``. The front matter is
validated by pydantic models that forbid unknown keys; an error names the file, the line and the
field. SEED.md's layout (``metadata.openclaw`` with ``inputs``/``outputs`` as lists) is accepted as
an alias of ``metadata.aigw``. Running the scripts is the worker's job (``workers/skill_runner.py``);
storing versions is ``gateway/skill_registry.py``'s. The full format is in docs/skills.md.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from gateway.errors import ConfigError, GatewayError, ValidationError
from gateway.skill_template import Template, TemplateError

# --- errors (the skill branch of the tree in gateway/errors.py) ----------------------------------


class SkillError(GatewayError):
    """A skill could not run or produced something its contract does not allow.

    Only SkillOutputError is retryable: the model may answer within the contract next time.

    SkillError                    .type, .http_status as below
    ├── SkillNotFoundError        404: no such skill or version
    ├── SkillUnavailableError     503: a required bin or env var is missing on this host; .reasons
    ├── SkillTimeoutError         504: a script ran past its timeout
    ├── SkillFailedError          a script failed or the prompt did not render; .exit_code, .stderr_tail
    └── SkillOutputError          502: the model's answer breaks the outputs contract (a failed attempt)
    """

    type = "skill_error"


class SkillNotFoundError(SkillError):
    type = "skill_not_found"
    http_status = 404


class SkillUnavailableError(SkillError):
    """Required bins or env vars are missing on this host: the skill is not run at all."""

    type = "skill_unavailable"
    http_status = 503

    def __init__(self, message: str, *, reasons: Sequence[str]) -> None:
        super().__init__(message)
        self.reasons = list(reasons)


class SkillTimeoutError(SkillError):
    type = "skill_timeout"
    http_status = 504


class SkillFailedError(SkillError):
    """A script failed (exit code, flood, bad output, writes into its folder) or the prompt did not render."""

    type = "skill_failed"

    def __init__(self, message: str, *, exit_code: int | None = None, stderr_tail: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail


class SkillOutputError(SkillError):
    """The model's answer does not match the skill's ``outputs`` contract: a failed attempt."""

    type = "skill_output_invalid"
    http_status = 502
    retryable = True


# --- the front matter ----------------------------------------------------------------------------

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,63}$"
SEMVER_PATTERN = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"
_NAME = re.compile(NAME_PATTERN)
_SEMVER = re.compile(SEMVER_PATTERN)
MAX_BUNDLE_BYTES = 1_048_576
SKILL_FILE = "SKILL.md"
PROMPT_HEADING = "Prompt"
#: names the context always has, so inputs may not take them
RESERVED_NAMES = frozenset({"risk_flags", "this"})
#: never passed to a script even when a skill asks: aigw's own settings and provider keys
PROTECTED_ENV = re.compile(r"^(AIGW_.*|REDIS_URL|.*_API_KEY|ANTHROPIC_.*|OPENAI_.*)$")

FieldType = Literal["string", "integer", "number", "boolean", "array", "object", "markdown"]
TEXT_TYPES = ("string", "markdown")
FieldName = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,63}$")]
BinName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._+-]+$")]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _FieldSpec(Strict):
    type: FieldType
    required: bool = True
    description: str = ""
    #: element type of an array
    items: FieldType | None = None
    #: allowed values of a string
    enum: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """``name: integer`` is required, ``name: integer?`` optional."""
        if isinstance(data, str):
            return {"type": data.removesuffix("?"), "required": not data.endswith("?")}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> _FieldSpec:
        if self.items is not None and self.type != "array":
            raise ValueError("'items' applies to arrays only")
        if self.enum is not None and self.type not in TEXT_TYPES:
            raise ValueError("'enum' applies to strings only")
        return self


class InputSpec(_FieldSpec):
    default: Any = None
    #: a string must match this regular expression in full
    pattern: str | None = None

    @model_validator(mode="after")
    def _default_and_pattern(self) -> InputSpec:
        if self.default is not None:
            if self.required:
                raise ValueError("a required input cannot have a default")
            if problem := type_problem(self.default, self):
                raise ValueError(f"default: {problem[1]}")
        if self.pattern is not None:
            if self.type not in TEXT_TYPES:
                raise ValueError("'pattern' applies to strings only")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        return self


class OutputSpec(_FieldSpec):
    #: "model": parsed from the model's answer; "scripts": taken from the scripts' results
    source: Literal["model", "scripts"] = "model"
    #: the value must be one of the items of this (array) input, e.g. the labels a caller gave
    enum_from: str | None = None
    #: the value must match the JSON Schema (a subset, see docs/skills.md) given in this input
    schema_from: str | None = None


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

    @field_validator("env", "optional_env")
    @classmethod
    def _not_protected(cls, names: list[str]) -> list[str]:
        for name in names:
            if PROTECTED_ENV.match(name):
                raise ValueError(f"{name} is a provider key or aigw setting and is never passed to scripts")
        return names


class Timeouts(Strict):
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
    timeouts: Timeouts = Timeouts()


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


# --- a loaded skill ------------------------------------------------------------------------------


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
    parsed = _parse_front_matter(skill_file.read_text(encoding="utf-8"), skill_file)
    _check_files(parsed, root)
    prompt = _prompt_template(parsed)
    args = tuple(_arg_templates(parsed, i) for i in range(len(parsed.spec.aigw.scripts)))
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


# --- inputs and outputs --------------------------------------------------------------------------


def validate_inputs(spec: SkillSpec, inputs: object) -> dict[str, Any]:
    """The inputs checked against the contract, defaults filled in (absent optional -> default or None).

    Raises ValidationError ("inputs.<field>: ...", HTTP 422) at the first problem.
    """
    if not isinstance(inputs, dict):
        raise ValidationError("inputs: must be a JSON object")
    for key in inputs:
        if key not in spec.inputs:
            known = ", ".join(spec.inputs) or "none"
            raise ValidationError(f"inputs.{key}: not an input of skill {spec.name} (inputs: {known})")
    out: dict[str, Any] = {}
    for name, field in spec.inputs.items():
        value = inputs.get(name)
        if value is None:
            if field.required:
                raise ValidationError(f"inputs.{name}: required")
            out[name] = copy.deepcopy(field.default)
            continue
        if problem := type_problem(value, field):
            raise ValidationError(f"inputs.{_join(name, problem[0])}: {problem[1]}")
        if field.pattern is not None and not re.fullmatch(field.pattern, value):
            raise ValidationError(f"inputs.{name}: does not match the pattern {field.pattern}")
        out[name] = value
    for output in spec.outputs.values():
        _check_referenced_input(output, out)
    return out


def _check_referenced_input(field: OutputSpec, inputs: dict[str, Any]) -> None:
    """An input an output is checked against must itself be usable: labels, or a supported schema."""
    if field.enum_from and inputs.get(field.enum_from) is not None:
        labels = inputs[field.enum_from]
        if not labels or not all(isinstance(x, str) and x for x in labels):
            raise ValidationError(f"inputs.{field.enum_from}: must be a non-empty list of non-empty strings")
    if field.schema_from and inputs.get(field.schema_from) is not None:
        try:
            check_schema(inputs[field.schema_from], f"inputs.{field.schema_from}")
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


def outputs_from_model(spec: SkillSpec, text: str) -> dict[str, Any]:
    """The outputs the model answers, from its text.

    One text output (string or markdown): the whole answer, trimmed. One output of another type:
    the answer is its JSON value. Several outputs: the answer is a JSON object keyed by their names.
    A ```json fence around the JSON is allowed.
    """
    names = spec.model_outputs
    if not names:
        return {}
    if len(names) == 1 and spec.outputs[names[0]].type in TEXT_TYPES:
        return {names[0]: text.strip()}
    value = _json_answer(text, names)
    if len(names) == 1:
        return {names[0]: value}
    if not isinstance(value, dict):
        raise SkillOutputError(f"outputs: the model's answer must be a JSON object with {', '.join(names)}")
    return value


def check_outputs(spec: SkillSpec, outputs: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The outputs checked against the contract (types, enums, labels and schemas from the inputs).

    Raises SkillOutputError ("outputs.<field>: ...") at the first problem.
    """
    for key in outputs:
        if key not in spec.outputs:
            raise SkillOutputError(f"outputs.{key}: not an output of skill {spec.name}")
    checked: dict[str, Any] = {}
    for name, field in spec.outputs.items():
        value = outputs.get(name)
        checked[name] = value
        if value is None:
            if field.required:
                raise SkillOutputError(f"outputs.{name}: missing")
            continue
        if problem := type_problem(value, field):
            raise SkillOutputError(f"outputs.{_join(name, problem[0])}: {problem[1]}")
        if field.required and field.type in TEXT_TYPES and not value.strip():
            raise SkillOutputError(f"outputs.{name}: empty")
        if field.enum_from and value not in (inputs.get(field.enum_from) or []):
            allowed = ", ".join(map(str, inputs.get(field.enum_from) or []))
            raise SkillOutputError(
                f"outputs.{name}: {value!r} is not one of inputs.{field.enum_from} ({allowed})"
            )
        if field.schema_from and (problem_text := schema_problem(value, inputs.get(field.schema_from), name)):
            raise SkillOutputError(f"outputs.{problem_text}")
    return checked


def type_problem(value: Any, field: _FieldSpec) -> tuple[str, str] | None:
    """(sub-path, message) when ``value`` is not of the field's type, items and enum; else None."""
    if not _is_type(value, field.type):
        return "", f"expected {field.type}, got {json_kind(value)}"
    if field.items is not None:
        for index, item in enumerate(value):
            if not _is_type(item, field.items):
                return str(index), f"expected {field.items}, got {json_kind(item)}"
    if field.enum is not None and value not in field.enum:
        return "", f"{value!r} is not one of {', '.join(field.enum)}"
    return None


def _is_type(value: Any, type_: str) -> bool:
    if type_ in TEXT_TYPES:
        return isinstance(value, str)
    if type_ == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_ == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if type_ == "boolean":
        return isinstance(value, bool)
    return isinstance(value, list if type_ == "array" else dict)


def json_kind(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _json_answer(text: str, names: list[str]) -> Any:
    body = text.strip()
    fenced = re.fullmatch(r"```[A-Za-z]*\s*\n(.*?)\n\s*```", body, flags=re.DOTALL)
    if fenced:
        body = fenced.group(1)
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise SkillOutputError(
            f"outputs.{'/'.join(names)}: the model's answer is not valid JSON ({exc})"
        ) from None


# --- a JSON Schema subset (the ``extract`` skill's contract) -------------------------------------

_SCHEMA_KEYWORDS = frozenset(
    {"type", "properties", "required", "items", "enum", "additionalProperties", "description", "title"}
)
_SCHEMA_TYPES = {"string", "integer", "number", "boolean", "array", "object", "null"}


def check_schema(schema: Any, where: str) -> None:
    """Raise ValueError unless ``schema`` uses only the supported subset of JSON Schema."""
    if not isinstance(schema, dict):
        raise ValueError(f"{where}: a schema must be a JSON object")
    if unknown := sorted(set(schema) - _SCHEMA_KEYWORDS):
        raise ValueError(f"{where}: unsupported JSON Schema keyword {unknown[0]!r} (see docs/skills.md)")
    types = schema.get("type", [])
    for type_ in types if isinstance(types, list) else [types]:
        if type_ not in _SCHEMA_TYPES:
            raise ValueError(f"{where}.type: {type_!r} is not a JSON Schema type")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        raise ValueError(f"{where}.properties: must be an object")
    for name, sub in properties.items():
        check_schema(sub, f"{where}.properties.{name}")
    if "items" in schema:
        check_schema(schema["items"], f"{where}.items")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise ValueError(f"{where}.required: must be a list of property names")
    if "enum" in schema and not isinstance(schema["enum"], list):
        raise ValueError(f"{where}.enum: must be a list")
    if not isinstance(schema.get("additionalProperties", True), bool):
        raise ValueError(f"{where}.additionalProperties: only true or false is supported")


def schema_problem(value: Any, schema: Any, where: str) -> str | None:
    """'<path>: <message>' for the first place ``value`` breaks ``schema``; None if it matches."""
    if not isinstance(schema, dict):
        return None
    types = schema.get("type")
    allowed = types if isinstance(types, list) else [types] if types else []
    if allowed and not any(_schema_type(value, t) for t in allowed):
        return f"{where}: expected {' or '.join(allowed)}, got {json_kind(value)}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where}: {value!r} is not one of {schema['enum']}"
    if isinstance(value, dict):
        return _object_problem(value, schema, where)
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            if problem := schema_problem(item, schema["items"], f"{where}.{index}"):
                return problem
    return None


def _object_problem(value: dict[str, Any], schema: dict[str, Any], where: str) -> str | None:
    for name in schema.get("required", []):
        if name not in value:
            return f"{where}.{name}: missing"
    properties = schema.get("properties", {})
    for name, item in value.items():
        if name in properties:
            if problem := schema_problem(item, properties[name], f"{where}.{name}"):
                return problem
        elif schema.get("additionalProperties", True) is False:
            return f"{where}.{name}: not allowed by the schema"
    return None


def _schema_type(value: Any, type_: str) -> bool:
    return value is None if type_ == "null" else _is_type(value, type_)


# --- bundles: the files of a skill folder and their content hash ---------------------------------

_SKIPPED_DIRS = frozenset({"__pycache__", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache"})
_SKIPPED_FILES = frozenset({".DS_Store"})


@dataclass(frozen=True)
class BundleFile:
    path: str  # POSIX, relative to the skill folder
    executable: bool
    data: bytes


def read_bundle(root: str | Path, max_bytes: int = MAX_BUNDLE_BYTES) -> list[BundleFile]:
    """Every file of a skill folder, sorted by path; symlinks are refused and the total size capped.

    Caches (``__pycache__``, ``.git``, ``*.pyc``) are left out: they are not the skill.
    """
    base = Path(root)
    files: list[BundleFile] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(base):
        folder = Path(dirpath)
        for name in list(dirnames):
            if (folder / name).is_symlink():
                raise ConfigError("symlinks are not allowed in a skill", file=str(folder / name))
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS)
        for name in sorted(filenames):
            path = folder / name
            if name in _SKIPPED_FILES or name.endswith(".pyc"):
                continue
            if path.is_symlink() or not path.is_file():
                raise ConfigError("only regular files are allowed in a skill (no symlinks)", file=str(path))
            data = path.read_bytes()
            total += len(data)
            if total > max_bytes:
                raise ConfigError(f"the skill folder is larger than {max_bytes} bytes", file=str(base))
            executable = bool(path.stat().st_mode & 0o111)
            files.append(BundleFile(path.relative_to(base).as_posix(), executable, data))
    return sorted(files, key=lambda f: f.path)


def bundle_hash(files: Iterable[BundleFile]) -> str:
    """sha256 over the sorted paths, executable bits and bytes: the identity of a skill's code."""
    digest = hashlib.sha256()
    for file in sorted(files, key=lambda f: f.path):
        header = f"{file.path}\0{'x' if file.executable else '-'}\0{len(file.data)}\0"
        digest.update(header.encode("utf-8"))
        digest.update(file.data)
    return digest.hexdigest()


# --- parsing SKILL.md ----------------------------------------------------------------------------

_Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class _Parsed:
    path: Path
    spec: SkillSpec
    node: yaml.Node  # the front matter's YAML node tree, for line numbers
    moves: list[tuple[_Loc, _Loc]]  # canonical loc prefix -> where it is written in the file
    body: str
    body_line: int  # the file line the body starts on

    def error(self, loc: _Loc, message: str) -> ConfigError:
        return _error_at(self.path, self.node, self.moves, loc, message)


def _parse_front_matter(text: str, path: Path) -> _Parsed:
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
        first = exc.errors()[0]
        message = _pydantic_message(first["type"], first["msg"])
        raise _error_at(path, node, moves, tuple(first["loc"]), message) from None
    if problem := next(iter(_cross_checks(spec)), None):
        raise _error_at(path, node, moves, *problem)
    return _Parsed(path, spec, node, moves, "".join(lines[end + 1 :]), end + 2)


def _normalise(
    data: dict[str, Any], node: yaml.Node, path: Path
) -> tuple[dict[str, Any], list[tuple[_Loc, _Loc]]]:
    """Bring SEED.md's layout to the canonical one; ``moves`` maps canonical locs back to the file's."""
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
    """SEED.md writes ``inputs: [- pr_number: integer, - repo: string]``."""
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


def _check_files(parsed: _Parsed, root: Path) -> None:
    for index, script in enumerate(parsed.spec.aigw.scripts):
        target = (root / script.run).resolve()
        if not target.is_relative_to(root.resolve()) or not target.is_file():
            raise parsed.error(("aigw", "scripts", index, "run"), "no such file in the skill folder")


def _arg_templates(parsed: _Parsed, index: int) -> tuple[Template, ...]:
    templates = []
    for position, arg in enumerate(parsed.spec.aigw.scripts[index].args):
        try:
            templates.append(Template(arg))
        except TemplateError as exc:
            raise parsed.error(("aigw", "scripts", index, "args", position), exc.reason) from None
    return tuple(templates)


def _prompt_template(parsed: _Parsed) -> Template | None:
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


def _pydantic_message(kind: str, message: str) -> str:
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "field required"
    return message.removeprefix("Value error, ")


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
        for item in node.value:  # SEED.md's list of single "name: type" pairs
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
