"""Every Python snippet in docs/migrating.md runs: "before" against a fake vendor, "after" against aigw.

The fake provider stands in for the vendors (the SDKs read ``OPENAI_BASE_URL`` and
``ANTHROPIC_BASE_URL``); aigw's URL in a snippet is swapped for the running stack's. Each snippet
must print an answer, and an "after" snippet's answer must have come through the queue.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.fakes.provider import FakeProvider
from tests.integration.harness import FAKE_KEY, Stack, audit_events

DOC = Path(__file__).parents[2] / "docs" / "migrating.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
AIGW_URL = "http://localhost:18789"


def _models(base_url: str) -> dict[str, object]:
    """The vendors' real model names, served by the fake: code that names them works unchanged."""
    return {
        "default_model": "general",
        "models": {
            "general": {"provider": "anthropic", "model": "claude-sonnet-4-20250514", "api_base": base_url,
                        "api_key_env": "AIGW_TEST_ANTHROPIC_KEY", "use_for": ["summarization"]},
            "openai": {"provider": "openai", "model": "gpt-4o-mini", "api_base": f"{base_url}/v1",
                       "api_key_env": "AIGW_TEST_OPENAI_KEY"},
            "offline": {"provider": "offline", "model": "aigw-offline-1", "sensitive": True},
        },
    }  # fmt: skip


def test_the_page_has_before_and_after_snippets_for_each_way() -> None:
    assert len(SNIPPETS) >= 6
    assert sum(AIGW_URL in snippet for snippet in SNIPPETS) >= 5


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_snippet_runs(
    index: int,
    stack: Callable[..., Stack],
    fake: FakeProvider,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = stack(policies=[], models=_models(fake.base_url))
    monkeypatch.setenv("AIGW_TOKEN", s.api.token)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{s.fake.base_url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)  # the "vendor" key the fake accepts
    monkeypatch.setenv("ANTHROPIC_BASE_URL", s.fake.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    snippet = SNIPPETS[index]
    through_aigw = AIGW_URL in snippet
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet.replace(AIGW_URL, s.api.url), f"docs/migrating.md#{index}", "exec"), {})
    printed = out.getvalue()
    assert "echo:" in printed  # the (fake) model's answer reached the snippet
    assert bool(audit_events(redis_client)) == through_aigw  # only the "after" ones went through aigw
    assert s.fake.count() >= 1
