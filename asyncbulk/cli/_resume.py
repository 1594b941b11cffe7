"""``--journal`` and ``asyncbulk resume``: a command's run recorded, and finished after a stop.

A command given ``--journal PATH`` records its work in a SQLite journal: the library records
each batch and tracked job; the command adds a note of what it was asked (the input file, the
output files, whether to wait or acknowledge) to its submission, or, for a command that only
waits, a record of its own. The record stays pending until the command has reported, so a
command stopped at any point (Ctrl-C, a kill, a crash) is finished by ``asyncbulk resume``:
batches left on the wire are settled, the jobs are waited for, and the summary and the
``--failed-out`` / ``--unknown-out`` files are written as the command would have.
"""

from __future__ import annotations

import shlex
import time
import uuid
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

from asyncbulk import AsyncBulkError, SubmissionError, ValidationError
from asyncbulk._journal import SQLiteJournal, SubmissionRecord
from asyncbulk._journal._protocol import finish_jobs
from asyncbulk.chakra import BulkSubmission, ChakraClient
from asyncbulk.cli._chakra import (
    _show_update,
    _update_report,
    _write_line,
    job_command,
)
from asyncbulk.cli._input import UpdateFile
from asyncbulk.cli._runner import EXIT_FAILED, EXIT_OK
from asyncbulk.cli._zefort import _describe, task_json, wait_command

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence
    from pathlib import Path
    from types import TracebackType

    from asyncbulk._handles import BatchRecord, Origin
    from asyncbulk._journal import JobKind, Journal, Pending
    from asyncbulk.chakra import SubmissionSummary
    from asyncbulk.cli._output import Output
    from asyncbulk.cli._runner import Ledger
    from asyncbulk.zefort import ZefortClient

__all__ = ["CommandJournal", "resume_command", "resume_hint", "run_journaled", "wait_record"]

C = TypeVar("C", "ChakraClient", "ZefortClient")

#: The target of the records a waiting command writes for itself.
_WAIT_TARGET: Final = "asyncbulk-cli"


