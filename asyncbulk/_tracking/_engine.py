"""The anyio engine: it carries out the scheduler's decisions and hands each finished job out once.

`JobTracker` asks its `Scheduler` what is due, runs those polls and sweeps in a task group (at
most ``max_in_flight`` at once, never a task, coroutine or timer per tracked job), reports each
outcome back, and sleeps until the scheduler's next wake-up or an outcome, whichever is first.
Every wait is bounded by the overall deadline.

Two ways to iterate, both yielding each finished job exactly once, in the order detected:

- ``async with tracker:`` then ``async for job in tracker:`` polls in the background of the
  ``async with`` block and delivers through a bounded anyio memory object stream: a slow consumer
  holds back delivery while polling of the other jobs goes on.
- a plain ``async for job in tracker:`` (or `track`) polls only inside each ``__anext__`` call and
  stops before returning, so breaking out of the loop, or cancelling around it, leaves nothing
  running and nothing to close.

Acknowledgement (``on_taken``, Zefort's ``acknowledge=True``) happens off the detection path: a
job is yielded as soon as it is seen finished, and acknowledged once the consumer has taken it,
that is when it asks for the next job or the loop ends normally. A consumer that raises while
holding a job leaves that job unacknowledged, so the vendor finds it again next time. The
iteration ends only once every acknowledgement has settled or the deadline passed; the jobs
whose acknowledgement failed are named by `JobTracker.unacknowledged` and in a warning.

Deadlines: a job whose own deadline passes is dropped, the others are still delivered, and the
iteration then ends with `JobTimeoutError` naming the expired ids. When the overall deadline
passes, polling stops, every job already detected is still delivered, and then `JobTimeoutError`
names every job left unfinished. A job the server says does not exist (404) is dropped too and
the iteration ends with that `NotFoundError` after the others are delivered. Whatever error ends
the iteration carries ``unfinished``: the ids of every job not delivered.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Generic, Self, TypeVar

import anyio
import anyio.lowlevel

from asyncbulk._exceptions import (
    AsyncBulkError,
    AuthenticationError,
    ClientClosedError,
    JobTimeoutError,
    NotFoundError,
    ValidationError,
)
from asyncbulk._logs import log_fields
from asyncbulk._session import RequestStats
from asyncbulk._tracking._options import (
    PROGRESS_EVERY,
    TrackingOptions,
    check_id,
    check_seconds,
)
from asyncbulk._tracking._scheduler import Job, Poll, Scheduler
from asyncbulk._tracking._stats import Counters, TrackerStats

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping
    from types import TracebackType

    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from asyncbulk._journal import TrackingLog
    from asyncbulk._telemetry import Tracer
    from asyncbulk._tracking._source import JobSource

__all__ = ["JobTracker"]

logger: Final = logging.getLogger("asyncbulk")

T = TypeVar("T")

#: Errors after which polling cannot usefully go on: they end the iteration at once.
_FATAL: Final = (AuthenticationError, ClientClosedError, ValidationError)
#: A consumer taking jobs already detected yields to the event loop at least this often.
_YIELD_EVERY: Final = 64
#: ... and checks for its own cancellation at least this often.
_CHECK_EVERY: Final = 8
#: How long a plain ``async for`` waits for polls under way before cancelling them and returning.
_GRACE: Final = 1.0


class _View(Generic[T]):
    """One sweep's `SweepView`: hands what the listing shows to the scheduler and the tracker."""

    __slots__ = ("_generation", "_tracker", "known", "listed", "listed_many", "moved", "partial")

    def __init__(self, tracker: JobTracker[T], generation: int) -> None:
        self._tracker = tracker
        self._generation = generation
        self.moved = False
        self.partial = False
        sched = tracker._sched  # noqa: SLF001 -- the tracker's own part
        self.known = sched.known
        self.listed = functools.partial(sched.listed, generation)
        self.listed_many = functools.partial(sched.listed_many, generation)

    def unchanged(self, job_id: str) -> None:
        self._tracker._sched.seen(job_id, self._generation)  # noqa: SLF001

    def changed(self, job_id: str, state: T) -> None:
        self._tracker._swept(job_id, state, self._generation)  # noqa: SLF001

    def shifted(self) -> None:
        self.moved = True

    def skipped(self) -> None:
        self.partial = True


