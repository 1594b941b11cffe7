"""The client process of one benchmark run: `python -m benchmarks._client` (spec on stdin).

Every contender runs in a fresh process of its own, so its figures are its own: CPU time from
`getrusage(RUSAGE_SELF)` deltas over the measured part, and peak memory from the kernel's
high-water mark of the resident set (reset just before the measured part where Linux allows it,
otherwise `ru_maxrss`). The simulator runs in another process (`benchmarks._server`), so none of
its CPU is charged here. Setup (creating tasks, reading the server's report) happens outside the
measured part.

The spec is a JSON object: `scenario` (a module of `benchmarks`), `contender` (a key of its
`CONTENDERS`), `params`, `setup` (what the case's setup returned), `server` (what the server
printed) and optionally `profile`, a file to write a pyinstrument profile of the measured part to
(its figures are then inflated by the profiler), headed by the time the garbage collector took.
The params `faults` and `limit` set the server's fault rules and rate limits for the measured
part; with `shared_server`, the run takes its tasks off the server's listing when it is done.
A scenario's `prepare` runs before all that, and its `start`, if it has one, last before the
measured part (the tracking scenarios release their tasks there). The result is one JSON line
on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import json
import os
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import aiohttp

from benchmarks._seen import Seen

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    Contender = Callable[["Context"], Awaitable[dict[str, Any]]]

_PROC_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class Context:
    """What a contender gets: where the server is, its parameters, what setup made.

    Attributes:
        server: The server's hello (URLs, credentials, admin URL).
        params: The run's parameters.
        setup: What the case's setup returned (ids, job id...).
        data: What the scenario's `prepare` put there for the contender.
    """

    server: dict[str, Any]
    params: dict[str, Any]
    setup: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)
    _admin: aiohttp.ClientSession | None = None

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        """Call one of the server's admin routes (never inside the measured part)."""
        assert self._admin is not None
        url = self.server["admin_url"] + path
        async with self._admin.request(method, url, json=body) as response:
            response.raise_for_status()
            return await response.json()


def _status_kb(name: str) -> int | None:
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); tell whether it worked."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class GCTimer:
    """Time spent in the cyclic garbage collector, from `gc.callbacks` (start and stop).

    The collector runs on the thread that allocates, so its wall time is CPU time of the client.
    """

    def __init__(self) -> None:
        """Nothing is timed before `install`."""
        self.seconds = 0.0
        self.collections = 0
        #: Seconds and collections per generation (0, 1, 2).
        self.by_generation = [[0.0, 0], [0.0, 0], [0.0, 0]]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        """The collector's callback."""
        if phase == "start":
            self._started = time.perf_counter()
        else:
            took = time.perf_counter() - self._started
            self.seconds += took
            self.collections += 1
            generation = self.by_generation[info.get("generation", 2)]
            generation[0] += took
            generation[1] += 1

    def install(self) -> None:
        """Start timing."""
        gc.callbacks.append(self)

    def remove(self) -> None:
        """Stop timing."""
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self)


class Meter:
    """Wall time, CPU time, time in the collector and peak memory of a `with` block."""

    def __init__(self) -> None:
        """Nothing is measured before `__enter__`."""
        self.wall = self.cpu = 0.0
        self.started_at = 0.0
        self.rss_start_kb = self.peak_kb = 0
        self.peak_source = ""
        self.gc = GCTimer()

    def __enter__(self) -> Self:
        """Collect garbage, reset the peak mark and start the clocks."""
        gc.collect()
        self.rss_start_kb = _status_kb("VmRSS") or 0
        self.peak_source = "VmHWM" if _reset_peak() else "ru_maxrss"
        self.gc.install()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self._cpu0 = usage.ru_utime + usage.ru_stime
        self.started_at = time.time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        """Stop the clocks and read the peak."""
        self.wall = time.perf_counter() - self._t0
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu = usage.ru_utime + usage.ru_stime - self._cpu0
        self.gc.remove()
        peak = _status_kb("VmHWM") if self.peak_source == "VmHWM" else None
        self.peak_kb = peak if peak is not None else usage.ru_maxrss


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def lag_figures(
    seen: dict[str, float], finished: dict[str, float], expected: int
) -> dict[str, Any]:
    """Detection lag: when the client saw each task vs when the server finished it."""
    lags = [at - finished[task] for task, at in seen.items() if task in finished]
    figures: dict[str, Any] = {"detected": len(seen), "expected": expected}
    if lags:
        figures |= {
            "p50": _percentile(lags, 0.50),
            "p99": _percentile(lags, 0.99),
            "max": max(lags),
        }
    return figures


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: n - before.get(k, 0) for k, n in after.items() if n - before.get(k, 0)}


def _import_clients() -> None:
    """Import the library before measuring (contenders import it where they use it).

    Imports take about 0.2 s, which is no part of what any contender does per item; that
    includes anyio's, which loads its modules lazily, on first use of each name.
    """
    for name in ("asyncbulk", "asyncbulk.chakra", "asyncbulk.zefort", "anyio._backends._asyncio"):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    anyio = sys.modules.get("anyio")
    for name in getattr(anyio, "__all__", ()):
        getattr(anyio, name)


async def _set_up(ctx: Context, module: Any) -> None:
    """The scenario's `prepare`, then the server's fault rules and rate limits for the run."""
    prepare = getattr(module, "prepare", None)
    if prepare is not None:
        await prepare(ctx)
    faults, limit = ctx.params.get("faults"), ctx.params.get("limit")
    if faults:
        await ctx.admin("POST", "/admin/faults", {"faults": faults})
    if limit:
        await ctx.admin("POST", "/admin/limit", limit)


