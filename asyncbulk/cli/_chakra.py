"""``asyncbulk chakra ...``: bulk updates from a file, jobs, and their entries."""

from __future__ import annotations

import csv
import json
import sys
import time
from typing import IO, TYPE_CHECKING, Any, Final

from asyncbulk import AuthenticationError, NotFoundError, SubmissionError, ValidationError
from asyncbulk.chakra import ENTRY_STATUSES, BulkSubmission, ChakraClient, ProcessUpdate
from asyncbulk.cli._output import table
from asyncbulk.cli._progress import LiveProgress
from asyncbulk.cli._runner import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from pathlib import Path

    from asyncbulk import TrackerStats
    from asyncbulk._journal import Journal
    from asyncbulk.chakra import (
        BackgroundJob,
        FailedEntry,
        JobEntry,
        JobEntryPages,
        SubmissionSummary,
    )
    from asyncbulk.cli._input import UpdateFile
    from asyncbulk.cli._output import Output
    from asyncbulk.cli._progress import Meter
    from asyncbulk.cli._runner import Ledger

__all__ = [
    "chakra_client",
    "entries_command",
    "entry_row",
    "failure_rows",
    "job_command",
    "update_command",
]

_FAILED_STATUSES: Final = ("INVALID", "ERROR", "CANCELLED")
_SHOWN_FAILURES: Final = 10
_SHOWN_JOBS: Final = 10
#: Entry statuses of work not yet done; every other status is an entry the job is done with.
_UNDONE: Final = frozenset({"NOT_STARTED", "IN_PROGRESS"})
_ENTRY_COLUMNS: Final = (
    "id",
    "completion_status",
    "completion_message",
    "validation_status",
    "validation_message",
    "process_id",
    "procedure_id",
    "process_update",
    "api_type",
    "created_at",
    "updated_at",
)
# A table is printed in pieces of this many rows, so a job of any size streams in bounded memory.
_TABLE_CHUNK: Final = 500


def chakra_client(
    token: str | None,
    base_url: str | None,
    *,
    allow_insecure_http: bool = False,
    journal: Journal | None = None,
) -> ChakraClient:
    """A client from the options (or CHAKRA_TOKEN and CHAKRA_BASE_URL).

    Raises:
        ValidationError: no token, or a bad URL.
    """
    if not token:
        raise ValidationError("--token", "no Chakra token: set CHAKRA_TOKEN or pass --token")
    if base_url:
        return ChakraClient(
            token, base_url=base_url, allow_insecure_http=allow_insecure_http, journal=journal
        )
    return ChakraClient(token, journal=journal)


def _failed_count(counts: dict[str, int] | Any) -> int:
    return sum(counts.get(status, 0) for status in _FAILED_STATUSES)


def _job_json(job: BackgroundJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "completion_status": job.completion_status,
        "is_finished": job.is_finished,
        "is_failed": job.is_failed,
        "status_counts": dict(job.status_counts),
        "created_at": job.created_at,
        "started_at": job.started_at,
        "completed_at": job.completed_at,
    }


def _counts_table(title: str, counts: dict[str, int] | Any) -> Any:
    ordered = sorted(counts.items(), key=lambda kv: (kv[0] not in ENTRY_STATUSES, kv[0]))
    return table(title, ("status", "entries"), ordered, numeric=(1,))


def _items(positions: range) -> str:
    """Input positions as the 1-based item numbers a person reads (``1-1000``)."""
    first, last = positions.start + 1, positions.stop
    return f"{first:,}" if first == last else f"{first:,}-{last:,}"


def failure_rows(failures: Iterable[FailedEntry], limit: int) -> list[tuple[str, ...]]:
    """The first `limit` failures as table rows: positions, status, message, process."""
    rows: list[tuple[str, ...]] = []
    for failure in failures:
        if len(rows) == limit:
            break
        rows.append(
            (
                _items(failure.positions),
                failure.entry.completion_status or "",
                failure.message or "(no message)",
                failure.entry.process_id or "",
            )
        )
    return rows


