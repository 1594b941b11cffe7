"""The command line's waits: progress from ``on_progress`` and acknowledgements that failed."""

from __future__ import annotations

import pytest
from test_cli import run

from asyncbulk import TrackerStats
from asyncbulk.cli._chakra import _show_progress
from asyncbulk.cli._progress import Meter
from asyncbulk.testing import Fault, Simulator

pytestmark = pytest.mark.anyio


def test_chakra_bars_follow_the_entry_counts() -> None:
    """Jobs and entries bars move from a TrackerStats: entries done are every status but pending."""
    jobs, entries = Meter("jobs finished", total=2), Meter("entries done", total=0)
    moved = _show_progress(jobs, entries)
    moved(TrackerStats(finished=1, entries={"SUCCESS": 600, "IN_PROGRESS": 300, "ERROR": 4}))
    assert (jobs.completed, entries.completed, entries.total) == (1, 604, 904)
    moved(TrackerStats(finished=2, entries={"SUCCESS": 900, "ERROR": 4, "NOT_STARTED": 0}))
    assert (jobs.completed, entries.completed, entries.total) == (2, 904, 904)


async def test_zefort_wait_ack_names_the_tasks_left_unacknowledged() -> None:
    """An acknowledgement the server refuses: the report names the task, and the exit is 1."""
    async with Simulator(seed=1, zefort_task_delay=0.05) as sim:
        task = sim.zefort.submit_bulk_update({"attributes": {"n": 1}, "search": {}})
        refused = sim.faults.add(
            Fault("status", status=400, vendor="zefort", method="PATCH", route="/api/tasks/{id}/")
        )
        waited = await run(sim, "zefort", "wait", task.id, "--ack", "--json")
        assert sim.faults.fired(refused) == 1
    assert waited.returncode == 1, waited
    report = waited.json()
    assert report["unacknowledged"] == [task.id]
    assert report["ok"] is False
    assert f"1 finished but not acknowledged (still pending on the server): {task.id}" in (
        waited.stderr
    )


async def test_zefort_wait_ack_reports_none_unacknowledged_when_all_went_through() -> None:
    """Every acknowledgement accepted: ``unacknowledged`` is empty and the exit is 0."""
    async with Simulator(seed=1, zefort_task_delay=0.05) as sim:
        task = sim.zefort.submit_bulk_update({"attributes": {"n": 1}, "search": {}})
        waited = await run(sim, "zefort", "wait", task.id, "--ack", "--json")
        assert sim.records.acknowledgements == {task.id: 1}
    assert waited.returncode == 0, waited
    assert waited.json()["unacknowledged"] == []
