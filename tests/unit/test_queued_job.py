"""QueuedJob: the queue payload is a type, strict, and survives RQ's JSON serializer unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from rq.serializers import JSONSerializer

from gateway.jobs import ApprovedDraft, JobRequest, QueuedJob


def _through_the_queue(queued: QueuedJob) -> dict[str, Any]:
    """What a worker gets back: the store's payload after RQ's JSON serializer both ways."""
    payload: dict[str, Any] = JSONSerializer.loads(JSONSerializer.dumps(queued.to_payload()))
    return payload


def test_queued_job_round_trips_a_submitted_job() -> None:
    request = JobRequest(
        prompt="hi", model="fast", notify=["ops"], metadata={"ticket": "7"}, idempotency_key="k-1"
    )
    admission = [{"rule": "daily", "outcome": "allow", "reason": "budget ok", "enforced": True}]
    queued = QueuedJob.submitted("svc-a", request, max_attempts=3, admission=admission)

    payload = _through_the_queue(queued)

    assert QueuedJob.model_validate(payload) == queued
    assert set(payload) == {"service", "request", "max_attempts", "submitted_at", "admission"}
    assert "idempotency_key" not in payload["request"]  # the API's business, not the worker's


def test_queued_job_round_trips_an_approved_drafts_follow_up() -> None:
    request = JobRequest(skill="triage@1.0.0", inputs={"text": "x", "note": None})
    approved = ApprovedDraft(job_id="abc", outputs={"label": "bug", "score": None}, bundle_sha256="f" * 64)
    queued = QueuedJob.submitted("svc-a", request, max_attempts=1, apply=approved)

    parsed = QueuedJob.model_validate(_through_the_queue(queued))

    assert parsed == queued
    assert parsed.apply is not None and parsed.apply.outputs == {"label": "bug", "score": None}


def test_queued_job_leaves_out_what_a_job_does_not_have() -> None:
    payload = QueuedJob.submitted("svc-a", JobRequest(prompt="hi"), max_attempts=1).to_payload()

    assert "apply" not in payload  # a worker tells a follow-up job by its presence
    assert payload["admission"] == []


@pytest.mark.parametrize("where", ["top", "request", "apply"])
def test_queued_job_refuses_an_unknown_field(where: str) -> None:
    payload = QueuedJob.submitted(
        "svc-a", JobRequest(prompt="hi"), max_attempts=1, apply=ApprovedDraft(job_id="abc", outputs={})
    ).to_payload()
    target = payload if where == "top" else payload[where]
    target["surprise"] = 1

    with pytest.raises(ValidationError, match="surprise"):
        QueuedJob.model_validate(payload)
