"""The command tree: ``asyncbulk demo | simulate | chakra ... | zefort ...``."""

from __future__ import annotations

import errno
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import click

from asyncbulk import ValidationError, __version__
from asyncbulk.chakra import ENTRY_STATUSES
from asyncbulk.cli._chakra import chakra_client, entries_command, job_command, update_command
from asyncbulk.cli._demo import DemoPlan, run_demo
from asyncbulk.cli._input import FORMATS, UpdateFile
from asyncbulk.cli._output import Output
from asyncbulk.cli._runner import EXIT_OK, EXIT_USAGE, Ledger, run_async
from asyncbulk.cli._zefort import (
    bulk_update_command,
    read_task_ids,
    tasks_command,
    wait_command,
    zefort_client,
)
from asyncbulk.testing import Simulator

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["cli", "run"]

_CONTEXT: Final = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def json_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--json``: the result as JSON on stdout (progress and notes stay on stderr)."""
    return click.option(
        "--json",
        "json_mode",
        is_flag=True,
        help="Write the result as JSON on stdout (JSON Lines for streams).",
    )(command)


class _StderrHandler(logging.Handler):
    """Log lines on whatever `sys.stderr` is when they are written.

    Looked up each time, so that lines logged while progress bars are drawn go through rich's
    redirection and appear above the bars instead of tearing them.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 -- logging must never break the command
            self.handleError(record)


def _configure_logging(verbosity: int) -> None:
    logger = logging.getLogger("asyncbulk")
    logger.handlers[:] = [_StderrHandler()]
    logger.handlers[0].setFormatter(logging.Formatter("asyncbulk: %(levelname)s: %(message)s"))
    # Retries and 429 pauses are counted in the progress and summaries; -v shows each one.
    logger.setLevel((logging.ERROR, logging.WARNING, logging.DEBUG)[min(verbosity, 2)])
    logger.propagate = False


@click.group(context_settings=_CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="asyncbulk")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="-v logs each retry and warning on stderr; -vv every request.",
)
def cli(*, verbose: int) -> None:
    r"""Push bulk changes through ChakraHQ and Zefort, follow every job, get the failures back.

    Start with `asyncbulk demo`: it runs the whole flow offline against the built-in simulator.

    \b
    Exit status: 0 all succeeded; 1 some items or tasks failed (or the work met an error);
    2 usage, input or authentication error (nothing sent); 130 interrupted (the ids already
    submitted are printed on stderr).
    """
    _configure_logging(verbose)


@cli.command(context_settings=_CONTEXT)
@click.option(
    "--updates",
    type=click.IntRange(2, 1_000_000),
    default=20_000,
    show_default=True,
    help="Chakra process updates to send.",
)
@click.option(
    "--tasks",
    type=click.IntRange(1, 100_000),
    default=1_000,
    show_default=True,
    help="Zefort bulk updates to start and track (try 10000).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice.")
@json_option
def demo(*, updates: int, tasks: int, seed: int, json_mode: bool) -> int:
    """Run the whole flow offline, against the simulator started in-process.

    Sends Chakra process updates in batches (a few invalid on purpose), follows the jobs
    and streams their entries; starts Zefort bulk updates and tracks every task to the end
    with acknowledgement; all under injected 429s and 503s. Live progress on a terminal,
    then a summary. Status 0 when everything worked as designed.
    """
    output = Output(json_mode=json_mode)
    ledger = Ledger()
    plan = DemoPlan(updates=updates, tasks=tasks, seed=seed)

    async def work() -> int:
        return await run_demo(plan, output=output, ledger=ledger)

    return run_async(work, output=output, ledger=ledger)


@cli.command(context_settings=_CONTEXT)
@click.option(
    "--port",
    type=click.IntRange(0, 65534),
    default=8080,
    show_default=True,
    help="Chakra's port; Zefort listens on the next one. 0 picks free ports.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice.")
