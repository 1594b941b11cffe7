"""The tracker's scheduling rules, driven by a made-up clock: no I/O, no sleeping, no event loop."""

from __future__ import annotations

import gc
import itertools
import random

import pytest

from asyncbulk._tracking import UNTRACKED, Scheduler
from asyncbulk._tracking._scheduler import Poll, Sweep


def make(**settings) -> Scheduler:
    options = {
        "min_interval": 1.0,
        "max_interval": 8.0,
        "sweep_interval": 0.5,
        "max_in_flight": 4,
        "rng": random.Random(7),
    }
    options.update(settings)
    return Scheduler(**options)


def run_due(sched: Scheduler, now: float, cost: int | None = None) -> list[Poll | Sweep]:
    """Every piece of work due at ``now`` (up to the in-flight bound)."""
    work = []
    while (item := sched.next_work(now, cost)) is not None:
        work.append(item)
    return work


def test_a_new_job_is_due_at_once_and_polled_once():
    """A job added is polled at once, and not again while that poll is under way."""
    sched = make()
    sched.add("a", 0.0, None)
    work = run_due(sched, 0.0)
    assert [w.job_id for w in work if isinstance(w, Poll)] == ["a"]
    assert sched.next_work(100.0, None) is None  # still under way
    assert sched.next_wake(0.0) is None


def test_interval_backs_off_without_progress_up_to_the_maximum():
    """Each poll without progress waits 1.35-2x longer than the one before, never past max."""
    sched = make()
    sched.add("a", 0.0, None)
    now, waits = 0.0, []
    for _ in range(12):
        (poll,) = run_due(sched, now)
        sched.work_done()
        sched.polled(poll.job, "same", now)
        due = sched.next_wake(now)
        assert due is not None
        waits.append(due - now)
        now = due
    assert waits[0] >= 1.5 * 0.9
    assert all(b >= a * 1.3 for a, b in itertools.pairwise(waits[:4]))
    assert max(waits) <= 8.0
    assert waits[-1] >= 8.0 * 0.9


def test_progress_brings_the_interval_back_to_the_minimum():
    """A job that shows progress is polled again after min_interval."""
    sched = make()
    sched.add("a", 0.0, None)
    now = 0.0
    for step in range(6):
        (poll,) = run_due(sched, now)
        sched.work_done()
        sched.polled(poll.job, 1 if step < 5 else 2, now)
        now = sched.next_wake(now) or 0.0
    (poll,) = run_due(sched, now)
    sched.work_done()
    sched.polled(poll.job, 3, now)
    assert (sched.next_wake(now) or 0.0) - now <= 1.0


def test_polls_under_way_are_bounded():
    """With ten jobs due and max_in_flight=3, three polls start; a fourth once one ends."""
    sched = make(max_in_flight=3)
    for i in range(10):
        sched.add(f"j{i}", 0.0, None)
    assert len(run_due(sched, 0.0)) == 3
    sched.work_done()
    assert len(run_due(sched, 0.0)) == 1


def test_sweep_replaces_polls_only_when_cheaper():
    """Many jobs due and a one-page listing: one sweep; one job: a poll."""
    many = make()
    for i in range(50):
        many.add(f"j{i}", 0.0, None)
    assert [type(w) for w in run_due(many, 0.0, cost=1)] == [Sweep]
    one = make()
    one.add("only", 0.0, None)
    assert [type(w) for w in run_due(one, 0.0, cost=1)] == [Poll]


def sweep_once(
    sched: Scheduler,
    now: float,
    listed: dict[str, object],
    *,
    complete=True,
    shifted=False,
    partial=False,
    ended: float | None = None,
) -> None:
    """One sweep started at ``now`` that lists ``listed`` and ends at ``ended`` (``now``)."""
    (work,) = run_due(sched, now, cost=1)
    assert isinstance(work, Sweep)
    for job_id, progress in listed.items():
        if sched.known(job_id) is UNTRACKED:
            continue
        if progress == sched.known(job_id):
            sched.seen(job_id, work.generation)
        else:
            sched.swept(job_id, progress, work.generation, now)
    sched.work_done()
    end = now if ended is None else ended
    if partial:
        sched.sweep_partial(end)
    else:
        sched.sweep_ended(work.generation, end, complete=complete, shifted=shifted)


