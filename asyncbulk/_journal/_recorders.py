"""What the submission and tracking code call: which writes wait for the disk, in one place.

`SubmissionLog` records one submission's batches: ``sending`` durably before the request leaves
(a crash after sending must find it), ``accepted`` durably before the batch is reported accepted
(its job id must survive), failures without waiting (they can be worked out again: a batch left
``sending`` is settled on resume). `TrackingLog` records one tracker's jobs: added and finished
without waiting (a job lost from the journal is still polled again on resume), delivered
durably before the next job is handed out, which is what bounds a duplicate delivery to the job
the consumer held when the process died.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Literal, Self

from asyncbulk._exceptions import scrub
from asyncbulk._handles import BatchRecord, Origin
from asyncbulk._journal._protocol import JobKind, SubmissionRecord, finish_jobs

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from asyncbulk._journal._protocol import Journal

__all__ = ["SubmissionLog", "TrackingLog"]


class SubmissionLog:
    """The journal's record of one submission, written as its batches go.

    Args:
        journal: where to write.
        record: the submission as begun (see `begin`).
    """

    def __init__(self, journal: Journal, record: SubmissionRecord) -> None:
        """Write to `journal` for the submission `record`."""
        self._journal = journal
        self.record = record

    @classmethod
    async def begin(
        cls,
        journal: Journal,
        origin: Origin,
        *,
        target: str,
        operation: str,
        request: Mapping[str, Any] | None = None,
    ) -> Self:
        """Record a new submission (not waiting for the disk: its first batch's write will).

        Args:
            journal: where to write.
            origin: the client's origin.
            target: what it changes (a Chakra procedure, ``contracts`` for Zefort).
            operation: ``update`` or ``create``.
            request: what settling a batch left ``sending`` needs (Zefort: ``{"body": ...}``).
        """
        record = SubmissionRecord(
            id=uuid.uuid4().hex, origin=origin, target=target, operation=operation, request=request
        )
        await journal.begin_submission(record)
        return cls(journal, record)

    @property
    def id(self) -> str:
        """The submission's id in the journal."""
        return self.record.id

    async def sending(self, positions: range) -> None:
        """Before the batch's request leaves: returns once the batch is on disk as sending."""
        await self._write(positions, "sending", durable=True)

    async def accepted(
        self, positions: range, job_id: str | None, *, track: JobKind | None = None
    ) -> None:
        """Once the server accepted the batch: returns once its job or task id is on disk.

        With `track`, the job is also recorded as a tracked job of that kind (in the same
        durable write), so that it stays pending until a tracker delivers it, even when the
        process dies before anyone starts tracking it.
        """
        if track is not None and job_id is not None:
            await self._journal.add_jobs(self.record.origin, track, [job_id])
        await self._write(positions, "accepted", job_id=job_id, durable=True)

    async def failed(
        self, positions: range, state: Literal["rejected", "unknown"], error: str
    ) -> None:
        """The batch was refused or its outcome is unknown (the error scrubbed of credentials)."""
        await self._write(positions, state, error=scrub(error), durable=False)

    async def not_sent(self, positions: range, reason: str | None = None) -> None:
        """The batch was never sent (the submission stopped before it)."""
        await self._write(
            positions, "not_sent", error=None if reason is None else scrub(reason), durable=False
        )

    async def end(self) -> None:
        """The submission has nothing more to send: it leaves the pending work."""
        await self._journal.end_submission(self.id)

    async def _write(
        self,
        positions: range,
        state: Literal["sending", "accepted", "rejected", "unknown", "not_sent"],
        *,
        durable: bool,
        job_id: str | None = None,
        error: str | None = None,
    ) -> None:
        batch = BatchRecord(
            start=positions.start, stop=positions.stop, state=state, job_id=job_id, error=error
        )
        await self._journal.record_batch(self.id, batch, durable=durable)


class TrackingLog:
    """The journal's record of the jobs one tracker follows.

    Args:
        journal: where to write.
        origin: the client's origin.
        kind: ``job`` (Chakra) or ``task`` (Zefort).
    """

    def __init__(self, journal: Journal, origin: Origin, kind: JobKind) -> None:
        """Write to `journal` for jobs of `kind` from `origin`."""
        self._journal = journal
        self._origin = origin
        self._kind: JobKind = kind

    async def added(self, job_ids: Iterable[str]) -> None:
        """The tracker starts following these jobs (not waiting for the disk)."""
        await self._journal.add_jobs(self._origin, self._kind, list(job_ids))

    async def finished(self, job_id: str) -> None:
        """The tracker saw this job finished (not waiting for the disk)."""
        await self._journal.finish_job(self._origin, job_id)

    async def finished_many(self, job_ids: Sequence[str]) -> None:
        """The tracker saw these jobs finished: one write where the journal can (no disk wait)."""
        await finish_jobs(self._journal, self._origin, job_ids)

    async def delivered(self, job_id: str) -> None:
        """The consumer asked for the next job: returns once this one is on disk as delivered."""
        await self._journal.deliver_job(self._origin, job_id, durable=True)
