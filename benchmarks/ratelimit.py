"""Scenario 6, behind a rate limit: Zefort tasks tracked and acknowledged against a server's quota.

The simulated Zefort API sits behind a middleware of the benchmark server (`benchmarks._limits`)
that enforces what an independent server would, per credential. The tasks finish at uniformly
random times; every contender acknowledges each task it sees finished (`acknowledge=True`), and
every Zefort request gets 5 ms of latency. Three cases:

- A token bucket of 50 requests/s, burst 20, answering 429 with `Retry-After: 1` when empty
  (2,000 tasks finishing over 30 s): asyncbulk `track_tasks(ids, acknowledge=True)`; the naive
  loop (a GET per task every second, then the acknowledging PATCH, each request retrying its own
  429s after their Retry-After); and the theoretical best, computed for each asyncbulk run: the
  larger of the last finish time and the requests needed (one acknowledgement per task and one
  read of the whole pending listing) over the rate.
- No bucket, but 2% of requests answered 429 with `Retry-After: 1` (1,500 tasks over 30 s):
  asyncbulk and the naive loop, and asyncbulk with no 429s as the floor.
- One `Retry-After: 86400` on the first request: `track_tasks(ids, timeout=10)` must end by
  10.5 s with `JobTimeoutError` naming the unfinished tasks.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Any

from benchmarks import tracking
from benchmarks._baselines import (
    POLL_INTERVAL,
    request_json_with_retries,
    zefort_session,
    zefort_url,
)
from benchmarks._harness import Case, Goal, Row, Run

if TYPE_CHECKING:
    from benchmarks._client import Context
    from benchmarks._harness import Size
    from benchmarks._seen import Seen

RATE, BURST, RETRY_AFTER = 50.0, 20.0, 1.0
SPORADIC = 0.02
HUGE_RETRY_AFTER = 86_400.0
#: The Zefort listing's largest page: the requests one read of every pending task needs.
LISTING_PAGE = 1000
#: How long past its timeout `track_tasks` may take to end (issue 11).
TIMEOUT_SLACK = 0.5
# Per size: (tasks, seconds) behind the bucket, under sporadic 429s, and (tasks, seconds,
# timeout) for the huge Retry-After.
_SIZES: dict[str, tuple[tuple[int, float], tuple[int, float], tuple[int, float, float]]] = {
    "smoke": ((60, 1.0), (45, 1.0), (60, 3.0, 1.0)),
    "quick": ((60, 1.0), (40, 1.0), (60, 4.5, 1.5)),
    "full": ((2_000, 30.0), (1_500, 30.0), (2_000, 30.0, 10.0)),
}
BUCKET = {"rate": RATE, "burst": BURST, "retry_after": RETRY_AFTER}
_BUCKET_TITLE = "behind a 50/s burst-20 bucket"
_SPORADIC_TITLE = "2% sporadic 429s"
_HUGE_TITLE = "one Retry-After: 86400"

prepare = tracking.prepare
start = tracking.start


def requests_needed(tasks: int) -> int:
    """The fewest requests that see every task finished and acknowledge it."""
    return tasks + math.ceil(tasks / LISTING_PAGE)


def theoretical_best(tasks: int, last_finish: float) -> float:
    """The larger of the last finish time and the requests needed over the rate."""
    return max(last_finish, requests_needed(tasks) / RATE)


async def asyncbulk_acknowledging(ctx: Context) -> dict[str, Any]:
    """`track_tasks(ids, acknowledge=True)` in `async with` (polling in the background)."""
    from asyncbulk.zefort import ZefortClient  # noqa: PLC0415 - imported where used

    seen: Seen = ctx.data["seen"]
    key = ctx.server["zefort_api_key"]
    async with (
        ZefortClient(key, base_url=zefort_url(ctx)) as zefort,
        zefort.track_tasks(
            ctx.data["ids"], timeout=tracking.deadline(ctx), acknowledge=True
        ) as tasks,
    ):
        async for task in tasks:
            seen.mark(task.id)
        stats = tasks.stats
    note = f"{stats.sweeps:,} sweeps of the listing, {stats.polls:,} single GETs"
    return {"seen": seen, "items": len(seen), "note": note}


async def naive_acknowledging(ctx: Context) -> dict[str, Any]:
    """One coroutine per task: a GET every second until done, then the acknowledging PATCH.

    Every request retries its own 429s after their Retry-After, for as long as it takes. A task
    counts as seen when its GET shows it finished (before its PATCH, in the naive loop's favour).
    """
    base = zefort_url(ctx)
    seen: Seen = ctx.data["seen"]
    async with zefort_session(ctx) as http:

        async def follow(task_id: str) -> None:
            url = f"{base}/api/tasks/{task_id}/"
            while True:
                task = await request_json_with_retries(http, "GET", url, attempts=None)
                if task["backend_status"] != "pending":
                    seen.mark(task_id)
                    break
                await asyncio.sleep(POLL_INTERVAL)
            done = {"frontend_status": "done"}
            await request_json_with_retries(http, "PATCH", url, body=done, attempts=None)

        note = ""
        try:
            await asyncio.wait_for(
                asyncio.gather(*(follow(task_id) for task_id in ctx.data["ids"])),
                tracking.deadline(ctx),
            )
        except TimeoutError:
            note = f"stopped at the {tracking.deadline(ctx):.0f} s deadline"
    return {"seen": seen, "items": len(seen), "note": note}


async def asyncbulk_timeout(ctx: Context) -> dict[str, Any]:
    """`track_tasks(ids, timeout=...)`, timed to the moment the iteration ends."""
    from asyncbulk import JobTimeoutError  # noqa: PLC0415 - imported where used
    from asyncbulk.zefort import ZefortClient  # noqa: PLC0415 - imported where used

    timeout = float(ctx.params["timeout"])
    yielded, named, raised = 0, 0, "nothing"
    started = time.perf_counter()
    async with ZefortClient(ctx.server["zefort_api_key"], base_url=zefort_url(ctx)) as zefort:
        try:
            # A guard, so a tracker that ignores its timeout cannot hold the benchmark forever.
            async with asyncio.timeout(timeout * 3 + 30):
                async for _ in zefort.track_tasks(ctx.data["ids"], timeout=timeout):
                    yielded += 1
        except JobTimeoutError as exc:
            raised, named = "JobTimeoutError", len(exc.unfinished)
        except TimeoutError:
            raised = "nothing (stopped by the benchmark's guard)"
        ended = time.perf_counter() - started
    unfinished = len(ctx.data["ids"]) - yielded
    note = f"ended {ended:.2f} s after the call: {raised}, naming {named:,} of {unfinished:,} left"
    return {
        "items": yielded,
        "ended": ended,
        "raised": raised,
        "named": named,
        "unfinished": unfinished,
        "note": note,
    }


CONTENDERS = {
    "asyncbulk": asyncbulk_acknowledging,
    "naive": naive_acknowledging,
    "timeout": asyncbulk_timeout,
}


def plan(size: Size) -> list[Case]:
    """The three cases, each run on a fresh server in the full run."""
    (tasks, over), (few, few_over), (huge, huge_over, timeout) = _SIZES[size]
    fresh = size == "full"
    limited = {"limited": True, "faults": tracking.LATENCY}
    bucket = {**limited, "tasks": tasks, "over": over, "limit": BUCKET}
    sporadic = {
        **limited,
        "tasks": few,
        "over": few_over,
        "limit": {"sporadic": SPORADIC, "retry_after": RETRY_AFTER},
    }
    clean = {**limited, "tasks": few, "over": few_over}
    once = {
        **limited,
        "tasks": huge,
        "over": huge_over,
        "timeout": timeout,
        "limit": {"once": HUGE_RETRY_AFTER},
    }
    return [
        Case(
            f"{tasks:,} tasks over {over:g} s, acknowledged, {_BUCKET_TITLE}",
            (
                Run("asyncbulk", "asyncbulk track_tasks(acknowledge=True)", bucket),
                Run("naive", "naive loop, per-request retries", bucket),
            ),
            "the theoretical best: max(last finish, (tasks + listing pages) / 50 per s)",
            server_per_run=fresh,
        ),
        Case(
            f"{few:,} tasks over {few_over:g} s, acknowledged, {_SPORADIC_TITLE}",
            (
                Run("asyncbulk", "asyncbulk track_tasks(acknowledge=True)", sporadic),
                Run("naive", "naive loop, per-request retries", sporadic),
                Run(
                    "asyncbulk",
                    "asyncbulk track_tasks(acknowledge=True), no 429s",
                    clean,
                    floor=True,
                ),
            ),
            "asyncbulk on the same tasks without the 429s",
            server_per_run=fresh,
        ),
        Case(
            f"{huge:,} tasks over {huge_over:g} s, {_HUGE_TITLE}",
            (Run("timeout", f"asyncbulk track_tasks(timeout={timeout:g})", once),),
            f"the timeout itself: {timeout:g} s",
            server_per_run=fresh,
        ),
    ]


def derived(rows: list[Row], size: Size) -> list[Row]:
    """Add the theoretical best behind the bucket (one per asyncbulk run) as the case's floor.

    Each asyncbulk run is also given its own end time over its own best (`vs_best`).
    """
    (tasks, _), _, _ = _SIZES[size]
    ours = next(
        (r for r in rows if _BUCKET_TITLE in r.case and r.contender.startswith("asyncbulk")), None
    )
    if ours is None:
        return rows
    best: list[dict[str, Any]] = []
    for result in ours.good:
        if result.get("last_finish") is None:
            continue
        wall = theoretical_best(tasks, float(result["last_finish"]))
        result["vs_best"] = float(result["wall"]) / wall
        note = f"last finish {result['last_finish']:.2f} s, {requests_needed(tasks):,} requests"
        best.append({"wall": wall, "requests": requests_needed(tasks), "note": note})
    row = Row(
        ours.scenario,
        ours.case,
        "theoretical best",
        best or [{"error": "no asyncbulk run saw a task finish"}],
        floor=True,
    )
    last = max(i for i, r in enumerate(rows) if r.case == ours.case)
    return [*rows[: last + 1], row, *rows[last + 1 :]]


def _share_429(result: dict[str, Any]) -> float | None:
    requests = result.get("requests")
    if not requests:
        return None
    return float((result.get("by_status") or {}).get("429", 0)) / float(requests)


def _rate_used(result: dict[str, Any]) -> float | None:
    value = (result.get("limit") or {}).get("rate_used")
    return None if value is None else float(value)


def _find(rows: list[Row], case: str, contender: str, *, floor: bool = False) -> Row | None:
    return next(
        (
            r
            for r in rows
            if case in r.case and r.contender.startswith(contender) and r.floor == floor and r.good
        ),
        None,
    )


def _lag_goal(name: str, row: Row | None) -> Goal:
    if row is None or row.lag("p99") is None:
        return Goal(name, "<= 1 s", "n/a", None, None)
    p99 = row.lag("p99") or 0.0
    whole = tracking.complete(row)
    value = f"{p99:.2f} s" + ("" if whole else " (NOT all detected)")
    return Goal(name, "<= 1 s", value, p99, p99 <= 1 and whole)


def goals(rows: list[Row], size: Size) -> list[Goal]:
    """Issue 11's figures behind the bucket, under sporadic 429s and for one huge Retry-After."""
    (tasks, _), (few, _), (_, _, timeout) = _SIZES[size]
    out = []
    name = f"rate limit, {tasks:,} tasks {_BUCKET_TITLE}"
    ours = _find(rows, _BUCKET_TITLE, "asyncbulk")
    naive = _find(rows, _BUCKET_TITLE, "naive")
    if ours is None:
        out += [
            Goal(f"{name}: {what}", target, "n/a", None, None)
            for what, target in (
                ("rate used while work is pending", ">= 90%"),
                ("429s among requests", "<= 3%"),
                ("detection lag p99", "<= 1 s"),
                ("end vs the theoretical best", "<= 1.10x"),
            )
        ]
    else:
        used = ours.median(_rate_used)
        out.append(
            Goal(
                f"{name}: rate used while work is pending",
                ">= 90%",
                "n/a" if used is None else f"{used:.0%} of {RATE:g} requests/s",
                used,
                None if used is None else used >= 0.9,
            )
        )
        share = ours.median(_share_429) or 0.0
        out.append(
            Goal(
                f"{name}: 429s among requests",
                "<= 3%",
                f"{share:.1%} of {ours.get('requests'):,.0f}",
                share / 0.03,
                share <= 0.03,
            )
        )
        out.append(_lag_goal(f"{name}: detection lag p99", ours))
        ratio = ours.median(lambda r: r.get("vs_best"))
        best = _find(rows, _BUCKET_TITLE, "theoretical best", floor=True)
        value = "n/a"
        if ratio is not None and best is not None:
            value = f"{ours.get('wall'):.1f} vs {best.get('wall'):.1f} s = {ratio:.2f}x"
        out.append(
            Goal(
                f"{name}: end vs the theoretical best",
                "<= 1.10x",
                value,
                ratio,
                None if ratio is None else ratio <= 1.1,
            )
        )
    if ours is not None and naive is not None:
        ratio = ours.get("requests") / max(1, naive.get("requests"))
        value = (
            f"asyncbulk {ours.get('requests'):,.0f} vs the naive loop {naive.get('requests'):,.0f}"
            f" = {ratio:.1%}; the naive loop ended after {naive.get('wall'):.1f} s, lag p99 "
            f"{naive.lag('p99') or 0:.2f} s, 429s {naive.median(_share_429) or 0:.0%} of requests, "
            f"rate used {naive.median(_rate_used) or 0:.0%}"
        )
        out.append(Goal(f"{name}: requests vs the naive loop", "", value, ratio, None, info=True))
    name = f"rate limit, {few:,} tasks, {_SPORADIC_TITLE}"
    ours = _find(rows, _SPORADIC_TITLE, "asyncbulk")
    naive = _find(rows, _SPORADIC_TITLE, "naive")
    out.append(_lag_goal(f"{name}: detection lag p99", ours))
    out += _sporadic_requests(name, few, ours, naive)
    out.append(_timeout_goal(rows, timeout))
    return out


def _sporadic_requests(name: str, tasks: int, ours: Row | None, naive: Row | None) -> list[Goal]:
    """Issue 11's "requests at most 5% of the naive loop's", judged beyond the acknowledgements.

    Zefort has no bulk acknowledgement: each task takes its own successful PATCH, in asyncbulk
    and in the naive loop alike; at full size those alone are 1,500 of the naive loop's ~26,000
    requests, more than 5%. So the goal is judged on what each sends beyond one acknowledgement per
    task (its reads, and its retries of 429s); the whole counts are shown beside it.
    """
    target = "<= 5%"
    what = f"{name}: requests beyond one acknowledgement per task, vs the naive loop's"
    if ours is None or naive is None:
        return [Goal(what, target, "n/a", None, None)]
    mine, theirs = ours.get("requests"), naive.get("requests")
    extra, naive_extra = mine - tasks, max(1.0, theirs - tasks)
    ratio = extra / naive_extra
    value = f"{extra:,.0f} vs {naive_extra:,.0f} = {ratio:.1%}"
    whole = mine / max(1.0, theirs)
    floor = tasks / max(1.0, theirs)
    info = (
        f"asyncbulk {mine:,.0f} vs the naive loop {theirs:,.0f} = {whole:.1%}; the {tasks:,}"
        f" acknowledgements alone are {floor:.1%} of the naive loop's requests"
    )
    return [
        Goal(what, target, value, ratio / 0.05, ratio <= 0.05),
        Goal(f"{name}: all requests vs the naive loop", "", info, whole, None, info=True),
    ]


def _timeout_goal(rows: list[Row], timeout: float) -> Goal:
    name = f"rate limit, {_HUGE_TITLE}: track_tasks(timeout={timeout:g})"
    target = f"ends by {timeout + TIMEOUT_SLACK:g} s with JobTimeoutError naming the unfinished"
    row = _find(rows, _HUGE_TITLE, "asyncbulk")
    ended = None if row is None else row.median(lambda r: r.get("ended"))
    if row is None or ended is None:
        return Goal(name, target, "n/a", None, None)
    named = all(
        r.get("raised") == "JobTimeoutError" and r.get("named") == r.get("unfinished")
        for r in row.good
    )
    spread = row.spread(lambda r: r.get("ended")) or (ended, ended)
    value = (
        f"ended after {ended:.2f} s ({spread[0]:.2f}-{spread[1]:.2f}); "
        f"{row.result.get('raised')}, naming {row.result.get('named'):,} of "
        f"{row.result.get('unfinished'):,} unfinished"
    )
    met = ended <= timeout + TIMEOUT_SLACK and named
    return Goal(name, target, value, ended / (timeout + TIMEOUT_SLACK), met)
