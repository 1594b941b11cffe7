"""Type-checked, never run: the clients and the simulator as a user writes them."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from asyncbulk import (
    AsyncBulkError,
    BackgroundJob,
    BatchOutcome,
    BatchState,
    BulkSubmission,
    ChakraClient,
    DeadlineExceededError,
    JobEntry,
    JobTimeoutError,
    Outcome,
    OutcomeUnknownError,
    PositionOutcome,
    Priority,
    ProcessUpdate,
    RateLimit,
    RequestStats,
    RetryPolicy,
    SubmissionError,
    SubmissionSummary,
    Telemetry,
    Timeouts,
    TrackerStats,
    TrackingOptions,
    ZefortClient,
    ZefortTask,
    outcome_of,
)
from asyncbulk.testing import Fault, Simulator, TokenBucket

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


async def chakra_flow(token: str) -> SubmissionSummary:
    """Submit, wait, summarise, stream entries and resubmit failures."""
    updates = [
        ProcessUpdate.by_key("lead_id", "LEAD-001", data={"score": 42}),
        ProcessUpdate.by_id("1e50dd73-9ce6-405b-932a-9c4c5e7b5599", status="COMPLETED"),
        ProcessUpdate(key=("lead_id", "LEAD-910"), next_action_at=datetime.now(tz=UTC)),
    ]
    async with ChakraClient(
        token, retry=RetryPolicy(attempts=3), timeouts=Timeouts(total=30.0)
    ) as chakra:
        try:
            submission: BulkSubmission = await chakra.bulk_update_processes(
                "tele_sales", updates, batch_size=500
            )
        except SubmissionError as exc:
            print(exc.submission, exc.errors)
            raise
        await submission.wait(timeout=60.0)
        summary = await submission.summary()
        job: BackgroundJob = await chakra.get_background_job(submission.jobs[0].id)
        print(job.is_finished, job.status_counts)
        async for entry in chakra.iter_job_entries(job.id, completion_status="ERROR"):
            checked: JobEntry = entry
            print(checked.process_id, checked.completion_message)
        async for finished in chakra.track_jobs([job.id], timeout=10.0):
            print(finished.completion_status)
        if not summary.ok:
            await chakra.bulk_update_processes("tele_sales", submission.failed_updates())
        return summary


async def chakra_outcomes(chakra: ChakraClient, updates: list[ProcessUpdate]) -> int:
    """Every position's state, the unknown ones apart, and the batch states as they change."""
    states: list[BatchState] = []

    def journal(batch: BatchOutcome) -> None:
        states.append(batch.state)

    try:
        submission = await chakra.bulk_update_processes(
            "tele_sales", updates, max_consecutive_failures=3, cancel_grace=5.0, on_state=journal
        )
    except SubmissionError as exc:
        submission = exc.submission
        if exc.stopped_by is not None and outcome_of(exc.stopped_by) is Outcome.NOT_APPLIED:
            print("stopped:", exc.stopped_by)
    for batch in submission.outcomes:
        print(batch.start, batch.stop, batch.state, batch.job_id, batch.message, batch.warnings)
    summary = await submission.summary()
    print(summary.mismatches)
    positions: list[PositionOutcome] = list(submission.positions())
    unknown: list[ProcessUpdate] = list(submission.unknown_updates())
    return len(positions) + len(unknown) + submission.counts().get("accepted", 0)


async def zefort_flow(api_key: str, task_ids: list[str]) -> list[str]:
    """Bulk update, wait, and track many tasks with a deadline."""
    done: list[str] = []
    async with ZefortClient(api_key, base_url="https://my.zefort.com") as zefort:
        task: ZefortTask = await zefort.bulk_update_contracts(
            attributes={"end_date": "2023-02-15"}, search={"q_tags": "nda"}
        )
        try:
            await zefort.bulk_update_contracts(
                status="done", all_contracts=True, extra={"notify": False}
            )
        except OutcomeUnknownError as exc:
            print(exc.body, exc.candidates)
        finished = await zefort.wait_for_task(task.id, timeout=60.0, acknowledge=True)
        print(finished.is_done, finished.affected_contracts)
        try:
            async for each in zefort.track_tasks(task_ids, timeout=600.0, acknowledge=True):
                print(each.id, "failed" if each.is_failed else "done")
                done.append(each.id)
        except JobTimeoutError as exc:
            print(exc.unfinished)
        async for pending in zefort.iter_tasks():
            print(pending.backend_status)
    return done


