"""Follow any number of jobs to completion at once, detecting each soon after, with few requests.

One scheduler serves every tracked job: a heap ordered by each job's next poll time, and a
bounded pool of polls in flight. A tracked job costs one small record and one heap entry, never
an asyncio task, coroutine or timer of its own, so 100,000 jobs fit in a few tens of megabytes.

How often a job is polled adapts: its interval starts at ``min_interval``, grows by 1.5-2x (with
jitter, so jobs added together drift apart) up to ``max_interval``, and drops back to
``min_interval`` when the job shows progress. Where the vendor lists many jobs in one request
(`JobSource.sweep`), the tracker reads the listing instead of polling each job whenever that costs
fewer requests than the polls it replaces; a job missing from the listing gets one individual
fetch to learn its fate. A 429 pauses every request to the host inside the session, so a failed
poll here only reschedules its job with a longer interval: no retry storms.

Two ways to iterate, both yielding each finished job exactly once, in the order detected:

- ``async with tracker:`` then ``async for job in tracker:`` polls in the background of the
  ``async with`` block and delivers through a bounded anyio memory object stream: a slow consumer
  holds back delivery while polling of the other jobs goes on.
- a plain ``async for job in tracker:`` (or `track`) polls only inside each ``__anext__`` call and
  stops before returning, so breaking out of the loop, or cancelling around it, leaves nothing
  running and nothing to close.

Deadlines: a job whose own deadline passes is dropped, the others are still delivered, and the
iteration then ends with `JobTimeoutError` naming the expired ids. When the overall deadline
passes, polling stops, every job already detected is still delivered, and then `JobTimeoutError`
names every job left unfinished. A job the server says does not exist (404) is dropped too and
the iteration ends with that `NotFoundError` after the others are delivered: it never hangs.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import time
from array import array
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, Self, TypeVar

import anyio
import anyio.lowlevel
import attrs

from asyncbulk._exceptions import (
    AsyncBulkError,
    AuthenticationError,
    ClientClosedError,
    JobTimeoutError,
    NotFoundError,
    ValidationError,
)
from asyncbulk._session import RequestStats

if TYPE_CHECKING:
    from collections.abc import (
        Awaitable,
        Callable,
        Collection,
        Coroutine,
        Hashable,
        Iterable,
        Mapping,
    )
    from types import TracebackType

    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["JobSource", "JobTracker", "TrackIterator", "TrackerStats", "track", "wait_for"]

logger: Final = logging.getLogger("asyncbulk")

T = TypeVar("T")

#: Errors after which polling cannot usefully go on: they end the iteration at once.
_FATAL: Final = (AuthenticationError, ClientClosedError, ValidationError)
#: How long a plain ``async for`` waits for polls in flight before cancelling them and returning.
_GRACE: Final = 1.0
#: Least time between two calls of the ``on_progress`` callback.
_PROGRESS_EVERY: Final = 0.2
_UNSEEN: Final[Any] = object()


class JobSource(Protocol[T]):
    """What a vendor client gives the tracker: how to read one job, or many at once.

    Attributes:
        kind: what a job is called, for messages ("Zefort task").
    """

    kind: str

    async def fetch(self, job_id: str) -> T:
        """One request for one job's current state."""
        ...

    def is_finished(self, job: T) -> bool:
        """Whether the job reached a terminal state, success or failure."""
        ...

    def is_failed(self, job: T) -> bool:
        """Whether the job finished in failure."""
        ...

    def progress(self, job: T) -> Hashable | None:
        """A value that changes when the job makes progress; None when unknown."""
        ...

    def finished_at(self, job: T) -> float | None:
        """When the server says the job finished (epoch seconds); None when unknown."""
        ...

    async def sweep(self, job_ids: Collection[str]) -> Mapping[str, T] | None:
        """The states of the jobs among ``job_ids`` that a listing shows; None without a listing."""
        ...

    def sweep_cost(self) -> int | None:
        """How many requests a sweep would take now; None when the vendor has no listing."""
        ...