class CommandJournal:
    """A SQLite journal whose submissions stay pending until the command has reported.

    The library ends a submission once every batch is final; a command is not done then (it
    still waits, summarises and writes its files), so the end is kept back until `finish`.

    Args:
        path: the journal file.
    """

    def __init__(self, path: str | Path) -> None:
        """Open (on entering) the journal at `path`."""
        self.inner = SQLiteJournal(path)
        self._kept: list[str] = []

    async def finish(self) -> None:
        """The command has reported: its submissions leave the pending work."""
        for submission_id in self._kept:
            await self.inner.end_submission(submission_id)
        self._kept.clear()
        await self.inner.flush()

    async def begin_submission(
        self, submission: SubmissionRecord, *, durable: bool = False
    ) -> None:
        """See `Journal.begin_submission`."""
        await self.inner.begin_submission(submission, durable=durable)

    async def record_batch(
        self, submission_id: str, batch: BatchRecord, *, durable: bool = False
    ) -> None:
        """See `Journal.record_batch`."""
        await self.inner.record_batch(submission_id, batch, durable=durable)

    async def end_submission(self, submission_id: str, *, durable: bool = False) -> None:  # noqa: ARG002 -- ended by `finish`
        """Keep the submission pending until `finish`."""
        self._kept.append(submission_id)

    async def add_jobs(
        self, origin: Origin, kind: JobKind, job_ids: Sequence[str], *, durable: bool = False
    ) -> None:
        """See `Journal.add_jobs`."""
        await self.inner.add_jobs(origin, kind, job_ids, durable=durable)

    async def finish_job(self, origin: Origin, job_id: str, *, durable: bool = False) -> None:
        """See `Journal.finish_job`."""
        await self.inner.finish_job(origin, job_id, durable=durable)

    async def finish_jobs(
        self, origin: Origin, job_ids: Sequence[str], *, durable: bool = False
    ) -> None:
        """See `Journal.finish_job`: through the inner journal's bulk form when it has one."""
        await finish_jobs(self.inner, origin, job_ids, durable=durable)

    async def deliver_job(self, origin: Origin, job_id: str, *, durable: bool = False) -> None:
        """See `Journal.deliver_job`."""
        await self.inner.deliver_job(origin, job_id, durable=durable)

    async def pending(self, origin: Origin) -> Pending:
        """See `Journal.pending`."""
        return await self.inner.pending(origin)

    async def flush(self) -> None:
        """See `Journal.flush`."""
        await self.inner.flush()

    async def aclose(self) -> None:
        """See `Journal.aclose`."""
        await self.inner.aclose()

    async def __aenter__(self) -> Self:
        """Open the journal."""
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the journal (what was kept pending stays pending)."""
        await self.inner.__aexit__(exc_type, exc, traceback)


def resume_hint(
    journal: Path, *, vendor: str, base_url: str | None, allow_insecure_http: bool
) -> str:
    """The one command that finishes a run recorded in `journal`."""
    words = ["asyncbulk", "resume", "--journal", str(journal)]
    if base_url:
        words += [f"--{vendor}-base-url", base_url]
    if allow_insecure_http:
        words.append("--allow-insecure-http")
    return shlex.join(words)


async def wait_record(
    journal: Journal, origin: Origin, note: Mapping[str, Any]
) -> SubmissionRecord:
    """Record, on disk, that a command waits for jobs or tasks (a record with no batches)."""
    record = SubmissionRecord(
        id=uuid.uuid4().hex,
        origin=origin,
        target=_WAIT_TARGET,
        operation="wait",
        request={"note": dict(note)},
    )
    await journal.begin_submission(record, durable=True)
    return record


async def run_journaled(
    path: Path | None,
    make: Callable[[Journal | None], C],
    run: Callable[[C, dict[str, Any] | None], Awaitable[int]],
    note: dict[str, Any],
    *,
    waits_only: bool,
) -> int:
    """Run a command, journaled in `path` when given, its run ended once it has reported.

    A command that submits puts `note` on its submission; one that only waits records it on
    a record of its own. An error the command reports ends the run too; a stop leaves it
    pending, for ``asyncbulk resume``.
    """
    if path is None:
        return await run(make(None), None)
    async with CommandJournal(path) as journal:
        client = make(journal)
        origin = client._origin  # noqa: SLF001 -- the account the records belong to
        record = await wait_record(journal.inner, origin, note) if waits_only else None
        try:
            code = await run(client, None if waits_only else note)
        except AsyncBulkError:
            await _end(journal, record)
            raise
        await _end(journal, record)
        return code


async def _end(journal: CommandJournal, record: SubmissionRecord | None) -> None:
    if record is not None:
        await journal.inner.end_submission(record.id)
    await journal.finish()


def _note(record: SubmissionRecord) -> dict[str, Any]:
    note = (record.request or {}).get("note")
    return dict(note) if isinstance(note, dict) else {}


async def resume_command(
    journal_path: Path,
    *,
    chakra: ChakraClient | None,
    zefort: ZefortClient | None,
    output: Output,
    ledger: Ledger,
) -> int:
    """Finish every command the journal holds unfinished for these clients; the worst status.

    Raises:
        ValidationError: neither client is given (no credential).
    """
    if chakra is None and zefort is None:
        raise ValidationError(
            "--token", "give CHAKRA_TOKEN/--token or ZEFORT_API_KEY/--api-key to resume with"
        )
    status = EXIT_OK
    finished = 0
    for client in (chakra, zefort):
        if client is None:
            continue
        async with client:
            pending = await client.resume_pending()
            for record in pending.submissions:
                note = _note(record)
                command = note.get("command")
                output.note(f"asyncbulk: resuming {command or 'a submission'}")
                if command == "chakra update" and isinstance(client, ChakraClient):
                    code = await _resume_update(client, record, note, output)
                elif command == "zefort bulk-update" and not isinstance(client, ChakraClient):
                    code = await _resume_bulk_update(client, record, note, output)
                elif command == "chakra job" and isinstance(client, ChakraClient):
                    code = await job_command(
                        _Borrowed(client),  # type: ignore[arg-type]
                        job_ids=note["job_ids"],
                        wait=True,
                        wait_seconds=note.get("timeout"),
                        failed_out=None,
                        output=output,
                        ledger=ledger,
                    )
                elif command == "zefort wait" and not isinstance(client, ChakraClient):
                    code = await wait_command(
                        _Borrowed(client),  # type: ignore[arg-type]
                        task_ids=note["task_ids"],
                        acknowledge=bool(note.get("acknowledge")),
                        wait_seconds=note.get("timeout"),
                        output=output,
                        ledger=ledger,
                    )
                else:
                    continue
                await client.journal.end_submission(record.id)
                await client.journal.flush()
                finished += 1
                status = max(status, code)
    if not finished:
        output.show(f"Nothing to resume in {journal_path}.")
    return status


class _Borrowed:
    """A client lent to a command that closes what it is given: closing it does nothing."""

    def __init__(self, client: ChakraClient | ZefortClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None


async def _resume_update(
    client: ChakraClient, record: SubmissionRecord, note: Mapping[str, Any], output: Output
) -> int:
    """Finish ``chakra update``: wait for the jobs, summarise, write the files."""
    started = time.monotonic()
    submission = await client.resume(record.handle())
    assert isinstance(submission, BulkSubmission)  # noqa: S101 -- a submission's handle
    summary = None
    if note.get("wait") and submission.jobs:
        async for _ in client.track_jobs(submission.job_ids, timeout=note.get("timeout")):
            pass
        summary = await submission.summary()
    problem = None
    if submission.count != submission.total:
        problem = SubmissionError(
            f"{submission.total - submission.count:,} of {submission.total:,} updates not accepted",
            submission=submission,
            errors=list(submission.failed_batches),
        )
    report = _update_report(submission, summary, problem, time.monotonic() - started)
    source = UpdateFile(
        note["file"], format=note.get("format"), key=note.get("key"),
        infer_types=bool(note.get("infer_types")),
    )  # fmt: skip
    if note.get("failed_out"):
        written = _write_failed(note["failed_out"], source, submission, summary)
        report["failed_out"] = {"path": note["failed_out"], "items": written}
    if note.get("unknown_out"):
        written = _write_positions(note["unknown_out"], source, submission, {"unknown"})
        report["unknown_out"] = {"path": note["unknown_out"], "items": written}
    if output.json_mode:
        output.json(report)
    else:
        _show_update(output, submission, summary, problem, report)
    ok = problem is None and (summary is None or summary.ok)
    return EXIT_OK if ok else EXIT_FAILED


def _write_positions(
    path: str, source: UpdateFile, submission: BulkSubmission, states: set[str]
) -> int:
    """Write the input's items whose batch ended in one of `states`, read again by position."""
    wanted = [b for b in submission.outcomes if b.state in states]
    count = 0
    if source.name == "<stdin>" or not wanted:
        # Standard input cannot be read again: only what the server recorded is written.
        return 0
    with source, open(path, "w", encoding="utf-8") as out:  # noqa: PTH123 -- a path from the note
        for position, update in enumerate(source):
            batch = next((b for b in wanted if position in b.positions), None)
            if batch is not None:
                _write_line(out, update, batch.state, batch.message or "", position=position)
                count += 1
    return count


