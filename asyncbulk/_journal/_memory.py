"""`MemoryJournal`: the journal a client uses when given none; it lasts as long as the process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

import attrs

from asyncbulk._exceptions import ValidationError
from asyncbulk._journal._protocol import JobKind, Pending, SubmissionRecord, TrackedJob

if TYPE_CHECKING:
    from collections.abc import Sequence

    from asyncbulk._handles import BatchRecord, Origin

__all__ = ["MemoryJournal"]


class MemoryJournal:
    """A `Journal` in memory: every write is as durable as the process, at once.

    Nothing survives a restart; it gives a process the same records a file would, so code that
    reads `pending` works the same with either.
    """

    def __init__(self) -> None:
        """Start empty."""
        self._submissions: dict[str, SubmissionRecord] = {}
        # Each submission's batches by start, kept apart from its record: recording a batch
        # then costs the same however many came before it.
        self._batches: dict[str, dict[int, BatchRecord]] = {}
        # Per origin and kind, each job's id and whether it was seen finished: plain strings
        # and booleans, which the cyclic collector never visits however many jobs are kept.
        self._jobs: dict[tuple[Origin, JobKind], dict[str, bool]] = {}

    def __repr__(self) -> str:
        """What it holds, in counts."""
        jobs = sum(len(ids) for ids in self._jobs.values())
        return f"MemoryJournal(submissions={len(self._submissions)}, jobs={jobs})"

    async def begin_submission(
        self,
        submission: SubmissionRecord,
        *,
        durable: bool = False,  # noqa: ARG002 -- every write is durable here
    ) -> None:
        """Record a new submission.

        Raises:
            ValidationError: a submission with this id is already recorded.
        """
        if submission.id in self._submissions:
            raise ValidationError("submission.id", f"{submission.id!r} is already recorded")
        self._submissions[submission.id] = submission
        self._batches[submission.id] = {b.start: b for b in submission.batches}

    async def record_batch(
        self,
        submission_id: str,
        batch: BatchRecord,
        *,
        durable: bool = False,  # noqa: ARG002 -- every write is durable here
    ) -> None:
        """Record a batch's state.

        Raises:
            ValidationError: no such submission.
        """
        self._get(submission_id)
        self._batches[submission_id][batch.start] = batch

    async def end_submission(self, submission_id: str, *, durable: bool = False) -> None:  # noqa: ARG002 -- every write is durable here
        """Record that a submission has nothing more to send: it is forgotten.

        Raises:
            ValidationError: no such submission.
        """
        self._get(submission_id)
        del self._submissions[submission_id]
        del self._batches[submission_id]

    async def add_jobs(
        self,
        origin: Origin,
        kind: JobKind,
        job_ids: Sequence[str],
        *,
        durable: bool = False,  # noqa: ARG002 -- every write is durable here
    ) -> None:
        """Record jobs a tracker starts following."""
        jobs = self._jobs.setdefault((origin, kind), {})
        for job_id in job_ids:
            jobs.setdefault(job_id, False)

    async def finish_job(self, origin: Origin, job_id: str, *, durable: bool = False) -> None:
        """Record that a tracker saw a job finished."""
        await self.finish_jobs(origin, [job_id], durable=durable)

    async def finish_jobs(
        self,
        origin: Origin,
        job_ids: Sequence[str],
        *,
        durable: bool = False,  # noqa: ARG002 -- every write is durable here
    ) -> None:
        """Record that a tracker saw these jobs finished (`finish_job` for each, in one go)."""
        for (o, _), jobs in self._jobs.items():
            if o is origin or o == origin:
                for job_id in job_ids:
                    if job_id in jobs:
                        jobs[job_id] = True

    async def deliver_job(self, origin: Origin, job_id: str, *, durable: bool = False) -> None:  # noqa: ARG002 -- every write is durable here
        """Record that the consumer took a job: it is forgotten."""
        for (o, _), jobs in self._jobs.items():
            if o is origin or o == origin:
                jobs.pop(job_id, None)

    async def pending(self, origin: Origin) -> Pending:
        """Submissions not ended and jobs not delivered, for this origin."""
        return Pending(
            submissions=tuple(
                self._with_batches(s) for s in self._submissions.values() if s.origin == origin
            ),
            jobs=tuple(
                TrackedJob(origin=origin, kind=kind, id=job_id, finished=finished)
                for (o, kind), jobs in self._jobs.items()
                if o == origin
                for job_id, finished in jobs.items()
            ),
        )

    async def flush(self) -> None:
        """Nothing to wait for: every write is done when it returns."""

    async def aclose(self) -> None:
        """Nothing to release."""

    async def __aenter__(self) -> Self:
        """Nothing to open."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Nothing to close."""

    def _with_batches(self, submission: SubmissionRecord) -> SubmissionRecord:
        """The submission's record with its batches as recorded, in input order."""
        batches = self._batches[submission.id]
        return attrs.evolve(submission, batches=tuple(batches[start] for start in sorted(batches)))

    def _get(self, submission_id: str) -> SubmissionRecord:
        submission = self._submissions.get(submission_id)
        if submission is None:
            raise ValidationError("submission_id", f"no submission {submission_id!r} is recorded")
        return submission
