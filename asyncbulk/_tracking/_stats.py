"""`TrackerStats`: frozen snapshots of what a tracker has done, and the counters behind them."""

from __future__ import annotations

import math
import types
from array import array
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Counters", "Lags", "TrackerStats"]


class Lags:
    """Detection lags, appended only: a snapshot reads the first ``n`` and they never change."""

    __slots__ = ("_sorted", "_values")

    def __init__(self) -> None:
        """No samples yet."""
        self._values = array("d")
        self._sorted: list[float] = []

    def __len__(self) -> int:
        """How many samples so far."""
        return len(self._values)

    def append(self, lag: float) -> None:
        """Add one sample, in seconds."""
        self._values.append(lag)

    def quantile(self, q: float, n: int) -> float | None:
        """The ``q`` quantile of the first ``n`` samples; None without any."""
        if n == 0:
            return None
        if len(self._sorted) != n:
            # Sorted once per snapshot size that is asked about, not once per sample.
            self._sorted = sorted(self._values[:n])
        return self._sorted[min(n - 1, math.floor(q * n))]


_NO_LAGS = Lags()


@attrs.frozen(kw_only=True)
class TrackerStats:
    """What a tracker had done when the snapshot was taken, for progress displays.

    A snapshot never changes: read ``tracker.stats`` again for fresh counts.

    Attributes:
        tracked: jobs being followed (neither finished, expired nor lost).
        finished: jobs detected finished, failures included.
        failed: jobs detected finished in failure.
        expired: jobs dropped when their own deadline passed.
        lost: jobs the server said do not exist.
        in_flight: polls, sweeps and acknowledgements running.
        polls: individual fetches made.
        sweeps: listings read.
        poll_errors: polls and sweeps that failed and were rescheduled.
        requests: requests the client sent while the tracker ran (every page and retry
            counted), when the source exposes its client's `RequestStats`; else polls + sweeps.
        rate_limited: 429 answers met while the tracker ran (same source as ``requests``).
        acknowledged: jobs acknowledged after the consumer took them.
        unacknowledged: jobs whose acknowledgement failed or did not settle in time.
        entries: entries per completion status over every job followed, where the vendor
            counts them (Chakra's ``_meta.bjEntryCompletionStatusVsCount``): it moves while
            a large job runs, before any job finishes.
    """

    tracked: int = 0
    finished: int = 0
    failed: int = 0
    expired: int = 0
    lost: int = 0
    in_flight: int = 0
    polls: int = 0
    sweeps: int = 0
    poll_errors: int = 0
    requests: int = 0
    rate_limited: int = 0
    acknowledged: int = 0
    unacknowledged: int = 0
    entries: Mapping[str, int] = attrs.field(factory=lambda: types.MappingProxyType({}))
    _lags: Lags = attrs.field(default=_NO_LAGS, alias="lags", eq=False, repr=False)
    _lag_count: int = attrs.field(default=0, alias="lag_count", repr=False)

    @property
    def lag_p50(self) -> float | None:
        """Median seconds between a job finishing on the server and the tracker seeing it."""
        return self._lags.quantile(0.5, self._lag_count)

    @property
    def lag_p99(self) -> float | None:
        """99th percentile of the detection lag, in seconds; None before any sample."""
        return self._lags.quantile(0.99, self._lag_count)

    @property
    def lag_samples(self) -> int:
        """How many finished jobs said when they finished."""
        return self._lag_count


class Counters:
    """The tracker's live counts; only `snapshot` lets them out, frozen."""

    __slots__ = (
        "acknowledged",
        "entries",
        "expired",
        "failed",
        "finished",
        "lags",
        "lost",
        "poll_errors",
        "polls",
        "rate_limited",
        "requests",
        "sweeps",
        "unacknowledged",
    )

    def __init__(self) -> None:
        """All zero."""
        self.finished = self.failed = self.expired = self.lost = 0
        self.polls = self.sweeps = self.poll_errors = 0
        self.requests = self.rate_limited = 0
        self.acknowledged = self.unacknowledged = 0
        self.entries: dict[str, int] = {}
        self.lags = Lags()

    def snapshot(self, *, tracked: int, in_flight: int) -> TrackerStats:
        """The counts now, frozen."""
        return TrackerStats(
            tracked=tracked,
            finished=self.finished,
            failed=self.failed,
            expired=self.expired,
            lost=self.lost,
            in_flight=in_flight,
            polls=self.polls,
            sweeps=self.sweeps,
            poll_errors=self.poll_errors,
            requests=self.requests,
            rate_limited=self.rate_limited,
            acknowledged=self.acknowledged,
            unacknowledged=self.unacknowledged,
            entries=types.MappingProxyType(dict(self.entries)),
            lags=self.lags,
            lag_count=len(self.lags),
        )
