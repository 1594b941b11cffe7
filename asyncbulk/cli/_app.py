"""The command tree: ``asyncbulk demo | simulate | chakra ... | zefort ...``."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Final

import anyio
import click

from asyncbulk import __version__
from asyncbulk.cli._output import Output
from asyncbulk.cli._runner import EXIT_OK, EXIT_USAGE, Ledger, run_async
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


@click.group(context_settings=_CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="asyncbulk")
def cli() -> None:
    r"""Push bulk changes through ChakraHQ and Zefort, follow every job, get the failures back.

    Start with `asyncbulk demo`: it runs the whole flow offline against the built-in simulator.

    \b
    Exit status: 0 all succeeded; 1 some items or tasks failed (or the work met an error);
    2 usage, input or authentication error (nothing sent); 130 interrupted (the ids already
    submitted are printed on stderr).
    """


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
def simulate(port: int, host: str, seed: int, json_mode: bool) -> int:
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
