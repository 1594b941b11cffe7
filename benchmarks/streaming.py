"""Scenario 2, entries streaming: every entry of a finished Chakra job of 100,000 entries.

The server holds one finished background job (100,000 entries; quick: 5,000) of 100-entry
pages, read with no added latency and with 20 ms added to every page. Contenders:

- asyncbulk: `ChakraClient.iter_job_entries(job_id)` with its defaults: the first page, then the
  following pages concurrently (`prefetch` of them), in order, as `JobEntry` models.
- sequential: aiohttp, page after page (`skip` += 100 until `_meta.total`), parsed with json.
- floor: raw aiohttp plus JSON parsing only, no models and no ordering, with as many pages in
  flight as asyncbulk's default `prefetch`: the most this machine does with that concurrency.

A second case streams 1,000,000 entries (quick: 20,000) at 0 ms/page from a server that only
reads (`benchmarks._readonly`: pages joined from a prepared entry), so the client is what is
measured: asyncbulk against raw aiohttp + orjson (its floor) at the same concurrency, with the
client's memory growth.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any

from benchmarks._baselines import chakra_session, chakra_url, get_json, get_orjson
from benchmarks._harness import Case, Goal, Row, Run, rss_growth_mb
from benchmarks._readonly import JOB_ID

if TYPE_CHECKING:
    from benchmarks._client import Context
    from benchmarks._harness import Size

PAGE = 100
ROUTE = "/v1/ext/background-job/{job_id}/entries"
_SIZES = {"smoke": 1_000, "quick": 5_000, "full": 100_000}
_READONLY_SIZES = {"smoke": 2_000, "quick": 20_000, "full": 1_000_000}
#: Issue 14: at least this share of the raw aiohttp + orjson floor, at most this growth (MB).
_READONLY_SHARE, _READONLY_GROWTH_MB = 0.75, 40.0
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


def _job_id(ctx: Context) -> str:
    return JOB_ID if ctx.params.get("readonly") else str(ctx.setup["job_id"])


def _entries_url(ctx: Context) -> str:
    return f"{chakra_url(ctx)}/v1/ext/background-job/{_job_id(ctx)}/entries"


async def asyncbulk_entries(ctx: Context) -> dict[str, Any]:
    """`iter_job_entries` with its defaults (or `prefetch` and client options from the params)."""
    from asyncbulk.chakra import ChakraClient  # noqa: PLC0415 - imported where used

    options = {"prefetch": ctx.params["prefetch"]} if "prefetch" in ctx.params else {}
    client_options = ctx.params.get("client", {})
    count = 0
    token, url = ctx.server["chakra_token"], chakra_url(ctx)
    async with ChakraClient(token, base_url=url, **client_options) as c:
        async for _ in c.iter_job_entries(_job_id(ctx), **options):
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
    """Raw aiohttp + json (or orjson): the first page, then the rest concurrently, unordered."""
    url = _entries_url(ctx)
    concurrency = ctx.params.get("concurrency") or default_prefetch()
    get = get_orjson if ctx.params.get("orjson") else get_json
    async with chakra_session(ctx) as http:
        first = await get(http, f"{url}?limit={PAGE}&skip=0")
        count = len(first["_data"])
        skips = iter(range(PAGE, first["_meta"]["total"], PAGE))

        async def worker() -> int:
            read = 0
            for skip in skips:
                page = await get(http, f"{url}?limit={PAGE}&skip={skip}")
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
            *(
                [Run("sequential", f"sequential pages, {tag}", params, "entries/s")]
                # Sequential reading at 0 ms/page is no goal's: the full run only.
                if latency or size == "full"
                else []
            ),
            Run("floor", f"raw aiohttp + json, {tag}", params, "entries/s", floor=True),
        ]
    setup = (
        ("/admin/chakra/processes", {"count": entries}),
        ("/admin/chakra/job", {"entries": entries}),
    )
    floor = "raw aiohttp + json, as many pages in flight as asyncbulk's prefetch, unordered"
    count = _READONLY_SIZES[size]
    readonly_params: dict[str, Any] = {"readonly": True}
    readonly = Case(
        f"{count:,} entries, a server that only reads",
        (
            Run("asyncbulk", "asyncbulk iter_job_entries, 0 ms/page", readonly_params, "entries/s"),
            Run(
                "floor",
                "raw aiohttp + orjson, 0 ms/page",
                {**readonly_params, "orjson": True},
                "entries/s",
                floor=True,
            ),
        ),
        "raw aiohttp + orjson, as many pages in flight as asyncbulk's prefetch, unordered",
        server={"readonly_entries": count},
    )
    return [Case(f"{entries:,} entries", tuple(runs), floor, setup), readonly]


def _rate(rows: list[Row], prefix: str, tag: str) -> float | None:
    for row in rows:
        if "only reads" in row.case:
            continue
        if row.contender.startswith(prefix) and row.contender.endswith(tag) and row.good:
            return row.throughput
    return None


def goals(rows: list[Row], size: Size) -> list[Goal]:
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
    return out + _readonly_goals(rows, size)


def _readonly_goals(rows: list[Row], size: Size) -> list[Goal]:
    """Issue 14: >= 75% of raw aiohttp + orjson, <= 40 MB growth, from a server that only reads."""
    count = _READONLY_SIZES[size]
    name = f"entries at 0 ms/page, {count:,} entries, server that only reads"
    mine = [r for r in rows if "only reads" in r.case and r.good]
    ours = next((r for r in mine if r.contender.startswith("asyncbulk")), None)
    best = next((r for r in mine if r.floor), None)
    share, growth = f">= {_READONLY_SHARE:.0%} of raw aiohttp + orjson", "<= 40 MB"
    if ours is None or best is None or not ours.throughput or not best.throughput:
        return [
            Goal(f"{name}, vs the floor", share, "n/a", None, None),
            Goal(f"{name}, client memory growth", growth, "n/a", None, None),
        ]
    # The smaller of the two ratios: when the server is what limits, wall time no longer shows
    # the client's own work, and its CPU time still does.
    wall_ratio = ours.throughput / best.throughput
    cpu_ratio = (best.get("cpu") or 0.0) / (ours.get("cpu") or 1.0)
    ratio = min(wall_ratio, cpu_ratio)
    value = (
        f"{ours.throughput:,.0f} vs {best.throughput:,.0f} entries/s = {wall_ratio:.0%}; "
        f"client CPU {ours.get('cpu'):.2f} vs {best.get('cpu'):.2f} s = {cpu_ratio:.0%} "
        f"(judged on the smaller)"
    )
    grown = ours.median(rss_growth_mb) or 0.0
    floor_grown = best.median(rss_growth_mb) or 0.0
    return [
        Goal(f"{name}, vs the floor", share, value, ratio, ratio >= _READONLY_SHARE),
        Goal(
            f"{name}, client memory growth",
            growth,
            f"{grown:.1f} MB (the floor: {floor_grown:.1f} MB)",
            grown / _READONLY_GROWTH_MB,
            grown <= _READONLY_GROWTH_MB,
        ),
    ]