@json_option
def simulate(*, port: int, host: str, seed: int, json_mode: bool) -> int:
    """Serve the simulated Chakra and Zefort APIs until Ctrl-C.

    Prints the base URLs and credentials as the `export` lines the other commands read: paste
    them into another shell and run `asyncbulk chakra ...` or `asyncbulk zefort ...`. The
    simulator starts with the vendors' documentation examples: Chakra procedures
    `tele_sales` (primary key `lead_id`: EXT-TEST-143, LEAD-001, LEAD-910, LEAD-100) and
    `field_sales`, and Zefort contracts tagged "contracts of service", "nda", "lease".
    """
    output = Output(json_mode=json_mode)

    async def serve() -> int:
        simulator = Simulator(
            seed=seed,
            host=host,
            chakra_port=port,
            zefort_port=port + 1 if port else 0,
            keep_requests=False,
        )
        try:
            await simulator.start()
        except OSError as exc:
            hint = " (try another --port, or --port 0)" if exc.errno == errno.EADDRINUSE else ""
            output.error(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}")
            return EXIT_USAGE
        try:
            settings = {
                "CHAKRA_BASE_URL": simulator.chakra_url,
                "CHAKRA_TOKEN": simulator.chakra_token,
                "ZEFORT_BASE_URL": simulator.zefort_url,
                "ZEFORT_API_KEY": simulator.zefort_api_key,
            }
            if json_mode:
                output.json({name.lower(): value for name, value in settings.items()})
            else:
                output.stdout.print(
                    "\n".join(f"export {name}={value}" for name, value in settings.items()),
                    markup=False,
                )
                output.stdout.file.flush()
                output.note("Serving the simulated Chakra and Zefort APIs; Ctrl-C stops.")
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await simulator.aclose()
        return EXIT_OK  # pragma: no cover -- sleep_forever only ends by cancellation

    return run_async(serve, output=output, ledger=Ledger(), stop_ok=True)


@cli.group(context_settings=_CONTEXT)
def chakra() -> None:
    """ChakraHQ: bulk process updates, background jobs and their entries.

    Reads CHAKRA_BASE_URL and CHAKRA_TOKEN (or --base-url and --token).
    """


@cli.group(context_settings=_CONTEXT)
def zefort() -> None:
    """Zefort: contract bulk updates and the tasks that carry them out.

    Reads ZEFORT_BASE_URL and ZEFORT_API_KEY (or --base-url and --api-key).
    """


def _timeout_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=3600.0,
        show_default=True,
        help="Seconds to wait at most; then the ids still unfinished are printed (status 1).",
    )(command)


def _vendor_options(
    *, flag: str, flag_env: str, flag_help: str, url_env: str, default_url: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options every command of a vendor takes: --json, its credential and --base-url."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in (
            json_option,
            click.option(flag, envvar=flag_env, show_envvar=True, help=flag_help),
            click.option(
                "--base-url",
                envvar=url_env,
                show_envvar=True,
                help=f"The API's base URL [default: {default_url}].",
            ),
        ):
            command = option(command)
        return command

    return decorate


_chakra_options = _vendor_options(
    flag="--token",
    flag_env="CHAKRA_TOKEN",
    flag_help="The access token of a Chakra API key.",
    url_env="CHAKRA_BASE_URL",
    default_url="https://api.chakrahq.com",
)
_zefort_options = _vendor_options(
    flag="--api-key",
    flag_env="ZEFORT_API_KEY",
    flag_help="A Zefort API key.",
    url_env="ZEFORT_BASE_URL",
    default_url="https://sandbox.zefort.com",
)


