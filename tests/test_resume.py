"""resume_pending(): what a journal held unfinished, with batches a crash left sending settled."""

from __future__ import annotations

import pytest

from asyncbulk import (
    BackgroundJob,
    BatchRecord,
    JournalError,
    MemoryJournal,
    RetryPolicy,
    SQLiteJournal,
    SubmissionRecord,
)
from asyncbulk.chakra import ChakraClient
from asyncbulk.chakra._resume import INTERRUPTED
from asyncbulk.testing import Simulator
from asyncbulk.zefort import ZefortClient

pytestmark = pytest.mark.anyio

BULK = "/api/contracts/bulk_update/"
TASKS = "/api/tasks/"
JOB_ROUTE = "/v1/ext/background-job/{job_id}"


@pytest.fixture
async def sim():
    """A simulator with one Chakra procedure of ten processes."""
    async with Simulator(chakra_entries_per_second=100_000) as simulator:
        simulator.chakra.add_procedure("leads", primary_key="lead_id", attributes=["city"])
        for i in range(10):
            simulator.chakra.add_process("leads", {"lead_id": f"L{i}"}, id=f"pid-{i}")
        yield simulator


def chakra_client(sim, **options) -> ChakraClient:
    """A client of the simulator's Chakra."""
    return ChakraClient(
        sim.chakra_token, base_url=sim.chakra_url, retry=RetryPolicy.testing(), **options
    )


def zefort_client(sim, **options) -> ZefortClient:
    """A client of the simulator's Zefort."""
    return ZefortClient(
        sim.zefort_api_key, base_url=sim.zefort_url, retry=RetryPolicy.testing(), **options
    )


async def test_chakra_settles_a_batch_left_sending_as_unknown_and_records_it(sim, tmp_path):
    """After a restart, a batch left sending is unknown (named why), on disk; jobs come back."""
    path = tmp_path / "j.db"
    updates = [{"id": f"pid-{i}", "data": {"city": "Goa"}} for i in range(5)]
    async with chakra_client(sim, journal=path) as before:
        (job,) = (await before.bulk_update_processes("leads", updates, batch_size=5)).jobs
        record = SubmissionRecord(
            id="s-1",
            origin=before._origin,
            target="leads",
            operation="update",
            batches=(
                BatchRecord(start=0, stop=5, state="accepted", job_id=job.id),
                BatchRecord(start=5, stop=10, state="sending"),
            ),
        )
        await before.journal.begin_submission(record)
        await before.journal.add_jobs(before._origin, "job", [job.id, "finished-job"])
        await before.journal.finish_job(before._origin, "finished-job")
    requests = sim.records.total_requests
    async with chakra_client(sim, journal=path) as after:
        pending = await after.resume_pending()
        assert sim.records.total_requests == requests
        (found,) = pending.submissions
        assert found.batches == (
            BatchRecord(start=0, stop=5, state="accepted", job_id=job.id),
            BatchRecord(start=5, stop=10, state="unknown", error=INTERRUPTED),
        )
        assert [(j.id, j.finished) for j in pending.jobs] == [
            (job.id, False),
            ("finished-job", True),
        ]
        resumed = await after.resume(pending.jobs[0].handle())
        assert isinstance(resumed, BackgroundJob)
        assert resumed.id == job.id
    async with SQLiteJournal(path) as journal:
        (again,) = (await journal.pending(after._origin)).submissions
    assert again.batches[1].state == "unknown"


async def test_another_account_sees_nothing_of_this_one(sim, tmp_path):
    """resume_pending reads only what this base URL and account recorded."""
    journal = MemoryJournal()
    async with chakra_client(sim, journal=journal) as chakra:
        await journal.add_jobs(chakra._origin, "job", ["j-1"])
    async with ChakraClient(
        "another-token-000000", base_url=sim.chakra_url, journal=journal
    ) as other:
        assert (await other.resume_pending()).jobs == ()


async def test_zefort_adopts_the_task_a_crash_left_unrecorded_without_posting_again(sim):
    """A bulk update left sending is adopted when exactly one new pending task has its body."""
    body = {"status": "review", "search": {"q": "resume-me"}}
    # The server received the POST; the process died before the answer was recorded.
    task = sim.zefort.submit_bulk_update(body)
    journal = MemoryJournal()
    async with zefort_client(sim, journal=journal) as zefort:
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
    assert found.batches == (BatchRecord(start=0, stop=1, state="accepted", job_id=task.id),)
    assert recorded.batches == found.batches
    assert sim.records.count(vendor="zefort", method="POST", route=BULK) == 0
    assert sim.records.count(vendor="zefort", method="GET", route=TASKS) >= 1


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (
            {"body": {"status": "review", "search": {"q": "never-sent"}}, "pending_before": []},
            "no pending task",
        ),
        (
            {"body": {"status": "review", "search": {"q": "resume-me"}}},
            "not read before sending",
        ),
        (None, "no request body"),
    ],
    ids=["no-match", "no-snapshot", "no-body"],
)
async def test_zefort_without_proof_leaves_the_batch_unknown_with_the_reason(sim, request_, reason):
    """No new pending task with the body, no snapshot or no body: unknown, saying why; no POST."""
    journal = MemoryJournal()
    async with zefort_client(sim, journal=journal) as zefort:
        await journal.begin_submission(
            SubmissionRecord(
                id="z-1",
                origin=zefort._origin,
                target="contracts",
                operation="update",
                request=request_,
                batches=(BatchRecord(start=0, stop=1, state="sending"),),
            )
        )
        ((batch,),) = [s.batches for s in (await zefort.resume_pending()).submissions]
    assert batch.state == "unknown"
    assert reason in (batch.error or "")
    assert sim.records.count(vendor="zefort", method="POST", route=BULK) == 0


async def test_a_client_closes_the_journal_it_opened_and_only_that_one(sim, tmp_path):
    """A path given as journal= is closed with the client; a Journal given is left open."""
    async with chakra_client(sim, journal=tmp_path / "j.db") as chakra:
        owned = chakra.journal
        await owned.flush()
    with pytest.raises(JournalError, match="closed"):
        await owned.pending(chakra._origin)
    async with SQLiteJournal(tmp_path / "mine.db") as mine:
        async with zefort_client(sim, journal=mine) as zefort:
            await zefort.resume_pending()
        assert (await mine.pending(zefort._origin)).jobs == ()