class JobTracker(Generic[T]):
    """Follow many jobs of one source with one scheduler, and yield each as it finishes.

    Args:
        source: the vendor client's view of its jobs.
        options: intervals, concurrency and buffer (`TrackingOptions`); the defaults otherwise.
        timeout: seconds from the start of tracking after which the iteration ends with
            `JobTimeoutError` naming every unfinished job; None for no overall deadline.
        job_timeout: the default deadline of each job, in seconds from when it was added.
        on_progress: called with a `TrackerStats` snapshot as the work goes on: at most every
            0.5 s, and once when the iteration ends.
        on_taken: an async hook run on each job once the consumer has taken it (asked for the
            next job, or ended the loop normally), with the tracker's deadline (absolute, in
            `time.monotonic` seconds, or None); Zefort acknowledges tasks with it. If it
            raises an `AsyncBulkError`, the job is named in `unacknowledged` and a warning is
            logged.
        log: the journal's record of the jobs: each is recorded added, finished when seen
            finished, and delivered (on disk) at the moment ``on_taken`` would run, before
            the next job is handed out.

    Raises:
        ValidationError: a setting is out of range.
    """

    def __init__(
        self,
        source: JobSource[T],
        *,
        options: TrackingOptions | None = None,
        timeout: float | None = None,
        job_timeout: float | None = None,
        on_progress: Callable[[TrackerStats], None] | None = None,
        on_taken: Callable[[T, float | None], Awaitable[T]] | None = None,
        log: TrackingLog | None = None,
    ) -> None:
        """Check the settings; nothing runs until iteration or ``async with``."""
        if options is None:
            options = TrackingOptions()
        elif not isinstance(options, TrackingOptions):
            raise ValidationError("options", "must be a TrackingOptions")
        self._source = source
        self._timeout = check_seconds("timeout", timeout, optional=True)
        self._job_timeout = check_seconds("job_timeout", job_timeout, optional=True)
        self._options = options
        in_flight = options.max_in_flight or 8
        self._sched = Scheduler(
            min_interval=options.min_interval,
            max_interval=options.max_interval,
            sweep_interval=options.sweep_interval,
            max_in_flight=in_flight,
        )
        # Monotonic seconds, as the scheduler is given them; a test may swap in its own clock.
        self._clock: Callable[[], float] = time.monotonic
        self._on_progress = on_progress
        self._on_taken = on_taken
        self._counts = Counters()
        # The source's request counts are snapshots: read them afresh each time they are needed.
        self._stats_source = (
            source if isinstance(getattr(source, "stats", None), RequestStats) else None
        )
        entry_counts = getattr(source, "entry_counts", None)
        self._entry_counts: Callable[[T], Mapping[str, int] | None] | None = entry_counts
        self._job_entries: dict[str, Mapping[str, int]] = {}
        tracer: Tracer | None = getattr(source, "telemetry", None)
        self._telemetry = None if tracer is None else tracer.jobs(source.kind)
        self._base_requests = self._base_rate_limited = 0

        self._ready: deque[tuple[str, T]] = deque()
        self._expired: list[str] = []
        self._lost: list[tuple[str, NotFoundError]] = []
        self._fatal: BaseException | None = None

        self._taken: tuple[str, T] | None = None
        self._log = log
        self._log_added: list[str] = []
        self._log_finished: list[str] = []
        self._held: str | None = None
        self._acks: deque[tuple[str, T]] = deque()
        self._acking = 0
        self._ack_limit = in_flight
        self._unacknowledged: list[str] = []

        self._started = False
        self._ended = False
        self._stopping = False
        self._poll_scopes: set[anyio.CancelScope] = set()
        self._ack_scopes: set[anyio.CancelScope] = set()
        self._wake = anyio.Event()
        self._last_progress = -math.inf
        self._reported_end = False

        self._task_group: TaskGroup | None = None
        self._engine_done = False
        self._engine_idle = anyio.Event()
        self._send: MemoryObjectSendStream[tuple[str, T]] | None = None
        self._receive: MemoryObjectReceiveStream[tuple[str, T]] | None = None
        self._ready_event = anyio.Event()
        self._handed = 0

    def __repr__(self) -> str:
        """The source's kind and the counts so far."""
        c = self._counts
        return (
            f"JobTracker(kind={self._source.kind!r}, tracked={len(self._sched.jobs)}, "
            f"finished={c.finished}, failed={c.failed}, in_flight={self._in_flight})"
        )

    @property
    def stats(self) -> TrackerStats:
        """A frozen snapshot of the counts now."""
        self._count_requests()
        return self._counts.snapshot(tracked=len(self._sched.jobs), in_flight=self._in_flight)

    @property
    def expired(self) -> tuple[str, ...]:
        """Ids of the jobs dropped because their own deadline passed."""
        return tuple(self._expired)

    @property
    def lost(self) -> tuple[str, ...]:
        """Ids of the jobs the server said do not exist."""
        return tuple(job_id for job_id, _ in self._lost)

    @property
    def unacknowledged(self) -> tuple[str, ...]:
        """Ids of the jobs taken whose ``on_taken`` hook failed or did not settle in time.

        One cut short by the deadline while under way may have reached the server all the same.
        """
        return tuple(self._unacknowledged)

    @property
    def _in_flight(self) -> int:
        return self._sched.in_flight + self._acking

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
        check_id("job_id", job_id)
        seconds = check_seconds("timeout", timeout, optional=True)
        if self._sched.closed:
            raise ValidationError("job_id", "the tracker was closed to new jobs")
        if seconds is None:
            seconds = self._job_timeout
        if self._sched.add(job_id, self._clock(), seconds):
            if self._telemetry is not None:
                self._telemetry.added(job_id)
            if self._log is not None:
                self._log_added.append(job_id)
            self._wake.set()

    def add_many(self, job_ids: Iterable[str]) -> None:
        """Track many jobs at once, each with the tracker's ``job_timeout``; `add` for each.

        Raises:
            ValidationError: an id is not a non-empty string (the error names its position
                as ``job_ids[i]``), or `close` was called; then none of them is tracked.
        """
        if self._sched.closed:
            raise ValidationError("job_id", "the tracker was closed to new jobs")
        ids = list(job_ids)
        for index, job_id in enumerate(ids):
            if type(job_id) is not str or not job_id.strip():
                check_id(f"job_ids[{index}]", job_id)  # raises, naming the position
        added = self._sched.add_many(ids, self._clock(), self._job_timeout)
        if added:
            if self._telemetry is not None:
                self._telemetry.added_many(added)
            if self._log is not None:
                self._log_added.extend(added)
            self._wake.set()

    def remove(self, job_id: str) -> None:
        """Stop tracking a job; it will not be yielded. An unknown id is ignored."""
        if self._sched.remove(job_id):
            if self._telemetry is not None:
                self._telemetry.ended(job_id, "removed")
            self._wake.set()

    def close(self) -> None:
        """Say no more jobs will be added: iteration ends once every tracked job is delivered."""
        self._sched.closed = True
        self._wake.set()

    # -- iteration ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        """Start polling in the background of the ``async with`` block."""
        if self._task_group is not None or self._ended:
            raise ValidationError("tracker", "can be entered only once")
        self._start_clock()
        await self._record()
        self._send, self._receive = anyio.create_memory_object_stream[tuple[str, T]](
            self._options.buffer
        )
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
        """Stop polling, settle the acknowledgements due, and wait until nothing is left running.

        Leaving the block normally counts as taking the job last yielded; leaving it with an
        exception leaves that job unacknowledged.
        """
        task_group, self._task_group = self._task_group, None
        if task_group is None:
            return None
        # Detection stops at once; unless the caller is cancelled, acknowledgements under way
        # may end (by the deadline): cut short, one may have taken effect unseen.
        self._stopping = True
        self._cancel(self._poll_scopes)
        self._wake.set()
        cancelled: BaseException | None = None
        if not isinstance(exc, anyio.get_cancelled_exc_class()):
            try:
                with self._until_deadline():
                    await self._engine_idle.wait()
            except anyio.get_cancelled_exc_class() as error:
                cancelled = error  # the group must still be left, then this raised
                exc_type, exc, traceback = type(error), error, error.__traceback__
        task_group.cancel_scope.cancel()
        try:
            result = await task_group.__aexit__(exc_type, exc, traceback)
        except BaseExceptionGroup as group:
            # anyio wraps the block's own error (JobTimeoutError from `async for`) in a group;
            # returning False lets it propagate as itself, so `except JobTimeoutError` works.
            if exc is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc:
                result = False
            else:
                raise
        finally:
            self._close_streams()
            self._ended = True
        if cancelled is not None:
            self._give_up_acks()
            raise cancelled
        if exc is None:
            self._take()
        try:
            await self._settle()
        finally:
            self._report_end()
        return result

    def __aiter__(self) -> Self:
        """Iterate over the jobs as they finish."""
        return self

    async def __anext__(self) -> T:
        """The next finished job; asking for it acknowledges the one before (``on_taken``).

        Raises:
            JobTimeoutError: a deadline passed (after every job detected in time was yielded).
            NotFoundError: a tracked job does not exist (after the others were yielded).
            AuthenticationError: the credentials were refused.
        """
        self._take()
        await self._record_taken()
        if self._receive is not None:
            try:
                return self._hand_out(await self._next_received(self._receive))
            except anyio.EndOfStream:
                await self._finish_iteration()
            except anyio.ClosedResourceError:
                raise StopAsyncIteration from None
        if self._ready:
            return self._hand_out(self._ready.popleft())
        if self._ended:
            raise StopAsyncIteration
        self._start_clock()
        await self._run_pull()
        if self._ready:
            return self._hand_out(self._ready.popleft())
        await self._finish_iteration()
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        """Stop: nothing more is polled or yielded. Idempotent.

        Acknowledgements already due are settled (by the deadline); the job last yielded
        counts as not taken, and stays unacknowledged.
        """
        if self._ended:
            return
        self._ended = True
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()
        self._close_streams()
        try:
            await self._settle()
        finally:
            self._report_end()

    async def _next_received(
        self, receive: MemoryObjectReceiveStream[tuple[str, T]]
    ) -> tuple[str, T]:
        """The next job from the stream; one already there is taken without a task switch.

        It yields to the event loop when it waits, and at least every `_YIELD_EVERY` jobs, so
        a consumer that never awaits starves nobody. It is a cancellation point at least every
        `_CHECK_EVERY` jobs: a consumer that cancels its own scope gets at most that many
        more jobs already detected (checking on every job cost a third of a job's handling).
        """
        handed = self._handed = self._handed + 1
        if handed % _YIELD_EVERY:
            if not handed % _CHECK_EVERY:
                await anyio.lowlevel.checkpoint_if_cancelled()
            try:
                return receive.receive_nowait()
            except anyio.WouldBlock:
                pass
        return await receive.receive()

    def _hand_out(self, item: tuple[str, T]) -> T:
        if self._on_taken is not None:
            self._taken = item
        if self._log is not None:
            self._held = item[0]
        return item[1]

    async def _record(self) -> None:
        """Write the jobs added and finished since the last write to the journal."""
        if self._log is None:
            return
        if self._log_added:
            added, self._log_added = self._log_added, []
            await self._log.added(added)
        if self._log_finished:
            finished, self._log_finished = self._log_finished, []
            await self._log.finished_many(finished)

    async def _record_taken(self) -> None:
        """The consumer took the job it held: on disk as delivered before the next is given."""
        await self._record()
        if self._log is not None and self._held is not None:
            held, self._held = self._held, None
            await self._log.delivered(held)

    def _take(self) -> None:
        """The consumer is done with the job it holds: queue its acknowledgement."""
        if self._taken is not None:
            self._acks.append(self._taken)
            self._taken = None
            self._wake.set()

    async def _acknowledge_taken(self, state: T) -> T:
        """Settle the job just yielded at once and return what the hook made of it."""
        taken, self._taken = self._taken, None
        await self._record_taken()
        if taken is None or self._on_taken is None:
            return state
        with self._until_deadline():
            try:
                result = await self._on_taken(taken[1], self._sched.deadline)
            except AsyncBulkError as exc:
                self._not_acknowledged(taken[0], exc)
                return state
            self._counts.acknowledged += 1
            return result
        self._not_acknowledged(taken[0], None)
        return state

    def _close_streams(self) -> None:
        if self._send is not None:
            self._send.close()
        if self._receive is not None:
            self._receive.close()

    def _start_clock(self) -> None:
        if not self._started:
            self._started = True
            if self._timeout is not None:
                self._sched.deadline = self._clock() + self._timeout
            if (stats := self._source_stats()) is not None:
                self._base_requests = stats.requests
                self._base_rate_limited = stats.rate_limited

    def _until_deadline(self, at_most: float = math.inf) -> anyio.CancelScope:
        """A scope that ends its wait at the deadline (on the tracker's clock), or sooner."""
        deadline = self._sched.deadline
        left = math.inf if deadline is None else max(0.0, deadline - self._clock())
        return anyio.move_on_after(min(left, at_most))

    def _unfinished(self) -> list[str]:
        return [*self._expired, *self.lost, *self._sched.jobs]

    async def _finish_iteration(self) -> None:
        """End the iteration: with the first problem met, or plainly, once acknowledged."""
        if self._ended:
            raise StopAsyncIteration
        self._ended = True
        if self._fatal is None and not self._sched.timed_out:
            await self._settle()
        else:
            self._give_up_acks()
        self._report_end()
        kind = self._source.kind
        if self._fatal is not None:
            if isinstance(self._fatal, AsyncBulkError):
                self._fatal.unfinished = tuple(self._unfinished())
            raise self._fatal
        if self._sched.timed_out:
            unfinished = self._unfinished()
            raise JobTimeoutError(
                f"{len(unfinished)} {kind}(s) unfinished at the deadline", unfinished=unfinished
            )
        if self._lost:
            error = self._lost[0][1]
            if len(self._lost) > 1 or self._expired:
                error.add_note(f"{len(self._lost)} {kind}(s) not found: {list(self.lost)}")
            if self._expired:
                error.add_note(f"{len(self._expired)} {kind}(s) past their deadline")
            error.unfinished = tuple(self._unfinished())
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
            with self._until_deadline(_GRACE):
                await self._drain()
            self._cancel(self._poll_scopes)
            # An acknowledgement is never cut short but by the deadline: cut, it may have
            # taken effect, and sending it again could make two.
            with self._until_deadline():
                await self._drain()
            self._cancel(self._ack_scopes)

    async def _run_push(self) -> None:
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(self._pump)
            await self._schedule(task_group, pull=False)
            self._cancel(self._poll_scopes)
            with self._until_deadline():
                await self._drain()
            self._cancel(self._ack_scopes)
            self._engine_idle.set()
            self._engine_done = True
            self._ready_event.set()

    async def _pump(self) -> None:
        """Move finished jobs into the bounded stream; blocks on a slow consumer, polls go on."""
        assert self._send is not None  # noqa: S101 -- set by __aenter__ before this starts
        send = self._send
        async with send:
            while True:
                if self._ready:
                    # Popped only once sent, so a cancelled send loses nothing. While the
                    # stream has room, jobs go in without a task switch each.
                    try:
                        send.send_nowait(self._ready[0])
                    except anyio.WouldBlock:
                        await send.send(self._ready[0])
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

    @staticmethod
    def _cancel(scopes: set[anyio.CancelScope]) -> None:
        for scope in scopes:
            scope.cancel()

    async def _settle(self) -> None:
        """Run every acknowledgement due to the end, by the deadline; name those that fail."""
        try:
            if self._acks and self._on_taken is not None:
                with self._until_deadline():
                    async with anyio.create_task_group() as task_group:
                        while self._acks:
                            if self._acking >= self._ack_limit:
                                self._wake = anyio.Event()
                                await self._wake.wait()
                                continue
                            self._start_ack(task_group)
        finally:
            self._give_up_acks()

    def _give_up_acks(self) -> None:
        given_up = [job_id for job_id, _ in self._acks]
        self._acks.clear()
        if given_up:
            self._unacknowledged.extend(given_up)
            self._counts.unacknowledged += len(given_up)
            logger.warning(
                "%d %s(s) taken but not acknowledged by the deadline; they stay pending on "
                "the server: %s",
                len(given_up),
                self._source.kind,
                ", ".join(given_up[:20]),
                extra=self._fields(count=len(given_up)),
            )

    def _not_acknowledged(self, job_id: str, error: BaseException | None) -> None:
        self._unacknowledged.append(job_id)
        self._counts.unacknowledged += 1
        logger.warning(
            "%s %s finished but could not be acknowledged; it stays pending on the server: %s",
            self._source.kind,
            job_id,
            error or "the deadline passed",
            extra=self._fields(job_id, error),
        )

    # -- carrying out what the scheduler decides ----------------------------------------------

    async def _schedule(self, task_group: TaskGroup, *, pull: bool) -> None:
        """Start work as it falls due, until a job is ready (pull) or nothing is left."""
        sched = self._sched
        while True:
            now = self._clock()
            self._expire(now)
            if self._fatal is not None or self._stopping:
                return
            if sched.check_deadline(now):
                # A poll held up (a long 429 pause, a stalled server) must not hold the
                # deadline back: stop it; the jobs it was reading are unfinished.
                self._cancel(self._poll_scopes)
                self._cancel(self._ack_scopes)
            if pull and self._ready:
                return
            if sched.timed_out:
                if not sched.in_flight:
                    return
            elif sched.done:
                return
            elif self._dispatch(task_group, now):
                continue
            await self._sleep_until(sched.next_wake(now))

    def _dispatch(self, task_group: TaskGroup, now: float) -> bool:
        """Start one piece of work if any is due, detection first; say whether one started."""
        work = self._sched.next_work(now, self._source.sweep_cost())
        if isinstance(work, Poll):
            task_group.start_soon(self._poll, work.job)
            return True
        if work is not None:
            task_group.start_soon(self._sweep, work.generation)
            return True
        # Acknowledgements queue behind detection: only when nothing is due to be polled.
        if self._acks and self._acking < self._ack_limit:
            self._start_ack(task_group)
            return True
        return False

    def _start_ack(self, task_group: TaskGroup) -> None:
        self._acking += 1
        task_group.start_soon(self._acknowledge, self._acks.popleft())

    async def _sleep_until(self, when: float | None) -> None:
        self._wake = anyio.Event()
        delay = math.inf if when is None else when - self._clock()
        if delay > 0:
            with anyio.move_on_after(delay):
                await self._wake.wait()
        else:
            await anyio.lowlevel.checkpoint()

    def _expire(self, now: float) -> None:
        for job_id in self._sched.expire(now):
            self._counts.expired += 1
            self._expired.append(job_id)
            if self._telemetry is not None:
                self._telemetry.ended(job_id, "expired")
            logger.warning(
                "%s %s passed its deadline unfinished",
                self._source.kind,
                job_id,
                extra=self._fields(job_id),
            )

    async def _poll(self, job: Job) -> None:
        seen = False
        sched = self._sched
        with anyio.CancelScope() as scope:
            self._poll_scopes.add(scope)
            self._counts.polls += 1
            try:
                state = await self._source.fetch(job.id, deadline=sched.deadline)
            except NotFoundError as exc:
                seen = True
                self._lose(job, exc)
            except _FATAL as exc:
                seen = True
                self._fail(exc)
            except AsyncBulkError as exc:
                seen = True
                self._counts.poll_errors += 1
                logger.debug(
                    "%s %s: poll failed, trying later: %s",
                    self._source.kind,
                    job.id,
                    exc,
                    extra=self._fields(job.id, exc),
                )
                sched.poll_failed(job, self._clock())
            else:
                seen = True
                self._observe(job, state)
            finally:
                self._poll_scopes.discard(scope)
                if not seen:
                    sched.poll_cancelled(job, self._clock())
                sched.work_done()
                self._done()

    async def _sweep(self, generation: int) -> None:
        sched = self._sched
        ended = False
        with anyio.CancelScope() as scope:
            self._poll_scopes.add(scope)
            self._counts.sweeps += 1
            view = _View(self, generation)
            try:
                complete = await self._source.sweep(view, deadline=sched.deadline)
            except _FATAL as exc:
                ended = True
                sched.sweep_cancelled(self._clock())
                self._fail(exc)
            except AsyncBulkError as exc:
                ended = True
                self._counts.poll_errors += 1
                sched.sweep_failed(self._clock())
                logger.debug(
                    "%s listing failed, trying later: %s",
                    self._source.kind,
                    exc,
                    extra=self._fields(None, exc),
                )
            else:
                ended = True
                if complete is None:
                    sched.no_listing()
                elif view.partial:
                    sched.sweep_partial(self._clock())
                else:
                    sched.sweep_ended(
                        generation, self._clock(), complete=complete, shifted=view.moved
                    )
            finally:
                self._poll_scopes.discard(scope)
                if not ended:
                    sched.sweep_cancelled(self._clock())
                sched.work_done()
                self._done()

    async def _acknowledge(self, item: tuple[str, T]) -> None:
        assert self._on_taken is not None  # noqa: S101 -- only queued when there is a hook
        job_id, state = item
        settled = False
        with anyio.CancelScope() as scope:
            self._ack_scopes.add(scope)
            try:
                await self._on_taken(state, self._sched.deadline)
            except AsyncBulkError as exc:
                settled = True
                self._not_acknowledged(job_id, exc)
            else:
                settled = True
                self._counts.acknowledged += 1
            finally:
                self._ack_scopes.discard(scope)
                if not settled:
                    self._not_acknowledged(job_id, None)
                self._acking -= 1
                self._done()

    def _done(self) -> None:
        self._wake.set()
        self._report()

    # -- outcomes -----------------------------------------------------------------------------

    def _observe(self, job: Job, state: T) -> None:
        if self._sched.jobs.get(job.id) is not job:
            return  # finished by a sweep, removed or expired meanwhile
        self._note_entries(job.id, state)
        if self._source.is_finished(state):
            if self._sched.finish(job.id):
                self._finish(job.id, state)
        else:
            self._sched.polled(job, self._source.progress(state), self._clock())

    def _swept(self, job_id: str, state: T, generation: int) -> None:
        if job_id not in self._sched.jobs:
            return
        self._note_entries(job_id, state)
        if self._source.is_finished(state):
            if self._sched.finish(job_id):
                self._finish(job_id, state)
        else:
            self._sched.swept(job_id, self._source.progress(state), generation, self._clock())

    def _note_entries(self, job_id: str, state: T) -> None:
        if self._entry_counts is None:
            return
        counts = self._entry_counts(state)
        if counts is None:
            return
        totals = self._counts.entries
        for status, count in self._job_entries.get(job_id, {}).items():
            left = totals[status] - count
            if left:
                totals[status] = left
            else:
                del totals[status]
        for status, count in counts.items():
            totals[status] = totals.get(status, 0) + count
        self._job_entries[job_id] = counts

    def _finish(self, job_id: str, state: T) -> None:
        counts = self._counts
        counts.finished += 1
        failed = self._source.is_failed(state)
        if failed:
            counts.failed += 1
        finished_at = self._source.finished_at(state)
        lag = None if finished_at is None else max(0.0, time.time() - finished_at)
        if lag is not None:
            counts.lags.append(lag)
        if self._telemetry is not None:
            self._telemetry.ended(job_id, "failed" if failed else "finished", lag)
        if self._job_entries:
            self._job_entries.pop(job_id, None)  # its last counts stay in the totals
        if self._log is not None:
            self._log_finished.append(job_id)
        self._ready.append((job_id, state))
        self._ready_event.set()
        self._wake.set()
        self._report()

    def _lose(self, job: Job, error: NotFoundError) -> None:
        if not self._sched.lose(job):
            return
        self._counts.lost += 1
        self._lost.append((job.id, error))
        if self._telemetry is not None:
            self._telemetry.ended(job.id, "lost")
        logger.warning(
            "%s %s was not found", self._source.kind, job.id, extra=self._fields(job.id, error)
        )

    def _fields(
        self, job_id: str | None = None, error: BaseException | None = None, **more: Any
    ) -> dict[str, Any]:
        """A log record's facts (`log_fields`), with this tracker's vendor and job kind."""
        return log_fields(
            getattr(self._source, "vendor", None),
            job_id=job_id,
            error=error,
            job_kind=self._source.kind,
            **more,
        )

    def _fail(self, error: BaseException) -> None:
        if self._fatal is None:
            self._fatal = error
        self._wake.set()

    def _source_stats(self) -> RequestStats | None:
        source = self._stats_source
        if source is None:
            return None
        stats = getattr(source, "stats", None)
        return stats if isinstance(stats, RequestStats) else None

    def _count_requests(self) -> None:
        counts = self._counts
        if (stats := self._source_stats()) is not None:
            counts.requests = stats.requests - self._base_requests
            counts.rate_limited = stats.rate_limited - self._base_rate_limited
        else:
            counts.requests = counts.polls + counts.sweeps

    def _report_end(self) -> None:
        if not self._reported_end:
            self._reported_end = True
            if self._telemetry is not None:
                self._telemetry.abandon()
            self._report(force=True)

    def _report(self, *, force: bool = False) -> None:
        if self._on_progress is None:
            return
        now = self._clock()
        if force or now - self._last_progress >= PROGRESS_EVERY:
            self._last_progress = now
            self._on_progress(self.stats)
