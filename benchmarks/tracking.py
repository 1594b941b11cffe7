"""Scenario 1, tracking: thousands of Zefort tasks finishing at random times, followed to the end.

The server creates N pending tasks that finish at uniformly random times over T seconds and adds
5 ms to every Zefort request. The tasks' clock starts when the client is ready, not when the server
made them: they begin to finish half a second after the measured part begins (`start`). Contenders:

- asyncbulk: `ZefortClient.track_tasks(ids)`, one scheduler for every task, sweeping the task
  listing when that is cheaper than asking for each task due.
- naive loop: one coroutine per task, `asyncio.gather`, a GET per task every second (aiohttp,
  connector limit 100), what most hand-written trackers look like.
- vendor doc: the Zefort documentation's pattern, polling one task until it is done (a GET, then a
  1 s sleep), then the next, in turn.

- floor, the empty process: a client process holding the same inputs (the ids, the array the
  contenders note detection times in) that does nothing; "memory above the empty process" is a
  contender's peak RSS minus its own, measured the same way. (The floor of detection lag is 0.)

Detection lag is when the client saw a task finished (wall clock) minus when the server finished
it (wall clock, same machine). The last cases follow 100,000 and 1,000,000 tasks (quick: 5,000)
with the tracker alone, beside the empty process, for its lag and memory at scale.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from benchmarks._baselines import POLL_INTERVAL, get_json, zefort_session
from benchmarks._harness import Case, Goal, Row, Run, rss_growth_mb
from benchmarks._seen import Seen

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from benchmarks._client import Context
    from benchmarks._harness import Size

LATENCY = [{"kind": "latency", "delay": 0.005, "vendor": "zefort"}]
# (tasks, seconds) of the comparison, per size.
_SIZES: dict[str, tuple[int, float]] = {
    "smoke": (100, 1.5),
    "quick": (100, 1.5),
    "full": (10_000, 60.0),
}
# (tasks, seconds) of the tracker-alone cases at scale, per size, with the goals of issue 14
# (lag p99 in s, MB above the empty process) they are judged by at full size.
_SCALE: dict[str, tuple[tuple[int, float], ...]] = {
    "smoke": ((1_000, 1.5),),
    "quick": ((5_000, 1.5),),
    "full": ((100_000, 60.0), (1_000_000, 60.0)),
}
_SCALE_GOALS = ((100_000, 1.0, 60.0), (1_000_000, 5.0, 500.0))
# Tasks start finishing this long after they are created, once the client is measuring.
_OFFSET = 0.5
# How far ahead of the release the tasks' clock starts: a fixed part, and a part per task.
_RELEASE_LEAD = 0.2
_RELEASE_PER_TASK = 3e-6
# How long the empty process does nothing (its peak memory does not grow with time).
_EMPTY_SECONDS = 0.5


async def prepare(ctx: Context) -> None:
    """Create the run's tasks in the simulator's state (not through the API)."""
    spec = {
        "count": ctx.params["tasks"],
        "over": ctx.params["over"],
        "offset": _OFFSET,
        "create": ctx.params.get("create", True),
        "hold": True,
    }
    ids = (await ctx.admin("POST", "/admin/zefort/tasks", spec))["ids"]
    ctx.data["ids"] = ids
    ctx.data["seen"] = Seen(ids)


async def start(ctx: Context) -> None:
    """Release the tasks, due from a moment just ahead, and wait for it: then measuring begins.

    Reading a million ids and getting ready takes the client seconds after the server made the
    tasks; were they due from their creation, tens of thousands would finish before the client
    started, their lag that of the benchmark's own setup. The release itself (moving every due
    time) takes about a second at a million, so the moment is that far ahead.
    """
    if not ctx.params.get("create", True):
        return
    begin = time.monotonic() + _RELEASE_LEAD + len(ctx.data["ids"]) * _RELEASE_PER_TASK
    answer = await ctx.admin("POST", "/admin/zefort/release", {"start": begin})
    ctx.data["release_late"] = answer["late"]
    await asyncio.sleep(max(0.0, begin - time.monotonic()))


def deadline(ctx: Context) -> float:
    """A generous overall deadline for following every task."""
    return float(ctx.params["over"]) * 3 + 120.0


async def asyncbulk_tracker(ctx: Context) -> dict[str, Any]:
    """`track_tasks` over every id, in `async with` (polling in the background, lowest lag)."""
    from asyncbulk.zefort import ZefortClient  # noqa: PLC0415 - imported where used

    seen: Seen = ctx.data["seen"]
    key, url = ctx.server["zefort_api_key"], ctx.server["zefort_url"]
    async with (
        ZefortClient(key, base_url=url) as zefort,
        zefort.track_tasks(ctx.data["ids"], timeout=deadline(ctx)) as tasks,
    ):
        async for task in tasks:
            seen.mark(task.id)
        stats = tasks.stats
    note = f"{stats.sweeps:,} sweeps of the listing, {stats.polls:,} single GETs"
    late = ctx.data.get("release_late", 0.0)
    return {"seen": seen, "items": len(seen), "note": note, "release_late": late}


async def naive_loop(ctx: Context, get: Callable[..., Awaitable[Any]] = get_json) -> dict[str, Any]:
    """One coroutine per task, `gather`, a GET per task every second (through `get`)."""
    base = ctx.server["zefort_url"]
    seen: Seen = ctx.data["seen"]
    async with zefort_session(ctx) as http:

        async def follow(task_id: str) -> None:
            url = f"{base}/api/tasks/{task_id}/"
            while True:
                task = await get(http, url)
                if task["backend_status"] != "pending":
                    seen.mark(task_id)
                    return
                await asyncio.sleep(POLL_INTERVAL)

        await asyncio.wait_for(
            asyncio.gather(*(follow(task_id) for task_id in ctx.data["ids"])), deadline(ctx)
        )
    return {"seen": seen, "items": len(seen)}


async def vendor_doc(ctx: Context) -> dict[str, Any]:
    """The vendor documentation's pattern: poll one task until done, then the next."""
    base = ctx.server["zefort_url"]
    seen: Seen = ctx.data["seen"]

    async def follow_all() -> None:
        async with zefort_session(ctx) as http:
            for task_id in ctx.data["ids"]:
                url = f"{base}/api/tasks/{task_id}/"
                while True:
                    task = await get_json(http, url)
                    if task["backend_status"] != "pending":
                        seen.mark(task_id)
                        break
                    await asyncio.sleep(POLL_INTERVAL)

    await asyncio.wait_for(follow_all(), deadline(ctx))
    return {"seen": seen, "items": len(seen)}


