"""Where the command line writes: results on stdout (JSON with ``--json``), the rest on stderr."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any, Final

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from rich.console import RenderableType

__all__ = ["Output", "format_count", "table"]

_PIPE_WIDTH: Final = 160


def format_count(value: float) -> str:
    """A count with thousands separators (``20,000``), a float with one decimal."""
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"


class Output:
    """The two streams of one command.

    stdout carries the result: tables and text for a person, or JSON (one document, or JSON Lines
    for streams) with ``--json``. stderr carries progress, notes and errors, so that a pipe from
    stdout only ever sees the result.

    Args:
        json_mode: whether the result is machine-readable JSON.
    """

    def __init__(self, *, json_mode: bool) -> None:
        """Open consoles on the two streams."""
        self.json_mode = json_mode
        self.stdout = Console(highlight=False, soft_wrap=True)
        if not self.stdout.is_terminal and "COLUMNS" not in os.environ:
            # Piped or redirected, tables get room for whole ids rather than rich's 80 columns.
            self.stdout.width = _PIPE_WIDTH
        self.stderr = Console(stderr=True, highlight=False, soft_wrap=True)

    @property
    def stderr_is_terminal(self) -> bool:
        """Whether stderr is a terminal, where live progress may be drawn."""
        return self.stderr.is_terminal

    def json(self, document: Any) -> None:
        """Write one JSON document on one line of stdout."""
        sys.stdout.write(json.dumps(document, ensure_ascii=False, default=str) + "\n")
        sys.stdout.flush()

    def json_lines(self, documents: Iterable[Any]) -> None:
        """Write JSON documents, one a line, without flushing after each."""
        write = sys.stdout.write
        dumps = json.JSONEncoder(ensure_ascii=False, default=str).encode
        for document in documents:
            write(dumps(document) + "\n")

    def show(self, *renderables: RenderableType) -> None:
        """Print tables or text for a person on stdout (nothing in ``--json`` mode)."""
        if not self.json_mode:
            self.stdout.print(*renderables)

    def note(self, message: str) -> None:
        """One line of information on stderr, printed as is (no markup)."""
        self.stderr.print(message, markup=False, highlight=False)

    def error(self, message: str) -> None:
        """One line naming an error, on stderr."""
        self.stderr.print(f"asyncbulk: error: {message}", markup=False, highlight=False)


def table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    numeric: Iterable[int] = (),
) -> Table:
    """A table with a header row; the columns at positions `numeric` are right-aligned."""
    right = set(numeric)
    grid = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for index, column in enumerate(columns):
        grid.add_column(column, justify="right" if index in right else "left", overflow="fold")
    for row in rows:
        grid.add_row(
            *(format_count(cell) if isinstance(cell, int | float) else str(cell) for cell in row)
        )
    return grid
