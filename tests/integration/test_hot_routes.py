"""The job routes answer the same whichever way a request reaches them: served straight from ASGI
(gateway/api/hot_routes.py, the ordinary request) or handed on to FastAPI (anything unusual)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.harness import StartStack


def _answer(response: httpx.Response) -> tuple[int, Any, str]:
    return response.status_code, response.json(), response.headers["content-type"]


def test_a_job_reads_the_same_whichever_way_the_query_is_spelled(stack: StartStack) -> None:
    api = stack().api
    with api.client() as client:
        done = client.post("/v1/jobs", params={"wait": "10"}, json={"prompt": "hello"})
        assert done.status_code == 200, done.text
        job_id = done.json()["id"]
        plain = client.get(f"/v1/jobs/{job_id}", params={"wait": "0"})  # served by the hot route
        spelled = client.get(f"/v1/jobs/{job_id}", params={"wait": "0e0"})  # by FastAPI's route
        other = client.get(f"/v1/jobs/{job_id}?unrelated=1")
    assert _answer(plain) == _answer(spelled) == _answer(other)
    assert plain.json() == done.json()


@pytest.mark.parametrize(
    "query", ["wait=-1", "wait=", "wait=soon", "wait=1&wait=2", "wait=nan"], ids=lambda q: q or "empty"
)
def test_a_bad_wait_is_the_same_422_on_both_job_routes(stack: StartStack, query: str) -> None:
    api = stack().api
    with api.client() as client:
        submitted = client.post(f"/v1/jobs?{query}", json={"prompt": "hello"})
        read = client.get(f"/v1/jobs/job-that-does-not-exist?{query}")
    if query == "wait=1&wait=2":  # a repeated scalar: FastAPI takes the last, a valid wait
        assert submitted.status_code in (200, 202) and read.status_code == 404
        return
    for response in (submitted, read):
        assert response.status_code == 422, response.text
        assert response.json()["error"]["type"] == "invalid_request"
        assert "wait" in response.json()["error"]["message"]


def test_errors_after_the_body_is_read_keep_the_envelope(stack: StartStack) -> None:
    api = stack().api
    with api.client() as client:
        bad_json = client.post("/v1/jobs", content=b"{not json")
        unknown = client.get("/v1/jobs/no-such-job")
        unknown_slow = client.get("/v1/jobs/no-such-job", params={"wait": "0.5"})
    assert bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "invalid_json"
    for response in (unknown, unknown_slow):
        assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"


def test_a_token_in_either_header_reaches_the_hot_route_and_a_bad_one_is_a_401(stack: StartStack) -> None:
    api = stack().api
    with httpx.Client(base_url=api.url, timeout=30) as client:
        by_key = client.post("/v1/jobs?wait=10", headers={"x-api-key": api.token}, json={"prompt": "hi"})
        headers = {"x-api-key": "wrong", "Authorization": f"Bearer {api.token}"}
        both = client.post("/v1/jobs", headers=headers, json={"prompt": "hi"})  # Authorization wins
        wrong = client.post("/v1/jobs", headers={"Authorization": "Bearer wrong"}, json={"prompt": "hi"})
        missing = client.get(f"/v1/jobs/{by_key.json()['id']}")
    assert by_key.status_code == 200 and by_key.json()["status"] == "succeeded"
    assert both.status_code in (200, 202)
    for response in (wrong, missing):
        assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
