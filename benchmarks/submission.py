"""Scenario 3, submission: 100,000 process updates to Chakra in batches of 1,000.

In the full run each contender starts on a fresh server holding the procedure and its processes
(so no earlier run's jobs are still being applied), and sends one `data` change per process:

- asyncbulk, list input: the `ProcessUpdate`s built into a list, then
  `bulk_update_processes(procedure, updates, batch_size=1000)`; building the list is measured too.
- asyncbulk, generator input: the same updates from a generator, read a batch at a time; also with
  twice the input, to show memory staying flat as the input grows.
- raw aiohttp: the wire-form dicts in a list, the batches PATCHed with as many in flight as the
  client's default (`json` encoding by aiohttp), no validation: the most the server absorbs.

A second case sends 1,000,000 updates (quick: 20,000) to a server that only reads
(`benchmarks._readonly`: it reads each batch and answers a prepared job), so the client is what
is measured: asyncbulk from a generator of `ProcessUpdate`s and from a generator of wire-form
mappings, against raw aiohttp + orjson sending the same batches (its floor): the wire-form dicts
built a batch at a time, encoded with orjson, as many in flight as asyncbulk's default.

Separate processes run one after another meet the machine at different speeds, and each
process's collector and allocator start from their own history, so that goal is judged on a
paired run too: one process holds the raw session and the client, and sends blocks of updates
the three ways in turn (raw, mappings, `ProcessUpdate`s), the CPU time of every block read with
`time.process_time`; each side's figure is the sum of its blocks.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import TYPE_CHECKING, Any

import orjson

from benchmarks._baselines import chakra_session, chakra_url
from benchmarks._harness import Case, Goal, Row, Run

if TYPE_CHECKING:
    from collections.abc import Iterator

    from benchmarks._client import Context
    from benchmarks._harness import Size

BATCH = 1000
PROCEDURE, KEY, PREFIX = "bench", "lead_id", "L"
_SIZES = {"smoke": 1_000, "quick": 10_000, "full": 100_000}
_READONLY_SIZES = {"smoke": 2_000, "quick": 20_000, "full": 1_000_000}
#: Issue 14: at least this share of raw aiohttp + orjson's rate, to a server that only reads.
_READONLY_SHARE = 0.60
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

    async with ChakraClient(ctx.server["chakra_token"], base_url=chakra_url(ctx)) as c:
        submission = await c.bulk_update_processes(PROCEDURE, updates, batch_size=BATCH)
    return {"items": submission.count, "note": f"{len(submission.jobs)} jobs"}


def _updates(ctx: Context) -> Iterator[Any]:
    return _updates_between(ctx, 0, _count(ctx))


def _wire(ctx: Context, start: int, stop: int) -> list[dict[str, Any]]:
    """The wire form of updates `start` to `stop`, as a JSON Lines file would hold them."""
    held = int(ctx.params["held"])
    return [
        {KEY: f"{PREFIX}{i % held}", "update": {"data": {"score": str(i)}}}
        for i in range(start, stop)
    ]


def _mappings(ctx: Context) -> Iterator[dict[str, Any]]:
    return _mappings_between(ctx, 0, _count(ctx))


async def asyncbulk_mappings(ctx: Context) -> dict[str, Any]:
    """The updates as wire-form mappings from a generator, read a batch at a time."""
    return await _submit(ctx, _mappings(ctx))


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


async def raw_orjson(ctx: Context) -> dict[str, Any]:
    """The same batches built as they go, encoded with orjson, PATCHed concurrently."""
    count = _count(ctx)
    url = f"{chakra_url(ctx)}/v1/ext/procedure/{PROCEDURE}/process"
    jobs: list[str] = []
    async with chakra_session(ctx) as http:
        await _raw_batches(ctx, http, url, start=0, stop=count, jobs=jobs)
    return {"items": count, "note": f"{len(jobs)} jobs"}


async def _raw_batches(
    ctx: Context, http: Any, url: str, *, start: int, stop: int, jobs: list[str]
) -> None:
    """PATCH updates `start` to `stop` as raw aiohttp + orjson does, batches built as they go."""
    starts = iter(range(start, stop, BATCH))
    headers = {"Content-Type": "application/json"}

    async def worker() -> None:
        for first in starts:
            body = orjson.dumps({"processes": _wire(ctx, first, min(stop, first + BATCH))})
            async with http.patch(url, data=body, headers=headers) as response:
                response.raise_for_status()
                jobs.append(orjson.loads(await response.read())["_data"]["id"])

    await asyncio.gather(*(worker() for _ in range(default_in_flight())))


def _mappings_between(ctx: Context, start: int, stop: int) -> Iterator[dict[str, Any]]:
    for first in range(start, stop, BATCH):
        yield from _wire(ctx, first, min(stop, first + BATCH))


def _updates_between(ctx: Context, start: int, stop: int) -> Iterator[Any]:
    from asyncbulk.chakra import ProcessUpdate  # noqa: PLC0415 - imported where used

    held = int(ctx.params["held"])
    for i in range(start, stop):
        yield ProcessUpdate.by_key(KEY, f"{PREFIX}{i % held}", data={"score": str(i)})


async def paired(ctx: Context) -> dict[str, Any]:
    """Raw aiohttp + orjson, mappings and `ProcessUpdate`s in one process, a block each in turn."""
    from asyncbulk.chakra import ChakraClient  # noqa: PLC0415 - imported where used

    count = _count(ctx)
    block = min(count, max(5 * BATCH, count // 20))
    rounds = max(1, count // block)
    url = f"{chakra_url(ctx)}/v1/ext/procedure/{PROCEDURE}/process"
    cpu = {"raw": 0.0, "mappings": 0.0, "updates": 0.0}
    jobs: list[str] = []
    async with (
        chakra_session(ctx) as http,
        ChakraClient(ctx.server["chakra_token"], base_url=chakra_url(ctx)) as c,
    ):
        for turn in range(rounds + 1):
            start = (turn % rounds) * block
            stop = start + block
            for side in cpu:
                began = time.process_time()
                if side == "raw":
                    await _raw_batches(ctx, http, url, start=start, stop=stop, jobs=jobs)
                else:
                    items = (
                        _mappings_between(ctx, start, stop)
                        if side == "mappings"
                        else _updates_between(ctx, start, stop)
                    )
                    done = await c.bulk_update_processes(PROCEDURE, items, batch_size=BATCH)
                    jobs.extend(job.id for job in done.jobs)
                if turn:  # the first round warms each side up
                    cpu[side] += time.process_time() - began
    sent = rounds * block
    per = {side: seconds / sent * 1e6 for side, seconds in cpu.items()}
    note = (
        f"{sent:,} updates each in blocks of {block:,}: raw {per['raw']:.2f}, "
        f"mappings {per['mappings']:.2f}, ProcessUpdates {per['updates']:.2f} µs/update"
    )
    return {"items": 3 * (rounds + 1) * block, "paired": per, "note": note}


CONTENDERS = {
    "paired": paired,
    "list": asyncbulk_list,
    "generator": asyncbulk_generator,
    "mappings": asyncbulk_mappings,
    "raw": raw_aiohttp,
    "raw-orjson": raw_orjson,
}


def plan(size: Size) -> list[Case]:
    """A fresh server per run in the full run: no run pays for applying another's jobs."""
    count = _SIZES[size]
    # The server holds `count` processes; the doubled input updates each of them twice.
    one, two = {"updates": count, "held": count}, {"updates": 2 * count, "held": count}
    unit = "updates/s"
    runs = [
        Run("list", "asyncbulk, list input", one, unit),
        Run("generator", "asyncbulk, generator input", one, unit),
        # Twice the input, for memory staying flat as the input grows: no goal's, full run only.
        *(
            [Run("generator", f"asyncbulk, generator input, {2 * count:,}", two, unit)]
            if size == "full"
            else []
        ),
        Run("raw", "raw aiohttp (dicts, no validation)", one, unit, floor=True),
    ]
    setup = (("/admin/chakra/processes", {"count": count}),)
    floor = "raw aiohttp PATCHing the wire-form dicts, as many in flight, no validation"
    many = _READONLY_SIZES[size]
    params = {"updates": many, "held": many, "readonly": True}
    readonly = Case(
        f"{many:,} updates, a server that only reads",
        (
            Run("generator", "asyncbulk, ProcessUpdate generator", params, unit),
            Run("mappings", "asyncbulk, mapping generator", params, unit),
            Run("raw-orjson", "raw aiohttp + orjson, the same batches", params, unit, floor=True),
            Run("paired", "paired in one process: raw, mappings, ProcessUpdates", params, unit),
        ),
        "raw aiohttp + orjson PATCHing the same batches, as many in flight, no validation",
        server={"readonly_entries": 0},
    )
    return [
        Case(f"{count:,} updates", tuple(runs), floor, setup, server_per_run=size == "full"),
        readonly,
    ]


