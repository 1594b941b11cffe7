"""asyncbulk.postgres: tracking shared by many workers through PostgreSQL.

Needs the ``postgres`` extra (``pip install 'asyncbulk[postgres]'``). `PostgresStore` keeps
workers and their heartbeats, claims fenced by an epoch, finishes recorded once, deliveries to
one consumer at a time, and the journal's submissions and batches; `PostgresJournal` is the
journal protocol over it, for ``ChakraClient(journal=...)`` and ``ZefortClient(journal=...)``.
`Worker` is the engine the ``asyncbulk worker`` command runs: it tracks a share of the store's
jobs, polling them from memory (`ZefortPoller`, `ChakraPoller`), and delivers the finished ones
to a hook.
"""

from asyncbulk._exceptions import SchemaVersionError
from asyncbulk.postgres._journal import PostgresJournal
from asyncbulk.postgres._records import (
    BatchLike,
    Claim,
    Delivery,
    JobKey,
    OriginLike,
    StoredBatch,
    StoredJob,
    StoredPending,
    StoredSubmission,
    StoreStats,
    SubmissionLike,
    SweepResult,
)
from asyncbulk.postgres._schema import SCHEMA_VERSION
from asyncbulk.postgres._store import PostgresStore
from asyncbulk.postgres._worker import ChakraPoller, JobPoller, Worker, WorkerStats, ZefortPoller

__all__ = [
    "SCHEMA_VERSION",
    "BatchLike",
    "ChakraPoller",
    "Claim",
    "Delivery",
    "JobKey",
    "JobPoller",
    "OriginLike",
    "PostgresJournal",
    "PostgresStore",
    "SchemaVersionError",
    "StoreStats",
    "StoredBatch",
    "StoredJob",
    "StoredPending",
    "StoredSubmission",
    "SubmissionLike",
    "SweepResult",
    "Worker",
    "WorkerStats",
    "ZefortPoller",
]
