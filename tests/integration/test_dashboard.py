"""The dashboard's JSON and its access rules, against a real API, worker and Redis.

No session is a 401; a one-time link opens one session and never a second; a link expires; a
service token sees only its own jobs; actions need the session and the page's CSRF header; a
retry and a review from the dashboard do what the CLI's do.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import redis
from typer.testing import CliRunner

from gateway import keys
from gateway.api.dashboard import COOKIE
from gateway.cli import app
from gateway.dashboard import sessions
from gateway.services import ServiceRegistry, hash_token
from tests.fakes.provider import FakeProvider, Fault
from tests.integration.harness import Api, StartStack, submit, wait_until

ACTION = {"X-Aigw-Dashboard": "1"}
READS = ("me", "overview", "jobs", "failed", "drafts", "anomalies")


def browser(api: Api) -> httpx.Client:
    return httpx.Client(base_url=api.url, timeout=30)


@contextmanager
def operator(api: Api, connection: redis.Redis) -> Iterator[httpx.Client]:
    """A client holding an operator's session, opened by a one-time link."""
    with browser(api) as client:
        link = sessions.create_login(connection)
        answer = client.post("/dashboard/api/session", json={"link": link}, headers=ACTION)
        assert answer.status_code == 200, answer.text
        yield client


def test_without_a_session_every_endpoint_is_401(stack: StartStack) -> None:
    api = stack().api
    with browser(api) as client:
        for name in READS:
            answer = client.get(f"/dashboard/api/{name}")
            assert answer.status_code == 401, name
            assert answer.json()["error"]["type"] == "authentication_error"
        assert client.post("/dashboard/api/jobs/x/retry", headers=ACTION).status_code == 401
        assert (
            client.post(
                "/dashboard/api/jobs/x/review", json={"decision": "approve"}, headers=ACTION
            ).status_code
            == 401
        )
        bad = client.get("/dashboard/api/jobs", headers={"Authorization": "Bearer aigw_not-a-token"})
        assert bad.status_code == 401


def test_a_login_link_opens_one_session_once(stack: StartStack, redis_client: redis.Redis) -> None:
    api = stack().api
    link = sessions.create_login(redis_client)
    with browser(api) as client:
        answer = client.post("/dashboard/api/session", json={"link": link}, headers=ACTION)
        assert answer.status_code == 200
        assert answer.json() == {"role": "operator", "service": None}
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/dashboard" in cookie
        assert client.get("/dashboard/api/me").json()["role"] == "operator"
        # Redis holds hashes only: neither the link's token nor the cookie is stored as such
        session_value = client.cookies[COOKIE]
        names = [str(keys.text(k)) for k in redis_client.keys("aigw:dashboard:*")]
        stored = " ".join(names + [str(keys.text(redis_client.get(k))) for k in names]).encode()
        assert link.encode() not in stored and session_value.encode() not in stored
        assert redis_client.exists(keys.dashboard_session(hash_token(session_value)))
    with browser(api) as again:
        second = again.post("/dashboard/api/session", json={"link": link}, headers=ACTION)
        assert second.status_code == 401
        assert "used already or has expired" in second.json()["error"]["message"]
        assert again.get("/dashboard/api/me").status_code == 401


def test_a_login_link_expires(stack: StartStack, redis_client: redis.Redis) -> None:
    api = stack().api
    lifetime = 0.3
    made = time.time()
    link = sessions.create_login(redis_client, seconds=lifetime)
    key = keys.dashboard_login(hash_token(link))
    wait_until(lambda: time.time() > made + lifetime and not redis_client.exists(key), "the link to expire")
    with browser(api) as client:
        answer = client.post("/dashboard/api/session", json={"link": link}, headers=ACTION)
    assert answer.status_code == 401


def test_a_service_token_sees_only_its_own_jobs(stack: StartStack, redis_client: redis.Redis) -> None:
    api = stack().api
    other = ServiceRegistry(redis_client, api.config).create_token("svc-b")
    mine = submit(api, {"prompt": "from a"}).json()["id"]
    theirs = submit(api, {"prompt": "from b"}, token=other).json()["id"]
    with browser(api) as client:
        as_b = client.get("/dashboard/api/jobs", headers={"Authorization": f"Bearer {other}"}).json()["jobs"]
        assert [j["id"] for j in as_b] == [theirs]
        assert {j["service"] for j in as_b} == {"svc-b"}
        drafts_b = client.get("/dashboard/api/drafts", headers={"Authorization": f"Bearer {other}"}).json()
        assert [j["id"] for j in drafts_b["jobs"]] == [theirs]
    with operator(api, redis_client) as client:
        everyone = {j["id"] for j in client.get("/dashboard/api/jobs").json()["jobs"]}
        assert {mine, theirs} <= everyone
    # a service's own token opens a session limited to that service, too
    with browser(api) as client:
        answer = client.post("/dashboard/api/session", json={"token": other}, headers=ACTION)
        assert answer.json() == {"role": "service", "service": "svc-b"}
        assert [j["id"] for j in client.get("/dashboard/api/jobs").json()["jobs"]] == [theirs]
        refused = client.post(
            f"/dashboard/api/jobs/{mine}/review", json={"decision": "approve"}, headers=ACTION
        )
        assert refused.status_code == 404  # another service's job: not found, as on /v1


