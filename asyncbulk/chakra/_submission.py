"""What a bulk submission produced: its jobs, the input each carries, and what became of it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import anyio
import attrs

from asyncbulk._exceptions import AsyncBulkError, ProtocolError, ValidationError
from asyncbulk.chakra._models import BackgroundJob, JobEntry, ProcessCreate, ProcessUpdate

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping, Sequence

    from asyncbulk._tracking import TrackerStats
    from asyncbulk.chakra._client import ChakraClient

__all__ = ["BatchError", "BulkSubmission", "FailedEntry", "SubmissionSummary"]

Operation = Literal["update", "create"]
# Entry statuses whose change did not take effect and may be sent again as it was.
_RETRYABLE = ("ERROR", "CANCELLED")
_SUMMARY_JOBS_IN_FLIGHT = 8


class BatchError(AsyncBulkError):
    """One batch of a bulk submission failed: it was refused, or its outcome is unknown.

    Attributes:
        positions: the input positions the batch carried.
        error: the error the request ended with (also this exception's ``__cause__``).
        outcome_unknown: True when the server may have received the batch and started a job
            anyway (the connection dropped after sending, a 5xx, an answer we could not read);
            sending it again may then apply it twice.
        items: the batch's validated items (`ProcessUpdate` or `ProcessCreate`), to resend.
    """

    def __init__(
        self,
        *,
        positions: range,
        error: BaseException,
        outcome_unknown: bool,
        items: Sequence[ProcessUpdate | ProcessCreate],
        name: str = "updates",
    ) -> None:
        """Name the batch's positions and keep its error and items."""
        unknown = " (outcome unknown: it may have been applied)" if outcome_unknown else ""
        super().__init__(
            f"{name}[{positions.start}:{positions.stop}] not accepted{unknown}: {error}"
        )
        self.positions = positions
        self.error = error
        self.outcome_unknown = outcome_unknown
        self.items = tuple(items)
        self.__cause__ = error


@attrs.frozen
class FailedEntry:
    """An entry that did not succeed, with where it came from.

    Attributes:
        entry: the entry as the server lists it.
        job_id: the background job it belongs to.
        positions: the input positions of the batch that carried it (the server does not say
            which item of the batch it was).
        message: the server's reason (validation message, or completion message).
    """

    entry: JobEntry
    job_id: str
    positions: range
    message: str


@attrs.frozen
class SubmissionSummary:
    """Counts and failures across every job of a submission.

    Attributes:
        counts: entries per completion status, over all jobs.
        failed: entries that ended in ERROR or CANCELLED.
        invalid: entries the server refused as INVALID.
        failed_batches: batches that were never accepted.
        jobs: the jobs as last fetched.
    """

    counts: Mapping[str, int]
    failed: tuple[FailedEntry, ...]
    invalid: tuple[FailedEntry, ...]
    failed_batches: tuple[BatchError, ...]
    jobs: tuple[BackgroundJob, ...]

    @property
    def finished(self) -> bool:
        """Whether every job had finished when the summary was made."""
        return all(job.is_finished for job in self.jobs)

    @property
    def succeeded(self) -> int:
        """Entries that succeeded."""
        return self.counts.get("SUCCESS", 0)

    @property
    def ok(self) -> bool:
        """Whether everything finished and nothing failed, was invalid or was left unsent."""
        return (
            self.finished
            and not self.failed
            and not self.invalid
            and not self.failed_batches
            and not any(self.counts.get(s) for s in ("ERROR", "INVALID", "CANCELLED"))
        )


@attrs.frozen(eq=False)
class BulkSubmission:
    """What a bulk request accepted: one background job per batch, in input order.

    Attributes:
        procedure: the procedure id or short id the submission went to.
        operation: ``"update"`` or ``"create"``.
        jobs: the acknowledged background jobs, one per accepted batch, in input order.
        batches: job id -> the input positions (a range) its batch carried.
        failed_batches: the batches that were not accepted, with their positions and items.
        unsent_from: when the submission stopped early (invalid input, a failed batch), the
            first input position it did not read or send; None when it sent everything.
    """

    procedure: str
    operation: Operation
    jobs: tuple[BackgroundJob, ...]
    batches: Mapping[str, range] = attrs.field(repr=False)
    failed_batches: tuple[BatchError, ...] = ()
    unsent_from: int | None = None
    _client: ChakraClient = attrs.field(repr=False, alias="client", kw_only=True)

    @property
    def count(self) -> int:
        """Items accepted, over all jobs."""
        return sum(len(r) for r in self.batches.values())

    @property
    def job_ids(self) -> tuple[str, ...]:
        """The jobs' ids, in input order."""
        return tuple(job.id for job in self.jobs)

    async def wait(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 -- the contract's name; a JobTimeoutError names the jobs
        on_progress: Callable[[TrackerStats], None] | None = None,
    ) -> list[BackgroundJob]:
        """Wait until every job has finished, and return them in input order.

        Args:
            timeout: seconds to wait at most; None waits as long as it takes.
            on_progress: called with a `TrackerStats` snapshot at most every 0.5 s and once at
                the end (see `ChakraClient.track_jobs`).

        Raises:
            JobTimeoutError: the deadline passed; it names the unfinished jobs.
        """
        finished: dict[str, BackgroundJob] = {}
        # A plain loop: the tracker polls only while we wait, and its deadline error comes
        # out as itself.
        async for job in self._client.track_jobs(
            self.job_ids, timeout=timeout, on_progress=on_progress
        ):
            finished[job.id] = job
        return [finished[job_id] for job_id in self.job_ids]

    async def summary(self) -> SubmissionSummary:
        """Counts per status over all jobs, and every entry that failed or was invalid.

        It does not wait: call `wait` first for the final word. Each job is fetched once; only
        the jobs whose counts show failures have their failed entries read.

        Raises:
            APIError, TransportError, ProtocolError: a job or its entries could not be read.
        """
        jobs: dict[str, BackgroundJob] = {}
        failed: dict[str, list[FailedEntry]] = {}
        invalid: dict[str, list[FailedEntry]] = {}
        limiter = anyio.CapacityLimiter(_SUMMARY_JOBS_IN_FLIGHT)

        async def read(job_id: str) -> None:
            async with limiter:
                job = await self._client.get_background_job(job_id)
                jobs[job_id] = job
                positions = self.batches[job_id]
                for status in ("INVALID", *_RETRYABLE):
                    if not job.status_counts.get(status):
                        continue
                    found = invalid if status == "INVALID" else failed
                    target = found.setdefault(job_id, [])
                    async with self._client.iter_job_entries(
                        job_id, completion_status=status
                    ) as entries:
                        async for entry in entries:
                            message = (
                                entry.validation_message
                                if status == "INVALID"
                                else entry.completion_message
                            )
                            target.append(FailedEntry(entry, job_id, positions, message or ""))

        try:
            async with anyio.create_task_group() as group:
                for job_id in self.job_ids:
                    group.start_soon(read, job_id)
        except BaseExceptionGroup as errors:
            # The first failure cancels the other reads: raise it as itself.
            if len(errors.exceptions) == 1:
                raise errors.exceptions[0] from None
            raise
        counts: dict[str, int] = {}
        for job in jobs.values():
            for status, n in job.status_counts.items():
                counts[status] = counts.get(status, 0) + n
        return SubmissionSummary(
            counts=counts,
            failed=tuple(e for job_id in self.job_ids for e in failed.get(job_id, ())),
            invalid=tuple(e for job_id in self.job_ids for e in invalid.get(job_id, ())),
            failed_batches=self.failed_batches,
            jobs=tuple(jobs[job_id] for job_id in self.job_ids),
        )

    def failed_updates(self, *, include_invalid: bool = False) -> AsyncIterator[ProcessUpdate]:
        """The updates that did not take effect, rebuilt to be sent again.

        First the items of the batches that were not accepted, then, job by job, the entries
        that ended in ERROR or CANCELLED, rebuilt from their ``processUpdate`` and the process
        the server resolved. Pass the result straight to `ChakraClient.bulk_update_processes`.
        Call `wait` first: a running job's listing is not final.

        Args:
            include_invalid: also rebuild INVALID entries; those that named no existing process
                carry no process id and are left out (`summary` lists them).

        Raises:
            ValidationError: this is a bulk-create submission.
            ProtocolError: a failed entry lacks the process id or change needed to rebuild it.
        """
        if self.operation != "update":
            raise ValidationError("operation", "failed_updates() is for bulk-update submissions")
        return self._failed_updates(include_invalid=include_invalid)

    async def _failed_updates(self, *, include_invalid: bool) -> AsyncIterator[ProcessUpdate]:
        # An async generator is safe here: it holds no task group or cancel scope across a
        # yield, and the entry iterators it opens cancel their own fetches when dropped.
        for batch in self.failed_batches:
            for item in batch.items:
                if isinstance(item, ProcessUpdate):
                    yield item
        statuses = ("INVALID", *_RETRYABLE) if include_invalid else _RETRYABLE
        for job_id in self.job_ids:
            for status in statuses:
                async with self._client.iter_job_entries(
                    job_id, completion_status=status
                ) as entries:
                    async for entry in entries:
                        update = _rebuild(entry, skip_unresolved=status == "INVALID")
                        if update is not None:
                            yield update


def _rebuild(entry: JobEntry, *, skip_unresolved: bool) -> ProcessUpdate | None:
    if not entry.process_id or entry.process_update is None:
        if skip_unresolved:
            return None
        raise ProtocolError(
            f"entry {entry.id}: cannot rebuild its update without "
            "data.apiData.processId and data.apiData.processUpdate"
        )
    change: Any = entry.process_update
    try:
        return ProcessUpdate.from_mapping({"id": entry.process_id, "update": change})
    except ValidationError as exc:
        raise ProtocolError(
            f"entry {entry.id}: data.apiData.processUpdate is not a valid change: {exc}"
        ) from None