def _write_failed(
    path: str, source: UpdateFile, submission: BulkSubmission, summary: SubmissionSummary | None
) -> int:
    """Rejected and unsent items from the input; failed entries rebuilt from the server's record.

    The journal holds no items, so a failed entry cannot be matched to its line of the input:
    it is written as the server recorded it (process id and change), noted as such.
    """
    count = _write_positions(path, source, submission, {"rejected", "not_sent"})
    with open(path, "a", encoding="utf-8") as out:  # noqa: PTH123 -- a path from the note
        for failure in () if summary is None else (*summary.invalid, *summary.failed):
            entry = failure.entry
            rebuilt: dict[str, Any] = {"update": dict(entry.process_update or {})}
            if entry.process_id:
                rebuilt["id"] = entry.process_id
            note = (
                f"from job {failure.job_id} (positions {failure.positions.start}-"
                f"{failure.positions.stop - 1}), rebuilt from its entry"
            )
            _write_line(out, rebuilt, entry.completion_status or "", failure.message, note)
            count += 1
    return count


async def _resume_bulk_update(
    client: ZefortClient, record: SubmissionRecord, note: Mapping[str, Any], output: Output
) -> int:
    """Finish ``zefort bulk-update``: its task settled, waited for and acknowledged as asked."""
    (batch,) = record.batches
    if batch.state != "accepted" or batch.job_id is None:
        output.error(f"the bulk update is {batch.state}: {batch.error}")
        return EXIT_FAILED
    task = await client.get_task(batch.job_id)
    if note.get("wait"):
        task = await client.wait_for_task(
            batch.job_id, timeout=note.get("timeout"), acknowledge=bool(note.get("acknowledge"))
        )
    if output.json_mode:
        output.json(task_json(task))
    else:
        output.show(_describe(task))
    return EXIT_FAILED if task.is_failed else EXIT_OK
