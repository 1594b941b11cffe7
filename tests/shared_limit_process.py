"""One process of the shared-limit test: send GETs as fast as a `RedisRateLimit` allows.

Usage: ``python shared_limit_process.py BASE_URL REDIS_URL PREFIX START SECONDS``: waits until
the wall-clock time START, sends for SECONDS with a few requests in flight, then prints its
limiter's statistics as JSON.
"""

from __future__ import annotations

import json
import sys
import time

import aiohttp
import anyio
import attrs

from asyncbulk.redis import RedisRateLimit

PER_SECOND = 50
IN_FLIGHT = 8


async def main(base_url: str, redis_url: str, prefix: str, start: float, seconds: float) -> None:
    await anyio.sleep(max(0.0, start - time.time()))
    stop = anyio.current_time() + seconds
    sent = 0
    async with (
        RedisRateLimit(
            redis_url, per_second=PER_SECOND, vendor="zefort", account="shared", key_prefix=prefix
        ) as limit,
        aiohttp.ClientSession() as http,
    ):

        async def sender() -> None:
            nonlocal sent
            while True:
                try:
                    await limit.acquire(deadline=stop)
                except TimeoutError:
                    return
                async with http.get(f"{base_url}/hit") as response:
                    response.raise_for_status()
                sent += 1

        async with anyio.create_task_group() as group:
            for _ in range(IN_FLIGHT):
                group.start_soon(sender)
        print(json.dumps({"sent": sent, **attrs.asdict(limit.statistics())}))


if __name__ == "__main__":
    url, redis, prefix, start, seconds = sys.argv[1:]
    anyio.run(main, url, redis, prefix, float(start), float(seconds))
