"""Notifications: a job's `notify` channels hear that it ended (and if it is a draft), never what it said."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.config import load_config
from gateway.errors import ConfigError
from tests.fakes.provider import FakeProvider, Fault
from tests.integration.harness import (
    ConfigFactory,
    Receiver,
    StartApi,
    StartStack,
    StartWorker,
    wait_until,
    with_channels,
)


def test_a_draft_is_announced_as_a_draft_signed_and_without_its_content(
    gateway_config: ConfigFactory, stack: StartStack, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPS_HOOK_SECRET", "s3cret-for-hmac")
    monkeypatch.setenv("SLACK_HOOK_URL", receiver.url + "/slack")
    config = with_channels(
        gateway_config(),  # the shipped policies: every output is a draft
        [
            {"type": "webhook", "name": "ops", "url": receiver.url, "secret_env": "OPS_HOOK_SECRET"},
            {"type": "slack", "name": "team", "url_env": "SLACK_HOOK_URL"},
        ],
    )
    api = stack(config).api
    with api.client() as client:
        body = {"prompt": "Draft the outage note", "notify": ["ops", "team"]}
        job = client.post("/v1/jobs", params={"wait": 15}, json=body).json()
    assert job["status"] == "succeeded"
    wait_until(lambda: len(receiver.received) == 2, "two notifications")
    by_kind = {"slack" if b"text" in raw else "webhook": (headers, raw) for headers, raw in receiver.received}
    headers, raw = by_kind["webhook"]
    event = json.loads(raw)
    assert event == {
        "event": "job.finished",
        "job_id": job["id"],
        "service": "svc-a",
        "status": "succeeded",
        "path": f"/v1/jobs/{job['id']}",
        "model": "general",
        "draft": True,
        "review": "pending",
    }
    expected = hmac.new(b"s3cret-for-hmac", raw, hashlib.sha256).hexdigest()
    assert headers["x-aigw-signature"] == f"sha256={expected}"
    slack = json.loads(by_kind["slack"][1])["text"]
    assert "DRAFT, pending review" in slack and job["id"] in slack
    assert all(b"outage note" not in raw and b"echo" not in raw for _h, raw in receiver.received)


def test_a_failed_job_is_announced_and_a_5xx_is_retried(
    gateway_config: ConfigFactory, stack: StartStack, fake: FakeProvider, receiver: Receiver
) -> None:
    receiver.fail_first = 1
    config = with_channels(
        gateway_config(jobs={"max_attempts": 1}, policies=[]),
        [{"type": "webhook", "name": "ops", "url": receiver.url}],
    )
    api = stack(config).api
    fake.script(Fault.status(400), model="gpt-fake")
    with api.client() as client:
        job = client.post(
            "/v1/jobs", params={"wait": 15}, json={"prompt": "x", "model": "openai", "notify": ["ops"]}
        ).json()
    assert job["status"] == "failed"
    wait_until(lambda: receiver.received, "the notification, on its second try")
    event = json.loads(receiver.received[0][1])
    assert (event["status"], event["error_type"]) == ("failed", "provider_bad_request")
    assert receiver.calls == 2


def test_unknown_or_cli_channels_are_refused_at_the_door(
    gateway_config: ConfigFactory, start_api: StartApi, receiver: Receiver
) -> None:
    config = with_channels(
        gateway_config(),
        [{"type": "cli", "name": "terminal"}, {"type": "webhook", "name": "ops", "url": receiver.url}],
    )
    api = start_api(config)
    with api.client() as client:
        for name in ("nope", "terminal"):
            response = client.post("/v1/jobs", json={"prompt": "x", "notify": [name]})
            assert response.status_code == 422
            assert f"notify: '{name}' is not a slack or webhook channel (known: ops)" in response.text
    assert receiver.calls == 0


@pytest.mark.parametrize(
    ("channel", "needle"),
    [
        ({"type": "slack", "name": "s", "url": "https://hooks.slack.com/services/T/B/X"}, "url_env"),
        ({"type": "webhook", "name": "w"}, "exactly one of url or url_env"),
        ({"type": "webhook", "name": "w", "url": "ftp://x"}, "url"),
        ({"type": "cli", "name": "c", "url": "http://127.0.0.1/x"}, "takes no url"),
    ],
)
def test_channel_config_errors_name_the_entry(config_dir: Path, channel: dict[str, Any], needle: str) -> None:
    (config_dir / "channels.yaml").write_text(yaml.safe_dump({"channels": [channel]}))
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir)
    assert str(caught.value).startswith(f"channels.yaml: channels[0] ({channel['name']})")
    assert needle in str(caught.value)


def test_notify_is_in_the_published_job_schema(gateway_config: ConfigFactory, start_api: StartApi) -> None:
    api = start_api(gateway_config())
    schema = httpx.get(f"{api.url}/openapi.json").json()["components"]["schemas"]["JobRequest"]
    assert schema["properties"]["notify"]["maxItems"] == 10


def test_a_channel_set_to_sign_never_sends_unsigned(
    gateway_config: ConfigFactory, stack: StartStack, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPS_HOOK_SECRET", raising=False)
    config = with_channels(
        gateway_config(policies=[]),
        [
            {"type": "webhook", "name": "signed", "url": receiver.url, "secret_env": "OPS_HOOK_SECRET"},
            {"type": "webhook", "name": "plain", "url": receiver.url + "/plain"},
        ],
    )
    api = stack(config).api
    with api.client() as client:
        body = {"prompt": "x", "notify": ["signed", "plain"]}
        assert client.post("/v1/jobs", params={"wait": 15}, json=body).json()["status"] == "succeeded"
    wait_until(lambda: receiver.received, "the unsigned channel's notification")
    assert receiver.calls == 1  # only "plain": "signed" has no secret, so it sent nothing


def test_a_queued_job_canceled_with_no_worker_running_is_announced_once_one_starts(
    gateway_config: ConfigFactory,
    start_api: StartApi,
    start_worker: StartWorker,
    receiver: Receiver,
) -> None:
    config = with_channels(
        gateway_config(policies=[]), [{"type": "webhook", "name": "ops", "url": receiver.url}]
    )
    api = start_api(config)
    with api.client() as client:
        job_id = client.post("/v1/jobs", json={"prompt": "never mind", "notify": ["ops"]}).json()["id"]
        assert client.delete(f"/v1/jobs/{job_id}").json()["status"] == "canceled"
    assert receiver.calls == 0  # no worker yet: the notification waits in the outbox
    start_worker(config)
    wait_until(lambda: receiver.received, "the outbox delivered by the worker that started later")
    event = json.loads(receiver.received[0][1])
    assert (event["job_id"], event["status"]) == (job_id, "canceled")
    assert receiver.calls == 1
