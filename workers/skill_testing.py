"""Runs a skill's fixtures (``aigw skill test``): code is compared exactly, the model by its contract.

A fixture is ``test/fixtures/NAME.json``: ``{"inputs": {...}, "model_response": "..."}`` (the
response is optional and replayed instead of calling a model). Its expectation is
``test/expected/NAME.json``: the scripts' ``risk_flags`` and ``facts``, which must be equal, and
optionally ``outputs`` (each key listed must be equal) or ``error`` (the run must fail with a message
containing it). Without a replayed response the built-in offline provider answers, which suits text
outputs; with a real model (``complete``) only the output contract is checked, and a fixture that
pins an error on its recorded answer is skipped once its scripts have passed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic import ValidationError as PydanticValidationError

from gateway.config import Config, Deployment
from gateway.errors import GatewayError, SkillError
from gateway.jobs import Message
from gateway.skills import Skill
from workers.providers.base import CompletionRequest
from workers.providers.offline import OfflineProvider
from workers.providers.registry import build_provider
from workers.routing import build_chain
from workers.skill_runner import ModelCall, PreparedSkill, SkillRunner

Mode = Literal["replayed", "offline", "model", "scripts only", "-"]
_DEFAULT_MAX_TOKENS = 1024


class Fixture(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    inputs: dict[str, Any]
    model_response: str | None = None


class Expected(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    risk_flags: list[dict[str, str]] | None = None
    facts: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    error: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.error is None and (self.risk_flags is None or self.facts is None):
            raise ValueError("give 'risk_flags' and 'facts' (the scripts' results), or 'error'")
        return self


@dataclass(frozen=True)
class FixtureResult:
    skill: str
    version: str
    fixture: str
    mode: Mode
    passed: bool
    detail: str = ""


async def run_fixtures(
    skill: Skill, runner: SkillRunner, complete: ModelCall | None = None
) -> list[FixtureResult]:
    """Every fixture of a skill, in name order; a skill without fixtures fails."""
    folder = skill.root / "test" / "fixtures"
    paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not paths:
        return [_result(skill, "-", "-", False, f"no fixtures in {folder}")]
    return [await run_fixture(skill, path, runner, complete) for path in paths]


async def run_fixture(
    skill: Skill, path: Path, runner: SkillRunner, complete: ModelCall | None = None
) -> FixtureResult:
    name = path.stem
    try:
        fixture = Fixture.model_validate(_read_json(path))
        expected = Expected.model_validate(_read_json(skill.root / "test" / "expected" / path.name))
    except (OSError, ValueError, PydanticValidationError) as exc:
        return _result(skill, name, "-", False, _one_line(str(exc)))
    mode: Mode = "model" if complete else "replayed" if fixture.model_response is not None else "offline"
    if not skill.spec.model_outputs:
        mode = "scripts only"
    try:
        prepared = await runner.prepare(skill, fixture.inputs)
        if problem := _compare_scripts(prepared, expected):
            return _result(skill, name, mode, False, problem)
        if mode == "model" and fixture.model_response is not None and expected.error is not None:
            return _result(skill, name, mode, True, "skipped: it checks a recorded answer, not the model")
        text = await _answer(prepared, fixture, complete)
        outputs = runner.finish(prepared, text)
    except GatewayError as exc:
        if expected.error is not None and expected.error in exc.message:
            return _result(skill, name, mode, True, f"failed as expected ({exc.type})")
        return _result(skill, name, mode, False, f"{exc.type}: {_one_line(exc.message)}")
    if expected.error is not None:
        return _result(
            skill, name, mode, False, f"expected an error containing {expected.error!r}; it succeeded"
        )
    if mode != "model" and (problem := _compare_outputs(outputs, expected.outputs or {})):
        return _result(skill, name, mode, False, problem)
    flags = ", ".join(f["id"] for f in prepared.risk_flags) or "no flags"
    return _result(skill, name, mode, True, f"{flags}; outputs meet the contract")


async def offline_answer(prepared: PreparedSkill) -> str:
    """The built-in offline provider's deterministic placeholder for the rendered prompt."""
    provider = OfflineProvider("offline/0:offline", Deployment(provider="offline", model="aigw-offline-1"))
    return (await provider.complete(_completion_request(prepared))).text


