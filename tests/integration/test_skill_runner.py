"""The skill runner with real subprocesses: order, data in, flags and facts out, every contained failure."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.config import SandboxConfig
from gateway.errors import (
    SkillFailedError,
    SkillOutputError,
    SkillTimeoutError,
    SkillUnavailableError,
    ValidationError,
)
from gateway.skills import DiskSkills, Skill, load_skill_dir
from workers.skill_runner import PreparedSkill, SkillRunner

SKILLS = Path(__file__).resolve().parents[2] / "skills"
ENV = {"PATH": os.environ.get("PATH", os.defpath)}
#: ``skills.sandbox: none``: what the opt-out for trusted skills still guarantees
UNSANDBOXED = SandboxConfig(mode="none")


def make_skill(
    root: Path,
    scripts: Mapping[str, str],
    *,
    inputs: str = "  text: string\n",
    outputs: str = "  answer: markdown\n",
    extra: str = "",
    args: Mapping[str, list[str]] | None = None,
    prompt: str = "Text: {{ text }}",
    timeout: float = 10,
) -> Skill:
    """A skill named ``demo`` whose bash scripts run in the order given."""
    folder = root / "demo"
    (folder / "scripts").mkdir(parents=True)
    entries = ""
    for name, body in scripts.items():
        (folder / "scripts" / name).write_text(body)
        entries += f"      - run: scripts/{name}\n        interpreter: bash\n        timeout: {timeout}\n"
        entries += f"        args: {json.dumps((args or {}).get(name, []))}\n"
    front = (
        f"name: demo\ndescription: test skill\nversion: 1.0.0\ninputs:\n{inputs}outputs:\n{outputs}"
        f"metadata:\n  aigw:\n    requires:\n      bins: [bash]\n{extra}    scripts:\n{entries}"
    )
    (folder / "SKILL.md").write_text(f"---\n{front}---\n\n## Prompt\n\n{prompt}\n")
    return load_skill_dir(folder)


def prepare(skill: Skill, inputs: dict[str, Any], runner: SkillRunner | None = None) -> PreparedSkill:
    return asyncio.run((runner or SkillRunner(environ=ENV)).prepare(skill, inputs))


# --- the happy path -------------------------------------------------------------------------------


def test_skill_runner_runs_scripts_in_order_and_merges_flags_and_facts(tmp_path: Path) -> None:
    first = 'echo "flag:first-flag — raised by one"\necho \'{"count": 2, "seen": "one"}\'\n'
    second = (
        'ctx=$(cat)\necho "flag:second-flag -- from two"\necho "flag:first-flag — again"\n'
        'printf \'{"seen": "two", "stdin": %s}\\n\' "$ctx"\n'
    )
    prompt = (
        "{{ text }} {{ count }} {{ seen }}\n{{#each risk_flags}}\n- {{ this.id }}: {{ this.text }}\n{{/each}}"
    )
    skill = make_skill(tmp_path, {"one.sh": first, "two.sh": second}, prompt=prompt)
    prepared = prepare(skill, {"text": "hello"})
    assert prepared.risk_flags == [
        {"id": "first-flag", "text": "raised by one"},
        {"id": "second-flag", "text": "from two"},
    ]
    # the second script saw the inputs and the first script's facts on stdin
    assert prepared.facts["stdin"] == {
        "text": "hello",
        "count": 2,
        "seen": "one",
        "risk_flags": [{"id": "first-flag", "text": "raised by one"}],
    }
    assert prepared.facts["seen"] == "two"
    assert prepared.prompt == "hello 2 two\n- first-flag: raised by one\n- second-flag: from two"
    assert [s.name for s in prepared.scripts] == ["one.sh", "two.sh"]
    assert prepared.audit_record()["risk_flags"] == ["first-flag", "second-flag"]
    assert prepared.audit_record()["bundle_sha256"] == skill.content_hash


def test_skill_runner_finish_checks_the_answer_and_takes_script_outputs_from_the_scripts(
    tmp_path: Path,
) -> None:
    outputs = "  answer: markdown\n  risk_flags:\n    type: array\n    source: scripts\n"
    skill = make_skill(tmp_path, {"flag.sh": 'echo "flag:x — y"\n'}, outputs=outputs)
    runner = SkillRunner(environ=ENV)
    prepared = prepare(skill, {"text": "t"}, runner)
    assert runner.finish(prepared, " The answer. ") == {
        "answer": "The answer.",
        "risk_flags": [{"id": "x", "text": "y"}],
    }
    with pytest.raises(SkillOutputError, match=r"^outputs\.answer: empty"):
        runner.finish(prepared, "")


def test_skill_runner_run_calls_the_model_with_the_prepared_prompt(tmp_path: Path) -> None:
    skill = make_skill(tmp_path, {"a.sh": "echo '{}'\n"})
    seen: list[str] = []

    async def model(prepared: PreparedSkill) -> str:
        seen.append(prepared.prompt or "")
        return "ok"

    run = asyncio.run(SkillRunner(environ=ENV).run(skill, {"text": "hi"}, model))
    assert seen == ["Text: hi"] and run.outputs == {"answer": "ok"}


def test_skill_runner_prepare_gives_policy_texts_for_inputs_facts_and_prompt(tmp_path: Path) -> None:
    skill = make_skill(tmp_path, {"a.sh": 'echo \'{"note": "call 555-0100"}\'\n'})
    texts = dict(prepare(skill, {"text": "mail bob@example.com"}).policy_texts())
    assert texts == {
        "inputs.text": "mail bob@example.com",
        "skill.facts": '{"note": "call 555-0100"}',
        "skill.prompt": "Text: mail bob@example.com",
    }


# --- data stays data ------------------------------------------------------------------------------

INJECTIONS = [
    "$(touch {m}/dollar)",
    "`touch {m}/backtick`",
    "x; touch {m}/semicolon",
    "x && touch {m}/and | tee {m}/pipe",
    "line\ntouch {m}/newline",
    '\'"; touch {m}/quote; echo "',
    "-rf --output={m}/dash",
]


def test_skill_runner_passes_injection_attempts_as_data_and_never_runs_them(tmp_path: Path) -> None:
    marker = tmp_path / "markers"
    marker.mkdir()
    script = (
        'printf \'{"argv1": "%s", "env_len": %d}\\n\' "$(printf %s "$1" | base64 -w0)" ${#AIGW_INPUT_TEXT}\n'
        "cat > /dev/null\n"
    )
    skill = make_skill(tmp_path / "s", {"echo.sh": script}, args={"echo.sh": ["{{ text }}"]})
    for attempt in INJECTIONS[:-1]:
        text = attempt.format(m=marker)
        prepared = prepare(skill, {"text": text})
        assert base64.b64decode(prepared.facts["argv1"]).decode() == text  # one argv element, byte-exact
        assert prepared.facts["env_len"] == len(text)
        assert prepared.prompt == f"Text: {text}"
    assert list(marker.iterdir()) == []


def test_skill_runner_refuses_an_argument_that_would_become_an_option(tmp_path: Path) -> None:
    skill = make_skill(tmp_path, {"echo.sh": "echo '{}'\n"}, args={"echo.sh": ["{{ text }}"]})
    with pytest.raises(SkillFailedError, match=r"args\[0\] would start with '-'"):
        prepare(skill, {"text": INJECTIONS[-1]})


def test_skill_runner_scripts_get_a_scrubbed_environment_and_a_private_directory(
    tmp_path: Path, world_readable_dir: Path
) -> None:
    script = (
        "env | cut -d= -f1 | sort > names.txt\n"
        'printf \'{"cwd": "%s", "home": "%s", "tmp": "%s", "names": "%s", "gh": "%s"}\\n\' '
        '"$PWD" "$HOME" "$TMPDIR" "$(tr "\\n" , < names.txt)" "${GH_TOKEN:-}"\n'
    )
    extra = "      optional_env: [GH_TOKEN]\n"
    skill = make_skill(tmp_path, {"env.sh": script}, extra=extra)
    environ = {
        **ENV,
        "OPENAI_API_KEY": "sk-secret",
        "ANTHROPIC_API_KEY": "sk-ant-secret",
        "AIGW_TOKEN": "aigw_secret",
        "REDIS_URL": "redis://:password@host",
        "MY_DB_PASSWORD": "hunter2",
        "GH_TOKEN": "gh-token-the-skill-asked-for",
    }
    work_root = world_readable_dir  # the sandbox's host uid must reach it when the tests run as root
    facts = prepare(skill, {"text": "t"}, SkillRunner(environ=environ, work_root=work_root)).facts
    names = set(facts["names"].strip(",").split(","))
    assert not names & {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AIGW_TOKEN", "REDIS_URL", "MY_DB_PASSWORD"}
    assert {"PATH", "HOME", "TMPDIR", "AIGW_INPUT_TEXT", "AIGW_SKILL_DIR", "GH_TOKEN"} <= names
    assert facts["gh"] == "gh-token-the-skill-asked-for"
    assert facts["cwd"] == "/work"  # the sandbox's name for the run's private directory
    assert facts["home"].startswith(facts["cwd"]) and facts["tmp"].startswith(facts["cwd"])
    assert list(work_root.iterdir()) == []  # the temporary directory is gone afterwards


def test_skill_runner_never_passes_a_provider_key_named_in_the_config(tmp_path: Path) -> None:
    skill = make_skill(tmp_path, {"a.sh": "echo '{}'\n"}, extra="      optional_env: [CORP_LLM_KEY]\n")
    runner = SkillRunner(environ={**ENV, "CORP_LLM_KEY": "secret"}, protected_env={"CORP_LLM_KEY"})
    with pytest.raises(SkillUnavailableError, match="CORP_LLM_KEY holds a provider key"):
        prepare(skill, {"text": "t"}, runner)


# --- contained failures ---------------------------------------------------------------------------


def test_skill_runner_missing_bin_is_reported_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    skill = make_skill(
        tmp_path / "s", {"a.sh": f"touch {marker}\n"}, extra="      optional_bins: []\n"
    )  # requires bash only
    spec = skill.spec.model_copy(
        update={"aigw": skill.spec.aigw.model_copy(update={"requires": skill.spec.aigw.requires.model_copy(
            update={"bins": ["bash", "aigw-no-such-bin"]})})}
    )  # fmt: skip
    broken = Skill(spec, skill.root, skill.prompt, skill.script_args, skill.content_hash)
    with pytest.raises(SkillUnavailableError, match="missing bin: aigw-no-such-bin") as caught:
        prepare(broken, {"text": "t"})
    assert caught.value.reasons == ["missing bin: aigw-no-such-bin"]
    assert not marker.exists()


def test_skill_runner_bad_inputs_are_a_validation_error_before_any_script(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    skill = make_skill(tmp_path / "s", {"a.sh": f"touch {marker}\n"})
    with pytest.raises(ValidationError, match=r"^inputs\.text: expected string, got integer"):
        prepare(skill, {"text": 5})
    assert not marker.exists()


def test_skill_runner_hanging_script_times_out_and_its_children_die(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = f"sleep 300 &\necho $! > {pid_file}\nwait\n"
    skill = make_skill(tmp_path / "s", {"hang.sh": script}, timeout=0.5)
    with pytest.raises(SkillTimeoutError, match=r"script hang.sh ran past its 0.5s timeout and was killed"):
        prepare(skill, {"text": "t"}, SkillRunner(environ=ENV, sandbox=UNSANDBOXED))
    assert_gone(int(pid_file.read_text()))


def test_skill_runner_canceled_job_kills_the_script_and_leaves_no_directory(tmp_path: Path) -> None:
    pid_file = tmp_path / "script.pid"
    skill = make_skill(tmp_path / "s", {"wait.sh": f"echo $$ > {pid_file}\nsleep 300\n"}, timeout=60)
    work_root = tmp_path / "work"
    work_root.mkdir()
    runner = SkillRunner(environ=ENV, work_root=work_root, sandbox=UNSANDBOXED)

    async def cancel_midway() -> None:
        task = asyncio.create_task(runner.prepare(skill, {"text": "t"}))
        deadline = time.monotonic() + 10
        while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())
    assert_gone(int(pid_file.read_text()))
    assert list(work_root.iterdir()) == []


def test_skill_runner_background_processes_die_when_the_script_exits(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = f"sleep 300 > /dev/null 2>&1 &\necho $! > {pid_file}\necho '{{}}'\n"
    prepare(
        make_skill(tmp_path / "s", {"bg.sh": script}),
        {"text": "t"},
        SkillRunner(environ=ENV, sandbox=UNSANDBOXED),
    )
    assert_gone(int(pid_file.read_text()))


def test_skill_runner_output_flood_is_capped(tmp_path: Path) -> None:
    skill = make_skill(tmp_path, {"flood.sh": "yes 'flood flood flood'\n"})
    with pytest.raises(SkillFailedError, match="wrote more than 65536 bytes to stdout and was killed"):
        prepare(skill, {"text": "t"}, SkillRunner(environ=ENV, max_output_bytes=65_536))


def test_skill_runner_stderr_flood_is_capped_too(tmp_path: Path) -> None:
    skill = make_skill(tmp_path, {"flood.sh": "yes 'noise' >&2\n"})
    with pytest.raises(SkillFailedError, match="to stderr"):
        prepare(skill, {"text": "t"}, SkillRunner(environ=ENV, max_output_bytes=65_536))


def test_skill_runner_nonzero_exit_fails_with_code_and_stderr(tmp_path: Path) -> None:
    skill = make_skill(tmp_path, {"fail.sh": "echo 'partial' \necho 'bad input: x' >&2\nexit 3\n"})
    with pytest.raises(SkillFailedError, match="script fail.sh exited with 3: bad input: x") as caught:
        prepare(skill, {"text": "t"})
    assert caught.value.exit_code == 3 and "bad input: x" in caught.value.stderr_tail


@pytest.mark.parametrize(
    ("stdout", "message"),
    [
        ("echo 'hello there'", "stdout must be flag lines and at most one JSON object"),
        ("echo '[1, 2]'", "must be an object, got list"),
        ("echo 'flag:'", "malformed flag line"),
        ("echo '{\"risk_flags\": []}'", "'risk_flags' is reserved"),
        ("printf '\\xff\\xfe'", "not UTF-8"),
        (
            """echo '{"fact": "\\ud83d"}'""",
            "unpaired surrogate",
        ),  # half an emoji: the job view could not show it
        ("printf '%*s' 100000 '' | tr ' ' '['", "nested deeper than 64 levels"),  # RecursionError
        (
            "printf '{\"a\": %s1%s}' $(printf '%*s' 70 '' | tr ' ' '[') $(printf '%*s' 70 '' | tr ' ' ']')",
            "nested deeper",
        ),
    ],
)
def test_skill_runner_malformed_script_output_fails_clearly(
    tmp_path: Path, stdout: str, message: str
) -> None:
    skill = make_skill(tmp_path, {"out.sh": stdout + "\n"})
    with pytest.raises(SkillFailedError, match=message):
        prepare(skill, {"text": "t"})


def test_skill_runner_unsandboxed_detects_writes_into_the_skill_folder(tmp_path: Path) -> None:
    skill = make_skill(tmp_path, {"tamper.sh": 'echo "evil" >> "$AIGW_SKILL_DIR/SKILL.md"\necho "{}"\n'})
    with pytest.raises(SkillFailedError, match="wrote into the skill's own folder"):
        prepare(skill, {"text": "t"}, SkillRunner(environ=ENV, sandbox=UNSANDBOXED))


def test_skill_runner_unsandboxed_detects_writes_above_the_working_directory(tmp_path: Path) -> None:
    skill = make_skill(tmp_path, {"escape.sh": "echo x > ../escaped.txt\necho '{}'\n"})
    with pytest.raises(SkillFailedError, match=r"wrote outside its working directory \(escaped.txt\)"):
        prepare(skill, {"text": "t"}, SkillRunner(environ=ENV, sandbox=UNSANDBOXED))


def test_skill_runner_skill_folder_and_everything_outside_the_work_directory_are_read_only(
    tmp_path: Path,
) -> None:
    script = (
        'echo "evil" >> "$AIGW_SKILL_DIR/SKILL.md" || echo "flag:skill-ro — refused"\n'
        "echo x > ../escaped.txt || echo \"flag:root-ro — refused\"\necho '{}'\n"
    )
    skill = make_skill(tmp_path, {"tamper.sh": script})
    before = (skill.root / "SKILL.md").read_bytes()
    prepared = prepare(skill, {"text": "t"})
    assert [flag["id"] for flag in prepared.risk_flags] == ["skill-ro", "root-ro"]
    assert (skill.root / "SKILL.md").read_bytes() == before


def test_skill_runner_unexecutable_script_fails_to_start_cleanly(tmp_path: Path) -> None:
    skill = make_skill(tmp_path, {"a.sh": "echo '{}'\n"})
    spec = skill.spec.model_copy(
        update={
            "aigw": skill.spec.aigw.model_copy(
                update={"scripts": [skill.spec.aigw.scripts[0].model_copy(update={"interpreter": None})]}
            )
        }
    )  # fmt: skip  (no interpreter and no executable bit)
    direct = Skill(spec, skill.root, skill.prompt, skill.script_args, skill.content_hash)
    with pytest.raises(SkillFailedError, match="a.sh: Permission denied"):
        prepare(direct, {"text": "t"})


def test_skill_runner_missing_template_variable_names_it_and_the_line(tmp_path: Path) -> None:
    skill = make_skill(tmp_path, {"a.sh": "echo '{}'\n"}, prompt="Text: {{ text }}\n{{ scan.files }}")
    with pytest.raises(SkillFailedError, match=r"SKILL\.md line 23: prompt: missing variable 'scan'"):
        prepare(skill, {"text": "t"})


def test_skill_runner_keeps_serving_while_scripts_hang_flood_and_fail(tmp_path: Path) -> None:
    """Many skills on one event loop: the good one finishes first; each bad one fails on its own."""
    runner = SkillRunner(environ=ENV, max_output_bytes=65_536)
    hang = make_skill(tmp_path / "hang", {"h.sh": "sleep 300\n"}, timeout=3)
    flood = make_skill(tmp_path / "flood", {"f.sh": "yes\n"})
    fail = make_skill(tmp_path / "fail", {"x.sh": "exit 1\n"})
    good = make_skill(tmp_path / "good", {"g.sh": "echo '{\"ok\": true}'\n"})

    async def scenario() -> tuple[list[Any], list[str]]:
        order: list[str] = []

        async def one(label: str, skill: Skill) -> PreparedSkill:
            try:
                return await runner.prepare(skill, {"text": "t"})
            finally:
                order.append(label)

        results = await asyncio.gather(
            one("hang", hang),
            one("flood", flood),
            one("fail", fail),
            one("good", good),
            return_exceptions=True,
        )
        return list(results), order

    results, order = asyncio.run(scenario())
    assert isinstance(results[0], SkillTimeoutError)
    assert isinstance(results[1], SkillFailedError) and "wrote more than" in str(results[1])
    assert isinstance(results[2], SkillFailedError) and results[2].exit_code == 1
    assert isinstance(results[3], PreparedSkill) and results[3].facts == {"ok": True}
    assert order[-1] == "hang" and order.index("good") < order.index("hang")


# --- the bundled pr-review-prep on a real git repository ------------------------------------------


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_skill_runner_pr_review_prep_scans_a_local_git_repository(world_readable_dir: Path) -> None:
    repo = world_readable_dir / "repo"  # readable by the sandbox's host uid when the tests run as root
    repo.mkdir()

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (repo / "README.md").write_text("hi\n")
    git("add", ".")
    git("commit", "-q", "-m", "base")
    git("checkout", "-q", "-b", "feature")
    (repo / "app").mkdir()
    (repo / "app" / "oauth_client.py").write_text("x = 1\n" * 30)
    (repo / "migrations").mkdir()
    (repo / "migrations" / "0002_users.py").write_text("y = 2\n" * 6)
    (repo / "tests").mkdir()
    (repo / "tests" / "test_oauth.py").write_text("assert True\n" * 5)
    git("add", ".")
    git("commit", "-q", "-m", "feature")

    skill = DiskSkills(SKILLS).load("pr-review-prep")
    with pytest.raises(SkillFailedError, match="is not a directory"):  # the sandbox shows no host path...
        prepare(skill, {"repo_path": str(repo), "base_ref": "main"})
    runner = SkillRunner(environ=ENV, sandbox=SandboxConfig(read_paths=[str(repo)]))  # ...unless configured
    prepared = prepare(skill, {"repo_path": str(repo), "base_ref": "main"}, runner)
    assert [f["id"] for f in prepared.risk_flags] == [
        "db-migration",
        "auth-change",
        "insufficient-test-coverage",
    ]
    scan = prepared.facts["scan"]
    assert scan["source"] == "git" and scan["code_lines_added"] == 36 and scan["test_lines_added"] == 5
    assert sorted(scan["files"]) == ["app/oauth_client.py", "migrations/0002_users.py", "tests/test_oauth.py"]
    with pytest.raises(SkillFailedError, match="base_ref 'nope' is not a commit"):
        prepare(skill, {"repo_path": str(repo), "base_ref": "nope"}, runner)


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A directory outside pytest's (mode 0700) temporary tree."""
    path = Path(tempfile.mkdtemp(prefix="aigw-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def assert_gone(pid: int) -> None:
    """The process no longer runs (a zombie waiting for init to reap it counts as gone)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    pytest.fail(f"process {pid} survived its script")
