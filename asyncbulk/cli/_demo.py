"""``asyncbulk demo``: the whole flow, offline, against the simulator started in-process.

It plays both parts. As the vendors, it starts `asyncbulk.testing.Simulator` on loopback with
a little trouble injected (a few 429s with ``Retry-After``, a few 503s), a procedure of leads
and a set of contracts, and plants a few failures on purpose. As a user, it drives the public
clients only: it submits the Chakra updates in batches, follows the jobs and streams their
entries; it starts the Zefort bulk updates and tracks every task to the end with
acknowledgement. Then it checks that every update and task is accounted for, and that the only
failures are the planted ones.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs

from asyncbulk import RetryPolicy, TrackingOptions
from asyncbulk.chakra import ChakraClient, ProcessUpdate
from asyncbulk.cli._output import table
from asyncbulk.cli._progress import LiveProgress
from asyncbulk.cli._runner import EXIT_FAILED, EXIT_OK
from asyncbulk.testing import Fault, Simulator, TokenBucket
from asyncbulk.zefort import ZefortClient

if TYPE_CHECKING:
    from collections.abc import Iterator

    from asyncbulk.chakra import BackgroundJob, JobEntry
    from asyncbulk.cli._output import Output
    from asyncbulk.cli._progress import Meter
    from asyncbulk.cli._runner import Ledger
    from asyncbulk.zefort import ZefortTask

__all__ = ["DemoPlan", "run_demo"]

PROCEDURE: Final = "demo_leads"
_CITIES: Final = ("Pune", "Goa", "Delhi", "Mumbai", "Chennai", "Kochi", "Jaipur", "Indore")
_STAGES: Final = ("new", "contacted", "qualified", "proposal", "won")
_REGIONS: Final = 10
# The simulated vendors: fast enough for a demo under a minute on two cores, slow enough that
# the bars visibly move (a batch of 500 entries takes its job 2 s; a task 0.3-3 s).
_ENTRIES_PER_SECOND: Final = 250.0
_ERROR_RATE: Final = 0.0005
_TASK_DELAY: Final = (0.3, 3.0)
# A stray 429 delays only its own request's retry; 429s that are a share of the recent answers
# cut the learned rate, and only a run of them pauses the whole host. Capped all the same, so
# a large --tasks spends its time on the work rather than on backing off.
_TROUBLE: Final = (
    Fault("status", rate=0.02, status=429, retry_after=0.1, times=60),
    Fault("status", rate=0.02, status=503),
)
# Each simulated vendor limits every credential to a token bucket, as the real APIs do: above
# the demo's usual pace (so it stays quick), below its bursts (so the clients meet 429s from
# the limit and learn the rate from them).
_RATE_LIMIT: Final = (400.0, 80)
_SHOWN_FAILURES: Final = 8
_DEADLINE: Final = 300.0
_ENTRY_READERS: Final = 4
_TASK_SUBMITTERS: Final = 16


@attrs.frozen(kw_only=True)
class DemoPlan:
    """What the demo does, and what it plants on purpose.

    Attributes:
        updates: Chakra process updates to send.
        tasks: Zefort bulk updates to start (one task each).
        seed: seeds the simulator and the planted failures.
        batch_size: updates per Chakra request (one background job each).
    """

    updates: int = 20_000
    tasks: int = 1_000
    seed: int = 0
    batch_size: int = 500

    @property
    def invalid(self) -> int:
        """Updates made invalid on purpose: unknown lead ids and unknown attributes."""
        return max(2, self.updates // 2_000) if self.updates >= 2 else self.updates  # noqa: PLR2004

    @property
    def failing_tasks(self) -> int:
        """Zefort tasks made to fail on purpose."""
        return min(self.tasks, max(1, self.tasks // 200))

    @property
    def processes(self) -> int:
        """Leads in the simulated procedure: one per valid update."""
        return self.updates - self.invalid

    def is_invalid(self, position: int) -> bool:
        """Whether the update at `position` is one of the planted invalid ones (spread evenly)."""
        every = max(1, self.updates // max(1, self.invalid))
        return position % every == every // 2 and position // every < self.invalid


def _updates(plan: DemoPlan, process_ids: list[str]) -> Iterator[ProcessUpdate]:
    """The user's input: a generator, as a file read line by line would be."""
    lead = 0
    planted = 0
    for position in range(plan.updates):
        city = _CITIES[position % len(_CITIES)]
        if plan.is_invalid(position):
            planted += 1
            if planted % 2:
                yield ProcessUpdate.by_key(
                    "lead_id", f"LEAD-MISSING-{planted}", data={"city": city}
                )
            else:
                yield ProcessUpdate.by_key(
                    "lead_id", f"LEAD-{lead % plan.processes:06d}", data={"colour": "teal"}
                )
            continue
        stage = _STAGES[position % len(_STAGES)]
        if lead % 3 == 0:
            yield ProcessUpdate.by_id(process_ids[lead], data={"city": city, "stage": stage})
        else:
            yield ProcessUpdate.by_key(
                "lead_id",
                f"LEAD-{lead:06d}",
                data={"city": city, "score": lead % 100},
                status="COMPLETED" if lead % 7 == 0 else None,
            )
        lead += 1


