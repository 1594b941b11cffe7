"""What the baselines share: plain aiohttp sessions set up the way a competent user would.

The baselines are what a user writes without asyncbulk: aiohttp, `json`, a loop. They send the
same headers the library sends (auth, Accept), use one `ClientSession` with a connector limit,
and parse every answer as JSON, so the comparisons measure the library's own work.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

if TYPE_CHECKING:
    from benchmarks._client import Context

#: aiohttp's own default connection limit: what a user who sets "a sensible limit" picks.
NAIVE_CONNECTOR_LIMIT = 100
#: The fixed poll interval of the naive loop and of the vendor doc's pattern.
POLL_INTERVAL = 1.0


def zefort_session(ctx: Context, *, limit: int = NAIVE_CONNECTOR_LIMIT) -> aiohttp.ClientSession:
    """A session for Zefort: Basic auth with the key as user name, JSON accepted."""
    return aiohttp.ClientSession(
        auth=aiohttp.BasicAuth(ctx.server["zefort_api_key"], ""),
        connector=aiohttp.TCPConnector(limit=limit),
        headers={"Accept": "application/json"},
    )


def chakra_session(ctx: Context, *, limit: int = NAIVE_CONNECTOR_LIMIT) -> aiohttp.ClientSession:
    """A session for Chakra: the bearer token, JSON accepted."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        headers={
            "Authorization": f"Bearer {ctx.server['chakra_token']}",
            "Accept": "application/json",
        },
    )


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    """GET and parse, raising on an error status."""
    async with http.get(url) as response:
        response.raise_for_status()
        return await response.json()


async def get_orjson(http: aiohttp.ClientSession, url: str) -> Any:
    """GET and parse with orjson, raising on an error status: the fastest parse there is."""
    async with http.get(url) as response:
        response.raise_for_status()
        return orjson.loads(await response.read())


def chakra_url(ctx: Context) -> str:
    """Chakra's base URL for this run: the read-only server's when the params say so."""
    return str(ctx.server["readonly_url" if ctx.params.get("readonly") else "chakra_url"])


def zefort_url(ctx: Context) -> str:
    """Zefort's base URL for this run: the read-only server's, the limited one, or the simulator."""
    if ctx.params.get("readonly"):
        return str(ctx.server["readonly_url"])
    return str(ctx.server["limited_zefort_url" if ctx.params.get("limited") else "zefort_url"])


async def get_json_with_retries(
    http: aiohttp.ClientSession, url: str, *, attempts: int = 10
) -> Any:
    """GET and parse, retrying by hand (see `request_json_with_retries`)."""
    return await request_json_with_retries(http, "GET", url, attempts=attempts)


async def request_json_with_retries(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    body: Any = None,
    attempts: int | None = 10,
) -> Any:
    """Send and parse, retrying by hand: Retry-After on 429, exponential backoff on 5xx.

    This is the usual per-request retry loop: each request waits out its own 429 and backs off on
    its own; nothing is shared between the requests in flight. With `attempts` None a 429 is
    retried for as long as it takes (what a user facing a quota writes); 5xx still give up
    after 10 attempts.
    """
    backoff = 0.5
    failures = 0
    tries = 0
    while attempts is None or tries < attempts - 1:
        tries += 1
        async with http.request(method, url, json=body) as response:
            if response.status == 429:
                wait = float(response.headers.get("Retry-After", backoff))
            elif response.status >= 500 and failures < 9:
                failures += 1
                wait, backoff = backoff, min(backoff * 2, 8.0)
            else:
                response.raise_for_status()
                return await response.json()
        await asyncio.sleep(wait * random.uniform(1.0, 1.2))
    async with http.request(method, url, json=body) as response:
        response.raise_for_status()
        return await response.json()
