"""Submissions and tracking record into the journal as they go, and handles round-trip."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncbulk import BatchRecord, RetryPolicy, SubmissionError
from asyncbulk._handles import read_handle, read_submission
from asyncbulk.chakra import BatchOutcome, BulkSubmission, ChakraClient
from asyncbulk.testing import Fault, Simulator
from asyncbulk.zefort import ZefortClient

PROCESSES = 12


@pytest.fixture
async def sim():
    """A simulator with one Chakra procedure of twelve processes."""
    async with Simulator(chakra_entries_per_second=100_000) as simulator:
        simulator.chakra.add_procedure("leads", primary_key="lead_id", attributes=["city"])
        for i in range(PROCESSES):
            simulator.chakra.add_process("leads", {"lead_id": f"L{i}"}, id=f"pid-{i}")
        yield simulator


def chakra_client(sim: Simulator, **options: Any) -> ChakraClient:
    """A client of the simulator's Chakra."""
    return ChakraClient(
        sim.chakra_token, base_url=sim.chakra_url, retry=RetryPolicy.never(), **options
    )


def updates(count: int = PROCESSES) -> list[dict[str, Any]]:
    """One update per process."""
    return [{"id": f"pid-{i}", "data": {"city": "Goa"}} for i in range(count)]


@pytest.mark.anyio
async def test_a_finished_submission_leaves_its_jobs_pending_until_delivered(sim, tmp_path):
    """The submission ends in the journal; its jobs stay pending until a tracker delivers them."""
    async with chakra_client(sim, journal=tmp_path / "j.db") as chakra:
        submission = await chakra.bulk_update_processes("leads", updates(), batch_size=4)
        pending = await chakra.resume_pending()
        assert pending.submissions == ()
        assert [job.id for job in pending.jobs] == list(submission.job_ids)
        async for _ in chakra.track_jobs(submission.job_ids):
            pass
        assert (await chakra.resume_pending()).jobs == ()


@pytest.mark.anyio
async def test_each_batch_is_on_disk_before_it_is_sent_and_when_reported_accepted(sim, tmp_path):
    """Another connection to the file sees a batch sending before it leaves, accepted when told."""
    path = tmp_path / "j.db"
    seen: list[tuple[str, list[tuple[int, str]]]] = []

    def look(outcome: BatchOutcome) -> None:
        # A separate connection sees only what was committed to the file.
        with sqlite3.connect(path) as db:
            rows = sorted(db.execute("select start, state from batches"))
        seen.append((outcome.state, rows))

    async with chakra_client(sim, journal=path) as chakra:
        await chakra.bulk_update_processes(
            "leads", updates(8), batch_size=4, max_batches_in_flight=1, on_state=look
        )
    assert seen == [
        ("sending", [(0, "sending")]),
        ("accepted", [(0, "accepted")]),
        ("sending", [(0, "accepted"), (4, "sending")]),
        ("accepted", [(0, "accepted"), (4, "accepted")]),
    ]
    # Nothing reached the server before its batch was on disk: two requests, two jobs.
    assert len(sim.records.chakra_submissions) == 2


@pytest.mark.anyio
async def test_a_batch_whose_answer_is_lost_is_journaled_unknown(sim, tmp_path):
    """Applied, then the connection dropped: the journal holds the batch unknown, with why."""
    sim.faults.add(Fault("drop_after", vendor="chakra", method="PATCH", times=1))
    async with chakra_client(sim, journal=tmp_path / "j.db") as chakra:
        with pytest.raises(SubmissionError) as caught:
            await chakra.bulk_update_processes("leads", updates(4), batch_size=4)
        handle = caught.value.submission.handle()
    (batch,) = read_submission(read_handle(handle, chakra._origin, ("submission",))[1])
    assert batch.state == "unknown"
    assert batch.error


@pytest.mark.anyio
async def test_a_submission_handle_resumes_to_the_same_batches_and_jobs(sim, tmp_path):
    """handle() through JSON and resume() give back every batch's positions, state and job."""
    async with chakra_client(sim, journal=tmp_path / "j.db") as chakra:
        submission = await chakra.bulk_update_processes("leads", updates(), batch_size=5)
        back = await chakra.resume(json.loads(json.dumps(submission.handle())))
        assert isinstance(back, BulkSubmission)
        assert back.submission_id == submission.submission_id
        assert [(b.start, b.stop, b.state, b.job_id) for b in back.outcomes] == [
            (b.start, b.stop, b.state, b.job_id) for b in submission.outcomes
        ]
        assert (await back.summary()).succeeded == PROCESSES