def model_call(config: Config, alias: str, environ: Mapping[str, str]) -> ModelCall:
    """A real model for `aigw skill test --model ALIAS`: the alias's chain, first available deployment
    (keys looked up by name in ``environ``).

    No policies apply here: it sends the fixtures' inputs, which a developer chose to send.
    """
    if alias not in config.models.models:
        raise SkillError(f"unknown model alias {alias!r}; configured: {', '.join(config.models.models)}")
    chain = build_chain(config.models, alias)

    async def complete(prepared: PreparedSkill) -> str:
        reasons = []
        for step in chain:
            provider = build_provider(step.name, step.deployment, environ)
            try:
                if reason := provider.unavailable_reason():
                    reasons.append(f"{step.name}: {reason}")
                    continue
                return (await provider.complete(_completion_request(prepared))).text
            finally:
                await provider.aclose()
        raise SkillError(f"no deployment of {alias} is available ({'; '.join(reasons)})")

    return complete


async def _answer(prepared: PreparedSkill, fixture: Fixture, complete: ModelCall | None) -> str | None:
    if not prepared.skill.spec.model_outputs:
        return None
    if complete is not None:
        return await complete(prepared)
    if fixture.model_response is not None:
        return fixture.model_response
    return await offline_answer(prepared)


def _completion_request(prepared: PreparedSkill) -> CompletionRequest:
    if not prepared.prompt:
        raise SkillError(f"skill {prepared.skill.ref} has no prompt to send")
    max_tokens = prepared.skill.spec.aigw.max_tokens or _DEFAULT_MAX_TOKENS
    return CompletionRequest(messages=[Message(role="user", content=prepared.prompt)], max_tokens=max_tokens)


def _compare_scripts(prepared: PreparedSkill, expected: Expected) -> str | None:
    if expected.risk_flags is not None and prepared.risk_flags != expected.risk_flags:
        return first_difference(expected.risk_flags, prepared.risk_flags, "risk_flags")
    if expected.facts is not None and prepared.facts != expected.facts:
        return first_difference(expected.facts, prepared.facts, "facts")
    return None


def _compare_outputs(actual: dict[str, Any], expected: dict[str, Any]) -> str | None:
    for key, value in expected.items():
        if actual.get(key) != value:
            return first_difference(value, actual.get(key), f"outputs.{key}")
    return None


def first_difference(expected: Any, actual: Any, where: str) -> str | None:
    """'<path>: expected X, got Y' at the first place two JSON values differ; None if equal."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual)):
            if key not in actual:
                return f"{where}.{key}: expected {_short(expected[key])}, missing"
            if key not in expected:
                return f"{where}.{key}: not expected, got {_short(actual[key])}"
            if found := first_difference(expected[key], actual[key], f"{where}.{key}"):
                return found
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        for index, (want, got) in enumerate(zip(expected, actual, strict=False)):
            if found := first_difference(want, got, f"{where}.{index}"):
                return found
        if len(expected) != len(actual):
            return f"{where}: expected {len(expected)} item(s), got {len(actual)}: {_short(actual)}"
        return None
    if expected != actual or type(expected) is not type(actual):
        return f"{where}: expected {_short(expected)}, got {_short(actual)}"
    return None


def all_passed(results: Sequence[FixtureResult]) -> bool:
    return bool(results) and all(r.passed for r in results)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None
    except FileNotFoundError:
        raise ValueError(f"{path}: missing") from None


def _result(skill: Skill, fixture: str, mode: Mode, passed: bool, detail: str) -> FixtureResult:
    return FixtureResult(skill.name, skill.version, fixture, mode, passed, detail)


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(text: str) -> str:
    return " ".join(text.split())
