"""The command line's rough edges, each driven in a subprocess against a simulator."""

import json
import os
import signal
import socket
import sys

import aiohttp
import anyio
import click
import pytest
from test_cli import EXAMPLE_JOB, Result, environment, run, write_lines
from yarl import URL

from asyncbulk import ValidationError
from asyncbulk.cli._app import cli
from asyncbulk.cli._input import UpdateFile
from asyncbulk.testing import Simulator

pytestmark = pytest.mark.anyio


@pytest.fixture
async def sim():
    async with Simulator(seed=1, zefort_task_delay=0.05) as simulator:
        yield simulator


async def test_contract_status_is_checked_locally(sim):
    """--status finished is refused before any request: one line naming the values, exit 2."""
    result = await run(sim, "zefort", "bulk-update", "--status", "finished", "--search", "{}")
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1
    assert "'finished' is not one of 'archived', 'done'" in result.stderr
    assert sim.records.total_requests == 0


async def test_help_shows_no_literal_backslash_b(sim):
    """`--help` shows no paragraph marker; the exit statuses and CSV example keep their lines."""
    top, update = [await run(sim, *words, "--help") for words in ([], ["chakra", "update"])]
    for result in (top, update):
        assert result.returncode == 0, result
        assert "\\b" not in result.stdout
        assert "\b" not in result.stdout
    assert "    130  interrupted" in top.stdout
    assert "    lead_id,score:int,tags:json,vip:bool\n" in update.stdout


def test_no_command_help_shows_the_marker():
    """Every command's help, rendered as click renders it, is free of the paragraph marker."""

    def walk(command: click.Command, parent: click.Context | None) -> list[str]:
        context = click.Context(command, info_name=command.name, parent=parent)
        texts = [command.get_help(context)]
        if isinstance(command, click.Group):
            for sub in command.commands.values():
                texts += walk(sub, context)
        return texts

    texts = walk(cli, None)
    assert len(texts) == 13  # with `worker` and `resume`
    assert not [text for text in texts if "\\b" in text or "\b" in text]


async def test_demo_wraps_between_words_on_a_narrow_terminal():
    """At 40 columns, every demo line fits and no phrase or id is cut in two."""
    process = await anyio.run_process(
        [sys.executable, "-m", "asyncbulk", "demo", "--updates", "2000", "--tasks", "50"],
        env={**os.environ, "COLUMNS": "40"},
        check=False,
    )
    result = Result(process.returncode, process.stdout, process.stderr)
    assert result.returncode == 0, result
    lines = (result.stdout + result.stderr).splitlines()
    assert all(len(line) <= 40 for line in lines), [line for line in lines if len(line) > 40]
    joined = " ".join(" ".join(lines).split())
    for phrase in (
        "every update and task is accounted for",
        "planted on purpose",
        "unknown lead ids and attributes",
        "'LEAD-MISSING-1'",
        "against the built-in simulator",
    ):
        assert phrase in joined, phrase


async def test_ctrl_c_in_a_large_demo_prints_one_short_line():
    """SIGINT during `demo --tasks 10000` exits 130 with counts, not thousands of ids."""
    async with await anyio.open_process(
        [sys.executable, "-m", "asyncbulk", "demo", "--tasks", "10000"]
    ) as process:
        with anyio.fail_after(60):
            first = b""
            async for chunk in process.stderr:
                first += chunk
                if b"injected.\n" in first:
                    break
            process.send_signal(signal.SIGINT)
            stderr = first + b"".join([chunk async for chunk in process.stderr])
            assert await process.wait() == 130
    lines = stderr.decode().partition("injected.\n")[2].splitlines()
    assert lines[0] == "asyncbulk: interrupted by SIGINT"
    assert len(lines) <= 2, lines
    assert sum(map(len, lines)) < 300, lines
    assert "task_" not in stderr.decode()


