"""`PostgresJournal`: the journal protocol over the shared store, used by both vendors' clients."""

# ruff: noqa: S608 -- the statements name the test's own schema, never outside input

from __future__ import annotations

import asyncpg
import pytest

from asyncbulk import (
    BatchRecord,
    Journal,
    JournalError,
    Origin,
    RetryPolicy,
    SchemaVersionError,
    SubmissionRecord,
    ValidationError,
)
from asyncbulk.chakra import ChakraClient
from asyncbulk.chakra._resume import INTERRUPTED
from asyncbulk.postgres import PostgresJournal, PostgresStore
from asyncbulk.testing import Simulator
from asyncbulk.zefort import ZefortClient

pytestmark = pytest.mark.anyio

BULK = "/api/contracts/bulk_update/"
ZEFORT = Origin(vendor="zefort", base_url="http://zefort.test/api", account="acct")


@pytest.fixture
async def sim():
    """A simulator with one Chakra procedure of ten processes."""
    async with Simulator(chakra_entries_per_second=100_000) as simulator:
        simulator.chakra.add_procedure("leads", primary_key="lead_id", attributes=["city"])
        for i in range(10):
            simulator.chakra.add_process("leads", {"lead_id": f"L{i}"}, id=f"pid-{i}")
        yield simulator


async def test_it_is_a_journal_and_checks_its_store_argument(pg_dsn, pg_schema) -> None:
    """It satisfies the Journal protocol; a store that is neither a DSN nor a store is named."""
    assert isinstance(PostgresJournal(pg_dsn, schema=pg_schema), Journal)
    with pytest.raises(ValidationError) as caught:
        PostgresJournal(42)  # type: ignore[arg-type]
    assert caught.value.field == "store"


async def test_chakra_resumes_from_postgres_as_from_sqlite(sim, pg_dsn, pg_schema) -> None:
    """A second replica's resume_pending settles the batch left sending and finds the jobs."""
    updates = [{"id": f"pid-{i}", "data": {"city": "Goa"}} for i in range(5)]
    async with (
        PostgresJournal(pg_dsn, schema=pg_schema) as journal,
        ChakraClient(
            sim.chakra_token, base_url=sim.chakra_url, retry=RetryPolicy.testing(), journal=journal
        ) as before,
    ):
        (job,) = (await before.bulk_update_processes("leads", updates, batch_size=5)).jobs
        origin = before._origin
        await journal.begin_submission(
            SubmissionRecord(
                id="s-1",
                origin=origin,
                target="leads",
                operation="update",
                batches=(
                    BatchRecord(start=0, stop=5, state="accepted", job_id=job.id),
                    BatchRecord(start=5, stop=10, state="sending"),
                ),
            )
        )
        # Ids whose text order differs from the order they were added in; the submission's own
        # job was recorded first, by the submission, and adding it again keeps its place.
        await journal.add_jobs(origin, "job", ["j10", "j9", job.id])
        await journal.finish_job(origin, "j9")
    requests = sim.records.total_requests
    async with (
        PostgresJournal(pg_dsn, schema=pg_schema) as journal,
        ChakraClient(sim.chakra_token, base_url=sim.chakra_url, journal=journal) as after,
    ):
        pending = await after.resume_pending()
        assert sim.records.total_requests == requests
        (found,) = pending.submissions
        assert found.origin == origin
        assert found.batches == (
            BatchRecord(start=0, stop=5, state="accepted", job_id=job.id),
            BatchRecord(start=5, stop=10, state="unknown", error=INTERRUPTED),
        )
        assert [(j.id, j.finished) for j in pending.jobs] == [
            (job.id, False),
            ("j10", False),
            ("j9", True),
        ]
        resumed = await after.resume(pending.jobs[0].handle())
        assert resumed.id == job.id
        (again,) = (await journal.pending(origin)).submissions
    assert again.batches[1].state == "unknown"