def test_actions_need_the_csrf_header_and_the_pages_origin(
    stack: StartStack, redis_client: redis.Redis
) -> None:
    api = stack().api
    job_id = submit(api, {"prompt": "a draft"}).json()["id"]
    path = f"/dashboard/api/jobs/{job_id}/review"
    with operator(api, redis_client) as client:
        assert client.post(path, json={"decision": "approve"}).status_code == 401
        foreign = {**ACTION, "Origin": "http://evil.example"}
        assert client.post(path, json={"decision": "approve"}, headers=foreign).status_code == 401
        own = {**ACTION, "Origin": api.url}
        answer = client.post(path, json={"decision": "approve"}, headers=own)
        assert answer.status_code == 200, answer.text
        assert answer.json()["review"] == "approved"
    # a bearer token alone does not act through the dashboard (it has /v1/jobs/{id}/review)
    with browser(api) as client:
        bearer = {**ACTION, "Authorization": f"Bearer {api.token}"}
        assert client.post(path, json={"decision": "reject"}, headers=bearer).status_code == 401


def test_retry_and_review_from_the_dashboard(
    stack: StartStack, fake: FakeProvider, redis_client: redis.Redis
) -> None:
    api = stack().api
    fake.script(Fault.status(400, message="scripted refusal"), model="gpt-fake")
    failed_id = submit(api, {"prompt": "fails once", "model": "openai"}).json()["id"]
    draft_id = submit(api, {"prompt": "a draft to approve"}).json()["id"]
    with operator(api, redis_client) as client:
        failed = client.get("/dashboard/api/failed").json()["jobs"]
        assert [j["id"] for j in failed] == [failed_id]
        assert failed[0]["error"]["type"] == "provider_bad_request"
        drafts = client.get("/dashboard/api/drafts").json()["jobs"]
        assert draft_id in [j["id"] for j in drafts]
        assert all(j["output"] for j in drafts)
        retried = client.post(f"/dashboard/api/jobs/{failed_id}/retry", headers=ACTION)
        assert retried.status_code == 200, retried.text
        with api.client() as v1:
            wait_until(lambda: v1.get(f"/v1/jobs/{failed_id}").json()["status"] == "succeeded", "the retry")
        again = client.post(f"/dashboard/api/jobs/{failed_id}/retry", headers=ACTION)
        assert again.status_code == 409
        assert client.get("/dashboard/api/failed").json()["jobs"] == []
        approved = client.post(
            f"/dashboard/api/jobs/{draft_id}/review", json={"decision": "approve"}, headers=ACTION
        )
        assert approved.json()["review"] == "approved"
        with api.client() as v1:
            assert v1.get(f"/v1/jobs/{draft_id}").json()["review"]["by"] == "operator"
        assert draft_id not in [j["id"] for j in client.get("/dashboard/api/drafts").json()["jobs"]]
        twice = client.post(
            f"/dashboard/api/jobs/{draft_id}/review", json={"decision": "reject"}, headers=ACTION
        )
        assert twice.status_code == 409


def test_recent_jobs_and_overview(stack: StartStack, redis_client: redis.Redis) -> None:
    api = stack().api
    job_id = submit(api, {"prompt": "hello"}).json()["id"]
    with operator(api, redis_client) as client:
        jobs = client.get("/dashboard/api/jobs", params={"limit": 5}).json()["jobs"]
        row = next(j for j in jobs if j["id"] == job_id)
        assert row["status"] == "succeeded" and row["service"] == "svc-a" and row["model"] == "general"
        drafts_rule = next(d for d in row["policy"] if d["policy"] == "no_autonomous_actions")
        assert drafts_rule["outcome"] == "mark_draft" and drafts_rule["reason"]
        assert "request" not in row and "output" not in row  # a list never carries the prompt or answer
        overview = client.get("/dashboard/api/overview").json()
        assert {q["name"] for q in overview["queues"]} == set(api.config.gateway.queues)
        assert overview["workers"], "the stack's worker is live"
        assert len(overview["minutes"]) == 60
        assert set(overview["cost"]) == {"today", "7d"}
        assert client.get("/dashboard/api/jobs", params={"limit": 0}).status_code == 422
        assert client.get("/dashboard/api/jobs", params={"limit": 201}).status_code == 422


def test_the_page_and_its_assets_are_served_with_a_strict_policy(stack: StartStack) -> None:
    api = stack().api
    with browser(api) as client:
        page = client.get("/dashboard")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
            asset = client.get(f"/dashboard/static/{name}")
            assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert client.get("/dashboard/static/..%2Fseries.py").status_code == 404
        assert client.get("/dashboard/static/other.js").status_code == 404
        # the page puts data on screen with textContent only (the browser test shows it escaped)
        assert "innerHTML" not in client.get("/dashboard/static/app.js").text


def test_aigw_dashboard_print_url_prints_a_link_that_works(
    stack: StartStack, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = stack().api
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("AIGW_CONFIG", api.config.directory)
    result = CliRunner().invoke(app, ["dashboard", "--print-url", "--url", api.url])
    assert result.exit_code == 0, result.output
    link = result.stdout.strip()
    assert link.startswith(f"{api.url}/dashboard#login=aigwl_")
    token = link.split("#login=", 1)[1]
    with browser(api) as client:
        assert client.post("/dashboard/api/session", json={"link": token}, headers=ACTION).status_code == 200
