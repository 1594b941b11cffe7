"""The command tree: ``asyncbulk demo | simulate | chakra ... | zefort ... | worker``."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio
import click

from asyncbulk import ValidationError, __version__
from asyncbulk.chakra import ENTRY_STATUSES
from asyncbulk.cli._chakra import chakra_client, entries_command, job_command, update_command
from asyncbulk.cli._demo import DemoPlan, run_demo
from asyncbulk.cli._input import FORMATS, UpdateFile
from asyncbulk.cli._output import Output
from asyncbulk.cli._resume import CommandJournal, resume_command, resume_hint, run_journaled
from asyncbulk.cli._runner import EXIT_OK, Ledger, run_async
from asyncbulk.cli._simulate import Delay, FaultOptions, SimulatorOptions, serve
from asyncbulk.cli._worker import WorkerSettings, run_worker
from asyncbulk.cli._zefort import (
    bulk_update_command,
    read_task_ids,
    tasks_command,
    wait_command,
    zefort_client,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from asyncbulk._journal import Journal
    from asyncbulk.chakra import ChakraClient
    from asyncbulk.testing import RetryAfterForm
    from asyncbulk.zefort import ZefortClient

__all__ = ["cli", "run"]

# The contract statuses Zefort documents: a value outside them is refused before any request.
CONTRACT_STATUSES: Final = (
    "archived",
    "done",
    "error",
    "limited",
    "processing",
    "queued",
    "review",
)
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
    """Push bulk changes through ChakraHQ and Zefort, follow every job, get the failures back.

    Start with `asyncbulk demo`: it runs the whole flow offline against the built-in simulator.

    \b
    Exit status:
      0    all succeeded
      1    some items or tasks failed (or the work met an error)
      2    usage, input or authentication error (nothing sent)
      130  interrupted (the ids already submitted are printed on stderr)
    """  # noqa: D301 -- click's paragraph marker is the \b character itself, not a backslash
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
    # The demo's ids belong to its own simulator, gone when it stops: counts say enough.
    ledger = Ledger(list_ids=False)
    plan = DemoPlan(updates=updates, tasks=tasks, seed=seed)

    async def work() -> int:
        return await run_demo(plan, output=output, ledger=ledger)

    return run_async(work, output=output, ledger=ledger)


def _delay(_ctx: click.Context, _parameter: click.Parameter, value: str | None) -> Delay | None:
    """Seconds as ``0.5`` or a range drawn uniformly as ``0.1-0.5``."""
    if value is None:
        return None
    low, dash, high = value.partition("-")
    try:
        bounds = (float(low), float(high)) if dash else (float(value),) * 2
    except ValueError:
        raise click.BadParameter(
            f"expected seconds such as 0.5 or 0.1-0.5, not {value!r}"
        ) from None
    if not 0 <= bounds[0] <= bounds[1] or not all(map(math.isfinite, bounds)):
        raise click.BadParameter(f"expected 0 <= low <= high, not {value!r}")
    return bounds if dash else bounds[0]


def _rate_limit(
    _ctx: click.Context, _parameter: click.Parameter, value: str | None
) -> tuple[float, int] | None:
    """A rate in requests a second and a burst, as ``RATE`` or ``RATE/BURST``."""
    if value is None:
        return None
    rate_text, slash, burst_text = value.partition("/")
    try:
        rate = float(rate_text)
        burst = int(burst_text) if slash else 1
    except ValueError:
        raise click.BadParameter(
            f"expected RATE or RATE/BURST such as 50/10, not {value!r}"
        ) from None
    if not (math.isfinite(rate) and rate > 0) or burst < 1:
        raise click.BadParameter(f"expected a rate > 0 and a burst >= 1, not {value!r}")
    return rate, burst


def _fraction(help_text: str, *names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        *names,
        type=click.FloatRange(0, 1),
        default=0.0,
        metavar="FRACTION",
        help=help_text,
    )


@cli.command(context_settings=_CONTEXT)
@click.option(
    "--port",
    type=click.IntRange(0, 65534),
    default=8080,
    show_default=True,
    help="Chakra's port; Zefort listens on the next one. 0 picks free ports.",
)
@click.option(
    "--chakra-port", type=click.IntRange(0, 65535), help="Chakra's port (instead of --port)."
)
@click.option(
    "--zefort-port", type=click.IntRange(0, 65535), help="Zefort's port (instead of --port + 1)."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice.")
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Simulated seconds per real second (jobs and tasks run faster above 1).",
)
@click.option(
    "--chakra-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=20_000.0,
    show_default=True,
    help="Entries a Chakra job finishes per simulated second.",
)
@_fraction("Fraction of valid Chakra entries that end in ERROR.", "--chakra-error-rate")
@click.option(
    "--zefort-delay",
    callback=_delay,
    default="0.2-1",
    show_default=True,
    metavar="SECONDS",
    help="Simulated seconds a Zefort task takes: 0.5, or a range 0.2-1.",
)
@_fraction('Fraction of Zefort tasks that end in "error".', "--zefort-failure-rate")
@_fraction("Fraction of requests answered 429 with Retry-After.", "--rate-429", "rate_429")
@click.option(
    "--retry-after",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="The Retry-After those 429s send.",
)
@click.option(
    "--retry-after-form",
    type=click.Choice(["seconds", "http-date", "absent", "garbage", "huge"]),
    default="seconds",
    show_default=True,
    help="How 429s write Retry-After: seconds, an HTTP date, absent, garbage, or a day (huge).",
)
@click.option(
    "--rate-limit",
    callback=_rate_limit,
    metavar="RATE[/BURST]",
    help="A token bucket per credential: RATE requests a second, BURST at once (1 by "
    "default); a request finding it empty is answered 429 without being handled.",
)
@_fraction("Fraction of requests answered 503.", "--rate-503", "rate_503")
@click.option(
    "--latency",
    callback=_delay,
    metavar="SECONDS",
    help="Delay before every request is handled: 0.05, or a range 0.01-0.2.",
)
@_fraction("Fraction of connections closed before the request is handled.", "--drop-before")
@_fraction(
    "Fraction of requests handled (a job or task is created), then the connection closed "
    "without an answer.",
    "--drop-after",
)
@_fraction(
    "Fraction of requests handled, then answered with a body that is not JSON.", "--malformed"
)
@json_option
def simulate(
    *,
    port: int,
    chakra_port: int | None,
    zefort_port: int | None,
    host: str,
    seed: int,
    time_scale: float,
    chakra_rate: float,
    chakra_error_rate: float,
    zefort_delay: Delay,
    zefort_failure_rate: float,
    rate_429: float,
    retry_after: float,
    retry_after_form: RetryAfterForm,
    rate_limit: tuple[float, int] | None,
    rate_503: float,
    latency: Delay | None,
    drop_before: float,
    drop_after: float,
    malformed: float,
    json_mode: bool,
) -> int:
    """Serve the simulated Chakra and Zefort APIs until Ctrl-C, with faults if asked.

    Prints the base URLs and credentials as the `export` lines the other commands read: paste
    them into another shell and run `asyncbulk chakra ...` or `asyncbulk zefort ...`. The
    simulator starts with the vendors' documentation examples: Chakra procedures
    `tele_sales` (primary key `lead_id`: EXT-TEST-143, LEAD-001, LEAD-910, LEAD-100) and
    `field_sales`, and Zefort contracts tagged "contracts of service", "nda", "lease".

    The fault options make every request a candidate, each fault drawn at its rate (seeded
    by --seed): for example `--rate-429 0.05 --rate-503 0.02 --drop-after 0.01`.
    `python -m asyncbulk.testing` runs this same command.
    """
    options = SimulatorOptions(
        host=host,
        chakra_port=port if chakra_port is None else chakra_port,
        zefort_port=(port + 1 if port else 0) if zefort_port is None else zefort_port,
        seed=seed,
        time_scale=time_scale,
        chakra_entries_per_second=chakra_rate,
        chakra_error_rate=chakra_error_rate,
        zefort_task_delay=zefort_delay,
        zefort_failure_rate=zefort_failure_rate,
        faults=FaultOptions(
            rate_429=rate_429,
            retry_after=retry_after,
            retry_after_form=retry_after_form,
            rate_503=rate_503,
            latency=latency,
            drop_before=drop_before,
            drop_after=drop_after,
            malformed=malformed,
        ),
        rate_limit=rate_limit,
    )
    return serve(options, output=Output(json_mode=json_mode))


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


def _journal_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--journal",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Record the run in this SQLite file: stopped at any point, "
        "`asyncbulk resume --journal PATH` finishes it.",
    )(command)


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
            click.option(
                "--allow-insecure-http",
                is_flag=True,
                help="Allow a plain http:// base URL to a host other than this machine "
                "(the credential then travels in clear).",
            ),
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
@click.option(
    "--infer-types",
    is_flag=True,
    help="Send CSV cells that read as numbers or true/false as such (else every cell is a "
    "string, unless its column is typed: score:int).",
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
@_journal_option
@_timeout_option
@_chakra_options
def chakra_update(
    *,
    journal: Path | None,
    procedure: str,
    file: str,
    fmt: str | None,
    key: str | None,
    infer_types: bool,
    batch_size: int,
    wait: bool,
    failed_out: Path | None,
    unknown_out: Path | None,
    timeout: float,
    token: str | None,
    allow_insecure_http: bool,
    base_url: str | None,
    json_mode: bool,
) -> int:
    """Update processes of PROCEDURE from FILE (JSON Lines or CSV; - for stdin).

    \b
    JSON Lines: one update a line, naming the process by "id" or by its primary
    key, with the changes flat or under "update":
      {"lead_id": "LEAD-001", "data": {"city": "Goa"}, "status": "COMPLETED"}

    \b
    CSV: a header row; the "id" or primary-key column (--key) names the process;
    state, status, assignedTo, nextActionAt and isDeleted set those fields, every
    other column is an attribute in "data"; an empty cell changes nothing.

    \b
    CSV cells are sent as strings, unless the column names a type after a colon
    (score:int; types str, int, float, bool, json) or --infer-types is given:
      lead_id,score:int,tags:json,vip:bool
      LEAD-001,42,"[""north""]",true

    The whole file is checked before anything is sent: a bad line stops the command
    (status 2) with nothing submitted. It is read as a stream, never held whole.
    """  # noqa: D301 -- click's paragraph marker is the \b character itself, not a backslash
    output = Output(json_mode=json_mode)
    ledger = Ledger()

    def make(journaled: Journal | None) -> ChakraClient:
        return chakra_client(
            token, base_url, allow_insecure_http=allow_insecure_http, journal=journaled
        )

    note = {
        "command": "chakra update",
        "file": file if file == "-" else str(Path(file).resolve()),
        "format": fmt,
        "key": key,
        "infer_types": infer_types,
        "wait": wait or failed_out is not None,
        "failed_out": None if failed_out is None else str(failed_out.resolve()),
        "unknown_out": None if unknown_out is None else str(unknown_out.resolve()),
        "timeout": timeout,
    }
    if journal is not None:
        ledger.resume = resume_hint(
            journal, vendor="chakra", base_url=base_url, allow_insecure_http=allow_insecure_http
        )

    async def command(client: ChakraClient, journal_note: dict[str, Any] | None) -> int:
        with UpdateFile(file, format=fmt, key=key, infer_types=infer_types) as source:
            total = await anyio.to_thread.run_sync(source.check)
            if not total:
                raise ValidationError(source.name, "holds no updates")
            return await update_command(
                client,
                journal_note=journal_note,
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

    async def work() -> int:
        return await run_journaled(journal, make, command, note, waits_only=False)

    return run_async(work, output=output, ledger=ledger)


@chakra.command("job", context_settings=_CONTEXT)
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB_ID...")
@click.option("--wait", is_flag=True, help="Wait until every job has finished.")
@click.option(
    "--failed-out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the updates of the INVALID, ERROR and CANCELLED entries here, as JSON Lines "
    "to resubmit (implies --wait).",
)
@_journal_option
@_timeout_option
@_chakra_options
def chakra_job(
    *,
    journal: Path | None,
    job_ids: tuple[str, ...],
    wait: bool,
    failed_out: Path | None,
    timeout: float,
    token: str | None,
    allow_insecure_http: bool,
    base_url: str | None,
    json_mode: bool,
) -> int:
    """Show background jobs and their entries per status (one JSON object a line with --json).

    Status 1 when a job failed or has INVALID, ERROR or CANCELLED entries.
    """
    output = Output(json_mode=json_mode)
    ledger = Ledger()
    ids = read_task_ids(job_ids)

    def make(journaled: Journal | None) -> ChakraClient:
        return chakra_client(
            token, base_url, allow_insecure_http=allow_insecure_http, journal=journaled
        )

    if journal is not None:
        ledger.resume = resume_hint(
            journal, vendor="chakra", base_url=base_url, allow_insecure_http=allow_insecure_http
        )
    note = {"command": "chakra job", "job_ids": ids, "timeout": timeout}

    async def command(client: ChakraClient, _: object) -> int:
        return await job_command(
            client,
            job_ids=ids,
            wait=wait or failed_out is not None,
            wait_seconds=timeout,
            failed_out=failed_out,
            output=output,
            ledger=ledger,
        )

    async def work() -> int:
        return await run_journaled(journal, make, command, note, waits_only=True)

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
    allow_insecure_http: bool,
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
        client = chakra_client(token, base_url, allow_insecure_http=allow_insecure_http)
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
    type=click.Choice(CONTRACT_STATUSES, case_sensitive=False),
    help="The contract status to set.",
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
@_journal_option
@_timeout_option
@_zefort_options
def zefort_bulk_update(
    *,
    journal: Path | None,
    attributes: dict[str, Any] | None,
    status: str | None,
    search: dict[str, Any],
    wait: bool,
    ack: bool,
    timeout: float,
    api_key: str | None,
    allow_insecure_http: bool,
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

    def make(journaled: Journal | None) -> ZefortClient:
        return zefort_client(
            api_key, base_url, allow_insecure_http=allow_insecure_http, journal=journaled
        )

    if journal is not None:
        ledger.resume = resume_hint(
            journal, vendor="zefort", base_url=base_url, allow_insecure_http=allow_insecure_http
        )
    note = {
        "command": "zefort bulk-update",
        "wait": wait or ack,
        "acknowledge": ack,
        "timeout": timeout,
    }

    async def command(client: ZefortClient, journal_note: dict[str, Any] | None) -> int:
        return await bulk_update_command(
            client,
            journal_note=journal_note,
            attributes=attributes,
            status=status and status.lower(),
            search=search,
            wait=wait or ack,
            acknowledge=ack,
            wait_seconds=timeout,
            output=output,
            ledger=ledger,
        )

    async def work() -> int:
        return await run_journaled(journal, make, command, note, waits_only=False)

    return run_async(work, output=output, ledger=ledger)


@zefort.command("wait", context_settings=_CONTEXT)
@click.argument("task_ids", nargs=-1, metavar="TASK_ID...")
@click.option("--ack", is_flag=True, help="Acknowledge each task once it has finished.")
@_journal_option
@_timeout_option
@_zefort_options
def zefort_wait(
    *,
    journal: Path | None,
    task_ids: tuple[str, ...],
    ack: bool,
    timeout: float,
    api_key: str | None,
    allow_insecure_http: bool,
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

    def make(journaled: Journal | None) -> ZefortClient:
        return zefort_client(
            api_key, base_url, allow_insecure_http=allow_insecure_http, journal=journaled
        )

    if journal is not None:
        ledger.resume = resume_hint(
            journal, vendor="zefort", base_url=base_url, allow_insecure_http=allow_insecure_http
        )
    note = {"command": "zefort wait", "task_ids": ids, "acknowledge": ack, "timeout": timeout}

    async def command(client: ZefortClient, _: object) -> int:
        return await wait_command(
            client,
            task_ids=ids,
            acknowledge=ack,
            wait_seconds=timeout,
            output=output,
            ledger=ledger,
        )

    async def work() -> int:
        return await run_journaled(journal, make, command, note, waits_only=True)

    return run_async(work, output=output, ledger=ledger)


@zefort.command("tasks", context_settings=_CONTEXT)
@_zefort_options
def zefort_tasks(
    *, api_key: str | None, allow_insecure_http: bool, base_url: str | None, json_mode: bool
) -> int:
    """List the pending tasks (those not yet acknowledged), all pages."""
    output = Output(json_mode=json_mode)

    async def work() -> int:
        return await tasks_command(
            zefort_client(api_key, base_url, allow_insecure_http=allow_insecure_http), output=output
        )

    return run_async(work, output=output, ledger=Ledger())


@cli.command("worker", context_settings=_CONTEXT)
@click.option(
    "--postgres",
    "postgres",
    metavar="DSN",
    envvar="ASYNCBULK_POSTGRES",
    show_envvar=True,
    required=True,
    help="The PostgreSQL store the workers and replicas share (postgresql://user@host/db).",
)
@click.option(
    "--redis",
    "redis_url",
    metavar="URL",
    envvar="ASYNCBULK_REDIS",
    show_envvar=True,
    help="Share the rate limit with every process of the account through this Redis.",
)
@click.option(
    "--redis-prefix",
    default="asyncbulk",
    show_default=True,
    help="The start of the Redis keys (processes sharing a limit use the same).",
)
@click.option(
    "--hook",
    metavar="MODULE:FUNCTION",
    required=True,
    help="The async function each finished job is handed to (it takes a Delivery).",
)
@click.option(
    "--vendor",
    type=click.Choice(["zefort", "chakra"]),
    default="zefort",
    show_default=True,
    help="Whose jobs to track: Zefort tasks or Chakra background jobs.",
)
@click.option(
    "--schema",
    default="asyncbulk",
    show_default=True,
    help="The PostgreSQL schema holding the tables.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Requests per second for all processes together (with --redis).",
)
@click.option("--worker-id", help="The worker's name in the store [default: a random one].")
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Seconds between heartbeats (and claims).",
)
@click.option(
    "--expiry",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="A worker silent this long is swept and its jobs taken over.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Seconds between two polls of a job.",
)
@click.option(
    "--max-jobs",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="The most jobs this worker tracks at once.",
)
@click.option(
    "--delivery-batch",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Finished jobs taken and acknowledged together: a worker that dies mid-batch has "
    "the whole batch delivered again.",
)
@click.option(
    "--delivery-lease",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds the hook has for a job before it may go to another worker.",
)
@click.option("--token", envvar="CHAKRA_TOKEN", show_envvar=True, help="Chakra's access token.")
@click.option("--api-key", envvar="ZEFORT_API_KEY", show_envvar=True, help="A Zefort API key.")
@click.option(
    "--base-url",
    help="The API's base URL [default: CHAKRA_BASE_URL or ZEFORT_BASE_URL, else the vendor's].",
)
@click.option(
    "--allow-insecure-http",
    is_flag=True,
    help="Allow a plain http:// base URL to a host other than this machine.",
)
@json_option
def worker(
    *,
    postgres: str,
    redis_url: str | None,
    redis_prefix: str,
    hook: str,
    vendor: str,
    schema: str,
    rate: float,
    worker_id: str | None,
    heartbeat: float,
    expiry: float,
    poll_interval: float,
    max_jobs: int,
    delivery_batch: int,
    delivery_lease: float,
    token: str | None,
    api_key: str | None,
    base_url: str | None,
    allow_insecure_http: bool,
    json_mode: bool,
) -> int:
    """Track the jobs any replica recorded in PostgreSQL and hand each finished one to a hook.

    Workers on one store share the jobs: each claims a share, polls it, records each finish
    once and delivers each finished job once to the hook (again only if a worker dies while
    handling it). A worker that dies has its jobs taken over after --expiry. SIGTERM or
    Ctrl-C stops it cleanly (deliveries in flight finish, its jobs are released; status 0);
    a second signal stops it at once (130). Status 2 when the hook, the credential or the
    DSN is wrong. Needs the postgres extra (and redis for --redis).
    """
    chosen: Literal["zefort", "chakra"] = "zefort" if vendor == "zefort" else "chakra"
    settings = WorkerSettings(
        postgres=postgres,
        redis=redis_url,
        redis_prefix=redis_prefix,
        hook=hook,
        vendor=chosen,
        credential=api_key if chosen == "zefort" else token,
        base_url=base_url or os.environ.get(f"{chosen.upper()}_BASE_URL") or None,
        allow_insecure_http=allow_insecure_http,
        schema=schema,
        rate=rate,
        worker_id=worker_id,
        heartbeat_interval=heartbeat,
        expiry=expiry,
        poll_interval=poll_interval,
        max_jobs=max_jobs,
        delivery_batch=delivery_batch,
        delivery_lease=delivery_lease,
    )
    return run_worker(settings, output=Output(json_mode=json_mode))


@cli.command("resume", context_settings=_CONTEXT)
@click.option(
    "--journal",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The journal the interrupted command was given.",
)
@click.option("--token", envvar="CHAKRA_TOKEN", show_envvar=True, help="The Chakra access token.")
@click.option(
    "--chakra-base-url", envvar="CHAKRA_BASE_URL", show_envvar=True, help="Chakra's base URL."
)
@click.option("--api-key", envvar="ZEFORT_API_KEY", show_envvar=True, help="A Zefort API key.")
@click.option(
    "--zefort-base-url", envvar="ZEFORT_BASE_URL", show_envvar=True, help="Zefort's base URL."
)
@click.option(
    "--allow-insecure-http", is_flag=True, help="Allow a plain http:// base URL to another host."
)
@json_option
def resume(
    *,
    journal: Path,
    token: str | None,
    chakra_base_url: str | None,
    api_key: str | None,
    zefort_base_url: str | None,
    allow_insecure_http: bool,
    json_mode: bool,
) -> int:
    """Finish the commands a journal holds interrupted: settle, wait, summarise, write files.

    Give the same credentials (and base URLs) as the interrupted command. A Chakra batch
    that was on the wire when it stopped is reported of unknown outcome (written to its
    --unknown-out); a Zefort bulk update is found among the pending tasks when it can be
    proved, and is never sent again.
    """
    output = Output(json_mode=json_mode)
    ledger = Ledger()
    ledger.resume = f"asyncbulk resume --journal {journal}"

    async def work() -> int:
        async with CommandJournal(journal) as journaled:
            kept = journaled.inner
            chakra_api = (
                chakra_client(
                    token,
                    chakra_base_url,
                    allow_insecure_http=allow_insecure_http,
                    journal=kept,
                )
                if token
                else None
            )
            zefort_api = (
                zefort_client(
                    api_key,
                    zefort_base_url,
                    allow_insecure_http=allow_insecure_http,
                    journal=kept,
                )
                if api_key
                else None
            )
            return await resume_command(
                journal, chakra=chakra_api, zefort=zefort_api, output=output, ledger=ledger
            )

    return run_async(work, output=output, ledger=ledger)


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
