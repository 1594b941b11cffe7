"""Running a command's async work: signals, exit statuses, and never losing a submitted id."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import TYPE_CHECKING, Final

import anyio

from asyncbulk import (
    AsyncBulkError,
    AuthenticationError,
    JobTimeoutError,
    NotFoundError,
    ValidationError,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from asyncbulk.cli._output import Output

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "Ledger", "run_async"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130
_EXIT_TERMINATED: Final = 143
_STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


class Ledger:
    """The ids a command has submitted, and those it is still waiting for.

    Filled as the work goes, so that whatever stops it (Ctrl-C, an error, a deadline) the user
    is told every job and task already submitted: nothing submitted is lost track of.

    Args:
        list_ids: print the ids themselves; without, only how many (the demo's ids belong to a
            simulator that stops with it, and ten thousand of them would flood the terminal).
    """

    def __init__(self, *, list_ids: bool = True) -> None:
        """Start empty."""
        self.list_ids = list_ids
        self.jobs: list[str] = []
        self.tasks: list[str] = []
        self._waiting: dict[str, None] = {}
        #: The command that finishes the run, when it is journaled (then no ids are listed).
        self.resume: str | None = None

    def submitted_job(self, job_id: str) -> None:
        """Note a Chakra background job just submitted."""
        self.jobs.append(job_id)

    def submitted_task(self, task_id: str) -> None:
        """Note a Zefort task just submitted."""
        self.tasks.append(task_id)

    def waiting(self, ids: Iterable[str]) -> None:
        """Note ids now waited for (in the order given, each once)."""
        self._waiting.update(dict.fromkeys(ids))

    def finished(self, job_id: str) -> None:
        """Note that a waited-for id has finished."""
        self._waiting.pop(job_id, None)

    @property
    def unfinished(self) -> list[str]:
        """The ids waited for that have not finished."""
        return list(self._waiting)

    def as_json(self) -> dict[str, list[str] | int | str]:
        """The ids (or their counts, without `list_ids`), for a JSON report."""
        report = {
            "chakra_jobs": self.jobs,
            "zefort_tasks": self.tasks,
            "unfinished": self.unfinished,
        }
        if self.resume is not None:
            return {"resume": self.resume}
        if self.list_ids:
            return dict(report)
        return {name: len(ids) for name, ids in report.items()}

    def tell(self, output: Output) -> None:
        """Print the ids on stderr, one category a line, ready to paste into another command.

        Without `list_ids`, one line of counts; for a journaled run, the command that
        finishes it.
        """
        if self.resume is not None:
            if self.jobs or self.tasks or self.unfinished:
                output.note(f"asyncbulk: to finish this run: {self.resume}")
            return
        categories = (
            ("Chakra jobs submitted", self.jobs),
            ("Zefort tasks submitted", self.tasks),
            ("still unfinished", self.unfinished),
        )
        if not self.list_ids:
            counts = [f"{label}: {len(ids):,}" for label, ids in categories if ids]
            if counts:
                output.note("; ".join(counts))
            return
        for label, ids in categories:
            if ids:
                output.note(f"{label} ({len(ids)}): {' '.join(ids)}")


class _Stopped(Exception):  # noqa: N818 -- a signal, not an error
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


async def _supervise(work: Callable[[], Awaitable[int]]) -> int:
    # The first SIGINT or SIGTERM cancels the work, so every client and tracker unwinds through
    # its own `async with`; handing the signal back to Python's default at once means a second
    # Ctrl-C during that cleanup raises KeyboardInterrupt, for a user who will not wait.
    loop = asyncio.get_running_loop()
    received: list[int] = []
    with anyio.CancelScope() as scope:

        def stop(signum: int) -> None:
            received.append(signum)
            scope.cancel()
            for each in _STOP_SIGNALS:
                loop.remove_signal_handler(each)

        for signum in _STOP_SIGNALS:
            loop.add_signal_handler(signum, stop, signum)
        try:
            status = await work()
        finally:
            for signum in _STOP_SIGNALS:
                loop.remove_signal_handler(signum)
    if received:
        raise _Stopped(received[0])
    return status


def _message(error: BaseException) -> tuple[int, str]:
    """The exit status and the one-line message for an error that ended a command."""
    if isinstance(error, ValidationError):
        return EXIT_USAGE, str(error)
    if isinstance(error, AuthenticationError):
        return EXIT_USAGE, f"{error} (check the token or API key)"
    if isinstance(error, NotFoundError):
        return EXIT_USAGE, f"{error} (check the id and the base URL)"
    if isinstance(error, JobTimeoutError):
        return EXIT_FAILED, f"{error}"
    return EXIT_FAILED, f"{type(error).__name__}: {error}"


def _leaf(error: BaseException) -> BaseException:
    # Task groups wrap what their tasks raise; the user wants the error itself.
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def run_async(
    work: Callable[[], Awaitable[int]],
    *,
    output: Output,
    ledger: Ledger,
    stop_ok: bool = False,
) -> int:
    """Run a command's async work and turn how it ended into an exit status.

    An error becomes one line on stderr (no traceback) and status 2 (bad input, credentials or
    id) or 1; Ctrl-C stops the work cleanly and gives 130. In every case the ids in `ledger`
    are printed first, on stderr, and in ``--json`` mode as a JSON document on stdout too.

    Args:
        work: the command's coroutine function; it returns the exit status.
        output: the command's output streams.
        ledger: what the work has submitted so far.
        stop_ok: a signal is the normal way to end the work (a server): status 0.
    """
    try:
        return anyio.run(_supervise, work)
    except (_Stopped, KeyboardInterrupt) as stop:
        signum = stop.signum if isinstance(stop, _Stopped) else signal.SIGINT
        if stop_ok:
            output.note(f"asyncbulk: stopped by {signal.Signals(signum).name}")
            return EXIT_OK
        status = EXIT_INTERRUPTED if signum == signal.SIGINT else _EXIT_TERMINATED
        output.note(f"asyncbulk: interrupted by {signal.Signals(signum).name}")
        ledger.tell(output)
        if output.json_mode:
            output.json({"interrupted": True, **ledger.as_json()})
        return status
    except BrokenPipeError:
        # The reader of stdout went away (`| head`): stop quietly, as Unix tools do, and keep
        # Python from failing again as it flushes stdout on exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except (AsyncBulkError, BaseExceptionGroup) as exc:
        error = _leaf(exc)
        if not isinstance(error, AsyncBulkError):
            raise
        status, message = _message(error)
        output.error(message)
        ledger.tell(output)
        if output.json_mode:
            output.json(
                {"error": {"kind": type(error).__name__, "message": message}, **ledger.as_json()}
            )
        return status
