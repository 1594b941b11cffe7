"""Tracking through real HTTP against the simulator: acknowledgement, listings, errors, progress."""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter

import anyio
import attrs
import pytest
from aiohttp import web
from loopback import serve

from asyncbulk import (
    AuthenticationError,
    NotFoundError,
    ProtocolError,
    RetryPolicy,
    TrackingOptions,
)
from asyncbulk._tracking import UNTRACKED
from asyncbulk.chakra import ChakraClient, ProcessUpdate
from asyncbulk.testing import Fault, Simulator
from asyncbulk.zefort import ZefortClient

pytestmark = pytest.mark.anyio

FAST = TrackingOptions(min_interval=0.02, max_interval=0.2, sweep_interval=0.05)
TASK = "/api/tasks/{id}/"
TASKS = "/api/tasks/"


class ConsumerError(Exception):
    """The consumer's own failure."""


async def take_until_crash(iterator, taken: list[str], *, background: bool) -> None:
    """Take tasks, and raise while holding the third."""
    if background:
        async with iterator:
            await take_until_crash(iterator, taken, background=False)
        return
    async for task in iterator:
        taken.append(task.id)
        if len(taken) == 3:
            raise ConsumerError


async def collect_ids(iterator, got: list[str]) -> None:
    """Keep the ids that came before an error."""
    async for task in iterator:
        got.append(task.id)  # noqa: PERF401 -- keeps the ids that came before an error


async def read_all(listing) -> None:
    async with listing:
        async for _ in listing:
            pass


def make_tasks(sim: Simulator, count: int, delay: float = 0.0) -> list[str]:
    """Create tasks straight in the simulator's state, each with its own body."""
    previous, sim.zefort.task_delay = sim.zefort.task_delay, delay
    try:
        return [
            sim.zefort.submit_bulk_update({"status": "review", "search": {"q": f"n{i}"}}).id
            for i in range(count)
        ]
    finally:
        sim.zefort.task_delay = previous


def client(sim: Simulator, **settings) -> ZefortClient:
    options = {"retry": RetryPolicy.testing(), "tracking": FAST, **settings}
    return ZefortClient(sim.zefort_api_key, base_url=sim.zefort_url, **options)


@pytest.mark.parametrize("background", [False, True], ids=["plain", "async-with"])
async def test_a_consumer_that_raises_leaves_its_task_pending(background):
    """The task held when the loop raised is not acknowledged; a later run finds it again."""
    async with Simulator() as sim, client(sim) as zefort:
        ids = make_tasks(sim, 10)
        taken: list[str] = []
        iterator = zefort.track_tasks(ids, timeout=10, acknowledge=True)
        with pytest.raises(ConsumerError):
            await take_until_crash(iterator, taken, background=background)
        held = taken[-1]
        acknowledged = sim.records.acknowledgements
        assert acknowledged[held] == 0
        assert sim.zefort.task(held).frontend_status == "pending"
        assert set(acknowledged) <= set(taken[:-1])
        if background:  # leaving the block settles what was taken before
            assert dict(acknowledged) == dict.fromkeys(taken[:-1], 1)
        again = [task.id async for task in zefort.track_tasks(ids, timeout=10, acknowledge=True)]
        assert held in again
        # Over both runs: exactly one successful PATCH per task.
        assert dict(sim.records.acknowledgements) == dict.fromkeys(ids, 1)


async def test_tasks_are_yielded_before_acknowledgement_and_acknowledged_once_taken():
    """Each task comes out still pending, and its PATCH arrives only after the next is asked."""
    async with Simulator() as sim, client(sim) as zefort:
        ids = make_tasks(sim, 5)
        iterator = zefort.track_tasks(ids, timeout=10, acknowledge=True)
        async for task in iterator:
            assert not task.is_acknowledged
            assert sim.records.acknowledgements[task.id] == 0
        assert dict(sim.records.acknowledgements) == dict.fromkeys(ids, 1)
        assert sim.records.count(method="PATCH", route=TASK) == 5
        assert iterator.stats.acknowledged == 5


