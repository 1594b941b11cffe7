"""The tracker's rules, decided without I/O: which job to poll, when to sweep, when to look again.

`Scheduler` is told the time by its caller (``now``, in any monotonic seconds) and answers with
what to do (`Poll` one job, `Sweep` the listing, or nothing until `next_wake`); it never sleeps,
awaits or reads a clock, so every rule is tested synchronously with a made-up clock. The engine
(`asyncbulk._tracking._engine.JobTracker`) carries the answers out and reports each outcome back.

One heap ordered by each job's next poll time serves every job: a tracked job costs one small
record and one heap entry (a stale entry is skipped when popped, never searched for). A job's
interval starts at ``min_interval``, grows 1.5-2x (with jitter, so jobs added together drift
apart) up to ``max_interval``, and drops back to ``min_interval`` when the job shows progress.
Where the vendor lists many jobs in one request, a sweep of the listing replaces the polls due
within ``sweep_interval`` whenever it costs fewer requests than they would; a sweep reschedules
only the jobs it saw change, and a job missing from a complete listing gets one fetch (from two
in a row when the listing moved while it was read: a job can slip between two of its pages).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Sequence

__all__ = ["UNTRACKED", "Poll", "Scheduler", "Sweep"]

_UNSEEN: Final[Any] = object()
#: What `Scheduler.known` says of a job it does not track.
UNTRACKED: Final[Any] = object()
# The heap is rebuilt without its stale entries once they outnumber the jobs by this many.
_STALE_SLACK: Final = 1024


class Job:
    """One tracked job: a few slots. ``token`` ties it to its live heap entry (-1 once gone)."""

    __slots__ = ("deadline", "due", "id", "interval", "polling", "progress", "seen", "token")

    def __init__(self, job_id: str, interval: float, deadline: float | None, seen: int) -> None:
        """A job not yet polled."""
        self.id = job_id
        self.interval = interval
        self.deadline = deadline
        self.progress: Any = _UNSEEN
        self.polling = False
        self.token = 0
        self.due = 0.0
        self.seen = seen


@attrs.frozen
class Poll:
    """Fetch one job on its own, then report `Scheduler.polled` (or a failure)."""

    job: Job

    @property
    def job_id(self) -> str:
        """The job to fetch."""
        return self.job.id


@attrs.frozen
class Sweep:
    """Read the listing; report each tracked job seen, then `Scheduler.sweep_ended`."""

    generation: int


class Scheduler:
    """Which job to poll and when to sweep, for any number of jobs, given the time.

    Args:
        min_interval: the first and shortest wait between two polls of a job.
        max_interval: the longest wait between two polls of a job.
        sweep_interval: the least time between two sweeps.
        max_in_flight: polls and sweeps under way at once.
        rng: the jitter's source; seed one for reproducible tests.
    """

    def __init__(
        self,
        *,
        min_interval: float,
        max_interval: float,
        sweep_interval: float,
        max_in_flight: int,
        rng: random.Random | None = None,
    ) -> None:
        """Nothing tracked yet, no deadline."""
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.sweep_interval = sweep_interval
        self.max_in_flight = max_in_flight
        self._rng = rng or random.Random()
        self.jobs: dict[str, Job] = {}
        self._heap: list[tuple[float, int, Job]] = []
        self._deadlines: list[tuple[float, int, Job]] = []
        self._tokens = 0
        self._fetch_now: deque[Job] = deque()
        #: Polls and sweeps under way (reported back with `work_done`).
        self.in_flight = 0
        #: When tracking as a whole ends; None for never.
        self.deadline: float | None = None
        self.timed_out = False
        #: No more jobs will be added.
        self.closed = False
        self.sweeping = False
        self._sweep_mode = False
        self._next_sweep_at = 0.0
        # After the due jobs did not make a sweep worth it: not asked again before this.
        self._sweep_checked_until = -math.inf
        self._sweep_failures = 0
        self._sweep_started = 0.0
        self.no_sweep = False
        self._generation = 0
        #: The last complete sweep: its generation, and when it started.
        self._swept_generation = -1
        self._swept_at = 0.0
        #: The jobs each listing page showed last, by position (see `listed_many`); the
        #: highest page read since the last complete sweep.
        self._listed_at: dict[int, list[Job | None]] = {}
        self._listed_top = 0

    @property
    def done(self) -> bool:
        """Closed to new jobs, every job gone, nothing under way: tracking is over."""
        return self.closed and not self.jobs and not self.in_flight

    # -- jobs ---------------------------------------------------------------------------------

    def add(self, job_id: str, now: float, timeout: float | None) -> bool:
        """Track a job, due at once; False when it is tracked already."""
        if job_id in self.jobs:
            return False
        deadline = None if timeout is None else now + timeout
        job = Job(job_id, self.min_interval, deadline, self._generation)
        self.jobs[job_id] = job
        self._sweep_checked_until = -math.inf
        self._schedule_at(job, now)
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, job.token, job))
        return True

    def add_many(self, job_ids: list[str], now: float, timeout: float | None) -> list[str]:
        """Track many jobs, all due at once; the ids not tracked before, in order.

        The same as `add` for each, at a fraction of the cost: jobs added together share
        their due time, so their heap entries are appended in order (a sorted list is a
        heap) and the heap is rebuilt once, not pushed into a million times.
        """
        jobs, interval, generation = self.jobs, self.min_interval, self._generation
        deadline = None if timeout is None else now + timeout
        token = self._tokens
        added: list[str] = []
        entries: list[tuple[float, int, Job]] = []
        for job_id in job_ids:
            if job_id in jobs:
                continue
            job = Job(job_id, interval, deadline, generation)
            token += 1
            job.token = token
            job.due = now
            jobs[job_id] = job
            entries.append((now, token, job))
            added.append(job_id)
        self._tokens = token
        self._sweep_checked_until = -math.inf
        _extend_heap(self._heap, entries)
        if deadline is not None:
            _extend_heap(self._deadlines, [(deadline, t, job) for _, t, job in entries])
        return added

    def remove(self, job_id: str) -> bool:
        """Stop tracking a job; False when it was not tracked."""
        job = self.jobs.pop(job_id, None)
        if job is None:
            return False
        job.token = -1
        self._tidy()
        return True

    def expire(self, now: float) -> list[str]:
        """Drop the jobs whose own deadline has passed; their ids."""
        expired: list[str] = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, job = heapq.heappop(deadlines)
            if self.jobs.get(job.id) is job:
                self.remove(job.id)
                expired.append(job.id)
        return expired

    def check_deadline(self, now: float) -> bool:
        """Whether the overall deadline passed just now (True once; `timed_out` from then on)."""
        if self.timed_out or self.deadline is None or now < self.deadline:
            return False
        self.timed_out = True
        return True

    # -- deciding -----------------------------------------------------------------------------

    def next_work(self, now: float, sweep_cost: int | None) -> Poll | Sweep | None:
        """The next piece of work due now, counted as under way; None when nothing is.

        Args:
            now: the time.
            sweep_cost: requests a sweep would take now; None when there is no listing.
        """
        if self.timed_out or self.in_flight >= self.max_in_flight:
            return None
        while self._fetch_now:
            job = self._fetch_now.popleft()
            if self.jobs.get(job.id) is job:
                self.in_flight += 1
                return Poll(job)
        due = self._peek()
        if due is None or due > now:
            return None
        if self._should_sweep(now, sweep_cost):
            self.sweeping = True
            self._next_sweep_at = now + self.sweep_interval
            self._sweep_started = now
            self._generation += 1
            self.in_flight += 1
            return Sweep(self._generation)
        if self._sweep_mode and (self.sweeping or now < self._next_sweep_at):
            return None  # the coming sweep covers the jobs due now
        return self._next_poll(now)

    def _next_poll(self, now: float) -> Poll | None:
        """Pop the job due first and poll it, unless a recent sweep saw it."""
        while True:
            _, _, job = heapq.heappop(self._heap)
            if not self._defer(job, now):
                job.polling = True
                self.in_flight += 1
                return Poll(job)
            due = self._peek()
            if due is None or due > now:
                return None

    def _defer(self, job: Job, now: float) -> bool:
        """Reschedule, instead of polling, a job the last complete sweep saw lately.

        A sweep leaves the jobs it saw unchanged where they are in the heap (no push per
        job); when polls take over (a sweep failed, few jobs left) such a job is given the
        interval it would have had from that sighting, here, once, as it comes up.
        """
        since = self._swept_at
        if job.seen != self._swept_generation or now - since >= job.interval:
            return False
        interval = min(self.max_interval, job.interval * self._rng.uniform(1.5, 2.0))
        due = since + interval * self._rng.uniform(0.9, 1.0)
        if due <= now:
            return False
        job.interval = interval
        self._schedule_at(job, due)
        return True

    def next_wake(self, now: float) -> float | None:
        """When to look again if no outcome comes sooner; None for never."""
        times: list[float] = []
        if self.deadline is not None and not self.timed_out:
            times.append(self.deadline)
        if self._deadlines:
            times.append(self._deadlines[0][0])
        if self.in_flight < self.max_in_flight and not self.timed_out:
            due = self._peek()
            if due is not None and due <= now and self._sweep_mode:
                # Due jobs wait for the next sweep; one under way reports when it ends.
                if not self.sweeping:
                    times.append(self._next_sweep_at)
            elif due is not None:
                times.append(due)
        return min(times) if times else None

    def _should_sweep(self, now: float, cost: int | None) -> bool:
        """Whether reading the listing now costs fewer requests than the polls it replaces.

        When it does not, the question waits an eighth of ``sweep_interval`` (or for new
        jobs): while a few jobs are polled one by one, every poll started would ask it again,
        and counting the due jobs costs up to ``cost`` steps each time.
        """
        if self.no_sweep or self.sweeping or now < self._next_sweep_at:
            return False
        if cost is None:
            self.no_sweep = True
            return False
        if now < self._sweep_checked_until:
            return False
        self._sweep_mode = self._count_due(now + self.sweep_interval, cost) > cost
        if not self._sweep_mode:
            self._sweep_checked_until = now + self.sweep_interval / 8
        return self._sweep_mode

    # -- outcomes -----------------------------------------------------------------------------

    def work_done(self) -> None:
        """A poll or sweep ended, whatever its outcome."""
        self.in_flight -= 1

    def polled(self, job: Job, progress: Hashable | None, now: float) -> None:
        """A poll found the job still running: poll it again later."""
        if self.jobs.get(job.id) is job:
            self._reschedule(job, progressed=self._note_progress(job, progress), now=now)

    def finish(self, job_id: str) -> bool:
        """The job finished: stop tracking it; False when it was not tracked (any more)."""
        return self.remove(job_id)

    def lose(self, job: Job) -> bool:
        """The server says the job does not exist: stop tracking it; False when already gone."""
        return self.jobs.get(job.id) is job and self.remove(job.id)

    def poll_failed(self, job: Job, now: float) -> None:
        """The poll failed: try later, at a longer interval."""
        if self.jobs.get(job.id) is job:
            self._reschedule(job, progressed=False, now=now)

    def poll_cancelled(self, job: Job, now: float) -> None:
        """The poll was stopped before it told anything: poll again next time."""
        if self.jobs.get(job.id) is job:
            self._schedule_at(job, now)

    # -- sweeps -------------------------------------------------------------------------------

    def known(self, job_id: str) -> Any:
        """The last progress seen of a job (None before any), or `UNTRACKED`."""
        job = self.jobs.get(job_id)
        if job is None:
            return UNTRACKED
        return None if job.progress is _UNSEEN else job.progress

    def listed(self, generation: int, job_id: str, progress: Any, initial: Any = None) -> bool:
        """The sweep ``generation`` listed the job with ``progress``: whether it must be built.

        True for a tracked job whose progress moved (the caller builds it and reports it
        through `swept`); a job listed as it was last seen, or as ``initial`` (the progress
        a new job starts with) before it was seen at all, is marked seen, and False. A page
        of one for `listed_many`.
        """
        return bool(self.listed_many(generation, (job_id,), (progress,), initial))

    def listed_many(
        self,
        generation: int,
        ids: Sequence[object],
        progress: Sequence[object],
        initial: Any = None,
        *,
        page: int | None = None,
    ) -> list[int]:
        """A page of the sweep ``generation``: the indexes of the jobs that must be built.

        For each pair of ``ids[i]`` and ``progress[i]``: a tracked job whose progress moved
        is named (the caller builds it and reports it through `swept`); a job listed as it was
        last seen, or as ``initial`` (the progress a new job starts with) before it was seen at
        all, is marked seen. One loop for the page: a thousand jobs cost a comparison each and
        no call. An id that is not a string (a list, say, from a server gone wrong) is skipped:
        it names no job.

        ``page``, the page's number in the listing, lets the next sweep find the jobs it lists
        where this one found them: a listing that did not move since is read without a
        dictionary lookup per job (in a dictionary of a million jobs, each one a cache miss
        that costs more than the rest of the loop). What is found there is only ever taken
        for a job still tracked under the same id; anything else is looked up.
        """
        if len(ids) != len(progress):
            raise ValueError(f"{len(ids)} ids but {len(progress)} progress values")
        changed: list[int] = []
        # Any hashable may be looked up; only a string id is taken for a job's.
        find: Callable[[object], Job | None] = self.jobs.get  # type: ignore[assignment]
        end = len(ids)
        hint = None if page is None else self._listed_at.get(page)
        if hint is None or len(hint) != end:
            hint = [None] * end
        found: list[Job | None] = [None] * end
        index = 0
        for job_id, now, hinted in zip(ids, progress, hint, strict=True):
            if hinted is None or hinted.token < 0 or hinted.id != job_id or type(job_id) is not str:
                job = _lookup(find, job_id)
                if job is None:
                    index += 1
                    continue
            else:
                job = hinted
            found[index] = job
            last = job.progress
            if last is _UNSEEN:
                if now == initial:
                    job.seen = generation
                else:
                    changed.append(index)
            elif now == last:
                job.seen = generation
            else:
                changed.append(index)
            index += 1
        if page is not None:
            self._listed_at[page] = found
            self._listed_top = max(self._listed_top, page)
        return changed

    def seen(self, job_id: str, generation: int) -> None:
        """The sweep ``generation`` listed the job, unchanged: nothing to reschedule."""
        job = self.jobs.get(job_id)
        if job is not None:
            job.seen = generation

    def swept(self, job_id: str, progress: Hashable | None, generation: int, now: float) -> None:
        """The sweep listed the job still running but changed: poll it soon again."""
        job = self.jobs.get(job_id)
        if job is None:
            return
        job.seen = generation
        if not job.polling and self._note_progress(job, progress):
            self._reschedule(job, progressed=True, now=now)

    def sweep_ended(
        self, generation: int, now: float, *, complete: bool, shifted: bool = False
    ) -> None:
        """The sweep read the whole listing (``complete``), or learnt it cannot be relied on.

        After a complete sweep, each job tracked before it started that it did not list gets
        one fetch (acknowledged elsewhere?). When the listing moved while it was read
        (``shifted``: jobs left it or joined it between two pages), a job may have slipped
        from a page not yet read to one already read: only a job the previous complete
        sweep did not list either is fetched; the next sweep finds the others. A listing that
        cannot be read whole (it ignores its ``page`` parameter, say) is never swept again:
        polls cost least then.
        """
        self._end_sweep(now)
        self._sweep_failures = 0
        if not complete:
            self.no_listing()
            return
        missed_by = self._swept_generation if shifted else generation
        self._swept_generation = generation
        # Pages past the end of a listing read whole are gone: forget whom they showed.
        top, listed_at = self._listed_top, self._listed_at
        for number in [number for number in listed_at if number > top]:
            del listed_at[number]
        self._listed_top = 0
        self._swept_at = self._sweep_started
        for job in self.jobs.values():
            if job.seen < missed_by and not job.polling:
                job.polling = True
                self._fetch_now.append(job)

    def sweep_partial(self, now: float) -> None:
        """The sweep left some pages unread (throttled): the next, on time, reads them.

        What it listed counts; what it did not list is not taken for gone (nothing is
        fetched for it) and the last complete sweep stays the reference.
        """
        self._end_sweep(now)
        self._sweep_failures = 0

    def sweep_failed(self, now: float) -> None:
        """The sweep failed: back off the listing and poll the jobs one by one meanwhile."""
        self._end_sweep(now)
        self._sweep_failures += 1
        wait = min(self.max_interval, self.sweep_interval * 2**self._sweep_failures)
        self._next_sweep_at = now + wait
        self._sweep_mode = False

    def sweep_cancelled(self, now: float) -> None:
        """The sweep was stopped before it ended."""
        self._end_sweep(now)

    def no_listing(self) -> None:
        """The source has no usable listing: poll every job on its own from now on."""
        self._listed_at.clear()
        self.sweeping = False
        self.no_sweep = True
        self._sweep_mode = False

    def _end_sweep(self, now: float) -> None:
        self.sweeping = False
        # A listing that takes long to read (a thousand pages) is read at most eight ninths of
        # the time, so sweeping never takes all the CPU or the connection pool; a longer gap
        # adds to the detection lag of every job (a fourth of a 5-second sweep: 1.2 s).
        self._next_sweep_at = max(self._next_sweep_at, now + (now - self._sweep_started) / 8)

    # -- the heap -----------------------------------------------------------------------------

    def _schedule_at(self, job: Job, when: float) -> None:
        self._tokens += 1
        job.token = self._tokens
        job.due = when
        job.polling = False
        heapq.heappush(self._heap, (when, job.token, job))
        self._tidy()

    def _tidy(self) -> None:
        """Rebuild the heaps without their stale entries once those outnumber the jobs.

        A job rescheduled or gone leaves its old entry behind, to be skipped when it comes
        up; a sweep reschedules nothing it saw unchanged, so a million finished jobs would
        otherwise stay in the heap, and counting the due jobs would walk them all. Rebuilding
        once the stale entries are as many as the jobs costs O(1) per entry left behind.
        """
        most = 2 * len(self.jobs) + _STALE_SLACK
        heap = self._heap
        if len(heap) > most:
            heap[:] = [entry for entry in heap if entry[1] == entry[2].token]
            heapq.heapify(heap)
        deadlines = self._deadlines
        if len(deadlines) > most:
            # A job's deadline stays when it is rescheduled: only the jobs gone (-1) leave.
            deadlines[:] = [entry for entry in deadlines if entry[2].token != -1]
            heapq.heapify(deadlines)

    def _peek(self) -> float | None:
        """The time the next job falls due, dropping entries that no longer count."""
        heap = self._heap
        while heap:
            due, token, job = heap[0]
            if token == job.token and not job.polling:
                return due
            heapq.heappop(heap)
        return None

    def _count_due(self, limit: float, cap: int) -> int:
        """Jobs due by ``limit``, counting no further than ``cap + 1``: O(answer), not O(heap)."""
        heap, count, stack = self._heap, 0, [0]
        size = len(heap)
        while stack:
            i = stack.pop()
            if i >= size:
                continue
            due, token, job = heap[i]
            if due > limit:
                continue  # the heap property: nothing below is due sooner
            if token == job.token and not job.polling:
                count += 1
                if count > cap:
                    return count
            stack.append(2 * i + 1)
            stack.append(2 * i + 2)
        return count

    def _note_progress(self, job: Job, progress: Hashable | None) -> bool:
        progressed = (
            job.progress is not _UNSEEN and progress is not None and progress != job.progress
        )
        job.progress = progress
        return progressed

    def _reschedule(self, job: Job, *, progressed: bool, now: float) -> None:
        if progressed:
            job.interval = self.min_interval
        else:
            job.interval = min(self.max_interval, job.interval * self._rng.uniform(1.5, 2.0))
        self._schedule_at(job, now + job.interval * self._rng.uniform(0.9, 1.0))


def _lookup(find: Callable[[object], Job | None], job_id: object) -> Job | None:
    """The tracked job of a listed id; None for another, or one that is not a string."""
    if type(job_id) is not str:
        return None  # an id that is a list, say, from a server gone wrong, names no job
    return find(job_id)


def _extend_heap(heap: list[tuple[float, int, Job]], entries: list[tuple[float, int, Job]]) -> None:
    """Add entries sorted by (time, token) to a heap: appended to an empty one, else heapified."""
    rebuild = bool(heap)
    heap.extend(entries)
    if rebuild:
        heapq.heapify(heap)
