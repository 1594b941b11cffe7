"""`RedisRateLimit`: one request rate shared by every process of a vendor account, in Redis.

The decision is made by one Lua script (`asyncbulk.redis._script`) on the Redis server, so the
processes need no clock in common and no lock: GCRA hands out *slots* (moments a request may
leave), spaced by ``1 / per_second``, with ``burst`` of them allowed at once. A process
reserves a few slots per call (about ``lookahead`` seconds' worth) and spends them from a local
cache, so most requests cost no call at all and none costs more than one. A slot not spent
within ``hold`` of its moment is dropped, never spent late: a late request could land in the
same second as later slots and push the server over the limit.

The shared pause (the vendor said 429 with ``Retry-After``) is a key with an expiry, set by
`RedisRateLimit.note_throttled` and read by the same script call that reserves slots.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import urlsplit

import anyio
import attrs
import redis.asyncio
import redis.exceptions

from asyncbulk._exceptions import (
    DeadlineExceededError,
    ProtocolError,
    TransportError,
    ValidationError,
)
from asyncbulk._flow import SharedLimiter
from asyncbulk.redis._script import SCRIPT

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["RedisRateLimit", "RedisRateLimitStats", "SharedLimiter"]

_MICROS: Final = 1_000_000
#: The longest wait passed to the script when the caller gave no deadline: an hour.
_NO_DEADLINE_WAIT: Final = 3600.0
_REPLY_LENGTH: Final = 3


def _deadline_exceeded(what: str) -> DeadlineExceededError:
    """The error a wait ending at its deadline raises: the flow-control layer's own."""
    return DeadlineExceededError(f"deadline passed while waiting for {what}")


@attrs.frozen(kw_only=True)
class RedisRateLimitStats:
    """A snapshot of one `RedisRateLimit`'s work in this process.

    Attributes:
        script_calls: calls of the shared script (reservations and pauses).
        granted: requests let through.
        reserved: slots reserved in Redis.
        dropped: slots reserved and never spent (their moment passed by more than ``hold``).
        paused: times a wait met the shared pause.
    """

    script_calls: int
    granted: int
    reserved: int
    dropped: int
    paused: int