async def update_command(
    client: ChakraClient,
    *,
    procedure: str,
    source: UpdateFile,
    total: int,
    batch_size: int,
    wait: bool,
    failed_out: Path | None,
    wait_seconds: float | None,
    output: Output,
    ledger: Ledger,
    unknown_out: Path | None = None,
    journal_note: dict[str, Any] | None = None,
) -> int:
    """Send a file of updates in batches; with `wait`, follow the jobs and report what failed.

    Raises:
        AuthenticationError, NotFoundError, ValidationError: what stopped the submission
            (the credential, the procedure, a bad line), raised after the files are written,
            so the same mistake ends the command the same way whatever the file's size.
    """
    started = time.monotonic()
    progress = LiveProgress(output.stderr)
    sent = progress.add("updates sent", total=total, rate=True)
    finished = progress.add("jobs finished", total=0) if wait else None
    entries = progress.add("entries done", total=0, rate=True) if wait else None
    progress.add("retries", read=lambda: client.stats.retries)

    def accepted(job: BackgroundJob, positions: range) -> None:
        ledger.submitted_job(job.id)
        sent.completed += len(positions)

    async with client:
        with progress:
            try:
                submission = await client.bulk_update_processes(
                    procedure,
                    source,
                    batch_size=batch_size,
                    on_batch=accepted,
                    journal_note=journal_note,
                )
                problem: SubmissionError | None = None
            except SubmissionError as exc:
                submission, problem = exc.submission, exc
            fatal = _fatal(problem)
            summary = None
            if wait and submission.jobs and fatal is None:
                assert finished is not None  # noqa: S101 -- made above when waiting
                assert entries is not None  # noqa: S101 -- made above when waiting
                finished.total = len(submission.jobs)
                ledger.waiting(submission.job_ids)
                async with client.track_jobs(
                    submission.job_ids,
                    timeout=wait_seconds,
                    on_progress=_show_progress(finished, entries),
                ) as jobs:
                    async for job in jobs:
                        ledger.finished(job.id)
                summary = await submission.summary()
        written = (
            _write_failed(failed_out, submission, summary)
            if failed_out is not None and (summary is not None or fatal is not None)
            else None
        )
        unknown = _write_unknown(unknown_out, submission) if unknown_out is not None else None
    if fatal is not None:
        raise fatal
    report = _update_report(submission, summary, problem, time.monotonic() - started)
    if written is not None:
        report["failed_out"] = {"path": str(failed_out), "items": written}
    if unknown is not None:
        report["unknown_out"] = {"path": str(unknown_out), "items": unknown}
    if output.json_mode:
        output.json(report)
    else:
        _show_update(output, submission, summary, problem, report)
    if problem is not None:
        output.error(str(problem))
    ok = problem is None and (summary is None or summary.ok)
    return EXIT_OK if ok else EXIT_FAILED


def _show_progress(jobs: Meter, entries: Meter) -> Callable[[TrackerStats], None]:
    """An ``on_progress`` that moves the jobs and entries bars; entries move inside a job."""

    def moved(stats: TrackerStats) -> None:
        jobs.completed = stats.finished
        entries.total = sum(stats.entries.values())
        entries.completed = sum(
            count for status, count in stats.entries.items() if status not in _UNDONE
        )

    return moved


def _fatal(problem: SubmissionError | None) -> BaseException | None:
    """The error that stopped a submission when it is the caller's to fix (exit 2)."""
    stopped = None if problem is None else problem.stopped_by
    if isinstance(stopped, AuthenticationError | NotFoundError | ValidationError):
        return stopped
    return None


def _update_report(
    submission: BulkSubmission,
    summary: SubmissionSummary | None,
    problem: SubmissionError | None,
    seconds: float,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "procedure": submission.procedure,
        "submitted": submission.count,
        "jobs": [
            {"id": job.id, "positions": [r.start, r.stop]}
            for job in submission.jobs
            for r in (submission.batches[job.id],)
        ],
        "failed_batches": [
            {
                "positions": [b.positions.start, b.positions.stop],
                "error": str(b.error),
                "outcome_unknown": b.outcome_unknown,
            }
            for b in submission.failed_batches
        ],
        "unsent_from": submission.unsent_from,
        "batches": [
            {
                "positions": [b.start, b.stop],
                "state": b.state,
                "job_id": b.job_id,
                "error": b.message,
                "warnings": list(b.warnings),
            }
            for b in submission.outcomes
        ],
        "error": None if problem is None else str(problem),
        "seconds": round(seconds, 3),
    }
    if summary is not None:
        report["counts"] = dict(summary.counts)
        report["ok"] = summary.ok
        report["failures"] = [
            {
                "job_id": f.job_id,
                "positions": [f.positions.start, f.positions.stop],
                "status": f.entry.completion_status,
                "message": f.message,
                "process_id": f.entry.process_id,
                "entry_id": f.entry.id,
            }
            for f in (*summary.invalid, *summary.failed)
        ]
    return report


