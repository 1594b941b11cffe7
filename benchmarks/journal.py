"""What the journal costs: submissions, tracking and resuming, with and without SQLite.

Run ``python -m benchmarks.journal`` (``--scale 0.1`` for a tenth of the sizes). Each figure
comes from one run against the simulator served in the same process over loopback, so the
simulator's work shares the CPU with the client's, equally with and without the journal:

- submission of 100,000 Chakra updates in batches of 1,000: seconds and peak traced memory;
- tracking 10,000 Zefort tasks: detection lag p99 and requests sent;
- resume of 50,000 journaled tracked tasks: seconds from the client's start to its first poll.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio

from asyncbulk import RetryPolicy, TrackingOptions
from asyncbulk.chakra import ChakraClient
from asyncbulk.testing import Simulator
from asyncbulk.zefort import ZefortClient

_TRACKING = TrackingOptions(min_interval=0.25, max_interval=2.0, sweep_interval=0.5)


async def submission(count: int, journal: Path | None) -> dict[str, Any]:
    """Submit `count` updates; the time and the peak memory traced while submitting."""
    async with Simulator(keep_requests=False, examples=True) as sim:
        updates = ({"id": f"pid-{i}", "data": {"city": "Goa"}} for i in range(count))
        async with ChakraClient(
            sim.chakra_token, base_url=sim.chakra_url, journal=journal, retry=RetryPolicy.testing()
        ) as chakra:
            tracemalloc.start()
            started = time.perf_counter()
            done = await chakra.bulk_update_processes("tele_sales", updates, batch_size=1000)
            seconds = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    return {"items": done.count, "seconds": seconds, "peak_mib": peak / 2**20}


async def tracking(count: int, journal: Path | None) -> dict[str, Any]:
    """Track `count` tasks finishing over a few seconds; lag p99 and requests."""
    async with Simulator(keep_requests=False, zefort_task_delay=(0.5, 5.0)) as sim:
        ids = _tasks(sim, count)
        async with ZefortClient(
            sim.zefort_api_key, base_url=sim.zefort_url, journal=journal, tracking=_TRACKING
        ) as zefort:
            before = sim.records.total_requests
            started = time.perf_counter()
            tasks = zefort.track_tasks(ids, timeout=600)
            async with tasks:
                # The simulator knows when each task finished: the lag is to delivery.
                lags = [sim.clock.now() - sim.zefort.tasks[task.id].due_at async for task in tasks]
            lags.sort()
            return {
                "tasks": len(lags),
                "seconds": time.perf_counter() - started,
                "lag_p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else None,
                "requests": sim.records.total_requests - before,
            }


def _tasks(sim: Simulator, count: int) -> list[str]:
    """Start `count` tasks in the simulator directly (no client request)."""
    return [
        sim.zefort.submit_bulk_update({"status": "done", "search": {}}).id for _ in range(count)
    ]


async def resume(count: int, directory: Path) -> dict[str, Any]:
    """Journal `count` tracked tasks, then time a new client from its start to its first poll."""
    path = directory / "resume.db"
    async with Simulator(keep_requests=False, zefort_task_delay=3600) as sim:
        ids = _tasks(sim, count)
        async with ZefortClient(sim.zefort_api_key, base_url=sim.zefort_url, journal=path) as z:
            await z.journal.add_jobs(z._origin, "task", ids)  # noqa: SLF001 -- as a tracker would
        before = sim.records.total_requests
        started = time.perf_counter()
        first: float | None = None
        async with ZefortClient(
            sim.zefort_api_key, base_url=sim.zefort_url, journal=path, tracking=_TRACKING
        ) as zefort:
            pending = await zefort.resume_pending()
            read = time.perf_counter() - started
            tasks = zefort.track_tasks([job.id for job in pending.jobs], timeout=60)
            async with tasks:
                while first is None:
                    await anyio.sleep(0.001)
                    if sim.records.total_requests > before:
                        first = time.perf_counter() - started
    return {"jobs": len(pending.jobs), "read_seconds": read, "first_poll_seconds": first}


async def main(scale: float) -> None:
    """Run every figure once and print it."""
    directory = Path(tempfile.mkdtemp())
    items, tasks, jobs = int(100_000 * scale), int(10_000 * scale), int(50_000 * scale)
    print(f"scale {scale:g}: {items:,} updates, {tasks:,} tasks, {jobs:,} journaled jobs")
    for label, journal in (("no journal", None), ("SQLite journal", directory / "sub.db")):
        row = await submission(items, journal)
        print(
            f"submission, {label}: {row['items']:,} updates in {row['seconds']:.2f} s, "
            f"peak {row['peak_mib']:.1f} MiB"
        )
    for label, journal in (("no journal", None), ("SQLite journal", directory / "track.db")):
        row = await tracking(tasks, journal)
        lag = "n/a" if row["lag_p99"] is None else f"{row['lag_p99']:.3f} s"
        print(
            f"tracking, {label}: {row['tasks']:,} tasks in {row['seconds']:.1f} s, "
            f"lag p99 {lag}, {row['requests']:,} requests"
        )
    row = await resume(jobs, directory)
    print(
        f"resume: {row['jobs']:,} journaled tasks read in {row['read_seconds']:.2f} s, "
        f"first poll after {row['first_poll_seconds']:.2f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="a fraction of the sizes")
    anyio.run(main, parser.parse_args().scale)