@chakra.command("update", context_settings=_CONTEXT)
@click.argument("procedure")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="The file's format [default: from its extension; jsonl for stdin].",
)
@click.option(
    "--key",
    metavar="COLUMN",
    help="The primary-key attribute naming each process (CSV column / JSON Lines key).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=1000,
    show_default=True,
    help="Updates per request (one background job each).",
)
@click.option("--wait", is_flag=True, help="Wait for the jobs, then summarise what failed.")
@click.option(
    "--failed-out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the updates that failed or were invalid here, as JSON Lines to resubmit "
    "(implies --wait).",
)
@click.option(
    "--unknown-out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the updates whose outcome is unknown here (never resubmit them blindly).",
)
@_timeout_option
@_chakra_options
def chakra_update(
    *,
    procedure: str,
    file: str,
    fmt: str | None,
    key: str | None,
    batch_size: int,
    wait: bool,
    failed_out: Path | None,
    unknown_out: Path | None,
    timeout: float,
    token: str | None,
    base_url: str | None,
    json_mode: bool,
) -> int:
    r"""Update processes of PROCEDURE from FILE (JSON Lines or CSV; - for stdin).

    \b
    JSON Lines: one update a line, naming the process by "id" or by its primary
    key, with the changes flat or under "update":
      {"lead_id": "LEAD-001", "data": {"city": "Goa"}, "status": "COMPLETED"}
    CSV: a header row; the "id" or primary-key column (--key) names the process;
    state, status, assignedTo, nextActionAt and isDeleted set those fields, every
    other column is an attribute in "data"; an empty cell changes nothing.

    The whole file is checked before anything is sent: a bad line stops the command
    (status 2) with nothing submitted. It is read as a stream, never held whole.
    """
    output = Output(json_mode=json_mode)
    ledger = Ledger()

    async def work() -> int:
        client = chakra_client(token, base_url)
        with UpdateFile(file, format=fmt, key=key) as source:
            total = await anyio.to_thread.run_sync(source.check)
            if not total:
                raise ValidationError(source.name, "holds no updates")
            return await update_command(
                client,
                procedure=procedure,
                source=source,
                total=total,
                batch_size=batch_size,
                wait=wait or failed_out is not None,
                failed_out=failed_out,
                unknown_out=unknown_out,
                wait_seconds=timeout,
                output=output,
                ledger=ledger,
            )

    return run_async(work, output=output, ledger=ledger)


@chakra.command("job", context_settings=_CONTEXT)
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="Wait until the job has finished.")
@_timeout_option
@_chakra_options
def chakra_job(
    *,
    job_id: str,
    wait: bool,
    timeout: float,
    token: str | None,
    base_url: str | None,
    json_mode: bool,
) -> int:
    """Show background job JOB_ID and its entries per status.

    Status 1 when the job failed or has INVALID, ERROR or CANCELLED entries.
    """
    output = Output(json_mode=json_mode)
    ledger = Ledger()

    async def work() -> int:
        client = chakra_client(token, base_url)
        return await job_command(
            client, job_id=job_id, wait=wait, wait_seconds=timeout, output=output, ledger=ledger
        )

    return run_async(work, output=output, ledger=ledger)


@chakra.command("entries", context_settings=_CONTEXT)
@click.argument("job_id")
@click.option(
    "--status",
    type=click.Choice(ENTRY_STATUSES, case_sensitive=False),
    help="Only the entries with this completion status.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("jsonl", "csv", "table")),
    help="jsonl (the entries as the server sends them), csv or table "
    "[default: table on a terminal, else jsonl].",
)
@_chakra_options
def chakra_entries(
    *,
    job_id: str,
    status: str | None,
    fmt: str | None,
    token: str | None,
    base_url: str | None,
    json_mode: bool,
) -> int:
    """Stream the entries of background job JOB_ID: what became of each update.

    Pages are fetched ahead concurrently and written in order as they come.
    """
    if json_mode and fmt not in {None, "jsonl"}:
        raise click.UsageError(f"--json writes JSON Lines: it cannot be --format {fmt}")
    output = Output(json_mode=json_mode)
    if fmt is None:
        fmt = "table" if output.stdout.is_terminal and not json_mode else "jsonl"

    async def work() -> int:
        client = chakra_client(token, base_url)
        return await entries_command(
            client, job_id=job_id, status=status and status.upper(), fmt=fmt, output=output
        )

    return run_async(work, output=output, ledger=Ledger())


def _json_object(
    _ctx: click.Context, _parameter: click.Parameter, value: str | None
) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"must be a JSON object, not {type(parsed).__name__}")
    return parsed


