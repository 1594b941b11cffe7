"""The one rule for "did the server act on this request?", table by table."""

from __future__ import annotations

import pytest

from asyncbulk import (
    APIError,
    AuthenticationError,
    ClientClosedError,
    DeadlineExceededError,
    Outcome,
    ProtocolError,
    RateLimitedError,
    RetryPolicy,
    ServerError,
    TransportError,
    ValidationError,
    outcome_of,
)
from asyncbulk._outcome import outcome_of_status

APPLIED, NOT_APPLIED, UNKNOWN = Outcome.APPLIED, Outcome.NOT_APPLIED, Outcome.UNKNOWN

STATUSES = [
    (200, APPLIED),
    (201, APPLIED),
    (202, APPLIED),
    (204, APPLIED),
    (400, NOT_APPLIED),
    (401, NOT_APPLIED),
    (403, NOT_APPLIED),
    (404, NOT_APPLIED),
    (405, NOT_APPLIED),
    (408, UNKNOWN),
    (409, NOT_APPLIED),
    (413, NOT_APPLIED),
    (422, NOT_APPLIED),
    (429, NOT_APPLIED),
    (500, UNKNOWN),
    (501, UNKNOWN),
    (502, UNKNOWN),
    (503, NOT_APPLIED),
    (504, UNKNOWN),
    (599, UNKNOWN),
]


def _api(status: int) -> APIError:
    kwargs = {"status": status, "method": "PATCH", "url": "http://127.0.0.1/x"}
    if status in {401, 403}:
        return AuthenticationError(**kwargs)
    if status == 429:
        return RateLimitedError(retry_after=None, **kwargs)
    if status >= 500:
        return ServerError(**kwargs)
    return APIError(**kwargs)


@pytest.mark.parametrize(("status", "expected"), STATUSES, ids=[str(s) for s, _ in STATUSES])
def test_status_outcome(status: int, expected: Outcome) -> None:
    """Each status says what the table says, as a status and as the error it becomes."""
    assert outcome_of_status(status) is expected
    if status >= 400:
        assert outcome_of(_api(status)) is expected


def _after(cause: BaseException) -> DeadlineExceededError:
    """A deadline that cut the wait for a retry after ``cause``."""
    error = DeadlineExceededError("deadline passed before the retry")
    error.__cause__ = cause
    return error


ERRORS = [
    (
        "refused",
        TransportError("could not connect", method="PATCH", url="u", sent=False),
        NOT_APPLIED,
    ),
    ("dropped", TransportError("connection reset", method="PATCH", url="u", sent=True), UNKNOWN),
    ("read timeout", TransportError("timed out", method="PATCH", url="u", sent=True), UNKNOWN),
    ("unreadable 2xx", ProtocolError("answer is not JSON", status=200), UNKNOWN),
    ("caller mistake", ValidationError("updates[3].status", "bad"), NOT_APPLIED),
    ("closed client", ClientClosedError("closed"), NOT_APPLIED),
    ("redirect 307 not followed", ProtocolError("to elsewhere", status=307), NOT_APPLIED),
    ("redirect 308 not followed", ProtocolError("to elsewhere", status=308), NOT_APPLIED),
    ("see other 303", ProtocolError("see other", status=303), UNKNOWN),
    ("deadline before sending", DeadlineExceededError("deadline passed"), NOT_APPLIED),
    (
        "deadline after a dropped try",
        _after(TransportError("reset", method="PATCH", url="u", sent=True)),
        UNKNOWN,
    ),
    ("deadline after a 429", _after(_api(429)), NOT_APPLIED),
    ("anything else", RuntimeError("a bug"), UNKNOWN),
]


@pytest.mark.parametrize(("error", "expected"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_error_outcome(error: BaseException, expected: Outcome) -> None:
    """A failure without a status is certain only with proof that nothing was sent."""
    assert outcome_of(error) is expected


def test_unrepeatable_policy_retries_only_certain_refusals() -> None:
    """The unrepeatable policy keeps exactly the retry statuses the rule calls not applied."""
    policy = RetryPolicy(retry_statuses={408, 409, 429, 500, 501, 502, 503, 504})
    narrowed = policy.for_unrepeatable().retry_statuses
    assert narrowed == {s for s in policy.retry_statuses if outcome_of_status(s) is NOT_APPLIED}
    assert narrowed == {409, 429, 503}
