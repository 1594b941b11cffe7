"""Chaos: under every kind of fault at once, nothing is lost, nothing applied twice, nothing hangs.

The simulator answers 10% of requests 503, 5% 429 with ``Retry-After``, drops 2% of connections
before handling them and 2% after (the answer is lost), garbles 1% of answers, and delays 2% by
up to half a second. Through it, Chakra updates are submitted in batches and Zefort bulk updates
one by one, everything is tracked to the end, and then the simulator's own records prove:

- every input item ends with a final entry status, or an explicit error that names it (a
  `BatchError`'s positions, an `OutcomeUnknownError` carrying the request's body);
- no item and no Zefort bulk operation reached the server twice (each distinct body at most once),
  and a request the client calls "not acted on" never reached it at all;
- every Zefort task was acknowledged, and acknowledged again only where an answer was lost;
- everything finished within its deadline, and every error the caller saw is an AsyncBulkError.

The small run is in the default suite; the full one (20,000 updates, 2,000 bulk updates) is
marked slow: ``pytest -m slow tests/test_reliability_chaos.py -s`` prints its figures.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest

from asyncbulk import (
    AsyncBulkError,
    OutcomeUnknownError,
    RetryPolicy,
    SubmissionError,
    TrackingOptions,
    TransportError,
)
from asyncbulk.chakra import BatchError, ChakraClient
from asyncbulk.testing import Fault, Simulator
from asyncbulk.zefort import ZefortClient, ZefortTask

if TYPE_CHECKING:
    from collections.abc import Sequence

pytestmark = pytest.mark.anyio

PROCEDURE = "tele_sales"
FINAL = frozenset({"SUCCESS", "ERROR", "INVALID", "CANCELLED"})
# Requests the simulated server carried out: no fault, or one that strikes only after handling.
HANDLED = frozenset({None, "latency", "drop_after", "malformed", "slow_body"})
TASK_ROUTE = "/api/tasks/{id}/"
BULK_ROUTE = "/api/contracts/bulk_update/"
CHAKRA_BULK_ROUTE = "/v1/ext/procedure/{procedure}/process"


def chaos_faults() -> list[Fault]:
    """The issue's mix; latency first, so a request's record names its decisive fault."""
    return [
        Fault("latency", rate=0.02, delay=(0.1, 0.5)),
        Fault("status", rate=0.10, status=503),
        Fault("status", rate=0.05, retry_after=0.1),
        Fault("drop_before", rate=0.02),
        Fault("drop_after", rate=0.02),
        Fault("malformed", rate=0.01),
    ]


RETRY = RetryPolicy(initial_wait=0.01, max_wait=0.1)


@attrs.define
class ChakraOutcome:
    """Where every input position ended up."""

    jobs: dict[str, range] = attrs.Factory(dict)
    failed: list[tuple[range, BaseException, bool]] = attrs.Factory(list)
    errors: list[BaseException] = attrs.Factory(list)


def shifted(positions: range, offset: int) -> range:
    return range(positions.start + offset, positions.stop + offset)


async def submit_all(
    chakra: ChakraClient, items: Sequence[dict[str, Any]], batch_size: int
) -> ChakraOutcome:
    """Submit everything, going on after each failed batch with the input not yet sent.

    A failed batch is not sent again here: its items end as an explicit error naming them.
    """
    out = ChakraOutcome()
    offset = 0
    while offset < len(items):
        rest = items[offset:]
        try:
            submission = await chakra.bulk_update_processes(
                PROCEDURE, rest, batch_size=batch_size, max_batches_in_flight=4
            )
            unsent = None
        except SubmissionError as exc:
            out.errors.append(exc)
            submission = exc.submission
            for batch in submission.failed_batches:
                out.failed.append((shifted(batch.positions, offset), batch, batch.outcome_unknown))
            unsent = submission.unsent_from
        except AsyncBulkError as exc:
            # The only batch sent failed: it held the first `batch_size` items of `rest`.
            out.errors.append(exc)
            batch = range(offset, min(offset + batch_size, len(items)))
            unknown = exc.sent if isinstance(exc, TransportError) else not _refused(exc)
            out.failed.append((batch, exc, unknown))
            offset = batch.stop
            continue
        for job_id, positions in submission.batches.items():
            out.jobs[job_id] = shifted(positions, offset)
        if unsent is None:
            break
        offset += unsent
    return out


def _refused(error: BaseException) -> bool:
    """Whether a failed bulk request certainly was not acted on (429, 503)."""
    return getattr(error, "status", None) in {429, 503}


@attrs.define
class ZefortOutcome:
    """What became of each bulk update, by its input number."""

    tasks: dict[int, ZefortTask] = attrs.Factory(dict)
    unknown: dict[int, OutcomeUnknownError] = attrs.Factory(dict)
    refused: dict[int, AsyncBulkError] = attrs.Factory(dict)


def zefort_body(n: int) -> dict[str, Any]:
    return {"attributes": {"batch": n}, "status": "done", "search": {"q_tags": f"tag-{n}"}}


async def bulk_update_all(zefort: ZefortClient, count: int) -> ZefortOutcome:
    out = ZefortOutcome()
    limiter = anyio.CapacityLimiter(16)

    async def one(n: int) -> None:
        body = zefort_body(n)
        async with limiter:
            try:
                out.tasks[n] = await zefort.bulk_update_contracts(**body)
            except OutcomeUnknownError as exc:
                out.unknown[n] = exc
            except AsyncBulkError as exc:
                out.refused[n] = exc

    async with anyio.create_task_group() as group:
        for n in range(count):
            group.start_soon(one, n)
    return out


@attrs.frozen
class Scale:
    """How big a chaos run is, and its deadline for tracking."""

    updates: int
    batch_size: int
    bulk_updates: int
    deadline: float


async def run_chaos(scale: Scale, seed: int) -> dict[str, Any]:  # noqa: C901, PLR0912, PLR0915 -- one story, told in order
    started = time.monotonic()
    figures: dict[str, Any] = {"updates": scale.updates, "bulk_updates": scale.bulk_updates}
    async with Simulator(
        seed=seed,
        faults=chaos_faults(),
        chakra_entries_per_second=20_000,
        chakra_error_rate=0.01,
        zefort_task_delay=(0.05, 0.5),
        zefort_failure_rate=0.01,
    ) as sim:
        leads = [f"CHAOS-{i}" for i in range(scale.updates)]
        lead_of_process = {
            sim.chakra.add_process(PROCEDURE, {"lead_id": lead}).id: lead for lead in leads
        }
        items = [
            {"lead_id": lead, "status": "COMPLETED", "data": {"city": "Goa"}} for lead in leads
        ]
        options: dict[str, Any] = {"retry": RETRY}
        async with (
            ChakraClient(
                sim.chakra_token,
                base_url=sim.chakra_url,
                tracking=TrackingOptions(min_interval=0.05, max_interval=0.5),
                **options,
            ) as chakra,
            ZefortClient(
                sim.zefort_api_key,
                base_url=sim.zefort_url,
                tracking=TrackingOptions(min_interval=0.05, max_interval=0.5, sweep_interval=0.2),
                **options,
            ) as zefort,
        ):
            with anyio.fail_after(scale.deadline * 3):
                chakra_out, zefort_out = await _submit_both(chakra, zefort, items, scale)

                # -- track everything to the end, within the deadline --
                deadline = time.monotonic() + scale.deadline
                finished_jobs: dict[str, Any] = {}
                async with chakra.track_jobs(list(chakra_out.jobs), timeout=scale.deadline) as jobs:
                    async for job in jobs:
                        assert job.id not in finished_jobs
                        finished_jobs[job.id] = job
                assert set(finished_jobs) == set(chakra_out.jobs)
                yielded: list[str] = []
                task_ids = [task.id for task in zefort_out.tasks.values()]
                async with zefort.track_tasks(
                    task_ids, timeout=scale.deadline, acknowledge=True
                ) as tasks:
                    async for task in tasks:
                        yielded.append(task.id)
                        if not task.is_acknowledged:
                            # The acknowledgement failed after its retries: the task is still
                            # handed over, and the caller acknowledges it later.
                            await zefort.acknowledge_task(task.id)
                assert sorted(yielded) == sorted(task_ids)
                assert time.monotonic() <= deadline + 2.0

                # -- every item of every accepted job has a final entry status --
                statuses: dict[str, str] = {}
                for job_id in chakra_out.jobs:
                    async with chakra.iter_job_entries(job_id) as entries:
                        async for entry in entries:
                            lead = lead_of_process[entry.process_id]
                            assert lead not in statuses, f"{lead} has two entries"
                            statuses[lead] = entry.completion_status
            figures["chakra_requests"] = chakra.stats.requests
            figures["zefort_requests"] = zefort.stats.requests
            figures["retries"] = chakra.stats.retries + zefort.stats.retries

        # -- the simulator's records: nothing lost, nothing twice --
        records = sim.records
        sent_items: dict[str, list[str]] = defaultdict(list)
        for submission in records.chakra_submissions:
            for item in submission.body["processes"]:
                sent_items[item["lead_id"]].append(submission.job_id)
        twice = {lead: jobs for lead, jobs in sent_items.items() if len(jobs) > 1}
        assert not twice, f"applied twice: {list(twice.items())[:3]}"
        covered: Counter[int] = Counter()
        for job_id, positions in chakra_out.jobs.items():
            covered.update(positions)
            submitted = records.chakra_submission(job_id)
            assert submitted is not None
            assert [p["lead_id"] for p in submitted.body["processes"]] == [
                leads[i] for i in positions
            ]
            for i in positions:
                assert statuses[leads[i]] in FINAL
        unknown_batches = 0
        for positions, error, outcome_unknown in chakra_out.failed:
            covered.update(positions)
            assert isinstance(error, AsyncBulkError)
            reached = {tuple(sent_items.get(leads[i], ())) for i in positions}
            if outcome_unknown:
                unknown_batches += 1
                assert len(reached) == 1  # the whole batch reached the server once, or not at all
            else:
                assert reached == {()}, "a batch called 'not acted on' reached the server"
        assert sorted(covered) == list(range(scale.updates)), "an item was lost"
        assert max(covered.values()) == 1

        bodies: dict[str, list[str]] = defaultdict(list)
        for submission in records.zefort_submissions:
            bodies[json.dumps(submission.body, sort_keys=True)].append(submission.task_id)
        assert all(len(ids) == 1 for ids in bodies.values()), "a bulk operation started twice"
        unknown_started = 0
        for n in range(scale.bulk_updates):
            started_ids = bodies.get(json.dumps(zefort_body(n), sort_keys=True), [])
            if n in zefort_out.tasks:
                assert started_ids == [zefort_out.tasks[n].id]
            elif n in zefort_out.refused:
                assert started_ids == [], zefort_out.refused[n]
            else:
                assert n in zefort_out.unknown, f"bulk update {n} has no outcome"
                unknown_started += bool(started_ids)
        handled_acks: Counter[str] = Counter(
            r.path.split("/")[3]
            for r in records.requests
            if r.method == "PATCH" and r.route == TASK_ROUTE and r.fault in HANDLED
        )
        for task_id in task_ids:
            assert records.acknowledgements[task_id] >= 1
            assert records.acknowledgements[task_id] == handled_acks[task_id]
        for task_id in task_ids:
            assert records.task_finished(task_id) is not None

        figures["seconds"] = round(time.monotonic() - started, 1)
        figures["requests"] = records.total_requests
        figures["faults"] = dict(records.faults)
        figures["answers_by_status"] = dict(sorted(records.by_status.items()))
        figures["jobs"] = len(chakra_out.jobs)
        figures["items_in_jobs"] = sum(len(r) for r in chakra_out.jobs.values())
        figures["items_in_failed_batches"] = sum(len(r) for r, _, _ in chakra_out.failed)
        figures["failed_batches_outcome_unknown"] = unknown_batches
        figures["entry_statuses"] = dict(Counter(statuses.values()))
        figures["tasks"] = len(zefort_out.tasks)
        figures["bulk_outcome_unknown"] = len(zefort_out.unknown)
        figures["bulk_refused"] = len(zefort_out.refused)
        figures["bulk_outcome_unknown_that_had_started"] = unknown_started
        figures["ambiguous_posts"] = sum(
            1
            for r in records.requests
            if r.route == BULK_ROUTE and r.fault in {"drop_after", "malformed", "drop_before"}
        )
        figures["duplicate_acks_after_lost_answers"] = sum(
            records.acknowledgements[t] - 1 for t in task_ids
        )
        errors = [*chakra_out.errors, *zefort_out.unknown.values(), *zefort_out.refused.values()]
        for error in chakra_out.errors:
            if isinstance(error, SubmissionError):
                assert all(isinstance(e, BatchError) for e in error.errors), error.errors
        for n, error in zefort_out.unknown.items():
            assert error.body == zefort_body(n)  # the error names its request
        assert all(isinstance(e, AsyncBulkError) for e in errors)
        figures["errors_seen"] = dict(Counter(type(e).__name__ for e in errors))
    return figures


async def _submit_both(
    chakra: ChakraClient, zefort: ZefortClient, items: list[dict[str, Any]], scale: Scale
) -> tuple[ChakraOutcome, ZefortOutcome]:
    results: dict[str, Any] = {}

    async def chakra_side() -> None:
        results["chakra"] = await submit_all(chakra, items, scale.batch_size)

    async def zefort_side() -> None:
        results["zefort"] = await bulk_update_all(zefort, scale.bulk_updates)

    async with anyio.create_task_group() as group:
        group.start_soon(chakra_side)
        group.start_soon(zefort_side)
    return results["chakra"], results["zefort"]


async def test_chaos_small_nothing_lost_nothing_twice():
    """2,000 updates and 200 bulk updates under every fault: all accounted for, none twice."""
    figures = await run_chaos(Scale(updates=2000, batch_size=100, bulk_updates=200, deadline=30), 1)
    print(f"\nchaos (small): {figures}")
    assert sum(figures["faults"].values()) > 50


@pytest.mark.slow
async def test_chaos_full_nothing_lost_nothing_twice():
    """20,000 updates and 2,000 bulk updates under every fault: all accounted for, none twice."""
    figures = await run_chaos(
        Scale(updates=20_000, batch_size=500, bulk_updates=2000, deadline=120), 7
    )
    print(f"\nchaos (full): {json.dumps(figures, indent=1)}")
    assert sum(figures["faults"].values()) > 500


async def test_several_failed_batches_are_all_named():
    """Two batches in flight both lost after sending: both are named, the rest still sent."""
    async with Simulator(faults=[Fault("drop_after", route=CHAKRA_BULK_ROUTE, times=2)]) as sim:
        for i in range(20):
            sim.chakra.add_process(PROCEDURE, {"lead_id": f"L-{i}"})
        updates = [{"lead_id": f"L-{i}", "status": "COMPLETED"} for i in range(20)]
        async with ChakraClient(
            sim.chakra_token, base_url=sim.chakra_url, retry=RetryPolicy.testing()
        ) as chakra:
            with pytest.raises(SubmissionError) as caught:
                await chakra.bulk_update_processes(
                    PROCEDURE, updates, batch_size=5, max_batches_in_flight=2
                )
        failed = caught.value.submission.failed_batches
        assert [b.positions for b in failed] == [range(5), range(5, 10)]
        assert all(b.outcome_unknown for b in failed)
        assert len(sim.records.chakra_submissions) == 4
        assert caught.value.submission.unsent_from is None
        assert caught.value.submission.counts() == {"unknown": 10, "accepted": 10}


async def test_tracking_survives_when_every_poll_fails_for_a_while():
    """A stretch where every request fails ends in a normal finish, not a lost task."""
    async with Simulator(zefort_task_delay=0.2) as sim:
        async with ZefortClient(
            sim.zefort_api_key,
            base_url=sim.zefort_url,
            retry=RETRY,
            tracking=TrackingOptions(min_interval=0.02, max_interval=0.1),
        ) as zefort:
            ids = [(await zefort.bulk_update_contracts(**zefort_body(n))).id for n in range(10)]
            outage = sim.faults.add(Fault("status", status=503, vendor="zefort"))
            seen: list[str] = []
            with anyio.fail_after(20):
                async with zefort.track_tasks(ids, timeout=15, acknowledge=True) as tasks:
                    await anyio.sleep(0.5)
                    sim.faults.remove(outage)
                    async for task in tasks:
                        seen.append(task.id)  # noqa: PERF401 -- as they come
        assert sorted(seen) == sorted(ids)
        assert all(sim.records.acknowledgements[i] == 1 for i in ids)


def test_chaos_faults_are_the_issues_mix():
    """The rules inject what the issue names: 503, 429 with Retry-After, drops, garbage, spikes."""
    kinds = {(f.kind, f.status, f.retry_after is not None) for f in chaos_faults()}
    assert ("status", 503, False) in kinds
    assert ("status", None, True) in kinds
    assert {k for k, _, _ in kinds} == {
        "latency",
        "status",
        "drop_before",
        "drop_after",
        "malformed",
    }