@zefort.command("bulk-update", context_settings=_CONTEXT)
@click.option(
    "--attributes",
    callback=_json_object,
    metavar="JSON",
    help='Attribute values to set, e.g. \'{"end_date": "2023-02-15"}\'.',
)
@click.option(
    "--status",
    help="The contract status to set (archived, done, error, limited, processing, queued, review).",
)
@click.option(
    "--search",
    callback=_json_object,
    metavar="JSON",
    required=True,
    help='Which contracts, as contract search parameters, e.g. \'{"q_tags": "nda"}\'; '
    "'{}' for all.",
)
@click.option("--wait", is_flag=True, help="Wait until the task has finished.")
@click.option("--ack", is_flag=True, help="Acknowledge the task once finished (implies --wait).")
@_timeout_option
@_zefort_options
def zefort_bulk_update(
    *,
    attributes: dict[str, Any] | None,
    status: str | None,
    search: dict[str, Any],
    wait: bool,
    ack: bool,
    timeout: float,
    api_key: str | None,
    base_url: str | None,
    json_mode: bool,
) -> int:
    """Change every contract a search finds, in one bulk operation (a Zefort task).

    The request is never sent twice by itself: when its outcome cannot be known (the
    connection dropped after sending), the pending tasks are searched for it, and if it
    is not found the command says so (status 1) rather than risk doing it twice.
    """
    output = Output(json_mode=json_mode)
    ledger = Ledger()

    async def work() -> int:
        client = zefort_client(api_key, base_url)
        return await bulk_update_command(
            client,
            attributes=attributes,
            status=status,
            search=search,
            wait=wait or ack,
            acknowledge=ack,
            wait_seconds=timeout,
            output=output,
            ledger=ledger,
        )

    return run_async(work, output=output, ledger=ledger)


@zefort.command("wait", context_settings=_CONTEXT)
@click.argument("task_ids", nargs=-1, metavar="TASK_ID...")
@click.option("--ack", is_flag=True, help="Acknowledge each task once it has finished.")
@_timeout_option
@_zefort_options
def zefort_wait(
    *,
    task_ids: tuple[str, ...],
    ack: bool,
    timeout: float,
    api_key: str | None,
    base_url: str | None,
    json_mode: bool,
) -> int:
    """Wait for tasks to finish, printing each as it does.

    With no TASK_ID (or -), reads the ids from standard input, one a line. Status 1 when
    a task failed or the deadline passed (the unfinished ids are printed).
    """
    if not task_ids or task_ids == ("-",):
        if sys.stdin.isatty():
            raise click.UsageError("no task ids: give them as arguments or on standard input")
        ids = read_task_ids(sys.stdin)
    else:
        ids = read_task_ids(task_ids)
    if not ids:
        raise click.UsageError("no task ids read")
    output = Output(json_mode=json_mode)
    ledger = Ledger()

    async def work() -> int:
        client = zefort_client(api_key, base_url)
        return await wait_command(
            client,
            task_ids=ids,
            acknowledge=ack,
            wait_seconds=timeout,
            output=output,
            ledger=ledger,
        )

    return run_async(work, output=output, ledger=ledger)


@zefort.command("tasks", context_settings=_CONTEXT)
@_zefort_options
def zefort_tasks(*, api_key: str | None, base_url: str | None, json_mode: bool) -> int:
    """List the pending tasks (those not yet acknowledged), all pages."""
    output = Output(json_mode=json_mode)

    async def work() -> int:
        return await tasks_command(zefort_client(api_key, base_url), output=output)

    return run_async(work, output=output, ledger=Ledger())


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line on `argv` and return the exit status (click prints no traceback).

    Usage errors print one line (``asyncbulk: error: ...``) and give status 2.
    """
    try:
        status = cli.main(args=argv, prog_name="asyncbulk", standalone_mode=False)
    except click.exceptions.Abort:
        Output(json_mode=False).note("asyncbulk: aborted")
        return 130
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        Output(json_mode=False).error(f"{exc.format_message()}{hint}")
        return exc.exit_code
    return status if isinstance(status, int) else EXIT_OK
