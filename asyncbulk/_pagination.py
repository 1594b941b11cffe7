"""Pages of a listing fetched several at a time and handed out in order, vendor-neutral.

`OrderedPages` reads page 0, learns from it how many pages to expect, then keeps up to
`prefetch` of the following pages in flight or waiting, so the network works while the caller
handles the page it has: reading is about as fast as the slowest of the network, the server and
the caller, not their sum. Memory stays bounded by `prefetch` pages.

Why tasks and not a task group: the fetches ahead must run *between* two ``__anext__`` calls,
while the caller's own code runs, and no task group can span that without the caller's
``async with``. So the iterator owns its fetch tasks and every way out cancels them: `aclose`,
leaving ``async with``, reaching the end, a fetch failing, the caller being cancelled inside
``__anext__``, and the iterator being dropped (CPython frees an iterator left by ``break`` at
once, and its finaliser cancels what is still running). Nothing outlives it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Generic, Self, TypeVar

from asyncbulk._exceptions import ValidationError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["ClosingIterator", "OrderedPages", "check_prefetch"]

P = TypeVar("P")


class ClosingIterator:
    """What every async iterator over a listing shares.

    ``async for``, and ``async with`` or `aclose` to stop what is still being fetched.
    Subclasses define ``__anext__`` and `aclose`.
    """

    def __aiter__(self) -> Self:
        """The iterator itself."""
        return self

    async def __aenter__(self) -> Self:
        """Nothing to open: fetching starts on the first ``__anext__``."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop every fetch still running."""
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the iteration and whatever it is still fetching; idempotent."""
        raise NotImplementedError


def check_prefetch(value: object) -> int:
    """``prefetch`` as an int >= 1, or a `ValidationError` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError("prefetch", f"must be an integer >= 1, not {value!r}")
    return value


def _retrieve(task: asyncio.Task[object]) -> None:
    # A fetch that failed after the iterator stopped caring must not log "never retrieved".
    if not task.cancelled():
        task.exception()


async def _call(fetch: Callable[[int], Awaitable[P]], index: int) -> P:
    return await fetch(index)


class OrderedPages(ClosingIterator, Generic[P]):
    """An async iterator over pages 0, 1, 2, ... fetched concurrently and yielded in order.

    Page 0 is fetched alone; `count` reads from it how many pages there are. Pages up to that
    count are then fetched ahead, `prefetch` at most in flight or waiting to be consumed. The
    count is a hint a server may get wrong: the listing ends at the first page `is_last` says
    ends it (a short page, say), even before the count; and when the last counted page does not
    end it, the next pages are read one at a time until one does.

    Use it in ``async for``; `aclose` (or ``async with``) stops the fetches still running.

    Args:
        fetch: fetches page ``index`` (0-based); its errors end the iteration and reach the
            caller in page order. It should not refer to the iterator itself, so that an
            iterator the caller drops is freed (and its fetches cancelled) at once.
        count: the number of pages the listing holds, read from page 0; None when unknown,
            which reads page after page.
        is_last: whether page ``index`` is the listing's last; called in order.
        prefetch: pages fetched ahead of the one the caller has, at least 1.
    """

    def __init__(
        self,
        fetch: Callable[[int], Awaitable[P]],
        *,
        count: Callable[[P], int | None],
        is_last: Callable[[int, P], bool],
        prefetch: int = 4,
    ) -> None:
        """Set up the iteration; nothing is fetched before the first ``__anext__``."""
        self._fetch = fetch
        self._count = count
        self._is_last = is_last
        self._prefetch = check_prefetch(prefetch)
        self._window: deque[asyncio.Task[P]] = deque()
        self._launched = 0
        self._consumed = 0
        # Pages [0, _limit) may be fetched now: page 0 alone until it tells the count.
        self._limit = 1
        self._done = False

    def __repr__(self) -> str:
        """Progress, for debugging."""
        state = "done" if self._done else f"{len(self._window)} ahead"
        return f"<OrderedPages consumed={self._consumed} expected={self._limit} {state}>"

    @property
    def consumed(self) -> int:
        """Pages handed out so far."""
        return self._consumed

    @property
    def launched(self) -> int:
        """Pages whose fetch has started so far."""
        return self._launched

    @property
    def expected(self) -> int:
        """Pages the listing is expected to hold, as far as is known now."""
        return self._limit

    async def __anext__(self) -> P:
        """The next page, in order.

        Raises:
            StopAsyncIteration: the listing has ended (or the iterator was closed).
            Exception: whatever `fetch` raised for this page.
        """
        if self._done:
            raise StopAsyncIteration
        self._fill()
        if not self._window:  # defensive: every page up to the count was handed out
            self._done = True
            raise StopAsyncIteration
        task = self._window.popleft()
        try:
            if not task.done():
                # wait(), not a bare await: a cancelled caller must not cancel a fetch that
                # another __anext__ could still use. (We cancel everything below anyway.)
                await asyncio.wait((task,))
            page = task.result()
        except BaseException:
            task.cancel()
            self._stop()
            raise
        index = self._consumed
        self._consumed += 1
        if index == 0:
            hint = self._count(page)
            self._limit = 1 if hint is None else max(1, hint)
        if self._is_last(index, page):
            self._stop()
        else:
            if index == self._limit - 1:
                # The count ran out but this page did not end the listing: read on, one by one.
                self._limit += 1
            self._fill()
        return page

    def _fill(self) -> None:
        loop = asyncio.get_running_loop()
        while len(self._window) < self._prefetch and self._launched < self._limit:
            # The task must not refer to this iterator, or a dropped iterator would be kept
            # alive by its own fetches and never finalised.
            task = loop.create_task(_call(self._fetch, self._launched))
            task.add_done_callback(_retrieve)
            self._window.append(task)
            self._launched += 1

    def _stop(self) -> list[asyncio.Task[P]]:
        """End the iteration and cancel the fetches ahead; returns them, to await."""
        self._done = True
        tasks = list(self._window)
        self._window.clear()
        for task in tasks:
            task.cancel()
        return tasks

    async def aclose(self) -> None:
        """Stop: cancel the fetches still running and wait for them to end; idempotent."""
        tasks = self._stop()
        if tasks:
            await asyncio.wait(tasks)

    def __del__(self) -> None:
        """Cancel what is still running when the iterator is dropped (``break`` out of a loop)."""
        window = getattr(self, "_window", None)
        if not window:
            return
        for task in window:
            try:
                task.cancel()
            except RuntimeError:  # the event loop is already closed: nothing runs any more
                return
