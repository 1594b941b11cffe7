"""What the tracker asks of each request it causes: its priority and its deadline.

Polls and listing sweeps detect (``Priority.DETECT``); acknowledgements are housekeeping
(``Priority.HOUSEKEEPING``); every one of them must end by the tracker's deadline. The session's
flow control reads both as keyword arguments of ``Session.request``; every request the tracking
code sends passes them through `request_keywords`, so this one function decides what reaches
the session.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import anyio

from asyncbulk._flow import Priority

__all__ = ["request_keywords", "session_deadline"]


def request_keywords(
    purpose: Literal["detect", "housekeeping"], deadline: float | None
) -> dict[str, Any]:
    """The keyword arguments of ``Session.request`` for a request the tracker sends.

    Args:
        purpose: "detect" for polls and sweeps, "housekeeping" for acknowledgements.
        deadline: the tracker's deadline, absolute in `time.monotonic` seconds; None for none.

    Returns:
        ``priority`` and ``deadline`` for ``Session.request``.
    """
    return {"priority": Priority[purpose.upper()], "deadline": session_deadline(deadline)}


def session_deadline(deadline: float | None) -> float | None:
    """The tracker's deadline on the session's clock (`anyio.current_time`), inside the loop."""
    if deadline is None:
        return None
    return deadline - time.monotonic() + anyio.current_time()
