"""Scenario 4, per-request overhead: one small GET through the full client vs raw aiohttp.

Many GETs of one small resource at the same concurrency (8 workers, each awaiting its own GETs
in turn): Zefort's `get_task` and Chakra's `get_background_job` through the clients (session,
limiter, retry loop, envelope, models), against raw aiohttp sending the same auth and Accept
headers and parsing the body with json (the floor). The figure is the client's CPU microseconds
per request. The server is the one that only reads (`benchmarks._readonly`), in its own process:
it answers a prepared body, so the client's figures are not slowed by a server competing with it
for the machine.
"""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Any

import aiohttp

from benchmarks._baselines import chakra_url, zefort_url
from benchmarks._harness import Case, Goal, Row, Run
from benchmarks._readonly import JOB_ID, TASK_ID

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from benchmarks._client import Context
    from benchmarks._harness import Size

WORKERS = 8
_SIZES = {"smoke": 400, "quick": 400, "full": 10_000}
#: Issue 14: asyncbulk's client CPU per GET at most this many times raw aiohttp's.
MAX_RATIO = 1.15


async def _workers(ctx: Context, one: Callable[[], Awaitable[object]]) -> dict[str, Any]:
    count = int(ctx.params["requests"])
    per_worker = count // WORKERS

    async def worker() -> None:
        for _ in range(per_worker):
            await one()

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return {"items": per_worker * WORKERS}


async def zefort_client(ctx: Context) -> dict[str, Any]:
    """`ZefortClient.get_task` of one task, many times."""
    from asyncbulk.zefort import ZefortClient  # noqa: PLC0415 - imported where used

    async with ZefortClient(ctx.server["zefort_api_key"], base_url=zefort_url(ctx)) as z:
        return await _workers(ctx, lambda: z.get_task(TASK_ID))


async def chakra_client(ctx: Context) -> dict[str, Any]:
    """`ChakraClient.get_background_job` of one job, many times."""
    from asyncbulk.chakra import ChakraClient  # noqa: PLC0415 - imported where used

    async with ChakraClient(ctx.server["chakra_token"], base_url=chakra_url(ctx)) as c:
        return await _workers(ctx, lambda: c.get_background_job(JOB_ID))


async def _raw(ctx: Context, url: str, authorization: str) -> dict[str, Any]:
    headers = {"Authorization": authorization, "Accept": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as http:

        async def one() -> Any:
            async with http.get(url) as response:
                response.raise_for_status()
                return await response.json()

        return await _workers(ctx, one)


async def zefort_raw(ctx: Context) -> dict[str, Any]:
    """Raw aiohttp GET of the same task, the same headers, json parsing."""
    key = base64.b64encode(f"{ctx.server['zefort_api_key']}:".encode()).decode()
    url = f"{zefort_url(ctx)}/api/tasks/{TASK_ID}/"
    return await _raw(ctx, url, f"Basic {key}")


async def chakra_raw(ctx: Context) -> dict[str, Any]:
    """Raw aiohttp GET of the same job, the same headers, json parsing."""
    url = f"{chakra_url(ctx)}/v1/ext/background-job/{JOB_ID}"
    return await _raw(ctx, url, f"Bearer {ctx.server['chakra_token']}")


CONTENDERS = {
    "zefort-client": zefort_client,
    "zefort-raw": zefort_raw,
    "chakra-client": chakra_client,
    "chakra-raw": chakra_raw,
}


def plan(size: Size) -> list[Case]:
    """One server; raw and client take turns, so drifting machine load hits both alike."""
    params = {"requests": _SIZES[size], "readonly": True}
    unit = "req/s"
    runs = (
        Run("zefort-raw", "raw aiohttp GET task", params, unit, floor=True),
        Run("zefort-client", "asyncbulk ZefortClient.get_task", params, unit),
        Run("chakra-raw", "raw aiohttp GET job", params, unit, floor=True),
        Run("chakra-client", "asyncbulk ChakraClient.get_background_job", params, unit),
    )
    title = f"{_SIZES[size]:,} GETs, {WORKERS} at a time, a server that only reads"
    floor = "raw aiohttp GET of the same resource, the same headers, json parsing"
    return [Case(title, runs, floor, server={"readonly_entries": 10})]


def goals(rows: list[Row], size: Size) -> list[Goal]:  # noqa: ARG001 - same goal at every size
    """Client CPU per request <= 1.15x raw aiohttp's (issue 14), for each vendor."""
    out = []
    for vendor, client, raw in (
        ("Zefort", "asyncbulk ZefortClient", "raw aiohttp GET task"),
        ("Chakra", "asyncbulk ChakraClient", "raw aiohttp GET job"),
    ):
        ours = next((r for r in rows if r.contender.startswith(client) and r.good), None)
        theirs = next((r for r in rows if r.contender == raw and r.good), None)
        name = f"CPU per GET vs raw aiohttp + json, {vendor}"
        if ours is None or theirs is None or not ours.cpu_per_request_us:
            out.append(Goal(name, f"<= {MAX_RATIO}x", "n/a", None, None))
            continue
        a, b = ours.cpu_per_request_us or 0.0, theirs.cpu_per_request_us or 1.0
        ratio = a / b
        value = f"{a:.0f} vs {b:.0f} µs = {ratio:.2f}x"
        out.append(Goal(name, f"<= {MAX_RATIO}x", value, ratio, ratio <= MAX_RATIO))
    return out