def _prepare(sim: Simulator, plan: DemoPlan) -> list[str]:
    """The vendors' side: a procedure of leads and a set of contracts, and planted failures."""
    sim.chakra.add_procedure(
        PROCEDURE, primary_key="lead_id", attributes=("city", "score", "stage")
    )
    ids = [
        sim.chakra.add_process(PROCEDURE, {"lead_id": f"LEAD-{n:06d}", "city": "Pune"}).id
        for n in range(plan.processes)
    ]
    for n in range(_REGIONS * 5):
        sim.zefort.add_contract(
            f"Service agreement {n}", tags=[f"region-{n % _REGIONS}"], status="review"
        )
    sim.zefort.fail_next_tasks(
        plan.failing_tasks, "error", info="contract locked by another bulk operation (planted)"
    )
    return ids


@attrs.define
class _Tally:
    """What the user's side saw, for the summary."""

    jobs: int = 0
    entries: Counter[str] = attrs.Factory(Counter)
    tasks: Counter[str] = attrs.Factory(Counter)
    acknowledged: int = 0
    failures: list[dict[str, Any]] = attrs.Factory(list)
    batches: dict[str, range] = attrs.Factory(dict)
    seconds: dict[str, float] = attrs.Factory(dict)

    def failure(self, **fields: Any) -> None:
        if len(self.failures) < _SHOWN_FAILURES * 2:
            self.failures.append(fields)


@attrs.frozen
class _Meters:
    sent: Meter
    jobs: Meter
    entries: Meter
    submitted: Meter
    tasks: Meter


async def _chakra_flow(
    *,
    chakra: ChakraClient,
    plan: DemoPlan,
    process_ids: list[str],
    meters: _Meters,
    tally: _Tally,
    ledger: Ledger,
) -> None:
    started = time.monotonic()

    def accepted(job: BackgroundJob, positions: range) -> None:
        ledger.submitted_job(job.id)
        tally.batches[job.id] = positions
        meters.sent.completed += len(positions)

    submission = await chakra.bulk_update_processes(
        PROCEDURE, _updates(plan, process_ids), batch_size=plan.batch_size, on_batch=accepted
    )
    tally.jobs = len(submission.jobs)
    meters.jobs.total = len(submission.jobs)
    ledger.waiting(submission.job_ids)
    readers = anyio.CapacityLimiter(_ENTRY_READERS)

    async def read_entries(job_id: str) -> None:
        async with readers, chakra.iter_job_entry_pages(job_id) as pages:
            async for page in pages:
                for entry in page:
                    status = entry.completion_status or "UNKNOWN"
                    tally.entries[status] += 1
                    if status != "SUCCESS":
                        _chakra_failure(tally, job_id, entry)
                meters.entries.completed += len(page)

    async with (
        anyio.create_task_group() as group,
        chakra.track_jobs(submission.job_ids, timeout=_DEADLINE) as jobs,
    ):
        async for job in jobs:
            ledger.finished(job.id)
            meters.jobs.completed += 1
            group.start_soon(read_entries, job.id)
    tally.seconds["chakra"] = time.monotonic() - started


def _chakra_failure(tally: _Tally, job_id: str, entry: JobEntry) -> None:
    positions = tally.batches[job_id]
    tally.failure(
        vendor="Chakra",
        id=job_id,
        items=[positions.start, positions.stop],
        status=entry.completion_status,
        message=entry.validation_message or entry.completion_message or "",
    )


