"""Nothing hangs: every wait ends at its deadline, and cancelling leaves nothing behind.

A job that never finishes gives `JobTimeoutError` at its deadline naming it; an overall deadline
over 1,000 tasks names exactly the ones left; a server that asks for an absurd ``Retry-After``
cannot stall the client past its deadlines. Cancelling a tracker, an entries iterator or a
submission midway (cancel scope, task cancellation, ``break``) leaves no task running and no
session or connector unclosed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import warnings
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from aiohttp import web
from loopback import serve

from asyncbulk import (
    AsyncBulkError,
    ClientClosedError,
    JobTimeoutError,
    RateLimitedError,
    RetryPolicy,
    TrackingOptions,
)
from asyncbulk.chakra import ChakraClient
from asyncbulk.testing import Fault, Simulator
from asyncbulk.zefort import ZefortClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

pytestmark = pytest.mark.anyio

#: How late a deadline may fire on a loaded 2-core machine; generous on purpose.
MARGIN = 1.5
FAST = RetryPolicy(initial_wait=0.01, max_wait=0.05)


def updates(count: int) -> list[dict[str, Any]]:
    """Updates of the processes `with_processes` added."""
    return [{"lead_id": f"L-{i}", "status": "COMPLETED"} for i in range(count)]


def with_processes(sim: Simulator, count: int) -> Simulator:
    """Add `count` processes to tele_sales, keyed L-0, L-1, ..."""
    for i in range(count):
        sim.chakra.add_process("tele_sales", {"lead_id": f"L-{i}"})
    return sim


def chakra_of(sim: Simulator, **kwargs: Any) -> ChakraClient:
    return ChakraClient(
        sim.chakra_token,
        base_url=sim.chakra_url,
        retry=FAST,
        tracking=TrackingOptions(min_interval=0.02, max_interval=0.1),
        **kwargs,
    )


def zefort_of(sim: Simulator, **kwargs: Any) -> ZefortClient:
    options: dict[str, Any] = {
        "base_url": sim.zefort_url,
        "retry": FAST,
        "tracking": TrackingOptions(min_interval=0.02, max_interval=0.1, sweep_interval=0.05),
        **kwargs,
    }
    return ZefortClient(sim.zefort_api_key, **options)


async def timed(call: Awaitable[object]) -> tuple[BaseException | None, float]:
    """Run `call` under a hard limit; return the error it raised and the seconds it took."""
    started = time.monotonic()
    try:
        with anyio.fail_after(30):
            await call
    except Exception as exc:  # noqa: BLE001 -- the caller checks it
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


async def follow(tasks: Any, into: list[str]) -> None:
    """Track inside `async with`, noting each task id as it is yielded."""
    async with tasks:
        async for task in tasks:
            into.append(task.id)  # noqa: PERF401 -- kept as they come, before any error


# -- deadlines ----------------------------------------------------------------------------------


async def test_chakra_job_that_never_finishes_times_out_naming_it():
    """A Chakra job that never finishes gives JobTimeoutError at its deadline, naming it."""
    async with Simulator(chakra_entries_per_second=0.001) as sim, chakra_of(sim) as chakra:
        with_processes(sim, 5)
        submission = await chakra.bulk_update_processes("tele_sales", updates(5))
        (job_id,) = submission.job_ids
        error, took = await timed(chakra.wait_for_job(job_id, timeout=0.5))
        assert isinstance(error, JobTimeoutError)
        assert error.unfinished == (job_id,)
        assert job_id in str(error)
        assert 0.5 <= took < 0.5 + MARGIN
        error, took = await timed(submission.wait(timeout=0.3))
        assert isinstance(error, JobTimeoutError)
        assert error.unfinished == (job_id,)
        assert 0.3 <= took < 0.3 + MARGIN
        assert sim.records.job_finished(job_id) is None


async def test_zefort_task_that_never_finishes_times_out_naming_it():
    """A Zefort task with a huge delay gives JobTimeoutError at its deadline, naming it."""
    async with Simulator(zefort_task_delay=1e6) as sim, zefort_of(sim) as zefort:
        task = await zefort.bulk_update_contracts(status="done", search={"q": "x"})
        error, took = await timed(zefort.wait_for_task(task.id, timeout=0.5, acknowledge=True))
        assert isinstance(error, JobTimeoutError)
        assert error.unfinished == (task.id,)
        assert 0.5 <= took < 0.5 + MARGIN
        assert sim.records.acknowledgements[task.id] == 0


async def test_overall_deadline_over_1000_tasks_names_exactly_those_left():
    """Tracking 1,000 tasks, half endless: the finished half is yielded, then the rest named."""

    def delay(body: Any) -> float:
        return 0.05 if body["attributes"]["n"] % 2 == 0 else 1e6

    async with Simulator(zefort_task_delay=delay) as sim, zefort_of(sim) as zefort:
        ids = [
            sim.zefort.submit_bulk_update({"attributes": {"n": n}, "search": {}}).id
            for n in range(1000)
        ]
        endless = {ids[n] for n in range(1, 1000, 2)}
        finished: list[str] = []
        iterator = zefort.track_tasks(ids, timeout=2.0, acknowledge=True)
        error, took = await timed(follow(iterator, finished))
        assert isinstance(error, JobTimeoutError)
        assert 2.0 <= took < 2.0 + MARGIN * 2
        assert set(error.unfinished) == endless
        assert set(finished) == set(ids) - endless
        assert len(finished) == len(set(finished)) == 500
        # Acknowledgements end by the deadline too: each finished task was acknowledged
        # once, or is named as not known to be (one cut in flight may have arrived).
        acknowledged = {i for i in finished if sim.records.acknowledgements[i] == 1}
        assert all(sim.records.acknowledgements[i] <= 1 for i in finished)
        assert acknowledged | set(iterator.unacknowledged) == set(finished)
        assert all(sim.records.acknowledgements[i] == 0 for i in endless)


async def test_per_task_deadline_drops_only_the_late_task():
    """A task past its own deadline is named; the others are still yielded."""

    def delay(body: Any) -> float:
        return 1e6 if body["attributes"]["n"] == 0 else 0.05

    async with Simulator(zefort_task_delay=delay) as sim, zefort_of(sim) as zefort:
        ids = [
            sim.zefort.submit_bulk_update({"attributes": {"n": n}, "search": {}}).id
            for n in range(20)
        ]
        seen: list[str] = []
        error, _ = await timed(follow(zefort.track_tasks(ids, task_timeout=0.5, timeout=10), seen))
        assert isinstance(error, JobTimeoutError)
        assert error.unfinished == (ids[0],)
        assert sorted(seen) == sorted(ids[1:])


def rate_limit_app(retry_after: str) -> web.Application:
    """Answers 429 with `retry_after` once, then a running Zefort task to every GET."""
    calls = {"n": 0}

    async def handle(_: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return web.json_response(
                {"detail": "slow down"}, status=429, headers={"Retry-After": retry_after}
            )
        return web.json_response({"id": "task_1", "backend_status": "pending"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.mark.parametrize("retry_after", ["100000", "1e300", "Fri, 31 Dec 9999 23:59:59 GMT"])
async def test_absurd_retry_after_cannot_stall_the_client(retry_after):
    """A 429 asking for days of silence fails fast, and later calls keep their deadlines."""
    policy = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05, budget=1.0)
    async with (
        serve(rate_limit_app(retry_after)) as url,
        ZefortClient("key", base_url=url, retry=policy) as zefort,
    ):
        error, took = await timed(zefort.get_task("task_1"))
        assert isinstance(error, RateLimitedError)
        assert took < MARGIN
        error, took = await timed(zefort.wait_for_task("task_1", timeout=0.5))
        assert isinstance(error, JobTimeoutError)
        assert took < 0.5 + MARGIN
        # After the budget's worth of pause, requests flow again.
        error, took = await timed(zefort.get_task("task_1"))
        assert error is None
        assert took < 1.0 + MARGIN


def stalling_app() -> web.Application:
    """Holds every request for a minute before answering a running task."""

    async def handle(_: web.Request) -> web.Response:
        await asyncio.sleep(60)
        return web.json_response({"id": "task_1", "backend_status": "pending"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def test_a_stalled_poll_cannot_hold_a_deadline_back():
    """A server that never answers a poll still gets JobTimeoutError at the deadline."""
    async with (
        serve(stalling_app()) as url,
        ZefortClient("key", base_url=url, retry=FAST) as zefort,
    ):
        error, took = await timed(zefort.wait_for_task("task_1", timeout=0.5))
        assert isinstance(error, JobTimeoutError)
        assert error.unfinished == ("task_1",)
        assert took < 0.5 + MARGIN


# -- cancellation leaves nothing behind ---------------------------------------------------------


class Leftovers:
    """What a cancelled operation might leave: tasks, unclosed sessions, resource warnings."""

    def __init__(self) -> None:
        """Start with nothing noted; `start` notes the tasks running."""
        self.before: set[asyncio.Task[Any]] = set()
        self.messages: list[str] = []

    def start(self) -> None:
        """Note the tasks running now, from inside the test's own task."""
        self.before = set(asyncio.all_tasks())

    async def check(self) -> None:
        """Assert no new task is running and nothing unclosed is reported on collection."""
        # Let cancelled tasks unwind: a few loop turns, bounded.
        for _ in range(50):
            extra = {t for t in asyncio.all_tasks() - self.before if not t.done()}
            extra.discard(asyncio.current_task())  # type: ignore[arg-type]
            if not extra:
                break
            await asyncio.sleep(0.01)
        assert not extra, extra
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gc.collect()
            await asyncio.sleep(0)
        texts = [str(w.message) for w in caught] + self.messages
        assert not [t for t in texts if "nclosed" in t or "never awaited" in t], texts


