import asyncio

import anyio
import pytest

from asyncbulk import ValidationError
from asyncbulk._pagination import OrderedPages

pytestmark = pytest.mark.anyio

PAGE = 10


class Listing:
    """A fake listing of `size` items in pages of PAGE, claiming `total` items."""

    def __init__(self, size, *, total=None, delays=None, fail_at=None):  # noqa: D107
        self.size = size
        self.total = size if total is None else total
        self.delays = delays or {}
        self.fail_at = fail_at
        self.in_flight = 0
        self.most_in_flight = 0
        self.started = []
        self.cancelled = 0

    async def fetch(self, index):
        self.started.append(index)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delays.get(index, 0.001))
            if index == self.fail_at:
                raise RuntimeError(f"page {index} failed")
            start = index * PAGE
            return list(range(start, min(self.size, start + PAGE)))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1

    def pages(self, prefetch=4):
        return OrderedPages(
            self.fetch,
            count=lambda _page: -(-self.total // PAGE),
            is_last=lambda _index, page: len(page) < PAGE,
            prefetch=prefetch,
        )


async def collect(pages):
    return [item async for page in pages for item in page]


async def test_pages_come_in_order_even_when_later_ones_finish_first():
    """A slow early page does not reorder the output."""
    listing = Listing(95, delays={1: 0.05, 2: 0.0, 3: 0.0})
    assert await collect(listing.pages()) == list(range(95))


async def test_prefetch_bounds_the_pages_in_flight():
    """No more than `prefetch` pages are fetched ahead at once."""
    listing = Listing(500)
    await collect(listing.pages(prefetch=3))
    assert listing.most_in_flight == 3
    assert listing.started == list(range(51))


async def test_a_total_too_large_stops_at_the_first_short_page():
    """A total that lies upward ends at the short page; the pages beyond are cancelled."""
    listing = Listing(25, total=1000)
    assert await collect(listing.pages()) == list(range(25))
    assert max(listing.started) < 8


async def test_a_total_too_small_reads_on_while_pages_are_full():
    """A total that lies downward still reads everything, one page at a time past it."""
    listing = Listing(47, total=10)
    assert await collect(listing.pages()) == list(range(47))


@pytest.mark.parametrize(
    ("size", "requests"),
    [
        pytest.param(0, 1, id="empty"),
        pytest.param(PAGE, 2, id="exactly-one-page"),
        pytest.param(PAGE + 1, 2, id="one-more"),
    ],
)
async def test_edges_cost_the_expected_requests(size, requests):
    """Empty, exactly one page and one more: all items, and no more requests than needed."""
    listing = Listing(size)
    assert await collect(listing.pages()) == list(range(size))
    assert len(listing.started) == requests


async def test_an_unknown_count_reads_page_after_page():
    """Without a count the listing is read until a short page."""
    listing = Listing(33)
    pages = OrderedPages(listing.fetch, count=lambda _p: None, is_last=lambda _i, p: len(p) < PAGE)
    assert await collect(pages) == list(range(33))


async def test_a_failing_page_raises_in_order_and_stops_the_rest():
    """The error of page 2 reaches the caller after pages 0 and 1, and nothing runs after."""
    listing = Listing(200, fail_at=2)
    seen = []
    with pytest.raises(RuntimeError, match="page 2"):  # noqa: PT012 -- the loop is the call
        async for page in listing.pages():
            seen.extend(page)
    assert seen == list(range(20))
    await asyncio.sleep(0.01)
    assert listing.in_flight == 0


async def test_aclose_cancels_the_fetches_ahead():
    """Closing early cancels the pages in flight and waits for them."""
    listing = Listing(1000, delays=dict.fromkeys(range(1, 100), 0.5))
    pages = listing.pages(prefetch=5)
    await pages.__anext__()
    await asyncio.sleep(0.01)
    assert listing.in_flight == 5
    await pages.aclose()
    assert listing.in_flight == 0
    assert listing.cancelled == 5
    with pytest.raises(StopAsyncIteration):
        await pages.__anext__()


async def test_breaking_out_of_async_for_leaves_nothing_running():
    """An iterator dropped after `break` cancels its fetches at once."""
    listing = Listing(1000, delays=dict.fromkeys(range(1, 100), 0.5))
    async for _page in listing.pages(prefetch=5):
        await asyncio.sleep(0.01)
        break
    await asyncio.sleep(0.01)
    assert listing.cancelled == 5
    assert listing.in_flight == 0


async def test_a_cancelled_caller_leaves_nothing_running():
    """Cancelling the consumer mid-wait cancels every fetch."""
    listing = Listing(1000, delays=dict.fromkeys(range(100), 0.5))
    pages = listing.pages()
    with anyio.move_on_after(0.05):
        await pages.__anext__()
    await asyncio.sleep(0.01)
    assert listing.in_flight == 0


@pytest.mark.parametrize("prefetch", [0, -1, 1.5, True, None], ids=str)
def test_prefetch_must_be_a_positive_int(prefetch):
    """A bad prefetch is a ValidationError naming it."""
    with pytest.raises(ValidationError, match="prefetch"):
        OrderedPages(Listing(1).fetch, count=len, is_last=bool, prefetch=prefetch)