async def test_zefort_adopts_through_postgres_without_posting_again(sim, pg_dsn, pg_schema) -> None:
    """The request body stored as JSON finds the task a crash left unrecorded; no POST again."""
    body = {"status": "review", "search": {"q": "resume-me"}}
    task = sim.zefort.submit_bulk_update(body)
    store = PostgresStore(pg_dsn, schema=pg_schema)
    async with (
        store,
        PostgresJournal(store) as journal,
        ZefortClient(
            sim.zefort_api_key,
            base_url=sim.zefort_url,
            retry=RetryPolicy.testing(),
            journal=journal,
        ) as zefort,
    ):
        await journal.begin_submission(
            SubmissionRecord(
                id="z-1",
                origin=zefort._origin,
                target="contracts",
                operation="update",
                # The listing read before the POST: the task was not pending then.
                request={"body": body, "pending_before": []},
                batches=(BatchRecord(start=0, stop=1, state="sending"),),
            )
        )
        (found,) = (await zefort.resume_pending()).submissions
        (recorded,) = (await journal.pending(zefort._origin)).submissions
        await journal.aclose()
        # The journal was given an open store: closing the journal leaves the store open.
        assert (await store.pending(zefort._origin)).submissions
    assert found.batches == (BatchRecord(start=0, stop=1, state="accepted", job_id=task.id),)
    assert recorded.batches == found.batches
    assert sim.records.count(vendor="zefort", method="POST", route=BULK) == 0


async def test_a_job_delivered_unfinished_is_never_finished_again(pg_dsn, pg_schema) -> None:
    """An in-process consumer's delivery fences off a worker's later finish and any delivery."""
    store = PostgresStore(pg_dsn, schema=pg_schema)
    async with store, PostgresJournal(store) as journal:
        await journal.add_jobs(ZEFORT, "task", ["t1"])
        await store.register_worker("w")
        (claim,) = await store.claim("w", limit=10)
        await journal.deliver_job(ZEFORT, "t1")
        assert await store.finish("w", [(claim, {"ok": True})]) == []
        assert await store.take_deliveries("c", limit=10, lease=5) == []
        assert (await journal.pending(ZEFORT)).jobs == ()


async def test_tables_of_version_1_are_upgraded_in_place(pg_dsn, pg_schema) -> None:
    """A store opening version-1 tables adds the order column, keeps the rows, stamps 2."""
    async with PostgresJournal(pg_dsn, schema=pg_schema) as journal:
        await journal.add_jobs(ZEFORT, "task", ["old"])
    connection = await asyncpg.connect(pg_dsn)
    try:
        await connection.execute(
            f'ALTER TABLE "{pg_schema}".jobs DROP COLUMN seq; '
            f'ALTER TABLE "{pg_schema}".submissions DROP COLUMN seq; '
            f"UPDATE \"{pg_schema}\".meta SET value = 1 WHERE name = 'schema_version'"
        )
        async with PostgresJournal(pg_dsn, schema=pg_schema) as journal:
            await journal.add_jobs(ZEFORT, "task", ["new"])
            jobs = (await journal.pending(ZEFORT)).jobs
        version = await connection.fetchval(f'SELECT value FROM "{pg_schema}".meta')
    finally:
        await connection.close()
    assert [j.id for j in jobs] == ["old", "new"]
    assert version == 2


async def test_a_newer_schema_is_a_journal_error(pg_dsn, pg_schema) -> None:
    """Newer tables raise SchemaVersionError, which a JournalError handler catches."""
    async with PostgresJournal(pg_dsn, schema=pg_schema):
        pass
    connection = await asyncpg.connect(pg_dsn)
    try:
        await connection.execute(f'UPDATE "{pg_schema}".meta SET value = 99')
    finally:
        await connection.close()
    with pytest.raises(JournalError) as caught:
        async with PostgresJournal(pg_dsn, schema=pg_schema):
            pass
    assert isinstance(caught.value, SchemaVersionError)
    assert (caught.value.found, caught.value.supported) == (99, 2)