async def _tear_down(ctx: Context, *, finished: bool, shared: bool) -> dict[str, Any]:
    """Lift the faults, read the server's report, lift the limits, leave nothing listed."""
    if ctx.params.get("faults"):
        await ctx.admin("POST", "/admin/faults", {"faults": []})
    after: dict[str, Any] = await ctx.admin(
        "GET", "/admin/report" + ("?finished=1" if finished else "")
    )
    if ctx.params.get("limit"):
        # After the report: lifting the limits starts the limiter's counts afresh.
        await ctx.admin("POST", "/admin/limit", {})
    if shared and ctx.data.get("ids") and ctx.params.get("create", True):
        # Off the listing, so the next run on this server sweeps only its own tasks.
        await ctx.admin("POST", "/admin/zefort/unlist", {"ids": ctx.data["ids"]})
    return after


async def _run(spec: dict[str, Any]) -> dict[str, Any]:
    _import_clients()
    module = importlib.import_module(f"benchmarks.{spec['scenario']}")
    contender: Contender = module.CONTENDERS[spec["contender"]]
    async with aiohttp.ClientSession() as admin:
        ctx = Context(spec["server"], spec.get("params", {}), spec.get("setup", {}), _admin=admin)
        await _set_up(ctx, module)
        before = await ctx.admin("GET", "/admin/report")
        # Last before measuring: the scenario's `start` (tasks released to begin finishing).
        start = getattr(module, "start", None)
        if start is not None:
            await start(ctx)
        profiler = _profiler() if spec.get("profile") else None
        with Meter() as meter, profiler or contextlib.nullcontext():
            outcome = await contender(ctx)
        if profiler is not None:
            _write_profile(Path(spec["profile"]), profiler, meter)
        seen_at = outcome.pop("seen", None)
        seen: dict[str, float] | None = seen_at.as_dict() if isinstance(seen_at, Seen) else seen_at
        after = await _tear_down(
            ctx, finished=seen is not None, shared=bool(spec.get("shared_server"))
        )
    result: dict[str, Any] = {
        "wall": meter.wall,
        "cpu": meter.cpu,
        "gc_seconds": meter.gc.seconds,
        "gc_collections": meter.gc.collections,
        "gc_by_generation": meter.gc.by_generation,
        "started_at": meter.started_at,
        "peak_rss_mb": meter.peak_kb / 1024,
        "rss_start_mb": meter.rss_start_kb / 1024,
        "peak_source": meter.peak_source,
        "requests": after["total"] - before["total"],
        "by_route": _delta(after["by_route"], before["by_route"]),
        "by_status": _delta(after["by_status"], before["by_status"]),
        "faults": _delta(after["faults"], before["faults"]),
        "acknowledgements": after["acknowledgements"] - before["acknowledgements"],
        **outcome,
    }
    if seen is not None:
        finished = after["finished"]
        result["lag"] = lag_figures(seen, finished, len(ctx.data.get("ids", seen)))
        ids = ctx.data.get("ids", ())
        times = [finished[task_id] for task_id in ids if task_id in finished]
        if times:
            result["first_finish"] = min(times) - meter.started_at
            result["last_finish"] = max(times) - meter.started_at
    if "limit" in after:
        result["limit"] = _limit_figures(after["limit"], result, meter)
    return result


def _limit_figures(limit: dict[str, Any], result: dict[str, Any], meter: Meter) -> dict[str, Any]:
    """What the rate limiter admitted and refused; the share of its rate used while work waited.

    Work waits from the first task's finish to the end of the run: the allowed requests in that
    time are the rate times its length.
    """
    admitted_at: list[float] = limit.pop("admitted_at")
    first = result.get("first_finish")
    if limit["rate"] and first is not None and meter.wall > first:
        start, end = meter.started_at + first, meter.started_at + meter.wall
        used = sum(1 for at in admitted_at if start <= at <= end)
        limit["rate_used"] = used / (limit["rate"] * (end - start))
    return limit


def _write_profile(path: Path, profiler: Any, meter: Meter) -> None:
    """The profile's text, headed by the time the garbage collector took."""
    share = meter.gc.seconds / meter.cpu if meter.cpu else 0.0
    head = (
        f"garbage collector: {meter.gc.seconds:.3f} s in {meter.gc.collections:,} collections "
        f"= {share:.1%} of client CPU ({meter.cpu:.3f} s); wall {meter.wall:.3f} s\n\n"
    )
    path.write_text(head + profiler.output_text(unicode=True), encoding="utf-8")


def _profiler() -> Any:
    """A pyinstrument profiler (a dev tool, not a dependency) for the measured part."""
    from pyinstrument import Profiler  # noqa: PLC0415 - only when asked for

    return Profiler(interval=0.0005, async_mode="enabled")


def main() -> None:
    """Run the spec read from stdin; print the result (or the error) as one JSON line."""
    spec = json.load(sys.stdin)
    try:
        result = asyncio.run(_run(spec))
    except Exception as exc:  # noqa: BLE001 - the parent reports any failure in its table
        sys.stderr.write(traceback.format_exc())
        result = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: a large heap takes seconds to free and nothing needs it.
    os._exit(0)


if __name__ == "__main__":
    main()
