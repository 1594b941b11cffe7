"""`SQLiteJournal`: the journal in one SQLite file, from the standard library.

One connection lives on one dedicated thread, which takes operations from a queue in order.
Writes that arrive within one commit interval go into one transaction, so many writes cost
few disk syncs; a caller that needs a write to survive a crash passes ``durable=True`` and is
woken once its transaction has committed (``synchronous=FULL`` in WAL mode: committed means on
disk); a transaction holding such a write takes what is queued already and commits at once,
without waiting out the interval. Reads go through the same thread, so they see every write
made before them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any, Final, Self

import attrs

from asyncbulk._exceptions import JournalError, SchemaVersionError, ValidationError
from asyncbulk._handles import BatchRecord, Origin
from asyncbulk._journal._protocol import JobKind, Pending, SubmissionRecord, TrackedJob

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["SCHEMA_VERSION", "JournalStats", "SQLiteJournal"]

#: The version of the file's tables this library writes (``PRAGMA user_version``).
SCHEMA_VERSION: Final = 1
# "asbj" in ``PRAGMA application_id``: a file of another program is never taken for a journal.
_APPLICATION_ID: Final = 0x6173626A
_BUSY_TIMEOUT_MS: Final = 5000
_SCHEMA: Final = (
    """CREATE TABLE submissions (
        id TEXT PRIMARY KEY,
        vendor TEXT NOT NULL,
        base_url TEXT NOT NULL,
        account TEXT NOT NULL,
        target TEXT NOT NULL,
        operation TEXT NOT NULL,
        request TEXT
    )""",
    "CREATE INDEX submissions_by_origin ON submissions (vendor, base_url, account)",
    """CREATE TABLE batches (
        submission_id TEXT NOT NULL,
        start INTEGER NOT NULL,
        stop INTEGER NOT NULL,
        state TEXT NOT NULL,
        job_id TEXT,
        error TEXT,
        PRIMARY KEY (submission_id, start)
    ) WITHOUT ROWID""",
    """CREATE TABLE jobs (
        vendor TEXT NOT NULL,
        base_url TEXT NOT NULL,
        account TEXT NOT NULL,
        id TEXT NOT NULL,
        kind TEXT NOT NULL,
        finished INTEGER NOT NULL DEFAULT 0,
        UNIQUE (vendor, base_url, account, id)
    )""",
)


@attrs.frozen
class JournalStats:
    """A snapshot of what a `SQLiteJournal` has done.

    Attributes:
        writes: writes committed.
        transactions: transactions committed (each holds the writes of one interval).
    """

    writes: int
    transactions: int


class _Waiter:
    """Wakes one coroutine on its event loop when the journal thread is done with its operation."""

    __slots__ = ("future", "loop")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[Any] = self.loop.create_future()

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        """Called from the journal thread."""
        # A closed loop raises RuntimeError: nobody is left to wake.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._set, result, error)

    def _set(self, result: Any, error: BaseException | None) -> None:
        if self.future.done():  # the waiter was cancelled; the write happened all the same
            return
        if error is None:
            self.future.set_result(result)
        else:
            self.future.set_exception(error)


@attrs.frozen
class _Op:
    run: Callable[[sqlite3.Connection], Any]
    read: bool
    waiter: _Waiter | None


def _check_interval(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValidationError("commit_interval", f"must be seconds in (0, 1], not {value!r}")
    return float(value)


class SQLiteJournal:
    """A `Journal` in a SQLite file: WAL, ``synchronous=FULL``, one connection on one thread.

    Writes made within `commit_interval` of each other share one transaction. Use it as an
    async context manager or call `aclose`, which commits what is left; the thread starts on
    first use. Several processes may open the same file (SQLite locks it), though each record
    should be written by one of them.

    Args:
        path: the file; created, with its tables, when missing.
        commit_interval: seconds a transaction stays open for more writes, in (0, 1].

    Raises:
        ValidationError: `path` or `commit_interval` is wrong.
    """

    def __init__(self, path: str | os.PathLike[str], *, commit_interval: float = 0.005) -> None:
        """Check the settings; the file is opened on first use."""
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise ValidationError("journal", f"must be a path or a Journal, not {path!r}")
        self._path = os.fspath(path)
        self._interval = _check_interval(commit_interval)
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready: _Waiter | None = None
        self._done: _Waiter | None = None
        self._failure: JournalError | None = None
        self._lost_writes = False
        self._closed = False
        self._open: set[str] = set()
        self._writes = 0
        self._transactions = 0

    def __repr__(self) -> str:
        """The file's path."""
        return f"SQLiteJournal({self._path!r})"

    @property
    def path(self) -> str:
        """The file's path."""
        return self._path

    def statistics(self) -> JournalStats:
        """Writes and transactions committed so far."""
        return JournalStats(writes=self._writes, transactions=self._transactions)

    async def __aenter__(self) -> Self:
        """Open the file (create it, or check its schema version).

        Raises:
            JournalError: the file is not a journal, or one of a newer schema.
        """
        await self._ensure_open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close it: see `aclose`."""
        await self.aclose()

    # -- writes ---------------------------------------------------------------------------

    async def begin_submission(
        self, submission: SubmissionRecord, *, durable: bool = False
    ) -> None:
        """Record a new submission with the batches it already has.

        Raises:
            ValidationError: a submission with this id is already open.
            JournalError: the journal cannot be written.
        """
        if submission.id in self._open:
            raise ValidationError("submission.id", f"{submission.id!r} is already recorded")
        origin = submission.origin
        row = (
            submission.id,
            origin.vendor,
            origin.base_url,
            origin.account,
            submission.target,
            submission.operation,
            None if submission.request is None else json.dumps(submission.request, sort_keys=True),
        )
        batches = [_batch_row(submission.id, b) for b in submission.batches]

        def run(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO submissions VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", row
            )
            db.executemany(_UPSERT_BATCH, batches)

        await self._ensure_open()
        self._open.add(submission.id)
        await self._write(run, durable=durable)

    async def record_batch(
        self, submission_id: str, batch: BatchRecord, *, durable: bool = False
    ) -> None:
        """Record a batch's state; ``durable=True`` returns once it is on disk.

        Raises:
            ValidationError: no open submission has this id.
            JournalError: the journal cannot be written.
        """
        self._check_open(submission_id)
        row = _batch_row(submission_id, batch)
        await self._write(lambda db: db.execute(_UPSERT_BATCH, row), durable=durable)

    async def end_submission(self, submission_id: str, *, durable: bool = False) -> None:
        """Forget a submission that has nothing more to send.

        Raises:
            ValidationError: no open submission has this id.
            JournalError: the journal cannot be written.
        """
        self._check_open(submission_id)
        self._open.discard(submission_id)

        def run(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM batches WHERE submission_id = ?", (submission_id,))
            db.execute("DELETE FROM submissions WHERE id = ?", (submission_id,))

        await self._write(run, durable=durable)

    async def add_jobs(
        self, origin: Origin, kind: JobKind, job_ids: Sequence[str], *, durable: bool = False
    ) -> None:
        """Record jobs a tracker starts following; one already recorded keeps its state.

        Raises:
            JournalError: the journal cannot be written.
        """
        where = (origin.vendor, origin.base_url, origin.account)
        rows = [(*where, job_id, kind) for job_id in job_ids]
        await self._write(
            lambda db: db.executemany(
                "INSERT INTO jobs (vendor, base_url, account, id, kind) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                rows,
            ),
            durable=durable,
            count=len(rows),
        )

    async def finish_job(self, origin: Origin, job_id: str, *, durable: bool = False) -> None:
        """Record that a tracker saw a job finished.

        Raises:
            JournalError: the journal cannot be written.
        """
        await self.finish_jobs(origin, [job_id], durable=durable)

    async def finish_jobs(
        self, origin: Origin, job_ids: Sequence[str], *, durable: bool = False
    ) -> None:
        """Record that a tracker saw these jobs finished, in one write.

        Raises:
            JournalError: the journal cannot be written.
        """
        where = (origin.vendor, origin.base_url, origin.account)
        rows = [(*where, job_id) for job_id in job_ids]
        await self._write(
            lambda db: db.executemany(_FINISH_JOB, rows), durable=durable, count=len(rows)
        )

    async def deliver_job(self, origin: Origin, job_id: str, *, durable: bool = False) -> None:
        """Forget a job the consumer has taken.

        Raises:
            JournalError: the journal cannot be written.
        """
        key = (origin.vendor, origin.base_url, origin.account, job_id)
        await self._write(lambda db: db.execute(_DELETE_JOB, key), durable=durable)

    async def flush(self) -> None:
        """Return once every write made so far is on disk.

        Raises:
            JournalError: a write failed.
        """
        if self._thread is not None:
            await self._write(lambda _: None, durable=True, count=0)

    # -- reads ----------------------------------------------------------------------------

    async def pending(self, origin: Origin) -> Pending:
        """Submissions not ended and jobs not delivered, for this origin, as recorded.

        Raises:
            JournalError: the journal cannot be read.
        """
        await self._ensure_open()
        found: Pending = await self._submit(lambda db: _read_pending(db, origin), read=True)
        self._open.update(s.id for s in found.submissions)
        return found

    # -- lifetime -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Commit what is left, close the file and stop the thread; idempotent.

        Raises:
            JournalError: the last writes could not be committed.
        """
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            return
        assert self._done is not None  # noqa: S101 -- set with the thread, for mypy
        self._queue.put(None)
        try:
            await asyncio.shield(self._done.future)
        finally:
            self._thread.join(timeout=0)
        if self._lost_writes:
            raise JournalError(f"{self._path}: writes were lost: {self._failure}")

    async def _ensure_open(self) -> None:
        if self._closed:
            raise JournalError(f"{self!r} is closed")
        if self._thread is None:
            self._ready = _Waiter()
            self._done = _Waiter()
            self._thread = threading.Thread(
                target=self._serve, name=f"asyncbulk-journal {self._path}", daemon=True
            )
            self._thread.start()
        assert self._ready is not None  # noqa: S101 -- set with the thread, for mypy
        await asyncio.shield(self._ready.future)

    def _check_open(self, submission_id: str) -> None:
        if submission_id not in self._open:
            raise ValidationError("submission_id", f"no open submission {submission_id!r}")

    async def _write(
        self, run: Callable[[sqlite3.Connection], Any], *, durable: bool, count: int = 1
    ) -> None:
        await self._ensure_open()
        if self._failure is not None:
            raise self._failure
        if not durable:
            self._queue.put(_Op(_counted(self, run, count), read=False, waiter=None))
            return
        await self._submit(_counted(self, run, count), read=False)

    async def _submit(self, run: Callable[[sqlite3.Connection], Any], *, read: bool) -> Any:
        waiter = _Waiter()
        self._queue.put(_Op(run, read=read, waiter=waiter))
        return await waiter.future

    # -- the journal thread ---------------------------------------------------------------

    def _serve(self) -> None:
        assert self._ready is not None  # noqa: S101 -- set before the thread starts
        assert self._done is not None  # noqa: S101 -- set before the thread starts
        try:
            db = _connect(self._path)
        except JournalError as exc:
            self._failure = exc
            self._ready.settle(error=exc)
            self._drain_failed()
            self._done.settle()
            return
        self._ready.settle()
        try:
            self._loop(db)
        finally:
            db.close()
            self._done.settle()

    def _loop(self, db: sqlite3.Connection) -> None:
        waiting: _Op | None = None
        while True:
            op = waiting if waiting is not None else self._queue.get()
            waiting = None
            if op is None:
                return
            if op.read:
                self._run_read(db, op)
                continue
            batch = [op]
            stop = False
            deadline = time.monotonic() + self._interval
            durable = op.waiter is not None
            while (left := deadline - time.monotonic()) > 0:
                try:
                    # Someone waits for the disk: take what is queued already, wait no more.
                    more = self._queue.get_nowait() if durable else self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                if more.read:
                    waiting = more
                    break
                batch.append(more)
                durable = durable or more.waiter is not None
            self._commit(db, batch)
            if stop:
                return

    def _commit(self, db: sqlite3.Connection, batch: list[_Op]) -> None:
        if self._failure is not None:
            self._lost_writes = True
        else:
            try:
                db.execute("BEGIN IMMEDIATE")
                for op in batch:
                    op.run(db)
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.rollback()
                self._failure = JournalError(f"{self._path}: a write failed: {exc}")
                self._lost_writes = True
            else:
                self._transactions += 1
        for op in batch:
            if op.waiter is not None:
                op.waiter.settle(error=self._failure)

    def _run_read(self, db: sqlite3.Connection, op: _Op) -> None:
        assert op.waiter is not None  # noqa: S101 -- every read has a waiter
        if self._failure is not None:
            op.waiter.settle(error=self._failure)
            return
        try:
            result = op.run(db)
        except sqlite3.Error as exc:
            op.waiter.settle(error=JournalError(f"{self._path}: a read failed: {exc}"))
            return
        op.waiter.settle(result)

    def _drain_failed(self) -> None:
        while True:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                return
            if op is not None and op.waiter is not None:
                op.waiter.settle(error=self._failure)


