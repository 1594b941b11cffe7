"""Fault injection, records, clocks and the standalone server of the simulator."""

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

import asyncbulk.testing
from asyncbulk.testing import Fault, ManualClock, MonotonicClock, Simulator

pytestmark = pytest.mark.anyio

DOC_PAYLOAD = {
    "attributes": {"end_date": "2023-02-15"},
    "status": "done",
    "search": {"q_tags": "contracts of service"},
}
JOB_PATH = "/v1/ext/background-job/19632427-908f-4bf3-a6f5-69b9a0bbfc63"
TASKS = "/api/tasks/"
BULK = "/api/contracts/bulk_update/"


@pytest.fixture
async def sim():
    async with Simulator(clock=ManualClock(), zefort_task_delay=1.0) as simulator:
        yield simulator


@pytest.fixture
async def zefort(sim):
    key = base64.b64encode(f"{sim.zefort_api_key}:".encode()).decode()
    async with aiohttp.ClientSession(
        sim.zefort_url, headers={"Authorization": f"Basic {key}"}
    ) as session:
        yield session


@pytest.fixture
async def chakra(sim):
    async with aiohttp.ClientSession(
        sim.chakra_url, headers={"Authorization": f"Bearer {sim.chakra_token}"}
    ) as session:
        yield session


async def fetch(http, method, path, body=None):
    """Send a request; return (status, headers, raw body)."""
    async with http.request(method, path, json=body) as response:
        return response.status, response.headers, await response.read()


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        pytest.param(Fault("status", retry_after=2), (429, "2"), id="429-retry-after"),
        pytest.param(Fault("status", retry_after=0.5, status=503), (503, "0.5"), id="503-retry"),
        pytest.param(Fault("status"), (503, None), id="default-503"),
        pytest.param(Fault("status", status=500), (500, None), id="500"),
        pytest.param(Fault("status", status=502), (502, None), id="502"),
    ],
)
async def test_status_faults_in_each_vendor_format(sim, zefort, chakra, fault, expected):
    """A status fault answers in the vendor's error format, with Retry-After when asked."""
    status, retry_after = expected
    sim.faults.add(fault)
    code, headers, raw = await fetch(zefort, "GET", TASKS)
    assert (code, headers.get("Retry-After")) == (status, retry_after)
    assert "detail" in json.loads(raw)
    code, headers, raw = await fetch(chakra, "GET", JOB_PATH)
    assert (code, headers.get("Retry-After")) == (status, retry_after)
    assert json.loads(raw)["_errors"]
    assert sim.records.count(status=status) == 2
    assert sim.faults.fired(fault) == 2


async def test_status_fault_does_not_process_the_request(sim, zefort):
    """A POST refused by a status fault creates no task."""
    sim.faults.add(Fault("status", retry_after=1, route=BULK))
    code, _, _ = await fetch(zefort, "POST", BULK, DOC_PAYLOAD)
    assert code == 429
    assert sim.records.zefort_submissions == []
    assert sim.zefort.tasks == {}


async def test_drop_before_loses_the_request(sim, zefort):
    """drop_before closes the connection: the client fails and nothing was created."""
    sim.faults.add(Fault("drop_before", method="POST"))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await fetch(zefort, "POST", BULK, DOC_PAYLOAD)
    assert sim.records.zefort_submissions == []
    assert sim.records.count(route=BULK, status=0) == 1
    assert sim.records.requests[-1].fault == "drop_before"


async def test_drop_after_loses_only_the_answer(sim, zefort, chakra):
    """drop_after processes the request, then drops it: the task and the job exist anyway."""
    sim.faults.add(Fault("drop_after", method="POST", vendor="zefort"))
    sim.faults.add(Fault("drop_after", method="PATCH", vendor="chakra"))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await fetch(zefort, "POST", BULK, DOC_PAYLOAD)
    (submission,) = sim.records.zefort_submissions
    assert submission.task_id in sim.zefort.tasks
    body = {"processes": [{"lead_id": "LEAD-001", "data": {"score": 1}}]}
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await fetch(chakra, "PATCH", "/v1/ext/procedure/tele_sales/process", body)
    (job_submission,) = sim.records.chakra_submissions
    assert job_submission.job_id in sim.chakra.jobs
    assert sim.records.faults["drop_after"] == 2