async def _zefort_flow(
    *, zefort: ZefortClient, plan: DemoPlan, meters: _Meters, tally: _Tally, ledger: Ledger
) -> None:
    started = time.monotonic()
    task_ids: list[str] = []
    positions = iter(range(plan.tasks))

    async def submit() -> None:
        for n in positions:
            task = await zefort.bulk_update_contracts(
                attributes={"review_date": f"2025-{n % 12 + 1:02d}-15", "batch": n},
                status="done",
                search={"q_tags": f"region-{n % _REGIONS}"},
            )
            ledger.submitted_task(task.id)
            task_ids.append(task.id)
            meters.submitted.completed += 1

    async with anyio.create_task_group() as group:
        for _ in range(_TASK_SUBMITTERS):
            group.start_soon(submit)
    ledger.waiting(task_ids)
    async with zefort.track_tasks(task_ids, timeout=_DEADLINE, acknowledge=True) as tasks:
        async for task in tasks:
            ledger.finished(task.id)
            meters.tasks.completed += 1
            tally.tasks[task.backend_status] += 1
            if not task.is_done:
                _zefort_failure(tally, task)
    # Each task is acknowledged once taken, after it was yielded: count when all settled.
    tally.acknowledged = tasks.stats.acknowledged
    tally.seconds["zefort"] = time.monotonic() - started


def _zefort_failure(tally: _Tally, task: ZefortTask) -> None:
    tally.failure(
        vendor="Zefort",
        id=task.id,
        status=task.backend_status,
        message=task.backend_status_info,
    )


async def run_demo(plan: DemoPlan, *, output: Output, ledger: Ledger) -> int:
    """Run the demo; return 0 when the flow worked as designed, 1 otherwise."""
    started = time.monotonic()
    output.note(
        f"asyncbulk demo: {plan.updates:,} Chakra process updates and {plan.tasks:,} Zefort bulk "
        f"updates against the built-in simulator (seed {plan.seed}), with a rate limit of "
        f"{_RATE_LIMIT[0]:g} requests a second (burst {_RATE_LIMIT[1]}) per vendor, and 2% 429s "
        "(at most 60) and 2% 503s injected.",
        wrap=True,
    )
    progress = LiveProgress(output.stderr)
    async with Simulator(
        seed=plan.seed,
        chakra_entries_per_second=_ENTRIES_PER_SECOND,
        chakra_error_rate=_ERROR_RATE,
        zefort_task_delay=_TASK_DELAY,
        faults=_TROUBLE,
        rate_limit=TokenBucket(*_RATE_LIMIT),
        keep_requests=False,
        examples=False,
    ) as sim:
        process_ids = _prepare(sim, plan)
        # Quick polls and retries: the simulated jobs are short and the trouble is brief.
        retry = RetryPolicy(initial_wait=0.05, max_wait=1.0, budget=60.0)
        chakra = ChakraClient(
            sim.chakra_token,
            base_url=sim.chakra_url,
            retry=retry,
            tracking=TrackingOptions(min_interval=0.2, max_interval=1.0),
        )
        zefort = ZefortClient(
            sim.zefort_api_key,
            base_url=sim.zefort_url,
            retry=retry,
            tracking=TrackingOptions(min_interval=0.2, max_interval=1.0),
        )
        meters = _Meters(
            sent=progress.add("updates sent", total=plan.updates, rate=True),
            jobs=progress.add("jobs finished", total=0),
            entries=progress.add("entries read", total=plan.updates, rate=True),
            submitted=progress.add("tasks submitted", total=plan.tasks, rate=True),
            tasks=progress.add("tasks done", total=plan.tasks, rate=True),
        )
        progress.add("retries", read=lambda: chakra.stats.retries + zefort.stats.retries)
        tally = _Tally()
        with progress:
            async with chakra, zefort, anyio.create_task_group() as group:
                group.start_soon(
                    functools.partial(
                        _chakra_flow,
                        chakra=chakra,
                        plan=plan,
                        process_ids=process_ids,
                        meters=meters,
                        tally=tally,
                        ledger=ledger,
                    )
                )
                group.start_soon(
                    functools.partial(
                        _zefort_flow,
                        zefort=zefort,
                        plan=plan,
                        meters=meters,
                        tally=tally,
                        ledger=ledger,
                    )
                )
        acknowledgements = sim.records.acknowledgements
        checks = {
            "every update has an entry": sum(tally.entries.values()) == plan.updates,
            "only the planted updates are invalid": tally.entries["INVALID"] == plan.invalid,
            "every task finished": sum(tally.tasks.values()) == plan.tasks,
            "only the planted tasks failed": plan.tasks - tally.tasks["done"] == plan.failing_tasks,
            "every task acknowledged once": len(acknowledgements) == plan.tasks
            and all(n == 1 for n in acknowledgements.values()),
        }
        report = _report(
            plan=plan,
            tally=tally,
            chakra=chakra,
            zefort=zefort,
            sim=sim,
            checks=checks,
            seconds=time.monotonic() - started,
        )
    if output.json_mode:
        output.json(report)
    else:
        _show(output, report)
    return EXIT_OK if report["ok"] else EXIT_FAILED