class RedisRateLimit:
    """A rate limit shared through Redis by every process using the same vendor account.

    Implements the `SharedLimiter` protocol. Processes share a limit when they use the same
    Redis, ``key_prefix``, ``vendor`` and ``account``; ``per_second`` and ``burst`` should be the
    same in each (each call states them; the latest caller's values apply).

    Example::

        limit = RedisRateLimit(
            "redis://127.0.0.1:6379/0", per_second=50, vendor="zefort", account=fingerprint
        )
        await limit.acquire(deadline=anyio.current_time() + 30)
    """

    def __init__(
        self,
        redis_client: str | redis.asyncio.Redis,
        *,
        per_second: float,
        burst: int = 1,
        vendor: str,
        account: str,
        key_prefix: str = "asyncbulk",
        lookahead: float = 0.1,
        hold: float = 0.05,
        timeout: float = 5.0,
    ) -> None:
        """Describe the limit; nothing is sent to Redis before the first `acquire`.

        Args:
            redis_client: a Redis URL (the limiter opens and closes its own client) or a
                ``redis.asyncio.Redis`` (the caller keeps closing it).
            per_second: requests per second allowed for all processes together.
            burst: requests that may leave at once after a quiet spell.
            vendor: the vendor's name (``"chakra"``, ``"zefort"``).
            account: the account's fingerprint, never the credential.
            key_prefix: the start of the Redis keys.
            lookahead: seconds' worth of slots a process reserves per script call.
            hold: how late a slot may still be spent.
            timeout: the longest a script call may take.

        Raises:
            ValidationError: a value is out of range, naming it.
        """
        _check_positive("per_second", per_second)
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValidationError("burst", f"must be an integer of at least 1, not {burst!r}")
        for name, text in (("vendor", vendor), ("account", account), ("key_prefix", key_prefix)):
            if not text or any(c in text for c in "{}"):
                raise ValidationError(name, "must be a non-empty string without braces")
        _check_positive("lookahead", lookahead)
        _check_positive("hold", hold)
        _check_positive("timeout", timeout)
        if isinstance(redis_client, str):
            self._client = redis.asyncio.Redis.from_url(redis_client, socket_timeout=timeout)
            self._owns_client = True
            self._where = _redacted(redis_client)
        else:
            self._client = redis_client
            self._owns_client = False
            self._where = "redis"
        self._script = self._client.register_script(SCRIPT)
        tag = f"{{{vendor}:{account}}}"
        self._keys = [f"{key_prefix}:{tag}:gcra", f"{key_prefix}:{tag}:pause"]
        self._per_second = per_second
        self._burst = burst
        self._interval = _MICROS / per_second
        self._batch = max(1, math.floor(per_second * lookahead))
        self._hold = hold
        self._timeout = timeout
        self._lock = anyio.Lock()
        self._slots: deque[float] = deque()
        self._pause_until = -math.inf
        self._closed = False
        self._script_calls = 0
        self._granted = 0
        self._reserved = 0
        self._dropped = 0
        self._paused = 0

    def __repr__(self) -> str:
        """The limit and where it lives, without any password of the Redis URL."""
        return (
            f"RedisRateLimit(per_second={self._per_second!r}, burst={self._burst!r}, "
            f"key={self._keys[0]!r}, redis={self._where!r})"
        )

    def statistics(self) -> RedisRateLimitStats:
        """A snapshot of this limiter's counters."""
        return RedisRateLimitStats(
            script_calls=self._script_calls,
            granted=self._granted,
            reserved=self._reserved,
            dropped=self._dropped,
            paused=self._paused,
        )

    async def acquire(self, *, deadline: float | None = None) -> None:
        """Return when one request may be sent, for every process sharing the limit.

        Args:
            deadline: absolute time (``anyio.current_time()``) the wait must not outlive;
                None waits as long as it takes.

        Raises:
            TimeoutError: the deadline would pass first; the wait ends at it.
            TransportError: Redis did not answer.
            ProtocolError: the script answered something it never returns.
        """
        while True:
            slot = await self._next_slot(deadline)
            if slot is None:
                continue
            await anyio.sleep_until(slot)
            if anyio.current_time() <= slot + self._hold:
                self._granted += 1
                return
            self._dropped += 1

    async def note_throttled(self, retry_after: float) -> None:
        """Pause every process sharing the limit for ``retry_after`` seconds from now.

        A longer pause already in force is kept. Slots this process holds are dropped.

        Args:
            retry_after: seconds the vendor asked to wait.

        Raises:
            ValidationError: ``retry_after`` is negative or not finite.
            TransportError: Redis did not answer.
        """
        if not math.isfinite(retry_after) or retry_after < 0:
            raise ValidationError("retry_after", f"must be a finite number >= 0, not {retry_after}")
        if retry_after == 0:
            return
        async with self._lock:
            reply = await self._call(["pause", math.ceil(retry_after * _MICROS)], None)
            if not isinstance(reply, int):
                raise ProtocolError(f"the shared limiter's script answered {reply!r}")
            self._set_pause(reply)

    async def aclose(self) -> None:
        """Close the Redis client when the limiter opened it; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        """Use the limiter for the block."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the limiter."""
        await self.aclose()

    async def _next_slot(self, deadline: float | None) -> float | None:
        """The moment of a slot this caller owns, or None after a pause (look again).

        Waits that would outlive the deadline end at it and raise. Nobody sleeps holding the
        lock, so callers with a later deadline are never held up by one with an earlier one.
        """
        async with self._lock:
            now = anyio.current_time()
            if self._pause_until <= now:
                while self._slots and self._slots[0] + self._hold < now:
                    self._slots.popleft()
                    self._dropped += 1
                free_at = None if self._slots else await self._reserve(now, deadline)
                if free_at is not None:
                    wait_until, what = free_at, "the shared rate limit"
                elif self._slots:
                    if deadline is None or self._slots[0] <= deadline:
                        return self._slots.popleft()
                    wait_until, what = self._slots[0], "the shared rate limit"
                else:
                    wait_until, what = self._pause_until, "the shared pause"
            else:
                wait_until, what = self._pause_until, "the shared pause"
        if deadline is not None and wait_until > deadline:
            await anyio.sleep_until(deadline)
            raise _deadline_exceeded(what)
        self._paused += 1
        await anyio.sleep_until(wait_until)
        return None

    async def _reserve(self, now: float, deadline: float | None) -> float | None:
        """Reserve slots into the cache or learn the pause.

        Returns None, or when the first slot would be free if none comes before the deadline.
        """
        longest = _NO_DEADLINE_WAIT if deadline is None else max(0.0, deadline - now)
        reply = await self._call(
            [
                "reserve",
                math.ceil(self._interval),
                math.ceil(self._interval * self._burst),
                self._batch,
                math.floor(longest * _MICROS),
            ],
            deadline,
        )
        if (
            not isinstance(reply, list)
            or len(reply) != _REPLY_LENGTH
            or not all(isinstance(v, int) for v in reply)
        ):
            raise ProtocolError(f"the shared limiter's script answered {reply!r}")
        count, first, pause = (int(v) for v in reply)
        if pause > 0:
            self._set_pause(pause)
            return None
        if count == 0:
            return now + first / _MICROS
        # Offsets are from the server's clock at the call; counting them from the answer's
        # arrival can only make slots later, never earlier, than the server meant.
        base = anyio.current_time()
        self._reserved += count
        self._slots.extend(
            base + max(0.0, first + i * self._interval) / _MICROS for i in range(count)
        )
        return None

    def _set_pause(self, micros: int) -> None:
        self._pause_until = max(self._pause_until, anyio.current_time() + micros / _MICROS)
        self._dropped += len(self._slots)
        self._slots.clear()

    async def _call(self, args: list[Any], deadline: float | None) -> Any:
        """One script call (EVALSHA, loading the script on NOSCRIPT), bounded in time."""
        limit = self._timeout
        if deadline is not None:
            limit = min(limit, deadline - anyio.current_time())
        self._script_calls += 1
        try:
            with anyio.fail_after(max(0.0, limit)):
                return await self._script(keys=self._keys, args=args)
        except TimeoutError:
            if deadline is not None and anyio.current_time() >= deadline:
                raise _deadline_exceeded("the shared rate limit") from None
            raise TransportError(
                "no answer in time", method="EVALSHA", url=self._where, sent=True
            ) from None
        except redis.exceptions.RedisError as error:
            raise TransportError(
                type(error).__name__, method="EVALSHA", url=self._where, sent=True
            ) from None


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(name, f"must be a number, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValidationError(name, f"must be a finite number > 0, not {value!r}")


def _redacted(url: str) -> str:
    """The URL's scheme, host, port and database: never its password."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
