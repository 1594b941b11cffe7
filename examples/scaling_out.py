"""Scaling out: workers sharing tracking through PostgreSQL and one rate limit through Redis.

Runs against the simulator, so it needs only the two services (defaults: loopback):

    ASYNCBULK_POSTGRES=postgresql://postgres@127.0.0.1:5432/test
    ASYNCBULK_REDIS=redis://127.0.0.1:6379/0
    python examples/scaling_out.py

Two workers (in one process here; in production, one per process or machine) claim shares of
100 Zefort tasks, poll them under a shared limit of 20 requests/s, record each finish once and
deliver each finished task once to the hook.
"""

import os

import anyio
import attrs

from asyncbulk import ZefortClient
from asyncbulk.postgres import Delivery, PostgresStore, Worker, ZefortPoller
from asyncbulk.redis import RedisRateLimit
from asyncbulk.testing import Simulator

POSTGRES = os.environ.get("ASYNCBULK_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("ASYNCBULK_REDIS", "redis://127.0.0.1:6379/0")
SCHEMA = os.environ.get("ASYNCBULK_SCHEMA", "asyncbulk_example")
PREFIX = os.environ.get("ASYNCBULK_REDIS_PREFIX", "asyncbulk-example")
TASKS = 100


@attrs.frozen
class Origin:
    """Whose tasks these are: vendor, base URL, account fingerprint (never the key)."""

    vendor: str
    base_url: str
    account: str


async def main() -> None:
    """Track 100 tasks with two workers; print what each did."""
    delivered: list[str] = []
    done = anyio.Event()

    async def hook(delivery: Delivery) -> None:
        # Do the work here; a hook that raises gets the task again after the delivery lease.
        delivered.append(delivery.key.id)
        if len(delivered) == TASKS:
            done.set()

    async with (
        Simulator(zefort_task_delay=(0.5, 3.0)) as sim,
        PostgresStore(POSTGRES, schema=SCHEMA) as store,
        ZefortClient(sim.zefort_api_key, base_url=sim.zefort_url) as zefort,
    ):
        origin = Origin("zefort", sim.zefort_url, "example-account")
        # Any replica that submits records its tasks; whichever workers are alive track them.
        tasks = [sim.zefort.submit_bulk_update({"attributes": {"n": n}}) for n in range(TASKS)]
        await store.add_jobs(origin, "task", [task.id for task in tasks])
        limits = [
            RedisRateLimit(
                REDIS, per_second=20, vendor="zefort", account=origin.account, key_prefix=PREFIX
            )
            for _ in range(2)
        ]
        workers = [
            Worker(store, ZefortPoller(zefort, limiter=limit), origin=origin, deliver=hook)
            for limit in limits
        ]
        async with anyio.create_task_group() as group:
            for worker in workers:
                group.start_soon(lambda w=worker: w.run(stop=done))
        for limit in limits:
            await limit.aclose()
    for worker in workers:
        stats = worker.statistics()
        print(f"{worker.worker_id[:15]}: {stats.finished} finished, {stats.delivered} delivered")
    once = len(set(delivered)) == len(delivered) == TASKS
    print(f"{len(set(delivered))} of {TASKS} tasks delivered, each once: {once}")
    print(store.statistics())


if __name__ == "__main__":
    anyio.run(main)
