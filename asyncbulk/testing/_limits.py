"""Rate limits as a real API enforces them: a token bucket per credential, and Retry-After forms.

A `TokenBucket` refuses a request with 429 when its credential has no token left, with a
``Retry-After`` either fixed or computed (when the next token comes). Every form a server may
write that header in is available, to both the bucket and "status" faults: seconds, an HTTP
date, none at all, garbage, or a value longer than any deadline.
"""

from __future__ import annotations

import email.utils
import math
import time
from typing import Any, Literal, get_args

import attrs

RetryAfterForm = Literal["seconds", "http-date", "absent", "garbage", "huge"]
_FORMS = frozenset(get_args(RetryAfterForm))
#: What the "huge" form sends: a day, far longer than any caller's deadline.
HUGE_RETRY_AFTER = "86400"
#: What the "garbage" form sends: no parser can read it as seconds or a date.
GARBAGE_RETRY_AFTER = "soon-ish, maybe"


def check_form(_: object, __: object, form: str) -> None:
    """Refuse an unknown Retry-After form."""
    if form not in _FORMS:
        raise ValueError(f"unknown Retry-After form {form!r}: expected one of {sorted(_FORMS)}")


def retry_after_header(seconds: float | None, form: RetryAfterForm) -> str | None:
    """The ``Retry-After`` value to send for a wait of ``seconds`` in ``form`` (None: no header).

    "seconds" writes the number (fractions kept), "http-date" the wall-clock moment rounded up
    to the second, "absent" nothing, "garbage" text no parser reads, "huge" a day.
    """
    if form == "absent":
        return None
    if form == "garbage":
        return GARBAGE_RETRY_AFTER
    if form == "huge":
        return HUGE_RETRY_AFTER
    wait = 0.0 if seconds is None else seconds
    if form == "http-date":
        return email.utils.formatdate(math.ceil(time.time() + wait), usegmt=True)
    return format(round(wait, 3), "g")


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.define
class _Bucket:
    tokens: float
    at: float


@attrs.define
class TokenBucket:
    """A token bucket per credential: `rate` requests a second each, `burst` at once.

    Every request to a vendor with the same ``Authorization`` header draws from one bucket,
    whatever its path, as a rate limit per API key does. A request that finds the bucket empty
    is answered 429 without being handled, and takes no token.

    Args:
        rate: tokens added per second (real time, whatever the simulated clock does).
        burst: the bucket's size: requests that may go at once after a quiet spell.
        retry_after: the wait announced in ``Retry-After``; None computes it (when the next
            token comes).
        retry_after_form: how the header is written (see `RetryAfterForm`).

    Raises:
        ValueError: a value is out of range.
    """

    rate: float = attrs.field(validator=_positive)
    burst: int = attrs.field(default=1, validator=_positive)
    retry_after: float | None = attrs.field(default=None, kw_only=True)
    retry_after_form: RetryAfterForm = attrs.field(
        default="seconds", kw_only=True, validator=check_form
    )
    _buckets: dict[tuple[str, str], _Bucket] = attrs.field(factory=dict, init=False, repr=False)
    refused: int = attrs.field(default=0, init=False)

    def admit(self, vendor: str, credential: str, now: float | None = None) -> float | None:
        """Take a token for this credential; return None if admitted, else the wait to announce."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get((vendor, credential))
        if bucket is None:
            bucket = self._buckets[vendor, credential] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        self.refused += 1
        if self.retry_after is not None:
            return self.retry_after
        return (1 - bucket.tokens) / self.rate