async def empty(ctx: Context) -> dict[str, Any]:  # noqa: ARG001 - holds what prepare made
    """Nothing, in a process holding the same inputs: the memory floor."""
    await asyncio.sleep(_EMPTY_SECONDS)
    return {}


CONTENDERS = {
    "asyncbulk": asyncbulk_tracker,
    "naive": naive_loop,
    "vendor-doc": vendor_doc,
    "empty": empty,
}
_EMPTY_FLOOR = "the empty process (memory); detection lag's floor is 0 s"


def plan(size: Size) -> list[Case]:
    """The comparison, then the tracker alone at scale; a server per run in the full run."""
    tasks, over = _SIZES[size]
    params = {"tasks": tasks, "over": over, "faults": LATENCY}
    fresh = size == "full"
    cases = [
        Case(
            title=f"{tasks:,} tasks over {over:g} s",
            runs=(
                Run("asyncbulk", "asyncbulk track_tasks", params),
                Run("naive", "naive loop (gather, 1 s sleep)", params),
                Run("vendor-doc", "vendor doc (one task at a time)", params),
                # The memory floor of the cases at scale; beside 10,000 tasks, the full run only.
                *(
                    [Run("empty", "empty process", {**params, "create": False}, floor=True)]
                    if size == "full"
                    else []
                ),
            ),
            floor=_EMPTY_FLOOR,
            server_per_run=fresh,
        )
    ]
    for count, seconds in _SCALE[size]:
        params = {"tasks": count, "over": seconds, "faults": LATENCY}
        timeout = 600.0 + count / 1_000
        cases.append(
            Case(
                title=f"{count:,} tasks over {seconds:g} s",
                runs=(
                    Run("asyncbulk", "asyncbulk track_tasks", params, timeout=timeout),
                    Run(
                        "empty",
                        "empty process",
                        {**params, "create": False},
                        timeout=timeout,
                        floor=True,
                    ),
                ),
                floor=_EMPTY_FLOOR,
                server_per_run=fresh,
            )
        )
    return cases


def _find(rows: list[Row], case_prefix: str, contender_prefix: str) -> Row | None:
    for row in rows:
        if row.case.startswith(case_prefix) and row.contender.startswith(contender_prefix):
            return row
    return None


def complete(row: Row) -> bool:
    """Whether every run detected every task."""
    return all(
        (r.get("lag") or {}).get("detected") == (r.get("lag") or {}).get("expected")
        for r in row.good
    )