def goals(rows: list[Row], size: Size) -> list[Goal]:
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
    return out + _readonly_goals(rows, size)


def _paired_goal(name: str, target: str, side: str, pair: Row | None) -> Goal:
    """The share of raw aiohttp + orjson's CPU rate one side reached in the paired run."""

    def share(result: dict[str, Any]) -> float | None:
        paired = result.get("paired")
        return None if paired is None else float(paired["raw"] / paired[side])

    middle = None if pair is None else pair.middle(share)
    if pair is None or middle is None:
        return Goal(name, target, "n/a", None, None)
    figures, ratio = middle["paired"], share(middle) or 0.0
    low, high = pair.spread(share) or (ratio, ratio)
    value = (
        f"client CPU {figures[side]:.2f} vs {figures['raw']:.2f} µs/update = {ratio:.0%} "
        f"({low:.0%}-{high:.0%}, {len(pair.good)} runs), in one process"
    )
    return Goal(name, target, value, ratio, ratio >= _READONLY_SHARE)


def _readonly_goals(rows: list[Row], size: Size) -> list[Goal]:
    """Issue 14: >= 60% of raw aiohttp + orjson's rate, to a server that only reads.

    Judged on the paired run; the separate processes' figures are shown beside it.
    """
    mine = [r for r in rows if "only reads" in r.case and r.good]
    best = next((r for r in mine if r.floor), None)
    pair = next((r for r in mine if r.contender.startswith("paired")), None)
    out = []
    for label, side in (
        ("asyncbulk, ProcessUpdate generator", "updates"),
        ("asyncbulk, mapping generator", "mappings"),
    ):
        ours = next((r for r in mine if r.contender == label), None)
        name = (
            f"submission of {_READONLY_SIZES[size]:,} updates to a server that only reads, "
            f"{label.removeprefix('asyncbulk, ')}"
        )
        target = f">= {_READONLY_SHARE:.0%} of raw aiohttp + orjson"
        out.append(_paired_goal(name, target, side, pair))
        if ours is None or best is None or not ours.throughput or not best.throughput:
            continue
        wall_ratio = ours.throughput / best.throughput
        cpu = (ours.get("cpu") or 0.0) / _READONLY_SIZES[size] * 1e6
        floor_cpu = (best.get("cpu") or 0.0) / _READONLY_SIZES[size] * 1e6
        cpu_ratio = floor_cpu / (cpu or 1.0)
        # The smaller of the two ratios, as for entries: wall time alone would hide the
        # client's work whenever the server is what limits.
        ratio = min(wall_ratio, cpu_ratio)
        value = (
            f"{ours.throughput:,.0f} vs {best.throughput:,.0f} updates/s = {wall_ratio:.0%}; "
            f"client CPU {cpu:.2f} vs {floor_cpu:.2f} µs/update = {cpu_ratio:.0%} "
            "(the smaller)"
        )
        out.append(Goal(f"{name}, separate processes", "-", value, ratio, None, info=True))
    return out