@attrs.define
class TrackerStats:
    """What a tracker has done so far, for progress displays.

    Attributes:
        tracked: jobs being followed now (neither finished, expired nor lost).
        finished: jobs detected finished, failures included.
        failed: jobs detected finished in failure.
        expired: jobs dropped when their own deadline passed.
        lost: jobs the server said do not exist.
        in_flight: polls, sweeps and hooks running now.
        polls: individual fetches made.
        sweeps: listings read.
        poll_errors: polls and sweeps that failed and were rescheduled.
        requests: requests the client sent while the tracker ran (every page and retry counted),
            when the source exposes its client's `RequestStats`; otherwise polls + sweeps.
        rate_limited: 429 answers met while the tracker ran (same source as `requests`).
    """

    tracked: int = 0
    finished: int = 0
    failed: int = 0
    expired: int = 0
    lost: int = 0
    in_flight: int = 0
    polls: int = 0
    sweeps: int = 0
    poll_errors: int = 0
    requests: int = 0
    rate_limited: int = 0
    _lags: array[float] = attrs.field(init=False, factory=lambda: array("d"), repr=False)
    _sorted: list[float] = attrs.field(init=False, factory=list, repr=False)

    @property
    def lag_p50(self) -> float | None:
        """Median seconds between a job finishing on the server and the tracker seeing it."""
        return self._quantile(0.5)

    @property
    def lag_p99(self) -> float | None:
        """99th percentile of the detection lag, in seconds; None before any sample."""
        return self._quantile(0.99)

    @property
    def lag_samples(self) -> int:
        """How many finished jobs said when they finished."""
        return len(self._lags)

    def _quantile(self, q: float) -> float | None:
        if not self._lags:
            return None
        if len(self._sorted) != len(self._lags):
            self._sorted = sorted(self._lags)
        return self._sorted[min(len(self._sorted) - 1, math.floor(q * len(self._sorted)))]


class _Job:
    """One tracked job: a few slots, no task. ``token`` ties it to its live heap entry."""

    __slots__ = ("deadline", "due", "id", "interval", "polling", "progress", "token")

    def __init__(self, job_id: str, interval: float, deadline: float | None) -> None:
        self.id = job_id
        self.interval = interval
        self.deadline = deadline
        self.progress: Any = _UNSEEN
        self.polling = False
        self.token = 0
        self.due = 0.0


def _check_seconds(name: str, value: object, *, optional: bool) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValidationError(name, f"must be a number of seconds > 0, not {value!r}")
    if math.isinf(value):
        return None if optional else float(value)
    return float(value)


