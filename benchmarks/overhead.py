"""Scenario 4, per-request overhead: one small GET through the full client vs raw aiohttp.

Many GETs of one small resource at the same concurrency (8 workers, each awaiting its own GETs
in turn): Zefort's `get_task` and Chakra's `get_background_job` through the clients (session,
limiter, retry loop, envelope, models), against raw aiohttp sending the same auth and Accept
headers and parsing the body with json (the floor). The figure is the client's CPU microseconds
per request. The server is the one that only reads (`benchmarks._readonly`), in its own process:
it answers a prepared body, so the client's figures are not slowed by a server competing with it
for the machine.

Separate processes measured one after the other see the machine at different speeds (on a
shared machine a run's CPU per GET moves by a fifth or more), and each process's allocator
starts from its own history. So the goal is judged on a paired run as well: one process holds
both a raw aiohttp session and the client, and sends blocks of GETs through each in turn, the
CPU time of every block read with `time.process_time`; the ratio is that of their sums. Drift
in the machine's speed then falls on both alike.
"""

from __future__ import annotations

import asyncio
import base64
import time
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
#: GETs in each block of a paired run (each side's first block warms it up, and is not counted).
BLOCK = 200
#: Issue 14: asyncbulk's client CPU per GET at most this many times raw aiohttp's.
MAX_RATIO = 1.15


async def _workers(
    ctx: Context, one: Callable[[], Awaitable[object]], count: int | None = None
) -> dict[str, Any]:
    count = int(ctx.params["requests"]) if count is None else count
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


def _raw_session(authorization: str) -> aiohttp.ClientSession:
    """Raw aiohttp's session: the auth and Accept headers the client sends, as defaults."""
    return aiohttp.ClientSession(
        headers={"Authorization": authorization, "Accept": "application/json"}
    )


def _raw_one(http: aiohttp.ClientSession, url: str) -> Callable[[], Awaitable[object]]:
    """One raw GET of ``url``: checked, and its body parsed with json."""

    async def one() -> Any:
        async with http.get(url) as response:
            response.raise_for_status()
            return await response.json()

    return one


def _zefort_raw(ctx: Context) -> tuple[str, str]:
    """The task's URL and the Basic authorization raw aiohttp sends for it."""
    key = base64.b64encode(f"{ctx.server['zefort_api_key']}:".encode()).decode()
    return f"{zefort_url(ctx)}/api/tasks/{TASK_ID}/", f"Basic {key}"


def _chakra_raw(ctx: Context) -> tuple[str, str]:
    """The job's URL and the bearer authorization raw aiohttp sends for it."""
    url = f"{chakra_url(ctx)}/v1/ext/background-job/{JOB_ID}"
    return url, f"Bearer {ctx.server['chakra_token']}"


async def zefort_raw(ctx: Context) -> dict[str, Any]:
    """Raw aiohttp GET of the same task, the same headers, json parsing."""
    url, authorization = _zefort_raw(ctx)
    async with _raw_session(authorization) as http:
        return await _workers(ctx, _raw_one(http, url))


async def chakra_raw(ctx: Context) -> dict[str, Any]:
    """Raw aiohttp GET of the same job, the same headers, json parsing."""
    url, authorization = _chakra_raw(ctx)
    async with _raw_session(authorization) as http:
        return await _workers(ctx, _raw_one(http, url))


