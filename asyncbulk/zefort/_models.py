"""Zefort's models: the task a bulk operation runs as, and a page of the pending-task listing.

Models are frozen attrs classes. The wire format is Zefort's own snake_case, so the converter
hooks here only check types and keep the whole object in `raw`: a field the server adds is never
lost, and a field of the wrong type is a `ProtocolError` naming it, never a KeyError.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, cast

import attrs
import msgspec
import orjson

from asyncbulk._converter import make_converter
from asyncbulk._exceptions import ProtocolError
from asyncbulk._handles import Origin, job_handle  # Origin: cattrs resolves field types
from asyncbulk._slots import slot_setter

if TYPE_CHECKING:
    from collections.abc import Callable

    import cattrs

__all__ = [
    "DONE_STATUSES",
    "FAILED_STATUSES",
    "RUNNING_STATUSES",
    "ListedTask",
    "TaskPage",
    "ZefortTask",
    "make_zefort_converter",
]

#: The documented ``backend_status`` of a task still running.
RUNNING_STATUSES: Final = frozenset({"pending"})
#: The documented ``backend_status`` of a task carried out.
DONE_STATUSES: Final = frozenset({"done"})
#: Undocumented values taken to mean the task ended in failure (compared case-insensitively).
FAILED_STATUSES: Final = frozenset({"error", "failed", "failure", "cancelled", "canceled"})


#: The `status_category` values of a task that will change no more.
FINISHED_CATEGORIES: Final = frozenset({"done", "failed"})

# What each backend_status value seen means, so a million tasks cost a lookup each; bounded,
# so a server sending ever new values cannot grow it.
_CATEGORIES: dict[str, str] = {}
_MAX_CATEGORIES: Final = 256


def status_category(value: str) -> str:
    """``running``, ``done``, ``failed`` or ``unknown``: what a ``backend_status`` means."""
    found = _CATEGORIES.get(value)
    if found is None:
        status = value.strip().lower()
        if status in RUNNING_STATUSES:
            found = "running"
        elif status in DONE_STATUSES:
            found = "done"
        elif status in FAILED_STATUSES:
            found = "failed"
        else:
            found = "unknown"
        if len(_CATEGORIES) < _MAX_CATEGORIES:
            _CATEGORIES[value] = found
    return found


class _Text(bytes):
    """A task's text, kept for `ZefortTask.details` and `raw` until either is read."""

    __slots__ = ()


def _parsed(value: Any) -> Mapping[str, Any]:
    """The task object a `_Text` holds (`lean_task` checked it is one)."""
    raw: Mapping[str, Any] = _decode(value)
    return raw


def _same_details(a: Any, b: Any) -> bool:
    if type(a) is _Text:
        a = _parsed(a).get("details") or {}
    if type(b) is _Text:
        b = _parsed(b).get("details") or {}
    return bool(a == b)


_DETAILS_EQ: Final = attrs.cmp_using(eq=_same_details, require_same_type=False)


