"""Submissions that finish what they can and account for every input position, through HTTP."""

from __future__ import annotations

import json

import anyio
import pytest
from aiohttp import web
from loopback import serve

from asyncbulk import (
    AuthenticationError,
    ChakraClient,
    ProcessUpdate,
    RetryPolicy,
    SubmissionError,
    TrackingOptions,
)
from asyncbulk.testing import Fault, Simulator

pytestmark = pytest.mark.anyio

UPDATE_ROUTE = "/v1/ext/procedure/{procedure}/process"
COUNT = 50_000
BATCH = 250


def _positions_of(body: object) -> list[int]:
    """The input positions a bulk body carried (each update sets data.n to its position)."""
    assert isinstance(body, dict)
    return [item["update"]["data"]["n"] for item in body["processes"]]


def _success_count_per_process(sim: Simulator) -> dict[str, int]:
    """How many entries, over every job the server started, applied each process's change."""
    now = sim.clock.now()
    applied: dict[str, int] = {}
    for record in sim.records.chakra_submissions:
        job = sim.chakra.jobs[record.job_id]
        for index in range(job.total):
            entry = job.entry(index, now)
            if entry["completionStatus"] == "SUCCESS":
                pid = entry["data"]["apiData"]["processId"]
                applied[pid] = applied.get(pid, 0) + 1
    return applied


async def test_fifty_thousand_updates_with_applied_then_dropped_batches_are_all_accounted_for():  # noqa: PLR0915 -- one scenario, checked step by step
    """2% of batches applied then dropped: every position in one state, matching the server."""
    drop = Fault("drop_after", route=UPDATE_ROUTE, method="PATCH", rate=0.02)
    async with Simulator(
        seed=7, chakra_entries_per_second=1e9, chakra_error_rate=0.002, keep_requests=True
    ) as sim:
        sim.chakra.add_procedure("leads", primary_key="lead_id", attributes=["n"])
        for i in range(COUNT):
            sim.chakra.add_process("leads", {"lead_id": f"L{i}"}, id=f"pid-{i}")
        sim.faults.add(drop)
        updates = [ProcessUpdate.by_id(f"pid-{i}", data={"n": i}) for i in range(COUNT)]
        async with ChakraClient(
            sim.chakra_token,
            base_url=sim.chakra_url,
            retry=RetryPolicy.testing(),
            tracking=TrackingOptions(min_interval=0.01, max_interval=0.05),
            max_in_flight=32,
        ) as chakra:
            with pytest.raises(SubmissionError) as caught:
                await chakra.bulk_update_processes(
                    "leads", updates, batch_size=BATCH, max_batches_in_flight=8
                )
            submission = caught.value.submission
            assert caught.value.stopped_by is None
            dropped = sim.faults.fired(drop)
            assert dropped > 0

            # Every position is in exactly one state; no batch was skipped after a failure.
            states = [p.state for p in submission.positions()]
            assert len(states) == COUNT
            assert [p.position for p in submission.positions()] == list(range(COUNT))
            assert set(states) == {"accepted", "unknown"}
            assert sim.records.count(method="PATCH", route=UPDATE_ROUTE) == COUNT // BATCH

            # What the server applied, from its own records: each position received once;
            # the unknown positions are exactly those of the batches whose answer it dropped.
            received: dict[int, str] = {}
            for record in sim.records.chakra_submissions:
                for position in _positions_of(json.loads(record.raw)):
                    assert position not in received
                    received[position] = record.job_id
            assert sorted(received) == list(range(COUNT))
            known_jobs = set(submission.job_ids)
            unknown_on_server = {p for p, job in received.items() if job not in known_jobs}
            unknown = {p.position for p in submission.positions() if p.state == "unknown"}
            assert unknown == unknown_on_server
            assert len(unknown) == dropped * BATCH
            for batch in submission.accepted:
                assert {received[p] for p in batch.positions} == {batch.job_id}
            assert [u.id for u in submission.unknown_updates()] == [
                f"pid-{p}" for p in sorted(unknown)
            ]

            await submission.wait(timeout=60)
            summary = await submission.summary()
            assert summary.mismatches == ()
            # Accepted positions carry their entry's outcome, as the server decided it.
            now = sim.clock.now()
            on_server: dict[int, str] = {}
            for record in sim.records.chakra_submissions:
                job = sim.chakra.jobs[record.job_id]
                for index, position in enumerate(_positions_of(json.loads(record.raw))):
                    on_server[position] = job.entry(index, now)["completionStatus"]
            for outcome in submission.positions():
                if outcome.state == "accepted":
                    assert outcome.entry_status == on_server[outcome.position]
                else:
                    assert outcome.entry_status is None
            errors = [f.position for f in summary.failed]
            assert errors
            assert all(p is not None and p not in unknown for p in errors)

            # Resubmitting failed_updates() applies nothing twice.
            sim.faults.remove(drop)
            resend = [u async for u in submission.failed_updates()]
            assert sorted(u.id for u in resend) == sorted(f"pid-{p}" for p in errors)
            again = await chakra.bulk_update_processes("leads", resend, batch_size=BATCH)
            await again.wait(timeout=60)
        applied = _success_count_per_process(sim)
        assert max(applied.values()) == 1