class _Catch(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@pytest.fixture
async def leftovers() -> AsyncIterator[Leftovers]:
    found = Leftovers()
    handler = _Catch(found.messages)
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        yield found
    finally:
        logger.removeHandler(handler)


async def run_and_cancel(work: Callable[[], Awaitable[object]], after: float) -> None:
    """Run `work` in a task and cancel that task after `after` seconds."""
    task = asyncio.ensure_future(work())
    await asyncio.sleep(after)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.fixture
async def slow_sim() -> AsyncIterator[Simulator]:
    async with Simulator(
        chakra_entries_per_second=200.0,
        zefort_task_delay=1e6,
        faults=[Fault("latency", delay=0.02)],
    ) as sim:
        yield with_processes(sim, 5000)


async def _big_job(sim: Simulator) -> str:
    """A finished job of 2,500 entries from the documentation's examples."""
    return next(job_id for job_id, job in sim.chakra.jobs.items() if job.total == 2500)


@pytest.mark.parametrize("how", ["cancel-scope", "task-cancel", "break"])
async def test_cancelling_a_tracker_leaves_nothing_running(slow_sim, leftovers, how):
    """A tracker stopped midway, however, leaves no task and no unclosed session."""
    sim = slow_sim
    leftovers.start()
    async with zefort_of(sim) as zefort:
        ids = [
            sim.zefort.submit_bulk_update({"attributes": {"n": n}, "search": {}}).id
            for n in range(200)
        ]
        sim.zefort.fail_task(ids[0], at_once=True)

        async def follow() -> None:
            async with zefort.track_tasks(ids) as tasks:
                async for _ in tasks:
                    if how == "break":
                        break

        if how == "cancel-scope":
            with anyio.move_on_after(0.3):
                await follow()
        elif how == "task-cancel":
            await run_and_cancel(follow, 0.3)
        else:
            with anyio.fail_after(10):
                await follow()
                async for _ in zefort.track_tasks(ids):
                    break
    await leftovers.check()


@pytest.mark.parametrize("how", ["cancel-scope", "task-cancel", "break", "break-no-with"])
async def test_cancelling_an_entries_iterator_leaves_nothing_running(slow_sim, leftovers, how):
    """An entries stream stopped midway, however, leaves no fetch running and nothing open."""
    sim = slow_sim
    leftovers.start()
    async with chakra_of(sim) as chakra:
        job_id = await _big_job(sim)

        async def read() -> None:
            async with chakra.iter_job_entries(job_id, page_size=10, prefetch=8) as entries:
                async for _ in entries:
                    pass

        if how == "cancel-scope":
            with anyio.move_on_after(0.2):
                await read()
        elif how == "task-cancel":
            await run_and_cancel(read, 0.2)
        elif how == "break":
            async with chakra.iter_job_entries(job_id, page_size=10) as entries:
                async for _ in entries:
                    break
        else:
            async for _ in chakra.iter_job_entries(job_id, page_size=10, prefetch=8):
                break
    await leftovers.check()


@pytest.mark.parametrize("how", ["cancel-scope", "task-cancel"])
async def test_cancelling_a_submission_leaves_nothing_running(slow_sim, leftovers, how):
    """A bulk submission cancelled midway leaves no request running and nothing open."""
    sim = slow_sim
    leftovers.start()

    async def items() -> AsyncIterator[dict[str, Any]]:
        for item in updates(5000):
            yield item
            if int(item["lead_id"][2:]) % 100 == 0:
                # A batch every 20 ms at most: a second for all 50, the cancel comes at 0.3 s.
                await anyio.sleep(0.02)

    async with chakra_of(sim) as chakra:

        async def submit() -> None:
            await chakra.bulk_update_processes("tele_sales", items(), batch_size=100)

        if how == "cancel-scope":
            with anyio.move_on_after(0.3):
                await submit()
        else:
            await run_and_cancel(submit, 0.3)
        sent = len(sim.records.chakra_submissions)
        assert 0 < sent < 50
    await leftovers.check()
    # Batches already on the wire at the cancel may still land (their outcome is unknown to
    # the caller); nothing is sent after it.
    await anyio.sleep(0.2)
    landed = len(sim.records.chakra_submissions)
    assert landed <= sent + 4
    await anyio.sleep(0.2)
    assert len(sim.records.chakra_submissions) == landed


async def test_closing_a_client_under_a_running_tracker_ends_it(slow_sim, leftovers):
    """Closing the client while a tracker polls ends the tracker with an error, not a hang."""
    sim = slow_sim
    leftovers.start()
    zefort = zefort_of(sim)
    ids = [
        sim.zefort.submit_bulk_update({"status": "done", "search": {"q": str(n)}}).id
        for n in range(5)
    ]
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                error, _ = await timed(follow(zefort.track_tasks(ids, timeout=5), []))
                assert isinstance(error, AsyncBulkError), error

            group.start_soon(watch)
            await anyio.sleep(0.2)
            await zefort.aclose()
    await leftovers.check()


async def test_a_request_in_flight_when_the_client_closes_ends_in_client_closed_error():
    """Closing a client under a request about to retry gives ClientClosedError, not RuntimeError."""
    async with Simulator(faults=[Fault("latency", delay=0.3)]) as sim:
        zefort = zefort_of(sim)
        outcome: list[BaseException | None] = []

        async def get() -> None:
            error, _ = await timed(zefort.get_task("task_x"))
            outcome.append(error)

        async with anyio.create_task_group() as group:
            group.start_soon(get)
            await anyio.sleep(0.1)
            await zefort.aclose()
        assert isinstance(outcome[0], ClientClosedError), outcome
