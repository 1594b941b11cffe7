"""The simulated Zefort API: contracts, bulk updates and the tasks that carry them out.

A task never runs on a timer: it is given a due time when created, and the first request (or
state read) after that time finishes it, in due-time order, from a heap. The pending-task listing
finds the first task of a page through an order-statistics index (a Fenwick tree over creation
order) in O(log n), then the next ones through a flag per task, so a page costs O(page_size) in
Python however many tasks exist or were acknowledged (runs of acknowledged ones are skipped by a
byte search).
"""

from __future__ import annotations

import base64
import binascii
import heapq
import itertools
import math
import random
import string
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs
from aiohttp import web

from ._clock import Clock, MonotonicClock
from ._http import (
    dumps_text,
    encoded_response,
    error_middleware,
    json_response,
    observe,
    quote,
    read_json,
)
from ._records import Records, ZefortSubmission, wall_now

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from aiohttp.typedefs import Handler, Middleware

    from ._faults import FaultSet
    from ._limits import TokenBucket

#: Contract statuses, as Zefort documents them.
CONTRACT_STATUSES = frozenset(
    {"archived", "done", "error", "limited", "processing", "queued", "review"}
)
#: Text searches a bulk update's `search` accepts, and the contract fields each one reads.
TEXT_SEARCHES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "q": ("name", "text", "tags", "parties", "notes", "emails", "attachments", "attributes"),
        "q_main_documents": ("name", "text"),
        "q_attachments": ("attachments",),
        "q_parties": ("parties",),
        "q_notes": ("notes",),
        "q_tags": ("tags",),
        "q_emails": ("emails",),
    }
)
#: Exact-value filters, and search parameters accepted but not simulated (they match all).
EXACT_FILTERS = frozenset({"tags", "status", "owner", "binder", "language"})
IGNORED_FILTERS = frozenset(
    {
        "recursive",
        "receive_time",
        "activities_times",
        "pending_activities_times",
        "cover_document_docai_task_status",
        "esign_status",
        "minimal",
        "sort",
    }
)
#: The reference documents a family of counters (``num_parties``, ...): accepted, not simulated.
IGNORED_PREFIX = "num_"
DEFAULT_PAGE_SIZE = 24
DESCRIPTION = "Contract Bulk operation"
_DESCRIPTION_JSON = dumps_text(DESCRIPTION)

TaskDelay = float | tuple[float, float] | Callable[[Any], float]
_ALPHABET = string.digits + string.ascii_letters


@attrs.define(eq=False)
class ZefortContract:
    """A contract in the simulated store (mutable: bulk updates change it).

    Attributes:
        id: "ct_..." id.
        name: Its title.
        status: One of `CONTRACT_STATUSES`.
        tags: Tag names.
        attributes: Attribute values by name (e.g. "end_date").
        parties: Party names.
        text: Main document text, for `q` and `q_main_documents`.
        notes: Notes, for `q_notes`.
        emails: E-mail texts, for `q_emails`.
        attachments: Attachment texts, for `q_attachments`.
        owner: Owner id, for the `owner` filter.
        binder: Binder id ("bnd_..."), for the `binder` filter.
        language: Language code, for the `language` filter.
    """

    id: str
    name: str = ""
    status: str = "done"
    tags: list[str] = attrs.Factory(list)
    attributes: dict[str, Any] = attrs.Factory(dict)
    parties: list[str] = attrs.Factory(list)
    text: str = ""
    notes: list[str] = attrs.Factory(list)
    emails: list[str] = attrs.Factory(list)
    attachments: list[str] = attrs.Factory(list)
    owner: str | None = None
    binder: str | None = None
    language: str | None = None

    def texts(self, fields: Iterable[str]) -> Iterator[str]:
        """Yield the lower-cased texts of `fields`, for text search."""
        for name in fields:
            value = getattr(self, name)
            if isinstance(value, dict):
                value = [str(v) for v in value.values()]
            if isinstance(value, str):
                yield value.lower()
            else:
                yield from (str(v).lower() for v in value)