async def simulated() -> None:
    """The simulator as a user's test starts it."""
    async with Simulator(seed=1, faults=[Fault("status", status=503, rate=0.1)]) as sim:
        async with ChakraClient(sim.chakra_token, base_url=sim.chakra_url) as chakra:
            await chakra.get_background_job("x")
        print(sim.records.total_requests, sim.zefort_url, sim.zefort_api_key)


async def tracking(token: str, api_key: str, task_ids: list[str]) -> tuple[str, ...]:
    """One TrackingOptions for both clients, progress snapshots, and what stayed unacknowledged."""
    options = TrackingOptions(min_interval=0.5, max_interval=10.0, max_in_flight=4)

    def show(stats: TrackerStats) -> None:
        print(stats.finished, stats.tracked, dict(stats.entries), stats.lag_p99)

    async with ChakraClient(token, tracking=options) as chakra:
        job = await chakra.wait_for_job("job-id", timeout=60.0, on_progress=show)
        print(job.status_counts)
    async with ZefortClient(api_key, tracking=options) as zefort:
        tasks = zefort.track_tasks(task_ids, timeout=60.0, acknowledge=True, on_progress=show)
        async with tasks:
            async for task in tasks:
                print(task.id)
        try:
            await zefort.wait_for_task("task-id", timeout=5.0, on_progress=show)
        except AsyncBulkError as exc:
            print(exc.unfinished)
        return tasks.unacknowledged


async def flow_control(read_key: Callable[[], Awaitable[str]]) -> float | None:
    """A known quota, a rotating key, aiohttp's options, a size limit and the stats snapshot."""
    async with (
        ZefortClient(
            read_key,
            rate_limit=RateLimit(50, burst=20),
            trust_env=True,
            ssl=ssl.create_default_context(),
            max_response_bytes=8 * 1024 * 1024,
        ) as zefort,
        ChakraClient(lambda: "token", proxy="http://proxy.internal:3128") as chakra,
    ):
        await zefort.get_task("task_1")
        await chakra.get_background_job("job")
        stats: RequestStats = zefort.stats
        print(stats.rate_limited, stats.limiter_wait, chakra.stats.host_pauses)
        try:
            await zefort.get_task("task_2")
        except DeadlineExceededError as exc:
            timeout: TimeoutError = exc
            print(timeout, Priority.DETECT < Priority.HOUSEKEEPING)
        return stats.send_rate


def simulated_limits() -> Simulator:
    """The simulator's rate limit, Retry-After forms, redirects and oversized answers."""
    sim = Simulator(
        rate_limit=TokenBucket(50, burst=20, retry_after_form="http-date"),
        faults=[
            Fault("status", rate=0.02, retry_after=1),
            Fault("status", retry_after_form="huge", times=1),
            Fault("redirect", vendor="zefort", method="POST"),
            Fault("oversized", size=1024),
        ],
    )
    sim.rotate_credentials(zefort_api_key="new-key", window=0.3)
    return sim


async def telemetry_and_timeouts(token: str, api_key: str, provider: object) -> int:
    """OpenTelemetry on, off or to providers of one's own; a per-call timeout on each call."""
    updates = [ProcessUpdate.by_id("pid-1", state="CALLED")]
    async with (
        ChakraClient(token, telemetry=Telemetry(tracer_provider=provider)) as chakra,
        ZefortClient(api_key, telemetry=False) as zefort,
    ):
        submission = await chakra.bulk_update_processes("leads", updates, timeout=30.0)
        entries = [e async for e in chakra.iter_job_entries(submission.job_ids[0], timeout=10.0)]
        task = await zefort.bulk_update_contracts(status="done", search={"q": "x"}, timeout=30.0)
        await zefort.acknowledge_task(task.id, timeout=5.0)
        pending = [t.id async for t in zefort.iter_tasks(timeout=10.0)]
        return len(entries) + len(pending)
