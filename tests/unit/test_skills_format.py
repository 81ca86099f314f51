"""SKILL.md: parsing, errors that name file/line/field, and the input and output contracts."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError, SkillNotFoundError, SkillOutputError, ValidationError
from gateway.skills import (
    DiskSkills,
    bundle_hash,
    check_outputs,
    discover,
    load_skill_dir,
    missing_requirements,
    outputs_from_model,
    parse_ref,
    read_bundle,
    validate_inputs,
    version_key,
)

SKILLS = Path(__file__).resolve().parents[2] / "skills"

BASIC = """\
name: demo
description: A demo skill
version: 1.0.0
inputs:
  text: string
  count: integer?
outputs:
  answer: markdown
metadata:
  aigw:
    requires:
      bins: [bash]
    scripts:
      - run: scripts/go.sh
        interpreter: bash
"""
PROMPT = "\n# demo\n\n## Prompt\n\nSay something about {{ text }}.\n"


def write_skill(root: Path, front: str, body: str = PROMPT, name: str = "demo") -> Path:
    folder = root / name
    (folder / "scripts").mkdir(parents=True, exist_ok=True)
    (folder / "scripts" / "go.sh").write_text("echo '{}'\n")
    (folder / "SKILL.md").write_text(f"---\n{front}---\n{body}")
    return folder


def config_error(folder: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_skill_dir(folder)
    return caught.value


# --- parsing --------------------------------------------------------------------------------------


def test_skills_bundled_skills_all_load() -> None:
    errors: list[ConfigError] = []
    skills = discover(SKILLS, errors)
    assert errors == []
    assert {s.name for s in skills} >= {"pr-review-prep", "summarize", "classify", "extract"}
    prep = next(s for s in skills if s.name == "pr-review-prep")
    assert prep.spec.outputs["risk_flags"].source == "scripts"
    assert prep.spec.aigw.requires.bins == ["python3"]


def test_skills_basic_front_matter_and_prompt_section(tmp_path: Path) -> None:
    skill = load_skill_dir(write_skill(tmp_path, BASIC))
    assert skill.ref == "demo@1.0.0"
    assert skill.spec.inputs["count"].required is False
    assert skill.spec.model_outputs == ["answer"]
    assert skill.prompt is not None and skill.prompt.render({"text": "x"}) == "Say something about x."
    assert re.fullmatch(r"[0-9a-f]{64}", skill.content_hash)


def test_skills_seed_layout_with_openclaw_key_is_accepted(tmp_path: Path) -> None:
    seed = """\
name: demo
description: "Prepare a comprehensive PR review checklist based on changed files"
version: 1.2.0
metadata:
  openclaw:
    requires:
      bins: ["bash"]
    inputs:
      - pr_number: integer
      - repo: string
    outputs:
      - checklist: markdown
      - risk_flags: array