async def test_failed_acknowledgements_are_named(caplog):
    """When every PATCH fails, every task is still yielded, and each is named unacknowledged."""
    async with Simulator() as sim, client(sim, retry=RetryPolicy.testing(attempts=2)) as zefort:
        ids = make_tasks(sim, 4)
        sim.faults.add(Fault("status", status=500, vendor="zefort", method="PATCH"))
        iterator = zefort.track_tasks(ids, timeout=10, acknowledge=True)
        with caplog.at_level(logging.WARNING, logger="asyncbulk"):
            got = [task.id async for task in iterator]
        assert sorted(got) == sorted(ids)
        assert sorted(iterator.unacknowledged) == sorted(ids)
        assert iterator.stats.unacknowledged == 4
        assert not sim.records.acknowledgements
        assert all(sim.zefort.task(i).frontend_status == "pending" for i in ids)
        warned = " ".join(r.getMessage() for r in caplog.records)
        assert all(task_id in warned for task_id in ids)


async def test_wait_for_task_returns_the_acknowledged_task():
    """wait_for_task(acknowledge=True) returns the task as the PATCH answered it."""
    async with Simulator() as sim, client(sim) as zefort:
        (task_id,) = make_tasks(sim, 1, delay=0.1)
        task = await zefort.wait_for_task(task_id, timeout=5, acknowledge=True)
        assert task.is_acknowledged
        assert sim.records.acknowledgements == {task_id: 1}


async def test_a_listing_that_ignores_page_falls_back_to_polls():
    """Page 2 repeating page 1 is detected once; tasks are then polled, every one delivered."""
    async with Simulator() as sim, client(sim, listing_page_size=10) as zefort:
        sim.zefort.listing_ignores_page = True
        ids = make_tasks(sim, 60, delay=0.3)
        got = [task.id async for task in zefort.track_tasks(ids, timeout=20)]
        assert sorted(got) == sorted(ids)
        # One sweep found the repeat, and the listing was never read again: page 1 was asked
        # once (page 2 and those fetched ahead of it, of the 6 the listing says, after it).
        first_pages = [
            r for r in sim.records.requests if r.route == TASKS and ("page", "1") in r.query
        ]
        assert len(first_pages) == 1
        assert sim.records.count(method="GET", route=TASKS) <= 6
        assert sim.records.count(method="GET", route=TASK) >= 60


async def test_a_listing_that_ignores_page_is_not_read_short():
    """iter_tasks says the listing cannot be read whole instead of ending after page 1."""
    async with Simulator() as sim, client(sim) as zefort:
        sim.zefort.listing_ignores_page = True
        make_tasks(sim, 25, delay=60)
        with pytest.raises(ProtocolError, match="ignores `page`"):
            await read_all(zefort.iter_tasks(page_size=10))


async def test_an_error_that_ends_tracking_names_every_task_not_delivered():
    """After a 401, the tasks detected are delivered, and the error names all the others."""
    async with Simulator() as sim, client(sim) as zefort:
        quick = make_tasks(sim, 3)
        slow = make_tasks(sim, 4, delay=60)
        got: list[str] = []
        refuse = Fault("status", status=401, vendor="zefort")
        iterator = zefort.track_tasks([*quick, *slow], timeout=10)
        got.append((await iterator.__anext__()).id)
        sim.faults.add(refuse)
        with pytest.raises(AuthenticationError) as caught:
            await collect_ids(iterator, got)
        assert set(got) | set(caught.value.unfinished) == {*quick, *slow}
        assert not set(got) & set(caught.value.unfinished)
        assert set(slow) <= set(caught.value.unfinished)


async def test_a_missing_task_error_names_it_unfinished():
    """A task the server does not know ends tracking with NotFoundError naming it."""
    async with Simulator() as sim, client(sim) as zefort:
        ids = make_tasks(sim, 2)
        got: list[str] = []
        with pytest.raises(NotFoundError) as caught:
            await collect_ids(zefort.track_tasks([*ids, "task_ghost"], timeout=10), got)
        assert sorted(got) == sorted(ids)
        assert caught.value.unfinished == ("task_ghost",)


