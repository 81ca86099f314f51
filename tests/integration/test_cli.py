"""The aigw command against a real Redis: config check, services, dead letters, audit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from gateway import keys
from gateway.audit import AuditWriter
from gateway.cli import app
from gateway.services import ServiceRegistry
from tests.fakes.provider import FakeProvider, Fault
from tests.integration.harness import ConfigFactory, StartApi, run_burst

runner = CliRunner()
WIDE = {"COLUMNS": "200"}  # rich tables fold long cells at the default 80 columns


@pytest.fixture
def cli_env(redis_url: str, config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("AIGW_CONFIG", str(config_dir))
    return {"REDIS_URL": redis_url, "AIGW_CONFIG": str(config_dir)}


def test_cli_config_check_reports_ok_and_errors(config_dir: Path) -> None:
    ok = runner.invoke(app, ["config", "check", str(config_dir)])
    assert ok.exit_code == 0 and "ok" in ok.output
    (config_dir / "gateway.yaml").write_text("api:\n  port: seventy\n")
    bad = runner.invoke(app, ["config", "check", str(config_dir)])
    assert bad.exit_code == 1
    assert "gateway.yaml" in bad.output and "api.port" in bad.output


def test_cli_service_add_rotate_remove(
    cli_env: dict[str, str], redis_client: redis.Redis, config_dir: Path
) -> None:
    from gateway.config import load_config

    registry = ServiceRegistry(redis_client, load_config(config_dir))
    added = runner.invoke(app, ["service", "add", "billing"])
    assert added.exit_code == 0
    token = added.output.strip()
    assert registry.authenticate(token) == "billing"
    rotated = runner.invoke(app, ["service", "rotate", "billing"]).output.strip()
    assert rotated != token
    fresh = ServiceRegistry(redis_client, load_config(config_dir))  # no lookup cache
    assert fresh.authenticate(rotated) == "billing"
    with pytest.raises(Exception, match="invalid service token"):
        fresh.authenticate(token)
    listed = runner.invoke(app, ["service", "list"])
    assert "billing" in listed.output
    assert runner.invoke(app, ["service", "remove", "billing"]).exit_code == 0
    assert redis_client.hlen("aigw:tokens") == 0
    assert runner.invoke(app, ["service", "add", "../etc"]).exit_code == 1


def test_cli_service_rotate_of_a_typo_fails_like_remove(
    cli_env: dict[str, str], redis_client: redis.Redis
) -> None:
    assert runner.invoke(app, ["service", "add", "billing"]).exit_code == 0

    rotated = runner.invoke(app, ["service", "rotate", "biling"])
    removed = runner.invoke(app, ["service", "remove", "biling"])

    assert rotated.exit_code == removed.exit_code == 1
    assert "'biling' has no tokens" in rotated.output and "aigw service add biling" in rotated.output
    assert not redis_client.exists(keys.service_tokens("biling"))
    assert "biling" not in runner.invoke(app, ["service", "list"]).output


def test_cli_dead_letters_list_and_retry(
    cli_env: dict[str, str],
    gateway_config: ConfigFactory,
    start_api: StartApi,
    fake: FakeProvider,
    redis_url: str,
) -> None:
    fake.script(Fault.status(400), Fault.status(400), model="gpt-fake")
    config = gateway_config(jobs={"max_attempts": 1})
    api = start_api(config)
    with api.client() as client:
        ids = [
            client.post("/v1/jobs", json={"prompt": f"x{i}", "model": "openai"}).json()["id"]
            for i in range(2)
        ]
    run_burst(config, redis_url)
    assert runner.invoke(app, ["jobs", "failed"]).exit_code == 0  # the human table
    as_json = runner.invoke(app, ["jobs", "failed", "--json"]).output
    listed = [json.loads(line) for line in as_json.splitlines()]
    assert {job["id"] for job in listed} == set(ids)
    assert {job["error"]["type"] for job in listed} == {"provider_bad_request"}
    assert runner.invoke(app, ["jobs", "retry", ids[0]]).exit_code == 0
    assert runner.invoke(app, ["jobs", "retry", "--all-failed"]).exit_code == 0
    run_burst(config, redis_url)
    with api.client() as client:
        assert {client.get(f"/v1/jobs/{i}").json()["status"] for i in ids} == {"succeeded"}
    again = runner.invoke(app, ["jobs", "retry", ids[0]])
    assert again.exit_code == 1 and "not failed" in again.output
    assert runner.invoke(app, ["jobs", "retry"]).exit_code == 1


def test_cli_audit_tail_and_verify(
    cli_env: dict[str, str],
    gateway_config: ConfigFactory,
    start_api: StartApi,
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    config = gateway_config()
    api = start_api(config)
    with api.client() as client:
        client.post("/v1/jobs", json={"prompt": "audited"})
    run_burst(config, redis_url)
    path = tmp_path / "audit.log"
    AuditWriter(redis_client, path, consumer="t").run_once()
    tailed = runner.invoke(app, ["audit", "tail", "--path", str(path)])
    assert tailed.exit_code == 0 and '"status": "succeeded"' in tailed.output
    assert runner.invoke(app, ["audit", "verify", "--path", str(path)]).exit_code == 0
    path.write_text(path.read_text().replace('"succeeded"', '"failed"'))
    tampered = runner.invoke(app, ["audit", "verify", "--path", str(path)])
    assert tampered.exit_code == 1 and "line 1" in tampered.output


def test_cli_ask_without_a_token_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIGW_TOKEN", raising=False)
    result = runner.invoke(app, ["ask", "hello"])
    assert result.exit_code == 1
    assert "AIGW_TOKEN" in result.output


def test_cli_policy_explain_shows_decisions_and_chain_without_calling(
    cli_env: dict[str, str], fake: FakeProvider, tmp_path: Path
) -> None:
    result = runner.invoke(
        app, ["policy", "explain", "--service", "billing", "--prompt", "mail ann@example.org"], env=WIDE
    )
    assert result.exit_code == 0, result.output
    assert "sensitive_data_local" in result.output and "routed from general to sensitive" in result.output
    assert "sensitive/0:ollama" in result.output and "claude" not in result.output
    assert "ann@example.org" not in result.output
    assert "service 'billing' is not in services.yaml or Redis" in result.output  # a typo'd service
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"prompt": "plain text", "model": "openai", "max_tokens": 50}))
    as_json = runner.invoke(app, ["policy", "explain", "--service", "billing", "--file", str(job), "--json"])
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.output)
    assert report["model"] == "openai" and report["outcome"] == "accepted" and report["draft"] is True
    assert [s["deployment"] for s in report["chain"]] == ["openai/0:openai", "offline/0:offline"]
    assert fake.count() == 0
    bad = runner.invoke(
        app, ["policy", "explain", "--service", "billing", "--prompt", "x", "--model", "gpt9"]
    )
    assert bad.exit_code == 1 and "unknown model 'gpt9'" in bad.output


def test_cli_jobs_review_approves_a_draft_once(
    cli_env: dict[str, str], gateway_config: ConfigFactory, start_api: StartApi, redis_url: str
) -> None:
    config = gateway_config()
    monkey_env = {"AIGW_CONFIG": config.directory}
    api = start_api(config)
    with api.client() as client:
        job_id = client.post("/v1/jobs", json={"prompt": "draft it"}).json()["id"]
    run_burst(config, redis_url)
    first = runner.invoke(app, ["jobs", "review", job_id, "--approve", "--comment", "fine"], env=monkey_env)
    assert first.exit_code == 0 and f"job {job_id}: approved" in first.output
    again = runner.invoke(app, ["jobs", "review", job_id, "--reject"], env=monkey_env)
    assert again.exit_code == 1 and "already approved by cli" in again.output
    neither = runner.invoke(app, ["jobs", "review", job_id], env=monkey_env)
    assert neither.exit_code == 1 and "exactly one of --approve or --reject" in neither.output