def listing(count: int) -> dict[str, object]:
    """Jobs j0 to j(count - 1), listed as last seen."""
    return {f"j{i}": None for i in range(count)}


def swept_once(count: int) -> Scheduler:
    """A scheduler tracking ``count`` jobs that one complete sweep at 0 s listed."""
    sched = make()
    for i in range(count):
        sched.add(f"j{i}", 0.0, None)
    sweep_once(sched, 0.0, listing(count))
    return sched


def test_sweep_reschedules_only_what_changed():
    """Jobs the sweep saw unchanged keep their heap entries: no push, no reschedule."""
    sched = make()
    for i in range(100):
        sched.add(f"j{i}", 0.0, None)
    heap_before = len(sched._heap)
    sweep_once(sched, 0.0, {f"j{i}": None for i in range(100)})
    assert len(sched._heap) == heap_before
    # Due jobs wait for the next sweep instead of being polled one by one.
    assert sched.next_work(0.1, 1) is None
    assert sched.next_wake(0.1) == pytest.approx(0.5)


def test_job_missing_from_a_complete_sweep_gets_one_fetch():
    """A job the listing did not show is polled once; one added during the sweep is not."""
    sched = make()
    for i in range(10):
        sched.add(f"j{i}", 0.0, None)
    (work,) = run_due(sched, 0.0, cost=1)
    assert isinstance(work, Sweep)
    for i in range(9):  # j9 is not listed
        sched.seen(f"j{i}", work.generation)
    sched.add("late", 0.0, None)  # added while the sweep ran
    sched.work_done()
    sched.sweep_ended(work.generation, 0.0, complete=True)
    first = sched.next_work(0.0, 1)
    assert isinstance(first, Poll)
    assert first.job_id == "j9"


def test_a_job_missing_from_a_listing_that_moved_waits_for_the_next_sweep():
    """A listing that moved while read: a job it missed is fetched only if the next misses it."""
    sched = swept_once(10)
    # j8 and j9 slipped between two pages of this one: the next sweep is asked, not a fetch.
    sweep_once(sched, 0.5, listing(8), shifted=True)
    assert sched.next_work(0.5, 1) is None
    # The next, moving as well, lists j8: only j9, missed twice in a row, is fetched.
    sweep_once(sched, 1.0, listing(9), shifted=True)
    fetched = run_due(sched, 1.0, cost=1)
    assert [w.job_id for w in fetched if isinstance(w, Poll)] == ["j9"]


def test_a_sweep_that_left_pages_unread_fetches_nothing_and_the_next_sweeps_on_time():
    """Jobs on throttled pages are not fetched one by one; a later complete sweep judges them."""
    sched = swept_once(10)
    # j5-j9 sat on a page the server answered 429, twice running: nothing is fetched (a
    # listing that moved would fetch them the second time), and there is no back-off either.
    for now in (0.5, 1.0):
        sweep_once(sched, now, listing(5), partial=True)
        assert sched.next_work(now, 1) is None
        assert sched.next_wake(now) == pytest.approx(now + 0.5)
    # The next sweep reads them all but j9, which is then fetched once.
    sweep_once(sched, 1.5, listing(9))
    fetched = run_due(sched, 1.5, cost=1)
    assert [w.job_id for w in fetched if isinstance(w, Poll)] == ["j9"]


def test_a_first_sweep_that_moved_fetches_nothing():
    """With no complete sweep before it, a listing that moved proves no job missing."""
    sched = make()
    for i in range(5):
        sched.add(f"j{i}", 0.0, None)
    sweep_once(sched, 0.0, {"j0": None}, shifted=True)
    assert not any(isinstance(w, Poll) for w in run_due(sched, 0.0, cost=1))


