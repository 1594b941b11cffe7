"""Send Chakra process updates in batches, wait for the jobs, stream their entries.

Run it against the simulator (``asyncbulk simulate`` in another shell prints the settings):

    export CHAKRA_BASE_URL=http://127.0.0.1:8080 CHAKRA_TOKEN=chakra-sim-token
    python examples/chakra_bulk_update.py

or against ChakraHQ with your own token, procedure and leads (``--procedure``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections import Counter
from typing import TYPE_CHECKING

from asyncbulk.chakra import ChakraClient, ProcessUpdate

if TYPE_CHECKING:
    from collections.abc import Iterator


def updates(leads: list[str]) -> Iterator[ProcessUpdate]:
    """The input: any iterable (or async iterable) works, read a batch at a time."""
    for n, lead in enumerate(leads):
        yield ProcessUpdate.by_key("lead_id", lead, data={"score": str(100 + n)})
    # One update the server will refuse: no such lead.
    yield ProcessUpdate.by_key("lead_id", "NO-SUCH-LEAD", data={"score": "0"})


async def main(args: argparse.Namespace) -> int:
    """Submit, wait, stream the entries, and print what failed."""
    async with ChakraClient(args.token, base_url=args.base_url) as chakra:
        submission = await chakra.bulk_update_processes(
            args.procedure, updates(args.leads), batch_size=args.batch_size
        )
        print(f"{submission.count} updates in {len(submission.jobs)} jobs")
        await submission.wait(timeout=120)

        counts: Counter[str] = Counter()
        for job_id in submission.job_ids:
            async with chakra.iter_job_entries(job_id) as entries:
                async for entry in entries:
                    counts[entry.completion_status or "?"] += 1
        print("entries:", dict(counts))

        summary = await submission.summary()
        for failure in (*summary.invalid, *summary.failed):
            print(f"  {failure.entry.completion_status}: {failure.message}")
        return 0 if summary.ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=os.environ.get("CHAKRA_BASE_URL", ""))
    parser.add_argument("--token", default=os.environ.get("CHAKRA_TOKEN", ""))
    parser.add_argument("--procedure", default="tele_sales")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument(
        "--leads", nargs="*", default=["EXT-TEST-143", "LEAD-001", "LEAD-910", "LEAD-100"]
    )
    raise SystemExit(asyncio.run(main(parser.parse_args())))
