"""Retries as plain data: which failures are retried, and how long to wait before each try."""

from __future__ import annotations

import email.utils
import math
import random
import time
from typing import TYPE_CHECKING

import attrs

from asyncbulk._exceptions import ValidationError
from asyncbulk._outcome import Outcome, outcome_of_status

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["RetryPolicy", "parse_retry_after"]

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _statuses(value: Iterable[int]) -> frozenset[int]:
    return frozenset(value)


def _check_seconds(name: str, value: object, *, allow_zero: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(name, f"must be a number of seconds, not {type(value).__name__}")
    if math.isnan(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValidationError(name, f"must be {'>= 0' if allow_zero else '> 0'}, not {value}")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """When to try a request again, and how long to wait first.

    Retried for every request, whatever its method: the statuses in `retry_statuses` (by default
    429, 502, 503 and 504) and connection failures that happened before the request was sent.
    Retried only for idempotent requests (GET always is; a request may be marked either way):
    any other 5xx, a garbled answer, a read timeout, a connection dropped after sending.
    Never retried: 400, 401, 403, 404 and every other 4xx but 429.

    Waits grow exponentially from `initial_wait`, capped at `max_wait`, with full jitter. A
    server's ``Retry-After`` is the least wait. No try starts once `budget` seconds have passed
    since the first, and there are at most `attempts` tries in all.

    Args:
        attempts: tries in all, the first included.
        initial_wait: the cap on the first wait, in seconds; it doubles with each try.
        max_wait: the largest cap on any one wait, in seconds.
        budget: seconds after the first try past which no other try starts.
        retry_statuses: statuses retried for every request, idempotent or not.
        wait: False turns every sleep off (backoff, pauses of the host, turns at the send-rate
            limiter), for tests.
    """

    attempts: int = 6
    initial_wait: float = 0.2
    max_wait: float = 10.0
    budget: float = 120.0
    retry_statuses: frozenset[int] = attrs.field(
        default=frozenset({429, 502, 503, 504}),
        converter=_statuses,
    )
    wait: bool = True

    def __attrs_post_init__(self) -> None:
        """Refuse settings that make no sense, naming the field."""
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ValidationError("attempts", f"must be an integer, not {self.attempts!r}")
        if self.attempts < 1:
            raise ValidationError("attempts", f"must be >= 1, not {self.attempts}")
        _check_seconds("initial_wait", self.initial_wait)
        _check_seconds("max_wait", self.max_wait)
        _check_seconds("budget", self.budget, allow_zero=False)
        if not all(isinstance(s, int) and 400 <= s <= 599 for s in self.retry_statuses):  # noqa: PLR2004
            raise ValidationError("retry_statuses", "must hold HTTP error statuses (400-599)")

    @classmethod
    def testing(cls, *, attempts: int = 6) -> RetryPolicy:
        """A policy that retries as usual but never sleeps: for fast tests."""
        return cls(attempts=attempts, wait=False)

    @classmethod
    def never(cls) -> RetryPolicy:
        """A policy that makes exactly one try."""
        return cls(attempts=1)

    def for_unrepeatable(self) -> RetryPolicy:
        """This policy for a request that must never take effect twice (a bulk submission).

        Its statuses are narrowed to those that prove the server did not act (the rule of
        `asyncbulk.Outcome`: by default 429 and 503 remain), and the request is to be sent with
        ``idempotent=False``, so a dropped connection or a read timeout is never retried either.
        """
        certain = {s for s in self.retry_statuses if outcome_of_status(s) is Outcome.NOT_APPLIED}
        return attrs.evolve(self, retry_statuses=certain)

    def retries_status(self, status: int, *, idempotent: bool) -> bool:
        """Whether an answer with this status is worth another try."""
        if status in self.retry_statuses:
            return True
        return idempotent and status >= 500 and status != 501  # noqa: PLR2004

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before try number ``attempt + 1``, ``attempt`` counting from 1."""
        cap = min(self.max_wait, self.initial_wait * 2 ** (attempt - 1))
        wait = random.uniform(0, cap)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait


def is_idempotent(method: str) -> bool:
    """Whether a request with this method may be repeated without changing the outcome."""
    return method.upper() in _IDEMPOTENT_METHODS


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait, from a ``Retry-After`` header (seconds, or an HTTP date).

    Returns None when the header is missing or unreadable, and never a negative number.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)
