"""Scenario 1, tracking: thousands of Zefort tasks finishing at random times, followed to the end.

The server creates N pending tasks that finish at uniformly random times over T seconds and adds
5 ms to every Zefort request. Contenders:

- asyncbulk: `ZefortClient.track_tasks(ids)`, one scheduler for every task, sweeping the task
  listing when that is cheaper than asking for each task due.
- naive loop: one coroutine per task, `asyncio.gather`, a GET per task every second (aiohttp,
  connector limit 100), what most hand-written trackers look like.
- vendor doc: the Zefort documentation's pattern, polling one task until it is done (a GET, then a
  1 s sleep), then the next, in turn.

Detection lag is when the client saw a task finished (wall clock) minus when the server finished
it (wall clock, same machine). A last case follows 100,000 tasks (quick: 5,000) with the tracker
alone, for its memory per task and CPU.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from benchmarks._baselines import POLL_INTERVAL, get_json, zefort_session
from benchmarks._harness import Case, Goal, Row, Run

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from benchmarks._client import Context
    from benchmarks._harness import Size

LATENCY = [{"kind": "latency", "delay": 0.005, "vendor": "zefort"}]
# (tasks, seconds) of the comparison, and tasks of the tracker-alone case, per size.
_SIZES: dict[str, tuple[int, float, int, float]] = {
    "smoke": (100, 1.5, 1_000, 1.5),
    "quick": (1_000, 3.0, 5_000, 3.0),
    "full": (10_000, 60.0, 100_000, 60.0),
}
# Tasks start finishing this long after they are created, once the client is measuring.
_OFFSET = 0.5


async def prepare(ctx: Context) -> None:
    """Create the run's tasks in the simulator's state (not through the API)."""
    spec = {"count": ctx.params["tasks"], "over": ctx.params["over"], "offset": _OFFSET}
    ctx.data["ids"] = (await ctx.admin("POST", "/admin/zefort/tasks", spec))["ids"]


def deadline(ctx: Context) -> float:
    """A generous overall deadline for following every task."""
    return float(ctx.params["over"]) * 3 + 120.0


async def asyncbulk_tracker(ctx: Context) -> dict[str, Any]:
    """`track_tasks` over every id, in `async with` (polling in the background, lowest lag)."""
    from asyncbulk.zefort import ZefortClient  # noqa: PLC0415 - imported where used

    seen: dict[str, float] = {}
    key, url = ctx.server["zefort_api_key"], ctx.server["zefort_url"]
    async with (
        ZefortClient(key, base_url=url) as zefort,
        zefort.track_tasks(ctx.data["ids"], timeout=deadline(ctx)) as tasks,
    ):
        async for task in tasks:
            seen[task.id] = time.time()
        stats = tasks.stats
    note = f"{stats.sweeps:,} sweeps of the listing, {stats.polls:,} single GETs"
    return {"seen": seen, "items": len(seen), "note": note}


async def naive_loop(ctx: Context, get: Callable[..., Awaitable[Any]] = get_json) -> dict[str, Any]:
    """One coroutine per task, `gather`, a GET per task every second (through `get`)."""
    base = ctx.server["zefort_url"]
    seen: dict[str, float] = {}
    async with zefort_session(ctx) as http:

        async def follow(task_id: str) -> None:
            url = f"{base}/api/tasks/{task_id}/"
            while True:
                task = await get(http, url)
                if task["backend_status"] != "pending":
                    seen[task_id] = time.time()
                    return
                await asyncio.sleep(POLL_INTERVAL)

        await asyncio.wait_for(
            asyncio.gather(*(follow(task_id) for task_id in ctx.data["ids"])), deadline(ctx)
        )
    return {"seen": seen, "items": len(seen)}


async def vendor_doc(ctx: Context) -> dict[str, Any]:
    """The vendor documentation's pattern: poll one task until done, then the next."""
    base = ctx.server["zefort_url"]
    seen: dict[str, float] = {}

    async def follow_all() -> None:
        async with zefort_session(ctx) as http:
            for task_id in ctx.data["ids"]:
                url = f"{base}/api/tasks/{task_id}/"
                while True:
                    task = await get_json(http, url)
                    if task["backend_status"] != "pending":
                        seen[task_id] = time.time()
                        break
                    await asyncio.sleep(POLL_INTERVAL)

    await asyncio.wait_for(follow_all(), deadline(ctx))
    return {"seen": seen, "items": len(seen)}


