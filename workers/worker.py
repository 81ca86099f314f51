"""The async RQ worker: many jobs in flight in one process, on RQ's own bookkeeping.

Stock RQ runs one job per process. Our jobs are I/O-bound provider calls, so one asyncio loop
runs up to ``concurrency`` of them at once (the design brief). What stays RQ's: the queue and its
intermediate queue (BLMOVE), executions, the started/failed/finished registries, results,
retries and the scheduler's lock. What is ours: the loop, one heartbeat task that refreshes
every in-flight execution with a short TTL, a reaper that finds abandoned jobs in seconds, and
cancellation of a running job through a pub/sub message to the worker that holds it.

A worker serves exactly one queue: multi-queue dequeue falls back to BLPOP and loses the
intermediate queue's crash safety. One process may run a worker per queue on one loop instead
(``workers/main.py``), sharing its connection, group commit and provider pools. RQ's sync Redis
calls run on the loop; each is one loopback round trip, cheaper than a thread hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as aredis
from loguru import logger
from redis.client import Pipeline
from redis.commands.core import AsyncScript
from rq.exceptions import InvalidJobOperation
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.scheduler import RQScheduler
from rq.utils import now
from rq.worker import BaseWorker, WorkerStatus

from gateway import completion, keys, metrics, rq_speedups, tracing
from gateway.config import DEFAULT_MAX_RETRY_AFTER
from gateway.errors import GatewayError, JobTimeoutError
from gateway.group_commit import GroupCommit
from gateway.jobs import JobResult
from gateway.loop_guard import LoopGuard
from gateway.rq_speedups import JSONSerializer
from gateway.scripted_pipeline import ScriptedPipelines

#: What the worker runs for each job: the job pipeline (workers.pipeline.JobPipeline).
JobRunner = Callable[[Job], Awaitable[Any]]
#: Called once a job is final and stored: (connection, job, "succeeded" | "failed" | "canceled",
#: result or error). Quick and synchronous (e.g. queue a notification in Redis).
FinalHook = Callable[[redis.Redis, Job, str, Any], None]
#: A task the worker runs beside its loop for its whole life: (Redis URL, worker name, stopping);
#: it returns soon after ``stopping`` is set.
BackgroundTask = Callable[[str, str, asyncio.Event], Coroutine[Any, Any, None]]


def on_signals(handler: Callable[[], None]) -> None:
    """Call ``handler`` on SIGTERM and SIGINT (where the running loop can watch signals)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, handler)


def will_retry(job: Job, error: GatewayError) -> bool:
    """Whether a failed attempt is handed back to RQ for another one: the error is retryable and
    the job has retries left (RQ's ``Job.should_retry``). The pipeline asks it to audit the attempt
    as ``retrying`` or ``failed``; the worker asks it to requeue or fail the job."""
    return error.retryable and job.should_retry


#: the most jobs one dequeue round trip takes (when that many slots are free and the queue holds them)
DEQUEUE_BATCH = 16
#: after the queue was found empty, how many jobs come one by one before it is asked for more again
PROBE_EVERY = 8
#: KEYS[1] the queue, KEYS[2] its intermediate queue: up to ARGV[1] LMOVEs, stopping at an empty queue
_MOVE_UP_TO = """
local moved = {}
for _ = 1, tonumber(ARGV[1]) do
  local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not id then break end
  moved[#moved + 1] = id
end
return moved
"""

#: the most of an unexpected exception's first line that reaches a job record and its audit line
MAX_UNEXPECTED_CHARS = 300


