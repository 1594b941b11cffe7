"""Where the command line writes: results on stdout (JSON with ``--json``), the rest on stderr."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any, Final

from rich.cells import cell_len
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

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
        # Text wraps at word boundaries, to the terminal (or COLUMNS); lines pasted into a shell
        # are printed with soft_wrap=True where they are written.
        self.stdout = Console(highlight=False)
        if not self.stdout.is_terminal and "COLUMNS" not in os.environ:
            # Piped or redirected, tables get room for whole ids rather than rich's 80 columns.
            self.stdout.width = _PIPE_WIDTH
        self.stderr = Console(stderr=True, highlight=False)

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
        """Print tables or text for a person on stdout (nothing in ``--json`` mode).

        Text wraps between words. A table too wide for the terminal even with every cell
        wrapped between words is printed as one paragraph a row instead, rather than have rich
        cut words (and ids) in two.
        """
        if self.json_mode:
            return
        for renderable in renderables:
            if isinstance(renderable, Table) and not _fits(self.stdout, renderable):
                self.stdout.print(*_rows_as_text(renderable), sep="\n")
            else:
                self.stdout.print(renderable)

    def note(self, message: str, *, wrap: bool = False) -> None:
        """Information on stderr, printed as is (no markup).

        Args:
            message: the text.
            wrap: wrap it between words to the terminal's width; by default it stays one line
                (ids to paste, a line a log reader greps).
        """
        self.stderr.print(message, markup=False, highlight=False, soft_wrap=not wrap)

    def error(self, message: str) -> None:
        """One line naming an error, on stderr."""
        self.stderr.print(
            f"asyncbulk: error: {message}", markup=False, highlight=False, soft_wrap=True
        )


def _fits(console: Console, grid: Table) -> bool:
    # The least width at which no word is cut: each column's longest word, plus " │ " between
    # columns (the tables `table` makes have no outer edge and no outer padding).
    def longest(column: Column) -> int:
        texts = (str(column.header), *(str(cell) for cell in column.cells))
        return max((cell_len(word) for text in texts for word in text.split()), default=0)

    least = sum(map(longest, grid.columns)) + 3 * (len(grid.columns) - 1)
    return least <= console.width


def _rows_as_text(grid: Table) -> list[Text]:
    headers = [str(column.header) for column in grid.columns]
    cells = [[str(cell) for cell in column.cells] for column in grid.columns]
    lines = [Text(str(grid.title), style="bold")] if grid.title else []
    for row in zip(*cells, strict=True):
        pairs = [f"{header}: {cell}" for header, cell in zip(headers, row, strict=True) if cell]
        lines.append(Text("- " + "; ".join(pairs)))
    return lines


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