CONTENDERS = {
    "asyncbulk": asyncbulk_tracker,
    "naive": naive_loop,
    "vendor-doc": vendor_doc,
}


def plan(size: Size) -> list[Case]:
    """The comparison (a server per contender, but at smoke size) and 100k tasks alone."""
    tasks, over, alone, alone_over = _SIZES[size]
    params = {"tasks": tasks, "over": over, "faults": LATENCY}
    unit = None
    comparison = Case(
        title=f"{tasks:,} tasks over {over:.0f} s",
        runs=(
            Run("asyncbulk", "asyncbulk track_tasks", params, unit),
            Run("naive", "naive loop (gather, 1 s sleep)", params, unit),
            Run("vendor-doc", "vendor doc (one task at a time)", params, unit),
        ),
        server_per_run=size != "smoke",
    )
    big = Case(
        title=f"{alone:,} tasks over {alone_over:.0f} s",
        runs=(
            Run(
                "asyncbulk",
                "asyncbulk track_tasks",
                {"tasks": alone, "over": alone_over, "faults": LATENCY},
                unit,
            ),
        ),
    )
    return [comparison, big]


def _find(rows: list[Row], case_prefix: str, contender_prefix: str) -> Row | None:
    for row in rows:
        if row.case.startswith(case_prefix) and row.contender.startswith(contender_prefix):
            return row
    return None


def goals(rows: list[Row], size: Size) -> list[Goal]:
    """p99 lag <= 1 s with <= 20% of the naive loop's requests; <= 3 KB of memory per task."""
    tasks, _, alone, _ = _SIZES[size]
    ours = _find(rows, f"{tasks:,} ", "asyncbulk")
    naive = _find(rows, f"{tasks:,} ", "naive")
    big = _find(rows, f"{alone:,} ", "asyncbulk")
    out = []
    if ours is None or ours.error or ours.lag("p99") is None:
        out.append(Goal("tracking p99 detection lag", "<= 1 s", "n/a", None, None))
    else:
        p99 = ours.lag("p99") or 0.0
        lag = ours.get("lag") or {}
        complete = lag.get("detected") == lag.get("expected")
        value = f"{p99:.2f} s" + ("" if complete else " (NOT all detected)")
        out.append(Goal("tracking p99 detection lag", "<= 1 s", value, p99, p99 <= 1 and complete))
    if ours is None or naive is None or ours.error or naive.error:
        out.append(Goal("tracking requests vs naive loop", "<= 20%", "n/a", None, None))
    else:
        ratio = ours.get("requests") / max(1, naive.get("requests"))
        value = f"{ours.get('requests'):,} vs {naive.get('requests'):,} = {ratio:.1%}"
        out.append(Goal("tracking requests vs naive loop", "<= 20%", value, ratio, ratio <= 0.2))
    if big is None or big.error:
        out.append(Goal("tracker memory per task", "<= 3 KB", "n/a", None, None))
    else:
        # The marginal cost: the RSS growth of the big run over the small one, per extra task,
        # so the fixed costs (session, buffers, lazily imported modules) cancel out.
        grown = _growth(big)
        small = _growth(ours) if ours is not None and not ours.error else 0.0
        extra = alone - (tasks if small else 0)
        per_task = (grown - small) * 1024 * 1024 / extra
        value = (
            f"{per_task / 1024:.2f} KB ({alone:,} tasks: RSS +{grown:.1f} MB"
            f"{f' vs +{small:.1f} MB for {tasks:,}' if small else ''}; CPU {big.get('cpu'):.1f} s)"
        )
        out.append(
            Goal("tracker memory per task", "<= 3 KB", value, per_task / 3072, per_task <= 3072)
        )
    return out


def _growth(row: Row) -> float:
    return float(row.get("peak_rss_mb")) - float(row.get("rss_start_mb"))
