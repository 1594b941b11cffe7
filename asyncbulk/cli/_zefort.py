"""``asyncbulk zefort ...``: contract bulk updates and the tasks that carry them out."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Final

from asyncbulk import JobTimeoutError, NotFoundError, ValidationError
from asyncbulk.cli._output import table
from asyncbulk.cli._progress import LiveProgress
from asyncbulk.cli._runner import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from asyncbulk.zefort import ZefortClient

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from asyncbulk import TrackerStats
    from asyncbulk._journal import Journal
    from asyncbulk.cli._output import Output
    from asyncbulk.cli._runner import Ledger
    from asyncbulk.zefort import ZefortTask

__all__ = [
    "bulk_update_command",
    "read_task_ids",
    "task_json",
    "tasks_command",
    "wait_command",
    "zefort_client",
]

_SHOWN_FAILURES: Final = 10
_TABLE_CHUNK: Final = 500


def zefort_client(
    api_key: str | None,
    base_url: str | None,
    *,
    allow_insecure_http: bool = False,
    journal: Journal | None = None,
) -> ZefortClient:
    """A client from the options (or ZEFORT_API_KEY and ZEFORT_BASE_URL).

    Raises:
        ValidationError: no API key, or a bad URL.
    """
    if not api_key:
        raise ValidationError(
            "--api-key", "no Zefort API key: set ZEFORT_API_KEY or pass --api-key"
        )
    if base_url:
        return ZefortClient(
            api_key, base_url=base_url, allow_insecure_http=allow_insecure_http, journal=journal
        )
    return ZefortClient(api_key, journal=journal)


def read_task_ids(words: Iterable[str]) -> list[str]:
    """Task ids from arguments or lines of text (separated by blanks), each once, in order."""
    ids: dict[str, None] = {}
    for text in words:
        ids.update(dict.fromkeys(text.split()))
    return list(ids)


def task_json(task: ZefortTask) -> dict[str, Any]:
    """A task as one JSON object: the main fields, and the task as the server sent it."""
    return {
        "id": task.id,
        "backend_status": task.backend_status,
        "backend_status_info": task.backend_status_info,
        "frontend_status": task.frontend_status,
        "is_done": task.is_done,
        "is_failed": task.is_failed,
        "affected_contracts": task.affected_contracts,
        "raw": dict(task.raw),
    }


def _describe(task: ZefortTask) -> str:
    state = task.backend_status + (
        f": {task.backend_status_info}" if task.backend_status_info else ""
    )
    contracts = task.affected_contracts
    if contracts is not None:
        state += f" ({len(contracts):,} contract{'s' if len(contracts) != 1 else ''} changed)"
    if task.is_acknowledged:
        state += ", acknowledged"
    return f"{task.id}  {state}"


async def bulk_update_command(
    client: ZefortClient,
    *,
    attributes: dict[str, Any] | None,
    status: str | None,
    search: dict[str, Any],
    wait: bool,
    acknowledge: bool,
    wait_seconds: float | None,
    output: Output,
    ledger: Ledger,
    journal_note: dict[str, Any] | None = None,
) -> int:
    """Start one bulk update; with `wait`, follow its task to the end."""
    async with client:
        task = await client.bulk_update_contracts(
            attributes=attributes, status=status, search=search, journal_note=journal_note
        )
        ledger.submitted_task(task.id)
        if wait:
            ledger.waiting([task.id])
            task = await client.wait_for_task(
                task.id, timeout=wait_seconds, acknowledge=acknowledge
            )
            ledger.finished(task.id)
    if output.json_mode:
        output.json(task_json(task))
    else:
        output.show(_describe(task))
        if not wait:
            output.show(f"Follow it with: asyncbulk zefort wait {task.id} --ack")
    return EXIT_FAILED if task.is_failed else EXIT_OK


async def wait_command(
    client: ZefortClient,
    *,
    task_ids: Sequence[str],
    acknowledge: bool,
    wait_seconds: float | None,
    output: Output,
    ledger: Ledger,
) -> int:
    """Follow tasks until each has finished, printing each as it does; status 1 if any failed."""
    started = time.monotonic()
    progress = LiveProgress(output.stderr)
    done = progress.add("tasks finished", total=len(task_ids), rate=True)
    progress.add("retries", read=lambda: client.stats.retries)
    finished: list[ZefortTask] = []
    timed_out: JobTimeoutError | None = None
    missing: list[str] = []
    unacknowledged: tuple[str, ...] = ()

    def moved(stats: TrackerStats) -> None:
        done.completed = stats.finished

    ledger.waiting(task_ids)
    async with client:
        with progress:
            try:
                async with client.track_tasks(
                    task_ids, timeout=wait_seconds, acknowledge=acknowledge, on_progress=moved
                ) as tasks:
                    try:
                        async for task in tasks:
                            ledger.finished(task.id)
                            finished.append(task)
                            if not output.json_mode:
                                output.stdout.print(_describe(task), markup=False)
                    finally:
                        unacknowledged = tasks.unacknowledged
            except JobTimeoutError as exc:
                timed_out = exc
            except NotFoundError:
                missing = await _missing(client, ledger.unfinished)
                for task_id in missing:
                    ledger.finished(task_id)
    counts = Counter(task.backend_status for task in finished)
    failed = [task for task in finished if task.is_failed]
    if output.json_mode:
        output.json(
            {
                "tasks": [task_json(task) for task in finished],
                "counts": dict(counts),
                "unfinished": ledger.unfinished,
                "missing": missing,
                "unacknowledged": list(unacknowledged),
                "ok": not failed and timed_out is None and not missing and not unacknowledged,
                "seconds": round(time.monotonic() - started, 3),
            }
        )
    else:
        summary = ", ".join(f"{n:,} {status}" for status, n in counts.most_common())
        output.show(f"{len(finished):,} of {len(task_ids):,} tasks finished: {summary or 'none'}.")
    _tell_unacknowledged(output, unacknowledged)
    if missing:
        output.error(
            f"no such task{'s' if len(missing) > 1 else ''}: "
            f"{' '.join(missing)} (check the ids and ZEFORT_BASE_URL)"
        )
        return EXIT_USAGE
    if timed_out is not None:
        output.error(f"{len(ledger.unfinished):,} tasks still unfinished after the deadline")
        ledger.tell(output)
    ok = not failed and timed_out is None and not unacknowledged
    return EXIT_OK if ok else EXIT_FAILED


def _tell_unacknowledged(output: Output, unacknowledged: Sequence[str]) -> None:
    """Name the tasks taken whose acknowledgement failed: they stay on the pending list."""
    if unacknowledged:
        output.error(
            f"{len(unacknowledged):,} finished but not acknowledged (still pending on the "
            f"server): {' '.join(unacknowledged[:20])}"
        )


async def _missing(client: ZefortClient, task_ids: Sequence[str]) -> list[str]:
    """Which of the tasks not delivered the server says do not exist, asked one by one."""
    missing = []
    for task_id in task_ids:
        try:
            await client.get_task(task_id)
        except NotFoundError:
            missing.append(task_id)
    return missing


async def tasks_command(client: ZefortClient, *, output: Output) -> int:
    """List the pending (unacknowledged) tasks: a table, or JSON Lines with ``--json``."""
    columns = ("task", "backend", "frontend", "info")
    chunk: list[tuple[str, ...]] = []
    shown = 0

    def flush() -> None:
        grid = table(None, columns, chunk)
        grid.show_header = shown == 0
        output.stdout.print(grid)

    async with client:
        async for task in client.iter_tasks():
            if output.json_mode:
                output.json_lines((dict(task.raw),))
                continue
            chunk.append(
                (task.id, task.backend_status, task.frontend_status, task.backend_status_info)
            )
            if len(chunk) == _TABLE_CHUNK:
                flush()
                shown += len(chunk)
                chunk.clear()
    if not output.json_mode:
        if chunk:
            flush()
        shown += len(chunk)
        output.note(f"{shown:,} pending task{'s' if shown != 1 else ''}")
    return EXIT_OK
