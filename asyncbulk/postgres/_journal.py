"""`PostgresJournal`: the journal protocol over `PostgresStore`, for clients of many replicas.

A client given ``journal=PostgresJournal(...)`` records its submissions and the jobs it tracks
in the tables the workers share: a job a replica submits is then claimable by whichever worker
is alive, and `resume_pending` on any replica reads back what the SQLite journal would.
Every write is one statement in its own transaction, durable when it returns, so ``durable=``
costs nothing more and `flush` has nothing to wait for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self, cast

from asyncbulk._exceptions import ValidationError
from asyncbulk._handles import BatchRecord, BatchState
from asyncbulk._journal import JobKind, Pending, SubmissionRecord, TrackedJob
from asyncbulk.postgres._store import PostgresStore

if TYPE_CHECKING:
    from collections.abc import Sequence

    from asyncbulk._handles import Origin

__all__ = ["PostgresJournal"]


class PostgresJournal:
    """A `asyncbulk.Journal` kept in PostgreSQL, shared by every replica and worker.

    Give it a DSN (it opens and closes a `PostgresStore` of its own) or an open store shared
    with a `Worker` (left to its owner to close). Open it with ``async with`` before handing
    it to a client: a client never closes a journal it was given.

    Example::

        async with PostgresJournal("postgresql://postgres@127.0.0.1/test") as journal:
            async with ChakraClient(token, journal=journal) as chakra:
                pending = await chakra.resume_pending()

    Args:
        store: a DSN, or a `PostgresStore` (open or not).
        schema: the schema holding the tables, when `store` is a DSN.
        pool_size: the most connections, when `store` is a DSN.
        timeout: the longest one statement may take, when `store` is a DSN.

    Raises:
        ValidationError: `store` is neither a DSN nor a store, or a setting is out of range.
    """

    def __init__(
        self,
        store: PostgresStore | str,
        *,
        schema: str = "asyncbulk",
        pool_size: int = 4,
        timeout: float = 10.0,
    ) -> None:
        """Describe the journal; nothing is sent before it is opened."""
        if isinstance(store, PostgresStore):
            self._store, self._owns = store, False
        elif isinstance(store, str) and store:
            self._store = PostgresStore(store, schema=schema, pool_size=pool_size, timeout=timeout)
            self._owns = True
        else:
            raise ValidationError("store", f"must be a DSN or a PostgresStore, not {store!r}")

    def __repr__(self) -> str:
        """The store, without any password."""
        return f"PostgresJournal({self._store!r})"

    @property
    def store(self) -> PostgresStore:
        """The store the records are kept in."""
        return self._store

    async def open(self) -> None:
        """Open the store (create its tables unless they exist); idempotent.

        Raises:
            TransportError: PostgreSQL cannot be reached.
            SchemaVersionError: the tables were written by a newer asyncbulk.
        """
        await self._store.open()

    async def aclose(self) -> None:
        """Close the store if this journal opened it; idempotent."""
        if self._owns:
            await self._store.aclose()

    async def __aenter__(self) -> Self:
        """Open the store: see `open`."""
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close it: see `aclose`."""
        await self.aclose()

    async def begin_submission(
        self, submission: SubmissionRecord, *, durable: bool = False
    ) -> None:
        """Record a new submission with the batches it already has.

        Raises:
            ValidationError: a submission with this id is already recorded.
            TransportError: PostgreSQL cannot be reached.
        """
        await self._store.begin_submission(submission, durable=durable)

    async def record_batch(
        self, submission_id: str, batch: BatchRecord, *, durable: bool = False
    ) -> None:
        """Record a batch's state, replacing what was recorded for the batch at its start.

        Raises:
            ValidationError: no submission has this id.
            TransportError: PostgreSQL cannot be reached.
        """
        await self._store.record_batch(submission_id, batch, durable=durable)

    async def end_submission(self, submission_id: str, *, durable: bool = False) -> None:
        """Record that a submission has nothing more to send: it is no longer pending.

        Raises:
            ValidationError: no pending submission has this id.
            TransportError: PostgreSQL cannot be reached.
        """
        await self._store.end_submission(submission_id, durable=durable)

    async def add_jobs(
        self, origin: Origin, kind: JobKind, job_ids: Sequence[str], *, durable: bool = False
    ) -> None:
        """Record jobs to track (any live worker may claim them); a known job keeps its state.

        Raises:
            TransportError: PostgreSQL cannot be reached.
        """
        await self._store.add_jobs(origin, kind, job_ids, durable=durable)

    async def finish_job(self, origin: Origin, job_id: str, *, durable: bool = False) -> None:
        """Record that a tracker saw a job finished; a job a worker owns is the worker's to finish.

        Raises:
            TransportError: PostgreSQL cannot be reached.
        """
        await self._store.finish_job(origin, job_id, durable=durable)

    async def finish_jobs(
        self, origin: Origin, job_ids: Sequence[str], *, durable: bool = False
    ) -> None:
        """`finish_job` for many jobs, in one statement.

        Raises:
            TransportError: PostgreSQL cannot be reached.
        """
        await self._store.finish_jobs(origin, job_ids, durable=durable)

    async def deliver_job(self, origin: Origin, job_id: str, *, durable: bool = False) -> None:
        """Record that the consumer took a job: no worker or consumer will have it again.

        Raises:
            TransportError: PostgreSQL cannot be reached.
        """
        await self._store.deliver_job(origin, job_id, durable=durable)

    async def pending(self, origin: Origin) -> Pending:
        """Submissions not ended and jobs not delivered, for this origin, as recorded.

        Raises:
            TransportError: PostgreSQL cannot be reached.
        """
        stored = await self._store.pending(origin)
        return Pending(
            submissions=tuple(
                SubmissionRecord(
                    id=s.id,
                    origin=origin,
                    target=s.target,
                    operation=s.operation,
                    request=s.request,
                    batches=tuple(
                        BatchRecord(
                            start=b.start,
                            stop=b.stop,
                            state=cast("BatchState", b.state),
                            job_id=b.job_id,
                            error=b.error,
                        )
                        for b in s.batches
                    ),
                )
                for s in stored.submissions
            ),
            jobs=tuple(
                TrackedJob(origin=origin, kind=j.kind, id=j.key.id, finished=j.finished)
                for j in stored.jobs
            ),
        )

    async def flush(self) -> None:
        """Nothing to wait for: every write is durable when it returns."""
