"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright's Python
package through that executable; ``.ci/run`` installs it): the login link opens the page, a job
just run shows, a failed job is retried from the page and then succeeds, a draft is approved from
the page, and a value that looks like HTML stays text. With AIGW_DASHBOARD_SCREENSHOT=1 it
retakes docs/img/dashboard.png.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import redis

from gateway.audit import AuditWriter
from gateway.dashboard import sessions
from tests.fakes.provider import FakeProvider, Fault
from tests.integration.harness import StartStack, submit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: where the screenshot goes: docs/img/dashboard.png when AIGW_DASHBOARD_SCREENSHOT=1 (retaking the
#: docs' picture on purpose), else the test's own temporary directory, so a run leaves the tree clean
DOCS_SCREENSHOT = Path(__file__).parents[2] / "docs" / "img" / "dashboard.png"
#: what the page must show as text: markup in a prompt comes back in the fake provider's echo
MARKUP = '<img src=x onerror="document.title=1">'

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium on PATH: `apt-get install chromium` (.ci/run does it)"
    ),
]


def test_the_dashboard_in_chromium(
    stack: StartStack, fake: FakeProvider, redis_client: redis.Redis, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    api = stack().api
    fake.script(Fault.status(400, message="scripted refusal"), model="gpt-fake")
    failed_id = submit(api, {"prompt": "fails, then works", "model": "openai"}).json()["id"]
    for i in range(4):
        submit(api, {"prompt": f"background job {i}"})
    draft_id = submit(api, {"prompt": MARKUP}).json()["id"]
    # the audit writer (`aigw up` runs one) puts the events in the log the charts read
    with AuditWriter(redis_client, Path(os.environ["AIGW_HOME"]) / "audit.log", consumer="t") as writer:
        writer.run_once()
    link = f"{api.url}/dashboard#login={sessions.create_login(redis_client)}"

    assert CHROMIUM is not None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(link)
            expect(page.locator(f'#jobs tr[data-job-id="{draft_id}"]')).to_be_visible()
            assert "#login" not in page.url  # the used link is gone from the address bar and history
            expect(page.locator("#viewer")).to_have_text("operator")
            cookies = page.context.cookies()
            assert [(c["httpOnly"], c["sameSite"]) for c in cookies] == [(True, "Strict")]

            # markup in a job's output is shown as text, never parsed
            draft = page.locator(f'#drafts div[data-job-id="{draft_id}"]')
            expect(draft.locator("pre")).to_contain_text(MARKUP)
            assert page.locator("#drafts img").count() == 0
            assert page.title() == "aigw dashboard"

            page.locator(f'#failed tr[data-job-id="{failed_id}"] button[data-action="retry"]').click()
            expect(page.locator(f'#jobs tr[data-job-id="{failed_id}"]')).to_have_attribute(
                "data-status", "succeeded", timeout=20_000
            )
            expect(page.locator(f'#failed tr[data-job-id="{failed_id}"]')).to_have_count(0)

            draft.locator('button[data-action="approve"]').click()
            expect(page.locator("#flash")).to_contain_text(f"job {draft_id} approved")
            expect(draft).to_have_count(0)
            with api.client() as client:
                assert client.get(f"/v1/jobs/{draft_id}").json()["review"]["state"] == "approved"

            expect(page.locator("#chart-throughput svg polyline").first).to_be_attached()
            page.locator("#flash").evaluate("node => { node.hidden = true; }")
            shot = (
                DOCS_SCREENSHOT
                if os.environ.get("AIGW_DASHBOARD_SCREENSHOT") == "1"
                else tmp_path / "page.png"
            )
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
            assert not errors, errors
        finally:
            browser.close()
