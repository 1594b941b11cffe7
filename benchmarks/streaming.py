"""Scenario 2, entries streaming: every entry of a finished Chakra job of 100,000 entries.

The server holds one finished background job (100,000 entries; quick: 10,000) of 100-entry
pages, read with no added latency and with 20 ms added to every page. Contenders:

- asyncbulk: `ChakraClient.iter_job_entries(job_id)` with its defaults: the first page, then the
  following pages concurrently (`prefetch` of them), in order, as `JobEntry` models.
- sequential: aiohttp, page after page (`skip` += 100 until `_meta.total`), parsed with json.
- floor: raw aiohttp plus JSON parsing only, no models and no ordering, with as many pages in
  flight as asyncbulk's default `prefetch`: the most this machine does with that concurrency.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any

from benchmarks._baselines import chakra_session, get_json
from benchmarks._harness import Case, Goal, Row, Run

if TYPE_CHECKING:
    from benchmarks._client import Context
    from benchmarks._harness import Size

PAGE = 100
ROUTE = "/v1/ext/background-job/{job_id}/entries"
_SIZES = {"smoke": 1_000, "quick": 10_000, "full": 100_000}
_LATENCIES = (0.0, 0.020)
_FALLBACK_PREFETCH = 4


def default_prefetch() -> int:
    """The default `prefetch` of asyncbulk's `iter_job_entries` (the floor's concurrency)."""
    try:
        from asyncbulk.chakra import ChakraClient  # noqa: PLC0415 - imported where used
    except ImportError:
        return _FALLBACK_PREFETCH
    default = inspect.signature(ChakraClient.iter_job_entries).parameters["prefetch"].default
    return int(default)


def _entries_url(ctx: Context) -> str:
    return f"{ctx.server['chakra_url']}/v1/ext/background-job/{ctx.setup['job_id']}/entries"


async def asyncbulk_entries(ctx: Context) -> dict[str, Any]:
    """`iter_job_entries` with its defaults (or `prefetch` and client options from the params)."""
    from asyncbulk.chakra import ChakraClient  # noqa: PLC0415 - imported where used

    options = {"prefetch": ctx.params["prefetch"]} if "prefetch" in ctx.params else {}
    client_options = ctx.params.get("client", {})
    count = 0
    token, url = ctx.server["chakra_token"], ctx.server["chakra_url"]
    async with ChakraClient(token, base_url=url, **client_options) as c:
        async for _ in c.iter_job_entries(ctx.setup["job_id"], **options):
            count += 1
    return {"items": count}


async def sequential(ctx: Context) -> dict[str, Any]:
    """Page after page with aiohttp: `skip` grows by what was read until `_meta.total`."""
    url = _entries_url(ctx)
    count = skip = 0
    async with chakra_session(ctx) as http:
        while True:
            page = await get_json(http, f"{url}?limit={PAGE}&skip={skip}")
            entries = page["_data"]
            count += len(entries)
            skip += len(entries)
            if not entries or skip >= page["_meta"]["total"]:
                break
    return {"items": count}


async def floor(ctx: Context) -> dict[str, Any]:
    """Raw aiohttp + json: the first page, then the rest `concurrency` at a time, unordered."""
    url = _entries_url(ctx)
    concurrency = ctx.params.get("concurrency") or default_prefetch()
    async with chakra_session(ctx) as http:
        first = await get_json(http, f"{url}?limit={PAGE}&skip=0")
        count = len(first["_data"])
        skips = iter(range(PAGE, first["_meta"]["total"], PAGE))

        async def worker() -> int:
            read = 0
            for skip in skips:
                page = await get_json(http, f"{url}?limit={PAGE}&skip={skip}")
                read += len(page["_data"])
            return read

        count += sum(await asyncio.gather(*(worker() for _ in range(concurrency))))
    return {"items": count, "note": f"{concurrency} in flight"}


CONTENDERS = {"asyncbulk": asyncbulk_entries, "sequential": sequential, "floor": floor}


def _latency(seconds: float) -> list[dict[str, Any]]:
    if not seconds:
        return []
    return [{"kind": "latency", "delay": seconds, "vendor": "chakra", "route": ROUTE}]


def plan(size: Size) -> list[Case]:
    """One server holding the job; each contender at each page latency."""
    entries = _SIZES[size]
    runs = []
    for latency in _LATENCIES:
        params = {"faults": _latency(latency)}
        tag = f"{latency * 1000:.0f} ms/page"
        runs += [
            Run("asyncbulk", f"asyncbulk iter_job_entries, {tag}", params, "entries/s"),
            Run("sequential", f"sequential pages, {tag}", params, "entries/s"),
            Run("floor", f"raw aiohttp + json, {tag}", params, "entries/s", floor=True),
        ]
    setup = (
        ("/admin/chakra/processes", {"count": entries}),
        ("/admin/chakra/job", {"entries": entries}),
    )
    floor = "raw aiohttp + json, as many pages in flight as asyncbulk's prefetch, unordered"
    return [Case(f"{entries:,} entries", tuple(runs), floor, setup)]


def _rate(rows: list[Row], prefix: str, tag: str) -> float | None:
    for row in rows:
        if row.contender.startswith(prefix) and row.contender.endswith(tag) and row.good:
            return row.throughput
    return None


def goals(rows: list[Row], size: Size) -> list[Goal]:  # noqa: ARG001 - same goals at every size
    """>= 10x sequential at 20 ms per page; >= 50% of the floor at 0 ms."""
    out = []
    ours, theirs = _rate(rows, "asyncbulk", "20 ms/page"), _rate(rows, "sequential", "20 ms/page")
    if ours is None or theirs is None:
        out.append(Goal("streaming vs sequential at 20 ms", ">= 10x", "n/a", None, None))
    else:
        ratio = ours / theirs
        value = f"{ours:,.0f} vs {theirs:,.0f} entries/s = {ratio:.1f}x"
        out.append(Goal("streaming vs sequential at 20 ms", ">= 10x", value, ratio, ratio >= 10))
    ours, best = _rate(rows, "asyncbulk", "20 ms/page"), _rate(rows, "raw aiohttp", "20 ms/page")
    theirs = _rate(rows, "sequential", "20 ms/page")
    if ours is not None and best is not None and theirs is not None:
        value = (
            f"the floor reads {best:,.0f} entries/s = {best / theirs:.1f}x sequential, the most "
            f"this server and machine give at this concurrency; asyncbulk reaches {ours / best:.0%}"
            " of it"
        )
        out.append(Goal("streaming at 20 ms, ceiling", "", value, ours / best, None, info=True))
    ours, best = _rate(rows, "asyncbulk", " 0 ms/page"), _rate(rows, "raw aiohttp", " 0 ms/page")
    if ours is None or best is None:
        out.append(Goal("streaming vs floor at 0 ms", ">= 50%", "n/a", None, None))
    else:
        ratio = ours / best
        value = f"{ours:,.0f} vs {best:,.0f} entries/s = {ratio:.0%}"
        out.append(Goal("streaming vs floor at 0 ms", ">= 50%", value, ratio, ratio >= 0.5))
    return out