@attrs.frozen(kw_only=True)
class ZefortTask:
    """A Zefort task: the background run of a bulk operation.

    Zefort documents two ``backend_status`` values, ``pending`` and ``done``. ``error``,
    ``failed``, ``failure`` and ``cancelled`` are taken as finished in failure; any other value
    as still running (the client logs one warning per such value), so a failure is never taken
    for success and a waiter's deadline bounds the rest.

    Attributes:
        id: the task id (``task_...``).
        backend_status: where the work stands: ``pending``, ``done``, or a failure value.
        backend_status_info: the server's note on that status (often empty).
        frontend_status: ``pending`` until acknowledged, then ``done``.
        description: what the task does ("Contract Bulk operation").
        details: ``query_params`` and ``data``: the request body while pending, the changed
            contracts once done.
        raw: the whole object as the server sent it.
    """

    id: str
    backend_status: str
    backend_status_info: str = ""
    frontend_status: str = ""
    description: str = ""
    # `details` and `raw`, or the task's text (`_Text`) until either is first read: a sweep
    # builds its finished tasks without parsing what the caller may never look at.
    _details: Mapping[str, Any] = attrs.field(
        factory=dict, alias="details", repr=False, eq=_DETAILS_EQ
    )
    _raw: Mapping[str, Any] = attrs.field(factory=dict, alias="raw", repr=False, eq=False)
    # Stamped by the client that built the task, for `handle`: never the client itself.
    _origin: Origin | None = attrs.field(default=None, alias="origin", repr=False, eq=False)

    @property
    def details(self) -> Mapping[str, Any]:
        """``query_params`` and ``data``: the request body, then the changed contracts."""
        details: Any = self._details
        if type(details) is not _Text:
            return cast("Mapping[str, Any]", details)
        parsed: Mapping[str, Any] = _parsed(details).get("details") or {}
        object.__setattr__(self, "_details", parsed)
        return parsed

    @property
    def raw(self) -> Mapping[str, Any]:
        """The whole object as the server sent it."""
        raw: Any = self._raw
        if type(raw) is not _Text:
            return cast("Mapping[str, Any]", raw)
        parsed = _parsed(raw)
        object.__setattr__(self, "_raw", parsed)
        return parsed

    def handle(self) -> dict[str, Any]:
        """The task as a small JSON-serialisable dict, for `ZefortClient.resume`.

        It names the vendor, the base URL, the account (by a fingerprint, not the API key) and
        the task id: ``{"asyncbulk_handle": 1, "vendor": "zefort", ..., "kind": "task",
        "task_id": ...}``.

        Raises:
            ValidationError: the task was not built by a client (its origin is unknown).
        """
        return job_handle(self._origin, "task", self.id)

    @property
    def is_done(self) -> bool:
        """Whether the task was carried out (``backend_status`` is ``done``)."""
        return status_category(self.backend_status) == "done"

    @property
    def is_failed(self) -> bool:
        """Whether the task ended in failure (``error``, ``failed``, ``failure``, ``cancelled``)."""
        return status_category(self.backend_status) == "failed"

    @property
    def is_finished(self) -> bool:
        """Whether the task will change no more: done or failed."""
        return status_category(self.backend_status) in FINISHED_CATEGORIES

    @property
    def is_known_status(self) -> bool:
        """Whether ``backend_status`` is a value Zefort documents or we read as failure."""
        return status_category(self.backend_status) != "unknown"

    @property
    def is_acknowledged(self) -> bool:
        """Whether the task was acknowledged (``frontend_status`` is ``done``)."""
        return self.frontend_status.strip().lower() in DONE_STATUSES

    @property
    def data(self) -> Any:
        """``details.data``: the request body while pending, the changed contracts once done."""
        return self.details.get("data")

    @property
    def affected_contracts(self) -> tuple[str, ...] | None:
        """The ids of the contracts a done task changed; None when not done or not said."""
        data = self.data
        if not self.is_done or not isinstance(data, Mapping):
            return None
        contracts = data.get("contracts")
        if not isinstance(contracts, list) or not all(isinstance(c, str) for c in contracts):
            return None
        return tuple(contracts)


@attrs.frozen(kw_only=True)
class TaskPage:
    """One page of the pending-task listing, its tasks still as the server sent them.

    Attributes:
        results: the raw task objects (parsed only when needed: a sweep reads thousands).
        page: the page number (from 1).
        page_size: the page size the server answered.
        last_page: the number of the last page, when the server said or it can be computed.
        count: the number of pending tasks, when the server said.
        next: the link to the next page, when the server gave one.
    """

    results: tuple[Any, ...] = attrs.field(repr=False)
    page: int
    page_size: int
    last_page: int | None = None
    count: int | None = None
    next: str | None = None
    #: The page as sent, when `results` are `ListedTask` records (`read_listed_page`).
    body: bytes | None = attrs.field(default=None, repr=False)

    def changed_tasks(self, indexes: list[int], *, origin: Origin | None) -> list[ZefortTask]:
        """The tasks at ``indexes``, built; one that cannot be read is left out (its fetch tells).

        From `body` (parsed once for all of them), each is built from its own text (`lean_task`);
        without it, from the parsed objects (`structure_task`).
        """
        if not indexes:
            return []
        build: Callable[..., ZefortTask]
        items: list[Any]
        if self.body is None:
            build, items = structure_task, [self.results[index] for index in indexes]
        else:
            raws = _RAW_PAGE.decode(self.body)
            results = raws if isinstance(raws, list) else raws.results
            build, items = lean_task, [bytes(results[index]) for index in indexes]
        tasks = []
        for item in items:
            try:
                tasks.append(build(item, origin=origin))
            except ProtocolError:
                continue
        return tasks