def unexpected_error(exc: BaseException, *, detail: bool = True) -> GatewayError:
    """A ``gateway_error`` for an exception nobody raised on purpose (a bug, an unhandled shape).

    It says the exception's type and, with ``detail``, the first line of its message, clipped:
    never the traceback or its locals (those may hold the prompt), which only the log gets. A
    caller that can mask PII (the pipeline) masks the message before it is stored or audited;
    one that cannot passes ``detail=False``. Not retryable: nothing says another try would differ.
    """
    text = f"unexpected error: {type(exc).__name__}"
    lines = str(exc).strip().splitlines() if detail else []
    if lines:
        text += f": {lines[0]}"
    if len(text) > MAX_UNEXPECTED_CHARS:
        text = text[: MAX_UNEXPECTED_CHARS - 3] + "..."
    # an exception can quote the very text that could not be encoded (a lone surrogate)
    return GatewayError(text.encode("utf-8", "backslashreplace").decode("utf-8"))


def _report_failed_commands(job_id: str, failed: list[str]) -> None:
    """Say loudly which commands of a job's start or finish script Redis refused.

    The script runs every command even when one fails (like MULTI, it does not roll back), so by then the
    result is stored and the job is finished: raising would only skip its slot release and its
    notification. The runner validates every amount before the transaction so that this cannot
    happen for spend or tokens; what is left (a key of the wrong type written by hand) is logged.
    """
    if failed:
        logger.error("job {}: Redis refused part of its start or finish: {}", job_id, "; ".join(failed))


@dataclass(frozen=True)
class Outcome:
    """A runner's return value, plus Redis writes (e.g. the audit event) that must land with it."""

    value: Any
    commit: Callable[[Pipeline], None] | None = None
    #: the value as the model it was dumped from: the finish publishes the job's final view with it
    result: JobResult | None = None
    #: called when the outcome could not be stored (an error inside ``_succeed`` other than Redis
    #: itself): the runner settles and audits the attempt as failed, before the job is failed
    failed: Callable[[GatewayError], None] | None = None


@dataclass
class _Running:
    job: Job
    execution: Execution
    task: asyncio.Task[None]
    canceled_by_user: bool = False
    #: the runner returned and the result is on its way to Redis: a cancel comes too late
    storing: bool = False


