"""`--journal` and `asyncbulk resume`, driven in subprocesses against a simulator in the test."""

from __future__ import annotations

import json

import pytest
from test_cli import _interrupt, run, write_lines

from asyncbulk.testing import ManualClock, Simulator

pytestmark = pytest.mark.anyio

BULK_UPDATE = ("zefort", "bulk-update", "--status", "done", "--search", "{}", "--ack")


async def test_an_interrupted_update_prints_one_command_that_finishes_it(tmp_path):
    """Ctrl-C while waiting prints `asyncbulk resume`; it waits, reports, writes, sends nothing."""
    clock = ManualClock()
    async with Simulator(clock=clock, chakra_entries_per_second=100) as sim:
        journal = tmp_path / "run.db"
        failed = tmp_path / "failed.jsonl"
        source = write_lines(
            tmp_path / "u.jsonl",
            [{"lead_id": "LEAD-001", "state": "x"}, {"lead_id": "NO-SUCH-LEAD", "state": "x"}],
        )
        args = ["chakra", "update", "tele_sales", str(source), "--wait", "--failed-out"]
        stopped = await _interrupt(
            sim,
            [*args, str(failed), "--journal", str(journal)],
            lambda: sim.records.count(vendor="chakra", method="GET") > 0,
        )
        assert stopped.returncode == 130, stopped
        (submission,) = sim.records.chakra_submissions
        assert f"asyncbulk resume --journal {journal}" in stopped.stderr
        assert submission.job_id not in stopped.stderr
        clock.advance(3600)
        resumed = await run(sim, "resume", "--journal", str(journal), "--json")
        assert resumed.returncode == 1, resumed  # one update is INVALID
        report = resumed.json()
        assert report["counts"]["INVALID"] == 1
        assert [job["id"] for job in report["jobs"]] == [submission.job_id]
        assert len(sim.records.chakra_submissions) == 1
        written = [json.loads(line) for line in failed.read_text().splitlines()]
        assert [line["_status"] for line in written] == ["INVALID"]
        again = await run(sim, "resume", "--journal", str(journal))
        assert again.returncode == 0, again
        assert "Nothing to resume" in again.stdout


async def test_an_interrupted_zefort_bulk_update_is_acknowledged_on_resume(tmp_path):
    """`zefort bulk-update --ack --journal` stopped while waiting: resume waits and acknowledges."""
    clock = ManualClock()
    async with Simulator(clock=clock, zefort_task_delay=10) as sim:
        journal = tmp_path / "run.db"
        stopped = await _interrupt(
            sim,
            [*BULK_UPDATE, "--journal", str(journal)],
            lambda: sim.records.count(vendor="zefort", method="GET") > 1,
        )
        assert stopped.returncode == 130, stopped
        assert "asyncbulk resume --journal" in stopped.stderr
        (post,) = sim.records.zefort_submissions
        clock.advance(60)
        resumed = await run(sim, "resume", "--journal", str(journal), "--json")
        assert resumed.returncode == 0, resumed
        assert resumed.json()["id"] == post.task_id
        assert sim.records.acknowledgements[post.task_id] == 1
        assert len(sim.records.zefort_submissions) == 1