async def test_zefort_wait_on_a_missing_task_says_so(sim):
    """`zefort wait` on an id the server does not know names it as missing and exits 2."""
    task = sim.zefort.submit_bulk_update({"status": "done", "search": {}})
    result = await run(sim, "zefort", "wait", task.id, "tsk_nope", "--json")
    assert result.returncode == 2, result
    assert "no such task: tsk_nope (check the ids and ZEFORT_BASE_URL)" in result.stderr
    assert "unfinished" not in result.stderr
    report = result.json()
    assert report["missing"] == ["tsk_nope"]
    assert report["unfinished"] == []
    assert [t["id"] for t in report["tasks"]] == [task.id]


async def test_plain_http_names_the_flag_that_allows_it():
    """Plain http to a host by a name is refused naming --allow-insecure-http; with it, it works."""
    name = socket.gethostname()
    async with Simulator(host=socket.gethostbyname(name)) as sim:
        url = f"http://{name}:{URL(sim.chakra_url).port}"
        refused = await run(sim, "chakra", "job", EXAMPLE_JOB, "--base-url", url)
        assert refused.returncode == 2, refused
        assert "--allow-insecure-http on the command line" in refused.stderr
        assert sim.records.total_requests == 0
        allowed = await run(
            sim, "chakra", "job", EXAMPLE_JOB, "--base-url", url, "--allow-insecure-http", "--json"
        )
        assert allowed.returncode == 1, allowed  # the example job has ERROR entries
        assert allowed.json()["id"] == EXAMPLE_JOB
        assert sim.records.total_requests == 1


async def test_unclosed_csv_quote_is_reported_where_it_opens(sim, tmp_path):
    """A quote left open on line 4,501 of 5,001 is reported at line 4501, nothing sent."""
    rows = [f"LEAD-{n},Goa" for n in range(5000)]
    rows[4499] = 'LEAD-4499,"Goa'
    source = tmp_path / "open.csv"
    source.write_text("lead_id,city\n" + "\n".join(rows) + "\n")
    result = await run(sim, "chakra", "update", "tele_sales", str(source), "--key", "lead_id")
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"asyncbulk: error: {source} line 4501: ")
    assert "a quote opened on this line is never closed" in result.stderr
    assert sim.records.total_requests == 0


async def test_csv_cells_stay_strings_unless_typed_or_inferred(sim, tmp_path):
    """Typed columns send their type; --infer-types reads numbers and booleans; 007 stays text."""
    source = tmp_path / "typed.csv"
    source.write_text(
        'lead_id,score:int,tags:json,vip:bool,city,zip\nLEAD-001,42,"[""north""]",yes,Goa,007\n'
    )
    plain = tmp_path / "plain.csv"
    plain.write_text("lead_id,score,ratio,vip,zip\nLEAD-001,42,0.5,true,007\n")
    for path, extra in ((source, ()), (plain, ()), (plain, ("--infer-types",))):
        result = await run(
            sim, "chakra", "update", "tele_sales", str(path), "--key", "lead_id", *extra
        )
        assert result.returncode == 0, result
    sent = [
        json.loads(s.raw)["processes"][0]["update"]["data"] for s in sim.records.chakra_submissions
    ]
    assert sent == [
        {"score": 42, "tags": ["north"], "vip": True, "city": "Goa", "zip": "007"},
        {"score": "42", "ratio": "0.5", "vip": "true", "zip": "007"},
        {"score": 42, "ratio": 0.5, "vip": True, "zip": "007"},
    ]


@pytest.mark.parametrize(
    ("header", "row", "message"),
    [
        ("lead_id,score:int", "LEAD-001,4.5", "line 2, column 'score': expected an integer"),
        ("lead_id,score:number", "LEAD-001,4", "line 1, column 'score:number': unknown type"),
        ("lead_id,status:int", "LEAD-001,4", "'status' sets a field of its own type"),
    ],
    ids=["bad-int-cell", "unknown-type", "typed-field-column"],
)
async def test_csv_type_mistakes_exit_2(sim, tmp_path, header, row, message):
    """A cell that does not read as its column's type, or an unknown type, stops at once."""
    source = tmp_path / "bad.csv"
    source.write_text(f"{header}\n{row}\n")
    result = await run(sim, "chakra", "update", "tele_sales", str(source), "--key", "lead_id")
    assert result.returncode == 2, result
    assert message in result.stderr
    assert sim.records.total_requests == 0


