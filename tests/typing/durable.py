"""Type-checked, never run: handles, journals and resuming as a user writes them."""

from __future__ import annotations

import json
from typing import Any

from asyncbulk import (
    BackgroundJob,
    ChakraClient,
    Journal,
    MemoryJournal,
    Pending,
    SQLiteJournal,
    TrackedJob,
    ZefortClient,
    ZefortTask,
)


async def keep_and_resume(token: str, job_id: str) -> BackgroundJob:
    """A job's handle goes to a file as JSON and comes back as the live job."""
    async with ChakraClient(token, journal="work.db") as chakra:
        job = await chakra.get_background_job(job_id)
        text = json.dumps(job.handle())
        resumed = await chakra.resume(json.loads(text))
        assert isinstance(resumed, BackgroundJob)
        return resumed


async def finish_after_restart(api_key: str) -> list[tuple[str, str, str]]:
    """What a journal held unfinished comes back with keys to deduplicate deliveries."""
    async with (
        SQLiteJournal("work.db", commit_interval=0.01) as journal,
        ZefortClient(api_key, journal=journal) as zefort,
    ):
        pending: Pending = await zefort.resume_pending()
        jobs: tuple[TrackedJob, ...] = pending.jobs
        handles: list[dict[str, Any]] = [job.handle() for job in jobs]
        tasks: list[ZefortTask] = [await zefort.resume(h) for h in handles]
        for submission in pending.submissions:
            states = [batch.state for batch in submission.batches]
            print(submission.id, states, tasks)
            await journal.end_submission(submission.id, durable=True)
        print(journal.statistics().transactions)
        return [job.key for job in jobs]


def any_store(path: str | None) -> Journal:
    """Both stores are Journals."""
    return MemoryJournal() if path is None else SQLiteJournal(path)
