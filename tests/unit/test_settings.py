"""Settings.from_environ: what aigw takes from the environment, read once at an entry point."""

from __future__ import annotations

from pathlib import Path

from gateway.settings import Settings


def test_settings_from_environ_picks_up_each_variable() -> None:
    environ = {
        "AIGW_HOME": "/srv/aigw",
        "REDIS_URL": "redis://redis.internal:6380/2",
        "AIGW_CONFIG": "/etc/aigw",
        "AIGW_LOG_LEVEL": "DEBUG",
        "OPENAI_API_KEY": "sk-test",
    }
    settings = Settings.from_environ(environ)
    assert settings.home == Path("/srv/aigw")
    assert settings.redis_url == "redis://redis.internal:6380/2"
    assert settings.config_dir == Path("/etc/aigw")
    assert settings.log_level == "DEBUG"
    assert settings.environ is environ  # names looked up at call time see the mapping itself


def test_settings_from_environ_defaults_when_unset_or_empty() -> None:
    for environ in ({}, {"AIGW_HOME": "", "REDIS_URL": "", "AIGW_CONFIG": "", "AIGW_LOG_LEVEL": ""}):
        settings = Settings.from_environ(environ)
        assert settings.home == Path.home() / ".aigw"
        assert (settings.redis_url, settings.config_dir, settings.log_level) == (None, None, None)


def test_settings_home_expands_the_user() -> None:
    assert Settings.from_environ({"AIGW_HOME": "~/state"}).home == Path.home() / "state"


def test_settings_repr_never_shows_the_environment() -> None:
    settings = Settings.from_environ({"OPENAI_API_KEY": "sk-secret-value"})
    assert "sk-secret-value" not in repr(settings)