def _show_update(
    output: Output,
    submission: BulkSubmission,
    summary: SubmissionSummary | None,
    problem: SubmissionError | None,
    report: dict[str, Any],
) -> None:
    jobs = submission.jobs
    output.show(
        f"Submitted {submission.count:,} updates to {submission.procedure} in {len(jobs):,} "
        f"background job{'s' if len(jobs) != 1 else ''} ({report['seconds']:.1f} s)."
    )
    rows = [
        (job.id, _items(r)) for job in jobs[:_SHOWN_JOBS] for r in (submission.batches[job.id],)
    ]
    if len(jobs) > _SHOWN_JOBS:
        rows.append((f"... and {len(jobs) - _SHOWN_JOBS:,} more (--json lists all)", ""))
    output.show(table(None, ("job", "items"), rows))
    for outcome in submission.outcomes:
        if outcome.warnings:
            output.show(f"Items {_items(outcome.positions)}: {'; '.join(outcome.warnings)}")
    if problem is not None:
        for batch in submission.failed_batches:
            unknown = " (outcome unknown)" if batch.outcome_unknown else ""
            output.show(f"Not accepted: items {_items(batch.positions)}{unknown}: {batch.error}")
    if summary is None:
        output.show("Follow them with: asyncbulk chakra job JOB_ID --wait")
        return
    output.show(_counts_table("Entries per status", summary.counts))
    failures = (*summary.invalid, *summary.failed)
    if failures:
        output.show(
            table(
                f"First failures ({min(len(failures), _SHOWN_FAILURES)} of {len(failures):,})",
                ("items", "status", "message", "process"),
                failure_rows(failures, _SHOWN_FAILURES),
            )
        )
    if "failed_out" in report:
        written = report["failed_out"]
        output.show(f"Wrote {written['items']:,} updates to resubmit to {written['path']}.")


def _write_failed(path: Path, submission: BulkSubmission, summary: SubmissionSummary | None) -> int:
    """Write every update that certainly did not take effect, as JSON Lines to resubmit.

    Built from the submission's outcome of each input position, in input order, never by
    matching changes: each line is the input's own item, with ``_position`` (its 0-based
    input position), ``_status`` (``rejected``, ``not_sent``, or the entry's ERROR, INVALID
    or CANCELLED) and ``_error``, notes that reading ignores. A position whose batch's
    outcome is unknown is never written here (see ``--unknown-out``). A job whose entries
    could not be matched to its items one for one has its failed entries written rebuilt
    from the server's record (process id and change), noted as such.
    """
    count = 0
    unmatched: set[str] = set()
    with path.open("w", encoding="utf-8") as out:
        for outcome in submission.positions():
            status: str
            if outcome.state in {"rejected", "not_sent"}:
                status = outcome.state
            elif outcome.state == "accepted" and outcome.entry_status in _FAILED_STATUSES:
                status = outcome.entry_status
            else:
                if (
                    outcome.state == "accepted"
                    and outcome.entry_status is None
                    and outcome.job_id is not None
                ):
                    unmatched.add(outcome.job_id)
                continue
            _write_line(out, outcome.item, status, outcome.message or "", position=outcome.position)
            count += 1
        for failure in () if summary is None else (*summary.invalid, *summary.failed):
            if failure.job_id in unmatched:
                entry = failure.entry
                rebuilt: dict[str, Any] = {"update": dict(entry.process_update or {})}
                if entry.process_id:
                    rebuilt["id"] = entry.process_id
                note = (
                    f"from job {failure.job_id}, whose entries could not be matched to "
                    f"positions {failure.positions.start}-{failure.positions.stop - 1}"
                )
                _write_line(out, rebuilt, entry.completion_status or "", failure.message, note)
                count += 1
    return count