class ListedTask(msgspec.Struct, gc=False):
    """What a sweep reads of a listed task: its id and ``backend_status``, nothing else.

    The decoder skips every other field without building it, and these records are not
    tracked by the cyclic garbage collector: a listing of a million tasks costs it nothing.
    """

    id: Any = None
    backend_status: Any = None


class _ListedPage(msgspec.Struct, gc=False):
    results: list[ListedTask]
    page_size: Any = None
    count: Any = None
    last_page: Any = None
    next: Any = None


class _RawPage(msgspec.Struct, gc=False):
    results: list[msgspec.Raw]


_LISTED_PAGE: Final = msgspec.json.Decoder(_ListedPage | list[ListedTask])
_RAW_PAGE: Final = msgspec.json.Decoder(_RawPage | list[msgspec.Raw])
_decode: Final = msgspec.json.Decoder().decode


def _text(task: Mapping[str, Any], name: str, *, required: bool = False) -> str:
    value = task.get(name)
    if type(value) is str and (not required or value.strip()):
        return value  # the common case first: a sweep reads thousands of tasks
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ProtocolError(f"task.{name}: expected a string, got {_kind(value)}")
    if required and not value.strip():
        raise ProtocolError(f"task.{name}: expected a non-empty string")
    return value


class _AnyObject(msgspec.Struct, gc=False):
    """Any JSON object: its fields are skipped, not built."""


class _FinishedTask(msgspec.Struct, gc=False):
    """The fields of a listed task a sweep reads eagerly; `details` only has its shape checked."""

    id: str
    backend_status: str
    backend_status_info: str | None = None
    frontend_status: str | None = None
    description: str | None = None
    details: _AnyObject | None = None


_FINISHED_TASK: Final = msgspec.json.Decoder(_FinishedTask)


def lean_task(text: bytes, *, origin: Origin | None = None) -> ZefortTask:
    """A task from its text, its ``details`` and ``raw`` parsed only when first read.

    The fields are checked as `structure_task` checks them; a task it would refuse (or one in
    an unusual shape) is read by it, so the error is the same.

    Raises:
        ProtocolError: a field is missing or of the wrong type (the message names it).
    """
    try:
        task = _FINISHED_TASK.decode(text)
    except (msgspec.ValidationError, msgspec.DecodeError):
        task = None
    if task is None or not task.id.strip() or not task.backend_status.strip():
        try:
            value = _decode(text)
        except msgspec.DecodeError:
            raise ProtocolError("task: not JSON") from None
        return structure_task(value, origin=origin)
    # Kept as text until read; typed as what the properties make of it.
    kept: Any = _Text(text)
    return _filled(
        task.id,
        task.backend_status,
        task.backend_status_info or "",
        task.frontend_status or "",
        task.description or "",
        kept,
        kept,
        origin,
    )


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


_new: Final = object.__new__
_set_id: Final = slot_setter(ZefortTask, "id")
_set_status: Final = slot_setter(ZefortTask, "backend_status")
_set_info: Final = slot_setter(ZefortTask, "backend_status_info")
_set_frontend: Final = slot_setter(ZefortTask, "frontend_status")
_set_description: Final = slot_setter(ZefortTask, "description")
_set_details: Final = slot_setter(ZefortTask, "_details")
_set_raw: Final = slot_setter(ZefortTask, "_raw")
_set_origin: Final = slot_setter(ZefortTask, "_origin")


def _filled(  # noqa: PLR0917 -- every field of a task, in order
    task_id: str,
    status: str,
    info: str,
    frontend: str,
    description: str,
    details: Any,
    raw: Any,
    origin: Origin | None,
) -> ZefortTask:
    """A `ZefortTask` of fields checked already, filled slot by slot as `__init__` would.

    Both readers build through it (a task fetched, one found finished by a sweep): the
    frozen class's keyword ``__init__`` costs several times as much.
    """
    task = _new(ZefortTask)
    _set_id(task, task_id)
    _set_status(task, status)
    _set_info(task, info)
    _set_frontend(task, frontend)
    _set_description(task, description)
    _set_details(task, details)
    _set_raw(task, raw)
    _set_origin(task, origin)
    return task


