"""The command line, driven in subprocesses against a simulator started in the test.

Each subprocess costs about half a second to start, so the cases are few and each checks much:
exit status, JSON output, what the simulator recorded.
"""

import json
import os
import signal
import sys
from pathlib import Path

import anyio
import pytest

from asyncbulk import ValidationError
from asyncbulk.cli import main
from asyncbulk.cli._input import UpdateFile
from asyncbulk.testing import Simulator

pytestmark = pytest.mark.anyio

EXAMPLE_JOB = "19632427-908f-4bf3-a6f5-69b9a0bbfc63"  # finished, 770 entries, 3 in ERROR
PROCESS_ID = "1e50dd73-9ce6-405b-932a-9c4c5e7b5599"


class Result:
    """How a command ended: its exit status and what it wrote."""

    def __init__(self, returncode: int, stdout: bytes, stderr: bytes) -> None:  # noqa: D107 -- plain fields
        self.returncode = returncode
        self.stdout = stdout.decode()
        self.stderr = stderr.decode()

    def json(self):
        return json.loads(self.stdout)

    def __repr__(self) -> str:  # noqa: D105 -- shown when an assertion fails
        return f"<exit {self.returncode}\nstdout: {self.stdout}\nstderr: {self.stderr}>"


def environment(sim: Simulator, **overrides: str) -> dict[str, str]:
    env = {
        **os.environ,
        "CHAKRA_BASE_URL": sim.chakra_url,
        "CHAKRA_TOKEN": sim.chakra_token,
        "ZEFORT_BASE_URL": sim.zefort_url,
        "ZEFORT_API_KEY": sim.zefort_api_key,
        **overrides,
    }
    env.pop("COLUMNS", None)
    return env


async def run(sim: Simulator, *args: str, stdin: bytes | None = None, **env: str) -> Result:
    process = await anyio.run_process(
        [sys.executable, "-m", "asyncbulk", *args],
        input=stdin,
        check=False,
        env=environment(sim, **env),
    )
    return Result(process.returncode, process.stdout, process.stderr)


def write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture
async def sim():
    async with Simulator(seed=1, zefort_task_delay=0.05) as simulator:
        yield simulator


async def test_jsonl_update_waits_and_writes_failures_to_resubmit(sim, tmp_path):
    """JSON Lines in, --wait --json out: counts per status, exit 1, invalid items written back."""
    source = write_lines(
        tmp_path / "updates.jsonl",
        [
            {"lead_id": "EXT-TEST-143", "data": {"score": "105"}},
            {"lead_id": "LEAD-001", "update": {"data": {"city": "Goa"}, "status": "COMPLETED"}},
            {"lead_id": "NOPE-1", "data": {"city": "Nowhere"}},
            {"id": PROCESS_ID, "state": "IN_PROGRESS"},
            {"lead_id": "LEAD-910", "data": {"colour": "teal"}},
        ],
    )
    failed = tmp_path / "failed.jsonl"
    result = await run(
        sim,
        "chakra",
        "update",
        "tele_sales",
        str(source),
        "--batch-size",
        "2",
        "--failed-out",
        str(failed),
        "--json",
    )
    assert result.returncode == 1, result
    report = result.json()
    assert report["counts"] == {"SUCCESS": 3, "INVALID": 2}
    assert [job["positions"] for job in report["jobs"]] == [[0, 2], [2, 4], [4, 5]]
    assert report["failed_out"] == {"path": str(failed), "items": 2}
    assert [s.entries for s in sim.records.chakra_submissions] == [2, 2, 1]
    written = [json.loads(line) for line in failed.read_text().splitlines()]
    assert [(w["lead_id"], w["_status"]) for w in written] == [
        ("NOPE-1", "INVALID"),
        ("LEAD-910", "INVALID"),
    ]
    assert written[0]["update"] == {"data": {"city": "Nowhere"}}
    assert "NOPE-1" in written[0]["_error"]
    # The file reads back as updates: ready to resubmit once fixed.
    with UpdateFile(str(failed)) as again:
        assert again.check() == 2


