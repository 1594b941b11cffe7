"""Type-checked, never run: the public API as a user writes it must pass mypy --strict."""

from __future__ import annotations

import asyncbulk
from asyncbulk import JobTimeoutError, RetryPolicy, Timeouts, ValidationError


def configure() -> tuple[RetryPolicy, Timeouts]:
    """Retry and timeout settings are keyword-only frozen values."""
    policy = RetryPolicy(attempts=3, initial_wait=0.1, max_wait=2.0, budget=30.0)
    fast = RetryPolicy.testing()
    timeouts = Timeouts(connect=5.0, total=30.0, read=None)
    assert policy.retries_status(503, idempotent=False)
    assert fast.wait is False
    return policy, timeouts


def handle(error: Exception) -> str:
    """The error tree narrows as users expect."""
    if isinstance(error, ValidationError):
        return error.field
    if isinstance(error, JobTimeoutError):
        return ", ".join(error.unfinished)
    if isinstance(error, asyncbulk.APIError):
        return f"{error.status} {error.method} {error.url}"
    return str(error)
