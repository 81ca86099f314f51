"""A skill's contract with its callers: the input and output field types, and the checks of values
against them (``validate_inputs`` at the door and before scripts run, ``check_outputs`` on the answer).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field, StringConstraints, model_validator

from gateway.errors import SkillOutputError, ValidationError
from gateway.validation import Strict

# --- field types ---------------------------------------------------------------------------------

FieldType = Literal["string", "integer", "number", "boolean", "array", "object", "markdown"]
TEXT_TYPES = ("string", "markdown")
FieldName = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,63}$")]


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


class Contract(Protocol):
    """What the checks read of a skill's manifest (a ``SkillSpec``): its name, inputs and outputs.

    A protocol rather than ``SkillSpec`` itself so that the manifest, which is built from these
    field types, can import this module without this module importing it back.
    """

    @property
    def name(self) -> str: ...

    @property
    def inputs(self) -> Mapping[str, InputSpec]: ...

    @property
    def outputs(self) -> Mapping[str, OutputSpec]: ...

    @property
    def model_outputs(self) -> list[str]: ...


# --- inputs and outputs --------------------------------------------------------------------------


def validate_inputs(spec: Contract, inputs: object) -> dict[str, Any]:
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


def outputs_from_model(spec: Contract, text: str) -> dict[str, Any]:
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


def check_outputs(spec: Contract, outputs: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
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
    except RecursionError:
        raise SkillOutputError(
            f"outputs.{'/'.join(names)}: the model's answer is nested too deeply"
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
