"""`PostgresStore`: tracking shared by many workers, and the journal's records, in PostgreSQL.

Every method is one statement (``pending`` reads with two), run in its own transaction, so
each is durable when it returns. Polling a vendor never comes here: a worker polls the jobs it
owns from memory and writes only when it claims, finishes, delivers or heartbeats.

Claims hand out jobs with ``FOR UPDATE SKIP LOCKED``, so workers claiming together take
disjoint shares without waiting on one another. A claim increments the job's epoch; a finish
names the owner and the epoch it claimed with and is recorded only if both still hold, so a
worker that stalled, was swept and lost its jobs records nothing. A worker's claims last as
long as its heartbeat: `PostgresStore.sweep` removes workers whose heartbeat expired and frees
their unfinished jobs.

A finished job is delivered to one consumer at a time: taking it sets a delivery lease and
bumps its attempt; acknowledging it sets the delivered mark only for the consumer and attempt
that hold it. A consumer that dies between handling and acknowledging lets the lease run out,
and the job is handed out again (attempt 2): the at-least-once window.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final, Self, cast
from urllib.parse import urlsplit

import asyncpg
import orjson

from asyncbulk._exceptions import TransportError, ValidationError
from asyncbulk.postgres._records import (
    Claim,
    Delivery,
    JobKey,
    JobKind,
    StoredBatch,
    StoredJob,
    StoredPending,
    StoredSubmission,
    StoreStats,
    SweepResult,
)
from asyncbulk.postgres._schema import check_schema_name, create_schema

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from types import TracebackType

    from asyncbulk.postgres._records import BatchLike, OriginLike, SubmissionLike

__all__ = ["PostgresStore"]

_KEY_COLUMNS: Final = ("vendor", "base_url", "account", "id")
_KINDS: Final = ("job", "task")


class PostgresStore:
    """Shared tracking state (workers, claims, finishes, deliveries) and journal records.

    Open it with ``async with PostgresStore(dsn)`` (or `open` / `aclose`); opening creates the
    tables when they are missing.

    Example::

        async with PostgresStore("postgresql://postgres@127.0.0.1/test") as store:
            await store.register_worker("worker-1")
            claims = await store.claim("worker-1", limit=100)
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "asyncbulk",
        pool_size: int = 4,
        timeout: float = 10.0,
    ) -> None:
        """Describe the store; nothing is sent before `open`.

        Args:
            dsn: the PostgreSQL DSN (``postgresql://user@host:port/database``).
            schema: the schema holding the tables; stores on one schema share everything.
            pool_size: the most connections the store opens.
            timeout: the longest one statement may take.

        Raises:
            ValidationError: a value is out of range (or the DSN's port), naming it.
        """
        self._schema = schema
        self._s = check_schema_name(schema)
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValidationError("pool_size", f"must be an integer >= 1, not {pool_size!r}")
        if not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
            raise ValidationError("timeout", f"must be a finite number > 0, not {timeout!r}")
        self._dsn = dsn
        self._where = _redacted(dsn)
        self._pool_size = pool_size
        self._timeout = float(timeout)
        self._pool: asyncpg.Pool | None = None
        self._counts = dict.fromkeys(
            ("statements", "claims", "finishes", "deliveries", "heartbeats", "journal"), 0
        )

    def __repr__(self) -> str:
        """Where the store lives, without any password of the DSN."""
        return f"PostgresStore({self._where!r}, schema={self._schema!r})"

    @property
    def schema(self) -> str:
        """The schema holding the tables."""
        return self._schema

    def statistics(self) -> StoreStats:
        """A snapshot of the statements sent so far."""
        return StoreStats(**self._counts)

    async def open(self) -> None:
        """Connect and create the tables unless they exist; idempotent.

        Raises:
            TransportError: PostgreSQL cannot be reached.
            ValidationError: the DSN is not one asyncpg can use.
            SchemaVersionError: the tables were written by a newer asyncbulk.
        """
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                command_timeout=self._timeout,
                timeout=self._timeout,
            )
        except (OSError, TimeoutError, asyncpg.PostgresError) as error:
            raise self._transport_error(error) from None
        except (ValueError, asyncpg.InterfaceError) as error:
            # asyncpg's word on a DSN out of shape, with the DSN itself (and any password) out.
            reason = str(error).replace(self._dsn, self._where)
            raise ValidationError("dsn", f"not a usable PostgreSQL DSN: {reason}") from None
        try:
            async with pool.acquire() as connection:
                await create_schema(connection, self._schema)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def aclose(self) -> None:
        """Close every connection; idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> Self:
        """Open the store."""
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the store."""
        await self.aclose()

    # Workers.

    async def register_worker(self, worker_id: str) -> None:
        """Add a worker, its heartbeat fresh (a known id just gets a fresh heartbeat).

        Raises:
            ValidationError: ``worker_id`` is empty.
        """
        _check_text("worker_id", worker_id)
        await self._execute(
            "heartbeats",
            f"INSERT INTO {self._s}.workers (id) VALUES ($1) "  # noqa: S608 -- schema checked
            "ON CONFLICT (id) DO UPDATE SET last_seen = now()",
            worker_id,
        )

    async def heartbeat(self, worker_id: str) -> bool:
        """Refresh a worker's heartbeat.

        Returns:
            False when the worker was swept: it owns nothing any more, and must drop the jobs
            it tracks and register again.
        """
        status = await self._execute(
            "heartbeats",
            f"UPDATE {self._s}.workers SET last_seen = now() WHERE id = $1",  # noqa: S608 -- schema checked
            worker_id,
        )
        return status != "UPDATE 0"

    async def unregister_worker(self, worker_id: str) -> int:
        """Remove a worker and free its unfinished jobs for others (a clean stop).

        Returns:
            How many jobs were freed.
        """
        status = await self._execute(
            "heartbeats",
            f"WITH gone AS (DELETE FROM {self._s}.workers WHERE id = $1) "  # noqa: S608 -- schema checked
            f"UPDATE {self._s}.jobs SET owner = NULL WHERE owner = $1 AND finished_at IS NULL",
            worker_id,
        )
        return _row_count(status)

    async def sweep(self, expiry: float) -> SweepResult:
        """Remove the workers whose heartbeat is older than ``expiry`` seconds; free their jobs.

        Jobs whose owner is not registered at all (it was swept while claiming) are freed too,
        and the deliveries the removed workers held are handed out again at once (their
        attempt increased: the at-least-once window). Any worker may sweep, as often as it
        likes: a sweep is one statement.

        Raises:
            ValidationError: ``expiry`` is not a positive number.
        """
        _check_seconds("expiry", expiry)
        row = await self._fetchrow(
            "heartbeats",
            f"WITH dead AS (DELETE FROM {self._s}.workers "  # noqa: S608 -- schema checked
            "  WHERE last_seen < now() - make_interval(secs => $1) RETURNING id), "
            f"freed AS (UPDATE {self._s}.jobs j SET owner = NULL "
            "  WHERE j.finished_at IS NULL AND j.owner IS NOT NULL "
            "  AND (j.owner IN (SELECT id FROM dead) "
            f"    OR NOT EXISTS (SELECT 1 FROM {self._s}.workers w WHERE w.id = j.owner)) "
            "  RETURNING 1), "
            # Deliveries the dead held go out again now, not when their lease would end; the
            # dead worker's late acknowledgement, if it was only stalled, is refused.
            f"handed AS (UPDATE {self._s}.jobs j SET delivery_until = NULL "
            "  WHERE j.finished_at IS NOT NULL AND j.delivered_at IS NULL "
            "  AND j.delivery_until IS NOT NULL AND j.delivery_owner IN (SELECT id FROM dead) "
            "  RETURNING 1) "
            "SELECT ARRAY(SELECT id FROM dead ORDER BY id) AS workers, "
            "  (SELECT count(*) FROM freed) AS jobs",
            float(expiry),
        )
        assert row is not None  # noqa: S101 -- a SELECT without FROM returns one row
        return SweepResult(workers=tuple(row["workers"]), jobs=int(row["jobs"]))

    # Claims and finishes.

    async def claim(
        self, worker_id: str, *, limit: int, origin: OriginLike | None = None
    ) -> list[Claim]:
        """Claim up to ``limit`` unclaimed, unfinished jobs for a registered worker.

        Workers claiming at the same moment take disjoint shares and never wait for one
        another (``FOR UPDATE SKIP LOCKED``). Each claim increments the job's epoch. A worker
        that is not registered (it was swept) claims nothing.

        Args:
            worker_id: the claiming worker.
            limit: the most jobs to claim.
            origin: claim only jobs of this vendor, base URL and account (the ones the
                worker's client can poll); None claims any.

        Raises:
            ValidationError: ``limit`` is not a positive integer.
        """
        _check_count("limit", limit)
        where = (None, None, None) if origin is None else _origin(origin)
        rows = await self._fetch(
            "claims",
            f"WITH picked AS (SELECT vendor, base_url, account, id FROM {self._s}.jobs "  # noqa: S608 -- schema checked
            "  WHERE finished_at IS NULL AND owner IS NULL "
            "  AND ($3::text IS NULL OR (vendor, base_url, account) = ($3, $4, $5)) "
            f"  AND EXISTS (SELECT 1 FROM {self._s}.workers WHERE id = $1) "
            "  ORDER BY added_at LIMIT $2 FOR UPDATE SKIP LOCKED) "
            f"UPDATE {self._s}.jobs j SET owner = $1, epoch = j.epoch + 1 FROM picked "
            "WHERE (j.vendor, j.base_url, j.account, j.id) "
            "  = (picked.vendor, picked.base_url, picked.account, picked.id) "
            "RETURNING j.vendor, j.base_url, j.account, j.id, j.kind, j.epoch",
            worker_id,
            limit,
            *where,
        )
        return [
            Claim(key=_key(row), kind=cast("JobKind", row["kind"]), epoch=row["epoch"])
            for row in rows
        ]

    async def finish(self, worker_id: str, finished: Sequence[tuple[Claim, Any]]) -> list[JobKey]:
        """Record jobs finished, each with the JSON result to deliver, in one statement.

        A job is recorded only if ``worker_id`` still owns it with the claim's epoch and no
        finish was recorded yet: a worker that lost a job (swept, then claimed by another)
        records nothing for it.

        Args:
            worker_id: the worker that claimed the jobs.
            finished: ``(claim, result)`` pairs; the result is JSON-serialisable or None.

        Returns:
            The keys recorded; the others were refused (fenced off).
        """
        if not finished:
            return []
        claims = [claim for claim, _ in finished]
        results = [None if r is None else orjson.dumps(r).decode() for _, r in finished]
        rows = await self._fetch(
            "finishes",
            f"UPDATE {self._s}.jobs j SET finished_at = now(), finished_by = $1, "  # noqa: S608 -- schema checked
            "  finished_epoch = f.epoch, result = f.result::jsonb "
            "FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], "
            "  $7::text[]) AS f(vendor, base_url, account, id, epoch, result) "
            "WHERE (j.vendor, j.base_url, j.account, j.id) "
            "  = (f.vendor, f.base_url, f.account, f.id) "
            "  AND j.owner = $1 AND j.epoch = f.epoch AND j.finished_at IS NULL "
            "RETURNING j.vendor, j.base_url, j.account, j.id",
            worker_id,
            *_key_columns(c.key for c in claims),
            [c.epoch for c in claims],
            results,
        )
        return [_key(row) for row in rows]

    # Deliveries.

    async def take_deliveries(
        self, consumer_id: str, *, limit: int, lease: float
    ) -> list[Delivery]:
        """Hand up to ``limit`` finished, undelivered jobs to one consumer for ``lease`` seconds.

        Consumers taking at the same moment get disjoint jobs. A job whose earlier delivery
        lease ran out unacknowledged is handed out again, with its attempt increased.

        Raises:
            ValidationError: ``limit`` or ``lease`` is out of range.
        """
        _check_text("consumer_id", consumer_id)
        _check_count("limit", limit)
        _check_seconds("lease", lease)
        rows = await self._fetch(
            "deliveries",
            f"WITH picked AS (SELECT vendor, base_url, account, id FROM {self._s}.jobs "  # noqa: S608 -- schema checked
            "  WHERE finished_at IS NOT NULL AND delivered_at IS NULL "
            "  AND (delivery_until IS NULL OR delivery_until < now()) "
            "  ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED) "
            f"UPDATE {self._s}.jobs j SET delivery_owner = $1, "
            "  delivery_until = now() + make_interval(secs => $3), deliveries = j.deliveries + 1 "
            "FROM picked WHERE (j.vendor, j.base_url, j.account, j.id) "
            "  = (picked.vendor, picked.base_url, picked.account, picked.id) "
            "RETURNING j.vendor, j.base_url, j.account, j.id, j.kind, j.result::text AS result, "
            "  j.deliveries",
            consumer_id,
            limit,
            float(lease),
        )
        return [
            Delivery(
                key=_key(row),
                kind=cast("JobKind", row["kind"]),
                result=None if row["result"] is None else orjson.loads(row["result"]),
                attempt=row["deliveries"],
            )
            for row in rows
        ]

    async def acknowledge(self, consumer_id: str, deliveries: Sequence[Delivery]) -> list[JobKey]:
        """Set the delivered mark on jobs this consumer handled, in one statement.

        Only the consumer and attempt holding a delivery can mark it: an acknowledgement that
        comes after the lease ran out and the job went to another consumer is refused.

        Returns:
            The keys marked delivered; the others were refused.
        """
        if not deliveries:
            return []
        rows = await self._fetch(
            "deliveries",
            f"UPDATE {self._s}.jobs j SET delivered_at = now(), delivery_until = NULL "  # noqa: S608 -- schema checked
            "FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::integer[]) "
            "  AS d(vendor, base_url, account, id, attempt) "
            "WHERE (j.vendor, j.base_url, j.account, j.id) "
            "  = (d.vendor, d.base_url, d.account, d.id) "
            "  AND j.delivery_owner = $1 AND j.deliveries = d.attempt "
            "  AND j.delivered_at IS NULL "
            "RETURNING j.vendor, j.base_url, j.account, j.id",
            consumer_id,
            *_key_columns(d.key for d in deliveries),
            [d.attempt for d in deliveries],
        )
        return [_key(row) for row in rows]

    # The journal's shape: submissions, batches, tracked jobs.

    async def begin_submission(
        self,
        submission: SubmissionLike,
        *,
        durable: bool = False,  # noqa: ARG002 -- every write is durable when it returns
    ) -> None:
        """Record a new submission with the batches it already has.

        Raises:
            ValidationError: a submission with this id is already recorded.
        """
        origin = submission.origin
        batches = list(submission.batches)
        request = None if submission.request is None else orjson.dumps(submission.request)
        try:
            await self._execute(
                "journal",
                f"WITH s AS (INSERT INTO {self._s}.submissions "  # noqa: S608 -- schema checked
                "  (id, vendor, base_url, account, target, operation, request) "
                "  VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb) RETURNING id) "
                f"INSERT INTO {self._s}.batches (submission_id, start, stop, state, job_id, error) "
                "SELECT s.id, b.start, b.stop, b.state, b.job_id, b.error FROM s, "
                "  unnest($8::integer[], $9::integer[], $10::text[], $11::text[], $12::text[]) "
                "  AS b(start, stop, state, job_id, error)",
                submission.id,
                origin.vendor,
                origin.base_url,
                origin.account,
                submission.target,
                submission.operation,
                None if request is None else request.decode(),
                [b.start for b in batches],
                [b.stop for b in batches],
                [b.state for b in batches],
                [b.job_id for b in batches],
                [b.error for b in batches],
            )
        except asyncpg.UniqueViolationError:
            raise ValidationError(
                "submission.id", f"{submission.id!r} is already recorded"
            ) from None

    async def record_batch(
        self,
        submission_id: str,
        batch: BatchLike,
        *,
        durable: bool = False,  # noqa: ARG002 -- every write is durable when it returns
    ) -> None:
        """Record a batch's state, replacing what was recorded for the batch at its start.

        Raises:
            ValidationError: no such submission, or the state is not a batch state.
        """
        try:
            await self._execute(
                "journal",
                f"INSERT INTO {self._s}.batches (submission_id, start, stop, state, job_id, error) "  # noqa: S608 -- schema checked
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (submission_id, start) DO UPDATE "
                "SET stop = excluded.stop, state = excluded.state, job_id = excluded.job_id, "
                "  error = excluded.error",
                submission_id,
                batch.start,
                batch.stop,
                batch.state,
                batch.job_id,
                batch.error,
            )
        except asyncpg.ForeignKeyViolationError:
            raise ValidationError(
                "submission_id", f"no submission {submission_id!r} is recorded"
            ) from None
        except asyncpg.CheckViolationError:
            raise ValidationError("batch.state", f"{batch.state!r} is not a batch state") from None

    async def end_submission(
        self,
        submission_id: str,
        *,
        durable: bool = False,  # noqa: ARG002 -- every write is durable when it returns
    ) -> None:
        """Record that a submission has nothing more to send: it is no longer pending.

        Raises:
            ValidationError: no such submission is pending.
        """
        status = await self._execute(
            "journal",
            f"UPDATE {self._s}.submissions SET ended_at = now() "  # noqa: S608 -- schema checked
            "WHERE id = $1 AND ended_at IS NULL",
            submission_id,
        )
        if status == "UPDATE 0":
            raise ValidationError("submission_id", f"no submission {submission_id!r} is pending")

    async def add_jobs(
        self,
        origin: OriginLike,
        kind: JobKind,
        job_ids: Sequence[str],
        *,
        durable: bool = False,  # noqa: ARG002 -- every write is durable when it returns
    ) -> None:
        """Record jobs to track; any live worker may claim them. A known job keeps its state.

        Raises:
            ValidationError: ``kind`` is not ``job`` or ``task``, or an id is empty.
        """
        if kind not in _KINDS:
            raise ValidationError("kind", f"must be 'job' or 'task', not {kind!r}")
        for position, job_id in enumerate(job_ids):
            _check_text(f"job_ids[{position}]", job_id)
        if not job_ids:
            return
        await self._execute(
            "journal",
            f"INSERT INTO {self._s}.jobs (vendor, base_url, account, id, kind) "  # noqa: S608 -- schema checked
            "SELECT $1, $2, $3, j.id, $4 FROM unnest($5::text[]) WITH ORDINALITY AS j(id, n) "
            "ORDER BY j.n ON CONFLICT DO NOTHING",
            origin.vendor,
            origin.base_url,
            origin.account,
            kind,
            list(job_ids),
        )

    async def finish_job(
        self,
        origin: OriginLike,
        job_id: str,
        *,
        durable: bool = False,
    ) -> None:
        """Record a job finished by a tracker outside the workers (a job no worker claimed).

        A job a worker owns is finished only through `finish`, with its epoch.
        """
        await self.finish_jobs(origin, [job_id], durable=durable)

    async def finish_jobs(
        self,
        origin: OriginLike,
        job_ids: Sequence[str],
        *,
        durable: bool = False,  # noqa: ARG002 -- every write is durable when it returns
    ) -> None:
        """`finish_job` for many jobs, in one statement."""
        if not job_ids:
            return
        await self._execute(
            "journal",
            f"UPDATE {self._s}.jobs SET finished_at = now() "  # noqa: S608 -- schema checked
            "WHERE (vendor, base_url, account) = ($1, $2, $3) AND id = ANY($4::text[]) "
            "  AND owner IS NULL AND finished_at IS NULL",
            origin.vendor,
            origin.base_url,
            origin.account,
            list(job_ids),
        )

    async def deliver_job(
        self,
        origin: OriginLike,
        job_id: str,
        *,
        durable: bool = False,  # noqa: ARG002 -- every write is durable when it returns
    ) -> None:
        """Set the delivered mark of a job (a consumer outside `take_deliveries`).

        A job delivered before any finish was recorded is marked finished too, so no worker
        that owns it can record a finish, and no consumer is handed it again.
        """
        await self._execute(
            "journal",
            f"UPDATE {self._s}.jobs SET delivered_at = now(), delivery_until = NULL, "  # noqa: S608 -- schema checked
            "  finished_at = coalesce(finished_at, now()) "
            "WHERE (vendor, base_url, account, id) = ($1, $2, $3, $4) AND delivered_at IS NULL",
            origin.vendor,
            origin.base_url,
            origin.account,
            job_id,
        )

    async def pending(self, origin: OriginLike) -> StoredPending:
        """What is unfinished for this origin: submissions not ended, jobs not delivered."""
        where = (origin.vendor, origin.base_url, origin.account)
        submissions = await self._fetch(
            "journal",
            "SELECT s.id, s.target, s.operation, s.request::text AS request, "  # noqa: S608 -- schema checked
            "  coalesce(array_agg(ROW(b.start, b.stop, b.state, b.job_id, b.error) "
            "    ORDER BY b.start) FILTER (WHERE b.start IS NOT NULL), '{}') AS batches "
            f"FROM {self._s}.submissions s LEFT JOIN {self._s}.batches b ON b.submission_id = s.id "
            "WHERE (s.vendor, s.base_url, s.account) = ($1, $2, $3) AND s.ended_at IS NULL "
            "GROUP BY s.id ORDER BY min(s.seq)",
            *where,
        )
        jobs = await self._fetch(
            "journal",
            f"SELECT vendor, base_url, account, id, kind, finished_at IS NOT NULL AS finished "  # noqa: S608 -- schema checked
            f"FROM {self._s}.jobs WHERE (vendor, base_url, account) = ($1, $2, $3) "
            "  AND delivered_at IS NULL ORDER BY seq",
            *where,
        )
        return StoredPending(
            submissions=tuple(
                StoredSubmission(
                    id=row["id"],
                    vendor=origin.vendor,
                    base_url=origin.base_url,
                    account=origin.account,
                    target=row["target"],
                    operation=row["operation"],
                    request=None if row["request"] is None else orjson.loads(row["request"]),
                    batches=tuple(
                        StoredBatch(start=b[0], stop=b[1], state=b[2], job_id=b[3], error=b[4])
                        for b in row["batches"]
                    ),
                )
                for row in submissions
            ),
            jobs=tuple(
                StoredJob(
                    key=_key(row), kind=cast("JobKind", row["kind"]), finished=row["finished"]
                )
                for row in jobs
            ),
        )

    async def flush(self) -> None:
        """Nothing to wait for: every write is durable when it returns."""

    # One way to the database.

    async def _execute(self, purpose: str, sql: str, *args: Any) -> str:
        connection_pool = self._require_pool()
        self._count(purpose)
        try:
            return await connection_pool.execute(sql, *args, timeout=self._timeout)
        except (OSError, TimeoutError, asyncpg.InterfaceError) as error:
            raise self._transport_error(error) from None

    async def _fetch(self, purpose: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        connection_pool = self._require_pool()
        self._count(purpose)
        try:
            return await connection_pool.fetch(sql, *args, timeout=self._timeout)
        except (OSError, TimeoutError, asyncpg.InterfaceError) as error:
            raise self._transport_error(error) from None

    async def _fetchrow(self, purpose: str, sql: str, *args: Any) -> asyncpg.Record | None:
        rows = await self._fetch(purpose, sql, *args)
        return rows[0] if rows else None

    def _count(self, purpose: str) -> None:
        self._counts["statements"] += 1
        self._counts[purpose] += 1

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise ValidationError("store", "is not open: use `async with` or call open() first")
        return self._pool

    def _transport_error(self, error: BaseException) -> TransportError:
        return TransportError(
            type(error).__name__, method="SQL", url=self._where, sent=self._pool is not None
        )


def _origin(origin: OriginLike) -> tuple[str, str, str]:
    return (origin.vendor, origin.base_url, origin.account)


def _key(row: asyncpg.Record) -> JobKey:
    return JobKey(
        vendor=row["vendor"], base_url=row["base_url"], account=row["account"], id=row["id"]
    )


def _key_columns(keys: Iterable[JobKey]) -> list[list[str]]:
    columns: list[list[str]] = [[], [], [], []]
    for key in keys:
        for column, name in zip(columns, _KEY_COLUMNS, strict=True):
            column.append(getattr(key, name))
    return columns


def _row_count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


def _check_text(name: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValidationError(name, f"must be a non-empty string, not {value!r}")


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(name, f"must be an integer >= 1, not {value!r}")


def _check_seconds(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(name, f"must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValidationError(name, f"must be a finite number of seconds > 0, not {value!r}")


def _redacted(dsn: str) -> str:
    """The DSN's host, port and database: never its user's password.

    Raises:
        ValidationError: the DSN is not a string, or its port is not a port number.
    """
    if not isinstance(dsn, str):
        raise ValidationError("dsn", f"must be a string, not {type(dsn).__name__}")
    parts = urlsplit(dsn)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        raise ValidationError("dsn", "its port is not a number from 1 to 65535") from None
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
