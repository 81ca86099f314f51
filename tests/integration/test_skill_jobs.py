"""Skill jobs end to end: API (contract at the door) -> worker (scripts, policies, model, contract).

Also the issue's acceptance test for versions: deploy and roll back while two workers run, and
every job reports the version and bundle hash that actually ran.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from gateway.config import Config, load_config
from gateway.skills import SkillRegistry, load_skill_dir
from gateway.store import JobStore
from tests.fakes.provider import FakeProvider, Fault
from tests.integration.harness import ConfigFactory, StartApi, StartStack, StartWorker, fake_models, submit

SKILLS = Path(__file__).parents[2] / "skills"
CLOUD, LOCAL = "claude-fake", "llama-fake"


@pytest.fixture
def skill_config(gateway_config: ConfigFactory, fake: FakeProvider) -> ConfigFactory:
    """The fake models, with the general (cloud) alias serving the bundled skills' task tags."""

    def make(**kwargs: Any) -> Config:
        models: dict[str, Any] = fake_models(fake.base_url)
        models["models"]["general"]["use_for"] = [
            "drafting", "summarization", "classification", "extraction", "code_review",
        ]  # fmt: skip
        models["models"]["openai"]["use_for"] = []
        config = gateway_config(models=models, **kwargs)
        gateway_file = Path(config.directory) / "gateway.yaml"
        settings = yaml.safe_load(gateway_file.read_text())
        settings.setdefault("skills", {"dir": str(SKILLS)})  # the bundled skills, read from disk
        gateway_file.write_text(yaml.safe_dump(settings))
        return load_config(config.directory)

    return make


def test_a_skill_job_runs_scripts_then_the_model_and_returns_checked_outputs(
    skill_config: ConfigFactory, stack: StartStack, fake: FakeProvider
) -> None:
    api = stack(skill_config(policies=[])).api
    fake.script(Fault.reply("bug"), model=CLOUD)
    inputs = {"text": "The app crashes on upload", "labels": ["bug", "feature-request", "question"]}
    job = submit(api, {"skill": "classify", "inputs": inputs}).json()
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["outputs"] == {"label": "bug"}
    assert result["skill"]["name"] == "classify" and result["skill"]["source"] == "disk"
    assert len(result["skill"]["bundle_sha256"]) == 64
    assert result["skill"]["scripts"][0]["exit_code"] == 0
    sent = fake.bodies_for(CLOUD)[0]
    assert "The app crashes on upload" in json.dumps(sent) and sent["max_tokens"] == 20  # the skill's cap


def test_pr_review_prep_flags_come_from_code_and_pass_through(
    skill_config: ConfigFactory, stack: StartStack, fake: FakeProvider
) -> None:
    api = stack(skill_config(policies=[])).api
    fake.script(Fault.reply("- [ ] review the migration"), model=CLOUD)
    inputs = {
        "changed_files": ["db/migrations/0042_add_index.sql", "config/settings.yaml", "src/app.py"],
        "code_lines_added": 120,
        "test_lines_added": 0,
    }
    job = submit(api, {"skill": "pr-review-prep", "inputs": inputs}).json()
    assert job["status"] == "succeeded", job
    flags = {f["id"] for f in job["result"]["outputs"]["risk_flags"]}
    assert {"db-migration", "config-change", "insufficient-test-coverage"} <= flags
    assert job["result"]["outputs"]["checklist"] == "- [ ] review the migration"
    assert set(job["result"]["skill"]["risk_flags"]) == flags


