"""The vendor-neutral job tracker's engine, driven by an in-memory job source.

No HTTP here: the source is ours, so the engine's promises (once each, deadlines, nothing left
running) are tested on their own. The scheduler's rules have clock-driven tests in
test_scheduler.py; the Zefort and Chakra client tests drive the same tracker over HTTP against
the simulator.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter

import anyio
import anyio.lowlevel
import attrs
import pytest

from asyncbulk import (
    AuthenticationError,
    JobTimeoutError,
    NotFoundError,
    ServerError,
    TrackingOptions,
    ValidationError,
)
from asyncbulk._tracking import UNTRACKED, JobTracker, TrackerStats, track, wait_for

FAST_OPTIONS = TrackingOptions(min_interval=0.01, max_interval=0.05, sweep_interval=0.02)
FAST = {"options": FAST_OPTIONS}


class FakeJobs:
    """Jobs that finish at set times after creation; counts every fetch and sweep."""

    kind = "fake job"

    def __init__(
        self,
        finish_after: dict[str, float],
        *,
        listing: bool = False,
        page_size: int = 100,
        failed: frozenset[str] = frozenset(),
        hidden: frozenset[str] = frozenset(),
    ) -> None:
        """Start the clock: each job finishes ``finish_after[id]`` seconds from now."""
        self.started = time.time()
        self.finish_after = finish_after
        self.listing = listing
        self.page_size = page_size
        self.failed = failed
        self.hidden = hidden
        self.fetches: Counter[str] = Counter()
        self.sweeps = 0
        self.errors: dict[str, BaseException] = {}
        self.progress_of: dict[str, int] = {}

    def state(self, job_id: str) -> tuple[str, bool, float]:
        finish = self.started + self.finish_after[job_id]
        return (job_id, time.time() >= finish, finish)

    async def fetch(self, job_id: str, *, deadline=None) -> tuple[str, bool, float]:  # noqa: ARG002
        self.fetches[job_id] += 1
        await anyio.sleep(0.001)
        if job_id in self.errors:
            raise self.errors[job_id]
        if job_id not in self.finish_after:
            raise NotFoundError(status=404, method="GET", url=f"http://x/{job_id}")
        return self.state(job_id)

    def is_finished(self, job: tuple[str, bool, float]) -> bool:
        return job[1]

    def is_failed(self, job: tuple[str, bool, float]) -> bool:
        return job[1] and job[0] in self.failed

    def progress(self, job: tuple[str, bool, float]) -> int | None:
        return self.progress_of.get(job[0])

    def finished_at(self, job: tuple[str, bool, float]) -> float | None:
        return job[2] if job[1] else None

    async def sweep(self, view, *, deadline=None):  # noqa: ARG002
        if not self.listing:
            return None
        self.sweeps += 1
        await anyio.sleep(0.001)
        for job_id in self.finish_after:
            last = view.known(job_id)
            if job_id in self.hidden or last is UNTRACKED:
                continue
            state = self.state(job_id)
            if state[1] or self.progress_of.get(job_id) != last:
                view.changed(job_id, state)
            else:
                view.unchanged(job_id)
        return True

    def sweep_cost(self) -> int | None:
        return -(-len(self.finish_after) // self.page_size) if self.listing else None


def spread(n: int, longest: float) -> dict[str, float]:
    return {f"job-{i}": longest * i / n for i in range(n)}


async def collect(iterator) -> list:
    return [job async for job in iterator]


async def collect_ids(iterator, got: list[str]) -> None:
    async for job in iterator:
        got.append(job[0])  # noqa: PERF401 -- keeps the ids that came before an error


@pytest.mark.anyio
@pytest.mark.parametrize("listing", [False, True], ids=["polls", "sweeps"])
@pytest.mark.parametrize("background", [False, True], ids=["plain", "async-with"])
async def test_each_job_yielded_once_in_finishing_order(listing, background):
    """Every job comes out exactly once, roughly in the order it finished."""
    source = FakeJobs(spread(200, 0.4), listing=listing)
    iterator = track(source, list(source.finish_after), timeout=10, **FAST)
    if background:
        async with iterator:
            jobs = await collect(iterator)
    else:
        jobs = await collect(iterator)
    ids = [job[0] for job in jobs]
    assert sorted(ids) == sorted(source.finish_after)
    assert len(set(ids)) == 200
    # Detection order follows finishing order up to the polling granularity.
    finish = [source.finish_after[i] for i in ids]
    assert all(b >= a - 0.15 for a, b in itertools.pairwise(finish))
    assert iterator.stats.finished == 200
    assert iterator.stats.tracked == 0


@pytest.mark.anyio
async def test_sweep_replaces_polls_when_cheaper():
    """With a listing of 1 page, 500 jobs are followed by sweeps, not 500 fetches each."""
    source = FakeJobs(spread(500, 0.3), listing=True, page_size=1000)
    iterator = track(source, list(source.finish_after), timeout=10, **FAST)
    assert len(await collect(iterator)) == 500
    assert sum(source.fetches.values()) == 0
    assert 1 <= source.sweeps <= 60
    assert iterator.stats.sweeps == source.sweeps
    assert iterator.stats.requests == source.sweeps


@pytest.mark.anyio
async def test_job_missing_from_sweep_gets_one_fetch():
    """A job the listing does not show is fetched individually and still delivered."""
    source = FakeJobs(spread(50, 0.05), listing=True, hidden=frozenset({"job-7"}))
    jobs = await collect(track(source, list(source.finish_after), timeout=10, **FAST))
    assert len(jobs) == 50
    assert 1 <= source.fetches["job-7"] <= source.sweeps
    # Others are fetched one by one only at the end, when one or two left make a page dear.
    assert sum(source.fetches.values()) - source.fetches["job-7"] <= 6


@pytest.mark.anyio
async def test_single_job_is_polled_not_swept():
    """One job costs one request per poll: a listing page would cost as much, so no sweep."""
    source = FakeJobs({"only": 0.1}, listing=True)
    job = await wait_for(source, "only", timeout=5, **FAST)
    assert job[0] == "only"
    assert source.sweeps == 0
    assert source.fetches["only"] >= 2


@pytest.mark.anyio
async def test_interval_grows_without_progress_and_tightens_with_it():
    """A stalled job is polled ever less often; a job showing progress is polled at the minimum."""
    source = FakeJobs({"stalled": 0.6, "moving": 0.6})
    counter = 0

    def moving_progress() -> None:
        nonlocal counter
        counter += 1
        source.progress_of["moving"] = counter

    original = source.fetch

    async def fetch(job_id: str, *, deadline=None):
        if job_id == "moving":
            moving_progress()
        return await original(job_id, deadline=deadline)

    source.fetch = fetch  # type: ignore[method-assign]
    await collect(
        track(
            source,
            ["stalled", "moving"],
            timeout=5,
            options=TrackingOptions(min_interval=0.01, max_interval=0.2),
        )
    )
    assert source.fetches["stalled"] <= 10  # 0.01, 0.02, ... capped at 0.2 over 0.6 s
    assert source.fetches["moving"] >= 3 * source.fetches["stalled"]


@pytest.mark.anyio
async def test_overall_deadline_names_unfinished_after_delivering_finished():
    """At the deadline the finished jobs were yielded and the error names the rest."""
    source = FakeJobs({"quick": 0.0, "slow-1": 60, "slow-2": 60})
    got = []
    iterator = track(source, list(source.finish_after), timeout=0.3, **FAST)
    with pytest.raises(JobTimeoutError) as caught:
        await collect_ids(iterator, got)
    assert got == ["quick"]
    assert sorted(caught.value.unfinished) == ["slow-1", "slow-2"]
    assert isinstance(caught.value, TimeoutError)


@pytest.mark.anyio
async def test_job_deadline_does_not_stop_the_others():
    """A job past its own deadline is dropped; the others are delivered, then the error names it."""
    source = FakeJobs({"late": 60, "a": 0.1, "b": 0.3})
    tracker = JobTracker(source, timeout=10, **FAST)
    tracker.add("late", timeout=0.05)
    tracker.add("a")
    tracker.add("b")
    tracker.close()
    got = []
    with pytest.raises(JobTimeoutError) as caught:
        await collect_ids(tracker, got)
    assert got == ["a", "b"]
    assert caught.value.unfinished == ("late",)
    assert tracker.expired == ("late",)
    assert tracker.stats.expired == 1


@pytest.mark.anyio
async def test_wait_for_times_out_naming_the_job():
    """`wait_for` raises JobTimeoutError whose unfinished is the one job."""
    with pytest.raises(JobTimeoutError) as caught:
        await wait_for(FakeJobs({"x": 60}), "x", timeout=0.1, **FAST)
    assert caught.value.unfinished == ("x",)


@pytest.mark.anyio
async def test_missing_job_is_reported_after_the_others():
    """A 404 drops that job, the others are still delivered, then NotFoundError ends the loop."""
    source = FakeJobs({"a": 0.05, "b": 0.1})
    got = []
    iterator = track(source, ["a", "ghost", "b"], timeout=5, **FAST)
    with pytest.raises(NotFoundError):
        await collect_ids(iterator, got)
    assert sorted(got) == ["a", "b"]
    assert iterator.tracker.lost == ("ghost",)
    assert source.fetches["ghost"] == 1


@pytest.mark.anyio
async def test_authentication_error_ends_tracking_at_once():
    """Refused credentials stop polling instead of retrying every job forever."""
    source = FakeJobs({"a": 60, "b": 60})
    source.errors["a"] = AuthenticationError(status=401, method="GET", url="http://x/a")
    with pytest.raises(AuthenticationError):
        await collect(track(source, ["a", "b"], timeout=5, **FAST))
    assert source.fetches["a"] == 1


@pytest.mark.anyio
async def test_failed_poll_is_rescheduled_not_fatal():
    """A 5xx on a poll only delays that job; it is delivered once the server recovers."""
    source = FakeJobs({"a": 0.0})
    source.errors["a"] = ServerError(status=500, method="GET", url="http://x/a")
    tracker = JobTracker(source, timeout=5, **FAST)
    tracker.add("a")
    tracker.close()
    async with tracker:
        await anyio.sleep(0.1)
        del source.errors["a"]
        jobs = await collect(tracker)
    assert [job[0] for job in jobs] == ["a"]
    assert tracker.stats.poll_errors >= 1


@pytest.mark.anyio
async def test_failed_jobs_are_counted_and_delivered():
    """A job that finished in failure is yielded like any other and counted as failed."""
    source = FakeJobs({"ok": 0.0, "bad": 0.0}, failed=frozenset({"bad"}))
    iterator = track(source, ["ok", "bad"], timeout=5, **FAST)
    assert len(await collect(iterator)) == 2
    assert iterator.stats.failed == 1
    assert iterator.stats.finished == 2


@pytest.mark.anyio
@pytest.mark.parametrize("listing", [False, True], ids=["polls", "sweeps"])
async def test_breaking_out_leaves_nothing_running(listing):
    """`break` out of a plain `async for` leaves no task behind."""
    before = set(asyncio.all_tasks())
    source = FakeJobs(spread(300, 0.5), listing=listing)
    async for _ in track(source, list(source.finish_after), timeout=10, **FAST):
        assert set(asyncio.all_tasks()) == before
        break
    assert set(asyncio.all_tasks()) == before
    polled = sum(source.fetches.values()) + source.sweeps
    await anyio.sleep(0.1)
    assert sum(source.fetches.values()) + source.sweeps == polled


@pytest.mark.anyio
async def test_cancel_scope_around_iteration_leaves_nothing_running():
    """Cancelling while the loop waits (plain and async-with forms) leaves no task behind."""
    before = set(asyncio.all_tasks())
    source = FakeJobs(spread(100, 60))
    with anyio.move_on_after(0.2) as scope:
        async for _ in track(source, list(source.finish_after), **FAST):
            pass
    assert scope.cancelled_caught
    assert set(asyncio.all_tasks()) == before
    with anyio.move_on_after(0.2) as scope:
        async with track(source, list(source.finish_after), **FAST) as iterator:
            async for _ in iterator:
                pass
    assert scope.cancelled_caught
    assert set(asyncio.all_tasks()) == before


@pytest.mark.anyio
async def test_jobs_added_while_running_are_tracked_once():
    """Jobs added during iteration are followed; an id added twice is yielded once."""
    source = FakeJobs({"a": 0.0, "b": 0.05, "c": 0.1})
    tracker = JobTracker(source, timeout=5, **FAST)
    tracker.add("a")
    got = []
    async with tracker:
        async for job in tracker:
            got.append(job[0])
            if job[0] == "a":
                tracker.add("b")
                tracker.add("b")
                tracker.add("c")
                tracker.remove("c")
                tracker.close()
    assert got == ["a", "b"]


@pytest.mark.anyio
async def test_slow_consumer_does_not_stall_polling():
    """With a full buffer, polling goes on: jobs are detected while the consumer sleeps."""
    source = FakeJobs(spread(50, 0.05))
    tracker = JobTracker(source, timeout=5, options=attrs.evolve(FAST_OPTIONS, buffer=1))
    for job_id in source.finish_after:
        tracker.add(job_id)
    tracker.close()
    async with tracker:
        first = await tracker.__anext__()
        await anyio.sleep(0.3)
        assert tracker.stats.finished == 50  # all seen, although only one was taken
        rest = await collect(tracker)
    assert len(rest) + 1 == 50
    assert first[0] not in {job[0] for job in rest}


@pytest.mark.anyio
async def test_progress_callback_and_lag_stats():
    """The callback sees the counts, and detection lag is measured from the server's times."""
    seen: list[int] = []
    source = FakeJobs(spread(20, 0.1))
    iterator = track(
        source,
        list(source.finish_after),
        timeout=5,
        on_progress=lambda stats: seen.append(stats.finished),
        **FAST,
    )
    await collect(iterator)
    assert seen[-1] == 20
    stats = iterator.stats
    assert stats.lag_samples == 20
    assert stats.lag_p50 is not None
    assert stats.lag_p99 is not None
    assert 0 <= stats.lag_p50 <= stats.lag_p99 < 1.0
    assert TrackerStats().lag_p99 is None


