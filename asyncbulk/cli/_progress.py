"""Live progress bars on stderr, drawn only when stderr is a terminal.

The work only bumps plain counters (`Meter.completed`), which costs nothing per item; rich's
refresh thread reads them a few times a second as it redraws. With stderr not a terminal (a
pipe, a log file, a test), nothing is drawn and nothing runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import TracebackType

    from rich.console import Console, RenderableType

__all__ = ["LiveProgress", "Meter"]


class Meter:
    """One progress line: a count, optionally out of a total, bumped by the work.

    Args:
        label: what is counted ("updates sent").
        total: the count at which it is complete, if known (may be set later).
        read: a function giving the count, for counts kept elsewhere (a client's retries).
    """

    __slots__ = ("completed", "label", "read", "total")

    def __init__(
        self, label: str, *, total: int | None = None, read: Callable[[], int] | None = None
    ) -> None:
        """Start at zero."""
        self.label = label
        self.total = total
        self.completed = 0
        self.read = read

    @property
    def value(self) -> int:
        """The count now."""
        return self.read() if self.read is not None else self.completed


class _CountColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        done = f"{int(task.completed):,}"
        return Text(f"{done}/{int(task.total):,}" if task.total is not None else done)


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.speed if task.fields.get("rate") else None
        return Text(f"{speed:,.0f}/s" if speed else "", style="progress.data.speed")


class _OptionalBar(ProgressColumn):
    """A bar for counts with a total; nothing for bare counts (retries)."""

    def __init__(self) -> None:
        super().__init__()
        self._bar = BarColumn(bar_width=32)

    def render(self, task: Task) -> RenderableType:
        return self._bar.render(task) if task.total is not None else Text("")


class _SyncedProgress(Progress):
    """A rich Progress that reads its meters each time it redraws."""

    def __init__(
        self, meters: list[tuple[Any, Meter]], *columns: ProgressColumn, **kwargs: Any
    ) -> None:
        # Set first: rich draws once while constructing.
        self._meters = meters
        super().__init__(*columns, **kwargs)

    def sync(self) -> None:
        for task_id, meter in self._meters:
            self.update(task_id, completed=meter.value, total=meter.total)

    def get_renderables(self) -> Iterable[RenderableType]:
        self.sync()
        yield from super().get_renderables()


class LiveProgress:
    """A set of progress lines, drawn live on a terminal while the ``with`` block runs.

    Args:
        console: the console to draw on (stderr's).
        enabled: whether to draw; by default when the console is a terminal.
    """

    def __init__(self, console: Console, *, enabled: bool | None = None) -> None:
        """Prepare the display; nothing is drawn before the ``with`` block."""
        self.enabled = console.is_terminal if enabled is None else enabled
        self._meters: list[tuple[Any, Meter]] = []
        self._progress = _SyncedProgress(
            self._meters,
            *(
                TextColumn("{task.description:<16}"),
                _OptionalBar(),
                _CountColumn(),
                _RateColumn(),
                TimeElapsedColumn(),
            ),
            console=console,
            refresh_per_second=8,
            # Speeds over a short window, so "entries/s" follows the work as it changes.
            speed_estimate_period=3.0,
        )

    def add(
        self,
        label: str,
        *,
        total: int | None = None,
        read: Callable[[], int] | None = None,
        rate: bool = False,
    ) -> Meter:
        """Add a line and return its meter; `rate` shows the count's speed per second."""
        meter = Meter(label, total=total, read=read)
        if self.enabled:
            task_id = self._progress.add_task(label, total=total, rate=rate)
            self._meters.append((task_id, meter))
        return meter

    def __enter__(self) -> Self:
        """Start drawing."""
        if self.enabled:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Draw the final counts and stop."""
        if self.enabled:
            self._progress.sync()
            self._progress.stop()
