"""One worker process of the kill test: track the store's tasks on the simulator, deliver them.

Usage: ``python postgres_worker_process.py DSN SCHEMA ZEFORT_URL API_KEY WORKER_ID EVENTS``.
Each delivery handed to the hook is appended to EVENTS as a JSON line (before it is
acknowledged, so a kill between the two leaves the line: the at-least-once window). On SIGTERM
it stops cleanly and prints its statistics as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import anyio
import attrs

from asyncbulk import ZefortClient
from asyncbulk.postgres import Delivery, PostgresStore, Worker, ZefortPoller


async def main(argv: list[str]) -> None:
    dsn, schema, url, api_key, worker_id, events = argv
    handle = os.open(events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    async def deliver(delivery: Delivery) -> None:
        line = {"id": delivery.key.id, "attempt": delivery.attempt, "worker": worker_id}
        os.write(handle, (json.dumps(line) + "\n").encode())

    stop = anyio.Event()

    async def on_sigterm() -> None:
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                stop.set()
                return

    async with (
        PostgresStore(dsn, schema=schema) as store,
        ZefortClient(api_key, base_url=url) as zefort,
        anyio.create_task_group() as group,
    ):
        group.start_soon(on_sigterm)
        worker = Worker(
            store,
            ZefortPoller(zefort),
            deliver=deliver,
            worker_id=worker_id,
            heartbeat_interval=0.3,
            expiry=1.5,
            claim_batch=40,
            poll_interval=0.3,
            delivery_batch=20,
            delivery_lease=5.0,
        )
        await worker.run(stop=stop)
        group.cancel_scope.cancel()
        stats = {**attrs.asdict(worker.statistics()), **attrs.asdict(store.statistics())}
        print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
