"""`rate_limit=` takes a limit shared by processes: asked before every try, told of every 429."""

from __future__ import annotations

import anyio
import pytest

from asyncbulk import DeadlineExceededError, RetryPolicy, SharedLimiter, ValidationError
from asyncbulk.redis import RedisRateLimit
from asyncbulk.testing import Fault, Simulator
from asyncbulk.zefort import ZefortClient

pytestmark = pytest.mark.anyio

TASK_ROUTE = "/api/tasks/{id}/"


class CountingLimiter:
    """A shared limiter that grants every turn and remembers what it was asked and told."""

    def __init__(self, *, refuse: bool = False) -> None:
        """Grant every turn, or (``refuse``) none before any deadline."""
        self.acquired = 0
        self.deadlines: list[float | None] = []
        self.throttled: list[float] = []
        self.closed = False
        self._refuse = refuse

    async def acquire(self, *, deadline: float | None = None) -> None:
        self.deadlines.append(deadline)
        if self._refuse:
            raise TimeoutError("the shared limit has no slot before the deadline")
        self.acquired += 1

    async def note_throttled(self, retry_after: float) -> None:
        self.throttled.append(retry_after)

    async def aclose(self) -> None:
        self.closed = True


def _tasks(sim: Simulator, n: int) -> list[str]:
    return [
        sim.zefort.submit_bulk_update({"attributes": {"n": i}, "search": {}}).id for i in range(n)
    ]


async def test_the_shared_limiter_is_asked_before_every_try_and_told_of_every_429() -> None:
    """Each try the server saw took one shared turn; each 429 was passed on to the others."""
    fault = Fault("status", retry_after=0, times=3, vendor="zefort", route=TASK_ROUTE)
    limit = CountingLimiter()
    assert isinstance(limit, SharedLimiter)
    async with Simulator(faults=[fault]) as sim:
        ids = _tasks(sim, 10)
        async with ZefortClient(
            sim.zefort_api_key,
            base_url=sim.zefort_url,
            retry=RetryPolicy(initial_wait=0, max_wait=0),
            rate_limit=limit,
        ) as zefort:
            for task_id in ids:
                await zefort.get_task(task_id)
    seen = sim.records.count(vendor="zefort", route=TASK_ROUTE)
    assert seen == 13
    assert limit.acquired == seen
    assert limit.throttled == [0.0, 0.0, 0.0]
    assert not limit.closed, "the client never closes a limiter its caller owns"


async def test_a_shared_limiter_with_no_slot_before_the_deadline_sends_nothing() -> None:
    """A shared wait past the call's deadline is `DeadlineExceededError`, and nothing is sent."""
    limit = CountingLimiter(refuse=True)
    async with Simulator() as sim:
        (task_id,) = _tasks(sim, 1)
        async with ZefortClient(
            sim.zefort_api_key, base_url=sim.zefort_url, rate_limit=limit
        ) as zefort:
            with pytest.raises(DeadlineExceededError):
                await zefort.get_task(task_id, deadline=anyio.current_time() + 1)
    assert limit.deadlines
    assert limit.deadlines[0] is not None
    assert sim.records.count(vendor="zefort", route=TASK_ROUTE) == 0


def test_rate_limit_refuses_what_is_neither_kind() -> None:
    """A rate_limit that is neither a RateLimit nor a SharedLimiter names the field."""
    with pytest.raises(ValidationError, match="rate_limit"):
        ZefortClient("zefort-key", rate_limit=50)  # type: ignore[arg-type]


async def test_a_client_takes_its_turns_at_the_rate_shared_through_redis(
    redis_address, redis_prefix
) -> None:
    """A client given RedisRateLimit takes one granted slot in Redis for every request sent."""
    async with (
        Simulator() as sim,
        RedisRateLimit(
            redis_address,
            per_second=200,
            burst=10,
            vendor="zefort",
            account="wiring",
            key_prefix=redis_prefix,
        ) as limit,
    ):
        ids = _tasks(sim, 30)
        async with ZefortClient(
            sim.zefort_api_key, base_url=sim.zefort_url, rate_limit=limit
        ) as zefort:
            for task_id in ids:
                await zefort.get_task(task_id)
        stats = limit.statistics()
    assert stats.granted == sim.records.count(vendor="zefort", route=TASK_ROUTE) == 30
    assert 1 <= stats.script_calls <= 30