async def test_chakra_progress_carries_entry_counts_at_the_documented_rate():
    """on_progress shows entry counts per status moving, at most every 0.5 s, and at the end."""
    async with (
        Simulator(chakra_entries_per_second=8) as sim,
        ChakraClient(
            sim.chakra_token,
            base_url=sim.chakra_url,
            tracking=TrackingOptions(min_interval=0.02, max_interval=0.1),
        ) as chakra,
    ):
        submission = await chakra.bulk_update_processes(
            "tele_sales", [ProcessUpdate.by_key("lead_id", "LEAD-001", state="S")] * 16
        )
        calls: list[tuple[float, dict[str, int]]] = []
        job = await chakra.wait_for_job(
            submission.jobs[0].id,
            timeout=20,
            on_progress=lambda stats: calls.append((time.monotonic(), dict(stats.entries))),
        )
        assert calls[-1][1] == dict(job.status_counts)
        assert any(
            counts.get("NOT_STARTED", 0) + counts.get("IN_PROGRESS", 0) > 0 for _, counts in calls
        )
        assert len({tuple(sorted(counts.items())) for _, counts in calls}) >= 2
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(calls[:-1])]
        assert all(gap >= 0.5 for gap in gaps)
        seen: list[int] = []
        await submission.wait(timeout=20, on_progress=lambda stats: seen.append(stats.finished))
        assert seen[-1] == len(submission.jobs)


class RecordingView:
    """A SweepView that tracks the given ids and records what a sweep reports of each."""

    def __init__(self, tracked: set[str]) -> None:  # noqa: D107 -- the class says it
        self.tracked = tracked
        self.changed_ids: list[str] = []
        self.unchanged_ids: list[str] = []
        self.states: dict[str, object] = {}

    def known(self, job_id: str):
        return None if job_id in self.tracked else UNTRACKED

    def unchanged(self, job_id: str) -> None:
        self.unchanged_ids.append(job_id)

    def listed(self, job_id: str, progress, initial=None) -> bool:
        if job_id not in self.tracked:
            return False
        if progress == initial:
            self.unchanged(job_id)
            return False
        return True

    def listed_many(self, ids, progress, initial=None, *, page=None) -> list[int]:  # noqa: ARG002
        return [
            index
            for index, (job_id, now) in enumerate(zip(ids, progress, strict=True))
            if type(job_id) is str and self.listed(job_id, now, initial)
        ]

    def changed(self, job_id: str, state) -> None:
        assert state.id == job_id
        self.changed_ids.append(job_id)
        self.states[job_id] = state

    def shifted(self) -> None:
        self.moved = True

    def skipped(self) -> None:
        self.partial = True

    moved = False
    partial = False


def _pending(task_id: str, status: str = "pending") -> dict[str, object]:
    return {"id": task_id, "backend_status": status, "frontend_status": "pending"}


FIRST_PAGE = [_pending("a"), _pending("p1"), _pending("p2"), _pending("p3")]
LAST_PAGE = [_pending(f"p{i}") for i in range(4, 8)]
#: The listing [a, p1-p3, c, p4-p7] of 4 a page, with a acknowledged before page 2 is read:
#: page 2 is then [p4-p7] of 8, and c, shifted onto page 1, is on neither page read.
MOVED = {1: (9, FIRST_PAGE), 2: (8, LAST_PAGE)}
#: The same pages with no move: [a, p1-p7], and c is not pending at all.
STILL = {1: (8, FIRST_PAGE), 2: (8, LAST_PAGE)}
#: The listing read whole: c on page 2.
WHOLE = {1: (9, FIRST_PAGE), 2: (9, [_pending("c"), *LAST_PAGE[:3]]), 3: (9, LAST_PAGE[3:])}


