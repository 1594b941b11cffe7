"""Embed asyncbulk in an asyncio worker: jobs come from a queue, results go to a handler.

A producer puts bulk-update requests on a bounded stream; a few workers start each as a
Zefort task and wait for it with acknowledgement; one client is shared by all. Ctrl-C (or a
cancelled scope) stops everything: the task group leaves nothing running.

    export ZEFORT_BASE_URL=http://127.0.0.1:8081 ZEFORT_API_KEY=zefort-sim-key
    python examples/asyncio_worker.py --requests 20
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

import anyio

from asyncbulk import AsyncBulkError
from asyncbulk.zefort import ZefortClient

if TYPE_CHECKING:
    from anyio.abc import ObjectReceiveStream


async def worker(
    name: str, zefort: ZefortClient, requests: ObjectReceiveStream[dict[str, Any]]
) -> int:
    """Carry out requests until the stream closes; return how many failed."""
    failed = 0
    async with requests:
        async for request in requests:
            try:
                task = await zefort.bulk_update_contracts(**request)
                task = await zefort.wait_for_task(task.id, timeout=60, acknowledge=True)
            except AsyncBulkError as exc:
                print(f"{name}: {request['search']} failed: {exc}")
                failed += 1
                continue
            print(f"{name}: {task.id} {task.backend_status}")
            failed += task.is_failed
    return failed


async def main(args: argparse.Namespace) -> int:
    """Feed `args.requests` bulk updates to `args.workers` workers."""
    send, receive = anyio.create_memory_object_stream[dict[str, Any]](args.workers)
    results: list[int] = []

    async def run_worker(
        n: int, zefort: ZefortClient, requests: ObjectReceiveStream[dict[str, Any]]
    ) -> None:
        results.append(await worker(f"worker-{n}", zefort, requests))

    async with (
        ZefortClient(args.api_key, base_url=args.base_url) as zefort,
        anyio.create_task_group() as group,
    ):
        # Each worker holds its own clone; the stream ends for all once `send` closes.
        with receive:
            for n in range(args.workers):
                group.start_soon(run_worker, n, zefort, receive.clone())
        async with send:
            for n in range(args.requests):
                await send.send({"status": "review", "search": {"q": f"request {n}"}})
    print(f"{args.requests} requests, {sum(results)} failed")
    return 1 if sum(results) else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=os.environ.get("ZEFORT_BASE_URL", ""))
    parser.add_argument("--api-key", default=os.environ.get("ZEFORT_API_KEY", ""))
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    raise SystemExit(anyio.run(main, parser.parse_args()))
