"""The journal: submissions and tracked jobs recorded so that work survives a restart.

`Journal` is the protocol; `SQLiteJournal` keeps the records in a file, `MemoryJournal` in
memory (what a client uses when given no journal). `SubmissionLog` and `TrackingLog` are what
the submission and tracking code call, so which writes wait for the disk is decided in one
place. `open_journal` turns a client's ``journal=`` argument into a journal and says whether
the client owns it.
"""

from __future__ import annotations

import os

from asyncbulk._exceptions import ValidationError
from asyncbulk._handles import Origin, check_account
from asyncbulk._journal._memory import MemoryJournal
from asyncbulk._journal._protocol import JobKind, Journal, Pending, SubmissionRecord, TrackedJob
from asyncbulk._journal._recorders import SubmissionLog, TrackingLog
from asyncbulk._journal._sqlite import SCHEMA_VERSION, JournalStats, SQLiteJournal

__all__ = [
    "SCHEMA_VERSION",
    "JobKind",
    "Journal",
    "JournalStats",
    "MemoryJournal",
    "Pending",
    "SQLiteJournal",
    "SubmissionLog",
    "SubmissionRecord",
    "TrackedJob",
    "TrackingLog",
    "open_journal",
]


def open_journal(
    journal: Journal | str | os.PathLike[str] | None, origin: Origin | None = None
) -> tuple[Journal, bool]:
    """The journal a client's ``journal=`` names, and whether the client must close it.

    A path opens a `SQLiteJournal` the client owns; a `Journal` is used as given and left to
    its owner to close; None is a `MemoryJournal`. A journal that outlives the process must
    know whose records it holds: ``origin`` (the client's) must name its account.

    Raises:
        ValidationError: `journal` is neither a path nor a `Journal`, or ``origin``'s account
            is unknown (a credential function without ``account=``).
    """
    if journal is None:
        return MemoryJournal(), True
    if origin is not None:
        check_account(origin)
    if isinstance(journal, str | os.PathLike):
        return SQLiteJournal(journal), True
    if not isinstance(journal, Journal):
        raise ValidationError(
            "journal", f"must be a path or a Journal, not {type(journal).__name__}"
        )
    return journal, False
