"""Reading process updates from JSON Lines or CSV files, streamed, with errors naming the line.

A file is read twice, both times line by line: once to check every line before anything is sent
(so a broken line 40,000 stops the command with nothing submitted), then again to feed the
submission. Standard input is spooled to a temporary file to allow the second read.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
import shutil
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Literal, Self

from asyncbulk import ValidationError
from asyncbulk.chakra import ProcessUpdate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from types import TracebackType

__all__ = ["FORMATS", "UpdateFile"]

Format = Literal["jsonl", "csv"]
FORMATS: Final = ("jsonl", "csv")
_EXTENSIONS: Final[Mapping[str, Format]] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
}

# CSV columns that set an update's fields (camelCase as the API, or snake_case); every other
# column is an attribute value in `data`.
_CSV_FIELDS: Final[Mapping[str, str]] = {
    "state": "state",
    "status": "status",
    "assignedTo": "assigned_to",
    "assigned_to": "assigned_to",
    "nextActionAt": "next_action_at",
    "next_action_at": "next_action_at",
    "isDeleted": "is_deleted",
    "is_deleted": "is_deleted",
}
_TRUE: Final = frozenset({"true", "yes", "1", "y", "t"})
_FALSE: Final = frozenset({"false", "no", "0", "n", "f"})


class UpdateFile:
    """A file of process updates, checked whole first, then read lazily.

    JSON Lines: one object a line, with one identifier (``id``, or the procedure's primary-key
    attribute such as ``lead_id``) and the changes, flat (``{"id": ..., "data": {...},
    "status": "OPEN"}``) or under ``update`` as the API documents; keys starting with ``_``
    (the notes ``--failed-out`` writes) are ignored, blank lines skipped.

    CSV: a header row; the identifier column is ``id``, or the `key` column (never guessed:
    without ``id`` and without `key` the file is refused); the columns ``state``,
    ``status``, ``assignedTo``, ``nextActionAt`` and ``isDeleted`` (or their snake_case names)
    set those fields; every other column is an attribute in ``data``. An empty cell changes
    nothing.

    CSV cells are sent as strings, unless the column's header names a type after a colon
    (``score:int``; types ``str``, ``int``, ``float``, ``bool``, ``json``) or `infer_types` is
    set: then a cell that reads as an integer, a decimal number, ``true`` or ``false`` is sent
    as that (a number with a leading zero, such as ``007``, stays a string). A typed column's
    type wins over inference.

    Args:
        path: the file, or ``-`` for standard input.
        format: ``jsonl`` or ``csv``; by default from the file's extension (``jsonl`` for stdin).
        key: the primary-key attribute that identifies processes (a CSV column, or the only key
            JSON Lines objects may name besides ``id``).
        infer_types: read numbers and booleans in CSV attribute cells as such.

    Raises:
        ValidationError: the format cannot be told from the name.
    """

    def __init__(
        self,
        path: str,
        *,
        format: str | None = None,  # noqa: A002 -- the option's name
        key: str | None = None,
        infer_types: bool = False,
    ) -> None:
        """Remember the file; nothing is read yet."""
        self.name = "<stdin>" if path == "-" else path
        self._path = None if path == "-" else Path(path)
        self._spool: IO[bytes] | None = None
        self.key = key
        self.infer_types = infer_types
        if format is None:
            suffix = "" if self._path is None else self._path.suffix.lower()
            format = "jsonl" if self._path is None else _EXTENSIONS.get(suffix)  # noqa: A001
            if format is None:
                raise ValidationError(
                    "--format", f"cannot tell the format of {self.name}: give jsonl or csv"
                )
        if format not in FORMATS:
            raise ValidationError("--format", f"must be jsonl or csv, not {format!r}")
        self.format: Format = format  # type: ignore[assignment]  # checked just above

    def __enter__(self) -> Self:
        """Hold the file (and stdin's spool) until the block ends."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Drop standard input's spool, if any."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def check(self) -> int:
        """Read every line and build its update, without keeping any; return how many.

        Raises:
            ValidationError: a line is not a valid update; the error names the file, the line
                and, for CSV, the column.
        """
        count = 0
        for _ in self:
            count += 1
        return count

    def __iter__(self) -> Iterator[ProcessUpdate]:
        """The updates, one at a time, in file order."""
        with self._open() as stream:
            if self.format == "csv":
                yield from self._csv(stream)
            else:
                yield from self._jsonl(stream)

    @contextlib.contextmanager
    def _open(self) -> Iterator[IO[str]]:
        if self._path is None:
            if self._spool is None:
                self._spool = tempfile.TemporaryFile()  # noqa: SIM115 -- lives as long as self
                shutil.copyfileobj(sys.stdin.buffer, self._spool)
            self._spool.seek(0)
            raw: IO[bytes] = self._spool
        else:
            try:
                raw = self._path.open("rb")
            except OSError as exc:
                raise ValidationError(self.name, f"cannot be read: {exc.strerror}") from None
        # utf-8-sig: spreadsheets often start a CSV with a byte-order mark.
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        try:
            yield text
        except UnicodeDecodeError as exc:
            raise ValidationError(self.name, f"is not UTF-8 text ({exc.reason})") from None
        finally:
            # Detached, closing the text layer leaves stdin's spool open for the second read.
            text.detach()
            if raw is not self._spool:
                raw.close()

    def _where(self, line: int, column: str | None = None) -> str:
        return f"{self.name} line {line}" + (f", column {column!r}" if column else "")

    def _build(self, where: str, fields: dict[str, Any]) -> ProcessUpdate:
        try:
            return ProcessUpdate(**fields)
        except ValidationError as exc:
            raise ValidationError(f"{where}: {exc.field}", exc.reason) from None

    def _jsonl(self, stream: IO[str]) -> Iterator[ProcessUpdate]:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            where = self._where(number)
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValidationError(
                    where, f"not valid JSON: {exc.msg} (column {exc.colno})"
                ) from None
            if not isinstance(item, dict):
                raise ValidationError(where, f"expected a JSON object, not {type(item).__name__}")
            # Keys starting with "_" are notes (the reasons --failed-out writes), not fields.
            fields = {name: value for name, value in item.items() if not name.startswith("_")}
            try:
                yield ProcessUpdate.from_mapping(fields, key=self.key)
            except ValidationError as exc:
                raise ValidationError(f"{where}: {exc.field}", exc.reason) from None

    def _csv(self, stream: IO[str]) -> Iterator[ProcessUpdate]:
        # strict: a quote never closed is an error, not one cell running on to the end of the
        # file (which would send the rest of the file as one attribute value).
        reader = csv.reader(stream, strict=True)
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            raise ValidationError(self._where(1), "empty file: expected a header row") from None
        except csv.Error as exc:
            raise ValidationError(self._where(reader.line_num), f"not valid CSV: {exc}") from None
        columns = [self._column(name) for name in header]
        column = self._id_column([name for name, _ in columns])
        build = self._csv_row_builder(columns, column)
        width = len(header)
        # A record may span lines (a quoted cell holding a newline): errors name the line where
        # it starts, which is where an unclosed quote is.
        start = reader.line_num + 1
        try:
            for row in reader:
                if len(row) != width:
                    if not any(cell.strip() for cell in row):
                        start = reader.line_num + 1
                        continue
                    raise ValidationError(
                        self._where(start), f"{len(row)} cells, but the header has {width} columns"
                    )
                yield build(start, row)
                start = reader.line_num + 1
        except csv.Error as exc:
            hint = (
                "; a quote opened on this line is never closed" if "end of data" in str(exc) else ""
            )
            raise ValidationError(self._where(start), f"not valid CSV: {exc}{hint}") from None

    def _column(self, name: str) -> tuple[str, str | None]:
        """A header cell as the column's name and its declared type (``score:int``)."""
        base, colon, kind = name.rpartition(":")
        if not colon:
            return name, None
        if kind not in _CSV_TYPES:
            raise ValidationError(
                self._where(1, name),
                f"unknown type {kind!r} after the colon: expected one of {', '.join(_CSV_TYPES)}",
            )
        if not base:
            raise ValidationError(self._where(1, name), "a column has no name before its type")
        if base in _CSV_FIELDS:
            raise ValidationError(
                self._where(1, name), f"{base!r} sets a field of its own type: drop ':{kind}'"
            )
        return base, kind

    def _id_column(self, header: list[str]) -> int:
        seen: set[str] = set()
        for name in header:
            if not name:
                raise ValidationError(self._where(1), "a column has no name")
            if name in seen:
                raise ValidationError(self._where(1, name), "appears twice in the header")
            seen.add(name)
        if self.key is not None:
            if self.key not in header:
                raise ValidationError(
                    self._where(1, self.key),
                    f"no such column (the header has {', '.join(header)})",
                )
            return header.index(self.key)
        if "id" in header:
            return header.index("id")
        # Never guessed: a wrong guess would aim every change at the wrong processes.
        raise ValidationError(
            self._where(1),
            "no identifier column: add an 'id' column, or name the primary-key column with "
            f"--key COLUMN (the header has {', '.join(header)})",
        )

    def _csv_row_builder(
        self, columns: list[tuple[str, str | None]], id_column: int
    ) -> Callable[[int, list[str]], ProcessUpdate]:
        id_name = columns[id_column][0]
        by_id = id_name == "id"
        infer = _infer if self.infer_types else None
        # Each column's role is decided once, not per row.
        roles = [
            (index, name, _CSV_FIELDS.get(name), _CSV_TYPES[kind] if kind else infer)
            for index, (name, kind) in enumerate(columns)
            if index != id_column
        ]

        def build(line: int, row: list[str]) -> ProcessUpdate:
            identifier = row[id_column].strip()
            if not identifier:
                raise ValidationError(self._where(line, id_name), "the identifier is empty")
            fields: dict[str, Any] = {"id": identifier} if by_id else {"key": (id_name, identifier)}
            data: dict[str, Any] = {}
            for index, name, field, convert in roles:
                cell = row[index]
                if cell == "":
                    continue
                if field is not None:
                    fields[field] = _csv_value(self._where(line, name), field, cell)
                elif convert is None:
                    data[name] = cell
                else:
                    data[name] = convert(self._where(line, name), cell)
            if data:
                fields["data"] = data
            return self._build(self._where(line), fields)

        return build


def _as_int(where: str, cell: str) -> int:
    try:
        return int(cell.strip())
    except ValueError:
        raise ValidationError(where, f"expected an integer, not {cell!r}") from None


def _as_float(where: str, cell: str) -> float:
    try:
        value = float(cell.strip())
    except ValueError:
        raise ValidationError(where, f"expected a number, not {cell!r}") from None
    if not math.isfinite(value):
        raise ValidationError(where, f"expected a finite number, not {cell!r}")
    return value


def _as_bool(where: str, cell: str) -> bool:
    folded = cell.strip().lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise ValidationError(where, f"expected true or false, not {cell!r}")


def _as_json(where: str, cell: str) -> Any:
    try:
        return json.loads(cell)
    except json.JSONDecodeError as exc:
        raise ValidationError(where, f"not valid JSON: {exc.msg} (column {exc.colno})") from None


def _as_str(_where: str, cell: str) -> str:
    return cell


_CSV_TYPES: Final[Mapping[str, Callable[[str, str], Any]]] = {
    "str": _as_str,
    "int": _as_int,
    "float": _as_float,
    "bool": _as_bool,
    "json": _as_json,
}
# What --infer-types reads as a number: no sign but minus, no leading zero (a postal code or an
# account number such as 007 stays text), no exponent, no "nan" or "inf".
_INTEGER: Final = re.compile(r"-?(0|[1-9][0-9]*)")
_DECIMAL: Final = re.compile(r"-?(0|[1-9][0-9]*)\.[0-9]+")


def _infer(_where: str, cell: str) -> Any:
    if _INTEGER.fullmatch(cell):
        return int(cell)
    if _DECIMAL.fullmatch(cell):
        return float(cell)
    folded = cell.lower()
    if folded == "true":
        return True
    if folded == "false":
        return False
    return cell


def _csv_value(where: str, field: str, cell: str) -> Any:
    if field == "is_deleted":
        return _as_bool(where, cell)
    if field == "next_action_at" and not cell.strip().isdigit():
        # Besides epoch milliseconds, a CSV may hold an ISO 8601 time with its offset.
        try:
            return datetime.fromisoformat(cell.strip())
        except ValueError:
            raise ValidationError(
                where, f"expected epoch milliseconds or an ISO 8601 time, not {cell!r}"
            ) from None
    return cell
