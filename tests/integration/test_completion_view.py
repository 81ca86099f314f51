"""A succeeded job's completion message carries its final view, and a woken long-poll answers with
it: the same bytes ``GET /v1/jobs/{id}`` reads from Redis afterwards (gateway/completion.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from gateway import completion, keys
from tests.fakes.provider import Fault
from tests.integration.harness import StartStack


class Messages:
    """Every message on the completion channel while the test runs, by job id."""

    def __init__(self, redis_url: str) -> None:
        self._pubsub = redis.Redis.from_url(redis_url).pubsub()  # type: ignore[no-untyped-call]
        self._pubsub.subscribe(keys.DONE_CHANNEL)
        self._pubsub.get_message(timeout=5)  # the subscribe confirmation: from here nothing is missed
        self.by_job: dict[str, list[bytes | None]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.1)
            if message and message["type"] == "message":
                job_id, view = completion.parse(message["data"])
                self.by_job.setdefault(job_id, []).append(view)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pubsub.close()


@pytest.fixture
def messages(redis_url: str) -> Iterator[Messages]:
    listener = Messages(redis_url)
    yield listener
    listener.close()


def _submit(client: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    response = client.post("/v1/jobs", params={"wait": "20"}, json=body)
    assert response.status_code == 200, response.text
    return response


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "hello"},
        {"prompt": "hello", "metadata": {"ticket": "T-1"}},
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
        {"prompt": "the same question twice", "cache": True},
    ],
    ids=["prompt", "metadata", "messages", "cached"],
)
def test_the_published_view_is_the_answer_and_what_a_read_returns(
    stack: StartStack, messages: Messages, body: dict[str, Any]
) -> None:
    api = stack().api
    with api.client() as client:
        answers = [_submit(client, body) for _ in range(2 if body.get("cache") else 1)]
        job_id = answers[-1].json()["id"]
        read = client.get(f"/v1/jobs/{job_id}")  # no wait: read from Redis
    (published,) = messages.by_job[job_id]
    assert published is not None  # a succeeded job's view rode in its message
    assert read.status_code == 200
    assert published == read.content == answers[-1].content
    view = json.loads(published)
    assert view["status"] == "succeeded" and view["result"]["output"]
    assert view["result"]["cached"] is bool(body.get("cache"))
    assert view.get("metadata", {}) == body.get("metadata", {})
    if view["result"]["draft"]:  # the shipped policies: every output is a draft awaiting review
        assert view["review"] == {"state": "pending"}


def test_a_long_poll_on_a_read_also_answers_with_the_published_view(
    stack: StartStack, messages: Messages
) -> None:
    s = stack()
    s.fake.script(Fault.timeout(1.0))  # the job is still running when the long-poll starts
    with s.api.client() as client:
        submitted = client.post("/v1/jobs", json={"prompt": "slowly"})
        assert submitted.status_code == 202
        job_id = submitted.json()["id"]
        waited = client.get(f"/v1/jobs/{job_id}", params={"wait": "20"})
        read = client.get(f"/v1/jobs/{job_id}")
    assert waited.json()["status"] == "succeeded"
    assert waited.content == read.content == messages.by_job[job_id][-1]


def test_a_failed_job_is_announced_by_id_and_read_with_its_error(
    stack: StartStack, messages: Messages
) -> None:
    s = stack()
    s.fake.script(Fault.status(400, message="bad request upstream"))  # not retryable
    with s.api.client() as client:
        failed = client.post("/v1/jobs", params={"wait": "20"}, json={"prompt": "fails"})
    view = failed.json()
    assert view["status"] == "failed" and view["error"]["type"]
    assert messages.by_job[view["id"]] == [None]  # the id alone: the API read the error and calls


def test_a_view_too_large_for_the_message_goes_by_reference(stack: StartStack, messages: Messages) -> None:
    s = stack()
    long_answer = " ".join(["x" * 999] * (completion.MAX_VIEW_BYTES // 1000 + 1))  # few long words
    s.fake.script(Fault.reply(long_answer))
    with s.api.client() as client:
        done = _submit(client, {"prompt": "a long answer", "max_tokens": 100_000})
        read = client.get(f"/v1/jobs/{done.json()['id']}")
    assert messages.by_job[done.json()["id"]] == [None]
    assert done.json()["result"]["output"] == long_answer
    assert done.content == read.content


def test_a_drop_in_call_answers_from_the_published_view(stack: StartStack, messages: Messages) -> None:
    api = stack().api
    with api.client() as client:
        response = client.post(
            "/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert response.status_code == 200, response.text
        job_id = response.json()["aigw"]["job_id"]
        read = client.get(f"/v1/jobs/{job_id}").json()
    assert messages.by_job[job_id][0] is not None
    assert response.json()["choices"][0]["message"]["content"] == read["result"]["output"]
    assert response.json()["usage"]["prompt_tokens"] == read["result"]["usage"]["input_tokens"]