async def _paired(
    ctx: Context, raw: Callable[[], Awaitable[object]], ours: Callable[[], Awaitable[object]]
) -> dict[str, Any]:
    """Blocks of GETs through raw aiohttp and through the client in turn, in this process."""
    blocks = max(4, int(ctx.params["requests"]) // BLOCK // 2)
    cpu = {"raw": 0.0, "client": 0.0}
    for block in range(blocks + 1):
        for side, one in (("raw", raw), ("client", ours)):
            started = time.process_time()
            await _workers(ctx, one, BLOCK)
            if block:
                cpu[side] += time.process_time() - started
    gets = blocks * BLOCK
    raw_us, client_us = cpu["raw"] / gets * 1e6, cpu["client"] / gets * 1e6
    return {
        "items": 2 * (blocks + 1) * BLOCK,
        "paired": {"raw_us": raw_us, "client_us": client_us, "ratio": client_us / raw_us},
        "note": f"{gets:,} GETs each in blocks of {BLOCK}: {client_us:.0f} vs {raw_us:.0f} µs",
    }


async def _paired_with(
    ctx: Context,
    raw: tuple[str, str],
    client: Any,
    get: Callable[[Any], Awaitable[object]],
) -> dict[str, Any]:
    """`_paired` of raw aiohttp's GET of ``raw`` (URL, authorization) and ``get(client)``."""
    url, authorization = raw
    async with _raw_session(authorization) as http, client:
        return await _paired(ctx, _raw_one(http, url), lambda: get(client))


async def zefort_paired(ctx: Context) -> dict[str, Any]:
    """Raw aiohttp and `ZefortClient.get_task` in one process, a block of GETs each in turn."""
    from asyncbulk.zefort import ZefortClient  # noqa: PLC0415 - imported where used

    client = ZefortClient(ctx.server["zefort_api_key"], base_url=zefort_url(ctx))
    return await _paired_with(ctx, _zefort_raw(ctx), client, lambda z: z.get_task(TASK_ID))


async def chakra_paired(ctx: Context) -> dict[str, Any]:
    """Raw aiohttp and `ChakraClient.get_background_job` in one process, a block each in turn."""
    from asyncbulk.chakra import ChakraClient  # noqa: PLC0415 - imported where used

    client = ChakraClient(ctx.server["chakra_token"], base_url=chakra_url(ctx))
    return await _paired_with(ctx, _chakra_raw(ctx), client, lambda c: c.get_background_job(JOB_ID))


CONTENDERS = {
    "zefort-paired": zefort_paired,
    "chakra-paired": chakra_paired,
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
        Run("zefort-paired", "paired in one process: raw aiohttp and get_task", params, unit),
        Run(
            "chakra-paired",
            "paired in one process: raw aiohttp and get_background_job",
            params,
            unit,
        ),
    )
    title = f"{_SIZES[size]:,} GETs, {WORKERS} at a time, a server that only reads"
    floor = "raw aiohttp GET of the same resource, the same headers, json parsing"
    return [Case(title, runs, floor, server={"readonly_entries": 10})]


def _paired_ratio(result: dict[str, Any]) -> float | None:
    """A paired run's client CPU over raw aiohttp's."""
    paired = result.get("paired")
    return None if paired is None else float(paired["ratio"])


def goals(rows: list[Row], size: Size) -> list[Goal]:  # noqa: ARG001 - same goal at every size
    """Client CPU per request <= 1.15x raw aiohttp's (issue 14), for each vendor.

    Judged on the paired run (both in one process, in alternating blocks); the ratio of the
    separate processes is shown beside it.
    """
    out = []
    for vendor, client, raw, paired in (
        (
            "Zefort",
            "asyncbulk ZefortClient",
            "raw aiohttp GET task",
            "paired in one process: raw aiohttp and get_task",
        ),
        (
            "Chakra",
            "asyncbulk ChakraClient",
            "raw aiohttp GET job",
            "paired in one process: raw aiohttp and get_background_job",
        ),
    ):
        name = f"CPU per GET vs raw aiohttp + json, {vendor}"
        pair = next((r for r in rows if r.contender == paired and r.good), None)
        middle = None if pair is None else pair.middle(_paired_ratio)
        if pair is None or middle is None:
            out.append(Goal(name, f"<= {MAX_RATIO}x", "n/a", None, None))
        else:
            figures = middle["paired"]
            ratio = float(figures["ratio"])
            low, high = pair.spread(_paired_ratio) or (ratio, ratio)
            value = (
                f"{figures['client_us']:.0f} vs {figures['raw_us']:.0f} µs = {ratio:.2f}x "
                f"({low:.2f}-{high:.2f}x, {len(pair.good)} runs), in one process"
            )
            out.append(Goal(name, f"<= {MAX_RATIO}x", value, ratio, ratio <= MAX_RATIO))
        ours = next((r for r in rows if r.contender.startswith(client) and r.good), None)
        theirs = next((r for r in rows if r.contender == raw and r.good), None)
        if ours is not None and theirs is not None and ours.cpu_per_request_us:
            a, b = ours.cpu_per_request_us or 0.0, theirs.cpu_per_request_us or 1.0
            out.append(
                Goal(
                    f"{name}, separate processes",
                    "-",
                    f"{a:.0f} vs {b:.0f} µs = {a / b:.2f}x (the machine moves between them)",
                    a / b,
                    None,
                    info=True,
                )
            )
    return out