def test_a_long_sweep_is_followed_by_a_gap_of_an_eighth_of_its_duration():
    """A sweep that took 8 s is followed by 1 s without one; the next starts then."""
    sched = make()
    for i in range(50):
        sched.add(f"j{i}", 0.0, None)
    sweep_once(sched, 0.0, {f"j{i}": None for i in range(50)}, ended=8.0)
    assert sched.next_work(8.9, 1) is None
    assert sched.next_wake(8.0) == pytest.approx(9.0)
    assert isinstance(sched.next_work(9.0, 1), Sweep)


def test_listed_marks_unchanged_jobs_seen_and_asks_only_for_moved_ones():
    """`listed` asks to build a tracked job only when its progress moved; others are seen."""
    sched = make()
    for job_id in ("new", "same", "moved"):
        sched.add(job_id, 0.0, None)
    sched.polled(sched.jobs["same"], "pending", 0.0)
    sched.polled(sched.jobs["moved"], "pending", 0.0)
    assert sched.listed(3, "new", "pending", "pending") is False  # as a new job starts
    assert sched.listed(3, "same", "pending", "pending") is False
    assert sched.listed(3, "moved", "done", "pending") is True
    assert sched.listed(3, "untracked", "done", "pending") is False
    assert sched.listed(3, "new", None, "pending") is True  # a status never seen before
    assert [sched.jobs[j].seen for j in ("new", "same", "moved")] == [3, 3, 0]


def test_listed_many_names_the_moved_jobs_of_a_page_and_marks_the_others_seen():
    """`listed_many` names tracked jobs that moved; unchanged ones are seen, others untouched."""
    sched = make()
    for job_id in ("new", "same", "moved", "fresh", "absent"):
        sched.add(job_id, 0.0, None)
    sched.polled(sched.jobs["same"], "pending", 0.0)
    sched.polled(sched.jobs["moved"], "pending", 0.0)
    ids = ["new", "same", "moved", "untracked", ["not", "hashable"], 7, "fresh"]
    progress = ["pending", "pending", "done", "done", "done", "done", None]
    assert sched.listed_many(5, ids, progress, "pending") == [2, 6]
    seen = {job_id: job.seen for job_id, job in sched.jobs.items()}
    assert seen == {"new": 5, "same": 5, "moved": 0, "fresh": 0, "absent": 0}
    with pytest.raises(ValueError, match="1 ids but 0 progress"):
        sched.listed_many(6, ["new"], [], "pending")
    assert sched.jobs["new"].seen == 5  # nothing marked by a page refused


def _churn(rng: random.Random, pool: list[str], listing: list[object], scheds) -> None:
    """Between sweeps: jobs come and go (a gone id may come back as new), the listing moves."""
    for job_id in rng.sample(pool, 6):
        leave = job_id in scheds[-1].jobs and rng.random() < 0.5
        for sched in scheds:
            if leave:
                sched.remove(job_id)
            else:
                sched.add(job_id, 0.0, None)
    if rng.random() < 0.3:
        listing.pop(rng.randrange(len(listing)))
        listing.insert(rng.randrange(len(listing)), rng.choice([*pool, "other", 7]))


def test_listed_many_with_page_numbers_answers_as_without_them():
    """Pages read by number (jobs found by position) give what lookups give, whatever happens."""
    rng = random.Random(14)
    hinted, plain = make(), make()
    pool = [f"j{i}" for i in range(60)]
    listing: list[object] = list(pool)
    for generation in range(1, 40):
        for sched in (hinted, plain):
            sched._generation = generation
        _churn(rng, pool, listing, (hinted, plain))
        progress = [rng.choice(["pending", "pending", "pending", "half", None]) for _ in listing]
        ids: list[object] = list(listing)
        if rng.random() < 0.2:
            ids[rng.randrange(len(ids))] = ["not", "hashable"]
        for start in range(0, len(ids), 10):
            page = start // 10 + 1
            got = hinted.listed_many(
                generation,
                ids[start : start + 10],
                progress[start : start + 10],
                "pending",
                page=page,
            )
            want = plain.listed_many(
                generation, ids[start : start + 10], progress[start : start + 10], "pending"
            )
            assert got == want
            for index in got:  # the caller builds the moved jobs and reports them
                job_id = ids[start + index]
                for sched in (hinted, plain):
                    sched.swept(job_id, progress[start + index], generation, 0.0)  # type: ignore[arg-type]
        seen = [{j: (job.seen, job.progress) for j, job in s.jobs.items()} for s in (hinted, plain)]
        assert seen[0] == seen[1]


