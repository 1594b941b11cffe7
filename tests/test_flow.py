"""Flow control: the pure rules on a hand-driven clock, then a session over a scripted transport."""

from __future__ import annotations

import asyncio
import collections
import itertools

import anyio
import anyio.lowlevel
import orjson
import pytest

from asyncbulk import (
    ClientClosedError,
    DeadlineExceededError,
    Priority,
    RateLimit,
    RateLimitedError,
    RetryPolicy,
    ValidationError,
)
from asyncbulk._flow import WEIGHTS, FairQueue, FlowControl, InFlight, SendRate, ThrottleRule
from asyncbulk._session import BearerAuth, ChakraEnvelope, Session
from asyncbulk._transport import MockTransport, TransportRequest, TransportResponse


def send_for(rate: SendRate, start: float, seconds: float, step: float) -> float:
    """Send as fast as the limiter allows, one try every ``step`` s; return the time reached."""
    now = start
    while now < start + seconds:
        if rate.delay(now) <= 0:
            rate.take(now)
        now += step
    return now


# -- the send rate ---------------------------------------------------------------------------


def test_unlimited_until_told_otherwise() -> None:
    """With no cap and no 429, every request may go at once."""
    rate = SendRate(0.0)
    for n in range(1000):
        assert rate.delay(n / 1e6) == 0
        rate.take(n / 1e6)
    assert rate.rate(1.0) is None


def test_a_configured_cap_allows_its_burst_then_paces() -> None:
    """RateLimit(10, burst=5): five at once, then one every 0.1 s."""
    rate = SendRate(0.0, cap=RateLimit(10, burst=5))
    for _ in range(5):
        assert rate.delay(0.0) == 0
        rate.take(0.0)
    assert rate.delay(0.0) == pytest.approx(0.1)
    assert rate.delay(0.05) == pytest.approx(0.05)
    assert rate.delay(0.1) == 0


def test_a_cut_starts_from_the_measured_rate() -> None:
    """On a refused rate, the limit becomes 70 % of what was measured, not of the cap."""
    rate = SendRate(0.0, cap=RateLimit(1000, burst=1000))
    now = send_for(rate, 0.0, 2.0, 0.02)  # 50 requests a second
    assert rate.measured(now) == pytest.approx(50, abs=2)
    assert rate.throttled(now)
    assert rate.rate(now) == pytest.approx(0.7 * rate.measured(now), rel=0.05)


def test_the_rate_probes_back_up_and_past_its_old_value() -> None:
    """After a measured cut the rate climbs back to where it was (CUBIC's plateau), then beyond."""
    rate = SendRate(0.0, cap=RateLimit(1000, burst=1000))
    now = send_for(rate, 0.0, 1.0, 0.01)  # 100 requests a second
    rate.throttled(now)
    cut = rate.rate(now)
    assert cut is not None
    assert cut == pytest.approx(70, rel=0.05)
    later = [rate.rate(now + t) or 0 for t in (1, 2, 4, 8)]
    assert later == sorted(later)
    assert later[1] < 100 <= later[3]


def test_a_cut_before_a_whole_window_was_measured_doubles_back_each_window() -> None:
    """A 429 within a burst's first moments: the guessed rate doubles per window until measured."""
    rate = SendRate(0.0)
    now = send_for(rate, 0.0, 0.05, 0.002)  # 25 requests in 50 ms, then a 429
    assert rate.throttled(now)
    guess = rate.rate(now)
    assert guess == pytest.approx(0.7 * 25, rel=0.05)
    assert rate.rate(now + 1) == pytest.approx(2 * guess)
    assert rate.rate(now + 3) == pytest.approx(8 * guess)
    # The next 429 comes after a whole window of sending: measured, it follows the curve.
    later = send_for(rate, now + 3, 1.5, 0.02)  # 50 a second
    assert rate.throttled(later)
    assert rate.rate(later) == pytest.approx(0.7 * 50, rel=0.05)
    assert rate.rate(later + 1) < 50