@pytest.mark.anyio
@pytest.mark.parametrize("background", [False, True], ids=["plain", "async-with"])
async def test_taken_hook_runs_once_per_job_after_the_consumer_is_done_with_it(background):
    """`on_taken` runs once per job, only after the consumer asked for the next one."""
    calls: Counter[str] = Counter()
    done_with: set[str] = set()

    async def hook(job, deadline):
        assert job[0] in done_with  # never a job the consumer still holds
        calls[job[0]] += 1
        return job

    source = FakeJobs(spread(30, 0.1), listing=True)
    iterator = track(source, list(source.finish_after), timeout=5, on_taken=hook, **FAST)
    if background:
        async with iterator:
            async for job in iterator:
                await anyio.lowlevel.checkpoint()
                done_with.add(job[0])
    else:
        async for job in iterator:
            await anyio.lowlevel.checkpoint()
            done_with.add(job[0])
    assert set(calls.values()) == {1}
    assert len(calls) == 30
    assert iterator.stats.acknowledged == 30
    assert iterator.unacknowledged == ()


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"min_interval": "1"}, "min_interval"),
        ({"min_interval": 2, "max_interval": 1}, "max_interval"),
        ({"sweep_interval": float("nan")}, "sweep_interval"),
        ({"buffer": -1}, "buffer"),
    ],
    ids=["max_in_flight", "min_interval", "max_below_min", "sweep_interval", "buffer"],
)
def test_bad_options_are_refused(options, field):
    """A TrackingOptions setting out of range is a ValidationError naming it."""
    with pytest.raises(ValidationError) as caught:
        TrackingOptions(**options)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"timeout": 0}, "timeout"),
        ({"job_timeout": -1}, "job_timeout"),
        ({"options": {"min_interval": 1}}, "options"),
    ],
    ids=["timeout", "job_timeout", "options-not-options"],
)
def test_bad_settings_are_refused(settings, field):
    """A tracker setting out of range is a ValidationError naming it."""
    with pytest.raises(ValidationError) as caught:
        JobTracker(FakeJobs({}), **settings)
    assert caught.value.field == field