def test_pages_past_the_end_of_a_listing_read_whole_are_forgotten():
    """After a complete sweep of a shorter listing, no page past its end still holds its jobs."""
    sched = make()
    for i in range(30):
        sched.add(f"j{i}", 0.0, None)
    for page in (1, 2, 3):
        ids = [f"j{i}" for i in range(10 * page - 10, 10 * page)]
        sched.listed_many(1, ids, ["pending"] * 10, "pending", page=page)
    sched.sweep_ended(1, 0.0, complete=True)
    sched.listed_many(2, [f"j{i}" for i in range(10)], ["pending"] * 10, "pending", page=1)
    sched.sweep_ended(2, 0.0, complete=True)
    assert sorted(sched._listed_at) == [1]


def test_a_listing_that_cannot_be_read_whole_is_never_swept_again():
    """After an incomplete sweep, no job counts as missing and every job is polled instead."""
    sched = make()
    for i in range(20):
        sched.add(f"j{i}", 0.0, None)
    sweep_once(sched, 0.0, {"j0": None}, complete=False)
    assert sched.no_sweep
    work = run_due(sched, 10.0, cost=1)
    assert all(isinstance(w, Poll) for w in work)
    assert len(work) == 4


def test_a_failed_sweep_backs_off_and_polls_meanwhile():
    """After a failed sweep the listing waits (2x sweep_interval) and due jobs are polled."""
    sched = make()
    for i in range(20):
        sched.add(f"j{i}", 0.0, None)
    assert [type(w) for w in run_due(sched, 0.0, cost=1)] == [Sweep]
    sched.work_done()
    sched.sweep_failed(0.0)
    assert all(isinstance(w, Poll) for w in run_due(sched, 0.5, cost=1))
    for _ in range(4):
        sched.work_done()
    assert all(isinstance(w, Poll) for w in run_due(sched, 0.9, cost=1))


def test_after_a_failed_sweep_jobs_seen_lately_are_not_polled_at_once():
    """Jobs the last complete sweep saw wait out their interval from that sighting."""
    sched = make(min_interval=1.0, max_interval=8.0)
    for i in range(20):
        sched.add(f"j{i}", 0.0, None)
    sweep_once(sched, 0.0, {f"j{i}": None for i in range(20)})
    (work,) = run_due(sched, 0.6, cost=1)
    assert isinstance(work, Sweep)
    sched.work_done()
    sched.sweep_failed(0.6)
    assert run_due(sched, 0.7, cost=1) == []  # seen at 0.0: next due after 1.35 s or so
    assert sched.next_wake(0.7) >= 1.35
    # By then the listing is due again: one sweep instead of twenty polls.
    assert [type(w) for w in run_due(sched, 2.5, cost=1)] == [Sweep]


def test_overall_deadline_stops_all_new_work_and_is_the_next_wake():
    """The deadline is a wake-up time; once passed, nothing new starts."""
    sched = make()
    sched.deadline = 3.0
    sched.add("a", 0.0, None)
    (poll,) = run_due(sched, 0.0)
    sched.work_done()
    sched.polled(poll.job, None, 0.0)
    sched.add("b", 2.0, None)
    assert sched.next_wake(2.5) is not None
    assert not sched.check_deadline(2.9)
    assert sched.check_deadline(3.0)
    assert not sched.check_deadline(3.1)  # said once
    assert sched.next_work(3.0, None) is None
    assert sched.next_wake(3.0) is None