def goals(rows: list[Row], size: Size) -> list[Goal]:
    """Lag p99 <= 1 s and <= 20% of the naive loop's requests; <= 3 KB of memory per task.

    At scale (issue 14): lag p99 and peak memory above the empty process.
    """
    tasks, _ = _SIZES[size]
    ours = _find(rows, f"{tasks:,} ", "asyncbulk")
    naive = _find(rows, f"{tasks:,} ", "naive")
    out = []
    if ours is None or not ours.good or ours.lag("p99") is None:
        out.append(Goal("tracking p99 detection lag", "<= 1 s", "n/a", None, None))
    else:
        p99 = ours.lag("p99") or 0.0
        whole = complete(ours)
        value = f"{p99:.2f} s" + ("" if whole else " (NOT all detected)")
        out.append(Goal("tracking p99 detection lag", "<= 1 s", value, p99, p99 <= 1 and whole))
    if ours is None or naive is None or not ours.good or not naive.good:
        out.append(Goal("tracking requests vs naive loop", "<= 20%", "n/a", None, None))
    else:
        ratio = ours.get("requests") / max(1, naive.get("requests"))
        value = f"{ours.get('requests'):,.0f} vs {naive.get('requests'):,.0f} = {ratio:.1%}"
        out.append(Goal("tracking requests vs naive loop", "<= 20%", value, ratio, ratio <= 0.2))
    alone, _ = _SCALE[size][0]
    big = _find(rows, f"{alone:,} ", "asyncbulk")
    if big is None or not big.good:
        out.append(Goal("tracker memory per task", "<= 3 KB", "n/a", None, None))
    else:
        # The marginal cost: the RSS growth of the big run over the small one, per extra task,
        # so the fixed costs (session, buffers, lazily imported modules) cancel out.
        grown = _growth(big)
        small = _growth(ours) if ours is not None and ours.good else 0.0
        extra = alone - (tasks if small else 0)
        per_task = (grown - small) * 1024 * 1024 / extra
        value = (
            f"{per_task / 1024:.2f} KB ({alone:,} tasks: RSS +{grown:.1f} MB"
            f"{f' vs +{small:.1f} MB for {tasks:,}' if small else ''}; CPU {big.get('cpu'):.1f} s)"
        )
        out.append(
            Goal("tracker memory per task", "<= 3 KB", value, per_task / 3072, per_task <= 3072)
        )
    out.extend(_scale_goals(rows, size))
    return out


def _scale_goals(rows: list[Row], size: Size) -> list[Goal]:
    """Issue 14's tracking figures, on the cases at scale (their sizes at quick and smoke)."""
    out = []
    measured = [count for count, _ in _SCALE[size]]
    for (goal_count, max_p99, max_mb), count in zip(
        _SCALE_GOALS, [*measured, None, None], strict=False
    ):
        name = f"tracking {goal_count:,} tasks" + (
            "" if count in {goal_count, None} else f" (measured at {count:,})"
        )
        ours = None if count is None else _find(rows, f"{count:,} ", "asyncbulk")
        floor = None if count is None else _find(rows, f"{count:,} ", "empty")
        if ours is None or not ours.good or ours.lag("p99") is None:
            value = "n/a" if count is not None else "full run only"
            out.append(Goal(f"{name}, lag p99", f"<= {max_p99:g} s", value, None, None))
        else:
            p99 = ours.lag("p99") or 0.0
            whole = complete(ours)
            value = f"{p99:.2f} s" + ("" if whole else " (NOT all detected)")
            met = p99 <= max_p99 and whole
            out.append(Goal(f"{name}, lag p99", f"<= {max_p99:g} s", value, p99 / max_p99, met))
        target = f"<= {max_mb:g} MB"
        if ours is None or floor is None or not ours.good or not floor.good:
            value = "n/a" if count is not None else "full run only"
            out.append(
                Goal(f"{name}, peak memory above the empty process", target, value, None, None)
            )
            continue
        above = float(ours.get("peak_rss_mb")) - float(floor.get("peak_rss_mb"))
        value = (
            f"{above:.1f} MB ({ours.get('peak_rss_mb'):.1f} vs {floor.get('peak_rss_mb'):.1f} MB "
            "peak RSS)"
        )
        out.append(
            Goal(
                f"{name}, peak memory above the empty process",
                target,
                value,
                above / max_mb,
                above <= max_mb,
            )
        )
    return out


def _growth(row: Row) -> float:
    return float(row.median(rss_growth_mb) or 0.0)