async def test_csv_update_sends_the_documented_wrapped_form(sim, tmp_path):
    """A CSV with a primary-key column becomes wrapped updates; without --wait, exit 0."""
    source = tmp_path / "updates.csv"
    source.write_text(
        "\ufefflead_id,city,status,nextActionAt\n"
        "LEAD-001,Goa,COMPLETED,1616253910842\n"
        "LEAD-100,,OPEN,\n"
    )
    result = await run(
        sim, "chakra", "update", "tele_sales", str(source), "--key", "lead_id", "--json"
    )
    assert result.returncode == 0, result
    assert result.json()["submitted"] == 2
    (submission,) = sim.records.chakra_submissions
    assert json.loads(submission.raw) == {
        "processes": [
            {
                "lead_id": "LEAD-001",
                "update": {
                    "data": {"city": "Goa"},
                    "status": "COMPLETED",
                    "nextActionAt": 1616253910842,
                },
            },
            {"lead_id": "LEAD-100", "update": {"status": "OPEN"}},
        ]
    }


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "broken.jsonl",
            '{"lead_id": "LEAD-001", "data": {"city": "Goa"}}\n{"lead_id": "LEAD-1"\n',
            "broken.jsonl line 2: not valid JSON",
        ),
        ("noid.csv", "status,state\nOPEN,new\n", "noid.csv line 1: no identifier column"),
        ("status.csv", "id,status\nabc,OPEN\ndef,DONE\n", "status.csv line 3: status"),
    ],
    ids=["broken-json-line", "csv-without-identifier", "csv-bad-status"],
)
async def test_bad_input_exits_2_and_sends_nothing(sim, tmp_path, name, content, message):
    """A bad line anywhere stops the command before any request: one line naming it, exit 2."""
    source = tmp_path / name
    source.write_text(content)
    result = await run(sim, "chakra", "update", "tele_sales", str(source))
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"asyncbulk: error: {tmp_path}/{message}")
    assert result.stderr.count("\n") == 1
    assert sim.records.total_requests == 0


async def test_refused_credentials_and_usage_errors_exit_2(sim):
    """A wrong token and a bad option give one line each and exit 2, never a traceback."""
    refused = await run(sim, "chakra", "job", EXAMPLE_JOB, CHAKRA_TOKEN="wrong")
    assert refused.returncode == 2, refused
    assert "401" in refused.stderr
    assert "wrong" not in refused.stderr
    assert "Traceback" not in refused.stderr
    usage = await run(sim, "zefort", "bulk-update", "--attributes", "{oops", "--search", "{}")
    assert usage.returncode == 2, usage
    assert usage.stderr.count("\n") == 1
    assert "--attributes" in usage.stderr
    assert sim.records.count(vendor="zefort") == 0


async def test_job_and_entries(sim):
    """`chakra job` exits 1 for a job with ERROR entries; `chakra entries` streams them as CSV."""
    job = await run(sim, "chakra", "job", EXAMPLE_JOB, "--json")
    assert job.returncode == 1, job
    assert job.json()["status_counts"] == {"SUCCESS": 767, "ERROR": 3}
    entries = await run(
        sim, "chakra", "entries", EXAMPLE_JOB, "--status", "error", "--format", "csv"
    )
    assert entries.returncode == 0, entries
    header, *rows = entries.stdout.splitlines()
    assert header.startswith("id,completion_status,completion_message")
    assert len(rows) == 3
    assert all(",ERROR,simulated processing error," in row for row in rows)


async def test_zefort_bulk_update_wait_from_stdin_and_tasks(sim):
    """bulk-update --ack acknowledges once; `wait` reads ids on stdin and exits 1 on failure."""
    done = await run(
        sim,
        "zefort",
        "bulk-update",
        "--attributes",
        '{"end_date": "2023-02-15"}',
        "--search",
        '{"q_tags": "contracts of service"}',
        "--ack",
        "--json",
    )
    assert done.returncode == 0, done
    task = done.json()
    assert task["is_done"]
    assert sorted(task["affected_contracts"]) == ["ct_1JXncwxR5skmpC4dDB", "ct_1KmjVahd4Hg6W7l18c"]
    assert sim.records.acknowledgements == {task["id"]: 1}

    sim.zefort.fail_next_tasks(1, info="contract locked")
    started = [
        await run(sim, "zefort", "bulk-update", "--status", "review", "--search", "{}", "--json")
        for _ in range(2)
    ]
    ids = [r.json()["id"] for r in started]
    listed = await run(sim, "zefort", "tasks", "--json")
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == ids
    waited = await run(sim, "zefort", "wait", "--ack", "--json", stdin="\n".join(ids).encode())
    assert waited.returncode == 1, waited
    report = waited.json()
    assert report["counts"] == {"error": 1, "done": 1}
    assert report["unfinished"] == []
    assert {i: sim.records.acknowledgements[i] for i in ids} == dict.fromkeys(ids, 1)


async def _interrupt(sim: Simulator, args: list[str], ready) -> Result:
    async with await anyio.open_process(
        [sys.executable, "-m", "asyncbulk", *args], env=environment(sim)
    ) as process:
        with anyio.fail_after(20):
            while not ready():  # noqa: ASYNC110 -- polls the simulator's records, no event to wait on
                await anyio.sleep(0.05)
            process.send_signal(signal.SIGINT)
            stdout, stderr = b"", b""
            async with anyio.create_task_group() as group:

                async def drain(stream, sink: list[bytes]) -> None:
                    sink.extend([chunk async for chunk in stream])

                out: list[bytes] = []
                err: list[bytes] = []
                group.start_soon(drain, process.stdout, out)
                group.start_soon(drain, process.stderr, err)
            stdout, stderr = b"".join(out), b"".join(err)
            returncode = await process.wait()
    return Result(returncode, stdout, stderr)