def test_a_burst_after_a_quiet_spell_is_measured_afresh() -> None:
    """A 429 moments after an idle gap longer than the window is a guess again, not a measure."""
    rate = SendRate(0.0)
    now = send_for(rate, 0.0, 2.0, 0.02)
    now = send_for(rate, now + 5, 0.04, 0.002)  # 20 requests after 5 s of silence
    assert rate.throttled(now)
    guess = rate.rate(now)
    assert guess == pytest.approx(0.7 * rate.measured(now))
    assert rate.rate(now + 2) == pytest.approx(4 * guess)


def test_the_rate_never_falls_below_the_floor() -> None:
    """However often it is cut, the rate stays at or above one request a second."""
    rate = SendRate(0.0)
    now = 0.0
    for _ in range(20):
        now += 1.5
        rate.throttled(now)
        assert (rate.rate(now) or 0) >= 1.0


def test_429s_moments_after_a_cut_do_not_cut_again() -> None:
    """Answers to requests sent before the cut are one event: the rate is cut once."""
    rate = SendRate(0.0, cap=RateLimit(1000, burst=1000))
    now = send_for(rate, 0.0, 1.0, 0.01)
    assert rate.throttled(now)
    first = rate.rate(now)
    assert not rate.throttled(now + 0.1)
    assert rate.rate(now + 0.1) == pytest.approx(first, rel=0.05)
    assert rate.decreases == 1


def test_the_learned_rate_never_exceeds_the_cap() -> None:
    """A configured cap bounds the probe."""
    rate = SendRate(0.0, cap=RateLimit(40, burst=1))
    now = send_for(rate, 0.0, 1.0, 0.001)
    rate.throttled(now)
    assert rate.rate(now + 1000) == 40


@pytest.mark.parametrize(
    ("args", "field"),
    [((0,), "per_second"), ((-1.0,), "per_second"), ((5, 0), "burst"), ((True,), "per_second")],
    ids=["zero", "negative", "no-burst", "bool"],
)
def test_bad_rate_limits_are_refused(args: tuple[object, ...], field: str) -> None:
    """A rate limit that is not positive is a ValidationError naming the field."""
    with pytest.raises(ValidationError, match=field):
        RateLimit(*args)  # type: ignore[arg-type]


# -- what 429s prove ---------------------------------------------------------------------------


def test_a_stray_429_proves_nothing() -> None:
    """One 429 among many answers neither slows the client nor pauses the host."""
    rule = ThrottleRule()
    for n in range(50):
        rule.answer(n / 100, throttled=False, retry_after=None)
    verdict = rule.answer(0.5, throttled=True, retry_after=1.0)
    assert not verdict.slow_down
    assert verdict.pause is None


def test_sporadic_429s_never_pause_the_host() -> None:
    """2 % of 100 answers a second refused at random: never a pause of the whole host."""
    rule = ThrottleRule()
    for n in range(10_000):
        verdict = rule.answer(n / 100, throttled=n % 50 == 7, retry_after=1.0)
        assert verdict.pause is None
    assert rule.pauses == 0


def test_a_share_of_429s_slows_down_without_pausing() -> None:
    """429s that are a tenth of the recent answers call for a slower rate, not a pause."""
    rule = ThrottleRule()
    verdicts = [rule.answer(n / 100, throttled=n % 5 == 0, retry_after=1.0) for n in range(1, 100)]
    assert any(v.slow_down for v in verdicts)
    assert all(v.pause is None for v in verdicts)


def test_a_spent_budget_pauses_the_host_for_one_retry_after() -> None:
    """Several 429s that are most answers pause the host for the Retry-After, never a sum."""
    rule = ThrottleRule()
    pauses = [rule.answer(10 + n / 100, throttled=True, retry_after=2.0).pause for n in range(5)]
    assert pauses[0] is None
    assert pauses[-1] == pytest.approx(2.0)
    assert rule.paused_until == pytest.approx(10.04 + 2.0)
    assert rule.pauses == 1


