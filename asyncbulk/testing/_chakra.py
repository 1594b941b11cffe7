"""The simulated ChakraHQ API: procedures, processes, bulk jobs and their entries.

A background job never runs: it records when it started, its rate and, per entry, the outcome
decided at submission (INVALID from validation, ERROR from the seeded error rate, else SUCCESS).
Valid entry number v (counting valid entries only, in submission order) is IN_PROGRESS from
`start + v / rate` and finished at `start + (v + 1) / rate`, so the state of any entry, the counts
per status and the page of a filtered listing all follow from the clock by arithmetic and binary
search over the sorted positions of the INVALID, ERROR and SUCCESS entries. No request scans a job.

The changes of the entries that succeeded are applied to the process store lazily, job by job in
submission order, the next time the store is read (`ChakraState.processes`, `process()`): each
entry is applied once, so the cost is amortised over the entries, never repeated per request. A
submission applies them first only when a pending job creates, deletes or re-keys processes,
since only those change what validation sees.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import uuid
from array import array
from bisect import bisect_left
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs
from aiohttp import web

from ._clock import Clock, MonotonicClock
from ._http import (
    dumps,
    dumps_text,
    encoded_response,
    error_middleware,
    json_response,
    observe,
    quote,
    read_json,
)
from ._records import ChakraSubmission, Records, wall_now

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from aiohttp.typedefs import Handler, Middleware

    from ._faults import FaultSet
    from ._limits import TokenBucket

#: Completion statuses of a background job entry, as the entries API accepts them.
ENTRY_STATUSES = ("INVALID", "NOT_STARTED", "IN_PROGRESS", "SUCCESS", "ERROR", "CANCELLED")
#: Process statuses a change may set.
PROCESS_STATUSES = frozenset({"OPEN", "COMPLETED", "CANCELLED"})
#: The `completionStatus` of a job once every entry is done (the "extended" shape only).
JOB_DONE = "COMPLETED"
#: The `type` of the documented example job.
JOB_TYPE = "bulk_api_job"
#: How a fetched job shows whether it is done: "extended" adds an invented terminal
#: `completionStatus` ("COMPLETED") and `completedAt`; "documented" is the vendor's fetch example,
#: counts only, no `completionStatus`, `statusMessage` or `completedAt`; "lagging" keeps saying
#: `IN_PROGRESS` with `completedAt: 0` after every entry is final.
JOB_SHAPES = ("extended", "documented", "lagging")
#: The `apiType` of the entries of a bulk update and of a bulk create.
UPDATE_API_TYPE = "process:ext-update"
CREATE_API_TYPE = "process:ext-create"
#: The most entries one page of the entries API returns.
MAX_LIMIT = 100

TEAM_ID = "d3e64510-b75a-43a0-8ae5-dde78dac56c0"
USER_ID = "5acc9b3b-9850-422b-81ce-22b01cb74356"
_UPDATE_TYPE_ID = "0b6f0c52-52a6-4f3c-9a1e-1c7f2ad1e6c1"
_CREATE_TYPE_ID = "6d1c9a8e-2f0b-4d8c-8f55-4a3b9e0c7d21"
_UPDATE_FIELDS = frozenset({"data", "state", "status", "assignedTo", "nextActionAt", "isDeleted"})
_CREATE_FIELDS = frozenset({"data", "state", "status", "assignedTo", "nextActionAt"})
_ERROR_MESSAGE = "simulated processing error"
# Floating-point slack so that an entry due exactly now counts as done.
_EPSILON = 1e-9


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


@attrs.define(eq=False)
class ChakraProcess:
    """A process of a procedure, as the simulated store holds it (mutable: changes apply here).

    Attributes:
        id: The process id (a UUID).
        procedure_id: The id of its procedure.
        data: Attribute values by attribute short id, primary key included.
        state: The process state.
        status: OPEN, COMPLETED or CANCELLED.
        assigned_to: Who the process is assigned to.
        next_action_at: Epoch milliseconds, or None.
        is_deleted: True once a change deleted it; a deleted process is no longer found.
        created_at: Epoch milliseconds of creation.
        updated_at: Epoch milliseconds of the last change.
    """

    id: str
    procedure_id: str
    data: dict[str, Any]
    state: str | None = None
    status: str = "OPEN"
    assigned_to: str | None = None
    next_action_at: int | None = None
    is_deleted: bool = False
    created_at: int = 0
    updated_at: int = 0


@attrs.define(eq=False)
class ChakraProcedure:
    """A procedure: its ids, its attributes and its primary-key attribute.

    Attributes:
        id: The procedure id (a UUID).
        short_id: The short id used in paths, e.g. "tele_sales".
        primary_key: The short id of the primary-key attribute, e.g. "lead_id".
        attributes: Every attribute short id, primary key included.
    """

    id: str
    short_id: str
    primary_key: str
    attributes: frozenset[str]
    _by_id: dict[str, ChakraProcess] = attrs.field(factory=dict, repr=False)
    _by_key: dict[str, ChakraProcess] = attrs.field(factory=dict, repr=False)
    _reserved: set[str] = attrs.field(factory=set, repr=False)

    @property
    def processes(self) -> Mapping[str, ChakraProcess]:
        """The live processes of this procedure, by process id (read-only view)."""
        return MappingProxyType({k: p for k, p in self._by_id.items() if not p.is_deleted})

    def find(self, identifier: object, *, by: str = "id") -> ChakraProcess | None:
        """Find a live process by id (`by="id"`) or by primary-key value (`by="key"`)."""
        index = self._by_id if by == "id" else self._by_key
        process = index.get(str(identifier))
        return None if process is None or process.is_deleted else process

    def insert(self, process: ChakraProcess) -> None:
        """Add `process` to this procedure's indexes."""
        self._by_id[process.id] = process
        key = process.data.get(self.primary_key)
        if key is not None:
            self._by_key[str(key)] = process

    def rekey(self, process: ChakraProcess, old: object, new: object) -> None:
        """Move `process` from primary-key value `old` to `new` in the index."""
        if old is not None and self._by_key.get(str(old)) is process:
            del self._by_key[str(old)]
        if new is not None:
            self._by_key[str(new)] = process

    def forget_key(self, key: object) -> None:
        """Drop a primary-key value from the index (its process was deleted)."""
        self._by_key.pop(str(key), None)

    def reserved(self, key: str) -> bool:
        """Tell whether a pending bulk create holds primary-key value `key`."""
        return key in self._reserved

    def reserve(self, key: str) -> None:
        """Hold primary-key value `key` for a pending bulk create."""
        self._reserved.add(key)

    def release(self, key: str) -> None:
        """Release primary-key value `key` held by a bulk create."""
        self._reserved.discard(key)


