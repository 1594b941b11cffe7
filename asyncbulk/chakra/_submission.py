"""What a bulk submission produced: its jobs, the input each carries, and what became of it."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import anyio
import attrs
import orjson

from asyncbulk._exceptions import AsyncBulkError, ProtocolError, ValidationError, scrub
from asyncbulk._handles import BatchRecord, submission_handle
from asyncbulk.chakra._models import (
    BackgroundJob,
    JobEntry,
    ProcessCreate,
    ProcessUpdate,
    encode_default,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Sequence

    from asyncbulk._tracking import TrackerStats
    from asyncbulk.chakra._client import ChakraClient

__all__ = [
    "BatchError",
    "BatchOutcome",
    "BatchState",
    "BulkSubmission",
    "FailedEntry",
    "PositionOutcome",
    "SubmissionSummary",
]

Operation = Literal["update", "create"]
#: What became of one batch: on the wire, accepted (with its job, when the server named one),
#: certainly not applied (rejected), perhaps applied (unknown), or never sent.
BatchState = Literal["sending", "accepted", "rejected", "unknown", "not_sent"]
# Entry statuses whose change did not take effect and may be sent again as it was.
_RETRYABLE = ("ERROR", "CANCELLED")
_SUMMARY_JOBS_IN_FLIGHT = 8
_DICTS = frozenset({dict})


class BatchError(AsyncBulkError):
    """One batch of a bulk submission failed: it was refused, or its outcome is unknown.

    Attributes:
        positions: the input positions the batch carried.
        error: the error the request ended with (also this exception's ``__cause__``).
        outcome_unknown: True when the server may have received the batch and started a job
            anyway (the connection dropped after sending, a 5xx other than 503, an answer we
            could not read); sending it again may then apply it twice.
        items: the batch's items, to resend.
    """

    def __init__(
        self,
        *,
        positions: range,
        error: BaseException,
        outcome_unknown: bool,
        items: Sequence[Any],
        name: str = "updates",
    ) -> None:
        """Name the batch's positions and keep its error and items."""
        unknown = " (outcome unknown: it may have been applied)" if outcome_unknown else ""
        super().__init__(
            f"{name}[{positions.start}:{positions.stop}] not accepted{unknown}: {error}"
        )
        self.positions = positions
        self.error = error
        self.outcome_unknown = outcome_unknown
        self.items = tuple(items)
        self.__cause__ = error


class SentItems:
    """A batch's items as they went on the wire: their JSON array, read back only when asked.

    A sent batch keeps its encoded items (one bytes object, which the cyclic collector never
    visits), and which of them were given as models, not one object per item: a submission
    of a million updates holds no million dicts once its batches are answered.
    """

    __slots__ = ("_count", "_model", "_models", "_wire")

    def __init__(
        self,
        wire: bytes,
        count: int,
        *,
        models: bytes = b"",
        model: type[ProcessUpdate | ProcessCreate] = ProcessUpdate,
    ) -> None:
        """Keep the encoded array of `count` items; `models` marks (1) those given as `model`."""
        self._wire = wire
        self._count = count
        self._models = models
        self._model = model

    def __len__(self) -> int:
        """How many items the batch carried."""
        return self._count

    def __repr__(self) -> str:
        """The count only: the items may be many."""
        return f"<SentItems of {self._count} items>"

    @property
    def encoded(self) -> bytes:
        """The items' JSON array, as sent."""
        return self._wire

    def wire(self) -> list[Any]:
        """The items as sent, each in its wire form."""
        items: list[Any] = orjson.loads(self._wire)
        return items

    def items(self) -> tuple[Any, ...]:
        """The items: each mapping as sent, each model rebuilt from its wire form (equal)."""
        wire = self.wire()
        if not self._models:
            return tuple(wire)
        rebuild = self._model.from_mapping
        return tuple(
            rebuild(item) if mark else item for item, mark in zip(wire, self._models, strict=True)
        )


def _as_items(items: tuple[Any, ...] | SentItems) -> tuple[Any, ...]:
    return items.items() if isinstance(items, SentItems) else items


def encode_batch(
    batch: Sequence[Any],
    operation: Operation,
    name: str,
    start: int,
    *,
    kinds: set[type] | None = None,
) -> tuple[bytes, SentItems]:
    """A checked batch's request body, encoded once, and its items as `BatchOutcome` keeps them.

    Items are wire dicts (sent as they are) or `ProcessUpdate`/`ProcessCreate` models;
    `kinds` is the set of their types, when the caller has read it already.

    Raises:
        ValidationError: an item the encoder refuses (an integer too large for JSON numbers,
            nesting too deep), named by its input position.
    """
    encoder = BatchEncoder(operation, name, start)
    encoder.add(batch, kinds=kinds)
    return encoder.finish()


class BatchEncoder:
    """One batch's request body, encoded a slice of checked items at a time.

    A submission reads its input a slice at a time and encodes each slice at once, so that a
    slice's items die before the next is read: the caller's objects are never alive a batch at
    a time, and the cyclic collector, which runs after every few hundred new objects, seldom
    finds one to visit. Items are wire dicts (sent as they are) or `ProcessUpdate` and
    `ProcessCreate` models, put in wire form by the encoder as it reaches each.
    """

    __slots__ = ("_count", "_counts", "_marks", "_name", "_operation", "_parts", "_start")

    def __init__(self, operation: Operation, name: str, start: int) -> None:
        """An empty batch whose first item is at input position `start`."""
        self._operation: Operation = operation
        self._name = name
        self._start = start
        self._count = 0
        self._parts: list[bytes] = []
        self._counts: list[int] = []
        # Per slice: b"" when every item is a dict, else one mark per item (1: a model).
        self._marks: list[bytes] = []

    def __len__(self) -> int:
        """How many items the batch holds so far."""
        return self._count

    def add(self, items: Sequence[Any], *, kinds: set[type] | None = None) -> None:
        """Encode the next checked items; `kinds` is the set of their types, when known.

        Raises:
            ValidationError: an item the encoder refuses (an integer too large for JSON
                numbers, nesting too deep), named by its input position; the batch is as it was.
        """
        if not items:
            return
        if kinds is None:
            kinds = set(map(type, items))
        if dict not in kinds:
            marks = b"\x01" * len(items)
        elif kinds == _DICTS:
            marks = b""
        else:
            marks = bytes(type(item) is not dict for item in items)
        position = self._start + self._count
        try:
            encoded = orjson.dumps(items, default=encode_default)
        except orjson.JSONEncodeError:
            _raise_unencodable(items, self._name, position)
            raise ValidationError(self._name, "a batch is not JSON") from None
        self._parts.append(encoded)
        self._counts.append(len(items))
        self._marks.append(marks)
        self._count += len(items)

    def sent(self) -> SentItems:
        """The items so far, as `BatchOutcome` keeps them."""
        parts = self._parts
        if not parts:
            wire = b"[]"
        elif len(parts) == 1:
            wire = parts[0]
        else:
            # Each part is a JSON array of at least one item: their insides, comma-joined.
            wire = b"".join((b"[", b",".join(part[1:-1] for part in parts), b"]"))
        model = ProcessUpdate if self._operation == "update" else ProcessCreate
        return SentItems(wire, self._count, models=self._joined_marks(), model=model)

    def finish(self) -> tuple[bytes, SentItems]:
        """The request body and the items as `BatchOutcome` keeps them."""
        sent = self.sent()
        if self._operation == "update":
            return b"".join((b'{"processes":', sent.encoded, b"}")), sent
        return sent.encoded, sent

    def _joined_marks(self) -> bytes:
        marks = self._marks
        if len(marks) == 1:
            return marks[0]
        if not any(marks):
            return b""
        return b"".join(
            mark or b"\x00" * count for mark, count in zip(marks, self._counts, strict=True)
        )


def _raise_unencodable(batch: Sequence[Any], name: str, start: int) -> None:
    for offset, item in enumerate(batch):
        try:
            orjson.dumps(item, default=encode_default)
        except orjson.JSONEncodeError as exc:
            raise ValidationError(f"{name}[{start + offset}]", f"is not JSON: {exc}") from None


@attrs.frozen
class BatchOutcome:
    """What became of one batch of a submission: the input positions it carried and its state.

    Attributes:
        start: the first input position of the batch.
        stop: the position after its last (half-open, like a range).
        state: ``"sending"`` while on the wire (only reported through ``on_state``), then
            ``"accepted"``, ``"rejected"`` (certainly not applied), ``"unknown"`` (sent, and
            the answer was lost or says nothing certain: it may have been applied) or
            ``"not_sent"``.
        job: the background job the server started, when accepted with a job id; None for
            an answer that names no job (Chakra's bulk create may answer ``{}``).
        error: why a batch was rejected, unknown or not sent.
        warnings: the ``_errors`` the server sent with an answer that accepted the batch.
        items: the batch's items as sent: each mapping given as the checked wire form it was
            sent as, each `ProcessUpdate` or `ProcessCreate` given as one equal to it, rebuilt
            from what was sent. Items a batch never read through are as given: all of a batch
            not sent because an earlier one stopped the submission, and, in a batch stopped by
            a bad item, that item's slice of the input and what follows it. A sent batch keeps
            its items encoded and reads them back each time this is asked for.
    """

    start: int
    stop: int
    state: BatchState
    job: BackgroundJob | None = None
    error: BaseException | None = None
    warnings: tuple[str, ...] = ()
    _items: tuple[Any, ...] | SentItems = attrs.field(
        default=(), alias="items", repr=False, eq=_as_items, hash=False
    )

    @property
    def items(self) -> tuple[Any, ...]:
        """The batch's items (see the class's attributes)."""
        return _as_items(self._items)

    @property
    def positions(self) -> range:
        """The input positions the batch carried."""
        return range(self.start, self.stop)

    @property
    def job_id(self) -> str | None:
        """The id of the batch's job, when it has one."""
        return None if self.job is None else self.job.id

    @property
    def message(self) -> str | None:
        """The error's message, for a batch that failed or was not sent."""
        return None if self.error is None else str(self.error)


@attrs.frozen
class PositionOutcome:
    """What became of one input position.

    Attributes:
        position: the input position.
        state: its batch's state (`BatchOutcome.state`).
        job_id: the job that carries it, when accepted with one.
        entry_status: after `BulkSubmission.summary`, the completion status of its entry
            (SUCCESS, ERROR, INVALID, CANCELLED, NOT_STARTED, IN_PROGRESS); None before, for a
            batch that is not accepted, or when its job's entries could not be matched to its
            items.
        message: the batch's error, or the entry's validation or completion message.
        item: the item as sent (or as given, for an item never read through).
    """

    position: int
    state: BatchState
    job_id: str | None
    entry_status: str | None
    message: str | None
    item: Any = attrs.field(repr=False)


@attrs.frozen
class FailedEntry:
    """An entry that did not succeed, with where it came from.

    Attributes:
        entry: the entry as the server lists it.
        job_id: the background job it belongs to.
        positions: the input positions of the batch that carried it.
        message: the server's reason (validation message, or completion message).
        position: the input position of its item, when the job's entries could be matched to
            the batch's items one for one (see `BulkSubmission.summary`); else None.
    """

    entry: JobEntry
    job_id: str
    positions: range
    message: str
    position: int | None = None


@attrs.frozen
class SubmissionSummary:
    """Counts and failures across every job of a submission.

    Attributes:
        counts: entries per completion status, over all jobs (as the jobs report them).
        failed: entries that ended in ERROR or CANCELLED.
        invalid: entries the server refused as INVALID.
        failed_batches: batches that were rejected or whose outcome is unknown.
        jobs: the jobs as last fetched.
        mismatches: where the entries read disagree with a job's per-status counts, or with
            its batch (a job listing more or fewer entries than the batch had items); empty
            when everything agrees.
    """

    counts: Mapping[str, int]
    failed: tuple[FailedEntry, ...]
    invalid: tuple[FailedEntry, ...]
    failed_batches: tuple[BatchError, ...]
    jobs: tuple[BackgroundJob, ...]
    mismatches: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        """Whether every job had finished when the summary was made."""
        return all(job.is_finished for job in self.jobs)

    @property
    def succeeded(self) -> int:
        """Entries that succeeded."""
        return self.counts.get("SUCCESS", 0)

    @property
    def ok(self) -> bool:
        """Whether everything finished, nothing failed or was left unsent, and all agreed."""
        return (
            self.finished
            and not self.failed
            and not self.invalid
            and not self.failed_batches
            and not self.mismatches
            and not any(self.counts.get(s) for s in ("ERROR", "INVALID", "CANCELLED"))
        )


@attrs.frozen(eq=False)
class BulkSubmission:
    """What became of every batch of a bulk submission, in input order.

    Every input position read is in exactly one batch of `outcomes`, whose state is accepted,
    rejected, unknown or not sent. `failed_updates` yields only what certainly did not take
    effect; `unknown_updates` the items whose batches may or may not have been applied.

    Attributes:
        procedure: the procedure id or short id the submission went to.
        operation: ``"update"`` or ``"create"``.
        outcomes: every batch, in input order, covering positions 0 to the last one read.
        stopped_by: the error that stopped sending (one every later batch would meet, an
            invalid item, or the last of a run of consecutive failures); None otherwise.
        submission_id: its id in the client's journal (None for one built by hand).
    """

    procedure: str
    operation: Operation
    outcomes: tuple[BatchOutcome, ...]
    stopped_by: BaseException | None = None
    _client: ChakraClient = attrs.field(repr=False, alias="client", kw_only=True)
    submission_id: str | None = attrs.field(default=None, kw_only=True)
    _entries: dict[int, tuple[tuple[str, str | None], ...]] = attrs.field(
        factory=dict, repr=False, init=False
    )
    # The failed entries of the last summary made once every job had finished: final, so
    # `failed_updates` need not read them again.
    _final: list[SubmissionSummary] = attrs.field(factory=list, repr=False, init=False)

    def handle(self) -> dict[str, Any]:
        """The submission as a small versioned JSON dict, for `ChakraClient.resume`.

        It names the vendor, base URL, account fingerprint (never the credential), the
        submission's journal id, its procedure and operation, and every batch with its input
        positions, state, job id and error; not the items.

        Raises:
            ValidationError: the submission has no journal id (built by hand), or the
                client's account is unknown (a credential function without ``account=``).
        """
        if self.submission_id is None:
            raise ValidationError("handle", "this submission was not made by a client")
        return submission_handle(
            self._client._origin,  # noqa: SLF001 -- the client that made it
            submission_id=self.submission_id,
            target=self.procedure,
            operation=self.operation,
            batches=[
                BatchRecord(
                    start=b.start,
                    stop=b.stop,
                    state=b.state,
                    job_id=b.job_id if b.state == "accepted" else None,
                    error=None if b.message is None else scrub(b.message),
                )
                for b in self.outcomes
            ],
        )

    @property
    def accepted(self) -> tuple[BatchOutcome, ...]:
        """The accepted batches, with or without a job."""
        return tuple(b for b in self.outcomes if b.state == "accepted")

    @property
    def jobs(self) -> tuple[BackgroundJob, ...]:
        """The acknowledged background jobs, one per batch accepted with a job, in input order."""
        return tuple(b.job for b in self.outcomes if b.job is not None)

    @property
    def job_ids(self) -> tuple[str, ...]:
        """The jobs' ids, in input order."""
        return tuple(job.id for job in self.jobs)

    @property
    def batches(self) -> Mapping[str, range]:
        """Job id -> the input positions its batch carried."""
        return {b.job.id: b.positions for b in self.outcomes if b.job is not None}

    @property
    def failed_batches(self) -> tuple[BatchError, ...]:
        """The batches rejected or of unknown outcome, as errors naming their positions."""
        name = "updates" if self.operation == "update" else "records"
        return tuple(
            BatchError(
                positions=b.positions,
                error=b.error or AsyncBulkError("no answer"),
                outcome_unknown=b.state == "unknown",
                items=b.items,
                name=name,
            )
            for b in self.outcomes
            if b.state in {"rejected", "unknown"}
        )

    @property
    def unsent_from(self) -> int | None:
        """The first position of the first batch not sent, or None when every batch was sent."""
        return next((b.start for b in self.outcomes if b.state == "not_sent"), None)

    @property
    def count(self) -> int:
        """Items accepted, over all batches."""
        return sum(b.stop - b.start for b in self.outcomes if b.state == "accepted")

    @property
    def total(self) -> int:
        """Input positions accounted for (every position read)."""
        return self.outcomes[-1].stop if self.outcomes else 0

    def counts(self) -> dict[str, int]:
        """Input positions per batch state (accepted, rejected, unknown, not_sent)."""
        found: dict[str, int] = {}
        for b in self.outcomes:
            found[b.state] = found.get(b.state, 0) + b.stop - b.start
        return found

    def outcome_at(self, position: int) -> BatchOutcome:
        """The batch that carried input position `position`.

        Raises:
            ValidationError: no batch carried it.
        """
        starts = [b.start for b in self.outcomes]
        index = bisect.bisect_right(starts, position) - 1
        if index < 0 or position >= self.outcomes[index].stop:
            raise ValidationError("position", f"no batch carried position {position}")
        return self.outcomes[index]

    def positions(self) -> Iterator[PositionOutcome]:
        """Every input position's outcome, in input order (entry statuses after `summary`)."""
        for index, batch in enumerate(self.outcomes):
            entries = self._entries.get(index)
            for offset, item in enumerate(batch.items):
                status, message = entries[offset] if entries else (None, batch.message)
                yield PositionOutcome(
                    position=batch.start + offset,
                    state=batch.state,
                    job_id=batch.job_id,
                    entry_status=status,
                    message=message,
                    item=item,
                )

    async def wait(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 -- the contract's name; a JobTimeoutError names the jobs
        on_progress: Callable[[TrackerStats], None] | None = None,
    ) -> list[BackgroundJob]:
        """Wait until every job has finished, and return them in input order.

        Args:
            timeout: seconds to wait at most; None waits as long as it takes.
            on_progress: called with a `TrackerStats` snapshot at most every 0.5 s and once at
                the end (see `ChakraClient.track_jobs`).

        Raises:
            JobTimeoutError: the deadline passed; it names the unfinished jobs.
        """
        finished: dict[str, BackgroundJob] = {}
        # A plain loop: the tracker polls only while we wait, and its deadline error comes
        # out as itself.
        async for job in self._client.track_jobs(
            self.job_ids, timeout=timeout, on_progress=on_progress
        ):
            finished[job.id] = job
        return [finished[job_id] for job_id in self.job_ids]

    async def summary(self) -> SubmissionSummary:  # noqa: C901 -- one pass over each job, read whole
        """Counts per status over all jobs, every entry that failed, and each position's entry.

        It does not wait: call `wait` first for the final word. Each job is fetched once; its
        entries are read once, in listing order, unless its counts say every item of its batch
        succeeded. When a job lists exactly as many entries as
        its batch had items and each entry's change is its item's (and its process, where the
        item names one), the entries are taken one for one, in order, as the batch's items:
        `positions` then gives each accepted position its entry's status. Otherwise that batch's
        positions carry no entry status and `mismatches` says why. The entries read per status
        are checked against the job's counts; a disagreement is in `mismatches` too.

        Raises:
            APIError, TransportError, ProtocolError: a job or its entries could not be read.
        """
        jobs: dict[str, BackgroundJob] = {}
        failed: dict[str, list[FailedEntry]] = {}
        invalid: dict[str, list[FailedEntry]] = {}
        mismatches: dict[str, list[str]] = {}
        limiter = anyio.CapacityLimiter(_SUMMARY_JOBS_IN_FLIGHT)
        by_job = {b.job.id: (i, b) for i, b in enumerate(self.outcomes) if b.job is not None}

        async def read(job_id: str) -> None:
            index, batch = by_job[job_id]
            async with limiter:
                job = await self._client.get_background_job(job_id)
                jobs[job_id] = job
                carried = _item_count(batch)
                counts = job.status_counts
                if set(counts) == {"SUCCESS"} and counts["SUCCESS"] == carried:
                    # Every item succeeded: nothing to match, nothing to read.
                    self._entries[index] = (("SUCCESS", None),) * carried
                    return
                async with self._client.iter_job_entries(job_id) as listing:
                    entries = [entry async for entry in listing]
            problems = mismatches.setdefault(job_id, [])
            seen: dict[str, int] = {}
            for entry in entries:
                status = entry.completion_status or ""
                seen[status] = seen.get(status, 0) + 1
            for status in sorted(set(seen) | set(job.status_counts)):
                if seen.get(status, 0) != job.status_counts.get(status, 0):
                    problems.append(
                        f"job {job_id}: {seen.get(status, 0)} {status} entries read, "
                        f"the job counts {job.status_counts.get(status, 0)}"
                    )
            matched = _match_items(batch, entries, self.operation)
            if not matched:
                problems.append(
                    f"job {job_id}: its {len(entries)} entries do not match its batch's "
                    f"{_item_count(batch)} items one for one; positions "
                    f"{batch.start}-{batch.stop - 1} carry no entry status"
                )
            else:
                self._entries[index] = tuple(
                    (
                        e.completion_status or "",
                        (e.validation_message or e.completion_message or "") or None,
                    )
                    for e in entries
                )
            for offset, entry in enumerate(entries):
                failure = entry.completion_status
                if failure not in {"INVALID", *_RETRYABLE}:
                    continue
                message = (
                    entry.validation_message if failure == "INVALID" else entry.completion_message
                )
                found = FailedEntry(
                    entry,
                    job_id,
                    batch.positions,
                    message or "",
                    batch.start + offset if matched else None,
                )
                (invalid if failure == "INVALID" else failed).setdefault(job_id, []).append(found)

        try:
            async with anyio.create_task_group() as group:
                for job_id in self.job_ids:
                    group.start_soon(read, job_id)
        except BaseExceptionGroup as errors:
            # The first failure cancels the other reads: raise it as itself.
            if len(errors.exceptions) == 1:
                raise errors.exceptions[0] from None
            raise
        counts: dict[str, int] = {}
        for job in jobs.values():
            for status, n in job.status_counts.items():
                counts[status] = counts.get(status, 0) + n
        summary = SubmissionSummary(
            counts=counts,
            failed=tuple(e for job_id in self.job_ids for e in failed.get(job_id, ())),
            invalid=tuple(e for job_id in self.job_ids for e in invalid.get(job_id, ())),
            failed_batches=self.failed_batches,
            jobs=tuple(jobs[job_id] for job_id in self.job_ids),
            mismatches=tuple(m for job_id in self.job_ids for m in mismatches.get(job_id, ())),
        )
        if summary.finished and not summary.mismatches:
            self._final[:] = [summary]
        return summary

    def failed_updates(self, *, include_invalid: bool = False) -> AsyncIterator[ProcessUpdate]:
        """The updates that certainly did not take effect, rebuilt to be sent again.

        First, in input order, the items of the batches rejected or not sent; then, job by
        job, the entries that ended in ERROR or CANCELLED, rebuilt from their ``processUpdate``
        and the process the server resolved. Never an item of a batch whose outcome is unknown
        (`unknown_updates` yields those): resubmitting what this yields applies nothing twice.
        Pass the result straight to `ChakraClient.bulk_update_processes`. Call `wait` first: a
        running job's listing is not final. After a `summary` of finished jobs whose entries
        agreed with their counts, its failed entries are used and nothing is read again.

        Args:
            include_invalid: also rebuild INVALID entries; those that named no existing process
                carry no process id and are left out (`summary` lists them).

        Raises:
            ValidationError: this is a bulk-create submission, or an item never read through
                (not sent after a stop) is not a valid update.
            ProtocolError: a failed entry lacks the process id or change needed to rebuild it.
        """
        if self.operation != "update":
            raise ValidationError("operation", "failed_updates() is for bulk-update submissions")
        return self._failed_updates(include_invalid=include_invalid)

    def unknown_updates(self) -> Iterator[ProcessUpdate]:
        """The updates whose outcome is unknown: their batch may or may not have been applied.

        Never mixed into `failed_updates`. Settle them before sending any again: read the
        processes they target (or wait for the job the server may have started) and resend
        only those whose change is not there.

        Raises:
            ValidationError: this is a bulk-create submission.
        """
        if self.operation != "update":
            raise ValidationError("operation", "unknown_updates() is for bulk-update submissions")
        return (
            _as_update(item, batch.start + offset)
            for batch in self.outcomes
            if batch.state == "unknown"
            for offset, item in enumerate(batch.items)
        )

    async def _failed_updates(self, *, include_invalid: bool) -> AsyncIterator[ProcessUpdate]:
        # An async generator is safe here: it holds no task group or cancel scope across a
        # yield, and the entry iterators it opens cancel their own fetches when dropped.
        for batch in self.outcomes:
            if batch.state in {"rejected", "not_sent"}:
                for offset, item in enumerate(batch.items):
                    yield _as_update(item, batch.start + offset)
        async for entry in self._failed_entries(include_invalid=include_invalid):
            update = _rebuild(entry, skip_unresolved=entry.completion_status == "INVALID")
            if update is not None:
                yield update

    async def _failed_entries(self, *, include_invalid: bool) -> AsyncIterator[JobEntry]:
        if self._final:
            final = self._final[0]
            for found in (*final.invalid, *final.failed) if include_invalid else final.failed:
                yield found.entry
            return
        statuses = ("INVALID", *_RETRYABLE) if include_invalid else _RETRYABLE
        for job_id in self.job_ids:
            for status in statuses:
                async with self._client.iter_job_entries(
                    job_id, completion_status=status
                ) as entries:
                    async for entry in entries:
                        yield entry


def _as_update(item: Any, position: int) -> ProcessUpdate:
    if isinstance(item, ProcessUpdate):
        return item
    if isinstance(item, Mapping):
        try:
            return ProcessUpdate.from_mapping(item)
        except ValidationError as exc:
            raise exc.at(f"updates[{position}]") from None
    raise ValidationError(
        f"updates[{position}]", f"must be a ProcessUpdate or a mapping, not {type(item).__name__}"
    )


def _item_count(batch: BatchOutcome) -> int:
    """How many items the batch carried, without reading them back."""
    return len(batch._items)  # noqa: SLF001 -- this module's own class


def _match_items(batch: BatchOutcome, entries: Sequence[JobEntry], operation: Operation) -> bool:
    """Whether the entries are the batch's items one for one, in order."""
    if len(entries) != _item_count(batch):
        return False
    kept = batch._items  # noqa: SLF001 -- this module's own class
    items = kept.wire() if isinstance(kept, SentItems) else kept
    for item, entry in zip(items, entries, strict=True):
        if operation == "update":
            if isinstance(item, ProcessUpdate):
                wire = item.to_wire()
            elif isinstance(item, dict):
                wire = item
            else:
                return False
            if entry.process_update is not None and wire.get("update") != entry.process_update:
                return False
            given = wire.get("id")
            if given is not None and entry.process_id and given != entry.process_id:
                return False
    return True


def _rebuild(entry: JobEntry, *, skip_unresolved: bool) -> ProcessUpdate | None:
    if not entry.process_id or entry.process_update is None:
        if skip_unresolved:
            return None
        raise ProtocolError(
            f"entry {entry.id}: cannot rebuild its update without "
            "data.apiData.processId and data.apiData.processUpdate"
        )
    change: Any = entry.process_update
    try:
        return ProcessUpdate.from_mapping({"id": entry.process_id, "update": change})
    except ValidationError as exc:
        raise ProtocolError(
            f"entry {entry.id}: data.apiData.processUpdate is not a valid change: {exc}"
        ) from None