def _forget_text(task: ZefortTask, _: attrs.Attribute[Any], value: Any) -> Any:
    """`ZefortTask`'s fields shown in its text: setting one forgets the text made of them."""
    task._text = None  # noqa: SLF001 -- the class's own cache
    return value


@attrs.define(eq=False)
class ZefortTask:
    """A bulk-operation task.

    Attributes:
        id: "task_..." id.
        data: The request body, echoed in `details.data` until the task is done.
        query_params: The query parameters of the request, echoed in `details.query_params`.
        created_at: Simulated time of creation.
        due_at: Simulated time at which it finishes.
        backend_status: "pending", then "done" or a failure value.
        backend_status_info: Text about the backend status (the failure's message).
        frontend_status: "pending" until acknowledged with "done".
        contracts: The ids of the contracts it changed, once done.
        failure: (status, info) it will end with instead of "done", if a test asked for that.
    """

    id: str = attrs.field(on_setattr=_forget_text)
    seq: int
    data: Any = attrs.field(on_setattr=_forget_text)
    query_params: dict[str, str] = attrs.field(on_setattr=_forget_text)
    created_at: float
    due_at: float
    backend_status: str = attrs.field(default="pending", on_setattr=_forget_text)
    backend_status_info: str = attrs.field(default="", on_setattr=_forget_text)
    frontend_status: str = attrs.field(default="pending", on_setattr=_forget_text)
    contracts: list[str] | None = attrs.field(default=None, on_setattr=_forget_text)
    failure: tuple[str, str] | None = None
    # The task's text, once made: see `json_text`. Setting a field it shows forgets it.
    _text: str | None = attrs.field(default=None, init=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """Return the task as the API shows it."""
        data = self.data if self.contracts is None else {"contracts": self.contracts}
        return {
            "id": self.id,
            "details": {"query_params": self.query_params, "data": data},
            "backend_status": self.backend_status,
            "backend_status_info": self.backend_status_info,
            "frontend_status": self.frontend_status,
            "description": DESCRIPTION,
        }

    def json_text(self) -> str:
        """Return the task as the API shows it, encoded: exactly what encoding `to_json()` gives.

        The text is made once and kept until a field it shows is set again (the simulator
        replaces them, never changes them in place), so listing a thousand pending tasks costs
        the server an attribute read each, not an encoding.
        """
        text = self._text
        if text is None:
            data, contracts = self.data, self.contracts
            shown = data if contracts is None else {"contracts": contracts}
            details = dumps_text({"query_params": self.query_params, "data": shown})
            text = self._text = (
                f'{{"id":{quote(self.id)},"details":{details},'
                f'"backend_status":{quote(self.backend_status)},'
                f'"backend_status_info":{quote(self.backend_status_info)},'
                f'"frontend_status":{quote(self.frontend_status)},'
                f'"description":{_DESCRIPTION_JSON}}}'
            )
        return text


class _Ranked:
    """The listed (unacknowledged) tasks in creation order, indexable by rank in O(log n).

    It holds the tasks themselves, so a page is a slice of them, not a lookup per task.

    A Fenwick tree over creation sequence numbers holds 1 per listed task; appending, removing and
    re-adding are O(log n), and the k-th listed task is found by binary lifting in O(log n).
    """

    def __init__(self) -> None:
        self._tasks: list[ZefortTask] = []
        self._listed: bytearray = bytearray()
        self._tree: list[int] = [0]
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def next_seq(self) -> int:
        """The sequence number the next task appended gets."""
        return len(self._tasks)

    def append(self, task: ZefortTask) -> None:
        """List a new task (numbered `next_seq`) after all others."""
        self._tasks.append(task)
        self._listed.append(1)
        position = len(self._tasks)
        low = position & -position
        # A new node covers (position - low, position]: its sum is that range of prefix sums.
        self._tree.append(1 + self._prefix(position - 1) - self._prefix(position - low))
        self._count += 1

    def set(self, seq: int, *, listed: bool) -> None:
        """List or unlist the task with sequence number `seq`."""
        if self._listed[seq] == listed:
            return
        self._listed[seq] = listed
        delta = 1 if listed else -1
        self._count += delta
        position = seq + 1
        while position < len(self._tree):
            self._tree[position] += delta
            position += position & -position

    def _prefix(self, position: int) -> int:
        total = 0
        while position > 0:
            total += self._tree[position]
            position -= position & -position
        return total

    def page(self, start: int, count: int) -> list[ZefortTask]:
        """Return up to `count` listed tasks from 0-based rank `start`, in order.

        Finds the first in O(log n), then takes the next ones a run of listed tasks at a time:
        the flags are scanned at C speed for where each run ends and the next begins.
        """
        if count <= 0 or start >= self._count:
            return []
        tasks, listed = self._tasks, self._listed
        seq = self._seq(start)
        page: list[ZefortTask] = []
        while seq >= 0 and (left := count - len(page)) > 0:
            end = listed.find(0, seq, seq + left)
            if end < 0:
                end = min(seq + left, len(tasks))
            page += tasks[seq:end]
            seq = listed.find(1, end)
        return page

    def _seq(self, rank: int) -> int:
        """Return the sequence number of the listed task at 0-based `rank` in creation order."""
        position = 0
        remaining = rank + 1
        step = 1 << (len(self._tree) - 1).bit_length()
        while step:
            following = position + step
            if following < len(self._tree) and self._tree[following] < remaining:
                position = following
                remaining -= self._tree[following]
            step >>= 1
        return position


class ZefortState:
    """The data behind the simulated Zefort API: contracts and bulk-operation tasks.

    Starts with example contracts (see `add_examples`) unless told otherwise.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        seed: int = 0,
        task_delay: TaskDelay = (0.2, 1.0),
        failure_rate: float = 0.0,
        page_size_max: int = 1000,
        api_key: str = "zefort-sim-key",
        records: Records | None = None,
        examples: bool = True,
    ) -> None:
        """Create the state.

        Args:
            clock: The simulated clock; a real-time `MonotonicClock` by default.
            seed: Seeds ids, random delays and failures.
            task_delay: Simulated seconds from creation to completion: a number, a (low, high)
                range drawn uniformly, or a function of the request body returning seconds.
            failure_rate: The fraction of tasks that end in "error" instead of "done" (seeded).
            page_size_max: The largest `page_size` the task listing honours (larger is clamped).
            api_key: The API key accepted as the Basic-auth user name.
            records: Where to record submissions and acknowledgements; new records by default.
            examples: Start with example contracts.

        Raises:
            ValueError: A setting is out of range.
        """
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be within [0, 1], got {failure_rate!r}")
        if page_size_max < 1:
            raise ValueError(f"page_size_max must be at least 1, got {page_size_max!r}")
        if isinstance(task_delay, tuple) and not 0 <= task_delay[0] <= task_delay[1]:
            raise ValueError(f"a delay range needs 0 <= low <= high, got {task_delay!r}")
        self.clock: Clock = clock or MonotonicClock()
        self.records = records if records is not None else Records(self.clock)
        self.api_key = api_key
        #: Simulated time before which every request is refused 401 (see `rotate_credentials`).
        self.unauthorized_until = 0.0
        self.task_delay = task_delay
        self.failure_rate = failure_rate
        self.page_size_max = page_size_max
        self._random = random.Random(f"zefort/{seed}")
        self._contracts: dict[str, ZefortContract] = {}
        self._tasks: dict[str, ZefortTask] = {}
        #: Due times not yet settled, ``(due_at, seq, task_id)``: a heap, and beside it the
        #: rest of a sorted backlog (`postpone_tasks`), read from `_backlog_at` on. Settling a
        #: million tasks from the backlog costs an index step each, not a heap pop.
        self._due: list[tuple[float, int, str]] = []
        self._backlog: list[tuple[float, int, str]] = []
        self._backlog_at = 0
        self._listed = _Ranked()
        self._fail_next: list[tuple[str, str]] = []
        #: Answer page 1 of the task listing whatever ``page`` asks for, as a server that
        #: ignores the parameter does (a test may switch it while the server runs).
        self.listing_ignores_page = False
        if examples:
            self.add_examples()

    def __repr__(self) -> str:
        """Summarise the state."""
        return (
            f"<ZefortState contracts={len(self._contracts)} tasks={len(self._tasks)} "
            f"listed={len(self._listed)}>"
        )

    @property
    def contracts(self) -> Mapping[str, ZefortContract]:
        """Every contract by id, with every finished task applied (read-only view)."""
        self.settle()
        return MappingProxyType(self._contracts)

    @property
    def tasks(self) -> Mapping[str, ZefortTask]:
        """Every task by id, acknowledged ones included, up to date (read-only view)."""
        self.settle()
        return MappingProxyType(self._tasks)

    @property
    def listed_count(self) -> int:
        """The number of tasks not yet acknowledged (those `GET /api/tasks/` lists)."""
        return len(self._listed)

    def task(self, task_id: str) -> ZefortTask | None:
        """Return a task, up to date, or None."""
        self.settle()
        return self._tasks.get(task_id)

    def add_contract(
        self,
        name: str = "",
        *,
        id: str | None = None,  # noqa: A002 - the vendor's name for it
        status: str = "done",
        tags: Iterable[str] = (),
        attributes: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> ZefortContract:
        """Add a contract.

        Args:
            name: Its title.
            id: Its "ct_..." id; a seeded random one by default.
            status: One of `CONTRACT_STATUSES`.
            tags: Tag names.
            attributes: Attribute values by name.
            **fields: Other `ZefortContract` fields (parties, text, notes, owner, binder...).

        Raises:
            ValueError: The id is taken or the status is unknown.
        """
        contract_id = id or self._new_id("ct_")
        if contract_id in self._contracts:
            raise ValueError(f"contract {contract_id!r} already exists")
        if status not in CONTRACT_STATUSES:
            raise ValueError(f"unknown contract status {status!r}")
        contract = ZefortContract(
            id=contract_id,
            name=name,
            status=status,
            tags=list(tags),
            attributes=dict(attributes or {}),
            **fields,
        )
        self._contracts[contract_id] = contract
        return contract

    def add_examples(self) -> None:
        """Add example contracts, two of them as the docs print them.

        "Cleaning services 2022" (ct_1KmjVahd4Hg6W7l18c) and "IT support agreement"
        (ct_1JXncwxR5skmpC4dDB) carry the "contracts of service" tag; others carry "nda",
        "lease" and "supplier", in various statuses.
        """
        service = "contracts of service"
        self.add_contract(
            "Cleaning services 2022",
            id="ct_1KmjVahd4Hg6W7l18c",
            tags=[service],
            attributes={"end_date": "2022-12-31"},
            parties=["Acme Oy", "Siisti Ltd"],
        )
        self.add_contract(
            "IT support agreement",
            id="ct_1JXncwxR5skmpC4dDB",
            tags=[service, "it"],
            status="review",
            attributes={"end_date": "2023-06-30"},
            parties=["Acme Oy", "Helpdesk Inc"],
        )
        self.add_contract(
            "Mutual NDA",
            id="ct_1KuKrFqQA25mskTpbK",
            tags=["nda"],
            parties=["Acme Oy", "Startup AB"],
            text="confidential information",
        )
        self.add_contract(
            "Office lease Helsinki",
            id="ct_1Lh8QmZr0Tq2pXwYbN",
            tags=["lease"],
            status="archived",
            attributes={"end_date": "2030-01-31"},
            binder="bnd_1KkRayN40nouuVTujc",
        )
        self.add_contract(
            "Paper supply",
            id="ct_1M2dVnE7s9KpQ4uRtA",
            tags=["supplier"],
            status="processing",
            language="fi",
        )

    # -- tasks -----------------------------------------------------------------------------

    def submit_bulk_update(
        self, body: Any, query_params: Mapping[str, str] | None = None
    ) -> ZefortTask:
        """Create the task of a bulk update (what POST /api/contracts/bulk_update/ does).

        Raises:
            TypeError: The body or a part of it is not a JSON object.
            ValueError: The body is not a valid bulk update (the message says why).
        """
        _check_bulk_update(body)
        self.settle()
        now = self.clock.now()
        delay = self._delay(body)
        task_id = self._new_id("task_")
        failure = None
        if self._fail_next:
            failure = self._fail_next.pop(0)
        elif self.failure_rate and self._random.random() < self.failure_rate:
            failure = ("error", "simulated failure")
        task = ZefortTask(
            id=task_id,
            seq=self._listed.next_seq,
            data=body,
            query_params=dict(query_params or {}),
            created_at=now,
            due_at=now + delay,
            failure=failure,
        )
        self._tasks[task_id] = task
        self._listed.append(task)
        heapq.heappush(self._due, (task.due_at, task.seq, task_id))
        self.records.expect_task_finish(task_id, task.due_at)
        return task

    def fail_task(
        self,
        task_id: str,
        status: str = "error",
        *,
        info: str = "simulated failure",
        at_once: bool = False,
    ) -> ZefortTask:
        """Make a pending task end in `status` instead of "done".

        Args:
            task_id: The task.
            status: The failure value of `backend_status` (never "done" or "pending").
            info: The `backend_status_info` text.
            at_once: Fail it now instead of at its due time.

        Raises:
            KeyError: No such task.
            ValueError: The task has already finished, or `status` is "done" or "pending".
        """
        if status in {"done", "pending"}:
            raise ValueError(f"a failure status cannot be {status!r}")
        task = self.task(task_id)
        if task is None:
            raise KeyError(task_id)
        if task.backend_status != "pending":
            raise ValueError(f"task {task_id} has already finished ({task.backend_status})")
        task.failure = (status, info)
        if at_once:
            task.due_at = self.clock.now()
            heapq.heappush(self._due, (task.due_at, task.seq, task_id))
            self.records.expect_task_finish(task_id, task.due_at)
            self.settle()
        return task

    def fail_next_tasks(
        self, count: int = 1, status: str = "error", *, info: str = "simulated failure"
    ) -> None:
        """Make the next `count` tasks created end in `status` instead of "done"."""
        if status in {"done", "pending"}:
            raise ValueError(f"a failure status cannot be {status!r}")
        self._fail_next.extend([(status, info)] * count)

    def acknowledge(self, task_id: str, frontend_status: str) -> ZefortTask | None:
        """Set a task's `frontend_status` ("done" unlists it, "pending" lists it again)."""
        task = self.task(task_id)
        if task is None:
            return None
        task.frontend_status = frontend_status
        self._listed.set(task.seq, listed=frontend_status != "done")
        if frontend_status == "done":
            self.records.acknowledgements[task_id] += 1
        return task

    def listed_page(self, page: int, page_size: int) -> list[ZefortTask]:
        """Return one page of the unacknowledged tasks, oldest first (page counts from 1)."""
        self.settle()
        return self._listed.page((page - 1) * page_size, page_size)

    def postpone_tasks(self, seconds: float) -> None:
        """Move the due time of every task not yet finished ``seconds`` later.

        A benchmark that creates a million tasks calls it once they exist, so that the time
        their creation took is not time they spend finishing before the client looks.
        """
        moved: list[tuple[float, int, str]] = []
        waiting = itertools.chain(self._backlog[self._backlog_at :], self._due)
        for due_at, seq, task_id in waiting:
            task = self._tasks[task_id]
            if task.backend_status == "pending" and task.due_at == due_at:
                task.due_at = due_at + seconds
                self.records.expect_task_finish(task_id, task.due_at)
                moved.append((task.due_at, seq, task_id))
            else:
                moved.append((due_at, seq, task_id))
        moved.sort()
        self._backlog, self._backlog_at, self._due = moved, 0, []

    def settle(self) -> None:
        """Finish, in due-time order, every task whose due time has passed."""
        now = self.clock.now()
        due, backlog, tasks = self._due, self._backlog, self._tasks
        at, end = self._backlog_at, len(backlog)
        while True:
            # The earlier of the backlog's next and the heap's first: one order of due times.
            if at < end and (not due or backlog[at] < due[0]):
                entry = backlog[at]
                if entry[0] > now:
                    break
                at += 1
            elif due and due[0][0] <= now:
                entry = heapq.heappop(due)
            else:
                break
            due_at, _, task_id = entry
            task = tasks[task_id]
            if task.backend_status == "pending" and task.due_at == due_at:
                self._finish(task)
        if at >= end:
            self._backlog, at = [], 0
        self._backlog_at = at

    def _finish(self, task: ZefortTask) -> None:
        if task.failure is not None:
            task.backend_status, task.backend_status_info = task.failure
            return
        body = task.data
        search = body.get("search") or {}
        changed = [c for c in self._contracts.values() if _matches(c, search)]
        for contract in changed:
            contract.attributes.update(body.get("attributes") or {})
            if body.get("status") is not None:
                contract.status = body["status"]
        task.contracts = [c.id for c in changed]
        task.backend_status = "done"

    def _delay(self, body: Any) -> float:
        delay = self.task_delay
        if callable(delay):
            return float(delay(body))
        if isinstance(delay, tuple):
            return self._random.uniform(*delay)
        return float(delay)

    def _new_id(self, prefix: str) -> str:
        return prefix + "".join(self._random.choices(_ALPHABET, k=18))


def _check_bulk_update(body: Any) -> None:
    if not isinstance(body, dict):
        raise TypeError("the body must be a JSON object")
    attributes = body.get("attributes")
    if attributes is not None and not isinstance(attributes, dict):
        raise TypeError("attributes must be an object")
    status = body.get("status")
    if status is not None and status not in CONTRACT_STATUSES:
        raise ValueError(f'"{status}" is not a valid contract status')
    search = body.get("search")
    if search is None:
        return
    if not isinstance(search, dict):
        raise TypeError("search must be an object")
    for name in search:
        known = name in TEXT_SEARCHES or name in EXACT_FILTERS or name in IGNORED_FILTERS
        if not known and not (isinstance(name, str) and name.startswith(IGNORED_PREFIX)):
            raise ValueError(f"unknown search parameter {name!r}")


def _values(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def _matches(contract: ZefortContract, search: Mapping[str, Any]) -> bool:
    for name, value in search.items():
        if name in TEXT_SEARCHES:
            needle = str(value).lower()
            if not any(needle in text for text in contract.texts(TEXT_SEARCHES[name])):
                return False
        elif name == "tags":
            # Any of the tags named: a list, or one tag per comma-free string.
            if not set(_values(value)) & set(contract.tags):
                return False
        elif name in EXACT_FILTERS and str(getattr(contract, name)) not in _values(value):
            return False
    return True


# -- HTTP -------------------------------------------------------------------------------------

_DEFAULT_MESSAGES = {
    400: "Bad request.",
    401: "Authentication credentials were not provided.",
    404: "Not found.",
    405: "Method not allowed.",
}


def zefort_error(status: int, message: str) -> web.Response:
    """Answer an error the way Zefort (a Django REST framework API) does: `{"detail": ...}`."""
    if message.startswith(f"{status}: "):
        message = _DEFAULT_MESSAGES.get(status, message.partition(": ")[2])
    return json_response({"detail": message}, status=status)


def _task_response(task: ZefortTask) -> web.Response:
    return encoded_response(task.json_text().encode())


class _ZefortHandlers:
    def __init__(self, state: ZefortState) -> None:
        self.state = state

    async def bulk_update(self, request: web.Request) -> web.Response:
        raw, body = await read_json(request)
        query = dict(request.query)
        try:
            task = self.state.submit_bulk_update(body, query)
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        self.state.records.zefort_submissions.append(
            ZefortSubmission(
                path=request.raw_path.partition("?")[0],
                query=query,
                raw=raw,
                task_id=task.id,
                received_at=task.created_at,
                received_wall=wall_now(),
            )
        )
        return _task_response(task)

    def _task(self, request: web.Request) -> ZefortTask:
        task = self.state.task(request.match_info["id"])
        if task is None:
            raise web.HTTPNotFound(text="Not found.")
        return task

    async def get_task(self, request: web.Request) -> web.Response:
        return _task_response(self._task(request))

    async def patch_task(self, request: web.Request) -> web.Response:
        task = self._task(request)
        _, body = await read_json(request)
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="the body must be a JSON object")
        status = body.get("frontend_status")
        if status is None:
            return _task_response(task)
        if status not in {"pending", "done"}:
            raise web.HTTPBadRequest(text=f'"{status}" is not a valid frontend_status')
        self.state.acknowledge(task.id, status)
        return _task_response(task)

    async def list_tasks(self, request: web.Request) -> web.Response:
        page_size = _page_size(request.query.get("page_size"), self.state.page_size_max)
        text = request.query.get("page", "1")
        count = self.state.listed_count
        last_page = max(1, math.ceil(count / page_size))
        page = 1 if self.state.listing_ignores_page else int(text) if text.isdigit() else 0
        if not 1 <= page <= last_page:
            raise web.HTTPNotFound(text="Invalid page.")
        tasks = self.state.listed_page(page, page_size)
        url = request.url.with_query(None)

        def link(number: int) -> str:
            return str(url.with_query({"page": number, "page_size": page_size}))

        following = dumps_text(link(page + 1) if page < last_page else None)
        previous = dumps_text(link(page - 1) if page > 1 else None)
        results = ",".join([task.json_text() for task in tasks])
        # The fields in the order Zefort prints them, around the tasks' ready-made text.
        return encoded_response(
            f'{{"page_size":{page_size},"page":{page},"last_page":{last_page},"count":{count},'
            f'"next":{following},"previous":{previous},"results":[{results}]}}'.encode()
        )


def _page_size(text: str | None, largest: int) -> int:
    # As Django REST framework does: a bad page_size falls back to the default, a big one is
    # clamped.
    if text is None or not text.isdigit() or int(text) < 1:
        return min(DEFAULT_PAGE_SIZE, largest)
    return min(int(text), largest)


def _auth(state: ZefortState) -> Middleware:
    challenge = {"WWW-Authenticate": 'Basic realm="api"'}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.route.resource is None:
            # Django resolves the URL first: an unknown path is a 404 whoever asks.
            return await handler(request)
        if state.clock.now() < state.unauthorized_until:
            # A key being rotated: for a moment no key works, the new one included.
            raise web.HTTPUnauthorized(text="Invalid username/password.", headers=challenge)
        given = request.headers.get("Authorization")
        if given is None:
            raise web.HTTPUnauthorized(
                text="Authentication credentials were not provided.", headers=challenge
            )
        scheme, _, encoded = given.partition(" ")
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, password = "", "?"
        if scheme.lower() != "basic" or user != state.api_key or password:
            raise web.HTTPUnauthorized(text="Invalid username/password.", headers=challenge)
        return await handler(request)

    return middleware


def make_zefort_app(
    state: ZefortState,
    *,
    faults: FaultSet | None = None,
    rate_limit: TokenBucket | None = None,
    elsewhere: Callable[[], str] | None = None,
) -> web.Application:
    """Build the simulated Zefort API as an aiohttp application.

    Routes (all behind HTTP Basic auth with `state.api_key` as the user and an empty password;
    paths without their trailing slash answer 404): `POST /api/contracts/bulk_update/`,
    `GET /api/tasks/`, `GET /api/tasks/{id}/` and `PATCH /api/tasks/{id}/`.

    Args:
        state: The data it serves; requests, submissions and acknowledgements go to
            `state.records`.
        faults: Fault rules to inject, if any.
        rate_limit: A token bucket per credential, if any.
        elsewhere: The base URL of another origin, where "redirect" faults point by default.
    """
    handlers = _ZefortHandlers(state)
    app = web.Application(
        middlewares=[
            observe("zefort", state.records, faults, zefort_error, rate_limit, elsewhere),
            error_middleware(zefort_error),
            _auth(state),
        ],
        client_max_size=64 * 1024**2,
    )
    app.router.add_post("/api/contracts/bulk_update/", handlers.bulk_update)
    app.router.add_get("/api/tasks/", handlers.list_tasks)
    app.router.add_get("/api/tasks/{id}/", handlers.get_task)
    app.router.add_patch("/api/tasks/{id}/", handlers.patch_task)
    return app