def _check_count(name: str, value: object, *, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValidationError(name, f"must be an integer >= {least}, not {value!r}")
    return value


def _check_id(name: str, job_id: object) -> str:
    if not isinstance(job_id, str):
        raise ValidationError(name, f"must be a string, not {type(job_id).__name__}")
    if not job_id.strip():
        raise ValidationError(name, "must not be empty")
    return job_id


class JobTracker(Generic[T]):
    """Follow many jobs of one source with one scheduler, and yield each as it finishes.

    Args:
        source: the vendor client's view of its jobs.
        timeout: seconds from the start of tracking after which the iteration ends with
            `JobTimeoutError` naming every unfinished job; None for no overall deadline.
        job_timeout: the default deadline of each job, in seconds from when it was added.
        max_in_flight: polls, sweeps and hooks running at once.
        min_interval: the first and shortest wait between two polls of a job, in seconds.
        max_interval: the longest wait between two polls of a job, in seconds.
        sweep_interval: the least time between two sweeps; when sweeping pays, every job is
            seen at least this often.
        buffer: finished jobs held for a slow consumer before delivery waits.
        on_progress: called with the stats as jobs finish (at most five times a second, and
            once at the end).
        on_finished: an async hook run on each finished job before it is delivered, inside the
            pool of work in flight (Zefort acknowledges tasks with it); what it returns is
            delivered. If it raises an `AsyncBulkError`, the job is delivered as it was and a
            warning is logged: a finished job is never lost.

    Raises:
        ValidationError: a setting is out of range.
    """

    def __init__(
        self,
        source: JobSource[T],
        *,
        timeout: float | None = None,
        job_timeout: float | None = None,
        max_in_flight: int = 8,
        min_interval: float = 0.25,
        max_interval: float = 5.0,
        sweep_interval: float = 0.5,
        buffer: int = 256,
        on_progress: Callable[[TrackerStats], None] | None = None,
        on_finished: Callable[[T], Awaitable[T]] | None = None,
    ) -> None:
        """Check the settings; nothing runs until iteration or ``async with``."""
        self._source = source
        self._timeout = _check_seconds("timeout", timeout, optional=True)
        self._job_timeout = _check_seconds("job_timeout", job_timeout, optional=True)
        self._max_in_flight = _check_count("max_in_flight", max_in_flight, least=1)
        self._min_interval = _check_seconds("min_interval", min_interval, optional=False) or 0.0
        self._max_interval = _check_seconds("max_interval", max_interval, optional=False) or 0.0
        if self._max_interval < self._min_interval:
            raise ValidationError("max_interval", "must be >= min_interval")
        self._sweep_interval = (
            _check_seconds("sweep_interval", sweep_interval, optional=False) or 0.0
        )
        self._buffer = _check_count("buffer", buffer, least=0)
        self._on_progress = on_progress
        self._on_finished = on_finished
        self.stats = TrackerStats()
        self._base_requests = 0
        self._base_rate_limited = 0

        self._jobs: dict[str, _Job] = {}
        self._heap: list[tuple[float, int, _Job]] = []
        self._deadlines: list[tuple[float, int, _Job]] = []
        self._tokens = 0
        self._fetch_now: deque[_Job] = deque()
        self._hooks: deque[T] = deque()
        self._ready: deque[T] = deque()
        self._expired: list[str] = []
        self._lost: list[tuple[str, NotFoundError]] = []
        self._fatal: BaseException | None = None

        self._closed = False
        self._started_at: float | None = None
        self._deadline: float | None = None
        self._timed_out = False
        self._ended = False
        self._in_flight = 0
        self._sweeping = False
        self._sweep_mode = False
        self._next_sweep_at = 0.0
        self._sweep_failures = 0
        self._no_sweep = False
        self._scopes: set[anyio.CancelScope] = set()
        self._wake = anyio.Event()
        self._last_progress = 0.0

        self._task_group: TaskGroup | None = None
        self._engine_done = False
        self._send: MemoryObjectSendStream[T] | None = None
        self._receive: MemoryObjectReceiveStream[T] | None = None
        self._ready_event = anyio.Event()

    def __repr__(self) -> str:
        """The source's kind and the counts so far."""
        s = self.stats
        return (
            f"JobTracker(kind={self._source.kind!r}, tracked={s.tracked}, "
            f"finished={s.finished}, failed={s.failed}, in_flight={s.in_flight})"
        )

    @property
    def expired(self) -> tuple[str, ...]:
        """Ids of the jobs dropped because their own deadline passed."""
        return tuple(self._expired)

    @property
    def lost(self) -> tuple[str, ...]:
        """Ids of the jobs the server said do not exist."""
        return tuple(job_id for job_id, _ in self._lost)

    # -- adding and removing ------------------------------------------------------------------

    def add(self, job_id: str, *, timeout: float | None = None) -> None:
        """Track a job (while iterating too); an id already tracked is tracked once.

        Args:
            job_id: the job's id.
            timeout: this job's deadline in seconds from now, instead of ``job_timeout``.

        Raises:
            ValidationError: the id is not a non-empty string, the timeout is not > 0, or
                `close` was called.
        """
        _check_id("job_id", job_id)
        seconds = _check_seconds("timeout", timeout, optional=True)
        if self._closed:
            raise ValidationError("job_id", "the tracker was closed to new jobs")
        if job_id in self._jobs:
            return
        if seconds is None:
            seconds = self._job_timeout
        now = time.monotonic()
        job = _Job(job_id, self._min_interval, None if seconds is None else now + seconds)
        self._jobs[job_id] = job
        self.stats.tracked += 1
        self._schedule_at(job, now)
        if job.deadline is not None:
            heapq.heappush(self._deadlines, (job.deadline, job.token, job))
        self._wake.set()

    def remove(self, job_id: str) -> None:
        """Stop tracking a job; it will not be yielded. An unknown id is ignored."""
        job = self._jobs.pop(job_id, None)
        if job is not None:
            job.token = -1
            self.stats.tracked -= 1
            self._wake.set()

    def close(self) -> None:
        """Say no more jobs will be added: iteration ends once every tracked job is delivered."""
        self._closed = True
        self._wake.set()

    # -- iteration ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        """Start polling in the background of the ``async with`` block."""
        if self._task_group is not None or self._ended:
            raise ValidationError("tracker", "can be entered only once")
        self._start_clock()
        self._send, self._receive = anyio.create_memory_object_stream[T](self._buffer)
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        task_group.start_soon(self._run_push)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        """Stop polling and wait until nothing is left running."""
        task_group, self._task_group = self._task_group, None
        if task_group is None:
            return None
        task_group.cancel_scope.cancel()
        try:
            return await task_group.__aexit__(exc_type, exc, traceback)
        except BaseExceptionGroup as group:
            # anyio wraps the block's own error (JobTimeoutError from `async for`) in a group;
            # returning False lets it propagate as itself, so `except JobTimeoutError` works.
            if exc is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc:
                return False
            raise
        finally:
            self._ended = True
            self._close_streams()

    def __aiter__(self) -> Self:
        """Iterate over the jobs as they finish."""
        return self

    async def __anext__(self) -> T:
        """The next finished job.

        Raises:
            JobTimeoutError: a deadline passed (after every job detected in time was yielded).
            NotFoundError: a tracked job does not exist (after the others were yielded).
            AuthenticationError: the credentials were refused.
        """
        if self._receive is not None:
            try:
                return await self._receive.receive()
            except anyio.EndOfStream:
                self._finish_iteration()
            except anyio.ClosedResourceError:
                raise StopAsyncIteration from None
        if self._ready:
            return self._ready.popleft()
        if self._ended:
            raise StopAsyncIteration
        self._start_clock()
        await self._run_pull()
        if self._ready:
            return self._ready.popleft()
        self._finish_iteration()
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        """Stop: nothing more is polled or yielded. Idempotent."""
        self._ended = True
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()
        self._close_streams()

    def _close_streams(self) -> None:
        if self._send is not None:
            self._send.close()
        if self._receive is not None:
            self._receive.close()

    def _start_clock(self) -> None:
        if self._started_at is None:
            self._started_at = time.monotonic()
            if self._timeout is not None:
                self._deadline = self._started_at + self._timeout
            if (source_stats := self._source_stats()) is not None:
                self._base_requests = source_stats.requests
                self._base_rate_limited = source_stats.rate_limited

    def _finish_iteration(self) -> None:
        """End the iteration: with the first problem met, or plainly."""
        if self._ended:
            raise StopAsyncIteration
        self._ended = True
        self._report(force=True)
        if self._fatal is not None:
            raise self._fatal
        kind = self._source.kind
        if self._timed_out:
            unfinished = [*self._expired, *self._jobs]
            raise JobTimeoutError(
                f"{len(unfinished)} {kind}(s) unfinished at the deadline", unfinished=unfinished
            )
        if self._lost:
            error = self._lost[0][1]
            if len(self._lost) > 1 or self._expired:
                error.add_note(f"{len(self._lost)} {kind}(s) not found: {list(self.lost)}")
            if self._expired:
                error.add_note(f"{len(self._expired)} {kind}(s) past their deadline")
            raise error
        if self._expired:
            raise JobTimeoutError(
                f"{len(self._expired)} {kind}(s) past their own deadline",
                unfinished=self._expired,
            )
        raise StopAsyncIteration

    async def _run_pull(self) -> None:
        """Poll until a job is ready (or all is over), then stop before returning."""
        async with anyio.create_task_group() as task_group:
            await self._schedule(task_group, pull=True)
            with anyio.move_on_after(_GRACE):
                await self._drain()
            self._cancel_polls()

    async def _run_push(self) -> None:
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(self._pump)
            await self._schedule(task_group, pull=False)
            self._cancel_polls()
            await self._drain()
            self._engine_done = True
            self._ready_event.set()

    async def _pump(self) -> None:
        """Move finished jobs into the bounded stream; blocks on a slow consumer, polls go on."""
        assert self._send is not None  # noqa: S101 -- set by __aenter__ before this starts
        async with self._send:
            while True:
                if self._ready:
                    # Popped only once sent, so a cancelled send loses nothing.
                    await self._send.send(self._ready[0])
                    self._ready.popleft()
                elif self._engine_done:
                    return
                else:
                    self._ready_event = anyio.Event()
                    await self._ready_event.wait()

    async def _drain(self) -> None:
        while self._in_flight:
            self._wake = anyio.Event()
            await self._wake.wait()

    def _cancel_polls(self) -> None:
        for scope in self._scopes:
            scope.cancel()

    # -- the scheduler ------------------------------------------------------------------------

    async def _schedule(self, task_group: TaskGroup, *, pull: bool) -> None:
        """Start work as it falls due, until a job is ready (pull) or nothing is left."""
        while True:
            now = time.monotonic()
            self._expire(now)
            if self._fatal is not None:
                return
            self._check_deadline(now)
            if pull and self._ready:
                return
            if self._timed_out:
                # Jobs already detected still get their hook; nothing more is polled.
                if self._hooks and self._in_flight < self._max_in_flight:
                    self._start(task_group, self._hook, self._hooks.popleft())
                    continue
                if not self._hooks and not self._in_flight:
                    return
            elif not self._jobs and not self._hooks and not self._in_flight and self._closed:
                return
            elif self._in_flight < self._max_in_flight and self._dispatch(task_group, now):
                continue
            await self._sleep_until(self._next_wake(now))

    def _check_deadline(self, now: float) -> None:
        if self._timed_out or self._deadline is None or now < self._deadline:
            return
        self._timed_out = True
        # A poll held up (a long 429 pause, a stalled server) must not hold the deadline
        # back: stop the polls; the jobs they were reading are unfinished.
        self._cancel_polls()

    def _dispatch(self, task_group: TaskGroup, now: float) -> bool:
        """Start one piece of work if any is due; say whether one started."""
        if self._hooks:
            self._start(task_group, self._hook, self._hooks.popleft())
            return True
        while self._fetch_now:
            job = self._fetch_now.popleft()
            if self._jobs.get(job.id) is job:
                self._start(task_group, self._poll, job)
                return True
        due = self._peek()
        if due is None or due > now:
            return False
        if self._should_sweep(now):
            self._sweeping = True
            self._next_sweep_at = now + self._sweep_interval
            self._start(task_group, self._sweep, None)
            return True
        if self._sweep_mode and (self._sweeping or now < self._next_sweep_at):
            return False  # the coming sweep covers the jobs due now
        _, _, job = heapq.heappop(self._heap)
        job.polling = True
        self._start(task_group, self._poll, job)
        return True

    def _should_sweep(self, now: float) -> bool:
        """Whether reading the listing now costs fewer requests than the polls it replaces."""
        if self._no_sweep or self._sweeping or now < self._next_sweep_at:
            return False
        cost = self._source.sweep_cost()
        if cost is None:
            self._no_sweep = True
            return False
        self._sweep_mode = self._count_due(now + self._sweep_interval, cost) > cost
        return self._sweep_mode

    def _start(
        self, task_group: TaskGroup, work: Callable[[Any], Coroutine[Any, Any, None]], arg: Any
    ) -> None:
        self._in_flight += 1
        self.stats.in_flight = self._in_flight
        task_group.start_soon(work, arg)

    def _done(self) -> None:
        self._in_flight -= 1
        self.stats.in_flight = self._in_flight
        self._wake.set()
        self._report()

    def _next_wake(self, now: float) -> float | None:
        """When the scheduler must look again if nothing wakes it sooner."""
        times: list[float] = []
        if self._deadline is not None and not self._timed_out:
            times.append(self._deadline)
        if self._deadlines:
            times.append(self._deadlines[0][0])
        if self._in_flight < self._max_in_flight and not self._timed_out:
            due = self._peek()
            if due is not None and due <= now and self._sweep_mode:
                # Due jobs wait for the next sweep; one in flight wakes us when it ends.
                if not self._sweeping:
                    times.append(self._next_sweep_at)
            elif due is not None:
                times.append(due)
        return min(times) if times else None

    async def _sleep_until(self, when: float | None) -> None:
        self._wake = anyio.Event()
        delay = math.inf if when is None else when - time.monotonic()
        if delay > 0:
            with anyio.move_on_after(delay):
                await self._wake.wait()
        else:
            await anyio.lowlevel.checkpoint()

    # -- the heap -----------------------------------------------------------------------------

    def _schedule_at(self, job: _Job, when: float) -> None:
        self._tokens += 1
        job.token = self._tokens
        job.due = when
        job.polling = False
        heapq.heappush(self._heap, (when, job.token, job))

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

    def _reschedule(self, job: _Job, *, progressed: bool, now: float) -> None:
        if progressed:
            job.interval = self._min_interval
        else:
            job.interval = min(self._max_interval, job.interval * random.uniform(1.5, 2.0))
        self._schedule_at(job, now + job.interval * random.uniform(0.9, 1.0))

    def _expire(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, job = heapq.heappop(deadlines)
            if self._jobs.get(job.id) is job:
                del self._jobs[job.id]
                job.token = -1
                self.stats.tracked -= 1
                self.stats.expired += 1
                self._expired.append(job.id)
                logger.warning("%s %s passed its deadline unfinished", self._source.kind, job.id)

    # -- the work -----------------------------------------------------------------------------

    async def _poll(self, job: _Job) -> None:
        seen = False
        try:
            with anyio.CancelScope() as scope:
                self._scopes.add(scope)
                self.stats.polls += 1
                try:
                    state = await self._source.fetch(job.id)
                except NotFoundError as exc:
                    seen = True
                    self._lose(job, exc)
                    return
                except _FATAL as exc:
                    seen = True
                    self._fail(exc)
                    return
                except AsyncBulkError as exc:
                    seen = True
                    self._poll_failed(job, exc)
                    return
                seen = True
                self._observe(job, state, time.monotonic())
        finally:
            self._scopes.discard(scope)
            if not seen and self._jobs.get(job.id) is job:
                self._schedule_at(job, time.monotonic())  # cancelled: poll again next time
            self._done()

    async def _sweep(self, _: None) -> None:
        ids = frozenset(self._jobs)
        started = time.monotonic()
        try:
            with anyio.CancelScope() as scope:
                self._scopes.add(scope)
                self.stats.sweeps += 1
                try:
                    found = await self._source.sweep(ids)
                except _FATAL as exc:
                    self._fail(exc)
                    return
                except AsyncBulkError as exc:
                    self._sweep_failed(exc)
                    return
                self._sweep_failures = 0
                if found is None:
                    self._no_sweep = True
                    self._sweep_mode = False
                    return
                self._apply_sweep(ids, found, time.monotonic())
        finally:
            self._scopes.discard(scope)
            self._sweeping = False
            # A listing that takes long to read (a hundred pages) is read at most two thirds
            # of the time, so sweeping never eats all the CPU or the connection pool.
            now = time.monotonic()
            self._next_sweep_at = max(self._next_sweep_at, now + (now - started) / 2)
            self._done()

    def _apply_sweep(self, ids: frozenset[str], found: Mapping[str, T], now: float) -> None:
        jobs = self._jobs
        for job_id, state in found.items():
            job = jobs.get(job_id)
            if job is None:
                continue
            if self._source.is_finished(state):
                self._finish(job, state)
            elif not job.polling:
                progressed = self._note_progress(job, state)
                if progressed or job.due <= now:
                    self._reschedule(job, progressed=progressed, now=now)
        for job_id in ids.difference(found):
            job = jobs.get(job_id)
            if job is not None and not job.polling:
                # Missing from the listing (acknowledged elsewhere?): one fetch tells its fate.
                job.polling = True
                self._fetch_now.append(job)

    async def _hook(self, state: T) -> None:
        assert self._on_finished is not None  # noqa: S101 -- only queued when there is a hook
        done = False
        try:
            try:
                result = await self._on_finished(state)
            except AsyncBulkError as exc:
                logger.warning(
                    "%s finished, but its follow-up failed; delivering it as it was: %s",
                    self._source.kind,
                    exc,
                )
                result = state
            done = True
            self._deliver(result)
        finally:
            if not done:
                self._hooks.appendleft(state)  # cancelled: run it again next time
            self._done()

    # -- outcomes -----------------------------------------------------------------------------

    def _note_progress(self, job: _Job, state: T) -> bool:
        progress = self._source.progress(state)
        progressed = (
            job.progress is not _UNSEEN and progress is not None and progress != job.progress
        )
        job.progress = progress
        return progressed

    def _observe(self, job: _Job, state: T, now: float) -> None:
        if self._jobs.get(job.id) is not job:
            return  # finished by a sweep, removed or expired meanwhile
        if self._source.is_finished(state):
            self._finish(job, state)
        else:
            self._reschedule(job, progressed=self._note_progress(job, state), now=now)

    def _finish(self, job: _Job, state: T) -> None:
        del self._jobs[job.id]
        job.token = -1
        stats = self.stats
        stats.tracked -= 1
        stats.finished += 1
        if self._source.is_failed(state):
            stats.failed += 1
        finished_at = self._source.finished_at(state)
        if finished_at is not None:
            stats._lags.append(max(0.0, time.time() - finished_at))  # noqa: SLF001
        if self._on_finished is not None:
            self._hooks.append(state)
            self._wake.set()
        else:
            self._deliver(state)

    def _deliver(self, state: T) -> None:
        self._ready.append(state)
        self._ready_event.set()
        self._wake.set()
        self._report()

    def _lose(self, job: _Job, error: NotFoundError) -> None:
        if self._jobs.get(job.id) is not job:
            return
        del self._jobs[job.id]
        job.token = -1
        self.stats.tracked -= 1
        self.stats.lost += 1
        self._lost.append((job.id, error))
        logger.warning("%s %s was not found", self._source.kind, job.id)

    def _fail(self, error: BaseException) -> None:
        if self._fatal is None:
            self._fatal = error
        self._wake.set()

    def _poll_failed(self, job: _Job, error: AsyncBulkError) -> None:
        self.stats.poll_errors += 1
        logger.debug("%s %s: poll failed, trying later: %s", self._source.kind, job.id, error)
        if self._jobs.get(job.id) is job:
            self._reschedule(job, progressed=False, now=time.monotonic())

    def _sweep_failed(self, error: AsyncBulkError) -> None:
        self.stats.poll_errors += 1
        self._sweep_failures += 1
        # Back off the listing and let jobs be polled one by one meanwhile.
        wait = min(self._max_interval, self._sweep_interval * 2**self._sweep_failures)
        self._next_sweep_at = time.monotonic() + wait
        self._sweep_mode = False
        logger.debug("%s listing failed, next try in %.2f s: %s", self._source.kind, wait, error)

    def _source_stats(self) -> RequestStats | None:
        """A fresh snapshot of the source's request counts, if it keeps them."""
        stats = getattr(self._source, "stats", None)
        return stats if isinstance(stats, RequestStats) else None

    def _report(self, *, force: bool = False) -> None:
        stats = self.stats
        if (source_stats := self._source_stats()) is not None:
            stats.requests = source_stats.requests - self._base_requests
            stats.rate_limited = source_stats.rate_limited - self._base_rate_limited
        else:
            stats.requests = stats.polls + stats.sweeps
        if self._on_progress is None:
            return
        now = time.monotonic()
        if force or now - self._last_progress >= _PROGRESS_EVERY:
            self._last_progress = now
            self._on_progress(stats)


class TrackIterator(Generic[T]):
    """The jobs of `track` as they finish: an async iterator and an async context manager.

    A plain ``async for`` polls only while it waits for the next job, so breaking out of it
    leaves nothing running. Inside ``async with``, polling goes on in the background while the
    loop body runs, for the lowest detection lag.
    """

    def __init__(self, tracker: JobTracker[T]) -> None:
        """Wrap a tracker that was given its jobs and closed to new ones."""
        self.tracker = tracker

    def __repr__(self) -> str:
        """The tracker's counts."""
        return f"TrackIterator({self.tracker!r})"

    @property
    def stats(self) -> TrackerStats:
        """The tracker's stats."""
        return self.tracker.stats

    def __aiter__(self) -> Self:
        """Iterate over the jobs as they finish."""
        return self

    async def __anext__(self) -> T:
        """The next finished job (see `JobTracker.__anext__`)."""
        return await self.tracker.__anext__()

    async def __aenter__(self) -> Self:
        """Poll in the background until the block ends."""
        await self.tracker.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        """Stop polling; nothing is left running."""
        return await self.tracker.__aexit__(exc_type, exc, traceback)

    async def aclose(self) -> None:
        """Stop: nothing more is polled or yielded."""
        await self.tracker.aclose()


def track(
    source: JobSource[T],
    job_ids: Iterable[str],
    *,
    timeout: float | None = None,
    **options: Any,
) -> TrackIterator[T]:
    """Yield each of the jobs once, as it finishes, in the order detected.

    Args:
        source: the vendor client's view of its jobs.
        job_ids: the jobs to follow; an id given twice is followed once.
        timeout: seconds after which the iteration ends with `JobTimeoutError` naming the
            unfinished jobs; None for no deadline.
        **options: further `JobTracker` settings.

    Raises:
        ValidationError: an id is not a non-empty string (the error names its position).
    """
    if isinstance(job_ids, str | bytes):
        raise ValidationError("job_ids", "must be an iterable of ids, not a single string")
    tracker: JobTracker[T] = JobTracker(source, timeout=timeout, **options)
    for index, job_id in enumerate(job_ids):
        try:
            tracker.add(job_id)
        except ValidationError as exc:
            raise ValidationError(f"job_ids[{index}]", exc.reason) from None
    tracker.close()
    return TrackIterator(tracker)


async def wait_for(
    source: JobSource[T],
    job_id: str,
    *,
    timeout: float | None = None,  # noqa: ASYNC109 -- the deadline is the tracker's, not a cancel scope's
    **options: Any,
) -> T:
    """Wait until one job finishes and return it (a failed job is returned too).

    Raises:
        JobTimeoutError: the deadline passed; ``unfinished`` is ``(job_id,)``.
        NotFoundError: the job does not exist.
        ValidationError: the id is not a non-empty string.
    """
    _check_id("job_id", job_id)
    iterator = track(source, [job_id], timeout=timeout, **options)
    try:
        async for job in iterator:
            return job
    finally:
        await iterator.aclose()
    raise AssertionError(
        "unreachable: the iteration ends with the job or an error"
    )  # pragma: no cover
