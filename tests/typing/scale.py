"""Type-checked, never run: shared tracking and the shared limit as a user writes them."""

from __future__ import annotations

import anyio

from asyncbulk import ChakraClient, Pending, ZefortClient
from asyncbulk.postgres import (
    ChakraPoller,
    Delivery,
    JobPoller,
    PostgresJournal,
    PostgresStore,
    Worker,
    WorkerStats,
    ZefortPoller,
)
from asyncbulk.redis import RedisRateLimit, SharedLimiter


async def deliver(delivery: Delivery) -> None:
    """A delivery hook."""
    print(delivery.key.id, delivery.attempt, delivery.result)


async def main(dsn: str, redis_url: str, api_key: str) -> WorkerStats:
    """Run a worker until stopped, its polls under a limit shared through Redis."""
    limit: SharedLimiter = RedisRateLimit(
        redis_url, per_second=50, burst=1, vendor="zefort", account="fingerprint"
    )
    stop = anyio.Event()
    async with PostgresStore(dsn) as store, ZefortClient(api_key) as zefort:
        worker = Worker(store, ZefortPoller(zefort, limiter=limit), deliver=deliver)
        await worker.run(stop=stop)
    await limit.aclose()
    return worker.statistics()


async def chakra_replica(dsn: str, token: str) -> Pending:
    """A replica recording in PostgreSQL while a worker of the same store tracks Chakra jobs."""
    async with (
        PostgresStore(dsn) as store,
        PostgresJournal(store) as journal,
        ChakraClient(token, journal=journal) as chakra,
    ):
        poller: JobPoller = ChakraPoller(chakra)
        Worker(store, poller, deliver=deliver)
        return await chakra.resume_pending()
