"""A per-call ``timeout=`` on every request-making method, against a simulator slow to answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest

from asyncbulk import (
    ChakraClient,
    DeadlineExceededError,
    OutcomeUnknownError,
    RetryPolicy,
    SubmissionError,
    Timeouts,
    TransportError,
    ValidationError,
    ZefortClient,
)
from asyncbulk.testing import Fault, Simulator

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

TASK = "/api/tasks/{id}/"
TASKS = "/api/tasks/"
BULK = "/api/contracts/bulk_update/"
PATCH_ROUTE = "/v1/ext/procedure/{procedure}/process"
ENTRIES = "/v1/ext/background-job/{job_id}/entries"
#: Far longer than any timeout below: a call that ends did not wait for the answer.
SLOW = 30.0
#: What the test allows the whole call, a bound a busy machine cannot miss.
GUARD = 15.0
UPDATES = [{"id": f"pid-{i}", "update": {"data": {"n": i}}} for i in range(3)]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(chakra_entries_per_second=100_000, zefort_task_delay=(0.01, 0.02)) as s:
        s.chakra.add_procedure("leads", primary_key="lead_id", attributes=["n"])
        for i in range(3):
            s.chakra.add_process("leads", {"lead_id": f"L{i}"}, id=f"pid-{i}")
        yield s


def zefort_client(sim: Simulator, **options: Any) -> ZefortClient:
    options.setdefault("retry", RetryPolicy.testing())
    return ZefortClient(sim.zefort_api_key, base_url=sim.zefort_url, **options)


def chakra_client(sim: Simulator) -> ChakraClient:
    return ChakraClient(sim.chakra_token, base_url=sim.chakra_url, retry=RetryPolicy.testing())


def slow(sim: Simulator, route: str, method: str) -> Fault:
    """Hold every matching request for `SLOW` seconds before handling it."""
    return sim.faults.add(Fault("latency", delay=SLOW, route=route, method=method))


async def test_acknowledge_task_ends_by_its_timeout(sim: Simulator) -> None:
    """A PATCH the server sits on ends with DeadlineExceededError by the call's timeout."""
    task = sim.zefort.submit_bulk_update({"attributes": {"n": 1}, "search": {}})
    fault = slow(sim, TASK, "PATCH")
    async with zefort_client(sim) as zefort:
        with anyio.fail_after(GUARD), pytest.raises(DeadlineExceededError):
            await zefort.acknowledge_task(task.id, timeout=0.3)
    assert sim.faults.fired(fault) >= 1


async def test_the_client_bound_wins_over_a_longer_timeout(sim: Simulator) -> None:
    """A per-call timeout longer than the client's ``timeouts.total`` does not lift it."""
    task = sim.zefort.submit_bulk_update({"attributes": {"n": 1}, "search": {}})
    fault = slow(sim, TASK, "PATCH")
    async with zefort_client(
        sim, timeouts=Timeouts(total=0.3), retry=RetryPolicy(attempts=1)
    ) as zefort:
        with anyio.fail_after(GUARD), pytest.raises(TransportError):
            await zefort.acknowledge_task(task.id, timeout=3600)
    assert sim.faults.fired(fault) == 1


async def test_iter_tasks_bounds_each_page(sim: Simulator) -> None:
    """A listing page the server sits on ends the iteration by the per-request timeout."""
    sim.zefort.submit_bulk_update({"attributes": {"n": 1}, "search": {}})
    fault = slow(sim, TASKS, "GET")
    async with zefort_client(sim) as zefort:
        with anyio.fail_after(GUARD), pytest.raises(DeadlineExceededError):
            [task async for task in zefort.iter_tasks(timeout=0.3)]
    assert sim.faults.fired(fault) >= 1


async def test_bulk_update_contracts_bounds_its_post(sim: Simulator) -> None:
    """A POST the server sits on ends by the timeout, as an outcome it cannot prove either way."""
    fault = slow(sim, BULK, "POST")
    async with zefort_client(sim) as zefort:
        with anyio.fail_after(GUARD), pytest.raises(OutcomeUnknownError):
            await zefort.bulk_update_contracts(attributes={"n": 1}, search={"q": "x"}, timeout=0.3)
    assert sim.faults.fired(fault) == 1


async def test_bulk_update_processes_bounds_each_batch(sim: Simulator) -> None:
    """Each batch's PATCH is bounded: one the server sits on is reported unknown, not awaited."""
    fault = slow(sim, PATCH_ROUTE, "PATCH")
    async with chakra_client(sim) as chakra:
        with anyio.fail_after(GUARD), pytest.raises(SubmissionError) as caught:
            await chakra.bulk_update_processes("leads", UPDATES, timeout=0.3)
    assert [b.state for b in caught.value.submission.outcomes] == ["unknown"]
    assert sim.faults.fired(fault) == 1


async def test_iter_job_entries_bounds_each_page(sim: Simulator) -> None:
    """An entries page the server sits on ends the stream by the per-request timeout."""
    async with chakra_client(sim) as chakra:
        submission = await chakra.bulk_update_processes("leads", UPDATES)
        job = await chakra.wait_for_job(submission.jobs[0].id, timeout=GUARD)
        fault = slow(sim, ENTRIES, "GET")
        with anyio.fail_after(GUARD), pytest.raises(DeadlineExceededError):
            [entry async for entry in chakra.iter_job_entries(job.id, timeout=0.3)]
    assert sim.faults.fired(fault) >= 1


async def test_a_bad_timeout_is_refused_before_any_request(sim: Simulator) -> None:
    """timeout=0 is a ValidationError naming the field, and nothing reaches the server."""
    async with chakra_client(sim) as chakra, zefort_client(sim) as zefort:
        with pytest.raises(ValidationError, match="timeout"):
            await chakra.bulk_update_processes("leads", UPDATES, timeout=0)
        with pytest.raises(ValidationError, match="timeout"):
            chakra.iter_job_entries("job", timeout=0)
        with pytest.raises(ValidationError, match="timeout"):
            zefort.iter_tasks(timeout=-1)
        with pytest.raises(ValidationError, match="timeout"):
            await zefort.bulk_update_contracts(attributes={"n": 1}, search={}, timeout=0)
        with pytest.raises(ValidationError, match="timeout"):
            await zefort.acknowledge_task("t1", timeout=0)
    assert sim.records.total_requests == 0


async def test_a_call_waiting_for_a_slot_ends_by_its_timeout(sim: Simulator) -> None:
    """A call queued behind a held request (max_in_flight=1) ends by its timeout, never sent."""
    task = sim.zefort.submit_bulk_update({"attributes": {"n": 1}, "search": {}})
    fault = slow(sim, TASK, "GET")
    async with zefort_client(sim, max_in_flight=1) as zefort, anyio.create_task_group() as tg:
        tg.start_soon(zefort.get_task, task.id)
        with anyio.fail_after(GUARD):
            while not sim.faults.fired(fault):  # noqa: ASYNC110 -- polls the fault count
                await anyio.sleep(0.01)
        with anyio.fail_after(GUARD), pytest.raises(DeadlineExceededError, match="in flight"):
            await zefort.get_task(task.id, timeout=0.3)
        assert sim.faults.fired(fault) == 1
        tg.cancel_scope.cancel()
