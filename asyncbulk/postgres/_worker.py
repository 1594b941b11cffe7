"""`Worker`: the tracking engine ``asyncbulk worker`` runs, one per process, many per store.

A worker registers in a `PostgresStore`, then runs four loops until told to stop:

- **heartbeat** (every ``heartbeat_interval``): refresh its heartbeat, sweep workers whose
  heartbeat expired (any worker may), and claim more jobs while it owns fewer than
  ``max_jobs``: three statements per interval, however many jobs it tracks;
- **polls** (every ``poll_interval``): ask the vendor about every job it owns, from memory;
  polls never touch the database;
- **finishes** (every ``finish_interval``): record the jobs seen finished since the last
  round in one statement, fenced by each claim's epoch;
- **deliveries** (when given a ``deliver`` hook): take finished jobs, hand each to the hook,
  acknowledge them together.

When the store says it was swept (its heartbeat returned False: it stalled longer than the
expiry), it forgets every job it tracked and registers again: whatever it would still record
about them is refused anyway. A clean stop finishes the deliveries in flight, records the
finishes it saw, and releases its jobs at once.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio
import attrs

from asyncbulk._exceptions import AsyncBulkError, RateLimitedError, ValidationError
from asyncbulk._logs import log_fields

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from asyncbulk.chakra import ChakraClient
    from asyncbulk.postgres._records import Claim, Delivery, JobKey, OriginLike
    from asyncbulk.postgres._store import PostgresStore
    from asyncbulk.redis import SharedLimiter
    from asyncbulk.zefort import ZefortClient

__all__ = ["ChakraPoller", "JobPoller", "Worker", "WorkerStats", "ZefortPoller"]

_T = TypeVar("_T")

logger = logging.getLogger("asyncbulk.postgres")

DeliverHook = Callable[["Delivery"], Awaitable[None]]


class JobPoller(Protocol):
    """How a worker asks the vendor about one job it owns."""

    async def poll(self, claim: Claim) -> Mapping[str, Any] | None:
        """None while the job runs; once finished, the JSON result to record and deliver."""


class _LimitedPoller:
    """What both vendors' pollers share: the wait for a shared limiter, and its 429 pause."""

    def __init__(self, *, limiter: SharedLimiter | None, limiter_wait: float) -> None:
        if (
            isinstance(limiter_wait, bool)
            or not isinstance(limiter_wait, int | float)
            or not math.isfinite(limiter_wait)
            or limiter_wait <= 0
        ):
            raise ValidationError(
                "limiter_wait", f"must be a finite number of seconds > 0, not {limiter_wait!r}"
            )
        self._limiter = limiter
        self._limiter_wait = limiter_wait

    async def _limited(self, request: Callable[[], Awaitable[_T]]) -> _T:
        if self._limiter is not None:
            await self._limiter.acquire(deadline=anyio.current_time() + self._limiter_wait)
        try:
            return await request()
        except RateLimitedError as error:
            if self._limiter is not None and error.retry_after:
                await self._limiter.note_throttled(error.retry_after)
            raise


class ZefortPoller(_LimitedPoller):
    """A `JobPoller` reading each task with `ZefortClient.get_task`.

    Given a shared limiter (`asyncbulk.redis.RedisRateLimit`), every poll first waits for it,
    and a 429 pauses every process sharing it, so the workers together keep to the account's
    rate.
    """

    def __init__(
        self,
        client: ZefortClient,
        *,
        limiter: SharedLimiter | None = None,
        limiter_wait: float = 30.0,
    ) -> None:
        """Poll through ``client`` (the caller opens and closes it).

        Args:
            client: the client of the account the tasks belong to.
            limiter: the limit shared with the other workers, or None.
            limiter_wait: the longest one poll waits for the limiter; past it, the poll is
                skipped until the next round.

        Raises:
            ValidationError: ``limiter_wait`` is not a positive number of seconds.
        """
        super().__init__(limiter=limiter, limiter_wait=limiter_wait)
        self._client = client

    def __repr__(self) -> str:
        """Name the client."""
        return f"ZefortPoller({self._client!r})"

    async def poll(self, claim: Claim) -> Mapping[str, Any] | None:
        """The task's id and status once it finished; None while it runs.

        Raises:
            TimeoutError: the shared limiter did not let the poll through in time.
            AsyncBulkError: the client's errors, as `ZefortClient.get_task` raises them.
        """
        task = await self._limited(lambda: self._client.get_task(claim.key.id))
        if not task.is_finished:
            return None
        return {"id": task.id, "backend_status": task.backend_status, "failed": task.is_failed}