def test_a_long_retry_after_pauses_the_host_alone() -> None:
    """One Retry-After of a day is evidence enough: the host pauses for it."""
    rule = ThrottleRule()
    for n in range(20):
        rule.answer(n / 100, throttled=False, retry_after=None)
    verdict = rule.answer(0.2, throttled=True, retry_after=86400.0)
    assert verdict.pause == pytest.approx(86400.0)


# -- priorities --------------------------------------------------------------------------------


def test_priorities_share_the_rate_by_weight() -> None:
    """With every class waiting, detection gets most turns and housekeeping its share."""
    queue: FairQueue[str] = FairQueue()
    for p in Priority:
        for n in range(1000):
            queue.push(p, f"{p.name}-{n}")
    picks = [queue.pop() for _ in range(100)]
    counts = collections.Counter(str(p).split("-")[0] for p in picks)
    total = sum(WEIGHTS.values())
    assert counts == {p.name: 100 * WEIGHTS[p] // total for p in Priority}
    assert str(picks[0]).startswith("DETECT")


def test_no_class_is_starved_by_a_flood_of_detection() -> None:
    """Within every ten turns, submissions and housekeeping each get at least one."""
    queue: FairQueue[Priority] = FairQueue()
    for p in Priority:
        for _ in range(100):
            queue.push(p, p)
    picks = [queue.pop() for _ in range(100)]
    for start in range(0, 100, 10):
        window = picks[start : start + 10]
        assert Priority.SUBMIT in window
        assert Priority.HOUSEKEEPING in window


def test_a_class_alone_gets_every_turn() -> None:
    """Housekeeping alone is served without waiting for classes that are absent."""
    queue: FairQueue[int] = FairQueue()
    for n in range(5):
        queue.push(Priority.HOUSEKEEPING, n)
    assert [queue.pop() for _ in range(6)] == [0, 1, 2, 3, 4, None]


def test_a_waiter_that_gives_up_leaves_the_queue() -> None:
    """remove() takes a waiter out; removing one not there is harmless."""
    queue: FairQueue[int] = FairQueue()
    queue.push(Priority.DETECT, 1)
    queue.push(Priority.DETECT, 2)
    queue.remove(Priority.DETECT, 1)
    queue.remove(Priority.SUBMIT, 9)
    assert len(queue) == 1
    assert queue.pop() == 2


# -- the session over a scripted transport ---------------------------------------------------


def ok() -> TransportResponse:
    return TransportResponse.of(200, orjson.dumps({"_data": {}, "_meta": {}, "_errors": []}))


def refused(retry_after: str | None) -> TransportResponse:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return TransportResponse.of(429, b'{"_errors": ["slow down"]}', headers)


def scripted(transport: MockTransport, **options: object) -> Session:
    options.setdefault("retry", RetryPolicy(initial_wait=0.001, max_wait=0.01))
    return Session(
        base_url="https://api.example.test",
        auth=BearerAuth("scripted-token"),
        envelope=ChakraEnvelope(),
        transport=transport,
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.anyio
async def test_a_configured_rate_spaces_the_requests() -> None:
    """RateLimit(20, burst=1): no two requests closer than 1/20 s, whatever the callers do."""
    sent: list[float] = []

    def handler(_request: TransportRequest) -> TransportResponse:
        sent.append(anyio.current_time())
        return ok()

    session = scripted(MockTransport(handler), rate_limit=RateLimit(20, burst=1))
    async with anyio.create_task_group() as tg:
        for n in range(8):
            tg.start_soon(session.request, "GET", f"/{n}")
    await session.aclose()
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert len(sent) == 8
    assert min(gaps) >= 0.045
    assert session.stats.send_rate == 20
    assert session.stats.limiter_wait > 0


@pytest.mark.anyio
async def test_detection_goes_first_when_the_rate_limits() -> None:
    """Queued behind a slow rate, polls are sent before acknowledgements that queued earlier."""
    order: list[str] = []

    def handler(request: TransportRequest) -> TransportResponse:
        order.append(request.url.rsplit("/", 1)[1])
        return ok()

    session = scripted(MockTransport(handler), rate_limit=RateLimit(50, burst=1))
    await session.request("GET", "/warm")
    async with anyio.create_task_group() as tg:
        for n in range(3):
            tg.start_soon(
                lambda n=n: session.request("PATCH", f"/ack{n}", priority=Priority.HOUSEKEEPING)
            )
        await anyio.lowlevel.checkpoint()
        for n in range(6):
            tg.start_soon(lambda n=n: session.request("GET", f"/poll{n}", priority=Priority.DETECT))
    await session.aclose()
    sent = order[1:]
    assert sorted(sent) == sorted([f"ack{n}" for n in range(3)] + [f"poll{n}" for n in range(6)])
    # The first acknowledgement was already next in line; after it, polls come first.
    assert sent.index("poll5") < sent.index("ack2")


@pytest.mark.anyio
async def test_a_day_long_retry_after_ends_at_the_deadline() -> None:
    """Retry-After: 86400 with a budget that allows it: the call ends at its deadline."""
    transport = MockTransport(lambda _r: refused("86400"))
    session = scripted(transport, retry=RetryPolicy(budget=1e6))
    start = anyio.current_time()
    with pytest.raises(DeadlineExceededError) as info:
        await session.request("GET", "/x", deadline=start + 0.3)
    took = anyio.current_time() - start
    await session.aclose()
    assert 0.29 <= took < 2.0
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value.__cause__, RateLimitedError)
    assert len(transport.requests) == 1


@pytest.mark.anyio
async def test_a_paused_host_holds_no_call_past_its_deadline() -> None:
    """While the host pauses for a day, a call with a deadline raises at that deadline."""
    answers = iter([refused("86400")])
    transport = MockTransport(lambda _r: next(answers, ok()))
    session = scripted(transport, retry=RetryPolicy.never())
    with pytest.raises(RateLimitedError):
        await session.request("GET", "/limited")
    assert session.stats.host_pauses == 1
    start = anyio.current_time()
    with pytest.raises(DeadlineExceededError, match="deadline"):
        await session.request("GET", "/other", timeout=0.2)
    took = anyio.current_time() - start
    await session.aclose()
    assert 0.19 <= took < 2.0
    assert len(transport.requests) == 1


@pytest.mark.anyio
async def test_a_cancel_scope_deadline_bounds_the_waits_too() -> None:
    """Inside anyio.move_on_after, a pause of the host ends with the scope."""
    answers = iter([refused("86400")])
    session = scripted(MockTransport(lambda _r: next(answers, ok())), retry=RetryPolicy.never())
    with pytest.raises(RateLimitedError):
        await session.request("GET", "/limited")
    with anyio.move_on_after(0.2) as scope:
        await session.request("GET", "/other")
    await session.aclose()
    assert scope.cancelled_caught


@pytest.mark.anyio
async def test_a_call_timeout_bounds_each_try() -> None:
    """timeout= caps the try's own time limit below the client's."""
    transport = MockTransport(lambda _r: ok())
    session = scripted(transport)
    await session.request("GET", "/a", timeout=5)
    await session.request("GET", "/b")
    await session.aclose()
    first, second = (r.timeout for r in transport.requests)
    assert first is not None
    assert first <= 5
    assert second == 60.0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"priority": 1}, "priority"),
        ({"deadline": "soon"}, "deadline"),
        ({"timeout": 0}, "timeout"),
    ],
    ids=["priority-int", "deadline-str", "timeout-zero"],
)
async def test_bad_call_options_are_refused(options: dict[str, object], field: str) -> None:
    """A wrong priority, deadline or timeout is a ValidationError naming it, before sending."""
    transport = MockTransport(lambda _r: ok())
    session = scripted(transport)
    with pytest.raises(ValidationError, match=field):
        await session.request("GET", "/a", **options)  # type: ignore[arg-type]
    await session.aclose()
    assert transport.requests == []


