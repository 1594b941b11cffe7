"""`asyncbulk.redis.RedisRateLimit` against the real Redis: one limit for many processes."""

from __future__ import annotations

import bisect
import json
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
import redis.asyncio
from aiohttp import web
from loopback import serve

from asyncbulk import TransportError, ValidationError
from asyncbulk.redis import RedisRateLimit, SharedLimiter

pytestmark = pytest.mark.anyio

PROCESS = Path(__file__).with_name("shared_limit_process.py")


def limiter(url: str, prefix: str, **options) -> RedisRateLimit:
    settings = {"per_second": 50, "vendor": "chakra", "account": "acct", "key_prefix": prefix}
    return RedisRateLimit(url, **(settings | options))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        pytest.param({"per_second": 0}, "per_second", id="zero-rate"),
        pytest.param({"per_second": float("inf")}, "per_second", id="infinite-rate"),
        pytest.param({"burst": 0}, "burst", id="zero-burst"),
        pytest.param({"burst": 1.5}, "burst", id="fractional-burst"),
        pytest.param({"vendor": ""}, "vendor", id="empty-vendor"),
        pytest.param({"account": "a}b"}, "account", id="brace-in-account"),
        pytest.param({"hold": -1}, "hold", id="negative-hold"),
    ],
)
def test_bad_settings_name_the_field(options, field) -> None:
    """Each out-of-range setting raises ValidationError naming it, before Redis is touched."""
    with pytest.raises(ValidationError) as caught:
        limiter("redis://127.0.0.1:1/0", "unused", **options)
    assert caught.value.field == field


def test_the_repr_hides_the_redis_password() -> None:
    """The limiter's repr names the Redis host, never the password in its URL."""
    text = repr(limiter("redis://:s3cr3t-pass@127.0.0.1:6379/0", "p"))
    assert "s3cr3t-pass" not in text
    assert "127.0.0.1:6379" in text


async def test_it_implements_the_shared_limiter_protocol(redis_address, redis_prefix) -> None:
    """RedisRateLimit is a SharedLimiter, the protocol flow control calls."""
    async with limiter(redis_address, redis_prefix) as limit:
        assert isinstance(limit, SharedLimiter)


async def test_most_requests_cost_no_script_call(redis_address, redis_prefix) -> None:
    """Slots are reserved in batches: 30 requests at 100/s take far fewer than 30 script calls."""
    async with limiter(redis_address, redis_prefix, per_second=100, burst=10) as limit:
        for _ in range(30):
            await limit.acquire(deadline=anyio.current_time() + 30)
        stats = limit.statistics()
    assert stats.granted == 30
    assert stats.reserved == stats.script_calls * 10
    assert stats.script_calls <= stats.granted
    assert stats.script_calls < 30 or stats.dropped > 0


async def test_the_limit_lives_in_redis(redis_address, redis_prefix) -> None:
    """Two limiters on one key share one budget: the second waits behind the first's slots."""
    async with (
        limiter(redis_address, redis_prefix, per_second=1, lookahead=1) as first,
        limiter(redis_address, redis_prefix, per_second=1, lookahead=1) as second,
    ):
        await first.acquire(deadline=anyio.current_time() + 5)
        client = redis.asyncio.Redis.from_url(redis_address)
        try:
            keys = [k.decode() async for k in client.scan_iter(match=f"{redis_prefix}*")]
            assert keys == [f"{redis_prefix}:{{chakra:acct}}:gcra"]
            before = await client.get(keys[0])
            start = anyio.current_time()
            with pytest.raises(TimeoutError):
                await second.acquire(deadline=start + 0.2)
            assert anyio.current_time() >= start + 0.2
            assert await client.get(keys[0]) == before, "a refused wait reserved nothing"
        finally:
            await client.aclose()


async def test_a_throttle_pauses_every_process(redis_address, redis_prefix) -> None:
    """note_throttled sets a pause key with an expiry; another limiter's wait meets it."""
    async with (
        limiter(redis_address, redis_prefix) as told,
        limiter(redis_address, redis_prefix) as other,
    ):
        await told.note_throttled(30)
        client = redis.asyncio.Redis.from_url(redis_address)
        try:
            ttl = await client.pttl(f"{redis_prefix}:{{chakra:acct}}:pause")
            assert 29_000 < ttl <= 30_000
            await told.note_throttled(1)
            assert await client.pttl(f"{redis_prefix}:{{chakra:acct}}:pause") > 1_000
        finally:
            await client.aclose()
        start = anyio.current_time()
        with pytest.raises(TimeoutError, match="pause"):
            await other.acquire(deadline=start + 0.2)
        assert anyio.current_time() >= start + 0.2
        assert other.statistics().script_calls == 1


async def test_a_flushed_script_is_loaded_again(redis_address, redis_prefix) -> None:
    """After SCRIPT FLUSH (a restarted Redis), the next acquire loads the script and goes on."""
    async with limiter(redis_address, redis_prefix, lookahead=0.01) as limit:
        await limit.acquire(deadline=anyio.current_time() + 5)
        client = redis.asyncio.Redis.from_url(redis_address)
        try:
            await client.script_flush()
        finally:
            await client.aclose()
        await limit.acquire(deadline=anyio.current_time() + 5)
        assert limit.statistics().granted == 2


async def test_an_unreachable_redis_is_a_transport_error() -> None:
    """A Redis that refuses connections raises TransportError, without the URL's password."""
    async with limiter("redis://:pw-secret-1@127.0.0.1:1/0", "p") as limit:
        with pytest.raises(TransportError) as caught:
            await limit.acquire(deadline=anyio.current_time() + 5)
    assert "pw-secret-1" not in str(caught.value)


async def run_processes(redis_address: str, prefix: str, seconds: float) -> None:
    """Four processes share 50 req/s: no one-second window at the server sees more than 55."""
    arrivals: list[float] = []

    async def hit(request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/hit", hit)
    async with serve(app) as base_url:
        start = time.time() + 2.0
        processes = [
            await anyio.open_process(
                [
                    sys.executable,
                    str(PROCESS),
                    base_url,
                    redis_address,
                    prefix,
                    str(start),
                    str(seconds),
                ],
                stderr=subprocess.STDOUT,
            )
            for _ in range(4)
        ]
        outputs = []
        with anyio.fail_after(seconds + 60):
            for process in processes:
                assert process.stdout is not None
                chunks = [chunk async for chunk in process.stdout]
                assert await process.wait() == 0, b"".join(chunks).decode()
                outputs.append(json.loads(b"".join(chunks).decode().splitlines()[-1]))
    assert sum(o["sent"] for o in outputs) == len(arrivals)
    assert all(o["sent"] > 0 for o in outputs), outputs
    assert all(o["script_calls"] <= o["granted"] for o in outputs), outputs
    arrivals.sort()
    busiest = max(bisect.bisect_left(arrivals, t + 1.0) - i for i, t in enumerate(arrivals))
    print(f"{len(arrivals)} requests in {seconds} s, busiest second {busiest}", outputs)
    assert busiest <= 55, (busiest, outputs)


async def test_four_processes_share_one_limit(redis_address, redis_prefix) -> None:
    """Four OS processes sharing 50 req/s for 3 s: no one-second window above 55 at the server."""
    await run_processes(redis_address, redis_prefix, 3.0)


@pytest.mark.slow
async def test_four_processes_share_one_limit_for_ten_seconds(redis_address, redis_prefix) -> None:
    """Four OS processes sharing 50 req/s for 10 s: no one-second window above 55."""
    await run_processes(redis_address, redis_prefix, 10.0)
