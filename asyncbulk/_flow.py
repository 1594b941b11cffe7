"""Flow control for one host: how fast to send, in which order, and when the whole host waits.

The rules are pure objects that take the time as ``now`` and return decisions; they do no I/O
and never sleep, so tests drive them with a hand-made clock:

- `SendRate` is the send-rate limiter. It starts unlimited (or at a configured `RateLimit`); when
  the server refuses the rate it drops multiplicatively from the rate actually measured, then
  probes back up along a cubic curve (TCP CUBIC's, as the AWS SDKs' adaptive retry mode does),
  never below a floor and never above the configured cap.
- `ThrottleRule` tells what 429s prove. A stray one (a gateway shedding load) only delays the
  retry of the request that met it: cutting the rate for each would ratchet it down to the floor
  under a steady trickle of random 429s. 429s that are a share of the recent answers mean the
  rate is too high; several close together that are most of the answers, or a long
  ``Retry-After``, mean the budget the host shares is spent: only then does the whole host
  pause, for that ``Retry-After``, never for the sum of several.
- `FairQueue` picks who sends next when the rate is what limits: weighted round robin over
  `Priority` classes, so detection goes first, submissions are never starved and housekeeping
  keeps a guaranteed share.

`FlowControl` is the thin anyio layer over them that a `Session` calls: it waits for a turn
and for pauses, bounds every wait by the caller's deadline, and keeps the counts for stats.
"""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections import deque
from typing import TYPE_CHECKING, Final, Generic, Protocol, TypeVar, runtime_checkable

import anyio
import attrs

from asyncbulk._exceptions import ClientClosedError, DeadlineExceededError, ValidationError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "FairQueue",
    "FlowControl",
    "Priority",
    "RateLimit",
    "SendRate",
    "SharedLimiter",
    "ThrottleRule",
    "Verdict",
    "loop_time",
]

T = TypeVar("T")


class Priority(enum.IntEnum):
    """Which requests go first when the send rate is what limits.

    Attributes:
        DETECT: polls, listing sweeps and entry pages: what tells a caller a job finished.
        SUBMIT: bulk requests.
        HOUSEKEEPING: acknowledgements and other clean-up, which may wait, but not forever.
    """

    DETECT = 0
    SUBMIT = 1
    HOUSEKEEPING = 2


#: Turns per round of each class when all three are waiting: detection gets 60 % of the rate,
#: submissions 30 % and housekeeping 10 %; a class alone gets it all.
WEIGHTS: Final = {Priority.DETECT: 6, Priority.SUBMIT: 3, Priority.HOUSEKEEPING: 1}


def _check_rate(instance: RateLimit, _attribute: object, value: float) -> None:
    del instance
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValidationError("rate_limit.per_second", f"must be a number > 0, not {value!r}")


def _check_burst(instance: RateLimit, _attribute: object, value: int) -> None:
    del instance
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError("rate_limit.burst", f"must be an integer >= 1, not {value!r}")


@attrs.frozen
class RateLimit:
    """A cap on the send rate to one host, for users who know their quota.

    The client never sends faster than this, and still slows down below it when the server
    answers 429.

    Args:
        per_second: requests per second, on average.
        burst: requests that may go at once after a quiet spell.

    Raises:
        ValidationError: a value is not positive (the error names it).
    """

    per_second: float = attrs.field(validator=_check_rate)
    burst: int = attrs.field(default=1, validator=_check_burst)