def test_options_are_frozen_keyword_only_and_readable():
    """TrackingOptions cannot be changed, takes keywords only, and prints its settings."""
    options = TrackingOptions(min_interval=1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        options.min_interval = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        TrackingOptions(1)  # type: ignore[misc]
    assert "min_interval=1" in repr(options)


def test_stats_are_frozen_snapshots():
    """A stats snapshot never changes, whatever the tracker does later."""
    tracker = JobTracker(FakeJobs({"a": 0.0}))
    before = tracker.stats
    tracker.add("a")
    assert before.tracked == 0
    assert tracker.stats.tracked == 1
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        before.tracked = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("job_ids", "field"),
    [(["a", ""], "job_ids[1]"), (["a", 3], "job_ids[1]"), ("abc", "job_ids")],
    ids=["empty", "not-a-string", "single-string"],
)
def test_bad_ids_are_refused_before_polling(job_ids, field):
    """An id that is not a non-empty string is refused, naming its position."""
    with pytest.raises(ValidationError) as caught:
        track(FakeJobs({}), job_ids)
    assert caught.value.field == field


def test_adding_after_close_is_refused():
    """Once closed, a tracker takes no new jobs."""
    tracker = JobTracker(FakeJobs({}))
    tracker.close()
    with pytest.raises(ValidationError):
        tracker.add("a")