def _write_unknown(path: Path, submission: BulkSubmission) -> int:
    """Write the updates whose outcome is unknown (never resubmit them blindly): JSON Lines."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for outcome in submission.positions():
            if outcome.state == "unknown":
                _write_line(
                    out, outcome.item, "unknown", outcome.message or "", position=outcome.position
                )
                count += 1
    return count


def _write_line(
    out: IO[str],
    update: ProcessUpdate | dict[str, Any],
    status: str,
    message: str,
    note: str | None = None,
    *,
    position: int | None = None,
) -> None:
    item = update.to_wire() if isinstance(update, ProcessUpdate) else dict(update)
    if position is not None:
        item["_position"] = position
    item = {**item, "_status": status, "_error": message}
    if note:
        item["_note"] = note
    out.write(json.dumps(item, ensure_ascii=False) + "\n")


async def job_command(
    client: ChakraClient,
    *,
    job_ids: Sequence[str],
    wait: bool,
    wait_seconds: float | None,
    failed_out: Path | None,
    output: Output,
    ledger: Ledger,
) -> int:
    """Show background jobs; with `wait`, once each has finished (tracked together).

    With `failed_out`, the entries of every job that failed (INVALID, ERROR, CANCELLED) are
    written there as JSON Lines to resubmit.
    """
    async with client:
        if wait:
            ledger.waiting(job_ids)
            finished: dict[str, BackgroundJob] = {}
            progress = LiveProgress(output.stderr)
            done = progress.add("jobs finished", total=len(job_ids))
            entries = progress.add("entries done", total=0, rate=True)
            with progress:
                async with client.track_jobs(
                    job_ids, timeout=wait_seconds, on_progress=_show_progress(done, entries)
                ) as tracked:
                    async for job in tracked:
                        ledger.finished(job.id)
                        finished[job.id] = job
            jobs = [finished[job_id] for job_id in job_ids]
        else:
            jobs = [await client.get_background_job(job_id) for job_id in job_ids]
        written = (
            None if failed_out is None else await _write_failed_entries(client, failed_out, jobs)
        )
    if output.json_mode:
        output.json_lines(_job_json(job) for job in jobs)
    else:
        for job in jobs:
            _show_job(output, job)
    if written is not None:
        output.note(f"Wrote {written:,} updates to resubmit to {failed_out}.")
    failed = any(job.is_failed or _failed_count(job.status_counts) for job in jobs)
    return EXIT_FAILED if failed else EXIT_OK


def _show_job(output: Output, job: BackgroundJob) -> None:
    state = "finished" if job.is_finished else "running"
    output.show(f"Job {job.id}: {job.completion_status or 'unknown'} ({state})")
    for label, when in (
        ("created", job.created_at),
        ("started", job.started_at),
        ("completed", job.completed_at),
    ):
        if when is not None:
            output.show(f"  {label}: {when.isoformat()}")
    if job.status_counts:
        output.show(_counts_table("Entries per status", job.status_counts))
    if _failed_count(job.status_counts):
        status = next(s for s in _FAILED_STATUSES if job.status_counts.get(s))
        output.show(f"See them with: asyncbulk chakra entries {job.id} --status {status}")


async def _write_failed_entries(
    client: ChakraClient, path: Path, jobs: Sequence[BackgroundJob]
) -> int:
    """Write each failed entry of `jobs` as the update it recorded, as JSON Lines to resubmit.

    An entry names its process by id when the server resolved one; one that does not (an
    unknown primary key) is written with a ``_note`` and no identifier, so that reading the
    file back stops at that line rather than guess.
    """
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for job in jobs:
            for status in _FAILED_STATUSES:
                if not job.status_counts.get(status):
                    continue
                async for entry in client.iter_job_entries(job.id, completion_status=status):
                    item: dict[str, Any] = {"update": dict(entry.process_update or {})}
                    note = None
                    if entry.process_id:
                        item["id"] = entry.process_id
                    else:
                        note = f"entry {entry.id} of job {job.id} names no process: add its id"
                    message = entry.validation_message or entry.completion_message or ""
                    _write_line(out, item, status, message, note)
                    count += 1
    return count


def entry_row(entry: JobEntry) -> dict[str, Any]:
    """An entry as a flat row (CSV and table columns)."""
    return {
        "id": entry.id,
        "completion_status": entry.completion_status,
        "completion_message": entry.completion_message,
        "validation_status": entry.validation_status,
        "validation_message": entry.validation_message,
        "process_id": entry.process_id,
        "procedure_id": entry.procedure_id,
        "process_update": None
        if entry.process_update is None
        else json.dumps(entry.process_update, ensure_ascii=False),
        "api_type": entry.api_type,
        "created_at": None if entry.created_at is None else entry.created_at.isoformat(),
        "updated_at": None if entry.updated_at is None else entry.updated_at.isoformat(),
    }


async def entries_command(
    client: ChakraClient,
    *,
    job_id: str,
    status: str | None,
    fmt: str,
    output: Output,
) -> int:
    """Stream a job's entries to stdout as JSON Lines (as the server sent them), CSV or a table."""
    async with client, client.iter_job_entry_pages(job_id, completion_status=status) as pages:
        if fmt == "jsonl":
            async for page in pages:
                output.json_lines(entry.raw for entry in page)
        elif fmt == "csv":
            writer = csv.DictWriter(sys.stdout, fieldnames=_ENTRY_COLUMNS, lineterminator="\n")
            writer.writeheader()
            async for page in pages:
                writer.writerows(entry_row(entry) for entry in page)
        else:
            await _entries_table(output, pages)
    sys.stdout.flush()
    return EXIT_OK


async def _entries_table(output: Output, pages: JobEntryPages) -> None:
    columns = ("entry", "status", "message", "process")
    chunk: list[tuple[str, ...]] = []
    shown = 0

    def flush() -> None:
        grid = table(None, columns, chunk)
        grid.show_header = shown == 0
        # Fixed widths keep the pieces of one long table aligned.
        for column, width in zip(grid.columns, (36, 11, None, 36), strict=True):
            column.min_width = column.max_width = width
            column.no_wrap = width is not None
        output.stdout.print(grid)

    async for page in pages:
        for entry in page:
            message = entry.validation_message or entry.completion_message or ""
            chunk.append((entry.id, entry.completion_status or "", message, entry.process_id or ""))
        if len(chunk) >= _TABLE_CHUNK:
            flush()
            shown += len(chunk)
            chunk.clear()
    if chunk or not shown:
        flush()