async def test_proxy_answers_502_the_app_never_sees(sim, zefort, chakra):
    """A "proxy" fault answers 502 with an HTML page: no task, no job, nothing done."""
    sim.faults.add(Fault("proxy", route=BULK))
    sim.faults.add(Fault("proxy", vendor="chakra", method="PATCH"))
    code, headers, raw = await fetch(zefort, "POST", BULK, DOC_PAYLOAD)
    assert (code, headers["Content-Type"].split(";")[0]) == (502, "text/html")
    assert b"Bad Gateway" in raw
    body = {"processes": [{"lead_id": "LEAD-001", "data": {"score": 1}}]}
    code, _, _ = await fetch(chakra, "PATCH", "/v1/ext/procedure/tele_sales/process", body)
    assert code == 502
    assert sim.records.zefort_submissions == []
    assert sim.records.chakra_submissions == []
    assert sim.records.faults["proxy"] == 2


async def test_empty_answers_an_empty_object_after_doing_the_work(sim, chakra):
    """An "empty" fault lets the bulk create start its job, then answers ``{}``."""
    sim.faults.add(Fault("empty", method="POST", vendor="chakra"))
    path = "/v1/ext/procedure/tele_sales/process/bulk-create"
    code, _, raw = await fetch(chakra, "POST", path, [{"lead_id": "NEW-1", "data": {}}])
    assert (code, json.loads(raw)) == (200, {})
    (submission,) = sim.records.chakra_submissions
    assert submission.job_id in sim.chakra.jobs


async def test_aiohttp_retries_a_dropped_get_once(sim, zefort):
    """The aiohttp client resends a GET whose connection dropped: the server sees it twice."""
    sim.faults.add(Fault("drop_before", method="GET", times=1))
    code, _, _ = await fetch(zefort, "GET", TASKS)
    assert code == 200
    assert sim.records.count(route=TASKS) == 2
    assert sim.records.by_status == {0: 1, 200: 1}


async def test_malformed_answers_200_with_broken_json(sim, zefort):
    """A malformed fault answers 200 whose body is not JSON, after processing the request."""
    sim.faults.add(Fault("malformed", route=BULK))
    code, headers, raw = await fetch(zefort, "POST", BULK, DOC_PAYLOAD)
    assert code == 200
    assert headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    assert len(sim.records.zefort_submissions) == 1


async def test_slow_body_arrives_whole_but_late(sim, chakra):
    """slow_body spreads a complete, valid body over the delay."""
    sim.faults.add(Fault("slow_body", delay=0.3, vendor="chakra"))
    started = time.monotonic()
    code, _, raw = await fetch(chakra, "GET", JOB_PATH)
    assert time.monotonic() - started >= 0.25
    assert code == 200
    assert json.loads(raw)["_data"]["completionStatus"] == "COMPLETED"


@pytest.mark.parametrize("delay", [0.2, (0.2, 0.25)], ids=["fixed", "range"])
async def test_latency_delays_then_answers(sim, zefort, delay):
    """A latency fault waits, then the request is handled normally."""
    sim.faults.add(Fault("latency", delay=delay))
    started = time.monotonic()
    code, _, _ = await fetch(zefort, "GET", TASKS)
    assert time.monotonic() - started >= 0.2
    assert code == 200
    assert sim.records.faults["latency"] == 1


async def test_filters_and_times(sim, zefort, chakra):
    """A rule fires only on its vendor, route and method, and at most `times` times."""
    rule = sim.faults.add(
        Fault(
            "status", status=502, vendor="zefort", route="/api/tasks/{id}/", method="GET", times=2
        )
    )
    task_id = (json.loads((await fetch(zefort, "POST", BULK, DOC_PAYLOAD))[2]))["id"]
    statuses = [(await fetch(zefort, "GET", f"/api/tasks/{task_id}/"))[0] for _ in range(3)]
    assert statuses == [502, 502, 200]
    assert (await fetch(zefort, "GET", TASKS))[0] == 200
    assert (await fetch(chakra, "GET", JOB_PATH))[0] == 200
    assert sim.faults.fired(rule) == 2
    assert sim.records.by_route["GET", "/api/tasks/{id}/"] == 3
    assert sim.records.count(vendor="zefort", method="GET", status=502) == 2
    sim.faults.remove(rule)
    assert len(sim.faults) == 0


