"""The one retry decision (workers.worker.will_retry), asked of real RQ jobs stored in Redis."""

from __future__ import annotations

import redis
from rq.job import Job, Retry
from rq.queue import Queue
from rq.serializers import JSONSerializer

from gateway.errors import NoDeploymentError, ProviderRequestError, ProviderUnavailableError
from gateway.jobs import JOB_FUNC
from workers.worker import will_retry


def _job(connection: redis.Redis, *, retries: int | None, retries_left: int | None = None) -> Job:
    """A job as the API enqueues it (RQ's Retry when it may have more than one attempt), read back."""
    queue = Queue("batch", connection=connection, serializer=JSONSerializer)
    retry = Retry(max=retries, interval=[1] * retries) if retries else None
    job = queue.enqueue(JOB_FUNC, {"request": {"prompt": "hi"}, "service": "svc"}, retry=retry)
    if retries_left is not None:  # attempts already used up
        job.retries_left = retries_left
        job.save()
    return Job.fetch(job.id, connection=connection, serializer=JSONSerializer)


def _unavailable() -> ProviderUnavailableError:
    return ProviderUnavailableError("upstream 503", deployment="general/0:anthropic")


def test_will_retry_a_retryable_error_with_retries_left(redis_client: redis.Redis) -> None:
    assert will_retry(_job(redis_client, retries=2), _unavailable())


def test_will_retry_not_a_non_retryable_error(redis_client: redis.Redis) -> None:
    error = ProviderRequestError("bad request", deployment="general/0:anthropic")
    assert not will_retry(_job(redis_client, retries=2), error)


def test_will_retry_not_once_retries_are_used_up(redis_client: redis.Redis) -> None:
    assert not will_retry(_job(redis_client, retries=2, retries_left=0), _unavailable())


def test_will_retry_not_a_job_with_one_attempt(redis_client: redis.Redis) -> None:
    assert not will_retry(_job(redis_client, retries=None), _unavailable())


def test_will_retry_no_deployment_only_when_a_circuit_is_open(redis_client: redis.Redis) -> None:
    job = _job(redis_client, retries=2)
    cooling = NoDeploymentError("no deployment of general can be called", circuit_open=True)
    no_key = NoDeploymentError("no deployment of general can be called", circuit_open=False)
    assert will_retry(job, cooling)
    assert not will_retry(job, no_key)