"""
    body = "\n## Prompt\n\nPR {{ pr_number }} of {{ repo }}\n"
    skill = load_skill_dir(write_skill(tmp_path, seed, body))
    assert list(skill.spec.inputs) == ["pr_number", "repo"]
    assert skill.spec.inputs["pr_number"].type == "integer"
    assert skill.spec.outputs["risk_flags"].type == "array"
    assert skill.spec.aigw.requires.bins == ["bash"]


def test_skills_other_metadata_namespaces_are_ignored(tmp_path: Path) -> None:
    front = BASIC.replace("metadata:\n", "metadata:\n  other-tool:\n    anything: [1, 2]\n")
    assert load_skill_dir(write_skill(tmp_path, front)).name == "demo"


def test_skills_fenced_prompt_loses_its_fence_and_headings_inside_fences_do_not_end_it(
    tmp_path: Path,
) -> None:
    body = "\n## Prompt\n\n```text\nTitle: {{ text }}\n## not a heading\n```\n\n## Notes\n\nignored\n"
    skill = load_skill_dir(write_skill(tmp_path, BASIC, body))
    assert skill.prompt is not None
    assert skill.prompt.render({"text": "x"}) == "Title: x\n## not a heading"


@pytest.mark.parametrize(
    ("front", "line", "field", "message"),
    [
        (BASIC + "licence: MIT\n", 17, "licence", "unknown field"),
        (BASIC.replace("        interpreter: bash\n", "        interpreter: bash\n        shell: true\n"),
         17, "metadata.aigw.scripts.0.shell", "unknown field"),
        (BASIC.replace("version: 1.0.0", "version: 1.0"), 4, "version", "should be a valid string"),
        (BASIC.replace("version: 1.0.0", "version: one"), 4, "version", "should match pattern"),
        (BASIC.replace("  count: integer?", "  count: integr"), 7, "inputs.count.type", "Input should be"),
        (BASIC.replace("bins: [bash]", "bins: [sh]"), 16, "metadata.aigw.scripts.0.interpreter",
         "must be listed in requires.bins"),
        (BASIC.replace("run: scripts/go.sh", "run: ../../etc/passwd"), 15, "metadata.aigw.scripts.0.run",
         "relative path inside the skill folder"),
        (BASIC.replace("run: scripts/go.sh", "run: scripts/gone.sh"), 15, "metadata.aigw.scripts.0.run",
         "no such file"),
        (BASIC.replace("      bins: [bash]", "      bins: [bash]\n      env: [OPENAI_API_KEY]"), 14,
         "metadata.aigw.requires.env", "never passed to scripts"),
        (BASIC.replace("name: demo\n", ""), 2, "name", "field required"),
        (BASIC.replace("  aigw:", "  openclaw:\n    scripts: []\n  aigw:"), 10, "metadata", "not both"),
        (BASIC.replace("  text: string\n", "  text: string\n  text: int\n"), 7, "", "duplicate key 'text'"),
    ],
)  # fmt: skip
def test_skills_invalid_front_matter_names_file_line_and_field(
    tmp_path: Path, front: str, line: int, field: str, message: str
) -> None:
    error = config_error(write_skill(tmp_path, front))
    assert error.file.endswith("demo/SKILL.md")
    assert error.entry == f"line {line}", str(error)
    assert error.field == field
    assert message in str(error)


def test_skills_seed_list_inputs_error_points_at_the_item_line(tmp_path: Path) -> None:
    seed = "name: demo\ndescription: d\nversion: 1.0.0\nmetadata:\n  openclaw:\n    inputs:\n"
    seed += "      - pr_number: integer\n      - repo: strng\n    outputs:\n      - out: markdown\n"
    error = config_error(write_skill(tmp_path, seed))
    assert (error.entry, error.field) == ("line 9", "metadata.openclaw.inputs.repo.type")


def test_skills_not_yaml_names_the_line(tmp_path: Path) -> None:
    error = config_error(write_skill(tmp_path, BASIC.replace("version: 1.0.0", "version: [1.0.0")))
    assert error.entry == "line 5" and "not valid YAML" in str(error)


def test_skills_prompt_is_required_when_the_model_answers(tmp_path: Path) -> None:
    error = config_error(write_skill(tmp_path, BASIC, "\n## Usage\n\nno prompt here\n"))
    assert error.field == "prompt" and "no '## Prompt' section" in str(error)


def test_skills_prompt_syntax_error_names_the_file_line(tmp_path: Path) -> None:
    body = "\n## Prompt\n\nfirst line\n{{#each text}}\nnever closed\n"
    error = config_error(write_skill(tmp_path, BASIC, body))
    assert (error.entry, error.field) == (f"line {BASIC.count(chr(10)) + 7}", "prompt")


def test_skills_output_constraints_must_reference_inputs(tmp_path: Path) -> None:
    front = BASIC.replace("  answer: markdown", "  answer:\n    type: string\n    enum_from: labels")
    error = config_error(write_skill(tmp_path, front))
    assert error.field == "outputs.answer.enum_from" and "'labels' is not an input" in str(error)


def test_skills_folder_name_must_match_the_skill_name(tmp_path: Path) -> None:
    write_skill(tmp_path, BASIC, name="other")
    errors: list[ConfigError] = []
    assert discover(tmp_path, errors) == []
    assert "folder is 'other'" in str(errors[0])


# --- names and refs -------------------------------------------------------------------------------


def test_skills_parse_ref_splits_name_and_version() -> None:
    assert parse_ref("pr-review-prep@1.2.0") == ("pr-review-prep", "1.2.0")
    assert parse_ref("summarize") == ("summarize", None)


@pytest.mark.parametrize(
    "ref",
    ["../etc", "a/b", "..", "skills/../x", "UPPER", "-x", "a\\b", "", "x@1.2", "x@latest", "x@../1.0.0"],
)
def test_skills_parse_ref_refuses_paths_and_bad_versions(ref: str) -> None:
    with pytest.raises(ValidationError, match="^skill: invalid"):
        parse_ref(ref)


def test_skills_disk_source_refuses_traversal_and_wrong_pins(tmp_path: Path) -> None:
    write_skill(tmp_path, BASIC)
    source = DiskSkills(tmp_path)
    assert source.load("demo", "1.0.0").version == "1.0.0"
    with pytest.raises(ValidationError):
        source.load("../demo")
    with pytest.raises(SkillNotFoundError, match="has version 1.0.0"):
        source.load("demo", "2.0.0")
    with pytest.raises(SkillNotFoundError):
        source.load("missing")


def test_skills_versions_sort_by_semver() -> None:
    versions = ["1.10.0", "1.2.0", "1.2.0-rc.1", "0.9.9", "2.0.0"]
    assert sorted(versions, key=version_key) == ["0.9.9", "1.2.0-rc.1", "1.2.0", "1.10.0", "2.0.0"]


# --- inputs ---------------------------------------------------------------------------------------


@pytest.fixture
def prep_spec() -> Any:
    return DiskSkills(SKILLS).load("pr-review-prep").spec


def test_skills_validate_inputs_fills_defaults(prep_spec: Any) -> None:
    checked = validate_inputs(prep_spec, {"changed_files": ["a.py"]})
    assert checked["base_ref"] == "origin/main"
    assert checked["pr_number"] is None and checked["changed_files"] == ["a.py"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"changed_files": "a.py"}, "inputs.changed_files: expected array, got string"),
        ({"changed_files": ["a.py", 3]}, "inputs.changed_files.1: expected string, got integer"),
        ({"code_lines_added": True}, "inputs.code_lines_added: expected integer, got boolean"),
        ({"code_lines_added": 1.5}, "inputs.code_lines_added: expected integer, got number"),
        ({"base_ref": "main; rm -rf /"}, "inputs.base_ref: does not match the pattern"),
        ({"base_ref": "--output=/etc/x"}, "inputs.base_ref: does not match the pattern"),
        ({"base_ref": "main\nrm"}, "inputs.base_ref: does not match the pattern"),
        ({"prompt": "hi"}, "inputs.prompt: not an input of skill pr-review-prep"),
    ],
)
def test_skills_validate_inputs_names_the_field(prep_spec: Any, inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_inputs(prep_spec, inputs)
    assert caught.value.http_status == 422
    assert str(caught.value).startswith(message)


def test_skills_validate_inputs_requires_required_fields_and_an_object() -> None:
    spec = DiskSkills(SKILLS).load("classify").spec
    with pytest.raises(ValidationError, match=r"^inputs\.labels: required"):
        validate_inputs(spec, {"text": "x"})
    with pytest.raises(ValidationError, match=r"^inputs\.labels: must be a non-empty list"):
        validate_inputs(spec, {"text": "x", "labels": []})
    with pytest.raises(ValidationError, match="^inputs: must be a JSON object"):
        validate_inputs(spec, ["text"])


def test_skills_validate_inputs_checks_a_schema_input_is_supported() -> None:
    spec = DiskSkills(SKILLS).load("extract").spec
    with pytest.raises(ValidationError, match=r"^inputs\.schema\.properties\.a: unsupported .* 'allOf'"):
        validate_inputs(spec, {"text": "x", "schema": {"properties": {"a": {"allOf": []}}}})


# --- outputs --------------------------------------------------------------------------------------


def test_skills_single_text_output_is_the_whole_answer() -> None:
    spec = DiskSkills(SKILLS).load("summarize").spec
    assert outputs_from_model(spec, "  A summary.\n") == {"summary": "A summary."}
    with pytest.raises(SkillOutputError, match=r"^outputs\.summary: empty"):
        check_outputs(spec, outputs_from_model(spec, "   "), {})


def test_skills_label_output_must_be_one_of_the_given_labels() -> None:
    spec = DiskSkills(SKILLS).load("classify").spec
    inputs = {"text": "x", "labels": ["bug", "question"]}
    assert check_outputs(spec, outputs_from_model(spec, "bug\n"), inputs) == {"label": "bug"}
    with pytest.raises(
        SkillOutputError, match=r"^outputs\.label: 'Bug' is not one of inputs\.labels \(bug, question\)"
    ):
        check_outputs(spec, outputs_from_model(spec, "Bug"), inputs)


def test_skills_object_output_is_json_checked_against_the_given_schema() -> None:
    spec = DiskSkills(SKILLS).load("extract").spec
    schema = {
        "type": "object",
        "properties": {"total": {"type": "number"}, "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["total"],
        "additionalProperties": False,
    }
    inputs = {"text": "x", "schema": schema}
    fenced = '```json\n{"total": 3, "tags": ["a"]}\n```'
    assert check_outputs(spec, outputs_from_model(spec, fenced), inputs) == {
        "data": {"total": 3, "tags": ["a"]}
    }
    for answer, message in [
        ('{"tags": []}', r"outputs\.data\.total: missing"),
        ('{"total": "3"}', r"outputs\.data\.total: expected number, got string"),
        ('{"total": 1, "tags": [1]}', r"outputs\.data\.tags\.0: expected string, got integer"),
        ('{"total": 1, "extra": 1}', r"outputs\.data\.extra: not allowed"),
        ("[1]", r"outputs\.data: expected object, got array"),
        ("Sure! Here it is", r"outputs\.data: the model's answer is not valid JSON"),
    ]:
        with pytest.raises(SkillOutputError, match=message):
            check_outputs(spec, outputs_from_model(spec, answer), inputs)


def test_skills_several_model_outputs_come_as_one_json_object(tmp_path: Path) -> None:
    front = BASIC.replace("  answer: markdown", "  answer: markdown\n  score: number\n  tags: array?")
    spec = load_skill_dir(write_skill(tmp_path, front)).spec
    got = check_outputs(spec, outputs_from_model(spec, '{"answer": "ok", "score": 0.5}'), {})
    assert got == {"answer": "ok", "score": 0.5, "tags": None}
    with pytest.raises(SkillOutputError, match=r"^outputs\.score: expected number, got string"):
        check_outputs(spec, outputs_from_model(spec, '{"answer": "ok", "score": "high"}'), {})
    with pytest.raises(SkillOutputError, match=r"^outputs\.mood: not an output"):
        check_outputs(spec, outputs_from_model(spec, '{"answer": "ok", "score": 1, "mood": "x"}'), {})
    with pytest.raises(SkillOutputError, match="must be a JSON object"):
        outputs_from_model(spec, "[1, 2]")


# --- availability and bundles ---------------------------------------------------------------------


def test_skills_missing_bins_and_env_are_named(tmp_path: Path) -> None:
    front = BASIC.replace("bins: [bash]", "bins: [bash, aigw-no-such-bin]\n      env: [TEST_NEEDED_VAR]")
    spec = load_skill_dir(write_skill(tmp_path, front)).spec
    environ = {"PATH": os.environ["PATH"]}
    assert missing_requirements(spec, environ) == [
        "missing bin: aigw-no-such-bin",
        "missing env: TEST_NEEDED_VAR",
    ]
    environ["TEST_NEEDED_VAR"] = "1"
    assert missing_requirements(spec, environ, protected={"TEST_NEEDED_VAR"}) == [
        "missing bin: aigw-no-such-bin",
        "env TEST_NEEDED_VAR holds a provider key and is never passed to scripts",
    ]


def test_skills_bundle_hash_covers_paths_bytes_and_the_executable_bit(tmp_path: Path) -> None:
    folder = write_skill(tmp_path, BASIC)
    first = bundle_hash(read_bundle(folder))
    (folder / "scripts" / "__pycache__").mkdir()
    (folder / "scripts" / "__pycache__" / "x.pyc").write_bytes(b"cache")
    assert bundle_hash(read_bundle(folder)) == first
    (folder / "scripts" / "go.sh").chmod(0o755)
    executable = bundle_hash(read_bundle(folder))
    assert executable != first
    (folder / "scripts" / "go.sh").write_text("echo '{ }'\n")
    assert bundle_hash(read_bundle(folder)) not in (first, executable)


def test_skills_bundle_refuses_symlinks_and_oversized_folders(tmp_path: Path) -> None:
    folder = write_skill(tmp_path, BASIC)
    (folder / "big.bin").write_bytes(b"x" * 2048)
    with pytest.raises(ConfigError, match="larger than 1024 bytes"):
        read_bundle(folder, max_bytes=1024)
    (folder / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(ConfigError, match="symlink"):
        read_bundle(folder)


def test_skills_requires_network_is_a_declared_boolean(tmp_path: Path) -> None:
    front = BASIC.replace("      bins: [bash]\n", "      bins: [bash]\n      network: true\n")
    assert load_skill_dir(write_skill(tmp_path / "a", front)).spec.aigw.requires.network is True
    assert load_skill_dir(write_skill(tmp_path / "b", BASIC)).spec.aigw.requires.network is False
    error = config_error(write_skill(tmp_path / "c", front.replace("network: true", "network: loopback")))
    assert error.field == "metadata.aigw.requires.network" and "valid boolean" in error.message
