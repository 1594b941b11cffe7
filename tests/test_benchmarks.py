"""The benchmarks: they run and print figures; their harness, rate limiter and read-only server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from loopback import serve

from asyncbulk.chakra import ChakraClient
from asyncbulk.testing import Simulator
from benchmarks._harness import Row, median_range, throughput
from benchmarks._limits import Limiter, limited_zefort_app
from benchmarks._readonly import JOB_ID, ReadOnly

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("tracking", "streaming", "submission", "overhead", "faults", "ratelimit")


def _benchmarks(*args: str, results: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own module, no shell
        [sys.executable, "-m", "benchmarks", *args, "--results", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )


def test_smoke_run_produces_a_table_with_figures(tmp_path):
    """`python -m benchmarks --smoke` runs every scenario and writes a table of figures."""
    results = tmp_path / "RESULTS.md"
    done = _benchmarks("--smoke", results=results)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert {row.split("|")[1].strip() for row in rows[1:]} == set(SCENARIOS)
    assert all(re.search(r"\| \d[\d,]*\.\d\d +\|", row) for row in rows[1:]), "a row has no wall"
    floors = {row.split("|")[1].strip() for row in rows[1:] if "| floor: " in row}
    assert floors == set(SCENARIOS), "a scenario has no floor in the table"
    text = results.read_text(encoding="utf-8")
    assert "## Goals" in text
    assert "## Figures" in text
    assert "## The floors" in text
    assert re.search(r"^- (MET|NOT MET): ", text, re.MULTILINE)


def test_runs_are_interleaved_and_show_their_range(tmp_path):
    """With `--runs 2` the contenders take turns (A1 B1 A2 B2) and each cell shows a range."""
    done = _benchmarks("--smoke", "--runs", "2", "overhead", results=tmp_path / "R.md")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    order = re.findall(r"\] overhead / [^/]+ / (.+): ", done.stderr)
    contenders = list(dict.fromkeys(order))
    assert len(contenders) == 6
    assert order == contenders * 2
    rows = [line for line in done.stdout.splitlines() if line.startswith("| overhead")]
    assert all("| 2/2 " in row for row in rows)
    assert any(re.search(r"\d \(\d[\d,.]*-\d[\d,.]*\)", row) for row in rows), "no range shown"


def test_a_row_reports_medians_and_ranges_of_its_good_runs():
    """A row's figures are the medians of the runs that did not fail, with their range."""
    results = [
        {"wall": 2.0, "items": 100, "requests": 10, "cpu": 1.0},
        {"wall": 1.0, "items": 100, "requests": 10, "cpu": 3.0},
        {"error": "boom"},
        {"wall": 4.0, "items": 100, "requests": 10, "cpu": 2.0},
    ]
    row = Row("s", "case", "contender", results)
    assert row.get("wall") == 2.0
    assert row.throughput == 50.0
    assert row.cpu_per_request_us == 200_000.0
    assert row.error == "boom"
    assert median_range(row, lambda r: r.get("wall")) == "2.00 (1.00-4.00)"
    assert median_range(row, throughput, 0) == "50 (25-100)"


def test_a_row_of_one_value_shows_no_range():
    """Runs that agree show a single value, not a range."""
    row = Row("s", "case", "contender", [{"wall": 1.5}, {"wall": 1.5}])
    assert median_range(row, lambda r: r.get("wall")) == "1.50"


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.anyio
async def test_limiter_refuses_an_empty_bucket_per_credential_through_http():
    """The bucket admits its burst, then answers 429 with Retry-After until it refills."""
    clock = _Clock()
    limiter = Limiter(clock=clock)
    limiter.configure({"rate": 1, "burst": 2, "retry_after": 1})
    async with (
        Simulator(examples=False, keep_requests=False) as sim,
        serve(limited_zefort_app(sim, limiter)) as url,
        aiohttp.ClientSession() as http,
    ):

        async def status(key: str) -> tuple[int, str | None]:
            auth = aiohttp.encode_basic_auth(key, "")
            async with http.get(f"{url}/api/tasks/", headers={"Authorization": auth}) as r:
                return r.status, r.headers.get("Retry-After")

        key = sim.zefort_api_key
        assert [await status(key) for _ in range(3)] == [(200, None), (200, None), (429, "1")]
        assert (await status("another-credential"))[0] == 401
        clock.now = 1.0
        assert [await status(key) for _ in range(2)] == [(200, None), (429, "1")]
        assert sim.records.by_status[429] == 2
    assert limiter.refused == 2
    assert len(limiter.admitted_at) == 4


