"""Simulated time: every job and task of the simulator progresses by a `Clock`.

The simulator never runs a timer per job or task. It stores when each one started and computes its
progress from the clock whenever a request asks, so a clock that a test advances by hand makes a
long job finish in an instant, and a scaled clock makes simulated time run faster than the wall.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

import attrs


@runtime_checkable
class Clock(Protocol):
    """The time source of a simulator: seconds since the Unix epoch, in simulated time."""

    def now(self) -> float:
        """Return the current simulated time, in seconds since the Unix epoch."""
        ...

    def wall_time(self, simulated: float) -> float | None:
        """Return the wall-clock time (`time.time()` scale) of a simulated instant, if known."""
        ...


@attrs.define(repr=False)
class MonotonicClock:
    """Simulated time that follows the monotonic clock, optionally sped up.

    The simulated time starts at the wall time of creation and then advances `time_scale` simulated
    seconds per real second, never backwards (it is driven by `time.monotonic()`).

    Args:
        time_scale: Simulated seconds per real second; greater than 1 makes jobs finish sooner.
    """

    time_scale: float = attrs.field(default=1.0, kw_only=True)
    _wall0: float = attrs.field(init=False, factory=time.time)
    _mono0: float = attrs.field(init=False, factory=time.monotonic)

    def __attrs_post_init__(self) -> None:
        """Refuse a time scale that would stop or reverse time."""
        if not self.time_scale > 0:
            raise ValueError(f"time_scale must be positive, got {self.time_scale!r}")

    def now(self) -> float:
        """Return the current simulated time, in seconds since the Unix epoch."""
        return self._wall0 + (time.monotonic() - self._mono0) * self.time_scale

    def wall_time(self, simulated: float) -> float:
        """Return the wall time at which the simulated clock reads (or will read) `simulated`."""
        return self._wall0 + (simulated - self._wall0) / self.time_scale

    def __repr__(self) -> str:
        """Show the time scale."""
        return f"MonotonicClock(time_scale={self.time_scale!r})"


@attrs.define
class ManualClock:
    """A clock that stands still until a test moves it with `advance()` or `set()`.

    Args:
        start: The initial simulated time, in seconds since the Unix epoch.
    """

    start: float = attrs.field(default=1_700_000_000.0, kw_only=True)
    _now: float = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        """Start at `start`."""
        self._now = self.start

    def now(self) -> float:
        """Return the current simulated time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds` (never backwards).

        Raises:
            ValueError: `seconds` is negative.
        """
        if seconds < 0:
            raise ValueError(f"a clock cannot go back: advance({seconds!r})")
        self._now += seconds

    def set(self, when: float) -> None:
        """Move the clock forward to the simulated time `when`.

        Raises:
            ValueError: `when` is earlier than the current time.
        """
        if when < self._now:
            raise ValueError(f"a clock cannot go back: set({when!r}) before {self._now!r}")
        self._now = when

    def wall_time(self, simulated: float) -> None:  # noqa: ARG002 - part of the Clock protocol
        """Return None: a hand-driven clock has no fixed relation to the wall."""
        return