class SendRate:
    """The send-rate limiter of one host: a token bucket whose rate is learned from 429s.

    Args:
        now: the time at creation.
        cap: a configured limit, or None to start unlimited.
        floor: the least rate it ever falls to, in requests per second.
        beta: the share of the measured rate kept on a 429.
        cubic: CUBIC's scaling constant (how fast the rate grows back).
        window: seconds over which the send rate is measured.
        cooldown: seconds after a decrease during which further 429s, answers to requests
            sent at the old rate, do not decrease it again.
    """

    def __init__(
        self,
        now: float,
        *,
        cap: RateLimit | None = None,
        floor: float = 1.0,
        beta: float = 0.7,
        cubic: float = 0.4,
        window: float = 1.0,
        cooldown: float = 1.0,
    ) -> None:
        """Start unlimited, or at ``cap`` with a full bucket."""
        self._cap = cap
        self._floor = min(floor, cap.per_second) if cap is not None else floor
        self._beta = beta
        self._c = cubic
        self._window = window
        self._cooldown = cooldown
        self._burst = cap.burst if cap is not None else 1
        self._tokens = float(self._burst)
        self._filled_at = now
        self._sends: deque[float] = deque()
        self._cut_at: float | None = None
        self._w_max = 0.0
        self._k = 0.0
        #: Since when requests have gone without a window-long gap.
        self._busy_since = now
        #: Cut before a whole window of sending was measured: the rate is a guess.
        self._provisional = False
        self.decreases = 0

    def rate(self, now: float) -> float | None:
        """The rate in force, in requests per second; None while unlimited."""
        cap = self._cap.per_second if self._cap is not None else math.inf
        if self._cut_at is None:
            return None if math.isinf(cap) else cap
        since = now - self._cut_at
        if self._provisional:
            learned = self._w_max * self._beta * 2 ** (since / self._window)
        else:
            t = since - self._k
            learned = self._c * t * t * t + self._w_max
        return min(cap, max(self._floor, learned))

    def measured(self, now: float) -> float:
        """Requests sent per second over the last window."""
        self._forget(now)
        return len(self._sends) / self._window

    def take_now(self, now: float) -> bool:
        """Spend a token and note the send if one may go now; False (nothing spent) if not.

        `delay` and `take` in one: the common turn, when no one waits, computes the rate once.
        """
        if self._cut_at is not None or self._cap is not None:
            rate = self.rate(now)
            if rate is not None:
                self._refill(now, rate)
                if self._tokens < 1:
                    return False
                self._tokens -= 1
        self._note(now)
        return True

    def delay(self, now: float) -> float:
        """Seconds until a request may be sent (0 when one may go now)."""
        rate = self.rate(now)
        if rate is None:
            return 0.0
        self._refill(now, rate)
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / rate

    def take(self, now: float) -> None:
        """Note a request sent now, spending a token when the rate is limited."""
        rate = self.rate(now)
        if rate is not None:
            self._refill(now, rate)
            self._tokens -= 1
        self._note(now)

    def _note(self, now: float) -> None:
        sends = self._sends
        # A window-long gap since the last send starts a new busy spell. The window's sends
        # are pruned when measured, or when they grow long, not on every send.
        if not sends or sends[-1] <= now - self._window:
            self._busy_since = now
        sends.append(now)
        if len(sends) > _PRUNE_AT:
            self._forget(now)

    @property
    def last_seen(self) -> float:
        """The time of the last request sent, or of creation."""
        return self._sends[-1] if self._sends else self._filled_at

    def throttled(self, now: float) -> bool:
        """Cut the rate the server refuses; False when it was cut moments ago (the same event).

        The first 429 met while unlimited, or one moments after a quiet spell, says little of
        the rate the server allows: the rate measured then is what the caller happened to
        send (and the server's burst may just have run out). The cut rate is then a guess
        that doubles every window until the next 429 measures it. Otherwise it climbs back
        along the cubic curve.
        """
        if self._cut_at is not None and now - self._cut_at < self._cooldown:
            return False
        current = self.rate(now)
        measured = self.measured(now)
        if current is not None:
            measured = min(measured, current)
        rate_before = max(self._floor, measured)
        # From unlimited, or after a quiet spell, the rate sent was the caller's, not the
        # server's: what it allows is still to be found.
        self._provisional = current is None or now - self._busy_since < self._window
        self._w_max = rate_before
        self._k = ((rate_before * (1 - self._beta)) / self._c) ** (1 / 3)
        self._cut_at = now
        # A learned rate is smooth: no burst after a 429.
        self._tokens = min(self._tokens, 1.0)
        self._burst = 1
        self._filled_at = now
        self.decreases += 1
        return True

    def _refill(self, now: float, rate: float) -> None:
        elapsed = max(0.0, now - self._filled_at)
        self._tokens = min(float(self._burst), self._tokens + elapsed * rate)
        self._filled_at = now

    def _forget(self, now: float) -> None:
        horizon = now - self._window
        while self._sends and self._sends[0] <= horizon:
            self._sends.popleft()


@attrs.frozen
class Verdict:
    """What an answer proves.

    Attributes:
        slow_down: the 429s are a share of the recent answers, not a stray one: cut the rate.
        pause: seconds the whole host pauses from now, or None for no pause.
    """

    slow_down: bool = False
    pause: float | None = None


