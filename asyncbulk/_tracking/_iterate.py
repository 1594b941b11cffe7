"""The iterators over a tracker's jobs, and the two calls most code needs: `track`, `wait_for`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from asyncbulk._exceptions import ValidationError
from asyncbulk._tracking._engine import JobTracker
from asyncbulk._tracking._options import check_id

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType

    from asyncbulk._tracking._source import JobSource
    from asyncbulk._tracking._stats import TrackerStats

__all__ = ["TrackIterator", "track", "wait_for"]

T = TypeVar("T")


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
        """A frozen snapshot of the tracker's counts."""
        return self.tracker.stats

    @property
    def unacknowledged(self) -> tuple[str, ...]:
        """Ids of the jobs taken whose acknowledgement failed or did not settle in time."""
        return self.tracker.unacknowledged

    @property
    def expired(self) -> tuple[str, ...]:
        """Ids of the jobs dropped because their own deadline passed."""
        return self.tracker.expired

    @property
    def lost(self) -> tuple[str, ...]:
        """Ids of the jobs the server said do not exist."""
        return self.tracker.lost

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
    **settings: Any,
) -> TrackIterator[T]:
    """Yield each of the jobs once, as it finishes, in the order detected.

    Args:
        source: the vendor client's view of its jobs.
        job_ids: the jobs to follow; an id given twice is followed once.
        timeout: seconds after which the iteration ends with `JobTimeoutError` naming the
            unfinished jobs; None for no deadline.
        **settings: further `JobTracker` arguments (``options``, ``on_progress``...).

    Raises:
        ValidationError: an id is not a non-empty string (the error names its position).
    """
    if isinstance(job_ids, str | bytes):
        raise ValidationError("job_ids", "must be an iterable of ids, not a single string")
    tracker: JobTracker[T] = JobTracker(source, timeout=timeout, **settings)
    tracker.add_many(job_ids)
    tracker.close()
    return TrackIterator(tracker)


async def wait_for(
    source: JobSource[T],
    job_id: str,
    *,
    timeout: float | None = None,  # noqa: ASYNC109 -- the deadline is the tracker's, not a cancel scope's
    **settings: Any,
) -> T:
    """Wait until one job finishes and return it (a failed job is returned too).

    With ``on_taken``, the job is handed to it at once and what it returns is returned; if it
    fails, the job is returned as it was (see `JobTracker.unacknowledged`).

    Raises:
        JobTimeoutError: the deadline passed; ``unfinished`` is ``(job_id,)``.
        NotFoundError: the job does not exist.
        ValidationError: the id is not a non-empty string.
    """
    check_id("job_id", job_id)
    iterator = track(source, [job_id], timeout=timeout, **settings)
    try:
        async for job in iterator:
            return await iterator.tracker._acknowledge_taken(job)  # noqa: SLF001
    finally:
        await iterator.aclose()
    raise AssertionError(
        "unreachable: the iteration ends with the job or an error"
    )  # pragma: no cover