# The variant nibble of a UUID keeps its two low bits under the two high bits 10 (RFC 4122).
_VARIANT = MappingProxyType({digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"})


def _uuid4_text(digest: str) -> str:
    """Format 32 hex digits as a version-4 UUID, as `str(uuid.UUID(hex=digest, version=4))`."""
    variant = _VARIANT[digest[16]]
    return f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-{variant}{digest[17:20]}-{digest[20:]}"


def _sorted_positions(values: Iterable[int]) -> array[int]:
    return array("q", values)


@attrs.define(eq=False)
class ChakraJob:
    """A background job: its entries, their fixed outcomes and its progress over time.

    Attributes:
        id: The background job id (a UUID).
        procedure_id: The id of the procedure it works on.
        api_type: The `apiType` of its entries ("process:ext-update" or "process:ext-create").
        started_at: Simulated seconds since the epoch at which it started.
        rate: Valid entries processed per simulated second.
        total: The number of entries.
    """

    id: str
    procedure_id: str
    api_type: str
    started_at: float
    rate: float
    total: int
    _changes: Sequence[bytes] = attrs.field(repr=False)
    _process_ids: Sequence[str | None] = attrs.field(repr=False)
    _invalid: array[int] = attrs.field(repr=False)
    _invalid_messages: Mapping[int, str] = attrs.field(repr=False)
    _errors: array[int] = attrs.field(repr=False)
    _valid: array[int] | None = attrs.field(default=None, repr=False)
    _successes: array[int] | None = attrs.field(default=None, repr=False)
    _entry_ids: Mapping[int, str] = attrs.field(factory=dict, repr=False)
    _applied: int = attrs.field(default=0, repr=False)
    #: Whether its entries create, delete or re-key processes, which later validation sees.
    structural: bool = attrs.field(default=False, repr=False)

    @property
    def valid_count(self) -> int:
        """The number of entries that passed validation."""
        return self.total - len(self._invalid)

    @property
    def finishes_at(self) -> float:
        """Simulated time at which the last entry finishes (the start if none is valid)."""
        return self.started_at + self.valid_count / self.rate

    @property
    def type_id(self) -> str:
        """The job `type` UUID of its kind (update or create)."""
        return _UPDATE_TYPE_ID if self.api_type == UPDATE_API_TYPE else _CREATE_TYPE_ID

    def done(self, now: float) -> int:
        """Return how many valid entries have finished at simulated time `now`."""
        if now <= self.started_at:
            return 0
        return min(self.valid_count, math.floor((now - self.started_at) * self.rate + _EPSILON))

    def finished(self, now: float) -> bool:
        """Tell whether every entry has finished at `now`."""
        return self.done(now) >= self.valid_count

    def counts(self, now: float) -> dict[str, int]:
        """Return the number of entries per completion status at `now` (non-zero ones only)."""
        done = self.done(now)
        errors = bisect_left(self._errors, done)
        running = 1 if done < self.valid_count else 0
        counts = {
            "INVALID": len(self._invalid),
            "NOT_STARTED": self.valid_count - done - running,
            "IN_PROGRESS": running,
            "SUCCESS": done - errors,
            "ERROR": errors,
        }
        return {status: n for status, n in counts.items() if n}

    def summary(self, now: float, shape: str = "extended") -> dict[str, Any]:
        """Return the job as `GET /v1/ext/background-job/{id}` shows it in `_data`.

        Args:
            now: Simulated time.
            shape: One of `JOB_SHAPES`.
        """
        finished = self.finished(now)
        finish_ms = _ms(self.finishes_at)
        updated = finish_ms if finished else max(_ms(self.started_at), _ms(now))
        if shape == "documented":
            return {
                "id": self.id,
                "createdAt": _ms(self.started_at),
                "updatedAt": updated,
                "startedAt": _ms(self.started_at),
                "team": TEAM_ID,
                "type": JOB_TYPE,
            }
        done = finished and shape == "extended"
        return {
            "id": self.id,
            "createdAt": _ms(self.started_at),
            "updatedAt": updated,
            "completionStatus": JOB_DONE if done else "IN_PROGRESS",
            "statusMessage": None,
            "startedAt": _ms(self.started_at),
            "completedAt": finish_ms if done else 0,
            "team": TEAM_ID,
            "type": self.type_id if shape == "extended" else JOB_TYPE,
        }

    def acknowledgement(self) -> dict[str, Any]:
        """Return the job as the bulk APIs answer it on submission."""
        started = _ms(self.started_at)
        return {
            "id": self.id,
            "createdAt": started,
            "updatedAt": started,
            "completionStatus": "IN_PROGRESS",
            "statusMessage": None,
            "startedAt": started,
            "completedAt": 0,
            "team": TEAM_ID,
            "type": self.type_id,
        }

    def page(
        self, status: str | None, skip: int, limit: int, now: float
    ) -> tuple[list[dict[str, Any]], int]:
        """Return one page of entries (optionally of one completion status) and the total.

        Costs O(limit + log n): positions come from slices of the sorted index arrays.
        """
        indices, total = self._select(status, skip, limit, self.done(now))
        return [self.entry(i, now) for i in indices], total

    def page_json(self, status: str | None, skip: int, limit: int, now: float) -> tuple[str, int]:
        """Return one page of entries as the JSON text of an array, and the total.

        The text is exactly what encoding `page()` gives (a test holds the two equal), but the
        job's constant fragments are encoded once per page and each entry's own values spliced
        in: the stored change as it was encoded at submission, ids and numbers as they are.
        """
        done = self.done(now)
        indices, total = self._select(status, skip, limit, done)
        text = dumps_text
        created = _ms(self.started_at)
        change_key = "processUpdate" if self.api_type == UPDATE_API_TYPE else "processCreate"
        procedure = f',"procedureId":{text(self.procedure_id)},"{change_key}":'
        api_type = f'}},"apiType":{text(self.api_type)}}},"validationStatus":'
        end = (
            f',"completionResult":null,"team":{text(TEAM_ID)},'
            f'"backgroundJob":{text(self.id)},"createdBy":{text(USER_ID)}}}'
        )
        valid_tails = {
            status: '"SUCCESS","validationMessage":"","validationResult":null,'
            f'"completionStatus":"{status}",'
            f'"completionMessage":{text(_ERROR_MESSAGE if status == "ERROR" else "")}{end}'
            for status in ("NOT_STARTED", "IN_PROGRESS", "SUCCESS", "ERROR")
        }
        changes, process_ids, state = self._changes, self._process_ids, self._state
        items = []
        for index in indices:
            status, updated, invalid = state(index, done)
            if invalid is None:
                tail = valid_tails[status]
            else:
                tail = (
                    f'"INVALID","validationMessage":{text(invalid)},"validationResult":null,'
                    f'"completionStatus":"INVALID","completionMessage":""{end}'
                )
            process_id = process_ids[index]
            items.append(
                f'{{"id":{quote(self.entry_id(index))},"createdAt":{created},'
                f'"updatedAt":{updated},"data":{{"apiData":{{"processId":'
                f"{'null' if process_id is None else quote(process_id)}{procedure}"
                f"{changes[index].decode()}{api_type}{tail}"
            )
        return f"[{','.join(items)}]", total

    def _select(
        self, status: str | None, skip: int, limit: int, done: int
    ) -> tuple[Iterable[int], int]:
        """Return the indices of the entries of one page and the total, `done` entries done."""
        running = 1 if done < self.valid_count else 0
        indices: Iterable[int]
        if status is None:
            total = self.total
            indices = range(skip, min(total, skip + limit))
        elif status == "INVALID":
            total = len(self._invalid)
            indices = self._invalid[skip : skip + limit]
        elif status == "CANCELLED":
            total, indices = 0, ()
        else:
            first, total = self._valid_span(status, done, running)
            stop = min(total, skip + limit)
            positions = self._valid_slice(status, first + skip, first + stop)
            indices = (self._entry_of(v) for v in positions)
        return indices, total

    def _valid_span(self, status: str, done: int, running: int) -> tuple[int, int]:
        """Return (offset, count) of `status` within its index (valid positions or outcomes)."""
        if status == "SUCCESS":
            return 0, done - bisect_left(self._errors, done)
        if status == "ERROR":
            return 0, bisect_left(self._errors, done)
        if status == "IN_PROGRESS":
            return done, running
        return done + running, self.valid_count - done - running

    def _valid_slice(self, status: str, start: int, stop: int) -> Iterable[int]:
        stop = max(start, stop)
        if status == "ERROR":
            return self._errors[start:stop]
        if status == "SUCCESS" and self._successes is not None:
            return self._successes[start:stop]
        return range(start, stop)

    def _entry_of(self, valid_index: int) -> int:
        return valid_index if self._valid is None else self._valid[valid_index]

    def _valid_of(self, entry: int) -> int | None:
        position = bisect_left(self._invalid, entry)
        if position < len(self._invalid) and self._invalid[position] == entry:
            return None
        return entry - position

    def entry_id(self, index: int) -> str:
        """Return the id of entry `index` (derived from the job id, so never stored)."""
        fixed = self._entry_ids.get(index)
        if fixed is not None:
            return fixed
        digest = hashlib.blake2b(f"{self.id}/{index}".encode(), digest_size=16).hexdigest()
        return _uuid4_text(digest)

    def _state(self, index: int, done: int) -> tuple[str, int, str | None]:
        """Return entry `index`'s status, `updatedAt` and validation message (None if valid)."""
        valid = self._valid_of(index)
        if valid is None:
            return (
                "INVALID",
                _ms(self.started_at),
                self._invalid_messages.get(index, "invalid entry"),
            )
        if valid < done:
            errors = self._errors
            position = bisect_left(errors, valid)
            failed = position < len(errors) and errors[position] == valid
            status = "ERROR" if failed else "SUCCESS"
            return status, _ms(self.started_at + (valid + 1) / self.rate), None
        if valid == done:
            return "IN_PROGRESS", _ms(self.started_at + valid / self.rate), None
        return "NOT_STARTED", _ms(self.started_at), None

    def entry(self, index: int, now: float) -> dict[str, Any]:
        """Return entry `index` as the entries API shows it at simulated time `now`."""
        status, updated, message = self._state(index, self.done(now))
        change_key = "processUpdate" if self.api_type == UPDATE_API_TYPE else "processCreate"
        return {
            "id": self.entry_id(index),
            "createdAt": _ms(self.started_at),
            "updatedAt": updated,
            "data": {
                "apiData": {
                    "processId": self._process_ids[index],
                    "procedureId": self.procedure_id,
                    change_key: json.loads(self._changes[index]),
                },
                "apiType": self.api_type,
            },
            "validationStatus": "SUCCESS" if message is None else "INVALID",
            "validationMessage": message or "",
            "validationResult": None,
            "completionStatus": status,
            "completionMessage": _ERROR_MESSAGE if status == "ERROR" else "",
            "completionResult": None,
            "team": TEAM_ID,
            "backgroundJob": self.id,
            "createdBy": USER_ID,
        }

    def take_finished(self, now: float) -> Iterable[tuple[int, float, bool]]:
        """Yield (entry index, finish time, succeeded) per valid entry finished since last call."""
        done = self.done(now)
        position = bisect_left(self._errors, self._applied)
        for valid in range(self._applied, done):
            failed = position < len(self._errors) and self._errors[position] == valid
            if failed:
                position += 1
            self._applied = valid + 1
            yield self._entry_of(valid), self.started_at + (valid + 1) / self.rate, not failed

    def change(self, index: int) -> dict[str, Any]:
        """Return the change (update or create item) of entry `index`."""
        result: dict[str, Any] = json.loads(self._changes[index])
        return result

    def process_id(self, index: int) -> str | None:
        """Return the process id entry `index` acts on (None for an invalid entry)."""
        return self._process_ids[index]

    @property
    def settled(self) -> bool:
        """Tell whether every valid entry has been applied to the store."""
        return self._applied >= self.valid_count


@attrs.define
class _Cut:
    """A page of the entries listing answered short (see `ChakraState.short_page`)."""

    skip: int
    keep: int
    times: int | None
    job_id: str | None


@attrs.define
class _Outcome:
    """What validation made of one submitted item."""

    change: bytes
    process_id: str | None = None
    invalid: str | None = None
    key: str | None = None
    structural: bool = False


class ChakraState:
    """The data behind the simulated Chakra API: procedures, processes and background jobs.

    Starts with the documentation's example data (see `add_examples`) unless told otherwise.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        seed: int = 0,
        entries_per_second: float = 20_000.0,
        error_rate: float = 0.0,
        token: str = "chakra-sim-token",  # noqa: S107 - a simulator's credential, not a secret
        records: Records | None = None,
        examples: bool = True,
        job_shape: str = "extended",
    ) -> None:
        """Create the state.

        Args:
            clock: The simulated clock; a real-time `MonotonicClock` by default.
            seed: Seeds ids and the ERROR decisions.
            entries_per_second: How many valid entries a job finishes per simulated second.
            error_rate: The fraction of valid entries that end in ERROR (seeded).
            token: The bearer token the API accepts.
            records: Where to record submissions; new records by default.
            examples: Start with the documentation's example procedures, processes and jobs.
            job_shape: How a fetched job shows it is done, one of `JOB_SHAPES` (settable later).

        Raises:
            ValueError: A rate or the shape is out of range.
        """
        if not entries_per_second > 0:
            raise ValueError(f"entries_per_second must be positive, got {entries_per_second!r}")
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be within [0, 1], got {error_rate!r}")
        self.clock: Clock = clock or MonotonicClock()
        self.records = records if records is not None else Records(self.clock)
        self.token = token
        #: Simulated time before which every request is refused 401 (see `rotate_credentials`).
        self.unauthorized_until = 0.0
        self.entries_per_second = entries_per_second
        self.error_rate = error_rate
        self._random = random.Random(f"chakra/{seed}")
        self._procedures: dict[str, ChakraProcedure] = {}
        self._procedures_by_id: dict[str, ChakraProcedure] = {}
        self._processes: dict[str, ChakraProcess] = {}
        self._jobs: dict[str, ChakraJob] = {}
        self._unsettled: dict[str, ChakraJob] = {}
        self._cuts: list[_Cut] = []
        self.job_shape = job_shape
        if examples:
            self.add_examples()

    def __repr__(self) -> str:
        """Summarise the state."""
        return (
            f"<ChakraState procedures={len(self._procedures)} "
            f"processes={len(self._processes)} jobs={len(self._jobs)}>"
        )

    @property
    def job_shape(self) -> str:
        """How a fetched job shows whether it is done: one of `JOB_SHAPES`."""
        return self._job_shape

    @job_shape.setter
    def job_shape(self, shape: str) -> None:
        if shape not in JOB_SHAPES:
            raise ValueError(f"job_shape must be one of {', '.join(JOB_SHAPES)}, got {shape!r}")
        self._job_shape = shape

    def short_page(
        self, skip: int, *, keep: int = 0, times: int | None = 1, job_id: str | None = None
    ) -> None:
        """Answer the entries page asked at `skip` with only its first `keep` entries.

        `_meta.total` is left as it is, so the page is short (or, with `keep=0`, empty) before
        the end the listing announces; a read at another offset is answered in full.

        Args:
            skip: The `skip` of the requests to cut.
            keep: Entries left in the page; 0 answers an empty page.
            times: Cut this many answers, then answer in full; None cuts every answer.
            job_id: Only the listing of this job; every job's when None.

        Raises:
            ValueError: `skip`, `keep` or `times` is negative.
        """
        if skip < 0 or keep < 0 or (times is not None and times < 0):
            raise ValueError("skip, keep and times cannot be negative")
        self._cuts.append(_Cut(skip=skip, keep=keep, times=times, job_id=job_id))

    def page_limit(self, job_id: str, skip: int, limit: int) -> int:
        """Return the `limit` to serve for a page request, after the cuts that apply to it."""
        for cut in self._cuts:
            if cut.skip == skip and cut.job_id in {None, job_id} and cut.times != 0:
                if cut.times is not None:
                    cut.times -= 1
                return min(limit, cut.keep)
        return limit

    # -- reading ---------------------------------------------------------------------------

    @property
    def procedures(self) -> Mapping[str, ChakraProcedure]:
        """Every procedure, by short id (read-only view)."""
        return MappingProxyType(self._procedures)

    @property
    def processes(self) -> Mapping[str, ChakraProcess]:
        """Every process of every procedure by process id, deleted ones included, up to date."""
        self.settle()
        return MappingProxyType(self._processes)

    @property
    def jobs(self) -> Mapping[str, ChakraJob]:
        """Every background job, by id (read-only view)."""
        return MappingProxyType(self._jobs)

    def procedure(self, id_or_short_id: str) -> ChakraProcedure | None:
        """Find a procedure by id or short id."""
        return self._procedures.get(id_or_short_id) or self._procedures_by_id.get(id_or_short_id)

    def process(self, procedure: str, identifier: object) -> ChakraProcess | None:
        """Find a live process of `procedure` by process id or primary-key value, up to date."""
        self.settle()
        found = self.procedure(procedure)
        if found is None:
            return None
        return found.find(identifier) or found.find(identifier, by="key")

    def job_counts(self, job_id: str) -> dict[str, int]:
        """Return a job's entry counts per completion status now.

        Raises:
            KeyError: No such job.
        """
        return self._jobs[job_id].counts(self.clock.now())

    # -- adding ----------------------------------------------------------------------------

    def add_procedure(
        self,
        short_id: str,
        *,
        primary_key: str,
        attributes: Iterable[str] = (),
        id: str | None = None,  # noqa: A002 - the vendor's name for it
    ) -> ChakraProcedure:
        """Add a procedure.

        Args:
            short_id: Its short id, used in paths.
            primary_key: The short id of its primary-key attribute.
            attributes: Its other attributes' short ids.
            id: Its UUID; a seeded random one by default.

        Raises:
            ValueError: The short id or id is taken.
        """
        procedure_id = id or self._uuid()
        if short_id in self._procedures or self.procedure(procedure_id) is not None:
            raise ValueError(f"procedure {short_id!r} or {procedure_id!r} already exists")
        procedure = ChakraProcedure(
            id=procedure_id,
            short_id=short_id,
            primary_key=primary_key,
            attributes=frozenset({primary_key, *attributes}),
        )
        self._procedures[short_id] = procedure
        self._procedures_by_id[procedure_id] = procedure
        return procedure

    def add_process(
        self,
        procedure: str,
        data: Mapping[str, Any],
        *,
        id: str | None = None,  # noqa: A002 - the vendor's name for it
        state: str | None = None,
        status: str = "OPEN",
        assigned_to: str | None = None,
        next_action_at: int | None = None,
    ) -> ChakraProcess:
        """Add a process to a procedure.

        Args:
            procedure: The procedure's id or short id.
            data: Attribute values; must hold the primary key.
            id: Its UUID; a seeded random one by default.
            state: Its state.
            status: OPEN, COMPLETED or CANCELLED.
            assigned_to: Who it is assigned to.
            next_action_at: Epoch milliseconds.

        Raises:
            KeyError: No such procedure.
            ValueError: The primary key is missing or taken, an attribute is unknown, or the
                status is not valid.
        """
        owner = self.procedure(procedure)
        if owner is None:
            raise KeyError(procedure)
        key = data.get(owner.primary_key)
        if key is None:
            raise ValueError(f"data must hold the primary key {owner.primary_key!r}")
        if owner.find(key, by="key") is not None:
            raise ValueError(f"{owner.primary_key} {key!r} already exists")
        unknown = set(data) - owner.attributes
        if unknown:
            raise ValueError(f"unknown attributes {sorted(unknown)}")
        if status not in PROCESS_STATUSES:
            raise ValueError(f"invalid status {status!r}")
        now = _ms(self.clock.now())
        process = ChakraProcess(
            id=id or self._uuid(),
            procedure_id=owner.id,
            data=dict(data),
            state=state,
            status=status,
            assigned_to=assigned_to,
            next_action_at=next_action_at,
            created_at=now,
            updated_at=now,
        )
        owner.insert(process)
        self._processes[process.id] = process
        return process

    def add_examples(self) -> None:
        """Add the procedures, processes and finished jobs the documentation's examples use.

        `tele_sales` (id f3eb37a9-..., primary key `lead_id`) holds EXT-TEST-143, LEAD-001,
        LEAD-910, LEAD-100 and the processes 1e50dd73-... (lead_id "100") and 46ce67e5-...;
        `field_sales` (id 7a409cf7-..., primary key `phone_number`) holds 9901258433. The finished
        jobs 19632427-... (770 entries, the first two as the docs print them) and 006af7f9-...
        (2,500 entries) answer the entries examples.
        """
        attributes = ("score", "city", "name", "first_name", "last_name", "country")
        self.add_procedure(
            "tele_sales",
            primary_key="lead_id",
            attributes=(*attributes, "phone_number"),
            id="f3eb37a9-b54e-4088-bc5f-948d37f8aa62",
        )
        self.add_procedure(
            "field_sales",
            primary_key="phone_number",
            attributes=attributes,
            id="7a409cf7-5529-4570-9085-90798d7eb742",
        )
        for lead, city in (
            ("EXT-TEST-143", "Mumbai"),
            ("LEAD-001", "Bangalore"),
            ("LEAD-910", "Osaka"),
            ("LEAD-100", "Chennai"),
        ):
            self.add_process("tele_sales", {"lead_id": lead, "city": city, "score": "0"})
        self.add_process(
            "tele_sales",
            {"lead_id": "100", "city": "Pune"},
            id="1e50dd73-9ce6-405b-932a-9c4c5e7b5599",
        )
        self.add_process(
            "tele_sales",
            {"lead_id": "LEAD-046", "first_name": "glenn", "last_name": "mcgrath"},
            id="46ce67e5-684e-4cfc-b47e-345a485d1cdd",
        )
        self.add_process("field_sales", {"phone_number": "9901258433", "city": "Delhi"})
        finished_long_ago = self.clock.now() - 86_400
        example = dumps({"data": {"lead_id": "100"}})
        process_id = "1e50dd73-9ce6-405b-932a-9c4c5e7b5599"
        self._add_finished_job(
            "19632427-908f-4bf3-a6f5-69b9a0bbfc63",
            770,
            errors=(1, 7, 300),
            change=example,
            process_id=process_id,
            started_at=finished_long_ago,
            entry_ids={
                0: "e9bc853c-0af7-414c-bc7b-ccc7a40aa510",
                1: "8bbaa9b5-14d9-4594-b68f-053e362ff5b3",
            },
        )
        self._add_finished_job(
            "006af7f9-d5fb-4d1a-8b31-ac6f3a3a1dfc",
            2500,
            errors=(10, 2222),
            change=example,
            process_id=process_id,
            started_at=finished_long_ago,
        )

    def _add_finished_job(
        self,
        job_id: str,
        total: int,
        *,
        errors: Sequence[int],
        change: bytes,
        process_id: str,
        started_at: float,
        entry_ids: Mapping[int, str] | None = None,
    ) -> None:
        # Historic jobs share one change object, so they cost a few pointers per entry.
        error_set = set(errors)
        job = ChakraJob(
            id=job_id,
            procedure_id=self._procedures["tele_sales"].id,
            api_type=UPDATE_API_TYPE,
            started_at=started_at,
            rate=1000.0,
            total=total,
            changes=[change] * total,
            process_ids=[process_id] * total,
            invalid=array("q"),
            invalid_messages={},
            errors=_sorted_positions(sorted(error_set)),
            successes=_sorted_positions(i for i in range(total) if i not in error_set),
            entry_ids=entry_ids or {},
            applied=total,
        )
        self._jobs[job.id] = job
        self.records.expect_job_finish(job.id, job.finishes_at)

    # -- bulk operations -------------------------------------------------------------------

    def submit_update(self, procedure: ChakraProcedure, items: Sequence[Any]) -> ChakraJob:
        """Validate bulk-update items and start a job over them (what PATCH .../process does)."""
        self._settle_for_validation()
        claimed: dict[str, str] = {}
        outcomes = [self._validate_update(procedure, item, claimed) for item in items]
        return self._start(procedure, UPDATE_API_TYPE, outcomes)

    def submit_create(self, procedure: ChakraProcedure, items: Sequence[Any]) -> ChakraJob:
        """Validate bulk-create items and start a job over them (what POST .../bulk-create does)."""
        self._settle_for_validation()
        outcomes = [self._validate_create(procedure, item) for item in items]
        return self._start(procedure, CREATE_API_TYPE, outcomes)

    def _settle_for_validation(self) -> None:
        # Only creates, deletes and key changes alter what validation sees. Plain data changes
        # wait for a read of the store, so a submission never pays for applying a million of
        # them at once. (A read applies every job in submission order.)
        if any(job.structural for job in self._unsettled.values()):
            self.settle()

    def settle(self) -> None:
        """Apply to the store every change of every entry that has succeeded by now."""
        if not self._unsettled:
            return
        now = self.clock.now()
        for job_id, job in list(self._unsettled.items()):
            procedure = self._procedures_by_id[job.procedure_id]
            for index, finished, succeeded in job.take_finished(now):
                self._apply(job, procedure, index, _ms(finished), succeeded=succeeded)
            if job.settled:
                del self._unsettled[job_id]

    def _start(
        self, procedure: ChakraProcedure, api_type: str, outcomes: Sequence[_Outcome]
    ) -> ChakraJob:
        invalid = [i for i, outcome in enumerate(outcomes) if outcome.invalid is not None]
        valid_count = len(outcomes) - len(invalid)
        errors: list[int] = []
        if self.error_rate > 0:
            draw = self._random.random
            errors = [v for v in range(valid_count) if draw() < self.error_rate]
        successes = None
        if errors:
            error_set = set(errors)
            successes = _sorted_positions(v for v in range(valid_count) if v not in error_set)
        valid = None
        if invalid:
            valid = _sorted_positions(i for i, o in enumerate(outcomes) if o.invalid is None)
        job = ChakraJob(
            id=self._uuid(),
            procedure_id=procedure.id,
            api_type=api_type,
            started_at=self.clock.now(),
            rate=self.entries_per_second,
            total=len(outcomes),
            changes=[o.change for o in outcomes],
            process_ids=[o.process_id for o in outcomes],
            invalid=_sorted_positions(invalid),
            invalid_messages={i: outcomes[i].invalid or "" for i in invalid},
            errors=_sorted_positions(errors),
            valid=valid,
            successes=successes,
            structural=api_type == CREATE_API_TYPE or any(o.structural for o in outcomes),
        )
        self._jobs[job.id] = job
        if valid_count:
            self._unsettled[job.id] = job
        self.records.expect_job_finish(job.id, job.finishes_at)
        return job

    def _validate_update(
        self, procedure: ChakraProcedure, item: Any, claimed: dict[str, str]
    ) -> _Outcome:
        if not isinstance(item, dict):
            return _Outcome(dumps(item), invalid="each process must be an object")
        change, problem = _split_update(procedure, item)
        encoded = dumps(change)
        if problem is not None:
            return _Outcome(encoded, invalid=problem)
        target, problem = _find_target(procedure, item)
        if target is None:
            return _Outcome(encoded, invalid=problem)
        problem = _check_change(procedure, change, _UPDATE_FIELDS)
        if problem is not None:
            return _Outcome(encoded, process_id=target.id, invalid=problem)
        pk = procedure.primary_key
        rekey = pk in change.get("data", {})
        if rekey:
            # A change of primary key must not take a key another process holds or claims.
            new_key = str(change["data"][pk])
            holder = procedure.find(new_key, by="key")
            taken = holder is not None and holder is not target
            if taken or claimed.setdefault(new_key, target.id) != target.id:
                problem = f"{pk} {new_key!r} already belongs to another process"
        structural = rekey or bool(change.get("isDeleted"))
        return _Outcome(encoded, process_id=target.id, invalid=problem, structural=structural)

    def _validate_create(self, procedure: ChakraProcedure, item: Any) -> _Outcome:
        if not isinstance(item, dict):
            return _Outcome(dumps(item), invalid="each process must be an object")
        encoded = dumps(item)
        pk = procedure.primary_key
        data = item.get("data")
        key = item.get(pk)
        if key is None and isinstance(data, dict):
            key = data.get(pk)
        if key is None:
            return _Outcome(encoded, invalid=f"primary key '{pk}' missing")
        key = str(key)
        if procedure.find(key, by="key") is not None or procedure.reserved(key):
            return _Outcome(encoded, invalid=f"a process with {pk} {key!r} already exists")
        change = {k: v for k, v in item.items() if k != pk}
        problem = _check_change(procedure, change, _CREATE_FIELDS)
        if problem is not None:
            return _Outcome(encoded, invalid=problem)
        procedure.reserve(key)
        return _Outcome(encoded, process_id=self._uuid(), key=key)

    def _apply(
        self, job: ChakraJob, procedure: ChakraProcedure, index: int, when: int, *, succeeded: bool
    ) -> None:
        change = job.change(index)
        if job.api_type == CREATE_API_TYPE:
            data = dict(change.get("data") or {})
            key = change.get(procedure.primary_key, data.get(procedure.primary_key))
            procedure.release(str(key))
            if succeeded:
                data[procedure.primary_key] = key
                process = ChakraProcess(
                    id=job.process_id(index) or self._uuid(),
                    procedure_id=procedure.id,
                    data=data,
                    created_at=when,
                )
                procedure.insert(process)
                self._processes[process.id] = process
                _update(procedure, process, change, when)
            return
        target = self._processes.get(job.process_id(index) or "")
        if succeeded and target is not None and not target.is_deleted:
            _update(procedure, target, change, when)

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._random.getrandbits(128), version=4))


def _split_update(procedure: ChakraProcedure, item: dict[str, Any]) -> tuple[Any, str | None]:
    """Return the change of a bulk-update item, wrapped in "update" or flat, and any problem."""
    identifiers = ("id", procedure.primary_key)
    if "update" not in item:
        return {k: v for k, v in item.items() if k not in identifiers}, None
    extra = [k for k in item if k not in identifiers and k != "update"]
    if extra:
        return item["update"], f"give the change either in 'update' or flat, not both: {extra}"
    return item["update"], None


def _find_target(
    procedure: ChakraProcedure, item: dict[str, Any]
) -> tuple[ChakraProcess | None, str]:
    """Find the process a bulk-update item names, or say why it cannot."""
    pk = procedure.primary_key
    if "id" not in item and pk not in item:
        return None, f"process identifier missing: give 'id' or '{pk}'"
    target: ChakraProcess | None = None
    if "id" in item:
        # The docs' prose shows `"id": "LEAD-001"`: an id that is no process id is also tried
        # as a primary-key value.
        target = procedure.find(item["id"]) or procedure.find(item["id"], by="key")
        if target is None:
            return None, f"no process with id {item['id']!r}"
    if pk in item:
        by_key = procedure.find(item[pk], by="key")
        if by_key is None:
            return None, f"no process with {pk} {item[pk]!r}"
        if target is not None and by_key is not target:
            return None, f"'id' and '{pk}' name different processes"
        target = by_key
    return target, ""


def _check_data(procedure: ChakraProcedure, data: Any) -> str | None:
    if not isinstance(data, dict):
        return "data must be an object of attribute values"
    unknown = [name for name in data if name not in procedure.attributes]
    if unknown:
        return f"unknown attribute {unknown[0]!r} for procedure {procedure.short_id}"
    return None


def _check_status(_: ChakraProcedure, status: Any) -> str | None:
    if status in PROCESS_STATUSES:
        return None
    return f"invalid status {status!r}: expected OPEN, COMPLETED or CANCELLED"


def _check_when(_: ChakraProcedure, when: Any) -> str | None:
    if when is None or _epoch_ms(when) is not None:
        return None
    return f"nextActionAt must be epoch milliseconds, got {when!r}"


def _check_text(name: str) -> Callable[[ChakraProcedure, Any], str | None]:
    def check(_: ChakraProcedure, value: Any) -> str | None:
        return None if isinstance(value, str | None) else f"{name} must be a string"

    return check


def _check_flag(_: ChakraProcedure, value: Any) -> str | None:
    return None if isinstance(value, bool) else "isDeleted must be true or false"


_FIELD_CHECKS: Mapping[str, Callable[[ChakraProcedure, Any], str | None]] = MappingProxyType(
    {
        "data": _check_data,
        "status": _check_status,
        "nextActionAt": _check_when,
        "state": _check_text("state"),
        "assignedTo": _check_text("assignedTo"),
        "isDeleted": _check_flag,
    }
)


def _check_change(procedure: ChakraProcedure, change: Any, fields: frozenset[str]) -> str | None:
    """Return why a change is invalid for `procedure`, or None if it is valid."""
    if not isinstance(change, dict):
        return "the change must be an object"
    if not fields.issuperset(change):
        return f"unknown field {min(set(change) - fields)!r}"
    for name, value in change.items():
        problem = _FIELD_CHECKS[name](procedure, value)
        if problem is not None:
            return problem
    return None


def _epoch_ms(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _update(
    procedure: ChakraProcedure, process: ChakraProcess, change: Mapping[str, Any], when: int
) -> None:
    data = change.get("data") or {}
    pk = procedure.primary_key
    if pk in data and data[pk] != process.data.get(pk):
        procedure.rekey(process, process.data.get(pk), data[pk])
    process.data.update(data)
    if "state" in change:
        process.state = change["state"]
    if "status" in change:
        process.status = change["status"]
    if "assignedTo" in change:
        process.assigned_to = change["assignedTo"]
    if change.get("nextActionAt") is not None:
        process.next_action_at = _epoch_ms(change["nextActionAt"])
    if change.get("isDeleted"):
        process.is_deleted = True
        procedure.forget_key(process.data.get(pk))
    process.updated_at = when


# -- HTTP -------------------------------------------------------------------------------------


def _wrap(data: Any, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"_data": data, "_meta": dict(meta or {}), "_errors": []}


def chakra_error(status: int, message: str) -> web.Response:
    """Answer an error the way Chakra wraps everything: `_errors` holds the message."""
    if message.startswith(f"{status}: "):
        message = message.partition(": ")[2]
    return json_response({"_data": None, "_meta": {}, "_errors": [message]}, status=status)


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=message)


def _int_param(request: web.Request, name: str, default: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise _bad_request(f"{name} must be an integer, got {text!r}") from None


class _ChakraHandlers:
    def __init__(self, state: ChakraState) -> None:
        self.state = state

    def _procedure(self, request: web.Request) -> ChakraProcedure:
        name = request.match_info["procedure"]
        procedure = self.state.procedure(name)
        if procedure is None:
            raise web.HTTPNotFound(text=f"procedure {name!r} not found")
        return procedure

    async def bulk_update(self, request: web.Request) -> web.Response:
        procedure = self._procedure(request)
        raw, body = await read_json(request)
        items = body.get("processes") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise _bad_request("the body must be an object with a 'processes' array")
        job = self.state.submit_update(procedure, items)
        return self._acknowledge(request, raw, job)

    async def bulk_create(self, request: web.Request) -> web.Response:
        procedure = self._procedure(request)
        raw, body = await read_json(request)
        if not isinstance(body, list):
            raise _bad_request("the body must be an array of processes")
        job = self.state.submit_create(procedure, body)
        return self._acknowledge(request, raw, job)

    def _acknowledge(self, request: web.Request, raw: bytes, job: ChakraJob) -> web.Response:
        self.state.records.chakra_submissions.append(
            ChakraSubmission(
                method=request.method,
                path=request.raw_path.partition("?")[0],
                procedure=request.match_info["procedure"],
                raw=raw,
                job_id=job.id,
                entries=job.total,
                received_at=job.started_at,
                received_wall=wall_now(),
            )
        )
        return json_response(_wrap(job.acknowledgement()))

    def _job(self, request: web.Request) -> ChakraJob:
        job_id = request.match_info["job_id"]
        job = self.state.jobs.get(job_id)
        if job is None:
            raise web.HTTPNotFound(text=f"background job {job_id!r} not found")
        return job

    async def job(self, request: web.Request) -> web.Response:
        job = self._job(request)
        now = self.state.clock.now()
        meta = {"bjEntryCompletionStatusVsCount": job.counts(now)}
        return json_response(_wrap(job.summary(now, self.state.job_shape), meta))

    async def entries(self, request: web.Request) -> web.Response:
        job = self._job(request)
        status = request.query.get("completionStatus") or None
        if status is not None and status not in ENTRY_STATUSES:
            raise _bad_request(f"completionStatus must be one of {', '.join(ENTRY_STATUSES)}")
        limit = _int_param(request, "limit", MAX_LIMIT)
        skip = _int_param(request, "skip", 0)
        if limit < 1:
            raise _bad_request(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        if skip < 0:
            raise _bad_request(f"skip cannot be negative, got {skip}")
        limit = min(limit, MAX_LIMIT)
        served = self.state.page_limit(job.id, skip, limit)
        entries, total = job.page_json(status, skip, served, self.state.clock.now())
        after = skip + limit
        # Printed the way the docs print it, without "&" between the parameters.
        path = f"/v1/ext/background-job/{job.id}/entries?skip={after}limit={limit}"
        meta = dumps_text({"total": total, "next": path if after < total else None})
        # What `_wrap` holds, encoded around the page's ready-made text.
        return encoded_response(f'{{"_data":{entries},"_meta":{meta},"_errors":[]}}'.encode())


def _auth(state: ChakraState) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if state.clock.now() < state.unauthorized_until:
            # A token being rotated: for a moment no token works, the new one included.
            raise web.HTTPUnauthorized(text="invalid access token")
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != state.token:
            message = "missing bearer token" if not given else "invalid access token"
            raise web.HTTPUnauthorized(text=message)
        return await handler(request)

    return middleware


def make_chakra_app(
    state: ChakraState,
    *,
    faults: FaultSet | None = None,
    rate_limit: TokenBucket | None = None,
    elsewhere: Callable[[], str] | None = None,
) -> web.Application:
    """Build the simulated Chakra API as an aiohttp application.

    Routes (all behind `Authorization: Bearer <state.token>`):
    `PATCH /v1/ext/procedure/{procedure}/process`,
    `POST /v1/ext/procedure/{procedure}/process/bulk-create`,
    `GET /v1/ext/background-job/{job_id}` and `GET /v1/ext/background-job/{job_id}/entries`.

    Args:
        state: The data it serves; requests and submissions go to `state.records`.
        faults: Fault rules to inject, if any.
        rate_limit: A token bucket per credential, if any.
        elsewhere: The base URL of another origin, where "redirect" faults point by default.
    """
    handlers = _ChakraHandlers(state)
    app = web.Application(
        middlewares=[
            observe("chakra", state.records, faults, chakra_error, rate_limit, elsewhere),
            error_middleware(chakra_error),
            _auth(state),
        ],
        client_max_size=1024**3,
    )
    app.router.add_patch("/v1/ext/procedure/{procedure}/process", handlers.bulk_update)
    app.router.add_post("/v1/ext/procedure/{procedure}/process/bulk-create", handlers.bulk_create)
    app.router.add_get("/v1/ext/background-job/{job_id}", handlers.job)
    app.router.add_get("/v1/ext/background-job/{job_id}/entries", handlers.entries)
    return app
