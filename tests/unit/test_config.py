"""Config loading: the shipped sample is valid, and every error names file, entry and field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import gateway
from gateway.config import load_config
from gateway.errors import ConfigError

SHIPPED = Path(__file__).parents[2] / "config"


def test_config_shipped_sample_is_valid() -> None:
    config = load_config(SHIPPED)
    assert config.models.default_model == "general"
    general = config.models.models["general"]
    assert general.deployments[0].provider == "anthropic"
    assert general.deployments[0].api_key_env == "ANTHROPIC_API_KEY"
    assert config.models.models["sensitive"].sensitive
    assert [p.rule for p in config.policies.policies] == [
        "all_outputs_are_drafts",
        "if_context_contains_pii_use_sensitive_model",
        "log_all_requests_and_responses",
    ]


def test_shipped_ollama_model_is_the_one_the_readme_tells_you_to_pull() -> None:
    """The sample once named `llama4:8b`, a tag Ollama does not have; the README's pull line and
    models.yaml must name the same model, and only the PII-only (sensitive) alias uses Ollama."""
    config = load_config(SHIPPED)
    on_ollama = {
        name: d.model for name, alias in config.models.models.items() for d in alias.deployments
        if d.provider == "ollama"
    }  # fmt: skip
    readme = (SHIPPED.parent / "README.md").read_text()

    assert list(on_ollama) == ["sensitive"] and config.models.models["sensitive"].sensitive
    assert f"ollama pull {on_ollama['sensitive']}" in readme
    name, _, tag = on_ollama["sensitive"].partition(":")
    assert name and tag and not tag.startswith("latest")  # a pinned tag, not whatever is newest


def _write(config_dir: Path, name: str, data: object) -> None:
    (config_dir / name).write_text(yaml.safe_dump(data))


def _models(config_dir: Path) -> dict[str, object]:
    loaded = yaml.safe_load((config_dir / "models.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda m: m["models"]["general"].update(colour="red"),
            ["models.yaml", "models.general", "colour", "unknown"],
        ),
        (
            lambda m: m["models"]["openai"].update(provider="bard"),
            ["models.yaml", "models.openai", "provider"],
        ),
        (
            lambda m: m["models"]["general"]["pricing"].update(output_per_mtok=-1),
            ["models.general", "output_per_mtok"],
        ),
        (lambda m: m["models"]["general"].update(fallbacks=["nope"]), ["models.yaml", "nope"]),
        (lambda m: m.update(default_model="missing"), ["models.yaml", "missing"]),
        (
            lambda m: m["models"]["general"].update(api_key_env="sk-live-123"),
            ["models.general", "api_key_env"],
        ),
    ],
)
def test_config_error_names_file_entry_and_field(
    config_dir: Path, mutate: object, expected: list[str]
) -> None:
    models = _models(config_dir)
    assert callable(mutate)
    mutate(models)
    _write(config_dir, "models.yaml", models)
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir)
    for part in expected:
        assert part in str(caught.value)


def test_config_invalid_yaml_names_the_line(config_dir: Path) -> None:
    (config_dir / "gateway.yaml").write_text("api:\n  port: [1\n")
    with pytest.raises(ConfigError, match=r"gateway.yaml: line \d+"):
        load_config(config_dir)


def test_config_a_key_given_twice_is_refused_naming_it_and_its_line(config_dir: Path) -> None:
    models = (config_dir / "models.yaml").read_text()
    first_alias = models.split("models:\n", 1)[1].split("\n", 1)[0]  # "  <alias>:" as written
    twice = models.replace("models:\n", f"models:\n{first_alias}\n    provider: offline\n    model: x\n", 1)
    (config_dir / "models.yaml").write_text(twice)
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir)
    message = str(caught.value)
    assert "models.yaml" in message and "given twice" in message and first_alias.strip(" :") in message
    assert re.search(r"line \d+", message)


def test_the_shipped_config_has_no_key_twice() -> None:
    sample = Path(gateway.__file__).parent / "sample_config"
    load_config(sample)  # would raise ConfigError naming the key


def test_config_unknown_policy_field_type_is_reported(config_dir: Path) -> None:
    _write(
        config_dir,
        "policies.yaml",
        {"policies": [{"name": "x", "rule": "block_secrets", "enforce": "sometimes"}]},
    )
    with pytest.raises(ConfigError, match=r"policies.yaml: policies\[0\] \(x\): enforce"):
        load_config(config_dir)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"rule": "budgt"}, ["policies[0] (p)", "rule", "unknown rule kind 'budgt'", "valid:", "budget"]),
        ({"rule": "budget"}, ["policies[0] (p)", "limit_usd", "Field required", "parameters of budget"]),
        ({"rule": "budget", "limit_usd": 5, "perod": "day"}, ["perod", "unknown parameter", "period"]),
        ({"rule": "budget", "limit_usd": 5, "period": "week"}, ["period", "'day' or 'month'"]),
        ({"rule": "rate_limit"}, ["set at least one of requests_per_minute"]),
        ({"rule": "allow_models", "models": ["gpt5"]}, ["models", "'gpt5' is not a model alias", "general"]),
        ({"rule": "max_tokens", "limit": 0}, ["limit", "greater than or equal to 1"]),
        (
            {"rule": "if_context_contains_pii_use_sensitive_model", "route_to": "general"},
            ["route_to", "'general' is not a sensitive model alias", "sensitive"],
        ),
        ({"rule": "block_secrets", "categories": ["email"]}, ["categories", "api_key"]),
        ({"rule": "redact_pii", "engine": "presidio"}, ["engine", "pip install presidio-analyzer"]),
        ({"rule": "block_secrets", "applies_to": {"models": ["nope"]}}, ["applies_to.models", "'nope'"]),
        ({"rule": "block_secrets", "applies_to": {"teams": ["x"]}}, ["applies_to.teams", "unknown field"]),
    ],
)
def test_config_policy_errors_name_the_entry_and_what_is_valid(
    config_dir: Path, policy: dict[str, object], expected: list[str]
) -> None:
    _write(config_dir, "policies.yaml", {"policies": [{"name": "p", **policy}]})
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir)
    assert str(caught.value).startswith("policies.yaml: ")
    for part in expected:
        assert part in str(caught.value)


def test_config_policy_names_are_unique(config_dir: Path) -> None:
    rule = {"name": "same", "rule": "block_secrets"}
    _write(config_dir, "policies.yaml", {"policies": [rule, rule]})
    with pytest.raises(ConfigError, match="repeated: same"):
        load_config(config_dir)


def test_config_missing_models_file_is_an_error(config_dir: Path) -> None:
    (config_dir / "models.yaml").unlink()
    with pytest.raises(ConfigError, match="models.yaml: file is missing"):
        load_config(config_dir)


def test_config_optional_files_default_when_absent(config_dir: Path) -> None:
    for name in ("gateway.yaml", "services.yaml", "policies.yaml", "channels.yaml"):
        (config_dir / name).unlink()
    config = load_config(config_dir)
    assert config.gateway.api.host == "127.0.0.1" and config.gateway.api.port == 18789
    assert set(config.gateway.queues) == {"interactive", "batch"}


def test_config_heartbeat_ttl_must_outlive_two_heartbeats(config_dir: Path) -> None:
    gateway = yaml.safe_load((config_dir / "gateway.yaml").read_text())
    gateway["workers"].update({"heartbeat_interval": 5, "heartbeat_ttl": 6})
    _write(config_dir, "gateway.yaml", gateway)
    with pytest.raises(ConfigError, match="gateway.yaml: workers.*heartbeat_ttl"):
        load_config(config_dir)


@pytest.mark.parametrize("intervals", [[], [-1]])
def test_config_retry_intervals_are_checked(config_dir: Path, intervals: list[int]) -> None:
    gateway = yaml.safe_load((config_dir / "gateway.yaml").read_text())
    gateway["jobs"]["retry_intervals"] = intervals
    _write(config_dir, "gateway.yaml", gateway)
    with pytest.raises(ConfigError, match="jobs.retry_intervals"):
        load_config(config_dir)


def test_retry_schedule_starts_at_the_first_interval_and_repeats_the_last() -> None:
    from gateway.store import retry_schedule

    assert retry_schedule([1, 5, 30], 3) == [1, 5]
    assert retry_schedule([1, 5], 5) == [1, 5, 5, 5]


def test_every_bundled_skill_routes_with_the_shipped_models() -> None:
    from gateway.skills import discover

    config = load_config(SHIPPED)
    skills = discover(SHIPPED.parent / "skills")
    assert {s.name for s in skills} >= {"pr-review-prep", "summarize", "classify", "extract"}
    for skill in skills:
        alias = config.models.resolve_alias(skill.spec.aigw.model, skill.spec.aigw.task)
        assert alias in config.models.models, skill.name


@pytest.mark.parametrize(
    ("sandbox", "expected"),
    [
        ("off", "gateway.yaml: skills.sandbox: mode: Input should be 'bwrap' or 'none'"),
        (
            {"limits": {"memory_mb": 1}},
            "gateway.yaml: skills.sandbox: limits.memory_mb: Input should be greater",
        ),
        (
            {"read_paths": ["repos"]},
            "gateway.yaml: skills.sandbox: read_paths: 'repos' must be an absolute path",
        ),
        ({"network": True}, "gateway.yaml: skills.sandbox: network: "),
    ],
)
def test_config_sandbox_errors_name_the_field(config_dir: Path, sandbox: object, expected: str) -> None:
    _write(config_dir, "gateway.yaml", {"skills": {"sandbox": sandbox}})
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir)
    assert str(caught.value).startswith(expected), str(caught.value)


def test_config_sandbox_none_is_the_explicit_opt_out(config_dir: Path) -> None:
    _write(config_dir, "gateway.yaml", {"skills": {"sandbox": "none"}})
    assert load_config(config_dir).gateway.skills.sandbox.mode == "none"
    _write(config_dir, "gateway.yaml", {})
    assert load_config(config_dir).gateway.skills.sandbox.mode == "bwrap"


def test_api_trusted_proxies_are_addresses_or_networks_never_a_wildcard(config_dir: Path) -> None:
    from gateway.api.server import uvicorn_config

    shipped = load_config(config_dir).gateway.api
    served = uvicorn_config(object(), shipped)
    assert shipped.trusted_proxies == [] and served.proxy_headers is False  # X-Forwarded-For ignored
    assert served.limit_concurrency == shipped.max_connections

    gateway = yaml.safe_load((config_dir / "gateway.yaml").read_text())
    gateway["api"]["trusted_proxies"] = ["10.1.2.3/8", "::1", "192.0.2.7"]
    _write(config_dir, "gateway.yaml", gateway)
    api = load_config(config_dir).gateway.api
    assert api.trusted_proxies == ["10.0.0.0/8", "::1", "192.0.2.7"]
    served = uvicorn_config(object(), api)
    assert served.proxy_headers is True and served.forwarded_allow_ips == api.trusted_proxies

    for bad in ("*", "proxy.internal", "10.0.0.0/99"):
        gateway["api"]["trusted_proxies"] = [bad]
        _write(config_dir, "gateway.yaml", gateway)
        with pytest.raises(ConfigError, match=r"gateway.yaml: api.trusted_proxies"):
            load_config(config_dir)