def _counted(
    journal: SQLiteJournal, run: Callable[[sqlite3.Connection], Any], count: int
) -> Callable[[sqlite3.Connection], Any]:
    def counted(db: sqlite3.Connection) -> Any:
        result = run(db)
        # On the journal thread only; a rolled-back batch breaks the journal for good, so
        # the count is never wrong about what is committed.
        journal._writes += count  # noqa: SLF001 -- the journal's own counter
        return result

    return counted


_FINISH_JOB: Final = (
    "UPDATE jobs SET finished = 1 WHERE vendor = ? AND base_url = ? AND account = ? AND id = ?"
)
_DELETE_JOB: Final = "DELETE FROM jobs WHERE vendor = ? AND base_url = ? AND account = ? AND id = ?"
_UPSERT_BATCH: Final = (
    "INSERT INTO batches (submission_id, start, stop, state, job_id, error) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (submission_id, start) DO UPDATE SET "
    "stop = excluded.stop, state = excluded.state, job_id = excluded.job_id, "
    "error = excluded.error"
)


def _batch_row(submission_id: str, batch: BatchRecord) -> tuple[Any, ...]:
    return (submission_id, batch.start, batch.stop, batch.state, batch.job_id, batch.error)


def _connect(path: str) -> sqlite3.Connection:
    """Open the file, check it is a journal this library reads, and create its tables if new.

    Raises:
        JournalError: the file cannot be opened, is not a journal, or has a newer schema.
    """
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    except sqlite3.Error as exc:
        raise JournalError(f"{path}: cannot open the journal: {exc}") from None
    try:
        _prepare(db, path)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise JournalError(f"{path}: cannot open the journal: {exc}") from None
    except JournalError:
        db.close()
        raise
    return db