@pytest.mark.anyio
async def test_stats_are_snapshots() -> None:
    """A stats object never changes; reading stats again shows the new counts."""
    session = scripted(MockTransport(lambda _r: ok()))
    before = session.stats
    await session.request("GET", "/a")
    after = session.stats
    await session.aclose()
    assert (before.requests, after.requests) == (0, 1)
    assert dict(after.by_status) == {200: 1}
    with pytest.raises(AttributeError):
        after.requests = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        after.by_status[200] = 9  # type: ignore[index]


@pytest.mark.anyio
async def test_closing_the_client_wakes_every_waiter() -> None:
    """Requests waiting on a day-long pause or their turn raise ClientClosedError at aclose()."""
    answers = iter([refused("86400")])
    session = scripted(
        MockTransport(lambda _r: next(answers, ok())),
        retry=RetryPolicy.never(),
        rate_limit=RateLimit(1, burst=1),
    )
    with pytest.raises(RateLimitedError):
        await session.request("GET", "/limited")
    outcomes: list[str] = []

    async def wait_in_line(n: int) -> None:
        try:
            await session.request("GET", f"/{n}")
        except ClientClosedError:
            outcomes.append("closed")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(wait_in_line, n)
            await anyio.sleep(0.1)
            await session.aclose()
    assert outcomes == ["closed"] * 4


