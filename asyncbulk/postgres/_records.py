"""What `PostgresStore` takes and gives back: plain frozen records, no connection inside.

The journal-shaped methods take any object with the journal's field names (`OriginLike`,
`BatchLike`, `SubmissionLike`), so the journal's own records fit them unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "BatchLike",
    "Claim",
    "Delivery",
    "JobKey",
    "JobKind",
    "OriginLike",
    "StoreStats",
    "StoredBatch",
    "StoredJob",
    "StoredPending",
    "StoredSubmission",
    "SubmissionLike",
    "SweepResult",
]

JobKind = Literal["job", "task"]


class OriginLike(Protocol):
    """Where a job or submission comes from: the journal's ``Origin`` has these fields."""

    @property
    def vendor(self) -> str:
        """``"chakra"`` or ``"zefort"``."""

    @property
    def base_url(self) -> str:
        """The client's base URL."""

    @property
    def account(self) -> str:
        """The account's fingerprint, never the credential."""


class BatchLike(Protocol):
    """A submission's batch: the journal's ``BatchRecord`` has these fields."""

    @property
    def start(self) -> int:
        """First input position."""

    @property
    def stop(self) -> int:
        """One past the last input position."""

    @property
    def state(self) -> str:
        """``sending``, ``accepted``, ``rejected``, ``unknown`` or ``not_sent``."""

    @property
    def job_id(self) -> str | None:
        """The job or task id of an accepted batch."""

    @property
    def error(self) -> str | None:
        """Why the batch failed or its outcome is unknown."""


class SubmissionLike(Protocol):
    """A submission: the journal's ``SubmissionRecord`` has these fields."""

    @property
    def id(self) -> str:
        """Unique in the store."""

    @property
    def origin(self) -> OriginLike:
        """The client that made it."""

    @property
    def target(self) -> str:
        """What it changes."""

    @property
    def operation(self) -> str:
        """``update`` or ``create``."""

    @property
    def request(self) -> Mapping[str, Any] | None:
        """What settles a batch left ``sending``; never a credential."""

    @property
    def batches(self) -> Sequence[BatchLike]:
        """Its batches so far."""


@attrs.frozen(kw_only=True)
class JobKey:
    """The identity of a tracked job or task in the store.

    Attributes:
        vendor: ``"chakra"`` or ``"zefort"``.
        base_url: the base URL of the clients that track it.
        account: the account's fingerprint.
        id: the job or task id.
    """

    vendor: str
    base_url: str
    account: str
    id: str


@attrs.frozen(kw_only=True)
class Claim:
    """A job a worker owns until it finishes it or loses it.

    Attributes:
        key: the job.
        kind: ``job`` or ``task``.
        epoch: the claim's fencing token: a finish counts only with the current epoch.
    """

    key: JobKey
    kind: JobKind
    epoch: int


@attrs.frozen(kw_only=True)
class Delivery:
    """A finished job handed to one consumer until it acknowledges it or its lease runs out.

    Attributes:
        key: the job.
        kind: ``job`` or ``task``.
        result: what the finishing worker recorded (JSON), or None.
        attempt: 1 for the first hand-over; more when an earlier consumer let its lease run
            out (it may have handled the job: the at-least-once window).
    """

    key: JobKey
    kind: JobKind
    result: Any
    attempt: int


@attrs.frozen(kw_only=True)
class SweepResult:
    """What a sweep did.

    Attributes:
        workers: the workers removed, their heartbeat expired.
        jobs: how many unfinished jobs were freed for others to claim.
    """

    workers: tuple[str, ...]
    jobs: int


@attrs.frozen(kw_only=True)
class StoredBatch:
    """A batch as stored (the journal's ``BatchRecord`` fields)."""

    start: int
    stop: int
    state: str
    job_id: str | None = None
    error: str | None = None


@attrs.frozen(kw_only=True)
class StoredSubmission:
    """A submission as stored (the journal's ``SubmissionRecord`` fields, origin flattened)."""

    id: str
    vendor: str
    base_url: str
    account: str
    target: str
    operation: str
    request: Mapping[str, Any] | None = attrs.field(default=None, repr=False)
    batches: tuple[StoredBatch, ...] = ()


@attrs.frozen(kw_only=True)
class StoredJob:
    """A tracked job as stored (the journal's ``TrackedJob`` fields, origin flattened)."""

    key: JobKey
    kind: JobKind
    finished: bool = False


@attrs.frozen(kw_only=True)
class StoredPending:
    """What is unfinished for one origin (the journal's ``Pending``).

    Attributes:
        submissions: submissions not ended, oldest first.
        jobs: tracked jobs not delivered, in the order they were added.
    """

    submissions: tuple[StoredSubmission, ...] = ()
    jobs: tuple[StoredJob, ...] = ()


@attrs.frozen(kw_only=True)
class StoreStats:
    """A snapshot of the statements one `PostgresStore` sent, by purpose.

    Attributes:
        statements: every statement, schema creation excluded.
        claims: claim statements.
        finishes: finish statements (each may record many jobs).
        deliveries: delivery statements (taking and acknowledging).
        heartbeats: registration, heartbeat, sweep and release statements.
        journal: journal-shaped writes and reads (submissions, batches, added jobs, pending).
    """

    statements: int = 0
    claims: int = 0
    finishes: int = 0
    deliveries: int = 0
    heartbeats: int = 0
    journal: int = 0
