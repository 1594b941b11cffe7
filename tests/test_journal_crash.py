"""A worker killed with SIGKILL again and again, resumed each time from its SQLite journal.

The simulator is served by the test process over loopback, so its records outlive every
worker. The worker (`tests/journal_worker.py`) makes Zefort bulk updates one at a time and then
tracks and delivers their tasks; it is killed at a random one of its steps (before a POST,
after one, while tracking, right after a delivery), with a random short delay, and started
again on the same journal until it finishes.

The simulator's clock moves only while a worker is tracking: a task a crash left unanswered is
still pending when the next worker settles it, so the journaled body and snapshot prove which
task it is. (A task that finished before the settlement no longer carries the body, and is
settled ``unknown``: named, never resent; `tests/test_resume.py` covers that case.)
"""

from __future__ import annotations

import random
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

from asyncbulk.testing import ManualClock, Simulator

if TYPE_CHECKING:
    from anyio.abc import Process

WORKER = Path(__file__).with_name("journal_worker.py")


async def run_worker(
    sim: Simulator, tmp: Path, count: int, kill_at: int | None, delay: float
) -> tuple[bool, list[str]]:
    """Run the worker once; kill it at its `kill_at`-th step. Whether it was killed, its steps."""
    clock = sim.clock
    assert isinstance(clock, ManualClock)
    tracking = anyio.Event()

    async def move_time() -> None:
        await tracking.wait()
        while True:
            clock.advance(0.1)
            await anyio.sleep(0.02)

    process: Process = await anyio.open_process(
        [
            sys.executable,
            str(WORKER),
            sim.zefort_url,
            sim.zefort_api_key,
            str(tmp / "journal.db"),
            str(tmp / "delivered.txt"),
            str(count),
        ],
        stderr=None,
    )
    steps: list[str] = []
    killed = False
    assert process.stdout is not None
    buffer = b""
    async with anyio.create_task_group() as group:
        group.start_soon(move_time)
        with anyio.fail_after(120):
            async for chunk in process.stdout:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                steps.extend(line.decode() for line in lines)
                if "tracking" in steps:
                    tracking.set()
                if kill_at is not None and len(steps) >= kill_at and steps[-1] != "done":
                    await anyio.sleep(delay)
                    process.send_signal(signal.SIGKILL)
                    killed = True
                    break
            code = await process.wait()
        group.cancel_scope.cancel()
    await process.aclose()
    if not killed:
        assert code == 0, steps
    return killed, steps


async def crash_and_resume(tmp: Path, *, count: int, kills: int, seed: int) -> None:
    """Kill the worker `kills` times, let it finish, and check the simulator's records."""
    rng = random.Random(seed)
    async with Simulator(seed=seed, zefort_task_delay=(0.1, 0.8), clock=ManualClock()) as sim:
        # How many deliveries had been written when each run ended.
        boundaries: list[int] = []
        done_kills = 0
        runs = 0
        while True:
            runs += 1
            assert runs < kills + 20, "the worker never finished"
            # A few steps of progress a run (after "start", and during the short delay): with
            # several updates a kill, the work outlasts the kills.
            kill_at = rng.randint(1, 4) if done_kills < kills else None
            killed, _ = await run_worker(sim, tmp, count, kill_at, rng.uniform(0, 0.02))
            output = tmp / "delivered.txt"
            boundaries.append(len(output.read_text().split()) if output.exists() else 0)
            if killed:
                done_kills += 1
                continue
            break
        posts = sim.records.zefort_submissions
        made = sorted(int(post.body["attributes"]["n"]) for post in posts)
        # No update applied twice, none lost.
        assert made == list(range(count))
        delivered = (tmp / "delivered.txt").read_text().split()
        tasks = {post.task_id for post in posts}
        # Every finished task delivered, and nothing delivered that was not started here.
        assert set(delivered) == tasks
        # A task delivered twice only when the worker died holding it: its first delivery was
        # the last line a killed run wrote.
        first: dict[str, int] = {}
        for index, task_id in enumerate(delivered):
            if task_id in first:
                assert first[task_id] + 1 in boundaries, (task_id, first[task_id], boundaries)
                assert delivered.count(task_id) == 2
            else:
                first[task_id] = index
        assert done_kills == kills


@pytest.mark.anyio
async def test_a_worker_killed_five_times_applies_each_update_once_and_delivers_every_task(
    tmp_path: Path,
) -> None:
    """Five SIGKILLs at random steps: each update applied once, every task delivered."""
    await crash_and_resume(tmp_path, count=10, kills=5, seed=13)


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.parametrize("seed", [1, 2])
async def test_a_worker_killed_a_dozen_times_per_run_loses_and_repeats_nothing(
    tmp_path: Path, seed: int
) -> None:
    """Twelve SIGKILLs per seed (24 in all): each update applied once, every task delivered."""
    await crash_and_resume(tmp_path, count=40, kills=12, seed=seed)