async def test_ctrl_c_on_a_long_wait_prints_the_ids_and_exits_130(tmp_path):
    """SIGINT during `zefort wait` and `chakra update --wait` stops cleanly and names the ids."""
    async with Simulator(zefort_task_delay=3600, chakra_entries_per_second=0.001) as sim:
        task = sim.zefort.submit_bulk_update({"status": "done", "search": {}})
        zefort = await _interrupt(
            sim,
            ["zefort", "wait", task.id, "--json"],
            lambda: sim.records.count(vendor="zefort", method="GET") > 0,
        )
        assert zefort.returncode == 130, zefort
        assert f"still unfinished (1): {task.id}" in zefort.stderr
        assert zefort.json() == {
            "interrupted": True,
            "chakra_jobs": [],
            "zefort_tasks": [],
            "unfinished": [task.id],
        }
        assert "Traceback" not in zefort.stderr

        source = write_lines(tmp_path / "u.jsonl", [{"lead_id": "LEAD-001", "state": "x"}])
        chakra = await _interrupt(
            sim,
            ["chakra", "update", "tele_sales", str(source), "--wait"],
            lambda: sim.records.count(vendor="chakra", method="GET") > 0,
        )
        assert chakra.returncode == 130, chakra
        (submission,) = sim.records.chakra_submissions
        assert f"Chakra jobs submitted (1): {submission.job_id}" in chakra.stderr


async def test_demo_runs_small_and_checks_itself():
    """`asyncbulk demo` at a small scale exits 0 with every update and task accounted for."""
    process = await anyio.run_process(
        [
            sys.executable,
            "-m",
            "asyncbulk",
            "demo",
            "--updates",
            "2000",
            "--tasks",
            "100",
            "--json",
        ],
        check=False,
    )
    result = Result(process.returncode, process.stdout, process.stderr)
    assert result.returncode == 0, result
    report = result.json()
    assert report["ok"]
    assert all(report["checks"].values())
    chakra, zefort = report["chakra"], report["zefort"]
    assert sum(chakra["entries"].values()) == 2000
    assert chakra["entries"]["INVALID"] == chakra["planted_invalid"] == 2
    assert chakra["jobs"] == 4
    assert zefort["statuses"]["done"] + zefort["statuses"].get("error", 0) == 100
    assert zefort["acknowledged"] == 100
    assert chakra["retries"] + zefort["retries"] > 0
    assert report["failures"]


async def test_simulate_serves_until_ctrl_c():
    """`asyncbulk simulate --port 0 --json` prints its URLs and credentials and stops on SIGINT."""
    async with await anyio.open_process(
        [sys.executable, "-m", "asyncbulk", "simulate", "--port", "0", "--json"]
    ) as process:
        with anyio.fail_after(20):
            line = b""
            async for chunk in process.stdout:
                line += chunk
                if b"\n" in line:
                    break
            settings = json.loads(line)
            assert settings["chakra_token"] == "chakra-sim-token"
            assert settings["zefort_base_url"].startswith("http://127.0.0.1:")
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0


def test_main_without_the_cli_extra_prints_a_hint(monkeypatch, capsys):
    """Without click and rich installed, `main` prints how to get them and exits 2."""
    monkeypatch.setitem(sys.modules, "click", None)
    with pytest.raises(SystemExit) as exit_info:
        main(["demo"])
    assert exit_info.value.code == 2
    assert "pip install 'asyncbulk[cli]'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "content", "key", "expected"),
    [
        (
            "a.csv",
            "id,isDeleted,next_action_at,assignedTo\np1,yes,2024-01-01T00:00:00+00:00,ann\n",
            None,
            {"id": "p1", "is_deleted": True, "next_action_at": 1704067200000, "assigned_to": "ann"},
        ),
        (
            "b.csv",
            "status,phone,city\nOPEN,990,Goa\n",
            "phone",
            {"key": ("phone", "990"), "status": "OPEN", "data": {"city": "Goa"}},
        ),
        (
            "c.csv",
            "city,lead_id\nGoa,L1\n",
            "lead_id",
            {"key": ("lead_id", "L1"), "data": {"city": "Goa"}},
        ),
        (
            "d.jsonl",
            '\n{"lead_id": "L1", "assigned_to": "ann", "_error": "ignored"}\n',
            None,
            {"key": ("lead_id", "L1"), "assigned_to": "ann"},
        ),
    ],
    ids=["csv-fields-by-id", "csv-key-among-fields", "csv-key-option", "jsonl-notes-ignored"],
)
def test_update_file_reads_each_form(tmp_path, name, content, key, expected):
    """Each file form becomes the update it describes."""
    path = tmp_path / name
    path.write_text(content)
    with UpdateFile(str(path), key=key) as source:
        (update,) = list(source)
    for field, value in expected.items():
        assert getattr(update, field) == value


def test_csv_identifier_column_is_never_guessed(tmp_path):
    """A CSV with neither an id column nor --key is refused, naming the header, not guessed."""
    path = tmp_path / "guess.csv"
    path.write_text("city,score\nGoa,5\n")
    with UpdateFile(str(path)) as source, pytest.raises(ValidationError, match=r"line 1.*--key"):
        source.check()