class AsyncWorker(BaseWorker):
    """Runs up to ``concurrency`` jobs of one queue at once in one asyncio loop."""

    def __init__(
        self,
        queue: str,
        *,
        connection: redis.Redis,
        redis_url: str,
        runner: JobRunner,
        concurrency: int = 200,
        heartbeat_interval: float = 3.0,
        heartbeat_ttl: int = 15,
        reap_interval: float = 5.0,
        shutdown_grace: float = 25.0,
        name: str | None = None,
        on_heartbeat: Callable[[], None] | None = None,
        subscriptions: dict[str, Callable[[str], None]] | None = None,
        on_final: FinalHook | None = None,
        background: list[BackgroundTask] | None = None,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        group_commit: GroupCommit | None = None,
    ) -> None:
        rq_speedups.install()
        super().__init__(
            [queue],
            name=name,
            connection=connection,
            serializer=JSONSerializer,
            worker_ttl=max(heartbeat_ttl, 10),
            job_monitoring_interval=int(heartbeat_interval) or 1,
            log_job_description=False,  # the description holds the prompt; logs never do
        )
        self.runner = tracing.traced_runner(runner)  # itself when traces are off
        self.redis_url = redis_url
        self.concurrency = concurrency
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_ttl = heartbeat_ttl
        self.reap_interval = reap_interval
        self.shutdown_grace = shutdown_grace
        self.on_heartbeat = on_heartbeat
        self.on_final = on_final
        self.max_retry_after = max_retry_after  # jobs.max_retry_after
        self.extra_background = list(background or [])
        #: pub/sub channel -> handler, besides job cancellation (e.g. circuit breakers opening)
        self.subscriptions: dict[str, Callable[[str], None]] = {
            keys.CANCEL_CHANNEL: self._cancel_running,
            **(subscriptions or {}),
        }
        self.queue: Queue = self.queues[0]
        self._running: dict[str, _Running] = {}
        self._stopping = asyncio.Event()
        self._listening = asyncio.Event()
        #: the starts and finishes of one loop tick share a round trip (gateway/group_commit.py),
        #: with the other queues' workers in this process when they pass theirs
        self.group_commit = group_commit or GroupCommit(connection)
        self._scripts = ScriptedPipelines(self.group_commit)
        self._move_up_to: AsyncScript | None = None  # on the dequeue connection, made in run
        self._queue_was_empty = False
        self._since_probe = 0
        self._scheduler = RQScheduler([self.queue], connection=connection, serializer=JSONSerializer)
        #: one guard per background loop (gateway/loop_guard.py): what each skipped and survived
        self.guards = {
            loop: LoopGuard(f"worker {self.name}: {loop}")
            for loop in ("dequeue", "heartbeat", "reaper", "control-listener")
        }

    # --- RQ hooks -------------------------------------------------------------------------------

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Short on purpose: a killed worker's jobs expire from the started registry in seconds."""
        return self.heartbeat_ttl

    # --- main loop ------------------------------------------------------------------------------

    async def run(self, burst: bool = False, *, handle_signals: bool = True) -> None:
        """Serve the queue until shutdown (or, with ``burst``, until it is empty). Without
        ``handle_signals`` the caller turns SIGTERM/SIGINT into ``request_shutdown`` (one process
        running several workers has one handler per signal)."""
        self.register_birth()  # type: ignore[no-untyped-call]
        self.set_state(WorkerStatus.IDLE)
        if handle_signals:
            on_signals(self.request_shutdown)
        aconn = aredis.Redis.from_url(self.redis_url, socket_keepalive=True)
        self._move_up_to = aconn.register_script(_MOVE_UP_TO)
        loops: dict[str, Callable[[], Awaitable[None]]] = {
            "heartbeat": self._heartbeat_loop,
            "reaper": self._reaper_loop,
            "control-listener": lambda: self._control_listener(aconn),
        }
        background = [
            asyncio.create_task(self.guards[name].supervise(loop), name=name) for name, loop in loops.items()
        ]
        extra = [
            asyncio.create_task(task(self.redis_url, self.name, self._stopping))
            for task in self.extra_background
        ]
        with contextlib.suppress(TimeoutError):  # take no job before a cancel could reach us
            await asyncio.wait_for(self._listening.wait(), timeout=5)
        logger.info(
            "worker {} serving queue {!r} with {} slots", self.name, self.queue.name, self.concurrency
        )
        try:
            await self._dequeue_loop(aconn, burst)
            await self._drain()
        finally:
            self._stopping.set()  # (a burst run ends without a shutdown request)
            if extra:  # they watch `_stopping` and finish what they hold (a notification going out)
                _done, late = await asyncio.wait(extra, timeout=5)
                background.extend(late)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await aconn.aclose()
            with contextlib.suppress(redis.RedisError):
                self._release_scheduler_lock()
                self.register_death()  # type: ignore[no-untyped-call]
            batch = self.group_commit
            logger.info(
                "worker {} stopped ({} starts and finishes in {} round trips)",
                self.name,
                batch.calls,
                batch.batches,
            )

    def request_shutdown(self) -> None:
        """SIGTERM/SIGINT: stop taking jobs; in-flight jobs get ``shutdown_grace`` seconds."""
        if not self._stopping.is_set():
            logger.info("worker {} shutting down: {} jobs in flight", self.name, len(self._running))
            self._stopping.set()

    async def _dequeue_loop(self, aconn: aredis.Redis, burst: bool) -> None:
        """Take jobs while a slot is free; Redis trouble or any other error waits and goes on.

        Not restarted whole like the other loops: the slots it holds are its running jobs'.
        """
        slots = asyncio.Semaphore(self.concurrency)
        guard = self.guards["dequeue"]
        while not self._stopping.is_set():
            await slots.acquire()
            try:
                job_id = await self._dequeue(aconn, burst)
            except Exception as exc:
                slots.release()
                await self._sleep_unless_stopping(guard.trouble(exc))
                continue
            guard.healthy()
            if job_id is None:
                slots.release()
                if burst:
                    if not self._running:
                        return
                    await asyncio.wait([r.task for r in self._running.values()], timeout=0.5)
                continue
            for taken in [job_id, *await self._dequeue_more(aconn, slots)]:
                task = asyncio.create_task(self._execute(taken))
                task.add_done_callback(lambda _t: slots.release())

    async def _dequeue_more(self, aconn: aredis.Redis, slots: asyncio.Semaphore) -> list[str]:
        """After a job came, up to ``DEQUEUE_BATCH - 1`` more in one round trip, one per free slot.

        A deep queue then costs one round trip per batch, not per job, and the batch's starts share
        one group commit; each move is RQ's LMOVE into the intermediate queue, as crash safe as the
        blocking one. An empty queue is asked again only every ``PROBE_EVERY`` jobs, so a quiet
        worker (one client) does not pay a second round trip per job.
        """
        if self._stopping.is_set():  # shutting down: take nothing more
            return []
        self._since_probe += 1
        if self._queue_was_empty and self._since_probe < PROBE_EVERY:
            return []
        self._since_probe = 0
        want = 0
        while want < DEQUEUE_BATCH - 1 and not slots.locked():
            await slots.acquire()  # (does not wait: a slot is free)
            want += 1
        if not want:
            return []
        try:
            keys_ = [self.queue.key, self.queue.intermediate_queue_key]
            assert self._move_up_to is not None  # (registered in run, on this connection)
            replies = await self._move_up_to(keys=keys_, args=[want])
        except Exception as exc:  # what was moved is in the intermediate queue: the reaper hands it back
            logger.warning("worker {}: dequeueing more jobs failed: {}", self.name, exc)
            replies = []
        self._queue_was_empty = len(replies) < want
        taken = [job_id for raw in replies if (job_id := await self._job_id(aconn, raw)) is not None]
        for _ in range(want - len(taken)):
            slots.release()
        return taken

    async def _dequeue(self, aconn: aredis.Redis, burst: bool) -> str | None:
        """Move one job id to the intermediate queue (RQ's crash-safe BLMOVE).

        An entry that is not text cannot name a job: it is dropped, and the next one taken.
        """
        intermediate = self.queue.intermediate_queue_key
        while True:
            if burst:
                raw = await aconn.lmove(self.queue.key, intermediate)
            else:
                raw = await aconn.blmove(self.queue.key, intermediate, timeout=1)
            if not isinstance(raw, bytes):
                return raw
            job_id = await self._job_id(aconn, raw)
            if job_id is not None:
                return job_id

    async def _job_id(self, aconn: aredis.Redis, raw: bytes) -> str | None:
        """The job id a moved entry holds; one that is not text is dropped from the intermediate queue."""
        with self.guards["dequeue"].message(f"job id on {self.queue.key}"):
            return raw.decode()
        await aconn.lrem(self.queue.intermediate_queue_key, 1, raw)
        return None

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    # --- one job --------------------------------------------------------------------------------

    async def _execute(self, job_id: str) -> None:
        try:
            started = await self._start(job_id)
        except redis.RedisError as exc:
            # still in the intermediate queue: the reaper hands it back once Redis answers
            logger.warning("worker {}: could not start job {}: {}", self.name, job_id, exc)
            return
        if started is None:
            return
        job, execution = started
        task = asyncio.current_task()
        assert task is not None
        running = _Running(job=job, execution=execution, task=task)
        self._running[job.id] = running
        try:
            with logger.contextualize(job_id=job.id):
                await self._perform(running)
        except redis.RedisError as exc:
            # the result was not written; the execution's heartbeat lapses and the reaper requeues it
            logger.warning(
                "worker {}: lost Redis finishing job {} ({}); it will be recovered", self.name, job.id, exc
            )
        finally:
            self._running.pop(job.id, None)

    async def _start(self, job_id: str) -> tuple[Job, Execution] | None:
        """Read and start a job in one round trip: RQ's prepare_execution and
        prepare_job_execution, written by RQ's own code into a pipeline and run by one script
        that first checks the job exists and was not canceled (``gateway/scripted_pipeline.py``).

        A missing or canceled job is dropped from the intermediate queue, not started. The
        worker's own busy/idle state and heartbeat are kept by the heartbeat task, not here.
        """
        ttl = self.heartbeat_ttl
        intermediate = self.queue.intermediate_queue_key
        job = Job(job_id, connection=self.connection, serializer=JSONSerializer)
        job.origin = self.queue.name
        pipe = self._scripts.pipeline()
        execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.name)
        job.heartbeat(now(), ttl, pipeline=pipe)
        job.prepare_for_execution(self.name, pipeline=pipe)
        pipe.persist(job.key)
        pipe.lrem(intermediate, 1, job.id)
        canceled = JobStatus.CANCELED.value
        state, raw, errors = await self._scripts.start(job.key, intermediate, job_id, canceled, pipe)
        if state == 0:
            logger.warning("worker {}: cannot load job {}: it does not exist", self.name, job_id)
            return None
        if state == 1 or raw is None:
            return None
        _report_failed_commands(job_id, errors)
        try:
            job.restore(raw)
        except Exception as exc:  # an unreadable job: its execution goes, it is not run
            logger.warning("worker {}: cannot load job {}: {}", self.name, job_id, exc)
            with self.connection.pipeline() as cleanup:
                self.cleanup_execution(job, pipeline=cleanup, execution=execution)
                cleanup.execute()
            return None
        self.executions[execution.id] = execution
        return job, execution

    async def _perform(self, running: _Running) -> None:
        job, execution = running.job, running.execution
        job.started_at = now()
        timeout = job.timeout if job.timeout and job.timeout > 0 else None
        try:
            async with asyncio.timeout(timeout):
                value = await self.runner(job)
        except asyncio.CancelledError:
            if running.canceled_by_user:
                self._finalize_canceled(job, execution)
                self._final(job, "canceled", None)
                return
            self._requeue_interrupted(job, execution)
            raise
        except TimeoutError:
            timed_out = JobTimeoutError(f"job ran past its timeout of {timeout}s")
            if self._fail(job, execution, timed_out):
                self._final(job, "failed", timed_out.to_dict())
        except GatewayError as exc:
            if self._fail(job, execution, exc):
                self._final(job, "failed", exc.to_dict())
        except redis.RedisError:
            raise  # not the job's fault: _execute leaves it for the reaper to recover
        except Exception as exc:
            # The pipeline turns its own unexpected errors into a GatewayError (audited, holds
            # released); what gets here came from outside an attempt (an unreadable job record) or
            # from its failure path, so there is no attempt to audit. The job still ends.
            logger.exception("job {} raised an unexpected error", job.id)
            error = unexpected_error(exc, detail=False)  # unmasked text stays in the log
            if self._fail(job, execution, error):
                self._final(job, "failed", error.to_dict())
        else:
            running.storing = True
            await self._store(job, execution, value if isinstance(value, Outcome) else Outcome(value))

    async def _store(self, job: Job, execution: Execution, outcome: Outcome) -> None:
        """Store a runner's outcome; one that cannot be stored fails the job (``_store_failed``)."""
        try:
            await self._succeed(job, execution, outcome)
        except redis.RedisError:
            raise
        except Exception as exc:
            self._store_failed(job, execution, outcome, exc)
            return
        self._final(job, "succeeded", outcome.value)

    def _store_failed(self, job: Job, execution: Execution, outcome: Outcome, exc: Exception) -> None:
        """The result could not be stored (e.g. a text Redis cannot encode): nothing of the finish
        transaction was sent (redis-py encodes every command before it sends one), so the job fails
        like any attempt: the runner audits it and settles its holds, then RQ fails or retries it."""
        logger.exception("job {}: storing its result failed", job.id)
        error = unexpected_error(exc, detail=outcome.failed is not None)
        if outcome.failed is not None:
            try:
                outcome.failed(error)
            except redis.RedisError:
                raise
            except Exception:
                logger.exception("job {}: auditing the failure to store its result failed too", job.id)
        if self._fail(job, execution, error):
            self._final(job, "failed", error.to_dict())

    def _final(self, job: Job, status: str, detail: Any) -> None:
        """Tell ``on_final`` (the notification outbox) that a job is final and stored."""
        if self.on_final is None:
            return
        try:
            self.on_final(self.connection, job, status, detail)
        except redis.RedisError as exc:
            logger.warning("worker {}: could not queue job {}'s notification: {}", self.name, job.id, exc)
        except Exception:
            # the job is already stored and final: a notification that cannot be built is lost, and
            # said loudly, but it does not undo the job or kill its task
            logger.exception("worker {}: could not queue job {}'s notification", self.name, job.id)

    async def _succeed(self, job: Job, execution: Execution, outcome: Outcome) -> None:
        """RQ's success bookkeeping, the runner's writes and the completion notice in one MULTI.

        RQ's handle_job_success also watches dependents and schedules repeats; aigw jobs have
        neither, so one transaction (one round trip) replaces about six.
        """
        job.ended_at = now()
        job._result = outcome.value
        job._status = JobStatus.FINISHED
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        pipe = self._scripts.pipeline()
        if outcome.commit is not None:
            outcome.commit(pipe)
        self.increment_successful_job_count(pipeline=pipe)
        self.increment_total_working_time(job.ended_at - (job.started_at or job.ended_at), pipe)
        job._handle_success(
            result_ttl,
            pipeline=pipe,
            worker_name=self.name,
            execution_id=execution.id,
            execution_started_at=execution.created_at,
            execution_ended_at=job.ended_at,
        )
        job.cleanup(result_ttl, pipeline=pipe, remove_from_queue=False)
        self.cleanup_execution(job, pipeline=pipe, execution=execution)
        view = None if outcome.result is None else completion.succeeded_view(job, outcome.result)
        pipe.publish(keys.DONE_CHANNEL, completion.message(job.id, view))
        _report_failed_commands(job.id, await self._scripts.run(pipe))
        if job.has_rate_limit:  # a concurrent_jobs slot: free it and start the next held job
            self._release_slot_safely(job)

    def _fail(self, job: Job, execution: Execution, error: GatewayError) -> bool:
        """Fail the attempt; RQ requeues it (with backoff) if it is retryable and has retries left.

        A provider's Retry-After can only push the next attempt later than the configured interval.
        Returns whether the job is now final (failed for good).
        """
        job._status = JobStatus.FAILED
        job.ended_at = now()
        retry = will_retry(job, error)
        if not retry:
            job.retries_left = 0  # RQ's handle_job_failure asks job.should_retry: make it agree
        if retry and error.retry_after:
            # capped here too (the providers cap theirs): no error may park a job past the cap, and a
            # negative or NaN wait means none
            wait = min(error.retry_after, self.max_retry_after) if error.retry_after > 0 else 0.0
            self._retry_later(job, execution, max(wait, float(job.get_retry_interval())))
            return False
        self.handle_job_failure(
            job=job,
            queue=self.queue,
            started_job_registry=self.queue.started_job_registry,
            exc_string=json.dumps(error.to_dict()),
            execution=execution,
        )
        if not retry:
            self._publish_done(job.id)
        return not retry

    def _retry_later(self, job: Job, execution: Execution, delay: float) -> None:
        """RQ's job.retry(), scheduled no earlier than ``delay`` seconds from now.

        RQ keeps scheduled times in whole seconds (truncated), so round up to stay at or after it.
        """
        when = datetime.fromtimestamp(math.ceil(time.time() + delay), UTC)
        with self.connection.pipeline() as pipe:
            self.cleanup_execution(job, pipeline=pipe, execution=execution)
            self.increment_failed_job_count(pipeline=pipe)
            job.retries_left = (job.retries_left or 1) - 1
            job.set_status(JobStatus.SCHEDULED, pipeline=pipe)
            self.queue.schedule_job(job, when, pipeline=pipe)
            pipe.execute()
        if job.has_rate_limit:  # as RQ's own retry path does: the slot is free while the job waits
            self._release_slot_safely(job)
        logger.info("job {} retries at {} (provider asked to wait {:.1f}s)", job.id, when.isoformat(), delay)

    def _finalize_canceled(self, job: Job, execution: Execution) -> None:
        """RQ's cancel (status, canceled registry), after the execution is gone; the record expires."""
        with self.connection.pipeline() as pipe:
            self.cleanup_execution(job, pipeline=pipe, execution=execution)
            if job.args and isinstance(job.args[0], dict):  # counted where the cancel is final
                metrics.write(pipe, metrics.canceled(job.args[0], self.queue.name))
            pipe.execute()
        job.ended_at = now()
        with contextlib.suppress(InvalidJobOperation):
            job.cancel()
        with self.connection.pipeline() as pipe:
            pipe.hset(job.key, "ended_at", job.ended_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
            pipe.expire(job.key, job.failure_ttl or self.default_result_ttl)
            pipe.execute()
        self._publish_done(job.id)
        logger.info("job {} canceled while running", job.id)

    def _requeue_interrupted(self, job: Job, execution: Execution) -> None:
        """Shutdown reached a job that did not finish in time: put it back at the queue's front."""
        with contextlib.suppress(redis.RedisError), self.connection.pipeline() as pipe:
            self.cleanup_execution(job, pipeline=pipe, execution=execution)
            job.set_status(JobStatus.QUEUED, pipeline=pipe)
            self.queue._enqueue_job(job, pipeline=pipe, at_front=True)
            pipe.execute()
            logger.info("job {} requeued on shutdown", job.id)

    def _publish_done(self, job_id: str) -> None:
        with contextlib.suppress(redis.RedisError):
            self.connection.publish(keys.DONE_CHANNEL, job_id)

    async def _drain(self) -> None:
        """Let in-flight jobs finish up to the grace deadline, then requeue the rest."""
        if not self._running:
            return
        tasks = [r.task for r in self._running.values()]
        _done, pending = await asyncio.wait(tasks, timeout=self.shutdown_grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # --- background tasks -----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        """One pipeline refreshes the worker and every in-flight execution's TTL."""
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                self._heartbeat_all()
            except redis.RedisError as exc:
                logger.warning("worker {}: heartbeat failed: {}", self.name, exc)

    def _heartbeat_all(self) -> None:
        ttl = self.heartbeat_ttl
        stamp = now()
        with self.connection.pipeline(transaction=False) as pipe:
            self.heartbeat(self.worker_ttl + ttl, pipeline=pipe)
            self.set_state(WorkerStatus.BUSY if self._running else WorkerStatus.IDLE, pipeline=pipe)
            for running in list(self._running.values()):
                running.execution.heartbeat(self.queue.started_job_registry, ttl, pipeline=pipe)
                running.job.heartbeat(stamp, ttl, pipeline=pipe, xx=True)
            pipe.execute()
        if self.on_heartbeat is not None:
            self.on_heartbeat()

    async def _reaper_loop(self) -> None:
        """Requeue abandoned jobs, move due retries back to the queue, clean registries."""
        last_clean = 0.0
        while True:
            try:
                self._reap()
                if time.monotonic() - last_clean > self.maintenance_interval:
                    self.clean_registries()  # type: ignore[no-untyped-call]
                    last_clean = time.monotonic()
            except redis.RedisError as exc:
                logger.warning("worker {}: maintenance failed: {}", self.name, exc)
            await asyncio.sleep(self.reap_interval if not self._stopping.is_set() else 0.2)

    def _reap(self) -> None:
        self.queue.started_job_registry.cleanup()
        self._recover_intermediate()
        if self._hold_scheduler_lock():
            self._scheduler.prepare_registries([self.queue.name])
            self._scheduler.enqueue_scheduled_jobs()

    def _hold_scheduler_lock(self) -> bool:
        """Exactly one worker per queue moves due retries back to the queue.

        RQ's own lock lives 61 s, so a killed worker that held it would stall every retry for a
        minute; ours lives one heartbeat TTL and is refreshed on every reap by its holder.
        """
        key = keys.scheduler_lock(self.queue.name)
        if self.connection.set(key, self.name, nx=True, ex=self.heartbeat_ttl):
            return True
        if keys.text(self.connection.get(key)) == self.name:
            self.connection.expire(key, self.heartbeat_ttl)
            return True
        return False

    def _release_scheduler_lock(self) -> None:
        key = keys.scheduler_lock(self.queue.name)
        if keys.text(self.connection.get(key)) == self.name:
            self.connection.delete(key)

    def _recover_intermediate(self) -> None:
        """Hand back jobs a dead worker moved off the queue but never started.

        RQ waits a minute and then burns one of the job's retries; a job that never started
        did not fail, so it goes back to the queue's front untouched once it has sat there for
        longer than a heartbeat TTL without an execution. An entry that is not text can never
        name a job and is dropped; one entry that cannot be handled never stops the others.
        """
        intermediate = self.queue.intermediate_queue_key
        guard = self.guards["reaper"]
        entries: list[bytes] = self.connection.lrange(intermediate, 0, -1)  # type: ignore[assignment]
        for raw in entries:
            with guard.message(f"job id on {intermediate}"):
                try:
                    job_id = raw.decode()
                except UnicodeDecodeError:
                    self.connection.lrem(intermediate, 1, raw)  # type: ignore[arg-type]
                    raise
                self._recover_one(intermediate, job_id)

    def _recover_one(self, intermediate: str, job_id: str) -> None:
        if job_id in self._running or job_id in self.queue.started_job_registry:
            return
        marker = keys.intermediate_seen(job_id)
        stamp = time.time()
        # the marker expires, so a sighting from an earlier dequeue of the same job is forgotten
        if self.connection.set(marker, stamp, nx=True, ex=self.heartbeat_ttl * 3):
            return
        seen = float(self.connection.get(marker) or stamp)
        if stamp - seen < self.heartbeat_ttl:
            return
        with self.connection.pipeline() as pipe:
            pipe.lrem(intermediate, 1, job_id)
            pipe.lpush(self.queue.key, job_id)
            pipe.delete(marker)
            pipe.execute()
        logger.info("job {} recovered from the intermediate queue", job_id)

    async def _control_listener(self, aconn: aredis.Redis) -> None:
        """One subscription to the control channels: cancel a running job (RQ's stop_job reaches
        one job only), breakers opening elsewhere. It raises when the connection goes, and
        ``guard.supervise`` subscribes again; a message no handler can read is skipped."""
        guard = self.guards["control-listener"]
        async with aconn.pubsub() as pubsub:
            await pubsub.subscribe(*self.subscriptions)
            self._listening.set()
            guard.healthy()
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    with guard.message(f"message on {message['channel']!r}"):
                        self._dispatch(message["channel"].decode(), message["data"].decode())
        raise redis.ConnectionError("the control subscription ended")

    def _dispatch(self, channel: str, data: str) -> None:
        self.subscriptions[channel](data)

    def _cancel_running(self, job_id: str) -> None:
        running = self._running.get(job_id)
        if running is not None and not running.task.done() and not running.storing:
            running.canceled_by_user = True
            running.task.cancel()