def structure_task(value: Any, *, origin: Origin | None = None) -> ZefortTask:
    """Read one task object.

    Args:
        value: the parsed task.
        origin: the client that read it, for `handle`.

    Raises:
        ProtocolError: a field is missing or of the wrong type (the message names it).
    """
    # `type(...) is dict` first: JSON objects are dicts, and an ABC check costs ten times more.
    if type(value) is not dict and not isinstance(value, Mapping):
        raise ProtocolError(f"task: expected a JSON object, got {_kind(value)}")
    details = value.get("details")
    if details is None:
        details = {}
    elif type(details) is not dict and not isinstance(details, Mapping):
        raise ProtocolError(f"task.details: expected an object, got {_kind(details)}")
    get = value.get
    task_id, status, info = get("id"), get("backend_status"), get("backend_status_info")
    frontend, description = get("frontend_status"), get("description")
    if (
        type(task_id) is str
        and task_id.strip()
        and type(status) is str
        and status.strip()
        and type(info) is str
        and type(frontend) is str
        and type(description) is str
    ):
        # Every field a string, the two required ones not blank (a task as the server sends
        # it): nothing for `_text` to check.
        return _filled(task_id, status, info, frontend, description, details, value, origin)
    return ZefortTask(
        id=_text(value, "id", required=True),
        backend_status=_text(value, "backend_status", required=True),
        backend_status_info=_text(value, "backend_status_info"),
        frontend_status=_text(value, "frontend_status"),
        description=_text(value, "description"),
        details=details,
        raw=value,
        origin=origin,
    )


def _count(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"tasks.{name}: expected a count, got {value!r}")
    return value


def structure_page(body: Any, *, page: int, page_size: int) -> TaskPage:
    """Read one page of ``GET /api/tasks/``; a bare list is taken as the whole listing.

    Raises:
        ProtocolError: the body is not a listing (the message names the field).
    """
    if isinstance(body, list):
        return TaskPage(results=tuple(body), page=page, page_size=len(body) or 1, last_page=page)
    if not isinstance(body, Mapping):
        raise ProtocolError(f"tasks: expected a JSON object, got {_kind(body)}")
    results = body.get("results")
    if not isinstance(results, list):
        raise ProtocolError(f"tasks.results: expected a list, got {_kind(results)}")
    answered = _count(body, "page_size") or page_size
    count = _count(body, "count")
    last_page = _count(body, "last_page")
    if last_page is None and count is not None:
        last_page = max(1, math.ceil(count / answered))
    link = body.get("next")
    if link is not None and not isinstance(link, str):
        raise ProtocolError(f"tasks.next: expected a link or null, got {_kind(link)}")
    return TaskPage(
        results=tuple(results),
        page=page,
        page_size=answered,
        last_page=last_page,
        count=count,
        next=link or None,
    )


def read_listed_page(body: bytes, *, page: int, page_size: int) -> TaskPage:
    """Read a listing page for a sweep: `ListedTask` records, the page kept as bytes.

    A page that is not in the expected shape (a task that is not an object, say) is read the
    general way instead (`structure_page`, dicts), so it fails, or is skipped, exactly as then.

    Raises:
        ProtocolError: the body is not JSON, or not a listing (the message names the field).
    """
    try:
        lean = _LISTED_PAGE.decode(body)
    except msgspec.ValidationError:
        return structure_page(orjson.loads(body), page=page, page_size=page_size)
    except msgspec.DecodeError:
        raise ProtocolError("answer is not JSON") from None
    if isinstance(lean, list):
        return TaskPage(
            results=tuple(lean), page=page, page_size=len(lean) or 1, last_page=page, body=body
        )
    meta = {
        "results": lean.results,
        "page_size": lean.page_size,
        "count": lean.count,
        "last_page": lean.last_page,
        "next": lean.next,
    }
    return attrs.evolve(structure_page(meta, page=page, page_size=page_size), body=body)


def make_zefort_converter() -> cattrs.Converter:
    """The converter for Zefort's models: it checks types and keeps the raw object."""
    converter = make_converter()
    converter.register_structure_hook(ZefortTask, lambda value, _: structure_task(value))
    return converter