def test_an_answer_outside_the_contract_fails_the_attempt(
    skill_config: ConfigFactory, stack: StartStack, fake: FakeProvider
) -> None:
    api = stack(skill_config(policies=[], jobs={"max_attempts": 2})).api
    fake.script(Fault.reply("Feature request."), Fault.reply("maybe a bug?"), model=CLOUD)
    inputs = {"text": "Add dark mode", "labels": ["bug", "feature-request"]}
    job = submit(api, {"skill": "classify", "inputs": inputs}).json()
    assert job["status"] == "failed" and job["attempts"] == 2
    assert job["error"]["type"] == "skill_output_invalid" and "label" in job["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"skill": "classify", "inputs": {"labels": ["a"]}}, 422, "inputs.text"),
        ({"skill": "classify", "inputs": {"text": "x", "labels": "a"}}, 422, "inputs.labels"),
        ({"skill": "no-such-skill", "inputs": {}}, 404, "no-such-skill"),
        ({"skill": "../classify", "inputs": {}}, 422, "skill"),
        ({"skill": "classify@9.9.9", "inputs": {"text": "x", "labels": ["a"]}}, 404, "9.9.9"),
        ({"skill": "classify", "prompt": "also a prompt"}, 422, "exactly one of"),
        ({"prompt": "hi", "inputs": {"a": 1}}, 422, "'inputs' go with a 'skill'"),
    ],
)
def test_bad_skill_jobs_are_refused_at_the_door(
    skill_config: ConfigFactory, start_api: StartApi, body: dict[str, Any], status: int, needle: str
) -> None:
    api = start_api(skill_config(policies=[]))
    response = submit(api, body, wait=0)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]["message"]


def test_pii_in_skill_inputs_reaches_only_the_local_model(
    skill_config: ConfigFactory, stack: StartStack, fake: FakeProvider
) -> None:
    api = stack(skill_config()).api  # the seed article's three policies
    fake.script(Fault.reply("question"), model=LOCAL)
    inputs = {"text": "Why was card 4111 1111 1111 1111 charged twice?", "labels": ["bug", "question"]}
    job = submit(api, {"skill": "classify", "inputs": inputs}).json()
    assert job["status"] == "succeeded", job
    assert job["result"]["provider"] == "ollama" and job["result"]["outputs"] == {"label": "question"}
    assert fake.count(CLOUD) == 0 and "4111" in json.dumps(fake.bodies_for(LOCAL))
    routed = next(d for d in job["result"]["policy"] if d.get("findings"))
    assert {f["where"] for f in routed["findings"]} >= {"inputs.text"}