# -- the in-flight limit ---------------------------------------------------------------------


def test_in_flight_takes_free_slots_up_to_its_limit() -> None:
    """Free slots are taken at once up to the limit; a released one can be taken again."""
    slots = InFlight(2)
    assert [slots.take_now(), slots.take_now(), slots.take_now()] == [True, True, False]
    slots.release()
    assert slots.take_now()
    assert slots.used == 2


@pytest.mark.anyio
async def test_in_flight_hands_a_freed_slot_to_the_longest_waiter() -> None:
    """Waiters get freed slots in arrival order, and no newcomer takes one past them."""
    slots = InFlight(1)
    assert slots.take_now()
    order: list[str] = []

    async def waiter(name: str) -> None:
        await slots.take()
        order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, "first")
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, "second")
        await anyio.wait_all_tasks_blocked()
        slots.release()
        # The slot is the first waiter's now, though it has not run yet.
        assert not slots.take_now()
        await anyio.wait_all_tasks_blocked()
        assert order == ["first"]
        slots.release()
    assert order == ["first", "second"]
    assert slots.used == 1


@pytest.mark.anyio
async def test_in_flight_cancelled_waiters_neither_keep_nor_lose_a_slot() -> None:
    """Waiters cancelled before, or as, a slot is handed to them leave it to the next one."""
    slots = InFlight(1)
    assert slots.take_now()
    got: list[str] = []

    async def waiter(name: str, scope: anyio.CancelScope) -> None:
        with scope:
            await slots.take()
            got.append(name)
            slots.release()

    before, handed, last = anyio.CancelScope(), anyio.CancelScope(), anyio.CancelScope()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for name, scope in (("before", before), ("handed", handed), ("last", last)):
                tg.start_soon(waiter, name, scope)
                await anyio.wait_all_tasks_blocked()
            before.cancel()
            await anyio.wait_all_tasks_blocked()
            # Handed the slot, then cancelled before it ran: whether or not the cancellation
            # lands before it takes the slot, the slot goes on to "last".
            slots.release()
            handed.cancel()
    assert "before" not in got
    assert got[-1] == "last"
    assert slots.used == 0


# -- the clock ---------------------------------------------------------------------------------


class _ShiftedLoop(asyncio.SelectorEventLoop):
    """An event loop whose time runs a day ahead of `time.monotonic`."""

    def time(self) -> float:
        return super().time() + 86_400.0


async def _flow_times_and_loop_time() -> tuple[float, float, float]:
    flow = FlowControl()
    first = flow._clock()  # finds the loop
    second = flow._clock()  # the clock kept from then on
    return first, second, asyncio.get_running_loop().time()


def test_the_flow_clock_is_the_running_loops_time() -> None:
    """Without a clock given, the flow control reads the loop's own time, on any loop."""
    for factory in (asyncio.new_event_loop, _ShiftedLoop):
        loop = factory()
        try:
            first, second, loop_time = loop.run_until_complete(_flow_times_and_loop_time())
        finally:
            loop.close()
        assert loop_time - 1.0 <= first <= second <= loop_time
