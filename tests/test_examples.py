"""Each example in examples/ runs against the simulator and does what it says."""

import importlib.util
import os
import sys
from pathlib import Path

import aiohttp
import anyio
import pytest
from aiohttp.test_utils import TestServer

from asyncbulk.testing import Simulator

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
async def sim():
    async with Simulator(seed=2, zefort_task_delay=0.05) as simulator:
        yield simulator


async def run_example(sim: Simulator, name: str, *args: str):
    env = {
        **os.environ,
        "CHAKRA_BASE_URL": sim.chakra_url,
        "CHAKRA_TOKEN": sim.chakra_token,
        "ZEFORT_BASE_URL": sim.zefort_url,
        "ZEFORT_API_KEY": sim.zefort_api_key,
    }
    return await anyio.run_process(
        [sys.executable, str(EXAMPLES / name), *args], check=False, env=env
    )


async def test_chakra_bulk_update_example(sim):
    """The Chakra example submits in batches, streams entries and reports the invalid one."""
    process = await run_example(sim, "chakra_bulk_update.py")
    out = process.stdout.decode()
    assert process.returncode == 1, process.stderr.decode()
    assert "5 updates in 3 jobs" in out
    assert "entries: {" in out
    assert "INVALID: no process with lead_id 'NO-SUCH-LEAD'" in out
    assert len(sim.records.chakra_submissions) == 3


async def test_zefort_bulk_update_example(sim):
    """The Zefort example tracks every task to the end and acknowledges each once."""
    process = await run_example(sim, "zefort_bulk_update.py")
    assert process.returncode == 0, process.stderr.decode()
    assert process.stdout.decode().count(": done, ") == 3
    assert len(sim.records.acknowledgements) == 3
    assert set(sim.records.acknowledgements.values()) == {1}


async def test_asyncio_worker_example(sim):
    """The worker example carries out every queued request with its pool of workers."""
    process = await run_example(sim, "asyncio_worker.py", "--requests", "12", "--workers", "3")
    assert process.returncode == 0, process.stderr.decode()
    assert "12 requests, 0 failed" in process.stdout.decode()
    assert len(sim.records.zefort_submissions) == 12
    assert len(sim.records.acknowledgements) == 12


async def test_aiohttp_service_example(sim):
    """The web service submits through its shared client and reports the job it started."""
    spec = importlib.util.spec_from_file_location(
        "aiohttp_service", EXAMPLES / "aiohttp_service.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.make_app(base_url=sim.chakra_url, token=sim.chakra_token)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
        updates = [
            {"lead_id": "LEAD-001", "state": "called"},
            {"lead_id": "LEAD-100", "state": "x"},
        ]
        async with http.post(server.make_url("/updates/tele_sales"), json=updates) as answer:
            assert answer.status == 202
            body = await answer.json()
        assert body["count"] == 2
        (job_id,) = body["jobs"]
        with anyio.fail_after(10):
            while True:
                async with http.get(server.make_url(f"/jobs/{job_id}")) as answer:
                    job = await answer.json()
                if job["finished"]:
                    break
                await anyio.sleep(0.05)
        assert job["counts"] == {"SUCCESS": 2}
        bad = [{"lead_id": "LEAD-001", "status": "DONE"}]
        async with http.post(server.make_url("/updates/tele_sales"), json=bad) as answer:
            assert answer.status == 422
            assert "status" in (await answer.json())["error"]
    assert len(sim.records.chakra_submissions) == 1