async def test_a_circuit_of_consecutive_failures_stops_sending_and_names_the_rest():
    """After the configured run of failed batches, sending stops and the rest is not sent."""
    async with Simulator(chakra_entries_per_second=1e6) as sim:
        sim.chakra.add_procedure("leads", primary_key="lead_id", attributes=["n"])
        sim.faults.add(Fault("status", status=500, route=UPDATE_ROUTE, method="PATCH"))
        updates = [{"lead_id": f"L{i}", "data": {"n": i}} for i in range(100)]
        async with ChakraClient(
            sim.chakra_token, base_url=sim.chakra_url, retry=RetryPolicy.testing()
        ) as chakra:
            with pytest.raises(SubmissionError) as caught:
                await chakra.bulk_update_processes(
                    "leads",
                    updates,
                    batch_size=10,
                    max_batches_in_flight=1,
                    max_consecutive_failures=3,
                )
        submission = caught.value.submission
        assert [b.state for b in submission.outcomes] == ["unknown"] * 3 + ["not_sent"] * 7
        assert sim.records.count(method="PATCH", route=UPDATE_ROUTE) == 3
        assert submission.unsent_from == 30
        resend = [u async for u in submission.failed_updates()]
        assert [u.to_wire()["update"]["data"]["n"] for u in resend] == list(range(30, 100))


@pytest.mark.parametrize("count", [10, 400], ids=["one batch", "forty batches"])
async def test_a_wrong_token_gives_the_same_error_whatever_the_size(count):
    """A refused token stops sending with the same error shape for one batch or forty."""
    async with Simulator() as sim:
        sim.chakra.add_procedure("leads", primary_key="lead_id", attributes=["n"])
        updates = [{"lead_id": f"L{i}", "data": {"n": i}} for i in range(count)]
        async with ChakraClient(
            "wrong-token", base_url=sim.chakra_url, retry=RetryPolicy.testing()
        ) as chakra:
            with pytest.raises(SubmissionError) as caught:
                await chakra.bulk_update_processes(
                    "leads", updates, batch_size=10, max_batches_in_flight=1
                )
        assert isinstance(caught.value.stopped_by, AuthenticationError)
        assert isinstance(caught.value.__cause__, AuthenticationError)
        assert caught.value.submission.counts() == {
            "rejected": 10,
            **({"not_sent": count - 10} if count > 10 else {}),
        }
        assert sim.records.count(method="PATCH", route=UPDATE_ROUTE) == 1


async def test_a_create_answered_empty_is_accepted_with_no_job_and_the_rest_goes_on():
    """A bulk create answered ``{}`` is accepted with no job, and later batches are sent."""
    async with Simulator() as sim:
        sim.chakra.add_procedure("leads", primary_key="lead_id", attributes=["n"])
        sim.faults.add(Fault("empty", method="POST", vendor="chakra", times=1))
        records = [{"lead_id": f"NEW-{i}", "data": {"n": i}} for i in range(30)]
        states = []
        async with ChakraClient(
            sim.chakra_token, base_url=sim.chakra_url, retry=RetryPolicy.testing()
        ) as chakra:
            submission = await chakra.bulk_create_processes(
                "leads", records, batch_size=10, max_batches_in_flight=1, on_state=states.append
            )
        assert [(b.state, b.job_id is None) for b in submission.outcomes] == [
            ("accepted", True),
            ("accepted", False),
            ("accepted", False),
        ]
        assert "names no job" in submission.outcomes[0].warnings[-1]
        assert len(sim.records.chakra_submissions) == 3
        assert [s.state for s in states] == ["sending", "accepted"] * 3


async def test_a_cancelled_submission_reports_every_batch_that_reached_the_server():
    """Cancelled mid-way: each batch the server received is reported accepted or unknown."""
    async with Simulator(chakra_entries_per_second=1e6) as sim:
        sim.chakra.add_procedure("leads", primary_key="lead_id", attributes=["n"])
        for i in range(200):
            sim.chakra.add_process("leads", {"lead_id": f"L{i}"}, id=f"pid-{i}")
        slow = sim.faults.add(Fault("latency", delay=0.3, route=UPDATE_ROUTE, method="PATCH"))
        updates = [ProcessUpdate.by_id(f"pid-{i}", data={"n": i}) for i in range(200)]
        final: dict[int, str] = {}
        sending: set[int] = set()
        started = anyio.Event()

        def note(batch):
            if batch.state == "sending":
                sending.add(batch.start)
                if len(sending) >= 4:
                    started.set()
            else:
                final[batch.start] = batch.state

        async with (
            ChakraClient(
                sim.chakra_token, base_url=sim.chakra_url, retry=RetryPolicy.testing()
            ) as chakra,
            anyio.create_task_group() as group,
        ):

            async def submit():
                await chakra.bulk_update_processes(
                    "leads",
                    updates,
                    batch_size=10,
                    max_batches_in_flight=4,
                    on_state=note,
                    cancel_grace=5,
                )

            group.start_soon(submit)
            await started.wait()
            group.cancel_scope.cancel()
        assert sim.faults.fired(slow) >= 4
        received = {min(_positions_of(json.loads(r.raw))) for r in sim.records.chakra_submissions}
        assert received
        assert received <= set(final)
        assert set(final) == sending
        assert {final[start] for start in received} <= {"accepted", "unknown"}