def test_deploy_and_rollback_take_effect_on_two_running_workers(
    skill_config: ConfigFactory,
    start_api: StartApi,
    start_worker: StartWorker,
    fake: FakeProvider,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    work = tmp_path / "skills"
    shutil.copytree(SKILLS / "classify", work / "classify")
    config = skill_config(policies=[])
    gateway_file = Path(config.directory) / "gateway.yaml"
    settings = yaml.safe_load(gateway_file.read_text())
    settings["skills"] = {"source": "registry", "dir": str(work)}
    gateway_file.write_text(yaml.safe_dump(settings))
    config = skill_config(policies=[])
    api = start_api(config)
    start_worker(config, concurrency=5)
    start_worker(config, concurrency=5)
    registry = SkillRegistry(redis_client, tmp_path / "deploy-cache")
    inputs = {"text": "It crashes", "labels": ["bug", "question"]}

    def versions_of(n: int) -> set[str]:
        fake.script(*[Fault.reply("bug")] * n, model=CLOUD)
        with api.client() as client:
            ids = [
                client.post("/v1/jobs", json={"skill": "classify", "inputs": inputs}).json()["id"]
                for _ in range(n)
            ]
            jobs = [client.get(f"/v1/jobs/{i}", params={"wait": 20}).json() for i in ids]
        assert all(j["status"] == "succeeded" for j in jobs), jobs
        return {
            f"{j['result']['skill']['version']}:{j['result']['skill']['bundle_sha256'][:12]}" for j in jobs
        }

    assert submit(api, {"skill": "classify", "inputs": inputs}, wait=0).status_code == 404  # not deployed
    first = registry.deploy(load_skill_dir(work / "classify"))
    v1 = f"1.0.0:{first.deployed.sha256[:12]}"
    assert versions_of(6) == {v1}
    skill_md = work / "classify" / "SKILL.md"
    skill_md.write_text(skill_md.read_text().replace("version: 1.0.0", "version: 1.1.0", 1))
    second = registry.deploy(load_skill_dir(work / "classify"))
    v2 = f"1.1.0:{second.deployed.sha256[:12]}"
    assert versions_of(6) == {v2}  # no restart: both workers run the new version
    registry.rollback("classify")
    assert versions_of(6) == {v1}
    fake.script(Fault.reply("bug"), model=CLOUD)
    pinned = submit(api, {"skill": "classify@1.1.0", "inputs": inputs}).json()
    assert pinned["result"]["skill"]["version"] == "1.1.0"


NOTIFY_SKILL = """---
name: notify
description: Write a one-line message and deliver it (the delivery is a side effect)
version: 0.1.0
inputs:
  topic: {type: string}
  target: {type: string, description: where the delivery script appends the message}
outputs:
  message: string
metadata:
  aigw:
    requires:
      bins: [python3]
    scripts:
      - run: scripts/deliver.py
        interpreter: python3
        side_effects: true
    model: general
---
# notify

## Prompt

Write one line about {{ topic }}.
"""

DELIVER = """import json, sys
context = json.load(sys.stdin)
with open(context["target"], "a") as out:
    out.write(context["outputs"]["message"] + "\\n")
"""


@pytest.fixture
def notify_config(skill_config: ConfigFactory, tmp_path: Path) -> ConfigFactory:
    folder = tmp_path / "dev-skills" / "notify"
    (folder / "scripts").mkdir(parents=True)
    (folder / "SKILL.md").write_text(NOTIFY_SKILL)
    (folder / "scripts" / "deliver.py").write_text(DELIVER)

    def make(policies: list[dict[str, Any]]) -> Config:
        config = skill_config(policies=policies)
        gateway_file = Path(config.directory) / "gateway.yaml"
        settings = yaml.safe_load(gateway_file.read_text())
        # deliver.py acts on the world by appending to a host file, which a sandboxed script cannot
        # reach: these tests are about when side effects run, so the skill is trusted (the opt-out)
        settings["skills"] = {"source": "disk", "dir": str(folder.parent), "sandbox": "none"}
        gateway_file.write_text(yaml.safe_dump(settings))
        return load_config(config.directory)

    return make


def test_side_effect_steps_wait_for_approval_under_the_drafts_policy(
    notify_config: ConfigFactory,
    stack: StartStack,
    fake: FakeProvider,
    tmp_path: Path,
    redis_url: str,
) -> None:
    api = stack(notify_config([{"name": "drafts", "rule": "all_outputs_are_drafts"}])).api
    outbox = tmp_path / "outbox.txt"
    fake.script(Fault.reply("Release 2.0 ships Friday"), Fault.reply("Nothing to report"), model=CLOUD)
    approved = submit(api, {"skill": "notify", "inputs": {"topic": "release", "target": str(outbox)}}).json()
    rejected = submit(api, {"skill": "notify", "inputs": {"topic": "other", "target": str(outbox)}}).json()
    assert approved["result"]["skill"]["held"] == ["deliver.py"] and approved["review"]["state"] == "pending"
    assert not outbox.exists()  # nothing left the building before a human looked
    with api.client() as client:
        review = client.post(f"/v1/jobs/{approved['id']}/review", json={"decision": "approve"}).json()
        apply_id = review["review"]["apply_job"]
        applied = client.get(f"/v1/jobs/{apply_id}", params={"wait": 20}).json()
        assert (
            client.post(f"/v1/jobs/{rejected['id']}/review", json={"decision": "reject"}).status_code == 200
        )
    assert applied["status"] == "succeeded", applied
    assert applied["result"]["skill"]["applied"] == ["deliver.py"]
    assert applied["result"]["skill"]["approved_job"] == approved["id"]
    assert outbox.read_text() == "Release 2.0 ships Friday\n"  # the rejected draft was never delivered
    # a second apply of the same draft (a requeue after a crash, say) never repeats the steps
    store = JobStore(redis.Redis.from_url(redis_url), api.config)
    store._enqueue_apply(approved["id"], "second-apply", store.view(approved["id"], None))
    with api.client() as client:
        again = client.get("/v1/jobs/second-apply", params={"wait": 20}).json()
    assert again["status"] == "failed" and "already started once" in again["error"]["message"]
    assert outbox.read_text() == "Release 2.0 ships Friday\n"


def test_side_effect_steps_run_after_the_model_when_outputs_are_not_drafts(
    notify_config: ConfigFactory, stack: StartStack, fake: FakeProvider, tmp_path: Path
) -> None:
    api = stack(notify_config([])).api
    outbox = tmp_path / "outbox.txt"
    fake.script(Fault.reply("Deploy done"), model=CLOUD)
    job = submit(api, {"skill": "notify", "inputs": {"topic": "deploy", "target": str(outbox)}}).json()
    assert job["status"] == "succeeded", job
    assert job["result"]["skill"]["applied"] == ["deliver.py"] and "held" not in job["result"]["skill"]
    assert outbox.read_text() == "Deploy done\n"


def test_skill_policies_cap_tokens_and_refuse_skills_a_service_may_not_use(
    skill_config: ConfigFactory, stack: StartStack, fake: FakeProvider
) -> None:
    config = skill_config(
        policies=[
            {"name": "short", "rule": "max_tokens", "limit": 10},
            {"name": "only_classify", "rule": "allow_skills", "skills": ["classify"]},
        ]
    )
    api = stack(config).api
    refused = submit(api, {"skill": "summarize", "inputs": {"text": "a b c"}}, wait=0)
    assert refused.status_code == 403 and "may not use skill summarize" in refused.json()["error"]["message"]
    fake.script(Fault.reply("bug"), model=CLOUD)
    job = submit(
        api, {"skill": "classify", "inputs": {"text": "crash", "labels": ["bug", "question"]}}
    ).json()
    assert job["status"] == "succeeded", job
    assert fake.bodies_for(CLOUD)[-1]["max_tokens"] == 10  # the skill asks 20; the policy caps it


def test_an_approved_draft_does_not_run_code_that_changed_since_review(
    notify_config: ConfigFactory, stack: StartStack, fake: FakeProvider, tmp_path: Path
) -> None:
    api = stack(notify_config([{"name": "drafts", "rule": "all_outputs_are_drafts"}])).api
    outbox = tmp_path / "outbox.txt"
    fake.script(Fault.reply("Reviewed text"), model=CLOUD)
    draft = submit(api, {"skill": "notify", "inputs": {"topic": "x", "target": str(outbox)}}).json()
    script = tmp_path / "dev-skills" / "notify" / "scripts" / "deliver.py"
    script.write_text(script.read_text() + "# edited after the review\n")
    with api.client() as client:
        review = client.post(f"/v1/jobs/{draft['id']}/review", json={"decision": "approve"}).json()
        applied = client.get(f"/v1/jobs/{review['review']['apply_job']}", params={"wait": 20}).json()
    assert applied["status"] == "failed" and "changed since job" in applied["error"]["message"]
    assert not outbox.exists()


def test_a_paid_call_counts_against_the_budget_even_when_the_attempt_fails(
    skill_config: ConfigFactory, stack: StartStack, fake: FakeProvider, redis_client: redis.Redis
) -> None:
    from gateway.limits import SpendLedger

    config = skill_config(
        policies=[{"name": "daily", "rule": "budget", "limit_usd": 5}], jobs={"max_attempts": 1}
    )
    api = stack(config).api
    fake.script(Fault.reply("jane.doe@example.com"), model=CLOUD)  # outside the labels, and PII
    job = submit(api, {"skill": "classify", "inputs": {"text": "x", "labels": ["bug", "question"]}}).json()
    assert job["status"] == "failed" and job["error"]["type"] == "skill_output_invalid"
    assert "jane.doe" not in job["error"]["message"] and "[EMAIL_1]" in job["error"]["message"]
    spent = SpendLedger(redis_client).state("daily:svc-a", "day", 5).spent_usd
    assert spent > 0  # the model answered and was paid for; a failed contract does not make it free