class ChakraPoller(_LimitedPoller):
    """A `JobPoller` reading each background job with `ChakraClient.get_background_job`.

    A job counts as finished by `BackgroundJob.is_finished` (the vendor documents no terminal
    status: see there). Given a shared limiter, every poll first waits for it, and a 429
    pauses every process sharing it.
    """

    def __init__(
        self,
        client: ChakraClient,
        *,
        limiter: SharedLimiter | None = None,
        limiter_wait: float = 30.0,
    ) -> None:
        """Poll through ``client`` (the caller opens and closes it).

        Args:
            client: the client of the account the jobs belong to.
            limiter: the limit shared with the other workers, or None.
            limiter_wait: the longest one poll waits for the limiter; past it, the poll is
                skipped until the next round.

        Raises:
            ValidationError: ``limiter_wait`` is not a positive number of seconds.
        """
        super().__init__(limiter=limiter, limiter_wait=limiter_wait)
        self._client = client

    def __repr__(self) -> str:
        """Name the client."""
        return f"ChakraPoller({self._client!r})"

    async def poll(self, claim: Claim) -> Mapping[str, Any] | None:
        """The job's id, status and entry counts once it finished; None while it runs.

        Raises:
            TimeoutError: the shared limiter did not let the poll through in time.
            AsyncBulkError: the client's errors, as `ChakraClient.get_background_job` raises
                them.
        """
        job = await self._limited(lambda: self._client.get_background_job(claim.key.id))
        if not job.is_finished:
            return None
        return {
            "id": job.id,
            "completion_status": job.completion_status,
            "status_counts": dict(job.status_counts),
            "failed": job.is_failed,
        }


@attrs.frozen(kw_only=True)
class WorkerStats:
    """A snapshot of one worker's work.

    Attributes:
        owned: jobs it tracks now.
        claimed: jobs it claimed in all.
        polls: polls it sent to the vendor.
        finished: finishes the store recorded for it.
        refused: finishes the store refused (the job was no longer its own).
        delivered: deliveries acknowledged.
        swept: times it found itself swept and started again.
    """

    owned: int
    claimed: int
    polls: int
    finished: int
    refused: int
    delivered: int
    swept: int


