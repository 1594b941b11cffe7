"""A worker the crash tests run in a subprocess and SIGKILL: Zefort bulk updates, then tracking.

It makes ``count`` bulk updates, one after the other (update ``n`` sets the attribute ``n``),
then tracks every task they started and hands each finished task to its consumer, which
appends the task id to the output file (flushed to disk) and prints ``delivered``. Started
again on the same journal, it resumes: the tasks the journal holds undelivered are tracked
again, a bulk update a crash left on the wire is settled by `ZefortClient.resume_pending`, and
the next update to make is the number of distinct tasks known (the updates go one at a time,
and each task is in the journal before the next update begins).

Every step is printed on stdout (``submit``, ``submitted``, ``tracking``, ``delivered``) so the
test can kill the process at a chosen moment.

    python tests/journal_worker.py URL KEY JOURNAL OUTPUT COUNT
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio

from asyncbulk import RetryPolicy, SQLiteJournal, TrackingOptions
from asyncbulk.zefort import ZefortClient

#: What the consumer already took, in earlier runs (read before the event loop starts).
TAKEN: frozenset[str] = frozenset(
    Path(sys.argv[4]).read_text().split() if Path(sys.argv[4]).exists() else ()
)


def say(event: str) -> None:
    """Tell the test what the worker is about to do or just did."""
    sys.stdout.write(event + "\n")
    sys.stdout.flush()


async def main(url: str, key: str, journal_path: str, output: Path, count: int) -> None:
    """Resume what the journal holds, make the updates not made yet, deliver every task."""
    delivered = TAKEN
    async with (
        SQLiteJournal(journal_path) as journal,
        ZefortClient(
            key,
            base_url=url,
            journal=journal,
            allow_insecure_http=True,
            retry=RetryPolicy.testing(),
            tracking=TrackingOptions(min_interval=0.02, max_interval=0.1, sweep_interval=0.1),
        ) as zefort,
    ):
        pending = await zefort.resume_pending()
        for submission in pending.submissions:
            # Settled: an adopted task is now among the tracked ones; one not applied is
            # made again below, as the next update.
            await journal.end_submission(submission.id)
        tasks = [job.id for job in (await zefort.resume_pending()).jobs]
        known = delivered | frozenset(tasks)
        say("start")
        for n in range(len(known), count):
            say(f"submit {n}")
            task = await zefort.bulk_update_contracts(
                attributes={"n": str(n)}, search={"q": f"item {n}"}
            )
            tasks.append(task.id)
            say(f"submitted {n}")
        say("tracking")
        with output.open("a", encoding="utf-8") as out:
            async for task in zefort.track_tasks(tasks, acknowledge=True, timeout=60):
                out.write(task.id + "\n")
                out.flush()
                os.fsync(out.fileno())
                say("delivered")
    say("done")


if __name__ == "__main__":
    url, key, journal_path, output, count = sys.argv[1:]
    anyio.run(main, url, key, journal_path, Path(output), int(count))
