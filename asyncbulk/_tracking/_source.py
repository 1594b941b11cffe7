"""What a vendor client gives the tracker: `JobSource`, and the `SweepView` a sweep reports to."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from collections.abc import Hashable, Sequence

__all__ = ["JobSource", "SweepView"]

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class SweepView(Protocol[T_contra]):
    """What a source's `JobSource.sweep` reports each listed job to."""

    def known(self, job_id: str) -> Any:
        """The job's last progress seen (None before any), or `UNTRACKED` for a job not followed."""
        ...

    def unchanged(self, job_id: str) -> None:
        """The listing shows the job as it was last seen: no object needs building."""
        ...

    def listed(self, job_id: str, progress: Any, initial: Any = None) -> bool:
        """`known` and `unchanged` in one call: whether the job must be built and reported.

        True for a tracked job whose progress differs from the last seen (report it with
        `changed`); a job shown as last seen, or as ``initial`` before it was seen at all, is
        marked unchanged, and False; so is an untracked job.
        """
        ...

    def listed_many(
        self,
        ids: Sequence[object],
        progress: Sequence[object],
        initial: Any = None,
        *,
        page: int | None = None,
    ) -> list[int]:
        """`listed` for a whole page: the indexes ``i`` for which ``listed(ids[i], ...)`` is True.

        ``ids`` and ``progress`` are the page's jobs, in order, and as long as each other; an
        id that is not a string names no job and is skipped. One call per page, not per job.
        ``page``, the page's number, lets the next sweep of a listing that did not move find
        each job where this one did, without a lookup (give it when pages are numbered).
        """
        ...

    def changed(self, job_id: str, state: T_contra) -> None:
        """The listing shows the job finished or moved; ``state`` is the job built from it."""
        ...

    def shifted(self) -> None:
        """The listing changed while it was read (its count moved between two pages).

        A job may then have slipped from a page not yet read to one already read, so a job
        this sweep did not list is not taken for gone until the next sweep misses it too.
        """
        ...

    def skipped(self) -> None:
        """Some pages went unread (the server answered 429): the next sweep reads them.

        No job this sweep did not list is taken for gone, and none is polled for it.
        """
        ...


class JobSource(Protocol[T]):
    """What a vendor client gives the tracker: how to read one job, or many at once.

    Attributes:
        kind: what a job is called, for messages ("Zefort task").
    """

    kind: str

    async def fetch(self, job_id: str, *, deadline: float | None = None) -> T:
        """One request for one job's current state, ending by ``deadline`` (absolute)."""
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

    async def sweep(self, view: SweepView[T], *, deadline: float | None = None) -> bool | None:
        """Report every tracked job the listing shows to ``view``, building only changed ones.

        Returns:
            True when the whole listing was read; False when it cannot be read whole (it
            ignores its ``page`` parameter, say), which stops sweeping; None without a listing.
        """
        ...

    def sweep_cost(self) -> int | None:
        """How many requests a sweep would take now; None when the vendor has no listing."""
        ...