class ThrottleRule:
    """What a 429 proves: a stray one, a rate above the server's, or a spent shared budget.

    A stray 429 (gateways shed load at random) delays only the retry of the request that met
    it. When 429s are `several` within `window` seconds and at least `share` of the answers
    then, the rate is what the server refuses: slow down. When they are at least half of
    those answers, or a ``Retry-After`` reaches `long`, the budget the host shares is spent:
    the whole host pauses for that ``Retry-After`` (``default`` when the server gave none),
    extending an earlier pause to it but never adding the two.

    Args:
        several: 429s close together that prove something.
        window: seconds within which answers count as close together.
        share: the least share of 429s among those answers that calls for a slower rate.
        long: a ``Retry-After`` this long (seconds) pauses the host on its own.
        default: the pause when the server gave no usable ``Retry-After``.
    """

    def __init__(
        self,
        *,
        several: int = 2,
        window: float = 1.0,
        share: float = 0.05,
        long: float = 10.0,
        default: float = 1.0,
    ) -> None:
        """Start with no evidence."""
        self._several = several
        self._window = window
        self._share = share
        self._long = long
        self._default = default
        #: When the recent answers came, and which of them were 429s (pruned lazily).
        self._answers: deque[float] = deque()
        self._throttled: deque[float] = deque()
        self.paused_until = 0.0
        self.pauses = 0

    def calm(self, now: float) -> None:
        """Count an answer that was not a 429 (proves nothing on its own)."""
        answers = self._answers
        answers.append(now)
        if len(answers) > _PRUNE_AT:
            _prune(answers, now - self._window)

    def answer(self, now: float, *, throttled: bool, retry_after: float | None) -> Verdict:
        """Count an answer and say what it proves."""
        if not throttled:
            self.calm(now)
            return _CALM
        self._answers.append(now)
        self._throttled.append(now)
        horizon = now - self._window
        _prune(self._answers, horizon)
        _prune(self._throttled, horizon)
        refused, answers = len(self._throttled), len(self._answers)
        several = refused >= self._several
        slow_down = several and refused >= self._share * answers
        wait = self._default if retry_after is None else retry_after
        if not (several and 2 * refused >= answers) and wait < self._long:
            return Verdict(slow_down=slow_down)
        if now + wait > self.paused_until:
            if self.paused_until <= now:
                self.pauses += 1
            self.paused_until = now + wait
        return Verdict(slow_down=slow_down, pause=self.paused_until - now)


_CALM: Final = Verdict()
#: Times kept for a window are pruned once this many pile up, not on every request.
_PRUNE_AT: Final = 4096


def _prune(times: deque[float], horizon: float) -> None:
    """Drop the times at or before ``horizon`` (the deque is in time order)."""
    while times and times[0] <= horizon:
        times.popleft()


class FairQueue(Generic[T]):
    """Waiters by `Priority`, taken in smooth weighted round robin (`WEIGHTS`).

    Each pick credits every waiting class with its weight and takes from the class with the
    most credit (the more urgent on a tie), which then pays the round's total. Over any run
    of picks with all classes waiting, each gets its weight's share, evenly spread.
    """

    def __init__(self) -> None:
        """Start empty."""
        self._queues: dict[Priority, deque[T]] = {p: deque() for p in Priority}
        self._credit: dict[Priority, int] = dict.fromkeys(Priority, 0)
        self._count = 0

    def __len__(self) -> int:
        """Waiters in all classes."""
        return self._count

    def push(self, priority: Priority, item: T) -> None:
        """Add a waiter at the back of its class."""
        self._queues[priority].append(item)
        self._count += 1

    def remove(self, priority: Priority, item: T) -> None:
        """Take a waiter out (it gave up); nothing happens if it is not there."""
        queue = self._queues[priority]
        if item in queue:
            queue.remove(item)
            self._count -= 1
            if not queue:
                self._credit[priority] = 0

    def drain(self) -> list[T]:
        """Take every waiter out, in no particular order."""
        items = [item for queue in self._queues.values() for item in queue]
        for priority in Priority:
            self._queues[priority].clear()
            self._credit[priority] = 0
        self._count = 0
        return items

    def pop(self) -> T | None:
        """The next waiter to go, or None when none waits."""
        waiting = [p for p in Priority if self._queues[p]]
        if not waiting:
            return None
        total = 0
        for p in waiting:
            self._credit[p] += WEIGHTS[p]
            total += WEIGHTS[p]
        chosen = max(waiting, key=lambda p: (self._credit[p], -p))
        self._credit[chosen] -= total
        item = self._queues[chosen].popleft()
        self._count -= 1
        if not self._queues[chosen]:
            self._credit[chosen] = 0
        return item


@attrs.define(eq=False)
class _Waiter:
    priority: Priority
    turn: anyio.Event = attrs.field(factory=anyio.Event)


