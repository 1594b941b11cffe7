"""The journal's protocol and the records it keeps.

A journal records two things, keyed by the `Origin` (vendor, base URL, account fingerprint) of
the client that made them:

- **submissions** and their batches: a batch is written ``sending`` before its request leaves,
  then ``accepted`` with its job or task id, ``rejected``, ``unknown`` or ``not_sent``; a
  submission ends when it has nothing more to send;
- **tracked jobs**: added when a tracker starts following them, finished when it sees them
  finished, delivered when the consumer has taken them.

`Journal.pending` reads back what is unfinished: submissions that never ended and tracked jobs
not yet delivered. That is the whole interface, so another store implements it without the
clients changing.

Durability: every write is applied in the order it was made. A write made with
``durable=True`` returns only once it, and every write made before it, would survive the
process being killed; the others become durable soon after (a store may batch them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, runtime_checkable

import attrs

from asyncbulk._handles import BatchRecord, Origin, job_handle, submission_handle

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import TracebackType

__all__ = ["JobKind", "Journal", "Pending", "SubmissionRecord", "TrackedJob", "finish_jobs"]

JobKind = Literal["job", "task"]


@attrs.frozen(kw_only=True)
class SubmissionRecord:
    """A submission as the journal holds it.

    Attributes:
        id: the submission's id, unique in the journal.
        origin: the client it was made by.
        target: what it changes: a Chakra procedure, or ``contracts`` for Zefort.
        operation: ``update`` or ``create``.
        request: what the vendor needs to settle a batch left ``sending`` (Zefort: the request
            body, to find the task that carries it); None when nothing is needed. Never a
            credential.
        batches: its batches in input order, each as last recorded.
    """

    id: str
    origin: Origin
    target: str
    operation: str
    request: Mapping[str, Any] | None = attrs.field(default=None, repr=False)
    batches: tuple[BatchRecord, ...] = ()

    def handle(self) -> dict[str, Any]:
        """The submission's handle (see `asyncbulk._handles`)."""
        return submission_handle(
            self.origin,
            submission_id=self.id,
            target=self.target,
            operation=self.operation,
            batches=self.batches,
        )


@attrs.frozen(kw_only=True)
class TrackedJob:
    """A job or task a tracker follows, as the journal holds it.

    Attributes:
        origin: the client that tracks it.
        kind: ``job`` (Chakra) or ``task`` (Zefort).
        id: the job or task id.
        finished: whether a tracker saw it finished (it is not delivered yet).
    """

    origin: Origin
    kind: JobKind
    id: str
    finished: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        """``(vendor, account, id)``: the same for every delivery of this job, to deduplicate."""
        return (self.origin.vendor, self.origin.account, self.id)

    def handle(self) -> dict[str, Any]:
        """The job's or task's handle, for `ChakraClient.resume` or `ZefortClient.resume`."""
        return job_handle(self.origin, self.kind, self.id)


@attrs.frozen(kw_only=True)
class Pending:
    """What a journal holds unfinished for one origin.

    Attributes:
        submissions: submissions that never ended, oldest first.
        jobs: tracked jobs not yet delivered, in the order they were added.
    """

    submissions: tuple[SubmissionRecord, ...] = ()
    jobs: tuple[TrackedJob, ...] = ()


@runtime_checkable
class Journal(Protocol):
    """Where submissions and tracked jobs are recorded, to resume them after a restart.

    `asyncbulk.SQLiteJournal` keeps them in a file and `asyncbulk.MemoryJournal` in memory.
    Every write keeps the order it was made in; ``durable=True`` returns once the write and
    every earlier one are safe from a crash. A store holds no credential.
    """

    async def begin_submission(
        self, submission: SubmissionRecord, *, durable: bool = False
    ) -> None:
        """Record a new submission, with the batches it already has (usually none)."""

    async def record_batch(
        self, submission_id: str, batch: BatchRecord, *, durable: bool = False
    ) -> None:
        """Record a batch's state, replacing what was recorded for the batch at its start."""

    async def end_submission(self, submission_id: str, *, durable: bool = False) -> None:
        """Record that a submission has nothing more to send: it is no longer pending."""

    async def add_jobs(
        self, origin: Origin, kind: JobKind, job_ids: Sequence[str], *, durable: bool = False
    ) -> None:
        """Record jobs a tracker starts following; a job already recorded keeps its state."""

    async def finish_job(self, origin: Origin, job_id: str, *, durable: bool = False) -> None:
        """Record that a tracker saw a job finished.

        A journal may also offer ``finish_jobs(origin, job_ids, *, durable=False)``, the same
        for many jobs in one write; a tracker uses it when it is there (every journal of this
        library has it), and `finish_job` for each job otherwise.
        """

    async def deliver_job(self, origin: Origin, job_id: str, *, durable: bool = False) -> None:
        """Record that the consumer took a finished job: it is no longer pending."""

    async def pending(self, origin: Origin) -> Pending:
        """What is unfinished for this origin: submissions not ended, jobs not delivered."""

    async def flush(self) -> None:
        """Return once every write made so far is durable."""

    async def aclose(self) -> None:
        """Make every write durable and release the store; idempotent."""

    async def __aenter__(self) -> Self:
        """Open the store."""

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the store."""


async def finish_jobs(
    journal: Journal, origin: Origin, job_ids: Sequence[str], *, durable: bool = False
) -> None:
    """Record these jobs finished: in one write when the journal has ``finish_jobs``."""
    if not job_ids:
        return
    bulk = getattr(journal, "finish_jobs", None)
    if bulk is not None:
        await bulk(origin, job_ids, durable=durable)
        return
    for job_id in job_ids:
        await journal.finish_job(origin, job_id, durable=durable)
