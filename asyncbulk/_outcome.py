"""The one rule for "did the server act on this request?", shared by every client.

A request that must never take effect twice (a bulk submission) is sent again, adopted or
resubmitted only on what this rule says:

- `Outcome.APPLIED`: a 2xx answer that could be read. The server took the request.
- `Outcome.NOT_APPLIED`, certain: a 4xx other than 408 (429 included: refused before any work),
  a 503 (the service was not there), a connection refused or never made, a request never
  written, a caller's mistake caught before sending, a closed client, a redirect not followed
  (301, 302, 307, 308), a deadline that passed before the request was sent.
- `Outcome.UNKNOWN`: the request was sent and then the answer was lost or says nothing
  certain: the connection dropped, the read timed out, a 408, any other 5xx (500, 501, 502,
  504: a gateway may have passed the request on, or the app may have failed half-way), a 2xx
  whose body could not be read (a middlebox may have answered in the app's place). Anything
  else unexpected is unknown too: only proof makes an outcome certain.
"""

from __future__ import annotations

import enum
from typing import Final

from asyncbulk._exceptions import (
    APIError,
    ClientClosedError,
    DeadlineExceededError,
    ProtocolError,
    TransportError,
    ValidationError,
)

__all__ = ["NOT_APPLIED_5XX", "Outcome", "outcome_of", "outcome_of_status"]

#: The only 5xx that proves the request was not acted on: the service was not there.
NOT_APPLIED_5XX: Final = frozenset({503})
#: Redirects that say "not here": the server that answered did not act, and the library never
#: follows a request with a body. 303 ("see other") may follow a POST that was carried out.
_NOT_HERE_3XX: Final = frozenset({301, 302, 307, 308})
#: The only 4xx that does not prove it: the server gave up reading a request it may have used.
_UNKNOWN_4XX: Final = frozenset({408})


class Outcome(enum.StrEnum):
    """Whether the server acted on a request: applied, certainly not applied, or unknown."""

    APPLIED = "applied"
    NOT_APPLIED = "not_applied"
    UNKNOWN = "unknown"


def outcome_of_status(status: int) -> Outcome:
    """What an answer with this HTTP status says about the request it answers.

    Args:
        status: the HTTP status code.
    """
    if 200 <= status < 300:  # noqa: PLR2004
        return Outcome.APPLIED
    if 400 <= status < 500:  # noqa: PLR2004
        return Outcome.UNKNOWN if status in _UNKNOWN_4XX else Outcome.NOT_APPLIED
    if status in NOT_APPLIED_5XX:
        return Outcome.NOT_APPLIED
    return Outcome.UNKNOWN


def outcome_of(error: BaseException) -> Outcome:
    """What the error a request ended with says about whether the server acted on it.

    Args:
        error: the exception the request raised.
    """
    if isinstance(error, APIError):
        return outcome_of_status(error.status)
    if isinstance(error, TransportError):
        return Outcome.UNKNOWN if error.sent else Outcome.NOT_APPLIED
    if isinstance(error, ValidationError | ClientClosedError):
        return Outcome.NOT_APPLIED
    if isinstance(error, DeadlineExceededError):
        # Raised before a try was sent, or instead of a retry: the last try decides.
        cause = error.__cause__
        return Outcome.NOT_APPLIED if cause is None else outcome_of(cause)
    if isinstance(error, ProtocolError) and error.status in _NOT_HERE_3XX:
        return Outcome.NOT_APPLIED
    # ProtocolError (a 2xx that could not be read) and anything unforeseen: no proof either way.
    return Outcome.UNKNOWN
