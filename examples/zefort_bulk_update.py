"""Start Zefort bulk updates and track every task to the end, acknowledging each once.

export ZEFORT_BASE_URL=http://127.0.0.1:8081 ZEFORT_API_KEY=zefort-sim-key
python examples/zefort_bulk_update.py
"""

from __future__ import annotations

import argparse
import asyncio
import os

from asyncbulk import JobTimeoutError
from asyncbulk.zefort import ZefortClient


async def main(args: argparse.Namespace) -> int:
    """Start one bulk update per tag, then follow all the tasks at once."""
    async with ZefortClient(args.api_key, base_url=args.base_url) as zefort:
        tasks = [
            await zefort.bulk_update_contracts(
                attributes={"end_date": "2023-02-15"}, status="done", search={"q_tags": tag}
            )
            for tag in args.tags
        ]
        print(f"started {len(tasks)} tasks")
        failed = 0
        try:
            async with zefort.track_tasks(
                [task.id for task in tasks], timeout=120, acknowledge=True
            ) as finished:
                async for task in finished:
                    changed = task.affected_contracts or ()
                    print(f"{task.id}: {task.backend_status}, {len(changed)} contracts changed")
                    failed += task.is_failed
        except JobTimeoutError as exc:
            print(f"still pending at the deadline: {', '.join(exc.unfinished)}")
            return 1
        return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=os.environ.get("ZEFORT_BASE_URL", ""))
    parser.add_argument("--api-key", default=os.environ.get("ZEFORT_API_KEY", ""))
    parser.add_argument("--tags", nargs="*", default=["contracts of service", "nda", "lease"])
    raise SystemExit(asyncio.run(main(parser.parse_args())))
