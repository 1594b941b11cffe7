"""``asyncbulk chakra update``: what failed, by input position, through the real command line."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

import anyio
import pytest
from aiohttp import web
from loopback import serve

from asyncbulk.testing import Fault, Simulator

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

UPDATE_ROUTE = "/v1/ext/procedure/{procedure}/process"
ROWS = 40


async def run(sim: Simulator, *args: str, **env: str) -> tuple[int, str, str]:
    """Run the command line in a subprocess against the simulator; exit status and output."""
    environ = {
        **os.environ,
        "CHAKRA_BASE_URL": sim.chakra_url,
        "CHAKRA_TOKEN": sim.chakra_token,
        **env,
    }
    environ.pop("COLUMNS", None)
    process = await anyio.run_process(
        [sys.executable, "-m", "asyncbulk", *args], check=False, env=environ
    )
    return process.returncode, process.stdout.decode(), process.stderr.decode()


def identical_changes(path: Path, count: int = ROWS) -> list[str]:
    """A file where every row makes the same change; every fourth lead does not exist."""
    leads = [f"L{i}" if i % 4 else f"MISSING-{i}" for i in range(count)]
    path.write_text(
        "".join(json.dumps({"lead_id": k, "status": "COMPLETED"}) + "\n" for k in leads)
    )
    return leads


@pytest.fixture
async def sim():
    async with Simulator(seed=3, chakra_error_rate=0.25, chakra_entries_per_second=1e6) as sim:
        sim.chakra.add_procedure("leads", primary_key="lead_id", attributes=["n"])
        for i in range(ROWS):
            sim.chakra.add_process("leads", {"lead_id": f"L{i}"})
        yield sim


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_failed_out_lists_exactly_the_failed_rows_of_identical_changes(sim, tmp_path):
    """Rows with one same change in one batch: --failed-out names exactly the rows that failed."""
    source = tmp_path / "updates.jsonl"
    leads = identical_changes(source)
    failed, unknown = tmp_path / "failed.jsonl", tmp_path / "unknown.jsonl"
    status, _, stderr = await run(
        sim,
        "chakra",
        "update",
        "leads",
        str(source),
        "--failed-out",
        str(failed),
        "--unknown-out",
        str(unknown),
        "--json",
    )
    assert status == 1, stderr
    (record,) = sim.records.chakra_submissions
    job = sim.chakra.jobs[record.job_id]
    now = sim.clock.now()
    on_server = [job.entry(i, now)["completionStatus"] for i in range(job.total)]
    expected = [
        (leads[i], state, i) for i, state in enumerate(on_server) if state in {"ERROR", "INVALID"}
    ]
    assert {s for _, s, _ in expected} == {"ERROR", "INVALID"}
    written = read_lines(failed)
    assert [(w["lead_id"], w["_status"], w["_position"]) for w in written] == expected
    assert all(w["_error"] for w in written)
    assert read_lines(unknown) == []


async def test_unknown_rows_go_to_unknown_out_never_to_failed_out(sim, tmp_path):
    """A batch applied and then dropped is unknown: in --unknown-out, not in --failed-out."""
    source = tmp_path / "updates.jsonl"
    leads = identical_changes(source)
    sim.faults.add(Fault("drop_after", route=UPDATE_ROUTE, method="PATCH", times=1))
    failed, unknown = tmp_path / "failed.jsonl", tmp_path / "unknown.jsonl"
    status, _, stderr = await run(
        sim,
        "chakra",
        "update",
        "leads",
        str(source),
        "--batch-size",
        "10",
        "--failed-out",
        str(failed),
        "--unknown-out",
        str(unknown),
        "--json",
    )
    assert status == 1, stderr
    known = {r.job_id for r in sim.records.chakra_submissions}
    assert len(known) == ROWS // 10
    unknown_rows = read_lines(unknown)
    assert len(unknown_rows) == 10
    assert {w["_status"] for w in unknown_rows} == {"unknown"}
    first = unknown_rows[0]["_position"]
    assert isinstance(first, int)
    assert [w["lead_id"] for w in unknown_rows] == leads[first : first + 10]
    failed_positions = {w["_position"] for w in read_lines(failed)}
    assert failed_positions.isdisjoint(w["_position"] for w in unknown_rows)


async def test_a_missing_or_unreadable_file_exits_2_with_one_line(sim, tmp_path):
    """No input file, or one that cannot be read: exit 2, one line, nothing sent."""
    missing = tmp_path / "nope.jsonl"
    status, _, stderr = await run(sim, "chakra", "update", "leads", str(missing))
    assert status == 2, stderr
    assert stderr.count("\n") == 1
    assert str(missing) in stderr
    assert "Traceback" not in stderr
    if os.geteuid() != 0:
        locked = tmp_path / "locked.jsonl"
        identical_changes(locked)
        locked.chmod(0)
        status, _, stderr = await run(sim, "chakra", "update", "leads", str(locked))
        assert status == 2, stderr
        assert stderr.count("\n") == 1
    assert sim.records.total_requests == 0


async def test_a_wrong_token_ends_alike_whatever_the_file_size(sim, tmp_path):
    """A wrong token: the same message and exit status for one batch or forty."""
    endings = []
    for count in (10, 400):
        source = tmp_path / f"updates-{count}.jsonl"
        identical_changes(source, count)
        endings.append(
            await run(
                sim,
                "chakra",
                "update",
                "leads",
                str(source),
                "--batch-size",
                "10",
                CHAKRA_TOKEN="wrong-token",
            )
        )
    (small_status, _, small_err), (large_status, _, large_err) = endings
    assert small_status == large_status == 2, endings
    assert small_err == large_err
    assert "401" in small_err
    assert "wrong-token" not in small_err


async def test_errors_in_an_accepting_answer_are_kept_and_shown(tmp_path):
    """``_errors`` in a 2xx answer are kept on the batch and shown in the report."""
    job = {"id": "job-1", "completionStatus": "IN_PROGRESS", "completedAt": 0}

    async def patch(_request: web.Request) -> web.Response:
        return web.json_response({"_data": job, "_meta": {}, "_errors": ["field n ignored"]})

    app = web.Application()
    app.router.add_patch("/v1/ext/procedure/leads/process", patch)
    source = tmp_path / "updates.jsonl"
    identical_changes(source, 3)
    async with serve(app) as url:
        process = await anyio.run_process(
            [sys.executable, "-m", "asyncbulk", "chakra", "update", "leads", str(source), "--json"],
            check=False,
            env={**os.environ, "CHAKRA_BASE_URL": url, "CHAKRA_TOKEN": "token-123"},
        )
    assert process.returncode == 0, process.stderr
    (batch,) = json.loads(process.stdout)["batches"]
    assert batch == {
        "positions": [0, 3],
        "state": "accepted",
        "job_id": "job-1",
        "error": None,
        "warnings": ["field n ignored"],
    }