def loop_time() -> float:
    """`anyio.current_time` on asyncio (aiohttp's only loop), without its per-call look-up.

    Raises:
        RuntimeError: no event loop is running.
    """
    return asyncio.get_running_loop().time()


def effective_deadline(deadline: float | None) -> float:
    """The earlier of the caller's deadline and the enclosing cancel scopes' (inf for none)."""
    scope = anyio.current_effective_deadline()
    return scope if deadline is None else min(deadline, scope)


@runtime_checkable
class SharedLimiter(Protocol):
    """A send rate shared by processes (`asyncbulk.redis.RedisRateLimit` is one).

    Given as ``rate_limit=`` to a client, it is asked before every try, after the client's own
    turn (whose learned rate and priorities still apply, as a local cache of the pace), and is
    told of every 429, so that every process pauses and not only the one that was told. The
    client never closes it: its owner does (`aclose`).
    """

    async def acquire(self, *, deadline: float | None = None) -> None:
        """Return when one request may be sent.

        Args:
            deadline: absolute time (``anyio.current_time()``) the wait must not outlive;
                None waits as long as it takes.

        Raises:
            TimeoutError: the deadline would pass first; the wait ends at it.
        """

    async def note_throttled(self, retry_after: float) -> None:
        """Pause every process sharing the limit for ``retry_after`` seconds."""

    async def aclose(self) -> None:
        """Release what the limiter holds; idempotent."""


