"""Scenario 3, submission: 100,000 process updates to Chakra in batches of 1,000.

Each contender starts on a fresh server holding the procedure and its processes (so no earlier
run's jobs are still being applied), and sends one `data` change per process. Contenders:

- asyncbulk, list input: the `ProcessUpdate`s built into a list, then
  `bulk_update_processes(procedure, updates, batch_size=1000)`; building the list is measured too.
- asyncbulk, generator input: the same updates from a generator, read a batch at a time; also with
  twice the input, to show memory staying flat as the input grows.
- raw aiohttp: the wire-form dicts in a list, the batches PATCHed with as many in flight as the
  client's default (`json` encoding by aiohttp), no validation: the most the server absorbs.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any

from benchmarks._baselines import chakra_session
from benchmarks._harness import Case, Goal, Row, Run

if TYPE_CHECKING:
    from collections.abc import Iterator

    from benchmarks._client import Context
    from benchmarks._harness import Size

BATCH = 1000
PROCEDURE, KEY, PREFIX = "bench", "lead_id", "L"
_SIZES = {"smoke": 1_000, "quick": 10_000, "full": 100_000}
_FALLBACK_IN_FLIGHT = 4


def default_in_flight() -> int:
    """The batches asyncbulk keeps in flight by default (the raw baseline's concurrency)."""
    try:
        from asyncbulk.chakra import ChakraClient  # noqa: PLC0415 - imported where used
    except ImportError:
        return _FALLBACK_IN_FLIGHT
    parameter = inspect.signature(ChakraClient).parameters["max_batches_in_flight"]
    return int(parameter.default)


def _count(ctx: Context) -> int:
    return int(ctx.params["updates"])


async def _submit(ctx: Context, updates: Any) -> dict[str, Any]:
    from asyncbulk.chakra import ChakraClient  # noqa: PLC0415 - imported where used

    async with ChakraClient(ctx.server["chakra_token"], base_url=ctx.server["chakra_url"]) as c:
        submission = await c.bulk_update_processes(PROCEDURE, updates, batch_size=BATCH)
    return {"items": submission.count, "note": f"{len(submission.jobs)} jobs"}


def _updates(ctx: Context) -> Iterator[Any]:
    from asyncbulk.chakra import ProcessUpdate  # noqa: PLC0415 - imported where used

    held = int(ctx.params["held"])
    for i in range(_count(ctx)):
        yield ProcessUpdate.by_key(KEY, f"{PREFIX}{i % held}", data={"score": str(i)})


async def asyncbulk_list(ctx: Context) -> dict[str, Any]:
    """The updates built into a list first, then submitted."""
    return await _submit(ctx, list(_updates(ctx)))


async def asyncbulk_generator(ctx: Context) -> dict[str, Any]:
    """The updates from a generator, read a batch at a time."""
    return await _submit(ctx, _updates(ctx))


async def raw_aiohttp(ctx: Context) -> dict[str, Any]:
    """Wire-form dicts, batches PATCHed concurrently with aiohttp; no validation."""
    count, held = _count(ctx), int(ctx.params["held"])
    items = [
        {KEY: f"{PREFIX}{i % held}", "update": {"data": {"score": str(i)}}} for i in range(count)
    ]
    url = f"{ctx.server['chakra_url']}/v1/ext/procedure/{PROCEDURE}/process"
    starts = iter(range(0, count, BATCH))
    jobs: list[str] = []
    async with chakra_session(ctx) as http:

        async def worker() -> None:
            for start in starts:
                body = {"processes": items[start : start + BATCH]}
                async with http.patch(url, json=body) as response:
                    response.raise_for_status()
                    jobs.append((await response.json())["_data"]["id"])

        await asyncio.gather(*(worker() for _ in range(default_in_flight())))
    return {"items": count, "note": f"{len(jobs)} jobs"}


CONTENDERS = {
    "list": asyncbulk_list,
    "generator": asyncbulk_generator,
    "raw": raw_aiohttp,
}


def plan(size: Size) -> list[Case]:
    """A fresh server per run (but at smoke size): no run pays for applying another's jobs."""
    count = _SIZES[size]
    # The server holds `count` processes; the doubled input updates each of them twice.
    one, two = {"updates": count, "held": count}, {"updates": 2 * count, "held": count}
    unit = "updates/s"
    runs = [
        Run("list", "asyncbulk, list input", one, unit),
        Run("generator", "asyncbulk, generator input", one, unit),
        Run("generator", f"asyncbulk, generator input, {2 * count:,}", two, unit),
        Run("raw", "raw aiohttp (dicts, no validation)", one, unit, floor=True),
    ]
    setup = (("/admin/chakra/processes", {"count": count}),)
    floor = "raw aiohttp PATCHing the wire-form dicts, as many in flight, no validation"
    return [Case(f"{count:,} updates", tuple(runs), floor, setup, server_per_run=size != "smoke")]


def goals(rows: list[Row], size: Size) -> list[Goal]:  # noqa: ARG001 - same goal at every size
    """>= 50,000 updates/s, with list input and with generator input."""
    out = []
    for label in ("asyncbulk, list input", "asyncbulk, generator input"):
        row = next((r for r in rows if r.contender == label and r.good), None)
        name = f"submission rate, {label.removeprefix('asyncbulk, ')}"
        if row is None or row.throughput is None:
            out.append(Goal(name, ">= 50,000 updates/s", "n/a", None, None))
            continue
        rate = row.throughput
        cpu = row.get("cpu") / row.get("items") * 1e6
        value = (
            f"{rate:,.0f} updates/s of wall time; client CPU {cpu:.1f} µs/update, i.e. "
            f"{1e6 / cpu:,.0f} updates per second of client CPU"
        )
        out.append(Goal(name, ">= 50,000 updates/s", value, rate / 50_000, rate >= 50_000))
    raw = next((r for r in rows if r.contender.startswith("raw") and r.good), None)
    if raw is not None and raw.throughput is not None:
        cpu = raw.get("cpu") / raw.get("items") * 1e6
        value = (
            f"raw aiohttp with no validation sends {raw.throughput:,.0f} updates/s "
            f"(client CPU {cpu:.1f} µs/update): the rate this simulator absorbs on this machine"
        )
        out.append(Goal("submission ceiling", "", value, None, None, info=True))
    return out