def scripted_listing(pages: dict[int, tuple[int, list]], asked: list[str]) -> web.Application:
    """A pending listing answering ``pages`` ({page: (count, results)}), 404 past them.

    A single task read answers it done. ``asked`` records each request ("page 1", "task c").
    """

    async def listing(request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1"))
        asked.append(f"page {page}")
        if page not in pages:
            raise web.HTTPNotFound(text="Invalid page.")
        count, results = pages[page]
        last = -(-count // 4)
        return web.json_response(
            {"page_size": 4, "page": page, "last_page": last, "count": count, "results": results}
        )

    async def one(request: web.Request) -> web.Response:
        asked.append(f"task {request.match_info['id']}")
        return web.json_response(_pending(request.match_info["id"], "done"))

    app = web.Application()
    app.router.add_get(TASKS, listing)
    app.router.add_get(TASK, one)
    return app


@pytest.mark.parametrize(("pages", "moved"), [(MOVED, True), (STILL, False), (WHOLE, False)])
async def test_a_sweep_says_when_the_listing_moved_between_its_pages(pages, moved):
    """Counts that differ between pages (a task acknowledged meanwhile) tell the view."""
    view = RecordingView({"c", "p1", "p7"})
    async with (
        serve(scripted_listing(pages, [])) as url,
        ZefortClient("key", base_url=url, listing_page_size=4) as zefort,
    ):
        assert await zefort.task_source.sweep(view) is True
    assert view.moved is moved
    assert ("c" in view.unchanged_ids) is (pages is WHOLE)


@pytest.mark.parametrize(("pages", "sweeps"), [(MOVED, 2), (STILL, 1)])
async def test_a_task_that_slipped_between_pages_is_fetched_only_when_missed_twice(pages, sweeps):
    """A task missing from a listing that moved is fetched once the next sweep misses it too."""
    asked: list[str] = []
    tracked = ["c", *(f"p{i}" for i in range(1, 8))]
    async with (
        serve(scripted_listing(pages, asked)) as url,
        ZefortClient("key", base_url=url, listing_page_size=4) as zefort,
        zefort.track_tasks(tracked, timeout=10) as tasks,
    ):
        first = await anext(aiter(tasks))
    assert first.id == "c"
    assert asked[: asked.index("task c")].count("page 1") == sweeps
    assert [a for a in asked if a.startswith("task")] == ["task c"]


def slow_listing(pages: int, at_once: list[int]) -> web.Application:
    """A pending listing of ``pages`` pages of one task each, every page answered after 20 ms.

    ``at_once`` ends holding the most listing requests the server had under way together.
    """
    under_way = [0]

    async def listing(request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1"))
        under_way[0] += 1
        at_once[0] = max(at_once[0], under_way[0])
        try:
            await anyio.sleep(0.02)
        finally:
            under_way[0] -= 1
        results = [_pending(f"t{page}")]
        return web.json_response(
            {"page_size": 1, "page": page, "last_page": pages, "count": pages, "results": results}
        )

    app = web.Application()
    app.router.add_get(TASKS, listing)
    return app


@pytest.mark.parametrize(("max_in_flight", "expected"), [(16, 8), (6, 3), (1, 1)])
async def test_a_sweep_reads_half_the_clients_requests_in_flight_worth_of_pages(
    max_in_flight, expected
):
    """A long listing is read with half of max_in_flight pages at the server at once, no more."""
    at_once = [0]
    view = RecordingView({"t1", "t40"})
    async with (
        serve(slow_listing(40, at_once)) as url,
        ZefortClient(
            "key", base_url=url, listing_page_size=1, max_in_flight=max_in_flight
        ) as zefort,
    ):
        assert await zefort.task_source.sweep(view) is True
    assert at_once[0] == expected
    assert set(view.unchanged_ids) == {"t1", "t40"}


#: [a, p1-p3], [c (finished), p4-p6], [p7]: 9 pending tasks, 4 a page.
THROTTLED_PAGES = {
    1: (9, FIRST_PAGE),
    2: (9, [_pending("c", "done"), *LAST_PAGE[:3]]),
    3: (9, LAST_PAGE[3:]),
}


def throttling_listing(
    refusals: dict[int, set[int]], asked: list[str], retry_after: int
) -> web.Application:
    """`THROTTLED_PAGES`, answering 429 (``Retry-After``) to the reads ``refusals[page]`` (1-based).

    ``asked`` records each request: "page 2", "page 2 429", "task c".
    """
    reads: Counter[int] = Counter()

    async def listing(request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1"))
        reads[page] += 1
        if reads[page] in refusals.get(page, ()):
            asked.append(f"page {page} 429")
            return web.json_response(
                {"detail": "Request was throttled."},
                status=429,
                headers={"Retry-After": str(retry_after)},
            )
        asked.append(f"page {page}")
        count, results = THROTTLED_PAGES[page]
        return web.json_response(
            {"page_size": 4, "page": page, "last_page": 3, "count": count, "results": results}
        )

    async def one(request: web.Request) -> web.Response:
        asked.append(f"task {request.match_info['id']}")
        return web.json_response(_pending(request.match_info["id"]))

    app = web.Application()
    app.router.add_get(TASKS, listing)
    app.router.add_get(TASK, one)
    return app


async def first_of_throttled_listing(refusals: dict[int, set[int]], retry_after: int) -> list[str]:
    """Track the 8 tasks of `THROTTLED_PAGES` until c comes; the requests the server saw."""
    asked: list[str] = []
    tracked = ["c", *(f"p{i}" for i in range(1, 8))]
    async with (
        serve(throttling_listing(refusals, asked, retry_after)) as url,
        ZefortClient("key", base_url=url, listing_page_size=4, tracking=FAST) as zefort,
        zefort.track_tasks(tracked, timeout=30) as tasks,
    ):
        first = await anext(aiter(tasks))
    assert first.id == "c"
    return asked


@pytest.mark.parametrize("page", [1, 2])
async def test_a_listing_page_answered_429_is_left_to_the_next_sweep(page):
    """A throttled page is read by the next sweep, not retried after Retry-After; none polled."""
    started = time.monotonic()
    asked = await first_of_throttled_listing({page: {1}}, retry_after=8)
    assert time.monotonic() - started < 8
    refused = asked.index(f"page {page} 429")
    again = asked.index(f"page {page}", refused)
    # A fresh sweep, which starts from page 1, read the page again.
    assert asked[refused:again].count("page 1") == (page != 1)
    assert page == 1 or "page 3" in asked[refused:again]
    assert not [a for a in asked if a.startswith("task")]


async def test_a_sweep_throttled_on_page_1_keeps_the_cost_the_last_read_learnt():
    """A listing whose page 1 met a 429 still costs its 3 pages, not 1, to the scheduler."""
    asked: list[str] = []
    view = RecordingView({"c", "p1"})
    async with (
        serve(throttling_listing({1: {2}}, asked, retry_after=8)) as url,
        ZefortClient("key", base_url=url, listing_page_size=4) as zefort,
    ):
        source = zefort.task_source
        assert await source.sweep(view) is True
        assert source.sweep_cost() == 3
        assert await source.sweep(view) is True
        assert view.partial
        assert source.sweep_cost() == 3
    assert asked == ["page 1", "page 2", "page 3", "page 1 429"]


async def test_a_page_throttled_two_sweeps_running_is_retried_after_retry_after():
    """The sweep after one that skipped a page waits out Retry-After: a throttled page is read."""
    asked = await first_of_throttled_listing({2: {1, 2}}, retry_after=1)
    first = asked.index("page 2 429")
    second = asked.index("page 2 429", first + 1)
    assert "page 1" in asked[first:second]  # the next sweep asked again...
    retried = asked.index("page 2", second)
    assert "page 1" not in asked[second:retried]  # ...and retried within itself
    assert not [a for a in asked if a.startswith("task")]


async def test_a_sweep_builds_tasks_only_for_tracked_tasks_that_changed():
    """Of the listed tasks, only tracked ones that finished are built; others are just marked."""
    async with Simulator() as sim, client(sim, listing_page_size=7) as zefort:
        pending = make_tasks(sim, 30, delay=60)
        done = make_tasks(sim, 5)
        view = RecordingView({*pending[:20], *done})
        assert await zefort.task_source.sweep(view) is True
        assert sorted(view.changed_ids) == sorted(done)
        assert sorted(view.unchanged_ids) == sorted(pending[:20])
        assert sim.records.count(method="GET", route=TASKS) == 5  # 35 tasks, 7 a page


async def test_a_task_a_sweep_finds_finished_is_the_task_a_get_reads():
    """Built from its listed text, a finished task equals `get_task`'s, details and raw too."""
    async with Simulator() as sim, client(sim, listing_page_size=4) as zefort:
        pending = make_tasks(sim, 6, delay=60)
        done = make_tasks(sim, 5)
        view = RecordingView({*pending, *done})
        assert await zefort.task_source.sweep(view) is True
        for task_id in done:
            swept = view.states[task_id]
            # Built from its listed text, not parsed: the text is what it holds until read.
            assert isinstance(swept._raw, bytes)
            read = await zefort.get_task(task_id)
            assert swept == read
            assert swept.details == read.details
            assert swept.raw == read.raw
            assert swept.affected_contracts == read.affected_contracts
            assert swept.handle() == read.handle()
            assert attrs.evolve(swept, description="x").details == read.details


async def test_a_finished_task_listed_in_a_bad_shape_is_left_to_its_own_read():
    """A listed task whose fields have the wrong type, or are blank, is skipped by the sweep."""
    strings = {"backend_status_info": "", "frontend_status": "pending", "description": ""}
    bad = [
        {"id": "task_bad", "backend_status": "done", "frontend_status": 7},
        {"id": "task_details", "backend_status": "done", "details": [1]},
        {**strings, "id": "  ", "backend_status": "done"},
        {**strings, "id": "task_blank", "backend_status": " "},
    ]
    good = {
        "id": "task_good",
        "backend_status": "done",
        "details": None,
        "description": None,
    }

    async def listing(_: web.Request) -> web.Response:
        return web.json_response({"count": 5, "results": [*bad, good]})

    app = web.Application()
    app.router.add_get(TASKS, listing)
    async with serve(app) as url, ZefortClient("key", base_url=url) as zefort:
        view = RecordingView({"task_bad", "task_details", "  ", "task_blank", "task_good"})
        assert await zefort.task_source.sweep(view) is True
        assert view.changed_ids == ["task_good"]
        task = view.states["task_good"]
        assert (task.details, task.description, task.raw) == ({}, "", good)


async def test_leaving_the_block_normally_acknowledges_the_task_held():
    """A break inside async with is a normal end: the task held is acknowledged, once."""
    async with Simulator() as sim, client(sim) as zefort:
        ids = make_tasks(sim, 6)
        async with zefort.track_tasks(ids, timeout=10, acknowledge=True) as tasks:
            async for task in tasks:
                held = task.id
                break
        assert dict(sim.records.acknowledgements) == {held: 1}
        assert tasks.unacknowledged == ()


@pytest.mark.parametrize("background", [False, True], ids=["plain", "async-with"])
async def test_acknowledgements_that_hang_end_at_the_deadline(background):
    """PATCHes held for 60 s: the loop ends at its deadline, naming every task unacknowledged."""
    async with Simulator() as sim, client(sim) as zefort:
        ids = make_tasks(sim, 3)
        sim.faults.add(Fault("latency", delay=60, vendor="zefort", method="PATCH"))
        iterator = zefort.track_tasks(ids, timeout=1.0, acknowledge=True)
        started = time.monotonic()
        got: list[str] = []
        if background:
            async with iterator:
                await collect_ids(iterator, got)
        else:
            await collect_ids(iterator, got)
        assert time.monotonic() - started < 30  # bounded by the deadline, not by the PATCH
        assert sorted(got) == sorted(ids)
        assert sorted(iterator.unacknowledged) == sorted(ids)
        assert not sim.records.acknowledgements
