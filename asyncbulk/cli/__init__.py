"""The ``asyncbulk`` command line: a self-contained demo and commands for real bulk work.

Only this package imports click and rich, the ``cli`` extra: the library itself works without
them. Run ``asyncbulk --help`` (or ``python -m asyncbulk --help``) for the commands.

Exit status: 0 when everything succeeded, 1 when some items or tasks failed (or the work met an
error), 2 for a usage, input or authentication error (one line, no traceback, nothing sent), 130
when interrupted (the ids of the jobs and tasks already submitted are printed first).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]

_HINT = "asyncbulk: the command line needs click and rich: pip install 'asyncbulk[cli]'"


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the ``asyncbulk`` command line and exit with its status.

    Args:
        argv: the arguments, without the program name; ``sys.argv[1:]`` by default.
    """
    try:
        import click  # noqa: F401, PLC0415 -- only to learn whether the extra is installed
        import rich  # noqa: F401, PLC0415 -- same
    except ImportError:
        print(_HINT, file=sys.stderr)  # noqa: T201 -- the one line a user without the extra sees
        sys.exit(2)
    from asyncbulk.cli._app import run  # noqa: PLC0415 -- imports click, so only after the check

    sys.exit(run(argv))