@pytest.mark.anyio
async def test_a_cancelled_submission_stays_pending_with_its_batches(sim, tmp_path):
    """Cancelled between batches: the submission is still pending, its sent batches recorded."""
    async with chakra_client(sim, journal=tmp_path / "j.db") as chakra:
        accepted = anyio.Event()

        async def slow_items() -> Any:
            for item in updates():
                yield item
            await accepted.wait()
            await anyio.sleep_forever()

        with anyio.move_on_after(30) as scope:
            async with anyio.create_task_group() as group:

                async def submit() -> None:
                    await chakra.bulk_update_processes(
                        "leads", slow_items(), batch_size=4, on_batch=lambda *_: accepted.set()
                    )

                group.start_soon(submit)
                await accepted.wait()
                await anyio.sleep(0.2)
                group.cancel_scope.cancel()
        assert not scope.cancelled_caught
        (record,) = (await chakra.resume_pending()).submissions
    assert [b.state for b in record.batches] == ["accepted"] * 3
    assert [b.positions for b in record.batches] == [range(4), range(4, 8), range(8, 12)]


@pytest.mark.anyio
async def test_the_job_a_consumer_held_when_it_stopped_is_still_pending(sim, tmp_path):
    """Breaking out holding a job leaves it undelivered; the ones before it are delivered."""
    async with chakra_client(sim, journal=tmp_path / "j.db") as chakra:
        submission = await chakra.bulk_update_processes("leads", updates(), batch_size=4)
        taken: list[str] = []
        async for job in chakra.track_jobs(submission.job_ids):
            taken.append(job.id)
            if len(taken) == 2:
                break
        left = (await chakra.resume_pending()).jobs
    assert {job.id for job in left} == set(submission.job_ids) - {taken[0]}
    held = next(job for job in left if job.id == taken[1])
    assert held.finished
    assert held.key == ("chakra", chakra._origin.account, taken[1])


@pytest.mark.anyio
async def test_a_zefort_bulk_update_is_journaled_with_its_body_and_snapshot(tmp_path):
    """The bulk update's task is pending in the journal until delivered; the batch ended."""
    async with (
        Simulator() as sim,
        ZefortClient(
            sim.zefort_api_key, base_url=sim.zefort_url, journal=tmp_path / "j.db"
        ) as zefort,
    ):
        task = await zefort.bulk_update_contracts(attributes={"x": "1"}, search={"q": "service"})
        pending = await zefort.resume_pending()
        assert pending.submissions == ()
        assert [job.id for job in pending.jobs] == [task.id]
        await zefort.wait_for_task(task.id, acknowledge=True, timeout=30)
        assert (await zefort.resume_pending()).jobs == ()


batch_states = st.sampled_from(["accepted", "rejected", "unknown", "not_sent"])


@given(
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=20),
    states=st.lists(batch_states, min_size=20, max_size=20),
    ids=st.lists(st.text("abcdef0123456789", min_size=1, max_size=12), min_size=20, max_size=20),
)
def test_submission_handles_round_trip_every_batch(sizes, states, ids):
    """Any submission's handle reads back, after JSON, as the same batches, states and jobs."""
    from asyncbulk.chakra import BackgroundJob  # noqa: PLC0415 -- the model, for jobs by id

    client = ChakraClient("token", base_url="https://chakra.example")
    outcomes = []
    start = 0
    for size, state, job_id in zip(sizes, states, ids, strict=False):
        job = BackgroundJob(id=job_id) if state == "accepted" else None
        error = None if state == "accepted" else RuntimeError(f"{state} at {start}")
        outcomes.append(BatchOutcome(start, start + size, state, job=job, error=error))
        start += size
    submission = BulkSubmission(
        procedure="leads",
        operation="update",
        outcomes=tuple(outcomes),
        client=client,
        submission_id="s-1",
    )
    handle = json.loads(json.dumps(submission.handle()))
    _, fields = read_handle(handle, client._origin, ("submission",))
    assert read_submission(fields) == tuple(
        BatchRecord(
            start=o.start,
            stop=o.stop,
            state=o.state,
            job_id=o.job_id,
            error=o.message,
        )
        for o in outcomes
    )