class FlowControl:
    """The anyio layer over the rules: turns, pauses and deadlines for one host's requests.

    Args:
        rate_limit: a configured cap, or None to start unlimited.
        max_pause: the longest the host ever pauses, whatever ``Retry-After`` says.
        clock: the time source (`anyio.current_time` by default).
    """

    def __init__(
        self,
        rate_limit: RateLimit | None = None,
        *,
        max_pause: float = 120.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """Nothing waits yet; the clock is read on first use."""
        self._rate_limit = rate_limit
        self._clock = clock or self._loop_clock
        self._rate: SendRate | None = None
        self.throttles = ThrottleRule()
        self._max_pause = max_pause
        self._queue: FairQueue[_Waiter] = FairQueue()
        self._head: _Waiter | None = None
        self._closing: anyio.Event | None = None
        self._closed = False
        self.waited = 0.0

    def _loop_clock(self) -> float:
        """The event loop's time, read first through the loop, then without it.

        A client's requests run on one loop (its aiohttp session is bound to it). asyncio's
        own loops tell `time.monotonic`, which is then read directly: finding the running
        loop costs a system call per read on Python 3.11, twice per request.
        """
        loop = asyncio.get_running_loop()
        self._clock = time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        return self._clock()

    def close(self) -> None:
        """Wake every waiter: each raises `ClientClosedError` instead of waiting on."""
        self._closed = True
        if self._closing is not None:
            self._closing.set()
        self._promote()

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the client was closed while this request waited")

    async def _nap(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the client closes meanwhile."""
        if self._closing is None:
            self._closing = anyio.Event()
        with anyio.move_on_after(seconds):
            await self._closing.wait()
        self._check_open()

    def _send_rate(self) -> SendRate:
        if self._rate is None:
            self._rate = SendRate(self._clock(), cap=self._rate_limit)
        return self._rate

    def rate(self) -> float | None:
        """The send rate in force (requests per second), None while unlimited."""
        if self._rate is None:
            return None
        try:
            now = self._clock()
        except RuntimeError:
            # Stats read outside an event loop: the rate as of the last request.
            now = self._rate.last_seen
        return self._rate.rate(now)

    def _ready_in(self, now: float) -> float:
        pause = self.throttles.paused_until - now
        return max(pause, self._send_rate().delay(now))

    async def turn(
        self, priority: Priority, deadline: float | None, *, method: str, url: str
    ) -> None:
        """Wait until this request may be sent: after any pause, in its turn at the rate.

        Raises:
            DeadlineExceededError: the turn would come after ``deadline`` (raised at it).
            ClientClosedError: the client closed meanwhile.
        """
        if self.turn_now():
            return
        self._check_open()
        rate = self._send_rate()
        now = self._clock()
        started = now
        waiter = _Waiter(priority)
        self._queue.push(priority, waiter)
        self._promote()
        limit = effective_deadline(deadline)
        try:
            while True:
                self._check_open()
                now = self._clock()
                if self._head is waiter:
                    wait = self._ready_in(now)
                    if wait <= 0:
                        rate.take(now)
                        return
                    # Re-read after each sleep: a 429 may have cut the rate or paused the host.
                    await self._sleep_until(now + wait, limit, method=method, url=url)
                else:
                    await self._wait_turn(waiter, limit, method=method, url=url)
        finally:
            self.waited += self._clock() - started
            if self._head is waiter:
                self._head = None
            else:
                self._queue.remove(priority, waiter)
            self._promote()

    def turn_now(self) -> bool:
        """Take this request's turn if it is here now (no one waits, no pause, a token).

        The common turn, with no Event, no scope and no trip through the event loop; False
        (nothing taken) when the request must wait in `turn`.
        """
        if self._closed or self._head is not None or len(self._queue):
            return False
        now = self._clock()
        if self.throttles.paused_until > now:
            return False
        return (self._rate or self._send_rate()).take_now(now)

    def _promote(self) -> None:
        if self._closed:
            # Wake them all: each finds the client closed and leaves.
            for waiter in self._queue.drain():
                waiter.turn.set()
        if self._head is None:
            self._head = self._queue.pop()
            if self._head is not None:
                self._head.turn.set()

    async def _wait_turn(self, waiter: _Waiter, limit: float, *, method: str, url: str) -> None:
        if math.isinf(limit):
            await waiter.turn.wait()
            return
        with anyio.move_on_after(limit - self._clock()):
            await waiter.turn.wait()
            return
        self._check_open()
        raise DeadlineExceededError(
            "the deadline passed waiting for the rate limiter", method=method, url=url
        )

    async def _sleep_until(self, until: float, limit: float, *, method: str, url: str) -> None:
        if until > limit:
            await self._nap(max(0.0, limit - self._clock()))
            raise DeadlineExceededError(
                "the deadline passed waiting for the rate limiter or a pause of the host",
                method=method,
                url=url,
            )
        await self._nap(max(0.0, until - self._clock()))

    async def sleep(self, seconds: float, deadline: float | None, *, method: str, url: str) -> None:
        """Sleep ``seconds`` before a retry, or until the deadline and raise.

        Raises:
            DeadlineExceededError: the wait would end after ``deadline`` (raised at it).
            ClientClosedError: the client closed meanwhile.
        """
        now = self._clock()
        limit = effective_deadline(deadline)
        if now + seconds > limit:
            await self._nap(max(0.0, limit - now))
            raise DeadlineExceededError(
                f"the deadline passed before a retry due in {seconds:.2f} s", method=method, url=url
            )
        await self._nap(seconds)

    def note_send(self) -> None:
        """Count a request sent without waiting for a turn (the no-sleep test mode)."""
        self._send_rate().take(self._clock())

    def calm(self) -> None:
        """Learn from an answer that was not a 429: it counts among the recent answers."""
        self.throttles.calm(self._clock())

    def answered(self, status: int, retry_after: float | None) -> None:
        """Learn from an answer: on evidence, 429s cut the rate or pause the host."""
        now = self._clock()
        if retry_after is not None:
            retry_after = min(retry_after, self._max_pause)
        verdict = self.throttles.answer(
            now,
            throttled=status == 429,  # noqa: PLR2004
            retry_after=retry_after,
        )
        if verdict.slow_down:
            self._send_rate().throttled(now)


class InFlight:
    """At most ``limit`` requests in flight at once; a freed slot goes to the longest waiter.

    An `anyio.CapacityLimiter` does the same, but costs several times more per request on the
    path every request takes (a borrower per try, its set, its statistics). A free slot here
    is a counter; a full one parks the request on an `anyio.Event`, and a freed slot passes
    straight to the first waiter, so no later request can overtake it.

    Args:
        limit: slots, at least 1.
    """

    def __init__(self, limit: int) -> None:
        """All ``limit`` slots free."""
        self.limit = limit
        self.used = 0
        self._waiters: deque[anyio.Event] = deque()

    def take_now(self) -> bool:
        """Take a free slot if one is there and no one waits for it; False if not."""
        if self.used < self.limit and not self._waiters:
            self.used += 1
            return True
        return False

    async def take(self) -> None:
        """Take a slot, waiting for one as long as it takes (a cancel scope bounds the wait)."""
        if self.take_now():
            return
        event = anyio.Event()
        self._waiters.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                # The slot was handed over as the wait was cancelled: hand it on.
                self.release()
            else:
                self._waiters.remove(event)
            raise

    def release(self) -> None:
        """Give a slot back: to the first waiter, else to the pool."""
        if self._waiters:
            self._waiters.popleft().set()
        else:
            self.used -= 1