@pytest.mark.parametrize(
    ("status", "state"),
    [(408, "unknown"), (501, "unknown"), (502, "unknown"), (409, "rejected"), (422, "rejected")],
    ids=str,
)
async def test_a_failed_batch_takes_the_one_rule_and_the_next_batch_is_sent(status, state):
    """Each refusal is classed by the one rule, and the batches after it are still sent."""
    async with Simulator(chakra_entries_per_second=1e6) as sim:
        sim.chakra.add_procedure("leads", primary_key="lead_id", attributes=["n"])
        sim.faults.add(Fault("status", status=status, route=UPDATE_ROUTE, times=1))
        updates = [{"lead_id": f"L{i}", "data": {"n": i}} for i in range(30)]
        async with ChakraClient(
            sim.chakra_token, base_url=sim.chakra_url, retry=RetryPolicy.testing()
        ) as chakra:
            with pytest.raises(SubmissionError) as caught:
                await chakra.bulk_update_processes(
                    "leads", updates, batch_size=10, max_batches_in_flight=1
                )
        assert [b.state for b in caught.value.submission.outcomes] == [
            state,
            "accepted",
            "accepted",
        ]
        assert sim.records.count(method="PATCH", route=UPDATE_ROUTE) == 3


def _entry(index: int, status: str) -> dict[str, object]:
    return {
        "id": f"entry-{index}",
        "data": {"apiData": {"processId": f"pid-{index}", "processUpdate": {"state": "S"}}},
        "completionStatus": status,
        "validationStatus": "SUCCESS",
    }


async def test_summary_reports_entries_that_disagree_with_the_job_counts():
    """A job whose counts say one ERROR while its entries show none: summary says so."""
    job = {"id": "job-1", "completionStatus": "COMPLETED", "completedAt": 1}
    counts = {"SUCCESS": 2, "ERROR": 1}
    entries = [_entry(i, "SUCCESS") for i in range(3)]

    async def patch(_request: web.Request) -> web.Response:
        return web.json_response({"_data": job, "_meta": {}, "_errors": []})

    async def get_job(_request: web.Request) -> web.Response:
        meta = {"bjEntryCompletionStatusVsCount": counts}
        return web.json_response({"_data": job, "_meta": meta, "_errors": []})

    async def get_entries(request: web.Request) -> web.Response:
        skip = int(request.query.get("skip", "0"))
        page = entries[skip : skip + int(request.query.get("limit", "100"))]
        return web.json_response({"_data": page, "_meta": {"total": 3}, "_errors": []})

    app = web.Application()
    app.router.add_patch("/v1/ext/procedure/leads/process", patch)
    app.router.add_get("/v1/ext/background-job/job-1", get_job)
    app.router.add_get("/v1/ext/background-job/job-1/entries", get_entries)
    async with (
        serve(app) as url,
        ChakraClient("t", base_url=url, retry=RetryPolicy.testing()) as chakra,
    ):
        updates = [ProcessUpdate.by_id(f"pid-{i}", state="S") for i in range(3)]
        submission = await chakra.bulk_update_processes("leads", updates)
        summary = await submission.summary()
    assert summary.mismatches == (
        "job job-1: 0 ERROR entries read, the job counts 1",
        "job job-1: 3 SUCCESS entries read, the job counts 2",
    )
    assert not summary.ok


async def test_a_batch_that_outlasts_the_cancel_grace_is_reported_unknown():
    """Cancelled while batches hang on the wire: after the grace, each is reported unknown."""
    async with Simulator(chakra_entries_per_second=1e6) as sim:
        sim.chakra.add_procedure("leads", primary_key="lead_id", attributes=["n"])
        sim.faults.add(Fault("latency", delay=60, route=UPDATE_ROUTE, method="PATCH"))
        updates = [{"lead_id": f"L{i}", "data": {"n": i}} for i in range(40)]
        final: dict[int, str] = {}
        sending: set[int] = set()
        started = anyio.Event()

        def note(batch):
            if batch.state == "sending":
                sending.add(batch.start)
                if len(sending) == 2:
                    started.set()
            else:
                final[batch.start] = batch.state

        async with (
            ChakraClient(
                sim.chakra_token, base_url=sim.chakra_url, retry=RetryPolicy.testing()
            ) as chakra,
            anyio.create_task_group() as group,
        ):

            async def submit():
                await chakra.bulk_update_processes(
                    "leads",
                    updates,
                    batch_size=10,
                    max_batches_in_flight=2,
                    on_state=note,
                    cancel_grace=0.1,
                )

            group.start_soon(submit)
            await started.wait()
            group.cancel_scope.cancel()
        assert final == dict.fromkeys(sending, "unknown")
        assert sim.records.chakra_submissions == []