def _report(
    *,
    plan: DemoPlan,
    tally: _Tally,
    chakra: ChakraClient,
    zefort: ZefortClient,
    sim: Simulator,
    checks: dict[str, bool],
    seconds: float,
) -> dict[str, Any]:
    def traffic(client: ChakraClient | ZefortClient) -> dict[str, int]:
        stats = client.stats
        return {
            "requests": stats.requests,
            "retries": stats.retries,
            "rate_limited": stats.rate_limited,
            "errors": stats.errors,
        }

    return {
        "ok": all(checks.values()),
        "seed": plan.seed,
        "seconds": round(seconds, 3),
        "chakra": {
            "updates": plan.updates,
            "jobs": tally.jobs,
            "entries": dict(tally.entries),
            "planted_invalid": plan.invalid,
            "seconds": round(tally.seconds.get("chakra", 0.0), 3),
            **traffic(chakra),
        },
        "zefort": {
            "tasks": plan.tasks,
            "statuses": dict(tally.tasks),
            "acknowledged": tally.acknowledged,
            "planted_failures": plan.failing_tasks,
            "seconds": round(tally.seconds.get("zefort", 0.0), 3),
            **traffic(zefort),
        },
        "faults_injected": dict(sim.records.faults),
        "checks": checks,
        "failures": tally.failures,
    }


def _where(failure: dict[str, Any]) -> str:
    if "items" not in failure:
        return str(failure["id"])
    start, stop = failure["items"]
    return f"job {failure['id'][:8]} #{start + 1:,}-{stop:,}"


def _show(output: Output, report: dict[str, Any]) -> None:
    chakra, zefort = report["chakra"], report["zefort"]
    notes = {
        "INVALID": f"{chakra['planted_invalid']:,} planted: unknown lead ids and attributes",
        "ERROR": "simulated processing errors (0.05%)",
    }
    rows: list[tuple[Any, ...]] = [
        ("Chakra", f"entries {status}", count, notes.get(status, ""))
        for status, count in sorted(chakra["entries"].items(), key=lambda kv: -kv[1])
    ]
    rows += [
        (
            "Zefort",
            f"tasks {status}",
            count,
            "" if status == "done" else f"{zefort['planted_failures']:,} planted",
        )
        for status, count in sorted(zefort["statuses"].items(), key=lambda kv: -kv[1])
    ]
    rows.append(("Zefort", "tasks acknowledged", zefort["acknowledged"], ""))
    output.show(table("Outcome", ("vendor", "what", "count", "note"), rows, numeric=(2,)))
    output.show(
        table(
            "Traffic",
            ("vendor", "sent", "requests", "retries", "429s met", "seconds"),
            [
                (
                    "Chakra",
                    f"{chakra['updates']:,} updates in {chakra['jobs']:,} jobs",
                    chakra["requests"],
                    chakra["retries"],
                    chakra["rate_limited"],
                    f"{chakra['seconds']:.1f}",
                ),
                (
                    "Zefort",
                    f"{zefort['tasks']:,} bulk updates",
                    zefort["requests"],
                    zefort["retries"],
                    zefort["rate_limited"],
                    f"{zefort['seconds']:.1f}",
                ),
            ],
            numeric=(2, 3, 4, 5),
        )
    )
    failures = report["failures"]
    if failures:
        shown = failures[:_SHOWN_FAILURES]
        output.show(
            table(
                f"First failures ({len(shown)} shown)",
                ("vendor", "where", "status", "message"),
                [(f["vendor"], _where(f), f["status"], f["message"]) for f in shown],
            )
        )
    failed_checks = [name for name, passed in report["checks"].items() if not passed]
    if failed_checks:
        output.show(f"Not as designed: {'; '.join(failed_checks)}.")
    else:
        output.show(
            f"Worked as designed in {report['seconds']:.1f} s: every update and task is accounted "
            "for, the failures above were planted on purpose, and every retry was safe."
        )
