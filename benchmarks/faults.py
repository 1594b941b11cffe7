"""Scenario 5, under faults: tracking (smaller) while the server answers 5% 429 and 5% 503.

The tracking setup (tasks finishing at random times, 5 ms added per request) with two more fault
rules on every Zefort request: 429 with `Retry-After: 1` at 5%, then 503 at 5% of what is left.
Contenders:

- asyncbulk: `track_tasks`, whose session pauses every request to the host on a 429 (the shared
  pause) and retries 5xx by its policy.
- naive loop with retries: the tracking scenario's naive loop, each GET retried on its own:
  `Retry-After` on 429, exponential backoff with jitter on 5xx; nothing shared between requests.
- floor: asyncbulk on the same tasks without the faults (the 5 ms latency only): what the faults
  cost is the difference.

The point is the requests each spends, and whether the faults cost detection lag.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmarks import tracking
from benchmarks._baselines import get_json_with_retries
from benchmarks._harness import Case, Goal, Row, Run

if TYPE_CHECKING:
    from benchmarks._client import Context
    from benchmarks._harness import Size

FAULTS = [
    *tracking.LATENCY,
    {"kind": "status", "rate": 0.05, "status": 429, "retry_after": 1, "vendor": "zefort"},
    {"kind": "status", "rate": 0.05, "status": 503, "vendor": "zefort"},
]
_SIZES = {"smoke": (50, 1.0), "quick": (100, 1.0), "full": (2_000, 20.0)}

prepare = tracking.prepare
start = tracking.start


async def naive_with_retries(ctx: Context) -> dict[str, Any]:
    """One coroutine per task, a GET per second, each GET retried on its own."""
    return await tracking.naive_loop(ctx, get_json_with_retries)


CONTENDERS = {
    "asyncbulk": tracking.asyncbulk_tracker,
    "naive-retry": naive_with_retries,
}


def plan(size: Size) -> list[Case]:
    """A fresh server per contender in the full run, as in tracking."""
    tasks, over = _SIZES[size]
    params = {"tasks": tasks, "over": over, "faults": FAULTS}
    clean = {**params, "faults": tracking.LATENCY}
    runs = (
        Run("asyncbulk", "asyncbulk track_tasks (shared 429 pause)", params),
        Run("naive-retry", "naive loop, per-request retries", params),
        Run("asyncbulk", "asyncbulk track_tasks, no faults", clean, floor=True),
    )
    title = f"{tasks:,} tasks over {over:g} s, 5% 429 + 5% 503"
    floor = "asyncbulk track_tasks on the same tasks without the faults"
    return [Case(title, runs, floor=floor, server_per_run=size == "full")]


def goals(rows: list[Row], size: Size) -> list[Goal]:  # noqa: ARG001 - same comparison at every size
    """No target in the issues: the requests the shared pause saves, as a ratio."""
    ours = next((r for r in rows if r.contender.startswith("asyncbulk") and not r.floor), None)
    naive = next((r for r in rows if r.contender.startswith("naive")), None)
    if ours is None or naive is None or not ours.good or not naive.good:
        return [Goal("requests under faults vs per-request retries", "fewer", "n/a", None, None)]
    ratio = ours.get("requests") / max(1, naive.get("requests"))
    complete = tracking.complete(ours)
    value = f"{ours.get('requests'):,.0f} vs {naive.get('requests'):,.0f} = {ratio:.1%}" + (
        "" if complete else " (asyncbulk did NOT detect every task)"
    )
    return [
        Goal(
            "requests under faults vs per-request retries",
            "fewer",
            value,
            ratio,
            ratio < 1 and complete,
        )
    ]