def _prepare(db: sqlite3.Connection, path: str) -> None:
    db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    application = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if application != _APPLICATION_ID and (application != 0 or tables):
        raise JournalError(f"{path}: not an asyncbulk journal")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path}: the journal's schema version is {version}, newer than {SCHEMA_VERSION}, "
            "the one this asyncbulk writes: upgrade asyncbulk to read it",
            found=version,
            supported=SCHEMA_VERSION,
        )
    # Checked before anything is written, so a file of another program is left as it was.
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise JournalError(f"{path}: the file system does not allow SQLite's WAL mode")
    db.execute("PRAGMA synchronous = FULL")
    if version == 0:
        db.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            db.execute(statement)
        db.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")


def _read_pending(db: sqlite3.Connection, origin: Origin) -> Pending:
    where = (origin.vendor, origin.base_url, origin.account)
    db.execute("BEGIN")
    try:
        rows = db.execute(
            "SELECT id, target, operation, request FROM submissions "
            "WHERE vendor = ? AND base_url = ? AND account = ? ORDER BY rowid",
            where,
        ).fetchall()
        submissions = []
        for submission_id, target, operation, request in rows:
            batches = tuple(
                BatchRecord(start=start, stop=stop, state=state, job_id=job_id, error=error)
                for start, stop, state, job_id, error in db.execute(
                    "SELECT start, stop, state, job_id, error FROM batches "
                    "WHERE submission_id = ? ORDER BY start",
                    (submission_id,),
                )
            )
            submissions.append(
                SubmissionRecord(
                    id=submission_id,
                    origin=origin,
                    target=target,
                    operation=operation,
                    request=None if request is None else json.loads(request),
                    batches=batches,
                )
            )
        jobs = tuple(
            TrackedJob(origin=origin, kind=kind, id=job_id, finished=bool(finished))
            for job_id, kind, finished in db.execute(
                "SELECT id, kind, finished FROM jobs "
                "WHERE vendor = ? AND base_url = ? AND account = ? ORDER BY rowid",
                where,
            )
        )
    finally:
        db.execute("COMMIT")
    return Pending(submissions=tuple(submissions), jobs=jobs)