async def test_rate_is_seeded_and_deterministic():
    """The same seed and requests give the same faults; a rate of 0.5 fails about half."""
    patterns = []
    for _ in range(2):
        async with (
            Simulator(seed=11, faults=[Fault("status", rate=0.5, vendor="chakra")]) as sim,
            aiohttp.ClientSession(
                sim.chakra_url, headers={"Authorization": f"Bearer {sim.chakra_token}"}
            ) as http,
        ):
            patterns.append([(await fetch(http, "GET", JOB_PATH))[0] for _ in range(40)])
    assert patterns[0] == patterns[1]
    assert 8 < patterns[0].count(503) < 32


async def test_requests_are_recorded_raw(sim, chakra):
    """Each request is recorded with its raw path, query, route template and status."""
    await fetch(chakra, "GET", f"{JOB_PATH}/entries?limit=2&completionStatus=ERROR")
    record = sim.records.requests[-1]
    assert record.vendor == "chakra"
    assert record.path == f"{JOB_PATH}/entries"
    assert record.query == (("limit", "2"), ("completionStatus", "ERROR"))
    assert record.route == "/v1/ext/background-job/{job_id}/entries"
    assert (record.status, record.fault) == (200, None)
    assert sim.records.total_requests == 1


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({"kind": "explode"}, id="kind"),
        pytest.param({"kind": "latency"}, id="latency-without-delay"),
        pytest.param({"kind": "status", "rate": 1.5}, id="rate"),
        pytest.param({"kind": "status", "status": 200}, id="status"),
        pytest.param({"kind": "status", "vendor": "acme"}, id="vendor"),
        pytest.param({"kind": "latency", "delay": (2, 1)}, id="range"),
        pytest.param({"kind": "status", "times": -1}, id="times"),
    ],
)
def test_fault_rejects_nonsense(arguments):
    """A Fault that cannot work is refused when made."""
    kind = arguments.pop("kind")
    with pytest.raises(ValueError):
        Fault(kind, **arguments)


def test_fault_is_frozen_and_keyword_only():
    """A Fault cannot be changed, and only its kind is positional."""
    fault = Fault("status", retry_after=3)
    assert fault.answer_status == 429
    with pytest.raises(AttributeError):
        fault.rate = 0.5
    with pytest.raises(TypeError):
        Fault("status", 0.5)


def test_clocks():
    """A manual clock moves only forward when told; a scaled clock runs faster than the wall."""
    clock = ManualClock(start=100.0)
    clock.advance(2.5)
    assert clock.now() == 102.5
    with pytest.raises(ValueError):
        clock.set(1.0)
    assert clock.wall_time(102.5) is None
    fast = MonotonicClock(time_scale=1000.0)
    before = fast.now()
    time.sleep(0.01)
    assert fast.now() - before >= 9.0
    assert fast.wall_time(fast.now()) == pytest.approx(time.time(), abs=0.05)
    with pytest.raises(ValueError):
        MonotonicClock(time_scale=0)


async def test_time_scale_speeds_up_tasks_and_records_finish():
    """With time_scale, a 100 s task finishes in a tenth of a second of wall time."""
    async with Simulator(time_scale=1000.0, zefort_task_delay=100.0) as sim:
        task = sim.zefort.submit_bulk_update(DOC_PAYLOAD)
        await asyncio.sleep(0.15)
        assert sim.zefort.task(task.id).backend_status == "done"
        finished = sim.records.task_finished(task.id)
        assert finished.simulated == pytest.approx(task.created_at + 100)
        assert finished.wall <= time.time()
        assert sim.records.finished_tasks() == {task.id: finished}


def test_public_names_are_sorted_and_complete():
    """`asyncbulk.testing.__all__` is sorted and names every public object it exports."""
    names = asyncbulk.testing.__all__
    assert names == sorted(names)
    public = {n for n in vars(asyncbulk.testing) if not n.startswith("_")}
    assert public - {"annotations"} == set(names)


def test_standalone_server_serves_and_stops():
    """`python -m asyncbulk.testing` prints export lines and exits cleanly on Ctrl-C."""
    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "asyncbulk.testing", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines = [process.stdout.readline() for _ in range(4)]
        assert lines[0].startswith("export CHAKRA_BASE_URL=http://127.0.0.1:")
        assert lines[1] == "export CHAKRA_TOKEN=chakra-sim-token\n"
        assert lines[2].startswith("export ZEFORT_BASE_URL=http://127.0.0.1:")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.stdout.close()