@pytest.mark.anyio
async def test_limiter_refuses_once_with_a_huge_retry_after_then_admits():
    """`once` refuses the first request with its Retry-After and admits the ones after it."""
    limiter = Limiter()
    limiter.configure({"once": 86400})
    async with (
        Simulator(examples=False, keep_requests=False) as sim,
        serve(limited_zefort_app(sim, limiter)) as url,
        aiohttp.ClientSession() as http,
    ):
        auth = {"Authorization": aiohttp.encode_basic_auth(sim.zefort_api_key, "")}
        answers = []
        for _ in range(2):
            async with http.get(f"{url}/api/tasks/", headers=auth) as response:
                answers.append((response.status, response.headers.get("Retry-After")))
    assert answers == [(429, "86400"), (200, None)]


@pytest.mark.anyio
async def test_limiter_sporadic_refusals_hit_any_request():
    """With `sporadic` 1.0 every request is refused, whatever the bucket holds."""
    limiter = Limiter()
    limiter.configure({"sporadic": 1.0, "retry_after": 1})
    async with (
        Simulator(examples=False, keep_requests=False) as sim,
        serve(limited_zefort_app(sim, limiter)) as url,
        aiohttp.ClientSession() as http,
    ):
        auth = {"Authorization": aiohttp.encode_basic_auth(sim.zefort_api_key, "")}
        for _ in range(3):
            async with http.get(f"{url}/api/tasks/", headers=auth) as response:
                assert response.status == 429
    assert limiter.refused == 3


@pytest.mark.anyio
async def test_read_only_server_streams_every_entry_once_to_the_client():
    """The client reads every entry of the read-only server's job, each id once, then stops."""
    readonly = ReadOnly(entries=1_050)
    async with serve(readonly.app()) as url, ChakraClient("token", base_url=url) as chakra:
        ids = [entry.id async for entry in chakra.iter_job_entries(JOB_ID)]
    assert len(ids) == 1_050
    assert len(set(ids)) == 1_050
    assert readonly.report() == {"GET /v1/ext/background-job/{job_id}/entries": 11}


@pytest.mark.anyio
async def test_read_only_server_reads_every_batch_and_answers_a_job():
    """Each bulk PATCH is read to the end and answered with a job of its own."""
    readonly = ReadOnly()
    async with serve(readonly.app()) as url, ChakraClient("token", base_url=url) as chakra:
        updates = [{"lead_id": f"L{i}", "update": {"data": {"score": "1"}}} for i in range(25)]
        submission = await chakra.bulk_update_processes("bench", updates, batch_size=10)
    assert submission.count == 25
    assert len({job.id for job in submission.jobs}) == 3
    assert readonly.report() == {"PATCH /v1/ext/procedure/{procedure}/process": 3}


def test_the_middle_run_keeps_a_ratio_with_its_own_figures():
    """`Row.middle` is the run at a figure's median, so a ratio is shown with its own parts."""
    results = [
        {"paired": {"ratio": 1.3, "raw_us": 100.0}},
        {"error": "boom"},
        {"paired": {"ratio": 1.1, "raw_us": 300.0}},
        {"paired": {"ratio": 1.2, "raw_us": 200.0}},
        {"note": "no ratio"},
    ]
    row = Row("s", "case", "contender", results)
    middle = row.middle(lambda r: r["paired"]["ratio"] if "paired" in r else None)
    assert middle is results[3]
    assert row.middle(lambda _r: None) is None