class Worker:
    """Tracks a share of a store's jobs, polling them in memory; delivers finished ones.

    Example::

        async with PostgresStore(dsn) as store, ZefortClient(key) as zefort:
            worker = Worker(store, ZefortPoller(zefort), origin=origin, deliver=hook)
            await worker.run(stop=stop_event)
    """

    def __init__(
        self,
        store: PostgresStore,
        poller: JobPoller,
        *,
        origin: OriginLike | None = None,
        deliver: DeliverHook | None = None,
        worker_id: str | None = None,
        heartbeat_interval: float = 1.0,
        expiry: float = 5.0,
        claim_batch: int = 500,
        max_jobs: int = 10_000,
        poll_interval: float = 1.0,
        polls_in_flight: int = 8,
        finish_interval: float = 0.25,
        delivery_batch: int = 100,
        delivery_lease: float = 60.0,
    ) -> None:
        """Describe the worker; nothing is sent before `run`.

        Args:
            store: the open store the workers share.
            poller: how to ask the vendor about one job.
            origin: claim only this origin's jobs (the poller's client's); None claims any.
            deliver: the hook each finished job is handed to, once; None delivers nothing.
            worker_id: the worker's name in the store; a fresh random one by default.
            heartbeat_interval: seconds between heartbeats (and sweeps and claims).
            expiry: a worker silent this long is swept and its jobs freed; several times
                ``heartbeat_interval``.
            claim_batch: the most jobs claimed per heartbeat.
            max_jobs: the most jobs owned at once.
            poll_interval: seconds between two polls of a job.
            polls_in_flight: polls sent at once.
            finish_interval: seconds between two finish statements.
            delivery_batch: the most jobs taken per delivery statement.
            delivery_lease: seconds a delivery is held; the hook must return within it.

        Raises:
            ValidationError: a value is out of range, naming it.
        """
        for name, seconds in (
            ("heartbeat_interval", heartbeat_interval),
            ("expiry", expiry),
            ("poll_interval", poll_interval),
            ("finish_interval", finish_interval),
            ("delivery_lease", delivery_lease),
        ):
            if not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds <= 0:
                raise ValidationError(name, f"must be a finite number of seconds > 0: {seconds!r}")
        if expiry <= 2 * heartbeat_interval:
            raise ValidationError("expiry", "must be more than twice heartbeat_interval")
        for name, count in (
            ("claim_batch", claim_batch),
            ("max_jobs", max_jobs),
            ("polls_in_flight", polls_in_flight),
            ("delivery_batch", delivery_batch),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValidationError(name, f"must be an integer >= 1, not {count!r}")
        self._store = store
        self._poller = poller
        self._origin = origin
        self._deliver = deliver
        self._id = worker_id or f"worker-{uuid.uuid4().hex}"
        self._heartbeat_interval = heartbeat_interval
        self._expiry = expiry
        self._claim_batch = claim_batch
        self._max_jobs = max_jobs
        self._poll_interval = poll_interval
        self._polls = anyio.CapacityLimiter(polls_in_flight)
        # Jobs just claimed (a dead worker's, taken over) are polled at once, not after the round
        # of the jobs already owned: their own slots keep them from queueing behind that round.
        self._fresh_polls = anyio.CapacityLimiter(polls_in_flight)
        self._finish_interval = finish_interval
        self._delivery_batch = delivery_batch
        self._delivery_lease = delivery_lease
        self._owned: dict[JobKey, Claim] = {}
        self._seen_finished: list[tuple[Claim, Mapping[str, Any]]] = []
        self._stopping = False
        self._counts = dict.fromkeys(
            ("claimed", "polls", "finished", "refused", "delivered", "swept"), 0
        )

    def __repr__(self) -> str:
        """The worker's id and how many jobs it owns."""
        return f"Worker({self._id!r}, owned={len(self._owned)})"

    @property
    def worker_id(self) -> str:
        """The worker's name in the store."""
        return self._id

    def statistics(self) -> WorkerStats:
        """A snapshot of the worker's counters."""
        return WorkerStats(owned=len(self._owned), **self._counts)

    async def run(self, *, stop: anyio.Event | None = None) -> None:
        """Track and deliver until ``stop`` is set, then stop cleanly.

        A clean stop: polls and claims end, deliveries in flight finish, the finishes seen are
        recorded, and the worker's jobs are released for the others at once. A cancelled or
        failed run releases nothing: the sweeper frees its jobs after ``expiry``.
        """
        await self._store.register_worker(self._id)
        async with anyio.create_task_group() as group:
            tracking = anyio.CancelScope()
            delivering = anyio.Event()

            async def track() -> None:
                with tracking:
                    async with anyio.create_task_group() as loops:
                        loops.start_soon(self._heartbeats, loops)
                        loops.start_soon(self._poll_rounds)
                        loops.start_soon(self._finish_rounds)

            async def deliver() -> None:
                try:
                    if self._deliver is not None:
                        await self._deliveries(self._deliver)
                finally:
                    delivering.set()

            group.start_soon(track)
            group.start_soon(deliver)
            await (stop.wait() if stop is not None else anyio.sleep_forever())
            self._stopping = True
            tracking.cancel()
            await delivering.wait()
        await self._record_finishes()
        await self._store.unregister_worker(self._id)
        self._owned.clear()

    async def _heartbeats(self, loops: TaskGroup) -> None:
        while True:
            if not await self._store.heartbeat(self._id):
                logger.warning(
                    "worker %s was swept: dropping its jobs", self._id, extra={"worker": self._id}
                )
                self._counts["swept"] += 1
                self._owned.clear()
                self._seen_finished.clear()
                await self._store.register_worker(self._id)
            swept = await self._store.sweep(self._expiry)
            if swept.workers:
                logger.info(
                    "swept %s, freeing %d jobs",
                    ", ".join(swept.workers),
                    swept.jobs,
                    extra={"workers": list(swept.workers), "count": swept.jobs},
                )
            room = min(self._claim_batch, self._max_jobs - len(self._owned))
            if room > 0:
                for claim in await self._store.claim(self._id, limit=room, origin=self._origin):
                    self._owned[claim.key] = claim
                    self._counts["claimed"] += 1
                    loops.start_soon(self._poll, claim, self._fresh_polls)
            await anyio.sleep(self._heartbeat_interval)

    async def _poll_rounds(self) -> None:
        while True:
            round_ends = anyio.current_time() + self._poll_interval
            async with anyio.create_task_group() as group:
                for claim in list(self._owned.values()):
                    group.start_soon(self._poll, claim, self._polls)
            await anyio.sleep_until(round_ends)

    async def _poll(self, claim: Claim, slots: anyio.CapacityLimiter) -> None:
        async with slots:
            if self._owned.get(claim.key) is not claim:
                return
            self._counts["polls"] += 1
            try:
                result = await self._poller.poll(claim)
            except (AsyncBulkError, TimeoutError) as error:
                logger.warning(
                    "polling %s failed, polling again next round: %s",
                    claim.key,
                    error,
                    extra=log_fields(claim.key.vendor, job_id=claim.key.id, error=error),
                )
                return
        if result is not None and self._owned.get(claim.key) is claim:
            del self._owned[claim.key]
            self._seen_finished.append((claim, result))

    async def _finish_rounds(self) -> None:
        while True:
            await anyio.sleep(self._finish_interval)
            await self._record_finishes()

    async def _record_finishes(self) -> None:
        batch, self._seen_finished = self._seen_finished, []
        if not batch:
            return
        recorded = await self._store.finish(self._id, batch)
        self._counts["finished"] += len(recorded)
        self._counts["refused"] += len(batch) - len(recorded)

    async def _deliveries(self, hook: DeliverHook) -> None:
        while not self._stopping:
            taken = await self._store.take_deliveries(
                self._id, limit=self._delivery_batch, lease=self._delivery_lease
            )
            if not taken:
                await anyio.sleep(self._heartbeat_interval)
                continue
            handled = []
            # The lease bounds the handling: past it, the job may go to another consumer.
            with anyio.move_on_after(self._delivery_lease * 0.9):
                for delivery in taken:
                    try:
                        await hook(delivery)
                    except Exception:
                        logger.exception(
                            "the delivery hook failed on %s",
                            delivery.key,
                            extra=log_fields(delivery.key.vendor, job_id=delivery.key.id),
                        )
                    else:
                        handled.append(delivery)
            acked = await self._store.acknowledge(self._id, handled)
            self._counts["delivered"] += len(acked)
