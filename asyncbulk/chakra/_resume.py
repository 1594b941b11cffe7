"""Rebuilding Chakra submissions from handles, and settling batches a crash left ``sending``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs

from asyncbulk._exceptions import AsyncBulkError, ValidationError
from asyncbulk._handles import BatchRecord, read_submission
from asyncbulk.chakra._submission import BatchOutcome, BulkSubmission

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from asyncbulk._journal import Journal, SubmissionRecord
    from asyncbulk.chakra._client import ChakraClient
    from asyncbulk.chakra._models import BackgroundJob

__all__ = ["INTERRUPTED", "settle_interrupted", "submission_from_handle"]

#: Why a batch left ``sending`` is ``unknown``: Chakra has no way to look a bulk request up.
INTERRUPTED: Final = (
    "the process stopped while this batch was being sent; Chakra offers no way to tell whether "
    "it was accepted, so it may or may not have been applied: check before sending it again"
)
_FETCHES_IN_FLIGHT: Final = 8


async def settle_interrupted(journal: Journal, submission: SubmissionRecord) -> SubmissionRecord:
    """The submission with every batch left ``sending`` made ``unknown``, durably recorded.

    Raises:
        JournalError: the journal cannot be written.
    """
    if not any(batch.state == "sending" for batch in submission.batches):
        return submission
    batches = []
    for batch in submission.batches:
        if batch.state == "sending":
            batch = attrs.evolve(batch, state="unknown", error=INTERRUPTED)  # noqa: PLW2901 -- the batch, settled
            await journal.record_batch(submission.id, batch)
        batches.append(batch)
    await journal.flush()
    return attrs.evolve(submission, batches=tuple(batches))


async def submission_from_handle(
    fields: Mapping[str, Any],
    fetch: Callable[[str], Awaitable[BackgroundJob]],
    *,
    client: ChakraClient,
) -> BulkSubmission:
    """A `BulkSubmission` from a submission handle's fields, its accepted jobs fetched now.

    Raises:
        ValidationError: naming the malformed field.
    """
    records = read_submission(fields)
    operation = fields["operation"]
    if operation not in {"update", "create"}:
        raise ValidationError("operation", f"must be 'update' or 'create', not {operation!r}")
    accepted = [b for b in records if b.state == "accepted" and b.job_id is not None]
    jobs: dict[str, BackgroundJob] = {}
    limiter = anyio.CapacityLimiter(_FETCHES_IN_FLIGHT)

    async def read(job_id: str) -> None:
        async with limiter:
            jobs[job_id] = await fetch(job_id)

    try:
        async with anyio.create_task_group() as group:
            for batch in accepted:
                assert batch.job_id is not None  # noqa: S101 -- filtered above, for mypy
                group.start_soon(read, batch.job_id)
    except BaseExceptionGroup as errors:
        if len(errors.exceptions) == 1:
            raise errors.exceptions[0] from None
        raise
    return BulkSubmission(
        procedure=fields["target"],
        operation=operation,
        outcomes=tuple(_outcome(batch, jobs) for batch in records),
        client=client,
        submission_id=fields["submission_id"],
    )


def _outcome(batch: BatchRecord, jobs: Mapping[str, BackgroundJob]) -> BatchOutcome:
    """A journaled batch as the submission reports it; its items are not journaled."""
    if batch.state == "accepted":
        job = jobs.get(batch.job_id) if batch.job_id is not None else None
        return BatchOutcome(batch.start, batch.stop, "accepted", job=job)
    # A batch a crash left sending may have been applied: unknown, never resent.
    state = "unknown" if batch.state == "sending" else batch.state
    reason = batch.error or (INTERRUPTED if batch.state == "sending" else batch.state)
    return BatchOutcome(batch.start, batch.stop, state, error=AsyncBulkError(reason))
