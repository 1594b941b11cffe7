"""The journal: what it records, what survives a kill, how it batches, and what it never holds."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import uuid

import anyio
import pytest

from asyncbulk import (
    BatchRecord,
    JournalError,
    MemoryJournal,
    Origin,
    SQLiteJournal,
    SubmissionRecord,
    ValidationError,
)
from asyncbulk._journal import Journal, SubmissionLog, TrackingLog, open_journal

pytestmark = pytest.mark.anyio

CHAKRA = Origin(vendor="chakra", base_url="https://api.chakrahq.com", account="a" * 32)
OTHER = Origin(vendor="chakra", base_url="https://api.chakrahq.com", account="b" * 32)


def submission(submission_id: str = "s-1", origin: Origin = CHAKRA) -> SubmissionRecord:
    """A new submission of updates to the procedure ``leads``."""
    return SubmissionRecord(id=submission_id, origin=origin, target="leads", operation="update")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def journal(request, tmp_path):
    """Each store, open, closed after the test (PostgreSQL's in a schema of its own, dropped)."""
    if request.param != "postgres":
        store: Journal = (
            MemoryJournal() if request.param == "memory" else SQLiteJournal(tmp_path / "j.db")
        )
        async with store:
            yield store
        return
    import asyncpg  # noqa: PLC0415 -- only the PostgreSQL store needs its driver

    from asyncbulk.postgres import PostgresJournal  # noqa: PLC0415 -- needs the postgres extra

    dsn = request.getfixturevalue("pg_dsn")
    schema = f"asyncbulk_test_{uuid.uuid4().hex[:12]}"
    try:
        async with PostgresJournal(dsn, schema=schema) as opened:
            yield opened
    finally:
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await connection.close()


# -- what a journal records, either store ------------------------------------------------------


async def test_a_submission_is_pending_with_its_batches_until_it_ends(journal):
    """Batches read back in input order with their last state; an ended submission is gone."""
    await journal.begin_submission(submission())
    await journal.record_batch("s-1", BatchRecord(start=5, stop=10, state="sending"))
    await journal.record_batch("s-1", BatchRecord(start=0, stop=5, state="sending"))
    await journal.record_batch(
        "s-1", BatchRecord(start=0, stop=5, state="accepted", job_id="j-1"), durable=True
    )
    pending = await journal.pending(CHAKRA)
    (found,) = pending.submissions
    assert found.id == "s-1"
    assert found.target == "leads"
    assert found.batches == (
        BatchRecord(start=0, stop=5, state="accepted", job_id="j-1"),
        BatchRecord(start=5, stop=10, state="sending"),
    )
    assert (await journal.pending(OTHER)).submissions == ()
    await journal.end_submission("s-1", durable=True)
    assert (await journal.pending(CHAKRA)).submissions == ()


async def test_tracked_jobs_are_pending_until_delivered(journal):
    """Jobs come back in the order added, finished ones marked, delivered ones gone."""
    await journal.add_jobs(CHAKRA, "job", ["j-1", "j-2", "j-3"])
    await journal.add_jobs(OTHER, "job", ["j-9"])
    await journal.finish_job(CHAKRA, "j-2")
    await journal.deliver_job(CHAKRA, "j-1")
    await journal.add_jobs(CHAKRA, "job", ["j-2", "j-4"], durable=True)
    jobs = (await journal.pending(CHAKRA)).jobs
    assert [(j.id, j.finished) for j in jobs] == [("j-2", True), ("j-3", False), ("j-4", False)]
    assert jobs[0].key == ("chakra", "a" * 32, "j-2")
    assert jobs[0].handle()["job_id"] == "j-2"
    assert [j.id for j in (await journal.pending(OTHER)).jobs] == ["j-9"]


async def test_many_jobs_are_marked_finished_in_one_write(journal):
    """`finish_jobs` marks exactly the jobs named, of the origin named, as `finish_job` would."""
    await journal.add_jobs(CHAKRA, "job", ["j-1", "j-2", "j-3"])
    await journal.add_jobs(OTHER, "job", ["j-1"])
    await journal.finish_jobs(CHAKRA, ["j-1", "j-3", "never-added"])
    await journal.finish_jobs(CHAKRA, [], durable=True)
    jobs = (await journal.pending(CHAKRA)).jobs
    assert [(j.id, j.finished) for j in jobs] == [("j-1", True), ("j-2", False), ("j-3", True)]
    assert [(j.id, j.finished) for j in (await journal.pending(OTHER)).jobs] == [("j-1", False)]


async def test_a_journal_without_the_bulk_form_gets_one_finish_per_job():
    """A journal that only has `finish_job` still records every finish the tracker logs."""

    class OneAtATime:
        """Only the single form, over a memory journal."""

        def __init__(self) -> None:
            self.inner = MemoryJournal()
            self.calls: list[str] = []

        async def add_jobs(self, origin: Origin, kind: str, job_ids: list[str]) -> None:
            await self.inner.add_jobs(origin, kind, job_ids)  # type: ignore[arg-type]

        async def finish_job(self, origin: Origin, job_id: str, *, durable: bool = False) -> None:
            self.calls.append(job_id)
            await self.inner.finish_job(origin, job_id, durable=durable)

    journal = OneAtATime()
    log = TrackingLog(journal, CHAKRA, "job")  # type: ignore[arg-type]
    await log.added(["j-1", "j-2"])
    await log.finished_many(["j-2", "j-1"])
    assert journal.calls == ["j-2", "j-1"]
    assert all(j.finished for j in (await journal.inner.pending(CHAKRA)).jobs)


async def test_a_batch_of_an_unknown_submission_is_refused(journal):
    """Recording a batch of a submission never begun is a caller mistake, named."""
    with pytest.raises(ValidationError) as caught:
        await journal.record_batch("nope", BatchRecord(start=0, stop=1, state="sending"))
    assert caught.value.field == "submission_id"


async def test_journal_argument_is_a_path_or_a_journal(tmp_path):
    """A path opens a SQLite journal the client owns; a Journal is used as is; else refused."""
    owned, owns = open_journal(tmp_path / "j.db")
    assert isinstance(owned, SQLiteJournal)
    assert owns
    mine = MemoryJournal()
    assert open_journal(mine) == (mine, False)
    with pytest.raises(ValidationError) as caught:
        open_journal(42)  # type: ignore[arg-type]
    assert caught.value.field == "journal"


# -- the SQLite store --------------------------------------------------------------------------


async def test_closing_commits_every_write_and_batches_them(tmp_path):
    """Writes not awaited for durability are committed at close, in few transactions."""
    path = tmp_path / "j.db"
    async with SQLiteJournal(path, commit_interval=1.0) as journal:
        await journal.begin_submission(submission())
        for start in range(0, 3000, 10):
            await journal.record_batch(
                "s-1",
                BatchRecord(start=start, stop=start + 10, state="accepted", job_id=f"j{start}"),
            )
        await journal.add_jobs(CHAKRA, "job", [f"j{i}" for i in range(200)])
    stats = journal.statistics()
    assert stats.writes == 1 + 300 + 200
    assert stats.transactions <= 3
    async with SQLiteJournal(path) as again:
        pending = await again.pending(CHAKRA)
    assert len(pending.submissions[0].batches) == 300
    assert len(pending.jobs) == 200


async def test_concurrent_durable_writes_share_transactions(tmp_path):
    """Durable writes made together wait for one commit, not one each."""
    async with SQLiteJournal(tmp_path / "j.db", commit_interval=0.5) as journal:
        await journal.add_jobs(CHAKRA, "job", [f"j{i}" for i in range(100)], durable=True)
        before = journal.statistics().transactions
        async with anyio.create_task_group() as group:
            for i in range(100):
                group.start_soon(lambda i=i: journal.finish_job(CHAKRA, f"j{i}", durable=True))
        assert journal.statistics().transactions - before <= 3
        assert all(j.finished for j in (await journal.pending(CHAKRA)).jobs)


async def test_a_durable_write_is_visible_to_another_connection_at_once(tmp_path):
    """Once a durable write returns, a reader of the file (another process could) sees it."""
    path = tmp_path / "j.db"
    async with SQLiteJournal(path, commit_interval=1.0) as journal:
        await journal.begin_submission(submission())
        await journal.record_batch(
            "s-1", BatchRecord(start=0, stop=5, state="accepted", job_id="j-1"), durable=True
        )
        reader = sqlite3.connect(path)
        try:
            rows = reader.execute("SELECT state, job_id FROM batches").fetchall()
        finally:
            reader.close()
    assert rows == [("accepted", "j-1")]


async def test_readers_see_whole_snapshots_while_writes_go_on(tmp_path):
    """Concurrent reads never see a submission without the batches written before it read."""
    async with SQLiteJournal(tmp_path / "j.db") as journal:
        await journal.begin_submission(submission())
        seen: list[int] = []

        async def write() -> None:
            for start in range(50):
                await journal.record_batch(
                    "s-1", BatchRecord(start=start, stop=start + 1, state="sending")
                )
                await anyio.lowlevel.checkpoint()

        async def read() -> None:
            for _ in range(20):
                (found,) = (await journal.pending(CHAKRA)).submissions
                starts = [b.start for b in found.batches]
                assert starts == list(range(len(starts)))
                seen.append(len(starts))

        async with anyio.create_task_group() as group:
            group.start_soon(write)
            for _ in range(4):
                group.start_soon(read)
        (found,) = (await journal.pending(CHAKRA)).submissions
    assert len(found.batches) == 50
    assert len(seen) == 80


async def test_a_journal_of_a_newer_schema_is_refused_clearly(tmp_path):
    """A file written by a later asyncbulk is refused with the version, not misread."""
    path = tmp_path / "j.db"
    async with SQLiteJournal(path):
        pass
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 7")
    db.close()
    with pytest.raises(JournalError, match="schema version is 7, newer than 1"):
        async with SQLiteJournal(path):
            pass


async def test_a_file_that_is_not_a_journal_is_refused_and_left_alone(tmp_path):
    """Another program's SQLite file is refused and not changed."""
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    before = path.read_bytes()
    journal = SQLiteJournal(path)
    with pytest.raises(JournalError, match="not an asyncbulk journal"):
        await journal.pending(CHAKRA)
    await journal.aclose()
    assert path.read_bytes() == before


async def test_a_closed_journal_refuses_writes(tmp_path):
    """After aclose, a write is a JournalError rather than lost silently."""
    journal = SQLiteJournal(tmp_path / "j.db")
    await journal.add_jobs(CHAKRA, "job", ["j-1"])
    await journal.aclose()
    await journal.aclose()
    with pytest.raises(JournalError, match="closed"):
        await journal.add_jobs(CHAKRA, "job", ["j-2"])


async def test_settings_are_checked():
    """A bad commit interval or path names the field."""
    with pytest.raises(ValidationError) as caught:
        SQLiteJournal("j.db", commit_interval=0)
    assert caught.value.field == "commit_interval"
    with pytest.raises(ValidationError) as caught:
        SQLiteJournal("")
    assert caught.value.field == "journal"


_WORKER = textwrap.dedent(
    """
    import sys
    import anyio
    from asyncbulk import BatchRecord, Origin, SQLiteJournal, SubmissionRecord

    ORIGIN = Origin(vendor="chakra", base_url="https://api.chakrahq.com", account="a" * 32)

    async def main(path):
        journal = SQLiteJournal(path, commit_interval=0.005)
        record = SubmissionRecord(id="s", origin=ORIGIN, target="leads", operation="update")
        await journal.begin_submission(record)
        for index in range(100_000):
            batch = BatchRecord(start=index, stop=index + 1, state="sending")
            await journal.record_batch("s", batch)
            await journal.record_batch(
                "s", BatchRecord(start=index, stop=index + 1, state="accepted", job_id=f"j{index}"),
                durable=True,
            )
            print(index, flush=True)

    anyio.run(main, sys.argv[1])
    """
)


def run_and_kill(path: os.PathLike[str], stop_after: int) -> list[int]:
    """Run the worker until it has reported `stop_after` commits, then SIGKILL it."""
    reported = []
    with subprocess.Popen(  # noqa: S603 -- this interpreter, our own script
        [sys.executable, "-c", _WORKER, os.fspath(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as worker:
        assert worker.stdout is not None
        try:
            for line in worker.stdout:
                reported.append(int(line))
                if len(reported) >= stop_after:
                    break
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)
    return reported


@pytest.mark.parametrize("seed", range(3), ids=lambda s: f"seed{s}")
async def test_what_was_reported_committed_survives_a_sigkill(tmp_path, seed):
    """A worker SIGKILLed at a random point: every batch it saw committed is in the file."""
    path = tmp_path / "j.db"
    stop_after = random.Random(seed).randint(5, 60)
    reported = await anyio.to_thread.run_sync(run_and_kill, path, stop_after)
    assert len(reported) == stop_after
    async with SQLiteJournal(path) as journal:
        (found,) = (await journal.pending(CHAKRA)).submissions
    accepted = {b.start: b.job_id for b in found.batches if b.state == "accepted"}
    for index in reported:
        assert accepted[index] == f"j{index}"
    # A later batch may be committed too, or left sending: never anything else.
    assert {b.state for b in found.batches} <= {"accepted", "sending"}


async def test_the_file_never_holds_a_credential(tmp_path):
    """A client's journal holds the account's fingerprint, never its token."""
    from asyncbulk.chakra import ChakraClient  # noqa: PLC0415 -- only this test needs it

    token = "chakra-secret-token-0123456789"
    path = tmp_path / "j.db"
    async with ChakraClient(token, journal=path) as chakra:
        origin = chakra._origin
        await chakra.journal.begin_submission(submission(origin=origin))
        await chakra.journal.record_batch(
            "s-1", BatchRecord(start=0, stop=3, state="accepted", job_id="j"), durable=True
        )
        await chakra.journal.add_jobs(origin, "job", ["j"], durable=True)
        found = await chakra.resume_pending()
    assert [j.id for j in found.jobs] == ["j"]
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert origin.account.encode() in stored
    assert token.encode() not in stored
    assert json.dumps(found.submissions[0].handle()).find(token) == -1


# -- the recorders the submission and tracking code call ----------------------------------------


def rows(path: os.PathLike[str], query: str) -> list[tuple[object, ...]]:
    """What another connection to the file reads now."""
    reader = sqlite3.connect(path)
    try:
        return reader.execute(query).fetchall()
    finally:
        reader.close()


async def test_a_batch_is_on_disk_as_sending_before_its_request_and_accepted_before_reported(
    tmp_path,
):
    """sending() and accepted() return only once another reader of the file sees them."""
    path = tmp_path / "j.db"
    async with SQLiteJournal(path, commit_interval=1.0) as journal:
        log = await SubmissionLog.begin(journal, CHAKRA, target="leads", operation="update")
        await log.sending(range(5))
        assert rows(path, "SELECT start, stop, state FROM batches") == [(0, 5, "sending")]
        await log.accepted(range(5), "j-1")
        assert rows(path, "SELECT state, job_id FROM batches") == [("accepted", "j-1")]
        await log.failed(range(5, 10), "unknown", "connection lost")
        await log.not_sent(range(10, 15))
        (found,) = (await journal.pending(CHAKRA)).submissions
        assert [b.state for b in found.batches] == ["accepted", "unknown", "not_sent"]
        await log.end()
        assert (await journal.pending(CHAKRA)).submissions == ()


async def test_a_failed_batch_error_is_stored_scrubbed_of_live_credentials(tmp_path):
    """A server that echoes the token into an error cannot make the journal hold it."""
    from asyncbulk.chakra import ChakraClient  # noqa: PLC0415 -- only this test needs it

    token = "echoed-secret-token-987654321"
    path = tmp_path / "j.db"
    async with (
        ChakraClient(token) as chakra,
        SQLiteJournal(path) as journal,
    ):
        log = await SubmissionLog.begin(journal, chakra._origin, target="t", operation="update")
        await log.failed(range(1), "rejected", f"400: bad token {token}")
        await journal.flush()
        (found,) = (await journal.pending(chakra._origin)).submissions
    assert found.batches[0].error == "400: bad token <redacted>"
    assert token.encode() not in b"".join(p.read_bytes() for p in tmp_path.iterdir())


async def test_a_delivery_is_on_disk_before_delivered_returns(tmp_path):
    """added() and finished() do not wait; delivered() returns once the file says so."""
    path = tmp_path / "j.db"
    async with SQLiteJournal(path, commit_interval=1.0) as journal:
        log = TrackingLog(journal, CHAKRA, "job")
        await log.added(["j-1", "j-2"])
        await log.finished("j-1")
        await log.delivered("j-1")
        assert rows(path, "SELECT id, finished FROM jobs") == [("j-2", 0)]


def test_a_credential_function_needs_account_for_a_journal(tmp_path):
    """A rotating credential names no account: a journal is refused until account= names it."""
    from asyncbulk import ValidationError  # noqa: PLC0415 -- local to this test
    from asyncbulk.zefort import ZefortClient  # noqa: PLC0415

    with pytest.raises(ValidationError, match="account"):
        ZefortClient(lambda: "rotating-key", journal=tmp_path / "j.db")
    client = ZefortClient(lambda: "rotating-key", journal=MemoryJournal(), account="acme")
    assert client.journal is not None
    ZefortClient(lambda: "rotating-key")  # no journal given: nothing to name
