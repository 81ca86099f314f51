"""`aigw skill …` through the typer app: fixtures of the bundled skills, scaffold, deploy and rollback."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from gateway.cli import app
from gateway.skills import SkillRegistry, load_skill_dir
from tests.fakes.provider import FakeProvider, Fault
from tests.integration.harness import ConfigFactory
from workers.skill_runner import SkillRunner
from workers.skill_testing import run_fixtures

SKILLS = Path(__file__).resolve().parents[2] / "skills"
runner = CliRunner()
ENV = {"PATH": os.environ.get("PATH", os.defpath)}


def aigw(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["skill", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_skill_cli_bundled_skills_pass_their_fixtures() -> None:
    code, output = aigw("test", "--all", "--dir", str(SKILLS))
    assert code == 0, output
    for name in ("pr-review-prep", "summarize", "classify", "extract"):
        assert name in output
    assert "FAIL" not in output and " 0 failed" in output


def test_skill_cli_a_changed_expected_result_fails_the_test(tmp_path: Path) -> None:
    copy = tmp_path / "skills"
    shutil.copytree(SKILLS / "pr-review-prep", copy / "pr-review-prep")
    expected = copy / "pr-review-prep" / "test" / "expected" / "config-and-migration.json"
    data = json.loads(expected.read_text())
    data["risk_flags"] = data["risk_flags"][:-1]  # pretend the scan stopped raising a flag
    expected.write_text(json.dumps(data))
    code, output = aigw("test", "pr-review-prep", "--dir", str(copy))
    assert code == 1
    assert "FAIL" in output and "config-and-migration" in output
    assert "risk_flags: expected 2 item(s), got 3" in output


def test_skill_cli_a_deeply_nested_script_result_or_fixture_fails_the_test_without_a_crash(
    tmp_path: Path,
) -> None:
    copy = tmp_path / "skills"
    shutil.copytree(SKILLS / "summarize", copy / "summarize")
    script = next((copy / "summarize" / "scripts").iterdir())
    script.write_text("import sys\nsys.stdin.read()\nprint('[' * 100_000)\n")
    fixtures = copy / "summarize" / "test" / "fixtures"
    (fixtures / "deep.json").write_text("[" * 100_000)
    (copy / "summarize" / "test" / "expected" / "deep.json").write_text("{}")
    result = runner.invoke(app, ["skill", "test", "summarize", "--dir", str(copy)], env={"COLUMNS": "400"})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # a verdict, not a crash
    results = asyncio.run(run_fixtures(load_skill_dir(copy / "summarize"), SkillRunner(environ=ENV)))
    details = [r.detail for r in results]
    assert any(d.startswith("skill_failed:") and "nested deeper than 64" in d for d in details), details
    assert any(d.endswith("deep.json: JSON nested too deeply") for d in details), details


def test_skill_cli_a_broken_skill_fails_test_all_and_list(tmp_path: Path) -> None:
    copy = tmp_path / "skills"
    shutil.copytree(SKILLS / "summarize", copy / "summarize")
    skill_md = copy / "summarize" / "SKILL.md"
    skill_md.write_text(skill_md.read_text().replace("version: 1.0.0", "version: one"))
    code, output = aigw("test", "--all", "--dir", str(copy))
    assert code == 1 and "line 4: version" in output
    code, output = aigw("list", "--dir", str(copy))
    assert code == 1 and "broken" in output


def test_skill_cli_new_scaffolds_a_skill_that_passes_its_own_test(tmp_path: Path) -> None:
    code, output = aigw("new", "ticket-triage", "--dir", str(tmp_path))
    assert code == 0, output
    assert (tmp_path / "ticket-triage" / "SKILL.md").exists()
    code, output = aigw("test", "ticket-triage", "--dir", str(tmp_path))
    assert code == 0, output
    assert aigw("new", "ticket-triage", "--dir", str(tmp_path))[0] == 1  # never overwrites


@pytest.mark.parametrize("name", ["../evil", "a/b", "Bad"])
def test_skill_cli_bad_names_are_one_line_and_nonzero(tmp_path: Path, name: str) -> None:
    for command in (["new", name], ["show", name], ["test", name]):
        code, output = aigw(*command, "--dir", str(tmp_path))
        assert code == 1 and "invalid skill name" in output
        assert len(output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_skill_cli_list_and_show(tmp_path: Path) -> None:
    code, output = aigw("list", "--dir", str(SKILLS))
    assert code == 0 and "pr-review-prep" in output and "available" in output
    code, output = aigw("show", "classify", "--dir", str(SKILLS))
    assert code == 0 and "enum_from" in output and "Answer with exactly one of these labels" in output


def test_skill_cli_deploy_and_rollback(
    redis_url: str,
    redis_client: redis.Redis,
    config_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("AIGW_HOME", str(tmp_path / "home"))
    copy = tmp_path / "skills"
    shutil.copytree(SKILLS / "summarize", copy / "summarize")
    args = ("--dir", str(copy), "--config", str(config_dir))
    code, output = aigw("deploy", "summarize", *args)
    assert code == 0 and "deployed summarize@1.0.0" in output, output
    skill_md = copy / "summarize" / "SKILL.md"
    skill_md.write_text(skill_md.read_text().replace("version: 1.0.0", "version: 1.1.0"))
    code, output = aigw("deploy", "summarize", "--no-test", *args)
    assert code == 0 and "(was 1.0.0)" in output
    registry = SkillRegistry(redis_client, tmp_path / "cache")
    assert registry.get("summarize").version == "1.1.0"
    code, output = aigw("list", "--deployed", "--config", str(config_dir))
    assert code == 0 and "1.0.0, 1.1.0" in output
    code, output = aigw("rollback", "summarize", "--config", str(config_dir))
    assert code == 0 and "1.1.0 -> 1.0.0" in output
    assert registry.get("summarize").version == "1.0.0"
    code, output = aigw("rollback", "summarize", "--config", str(config_dir))
    assert code == 1 and "nothing to roll back to" in output
    skill_md.write_text(skill_md.read_text() + "\nedited\n")
    code, output = aigw("deploy", "summarize", "--no-test", *args)
    assert code == 1 and "bump the version" in output


def test_skill_cli_deploy_refuses_a_skill_whose_fixtures_fail(
    redis_url: str, config_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    copy = tmp_path / "skills"
    shutil.copytree(SKILLS / "classify", copy / "classify")
    (copy / "classify" / "test" / "expected" / "bug-report.json").write_text(
        '{"risk_flags": [], "facts": {}}'
    )
    code, output = aigw("deploy", "classify", "--dir", str(copy), "--config", str(config_dir))
    assert code == 1 and "not deployed" in output


def test_skill_cli_test_against_a_model_checks_the_contract_only(
    gateway_config: ConfigFactory, fake: FakeProvider
) -> None:
    config = gateway_config()
    fake.script(Fault.reply("question"))
    args = ("test", "classify", "--dir", str(SKILLS), "--model", "openai", "--config", config.directory)
    code, output = aigw(*args)
    assert code == 0, output
    assert "checks a recorded answer" in output  # answer-outside-labels: not the model's business
    prompts = [json.dumps(body) for body in fake.bodies_for("gpt-fake")]
    assert len(prompts) == 1 and "Answer with exactly one of these labels" in prompts[0]
    fake.script(Fault.reply("Bug!"))
    code, output = aigw(*args)
    assert code == 1 and "outputs.label: 'Bug!' is not one of inputs.labels" in output
    code, output = aigw(
        "test", "classify", "--dir", str(SKILLS), "--model", "nope", "--config", config.directory
    )
    assert code == 1 and "unknown model alias 'nope'" in output


def test_skill_cli_prints_brackets_in_messages_as_text(tmp_path: Path) -> None:
    folder = tmp_path / "[red]"
    folder.mkdir()
    code, output = aigw("show", "demo", "--dir", str(folder))
    assert code == 1 and f"no skill 'demo' in {folder}" in output
