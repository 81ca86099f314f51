"""The completion message: what a worker publishes on ``keys.DONE_CHANNEL`` when a job ends.

A bare job id says "it ended, read it". For a job that succeeded, the worker also sends the job's
final view, written as ``GET /v1/jobs/{id}`` would answer it (the same model, fields and JSON
writer), so a long-poll that is woken answers with those bytes and needs no second read of the
job: one Redis round trip less per job, and the API skips decoding the stored result. Failures,
cancels and expiries send the id alone (their views carry history the API reads anyway), as does
a view over ``MAX_VIEW_BYTES``: every API process receives every message, so a large answer goes
by reference.

The message is ``<job id> <view JSON>``: job ids never hold a space (RQ's are UUIDs).
"""

from __future__ import annotations

from rq.job import Job
from rq.utils import utcformat

from gateway.jobs import JobResult, JobState, JobView

#: the largest view sent inside the message; a larger one is read from the job by the API
MAX_VIEW_BYTES = 32 * 1024
_SEPARATOR = b" "


def message(job_id: str, view: bytes | None = None) -> bytes:
    """The message that says ``job_id`` ended, with its final view when one is given."""
    if view is None or len(view) > MAX_VIEW_BYTES:
        return job_id.encode()
    return job_id.encode() + _SEPARATOR + view


def parse(data: bytes) -> tuple[str, bytes | None]:
    """(job id, its final view or None) from a message on the channel."""
    job_id, _, view = data.partition(_SEPARATOR)
    return job_id.decode(), view or None


def succeeded_view(job: Job, result: JobResult) -> bytes:
    """A succeeded job's view as the API reads it from Redis (``JobStore.view``) at that moment.

    Called at the finish, before the finish is sent: the timestamps are the ones the finish
    writes (RQ formats them with ``utcformat`` too), and a draft has no review yet, so it is pending.
    """
    meta = job.meta
    view = JobView.model_construct(
        id=job.id,
        status=JobState.SUCCEEDED,
        service=meta.get("service", ""),
        queue=job.origin,
        created_at=utcformat(job.created_at),
        started_at=utcformat(job.started_at) if job.started_at else None,
        ended_at=utcformat(job.ended_at) if job.ended_at else None,
        metadata=meta.get("metadata", {}),
        attempts=result.attempt,
        result=result,
        review={"state": "pending"} if result.draft else None,
    )
    return view.model_dump_json(exclude_none=True).encode()