def test_a_job_deadline_expires_that_job_only():
    """A job past its own deadline is dropped; the others stay tracked."""
    sched = make()
    sched.add("short", 0.0, 1.0)
    sched.add("long", 0.0, None)
    assert sched.next_wake(0.5) == pytest.approx(0.0)  # both due, and short's deadline next
    assert sched.expire(0.5) == []
    assert sched.expire(1.0) == ["short"]
    assert set(sched.jobs) == {"long"}


def test_jitter_is_reproducible_with_a_seeded_rng():
    """Two schedulers with the same seed make the same decisions at the same times."""
    times = []
    for _ in range(2):
        sched = make(rng=random.Random(3))
        sched.add("a", 0.0, None)
        (poll,) = run_due(sched, 0.0)
        sched.work_done()
        sched.polled(poll.job, None, 0.0)
        times.append(sched.next_wake(0.0))
    assert times[0] == times[1]


def test_scheduling_creates_no_reference_cycles():
    """Adding, polling, sweeping and finishing thousands of jobs leaves no garbage for the GC."""
    gc.collect()
    gc.disable()
    try:
        sched = make(max_in_flight=64)
        now = 0.0
        for i in range(2000):
            sched.add(f"j{i}", now, 100.0)
        for _ in range(20):
            now += 1.0
            for work in run_due(sched, now, cost=1):
                sched.work_done()
                if isinstance(work, Sweep):
                    for i in range(0, 2000, 2):
                        sched.seen(f"j{i}", work.generation)
                    sched.sweep_ended(work.generation, now, complete=True)
                elif int(work.job_id[1:]) % 3 == 0:
                    sched.finish(work.job_id)
                else:
                    sched.polled(work.job, now, now)
        sched.expire(1000.0)
        del sched
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_finished_jobs_leave_the_heaps_in_bounded_time_and_the_rest_still_run():
    """Jobs gone leave at most a bound of stale heap entries; the rest are polled and expire."""
    sched = make(max_in_flight=100)
    ids = [f"j{i}" for i in range(6000)]
    sched.add_many(ids, 0.0, 50.0)
    kept = ids[::600]
    for job_id in ids:
        if job_id not in kept:
            assert sched.finish(job_id)
    most = 2 * len(sched.jobs) + 1024
    assert len(sched._heap) <= most
    assert len(sched._deadlines) <= most
    polled = [w.job_id for w in run_due(sched, 0.0, None)]
    assert sorted(polled) == sorted(kept)
    for poll in polled[:5]:
        sched.work_done()
        sched.polled(sched.jobs[poll], "running", 0.0)
    assert sorted(sched.expire(50.0)) == sorted(kept)


def test_a_sweep_not_worth_it_is_asked_again_an_eighth_of_the_interval_later():
    """After the due jobs fell short of a sweep, they are counted again 1/8 interval later."""
    sched = make(max_in_flight=1, sweep_interval=0.8, min_interval=1.0)
    sched.add_many([f"late{i}" for i in range(5)], 0.85, None)
    sched.add_many(["b1", "b2", "b3"], 0.0, None)
    first = sched.next_work(0.0, 4)  # due by 0.8: the three b jobs, fewer than a sweep costs
    assert isinstance(first, Poll)
    sched.work_done()
    sched.polled(first.job, "running", 0.02)
    # At 0.06 the five late jobs fall within the window, but the count waits until 0.1...
    second = sched.next_work(0.06, 4)
    assert isinstance(second, Poll)
    sched.work_done()
    sched.polled(second.job, "running", 0.08)
    # ...and then finds six due by 0.92: more than a sweep costs.
    assert isinstance(sched.next_work(0.12, 4), Sweep)


def test_new_jobs_are_counted_for_a_sweep_at_once():
    """Jobs added right after a sweep was found not worth it make one start at once."""
    sched = make(max_in_flight=100, sweep_interval=0.8)
    sched.add_many([f"a{i}" for i in range(3)], 0.0, None)
    assert not any(isinstance(w, Sweep) for w in run_due(sched, 0.0, cost=4))
    sched.add_many([f"b{i}" for i in range(5)], 0.01, None)
    assert isinstance(sched.next_work(0.01, 4), Sweep)