async def _serve(*args: str) -> tuple[anyio.abc.Process, dict[str, str]]:
    process = await anyio.open_process([sys.executable, *args, "--port", "0", "--json"])
    line = b""
    async for chunk in process.stdout:
        line += chunk
        if b"\n" in line:
            break
    return process, json.loads(line)


@pytest.mark.parametrize(
    ("command", "options", "status", "retry_after"),
    [
        (["-m", "asyncbulk", "simulate"], ["--rate-429", "1", "--retry-after", "7"], 429, "7"),
        (["-m", "asyncbulk.testing"], ["--rate-503", "1"], 503, None),
    ],
    ids=["simulate-429", "python-m-testing-503"],
)
async def test_simulator_command_injects_faults(command, options, status, retry_after):
    """Both ways to start the simulator take the fault flags, and the server answers with them."""
    with anyio.fail_after(30):
        process, settings = await _serve(*command, *options)
        async with process:
            try:
                async with aiohttp.ClientSession() as http:
                    url = f"{settings['chakra_base_url']}/v1/ext/background-job/{EXAMPLE_JOB}"
                    headers = {"Authorization": f"Bearer {settings['chakra_token']}"}
                    async with http.get(url, headers=headers) as response:
                        assert response.status == status
                        assert response.headers.get("Retry-After") == retry_after
            finally:
                process.send_signal(signal.SIGINT)
                assert await process.wait() == 0


async def test_simulator_commands_are_one(sim):
    """`python -m asyncbulk.testing --help` is `asyncbulk simulate --help`."""
    module = await anyio.run_process(
        [sys.executable, "-m", "asyncbulk.testing", "--help"], env=environment(sim)
    )
    command = await run(sim, "simulate", "--help")
    assert module.stdout.decode() == command.stdout
    assert "--drop-after FRACTION" in command.stdout


async def test_chakra_job_takes_several_ids_and_writes_failures(sim, tmp_path):
    """`chakra job A B --failed-out` shows each job and writes every failed entry to resubmit."""
    source = write_lines(
        tmp_path / "u.jsonl",
        [
            {"lead_id": "LEAD-001", "data": {"city": "Goa"}},
            {"lead_id": "NOPE-1", "data": {"city": "Nowhere"}},
        ],
    )
    submitted = await run(sim, "chakra", "update", "tele_sales", str(source), "--json")
    (job,) = submitted.json()["jobs"]
    failed = tmp_path / "failed.jsonl"
    result = await run(
        sim, "chakra", "job", EXAMPLE_JOB, job["id"], "--failed-out", str(failed), "--json"
    )
    assert result.returncode == 1, result
    shown = [json.loads(line) for line in result.stdout.splitlines()]
    assert [j["id"] for j in shown] == [EXAMPLE_JOB, job["id"]]
    assert all(j["is_finished"] for j in shown)
    written = [json.loads(line) for line in failed.read_text().splitlines()]
    assert [w["_status"] for w in written] == ["ERROR"] * 3 + ["INVALID"]
    assert all("id" in w for w in written[:3])
    assert "NOPE-1" in written[3]["_error"]
    assert written[3]["update"] == {"data": {"city": "Nowhere"}}
    assert f"Wrote 4 updates to resubmit to {failed}." in result.stderr
    # Read back, the entry that names no process stops the file at its line: never guessed.
    with pytest.raises(ValidationError, match=r"failed\.jsonl line 4: "):
        UpdateFile(str(failed)).check()
