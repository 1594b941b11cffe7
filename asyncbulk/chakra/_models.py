"""ChakraHQ's models: what a caller sends (`ProcessUpdate`, `ProcessCreate`) and what comes back.

Models are frozen attrs classes with snake_case fields. Wire names (camelCase, ``_data``,
``apiData``) live only in the converter hooks at the bottom of this module, registered on the one
converter `make_chakra_converter` builds. Every model read from the server keeps the whole object
it came from in `raw`, so a field the server adds is never lost. `JobEntry` alone is a
hand-written frozen class: entry streaming builds it straight from the parsed object and reads
its fields on first use, which attrs cannot do.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Final, NamedTuple, Self, TypeAlias

import attrs
import msgspec

from asyncbulk._converter import make_converter
from asyncbulk._exceptions import ProtocolError, ValidationError
from asyncbulk._handles import Origin, job_handle  # Origin: cattrs resolves field types
from asyncbulk._slots import slot_setter

if TYPE_CHECKING:
    from collections.abc import Sequence

    import cattrs

__all__ = [
    "ENTRY_STATUSES",
    "PROCESS_STATUSES",
    "BackgroundJob",
    "JobEntry",
    "ProcessCreate",
    "ProcessUpdate",
    "make_chakra_converter",
]

#: The process statuses a change may set.
PROCESS_STATUSES: Final = frozenset({"OPEN", "COMPLETED", "CANCELLED"})
#: The completion statuses of a background job's entries, as the entries API filters them.
ENTRY_STATUSES: Final = ("INVALID", "NOT_STARTED", "IN_PROGRESS", "SUCCESS", "ERROR", "CANCELLED")

_UNFINISHED: Final = frozenset({"NOT_STARTED", "IN_PROGRESS"})
_SUCCEEDED: Final = frozenset({"SUCCESS", "COMPLETED", "DONE"})
# Item keys that are the change's own fields (wire and Python spellings), never an identifier.
_WIRE_FIELDS: Final = {
    "data": "data",
    "state": "state",
    "status": "status",
    "assignedTo": "assigned_to",
    "assigned_to": "assigned_to",
    "nextActionAt": "next_action_at",
    "next_action_at": "next_action_at",
    "isDeleted": "is_deleted",
    "is_deleted": "is_deleted",
}
_RESERVED_KEYS: Final = frozenset({"id", "update", *_WIRE_FIELDS})
_CREATE_FIELDS: Final = frozenset(set(_WIRE_FIELDS) - {"isDeleted", "is_deleted"})
_UTC: Final = dt.UTC


# -- caller input ------------------------------------------------------------------------------


def _check_text(field: str, value: object) -> str:
    if type(value) is not str and not isinstance(value, str):
        raise ValidationError(field, f"must be a string, not {type(value).__name__}")
    if not value.strip():
        raise ValidationError(field, "must not be empty")
    return value


def _check_status(value: object) -> str:
    if not isinstance(value, str) or value not in PROCESS_STATUSES:
        raise ValidationError("status", f"must be one of OPEN, COMPLETED, CANCELLED, not {value!r}")
    return str(value)


def _check_epoch_ms(value: object) -> int:
    """``next_action_at`` as epoch milliseconds, from an int, an aware datetime or digits."""
    field = "next_action_at"
    if isinstance(value, bool):
        raise ValidationError(field, "must be epoch milliseconds, not a bool")
    if isinstance(value, int):
        millis = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ValidationError(field, f"must be whole epoch milliseconds, not {value!r}")
        millis = int(value)
    elif isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValidationError(field, "must be a timezone-aware datetime (naive given)")
        return round(value.timestamp() * 1000)
    elif isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()):
            raise ValidationError(field, f"must be a string of digits, not {value!r}")
        millis = int(text)
    else:
        raise ValidationError(
            field, f"must be epoch milliseconds, a datetime or digits, not {type(value).__name__}"
        )
    if millis < 0:
        raise ValidationError(field, f"must not be negative, not {millis}")
    return millis


def _check_json_keys(value: object, field: str) -> None:
    """Refuse non-string keys in nested mappings, which `json.dumps` would silently stringify."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(field, f"has a non-string key {key!r}")
            if isinstance(item, dict | list | tuple):
                _check_json_keys(item, f"{field}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if isinstance(item, dict | list | tuple):
                _check_json_keys(item, f"{field}[{index}]")


_PAIRS: Final = (tuple, list)
_SCALARS: Final = frozenset({str, int, bool, type(None)})
# A reused encoder: json.dumps(..., allow_nan=False) would build a new one per call.
_STRICT_JSON: Final = json.JSONEncoder(allow_nan=False)


def _check_data(value: object) -> dict[str, Any]:
    """``data`` as a dict with string keys and JSON values, or a `ValidationError`."""
    if type(value) is not dict and not isinstance(value, Mapping):
        raise ValidationError("data", f"must be a mapping, not {type(value).__name__}")
    data = dict(value)
    _check_data_values(data)
    return data


def _check_data_values(data: dict[str, Any]) -> None:
    """Refuse a key that is not a string, or a value that is not JSON, naming it."""
    scalars = _SCALARS
    for key, item in data.items():
        if type(key) is not str:
            raise ValidationError("data", f"has a non-string key {key!r}")
        kind = type(item)
        if kind in scalars:
            continue
        if kind is float:
            if not math.isfinite(item):
                raise ValidationError(f"data.{key}", f"is not a finite number: {item!r}")
            continue
        # Containers and subclasses: the C encoder refuses sets, bytes, objects, NaN and
        # infinities in one pass; the walk refuses keys it would silently turn into strings.
        try:
            _STRICT_JSON.encode(item)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"data.{key}", f"is not JSON: {exc}") from None
        _check_json_keys(item, f"data.{key}")


def _check_key(value: Any) -> tuple[str, str | int]:
    if type(value) not in _PAIRS or len(value) != 2:  # noqa: PLR2004 -- a pair
        raise ValidationError("key", "must be an (attribute, value) pair")
    attribute: Any
    key_value: Any
    attribute, key_value = value
    _check_text("key", attribute)
    if attribute in _RESERVED_KEYS:
        hint = ": pass the process id as id=" if attribute == "id" else ""
        raise ValidationError("key", f"attribute {attribute!r} is a reserved field name{hint}")
    kind = type(key_value)
    if kind is str:
        if not key_value.strip():
            raise ValidationError("key", "value must not be empty")
    elif kind is not int:
        raise ValidationError("key", f"value must be a string or an integer, not {key_value!r}")
    return attribute, key_value


def _plain_key(key: tuple[Any, Any]) -> tuple[str, str | int]:
    """`_check_key` for the commonest key, a non-blank name and a non-blank string value."""
    attribute, value = key
    if (
        type(attribute) is str
        and type(value) is str
        and attribute.strip()
        and value.strip()
        and attribute not in _RESERVED_KEYS
    ):
        return key
    return _check_key(key)


def _changes(
    data: object,
    state: object,
    status: object,
    assigned_to: object,
    next_action_at: object,
) -> tuple[dict[str, Any] | None, str | None, str | None, str | None, int | None]:
    return (
        None if data is None else _check_data(data),
        None if state is None else _check_text("state", state),
        None if status is None else _check_status(status),
        None if assigned_to is None else _check_text("assigned_to", assigned_to),
        None if next_action_at is None else _check_epoch_ms(next_action_at),
    )


def _checked_update(  # noqa: PLR0917 -- the fields of one update, in order
    id: Any,  # noqa: A002 -- the vendor's name
    key: Any,
    data: Any,
    state: Any,
    status: Any,
    assigned_to: Any,
    next_action_at: Any,
    is_deleted: Any,
) -> tuple[
    str | None,
    tuple[str, str | int] | None,
    dict[str, Any] | None,
    str | None,
    str | None,
    str | None,
    int | None,
    bool | None,
]:
    """The fields of an update, checked: one identifier, valid values, at least one change."""
    if id is not None and key is not None:
        raise ValidationError("id", "give either id or key, not both")
    if id is None and key is None:
        raise ValidationError("id", "name the process: give id or key")
    # Inline rather than through `_changes`: this runs once per item of a bulk update.
    if data is not None:
        data = _check_data(data)
    if state is not None:
        _check_text("state", state)
    if status is not None and (type(status) is not str or status not in PROCESS_STATUSES):
        _check_status(status)
    if assigned_to is not None:
        _check_text("assigned_to", assigned_to)
    if next_action_at is not None:
        next_action_at = _check_epoch_ms(next_action_at)
    if is_deleted is not None and type(is_deleted) is not bool:
        raise ValidationError("is_deleted", f"must be a bool, not {type(is_deleted).__name__}")
    if (
        not data
        and state is None
        and status is None
        and assigned_to is None
        and next_action_at is None
        and is_deleted is None
    ):
        raise ValidationError("update", "give at least one change")
    return (
        None if id is None else _check_text("id", id),
        None if key is None else _check_key(key),
        data,
        state,
        status,
        assigned_to,
        next_action_at,
        is_deleted,
    )


_UPDATE_FIELDS: Final = (
    "id",
    "key",
    "data",
    "state",
    "status",
    "assigned_to",
    "next_action_at",
    "is_deleted",
)


class _UpdateSlots:
    """`ProcessUpdate`'s storage: its fields' slots, writable while an update is being built.

    An update is built as one of these, its fields stored the way any attribute is, and then
    made a `ProcessUpdate` (which adds no slot, so the layout is the same): a frozen class's
    ``__setattr__`` refuses stores, and the slots' descriptors cost more than the rest of a
    bulk update's item. Nothing else is ever one of these.
    """

    # `_data_only`: built by a path that set nothing but an identifier and data (see
    # `encode_default`); False when unsure.
    __slots__ = (*_UPDATE_FIELDS, "__weakref__", "_data_only")

    id: str | None
    key: tuple[str, str | int] | None
    data: Mapping[str, Any] | None
    state: str | None
    status: str | None
    assigned_to: str | None
    next_action_at: int | None
    is_deleted: bool | None
    _data_only: bool


@attrs.frozen(init=False, slots=False)
class ProcessUpdate(_UpdateSlots):
    """One change to one process, for `ChakraClient.bulk_update_processes`.

    Name the process by exactly one identifier: its id, or the value of the procedure's primary
    key as ``key=(attribute, value)``. Give at least one change. Everything is checked here, so a
    `ProcessUpdate` that exists is one the library will send.

    Examples:
        >>> ProcessUpdate.by_id("1e50dd73-9ce6-405b-932a-9c4c5e7b5599", data={"city": "Goa"})
        >>> ProcessUpdate.by_key("lead_id", "EXT-TEST-143", status="COMPLETED")

    Attributes:
        id: the process id, or None when `key` names the process.
        key: ``(attribute, value)`` of the procedure's primary key, or None.
        data: attribute values to set, by attribute short id (a shallow copy of what was given).
        state: the process state to set.
        status: OPEN, COMPLETED or CANCELLED.
        assigned_to: who to assign the process to.
        next_action_at: epoch milliseconds of the next action.
        is_deleted: True deletes the process.
    """

    __slots__ = ()

    id: str | None
    key: tuple[str, str | int] | None
    data: Mapping[str, Any] | None = attrs.field(hash=False)
    state: str | None
    status: str | None
    assigned_to: str | None
    next_action_at: int | None
    is_deleted: bool | None

    def __init__(
        self,
        *,
        id: str | None = None,  # noqa: A002 -- the vendor's and the contract's name
        key: tuple[str, str | int] | None = None,
        data: Mapping[str, Any] | None = None,
        state: str | None = None,
        status: str | None = None,
        assigned_to: str | None = None,
        next_action_at: int | dt.datetime | str | None = None,
        is_deleted: bool | None = None,
    ) -> None:
        """Check and keep one change.

        Args:
            id: the process id.
            key: ``(attribute, value)`` of the procedure's primary key, instead of `id`.
            data: attribute values to set; a mapping with string keys whose values are JSON.
            state: the process state.
            status: OPEN, COMPLETED or CANCELLED.
            assigned_to: who to assign the process to.
            next_action_at: epoch milliseconds (int), a timezone-aware datetime, or a string of
                digits; kept as int milliseconds.
            is_deleted: True to delete the process.

        Raises:
            ValidationError: naming the field: no identifier or two, an empty one, a bad status
                or timestamp, data that is not JSON, or no change at all.
        """
        _fill_update(
            self,
            *_checked_update(id, key, data, state, status, assigned_to, next_action_at, is_deleted),
        )

    @classmethod
    def by_id(cls, id: str, *, data: Any = None, **changes: Any) -> Self:  # noqa: A002
        """An update of the process with this id.

        Args:
            id: the process id.
            data: attribute values to set.
            **changes: `state`, `status`, `assigned_to`, `next_action_at`, `is_deleted`.
        """
        if not changes and cls is ProcessUpdate and data is not None:
            if type(data) is dict and type(id) is str and data and id.strip():
                update = _plain_update(id, None, data)
                if update is not None:
                    return update  # type: ignore[return-value]
            if id is not None:
                # (No id at all is the constructor's error, named as it names it.)
                return _data_update(id, None, data)  # type: ignore[return-value]
        return cls(id=id, data=data, **changes)

    @classmethod
    def by_key(cls, attribute: str, value: str | int, *, data: Any = None, **changes: Any) -> Self:
        """An update of the process whose primary-key `attribute` holds `value`.

        Args:
            attribute: the short id of the procedure's primary-key attribute (``lead_id``).
            value: its value for the process.
            data: attribute values to set.
            **changes: `state`, `status`, `assigned_to`, `next_action_at`, `is_deleted`.
        """
        if (
            not changes
            and type(data) is dict
            and type(attribute) is str
            and type(value) is str
            and cls is ProcessUpdate
            and data
            and attribute.strip()
            and value.strip()
            and attribute not in _RESERVED_KEYS
        ):
            # The commonest update (this runs once per item of a bulk update): a non-blank
            # string key and value, checked here, and data of string keys and scalar values
            # (`_plain_update`); anything else takes the general path, which names what is wrong.
            update = _plain_update(None, (attribute, value), data)
            if update is not None:
                return update  # type: ignore[return-value]
        if not changes and cls is ProcessUpdate and data is not None:
            return _data_update(None, (attribute, value), data)  # type: ignore[return-value]
        return cls(key=(attribute, value), data=data, **changes)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], *, key: str | None = None) -> Self:
        """An update from its wire form, as a JSON Lines file would hold it.

        Both forms the vendor documents are read: wrapped, ``{"lead_id": "X", "update":
        {"data": {...}, "status": ...}}``, and flat, ``{"id": "...", "data": {...}}``. Change
        fields may be spelled camelCase (``assignedTo``) or snake_case (``assigned_to``). An item
        names its process by ``id`` or by any other attribute, which is then the primary key.

        Args:
            mapping: the item.
            key: the procedure's primary-key attribute; when given, an item naming another
                attribute is refused.

        Raises:
            ValidationError: naming the field as the item spells it.
        """
        identifier, changes, spelled = _parse_update(mapping, key)
        try:
            if identifier[0] == "id":
                return cls(id=identifier[1], **changes)
            return cls(key=identifier, **changes)
        except ValidationError as exc:
            raise _respelled(exc, identifier, spelled) from None

    @staticmethod
    def wire_from_mapping(mapping: Mapping[str, Any], *, key: str | None = None) -> dict[str, Any]:
        """What ``from_mapping(mapping).to_wire()`` gives, checked the same, in one pass.

        No `ProcessUpdate` is built: the bulk methods send mappings this way.

        Args:
            mapping: the item, in either wire form.
            key: the procedure's primary-key attribute (see `from_mapping`).

        Raises:
            ValidationError: naming the field as the item spells it.
        """
        fast = _data_only_wire(mapping, key)
        if fast is not None:
            return fast
        identifier, changes, spelled = _parse_update(mapping, key)
        name, value = identifier
        try:
            id_, key_, data, state, status, assigned_to, next_action_at, is_deleted = (
                _checked_update(
                    value if name == "id" else None,
                    None if name == "id" else identifier,
                    changes.get("data"),
                    changes.get("state"),
                    changes.get("status"),
                    changes.get("assigned_to"),
                    changes.get("next_action_at"),
                    changes.get("is_deleted"),
                )
            )
        except ValidationError as exc:
            raise _respelled(exc, identifier, spelled) from None
        update: dict[str, Any] = {}
        if data is not None:
            update["data"] = data
        if state is not None:
            update["state"] = state
        if status is not None:
            update["status"] = status
        if assigned_to is not None:
            update["assignedTo"] = assigned_to
        if next_action_at is not None:
            update["nextActionAt"] = next_action_at
        if is_deleted is not None:
            update["isDeleted"] = is_deleted
        if key_ is None:
            return {"id": id_, "update": update}
        return {key_[0]: key_[1], "update": update}

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled by its fields, which are checked already."""
        return (_rebuilt_update, (tuple(map(self.__getattribute__, _UPDATE_FIELDS)), type(self)))

    def to_wire(self) -> dict[str, Any]:
        """The documented wrapped form: ``{"<identifier>": value, "update": {...}}``."""
        update = _wire_changes(self, {})
        if self.is_deleted is not None:
            update["isDeleted"] = self.is_deleted
        key = self.key
        if key is None:
            return {"id": self.id, "update": update}
        return {key[0]: key[1], "update": update}


_new: Final = object.__new__


def _plain_update(
    id: str | None,  # noqa: A002 -- the vendor's name
    key: tuple[str, str | int] | None,
    data: dict[str, Any],
) -> ProcessUpdate | None:
    """A `ProcessUpdate` changing only `data` (copied), the identifier checked already.

    The commonest update: None unless every key of `data` is a string and every value a
    string, integer, bool or None; any other data takes `_check_data`, which names what is
    wrong.
    """
    checked = data.copy()
    scalars = _SCALARS
    for name in checked:
        if type(name) is not str or type(checked[name]) not in scalars:
            return None
    return _new_update(id, key, checked)


def _new_update(
    id: str | None,  # noqa: A002 -- the vendor's name
    key: tuple[str, str | int] | None,
    data: Mapping[str, Any],
) -> ProcessUpdate:
    """A `ProcessUpdate` with only `data` to change, checked already: the commonest."""
    # Called, not made with object.__new__: the class has no __init__, and a call is cheaper.
    update = _UpdateSlots()
    update.id = id
    update.key = key
    update.data = data
    update.state = update.status = update.assigned_to = None
    update.next_action_at = update.is_deleted = None
    update._data_only = True  # noqa: SLF001 -- this module's own mark
    update.__class__ = ProcessUpdate
    return update  # type: ignore[return-value]


_SLOT_SETTERS: Final = tuple(slot_setter(_UpdateSlots, name) for name in _UPDATE_FIELDS)
_set_data_only: Final = slot_setter(_UpdateSlots, "_data_only")


def _fill_update(update: ProcessUpdate, *fields: Any) -> None:
    """Set a new update's fields, checked already, in field order."""
    for setter, value in zip(_SLOT_SETTERS, fields, strict=True):
        setter(update, value)
    _set_data_only(update, False)  # noqa: FBT003 -- a slot's value


def _rebuilt_update(fields: tuple[Any, ...], cls: type[ProcessUpdate]) -> ProcessUpdate:
    """An unpickled update: its fields, as they were checked."""
    update: ProcessUpdate = object.__new__(cls)
    _fill_update(update, *fields)
    return update


def _data_update(
    id: str | None,  # noqa: A002 -- the vendor's name
    key: tuple[Any, Any] | None,
    data: object,
) -> ProcessUpdate:
    """``ProcessUpdate(id=id, key=key, data=data)``, one identifier given: the same checks."""
    checked = _check_data(data)
    if not checked:
        raise ValidationError("update", "give at least one change")
    checked_id = None if id is None else _check_text("id", id)
    checked_key = None if key is None else _plain_key(key)
    return _new_update(checked_id, checked_key, checked)


def encode_default(item: object) -> dict[str, Any]:
    """An update's or a new process's wire form, as `orjson.dumps` asks for it (``default=``).

    A batch of models is so encoded in one call, each item's wire dict built as the encoder
    reaches it and dropped once written: the collector never sees a batch's worth of them.

    Raises:
        TypeError: `item` is neither a `ProcessUpdate` nor a `ProcessCreate` (the encoder then
            refuses the batch).
    """
    if type(item) is ProcessUpdate:
        if item._data_only:  # noqa: SLF001 -- this module's own mark
            key = item.key
            if key is None:
                return {"id": item.id, "update": {"data": item.data}}
            return {key[0]: key[1], "update": {"data": item.data}}
        return item.to_wire()
    if isinstance(item, ProcessUpdate | ProcessCreate):
        return item.to_wire()
    raise TypeError(f"{type(item).__name__} is not a model")


def _data_only_wire(mapping: Mapping[str, Any], key: str | None) -> dict[str, Any] | None:
    """The commonest item, ``{"<identifier>": v, "update": {"data": {...}}}``, if it is valid.

    The same checks as the general path, without its bookkeeping; None for any other item, or
    any doubt, so that the general path reads it and names what is wrong.
    """
    if type(mapping) is not dict or len(mapping) != 2:  # noqa: PLR2004 -- identifier and update
        return None
    update = mapping.get("update")
    data = update.get("data") if type(update) is dict and len(update) == 1 else None
    if type(data) is not dict or not data:
        return None
    name: Any = None
    value: Any = None
    for name, value in mapping.items():  # noqa: B007 -- the identifier is the other item
        if name != "update":
            break
    kind = type(value)
    if (
        type(name) is not str
        or not name.strip()
        or (name != "id" and name in _RESERVED_KEYS)
        or (key is not None and name not in {"id", key})
        or not ((kind is str and value.strip()) or (kind is int and name != "id"))
    ):
        return None
    try:
        checked = _check_data(data)
    except ValidationError:
        return None
    return {name: value, "update": {"data": checked}}


_DICTS: Final = {dict}
# An item's keys: its identifier and ``update``.
_PAIR: Final = 2


def is_data_batch(  # noqa: C901, PLR0911 -- one pass, each refusal where it is found
    items: Sequence[Any], key: str | None = None, *, kinds: set[type] | None = None
) -> bool:
    """Whether every item is ``{"<identifier>": v, "update": {"data": {...}}}``, valid, as sent.

    The commonest batch, one identifier for all and a data change each: the checks of
    `ProcessUpdate.wire_from_mapping`, for a batch whose data values are all strings, numbers,
    bools or None, in one tight pass that builds nothing. Such a batch is sent as given,
    nothing built or copied. False for any other batch, whose items are then read one at a
    time. `kinds` is the set of the items' types, when the caller has read it already.
    """
    if (set(map(type, items)) if kinds is None else kinds) != _DICTS:
        return False
    name: Any = next((n for n in items[0] if n != "update"), None)
    if (
        type(name) is not str
        or not name.strip()
        or (name != "id" and name in _RESERVED_KEYS)
        or (key is not None and name not in {"id", key})
    ):
        return False
    kind = type(items[0][name])
    if kind is not str and (kind is not int or name == "id"):
        return False
    text = kind is str
    scalars = _SCALARS
    try:
        for item in items:
            value = item[name]
            update = item["update"]
            if len(item) != _PAIR or type(value) is not kind or (text and not value.strip()):
                return False
            if type(update) is not dict or len(update) != 1:
                return False
            data = update["data"]
            if type(data) is not dict or not data:
                return False
            for field, change in data.items():
                if type(field) is not str or type(change) not in scalars:
                    return False
    except KeyError:
        return False
    return True


def _parse_update(
    mapping: Mapping[str, Any], key: str | None
) -> tuple[tuple[str, Any], dict[str, Any], dict[str, str]]:
    """An item's identifier, its changes by field name, and how the item spelled each."""
    if not isinstance(mapping, Mapping):
        raise ValidationError("", f"must be a mapping, not {type(mapping).__name__}")
    changes: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    if "update" in mapping:
        update = mapping["update"]
        both = sorted(n for n in mapping if n in _WIRE_FIELDS)
        if both:
            raise ValidationError(both[0], "give the change either in 'update' or flat, not both")
        if not isinstance(update, Mapping):
            raise ValidationError("update", "must be a mapping of changes")
        identifiers = {n: v for n, v in mapping.items() if n != "update"}
        _read_changes(update, changes, spelled, prefix="update.", allowed=_WIRE_FIELDS)
    else:
        flat = {n: v for n, v in mapping.items() if n in _WIRE_FIELDS}
        identifiers = {n: v for n, v in mapping.items() if n not in _WIRE_FIELDS}
        _read_changes(flat, changes, spelled, prefix="", allowed=_WIRE_FIELDS)
    return _read_identifier(identifiers, key), changes, spelled


def _respelled(
    error: ValidationError, identifier: tuple[str, Any], spelled: Mapping[str, str]
) -> ValidationError:
    field = _respell(error.field, spelled)
    if error.field in {"id", "key"}:
        field = identifier[0]
    return ValidationError(field, error.reason)


def _read_changes(
    source: Mapping[str, Any],
    changes: dict[str, Any],
    spelled: dict[str, str],
    *,
    prefix: str,
    allowed: Mapping[str, str],
) -> None:
    for name, value in source.items():
        field = allowed.get(name)
        if field is None:
            raise ValidationError(f"{prefix}{name}", "is not a field of a change")
        if field in changes:
            raise ValidationError(f"{prefix}{name}", f"is given twice (as {spelled[field]!r} too)")
        changes[field] = value
        spelled[field] = f"{prefix}{name}"


def _respell(field: str, spelled: Mapping[str, str]) -> str:
    """A model field's name (``data.a``) as the input spelled it (``update.data.a``)."""
    head, dot, tail = field.partition(".")
    return spelled.get(head, head) + dot + tail


def _read_identifier(identifiers: Mapping[str, Any], key: str | None) -> tuple[str, Any]:
    if not identifiers:
        expected = f"'id' or {key!r}" if key else "'id' or the primary-key attribute"
        raise ValidationError("id", f"name the process: give {expected}")
    if len(identifiers) > 1:
        names = ", ".join(sorted(map(str, identifiers)))
        raise ValidationError("id", f"give exactly one identifier, not several ({names})")
    ((name, value),) = identifiers.items()
    if not isinstance(name, str):
        raise ValidationError("id", f"the identifier name must be a string, not {name!r}")
    if key is not None and name not in {"id", key}:
        raise ValidationError(name, f"is not a field of a change, nor 'id' or {key!r}")
    return name, value


@attrs.frozen(init=False)
class ProcessCreate:
    """One new process, for `ChakraClient.bulk_create_processes`.

    Attributes:
        key: ``(attribute, value)`` of the procedure's primary key, or None when `data` holds it.
        data: attribute values, by attribute short id.
        state: the process state.
        status: OPEN, COMPLETED or CANCELLED.
        assigned_to: who to assign the process to.
        next_action_at: epoch milliseconds of the next action.
    """

    key: tuple[str, str | int] | None
    data: Mapping[str, Any] | None = attrs.field(hash=False)
    state: str | None
    status: str | None
    assigned_to: str | None
    next_action_at: int | None

    def __init__(
        self,
        *,
        key: tuple[str, str | int] | None = None,
        data: Mapping[str, Any] | None = None,
        state: str | None = None,
        status: str | None = None,
        assigned_to: str | None = None,
        next_action_at: int | dt.datetime | str | None = None,
    ) -> None:
        """Check and keep one new process (see `ProcessUpdate` for each field's rules).

        Raises:
            ValidationError: naming the field.
        """
        checked_key = None if key is None else _check_key(key)
        checked = _changes(data, state, status, assigned_to, next_action_at)
        self.__attrs_init__(checked_key, *checked)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> Self:
        """A new process from its wire form: ``{"lead_id": "X", "data": {...}, "state": ...}``.

        Change fields may be spelled camelCase or snake_case; one other attribute, if any, is
        the primary key.

        Raises:
            ValidationError: naming the field as the record spells it.
        """
        if not isinstance(mapping, Mapping):
            raise ValidationError("", f"must be a mapping, not {type(mapping).__name__}")
        flat = {n: v for n, v in mapping.items() if n in _WIRE_FIELDS}
        rest = {n: v for n, v in mapping.items() if n not in _WIRE_FIELDS}
        changes: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        allowed = {n: f for n, f in _WIRE_FIELDS.items() if n in _CREATE_FIELDS}
        _read_changes(flat, changes, spelled, prefix="", allowed=allowed)
        if len(rest) > 1:
            names = ", ".join(sorted(map(str, rest)))
            raise ValidationError(
                min(map(str, rest)), f"at most one primary-key attribute, not {names}"
            )
        key = next(iter(rest.items()), None)
        try:
            return cls(key=key, **changes)
        except ValidationError as exc:
            field = _respell(exc.field, spelled)
            if exc.field == "key" and key is not None:
                field = str(key[0])
            raise ValidationError(field, exc.reason) from None

    def to_wire(self) -> dict[str, Any]:
        """The create item: flat fields and the primary key at the top."""
        item: dict[str, Any] = {} if self.key is None else {self.key[0]: self.key[1]}
        return _wire_changes(self, item)


# -- server answers ----------------------------------------------------------------------------


@attrs.frozen
class BackgroundJob:
    """A Chakra background job, as the bulk APIs acknowledge it or as it is fetched later.

    Attributes:
        id: the background job id.
        completion_status: ``IN_PROGRESS`` while running; the finished value is not documented.
        status_message: the server's message about the job, if any.
        created_at: when it was created (aware UTC), or None.
        updated_at: when it last changed, or None.
        started_at: when it started, or None.
        completed_at: when it completed, or None while it has not.
        status_counts: entries per completion status (``_meta.bjEntryCompletionStatusVsCount``);
            empty when the answer had none, as an acknowledgement does.
        raw: the job object exactly as the server sent it.
    """

    id: str
    completion_status: str | None = None
    status_message: str | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    status_counts: Mapping[str, int] = attrs.field(factory=dict, hash=False)
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False, hash=False)
    # Stamped by the client that built the job, for `handle`: never the client itself.
    _origin: Origin | None = attrs.field(
        default=None, alias="origin", kw_only=True, repr=False, eq=False, hash=False
    )

    def handle(self) -> dict[str, Any]:
        """The job as a small JSON-serialisable dict, for `ChakraClient.resume`.

        It names the vendor, the base URL, the account (by a fingerprint, not the token) and
        the job id: ``{"asyncbulk_handle": 1, "vendor": "chakra", ..., "kind": "job",
        "job_id": ...}``.

        Raises:
            ValidationError: the job was not built by a client (its origin is unknown).
        """
        return job_handle(self._origin, "job", self.id)

    @property
    def is_finished(self) -> bool:
        """Whether the job is done, success or failure.

        The vendor documents no terminal status, so any of these counts: ``completedAt`` is
        set; ``completionStatus`` is neither ``IN_PROGRESS`` nor ``NOT_STARTED``; the entry
        counts are there, not empty, and hold no ``NOT_STARTED`` or ``IN_PROGRESS`` entry.

        For each shape the vendor documents:

        - counts only, no ``completionStatus`` or ``completedAt`` (the documented fetch
          example): finished once the counts hold no ``NOT_STARTED`` or ``IN_PROGRESS``.
        - ``completionStatus: IN_PROGRESS`` and ``completedAt: 0`` while the counts still hold
          ``NOT_STARTED`` or ``IN_PROGRESS`` entries: not finished.
        - the same status with counts that are all final (the job's status lags its entries):
          finished. Every entry has its final status, so the entries can be read as final; the
          job-level status may still change afterwards.
        - counts with only ``INVALID`` (nothing passed validation): finished.

        An answer with neither a status nor counts (an acknowledgement) is not finished.
        """
        if self.completed_at is not None:
            return True
        if self.completion_status is not None and self.completion_status not in _UNFINISHED:
            return True
        counts = self.status_counts
        return bool(counts) and not any(counts.get(status) for status in _UNFINISHED)

    @property
    def is_failed(self) -> bool:
        """Whether the job finished with a job-level status that is not a success.

        Entries that failed do not make the job failed: read them with
        `ChakraClient.iter_job_entries`.
        """
        status = self.completion_status
        return (
            self.is_finished
            and status is not None
            and status not in _SUCCEEDED
            and status not in _UNFINISHED
        )


class _EntryFields(NamedTuple):
    """Every field of an entry but its id and `raw`, in the order of the constructor."""

    completion_status: str | None
    completion_message: str | None
    validation_status: str | None
    validation_message: str | None
    process_id: str | None
    procedure_id: str | None
    process_update: Mapping[str, Any] | None
    api_type: str | None
    created_at: dt.datetime | None
    updated_at: dt.datetime | None


class JobEntry:
    """One entry of a background job: what became of one item of a bulk request.

    An entry read from the server is built straight from its JSON object, kept as sent: its id
    is checked at once (each id is yielded once), `raw` is parsed and its other fields are read
    from it the first time one is used, all together. A field of the wrong type is then a
    `ProtocolError` naming it (`ChakraClient`'s converter checks every field at once instead).
    Entries are immutable, compare and hash by their fields (`raw` aside), as frozen models do.

    Attributes:
        id: the entry id.
        completion_status: INVALID, NOT_STARTED, IN_PROGRESS, SUCCESS, ERROR or CANCELLED.
        completion_message: the server's message about its outcome.
        validation_status: the outcome of validating the item.
        validation_message: why the item was invalid, if it was.
        process_id: the process it changed, when the server resolved one.
        procedure_id: the procedure it belongs to.
        process_update: the change as the server recorded it (``processUpdate``, or
            ``processCreate`` for a bulk create).
        api_type: ``process:ext-update`` or the like.
        created_at: when it was created (aware UTC), or None.
        updated_at: when it last changed, or None.
        raw: the entry exactly as the server sent it.
    """

    __slots__ = ("_fields", "_raw", "id")

    id: str
    _raw: Mapping[str, Any] | msgspec.Raw
    _fields: _EntryFields | None

    def __init__(  # noqa: PLR0917 -- one positional argument per field, as the model had
        self,
        id: str,  # noqa: A002 -- the vendor's name
        completion_status: str | None = None,
        completion_message: str | None = None,
        validation_status: str | None = None,
        validation_message: str | None = None,
        process_id: str | None = None,
        procedure_id: str | None = None,
        process_update: Mapping[str, Any] | None = None,
        api_type: str | None = None,
        created_at: dt.datetime | None = None,
        updated_at: dt.datetime | None = None,
        raw: Mapping[str, Any] | None = None,
    ) -> None:
        """An entry with these fields (entries read from the server are built lazily)."""
        _set_id(self, id)
        _set_raw(self, {} if raw is None else raw)
        _set_fields(
            self,
            _EntryFields(
                completion_status,
                completion_message,
                validation_status,
                validation_message,
                process_id,
                procedure_id,
                process_update,
                api_type,
                created_at,
                updated_at,
            ),
        )

    @property
    def completion_status(self) -> str | None:
        """INVALID, NOT_STARTED, IN_PROGRESS, SUCCESS, ERROR or CANCELLED."""
        return (self._fields or self._read_fields()).completion_status

    @property
    def completion_message(self) -> str | None:
        """The server's message about its outcome."""
        return (self._fields or self._read_fields()).completion_message

    @property
    def validation_status(self) -> str | None:
        """The outcome of validating the item."""
        return (self._fields or self._read_fields()).validation_status

    @property
    def validation_message(self) -> str | None:
        """Why the item was invalid, if it was."""
        return (self._fields or self._read_fields()).validation_message

    @property
    def process_id(self) -> str | None:
        """The process it changed, when the server resolved one."""
        return (self._fields or self._read_fields()).process_id

    @property
    def procedure_id(self) -> str | None:
        """The procedure it belongs to."""
        return (self._fields or self._read_fields()).procedure_id

    @property
    def process_update(self) -> Mapping[str, Any] | None:
        """The change as the server recorded it."""
        return (self._fields or self._read_fields()).process_update

    @property
    def api_type(self) -> str | None:
        """``process:ext-update`` or the like."""
        return (self._fields or self._read_fields()).api_type

    @property
    def created_at(self) -> dt.datetime | None:
        """When it was created (aware UTC), or None."""
        return (self._fields or self._read_fields()).created_at

    @property
    def updated_at(self) -> dt.datetime | None:
        """When it last changed, or None."""
        return (self._fields or self._read_fields()).updated_at

    @property
    def raw(self) -> Mapping[str, Any]:
        """The entry exactly as the server sent it."""
        raw = self._raw
        if type(raw) is msgspec.Raw:
            # Read from the page as sent, on first use: until then it costs the collector nothing.
            raw = _decode_json(raw)
            _set_raw(self, raw)
        assert isinstance(raw, Mapping)  # noqa: S101 -- an entry's page checked it is an object
        return raw

    def _read_fields(self) -> _EntryFields:
        fields = _entry_fields(self.raw, "entry")
        _set_fields(self, fields)
        return fields

    def _values(self) -> tuple[Any, ...]:
        return (self.id, *(self._fields or self._read_fields()))

    def __setattr__(self, name: str, value: object) -> None:
        """Entries are immutable."""
        raise attrs.exceptions.FrozenInstanceError

    def __delattr__(self, name: str) -> None:
        """Entries are immutable."""
        raise attrs.exceptions.FrozenInstanceError

    def __eq__(self, other: object) -> bool:
        """Equal when every field but `raw` is."""
        if type(other) is not JobEntry:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        """A hash of every field but `raw` and `process_update` (a mapping)."""
        values = self._values()
        return hash((JobEntry, *values[:7], *values[8:]))

    def __repr__(self) -> str:
        """Every field but `raw`."""
        shown = ", ".join(
            f"{name}={value!r}"
            for name, value in zip(("id", *_EntryFields._fields), self._values(), strict=True)
        )
        return f"JobEntry({shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled by its fields."""
        return (JobEntry, (*self._values(), self.raw))


_set_id: Final = slot_setter(JobEntry, "id")
_set_raw: Final = slot_setter(JobEntry, "_raw")
_set_fields: Final = slot_setter(JobEntry, "_fields")


def _wire_changes(change: ProcessUpdate | ProcessCreate, into: dict[str, Any]) -> dict[str, Any]:
    """Write the change fields an update and a create share, in their wire spelling."""
    if change.data is not None:
        into["data"] = change.data
    if change.state is not None:
        into["state"] = change.state
    if change.status is not None:
        into["status"] = change.status
    if change.assigned_to is not None:
        into["assignedTo"] = change.assigned_to
    if change.next_action_at is not None:
        into["nextActionAt"] = change.next_action_at
    return into


# -- the converter: the one place that knows the wire names -------------------------------------


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=_UTC)
# Times already made, by epoch milliseconds: a job polled until it finishes answers the same
# createdAt and startedAt each time, and a datetime costs more to make than to look up.
_TIMES: dict[int, dt.datetime] = {}
_MAX_TIMES: Final = 4096


def _time(source: Mapping[str, Any], name: str, where: str) -> dt.datetime | None:
    value = source.get(name)
    if type(value) is int and value:
        found = _TIMES.get(value)
        if found is not None:
            return found
        try:
            # Positional arguments: timedelta's keywords cost more.
            found = _EPOCH + dt.timedelta(0, 0, 0, value)
        except OverflowError:
            raise ProtocolError(f"{where}.{name} is not epoch milliseconds: {value!r}") from None
        if len(_TIMES) >= _MAX_TIMES:
            _TIMES.clear()
        _TIMES[value] = found
        return found
    if value is None or value == 0:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
        if not value:
            return None
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        try:
            # Adding a timedelta to a constant is faster than datetime.fromtimestamp per entry.
            return _EPOCH + dt.timedelta(milliseconds=value)
        except OverflowError:
            pass
    raise ProtocolError(f"{where}.{name} is not epoch milliseconds: {value!r}")


def _text(source: Mapping[str, Any], name: str, where: str) -> str | None:
    value = source.get(name)
    if value is None or type(value) is str:
        return value
    raise ProtocolError(f"{where}.{name} is not a string: {value!r}")


def _required_id(source: object, where: str) -> str:
    if not isinstance(source, dict):
        raise ProtocolError(f"{where} is not an object: {type(source).__name__}")
    value = source.get("id")
    if type(value) is not str or not value:
        raise ProtocolError(f"{where}.id is missing or not a non-empty string: {value!r}")
    return value


def _status_counts(meta: Mapping[str, Any]) -> dict[str, int]:
    counts = meta.get("bjEntryCompletionStatusVsCount")
    if counts is None:
        return {}
    if type(counts) is dict:
        # A loop, not all() over a generator: this runs on every poll of a job.
        for key, value in counts.items():
            if type(key) is not str or type(value) is not int:
                break
        else:
            return dict(counts)
    if not isinstance(counts, dict) or not all(
        isinstance(k, str) and type(v) is int for k, v in counts.items()
    ):
        raise ProtocolError(
            f"_meta.bjEntryCompletionStatusVsCount is not a mapping of counts: {counts!r}"
        )
    return dict(counts)


def structure_job(
    data: object, meta: Mapping[str, Any], *, origin: Origin | None = None
) -> BackgroundJob:
    """A `BackgroundJob` from an answer's ``_data`` and ``_meta``.

    Args:
        data: the answer's ``_data``.
        meta: the answer's ``_meta``.
        origin: the client that read it, for `handle`.

    Raises:
        ProtocolError: naming the field that is missing or of the wrong type.
    """
    job_id = _required_id(data, "_data")
    assert isinstance(data, dict)  # noqa: S101 -- checked by _required_id, for mypy
    where = "_data"
    get, times = data.get, _TIMES
    # A job is built on every poll: times seen before are looked up here, the rest (and
    # every field of the wrong type) go through the readers that check them.
    status, message = get("completionStatus"), get("statusMessage")
    if type(status) is not str:
        status = _text(data, "completionStatus", where)
    if type(message) is not str:
        message = _text(data, "statusMessage", where)
    created, updated = get("createdAt"), get("updatedAt")
    started, completed = get("startedAt"), get("completedAt")
    created = times.get(created) if type(created) is int else None
    updated = times.get(updated) if type(updated) is int else None
    started = times.get(started) if type(started) is int else None
    completed = times.get(completed) if type(completed) is int else None
    job: BackgroundJob = _new(BackgroundJob)
    _set_job_id(job, job_id)
    _set_job_status(job, status)
    _set_job_message(job, message)
    _set_job_created(job, created or _time(data, "createdAt", where))
    _set_job_updated(job, updated or _time(data, "updatedAt", where))
    _set_job_started(job, started or _time(data, "startedAt", where))
    _set_job_completed(job, completed or _time(data, "completedAt", where))
    _set_job_counts(job, _status_counts(meta))
    _set_job_raw(job, data)
    _set_job_origin(job, origin)
    return job


# A job's slots, filled one by one by `structure_job`: the frozen class's `__init__` (with
# its keyword ``origin``) costs several times more.
_set_job_id: Final = slot_setter(BackgroundJob, "id")
_set_job_status: Final = slot_setter(BackgroundJob, "completion_status")
_set_job_message: Final = slot_setter(BackgroundJob, "status_message")
_set_job_created: Final = slot_setter(BackgroundJob, "created_at")
_set_job_updated: Final = slot_setter(BackgroundJob, "updated_at")
_set_job_started: Final = slot_setter(BackgroundJob, "started_at")
_set_job_completed: Final = slot_setter(BackgroundJob, "completed_at")
_set_job_counts: Final = slot_setter(BackgroundJob, "status_counts")
_set_job_raw: Final = slot_setter(BackgroundJob, "raw")
_set_job_origin: Final = slot_setter(BackgroundJob, "_origin")

_NO_API_DATA: Final[Mapping[str, Any]] = {}


_TEXT_TYPES: Final = frozenset({str, type(None)})


def entries_from(data: list[Any]) -> list[JobEntry]:
    """`JobEntry` objects built straight from a page of parsed entries.

    Only each entry's id is checked here; its other fields are read when first used.

    Raises:
        ProtocolError: an element is not an object or has no id (named by its index).
    """
    return lazy_entries(list(zip(entry_ids(data), data, strict=True)))


def entry_ids(data: list[Any]) -> list[str]:
    """The ids of a page of parsed entries, each checked: the one check on the hot path.

    Raises:
        ProtocolError: an element is not an object or has no id (named by its index).
    """
    ids: list[str] = []
    append = ids.append
    for raw in data:
        if type(raw) is not dict:
            break
        entry_id = raw.get("id")
        if type(entry_id) is not str or not entry_id:
            break
        append(entry_id)
    else:
        return ids
    position = len(ids)
    _entry_id(data[position], f"_data[{position}]")
    raise AssertionError  # pragma: no cover -- _entry_id raised


def lazy_entries(pairs: list[tuple[str, RawEntry]]) -> list[JobEntry]:
    """`JobEntry` objects for entries and their ids, checked; the other fields read later.

    An entry is either parsed (a dict) or its object's text as sent (`msgspec.Raw`, from
    `lean_entry_page`), parsed on first use. The text is copied out of its page, so an entry
    a caller keeps holds its own few hundred bytes, not the whole page it came in.
    """
    new = object.__new__
    set_id, set_raw, set_fields = _set_id, _set_raw, _set_fields
    entries: list[JobEntry] = []
    append = entries.append
    for entry_id, raw in pairs:
        entry = new(JobEntry)
        set_id(entry, entry_id)
        set_raw(entry, raw if type(raw) is not msgspec.Raw else raw.copy())
        set_fields(entry, None)
        append(entry)
    return entries


#: An entry of a page as read: parsed, or the text of its object as sent.
RawEntry: TypeAlias = "dict[str, Any] | msgspec.Raw"


class _EntryHead(msgspec.Struct, gc=False):
    id: Annotated[str, msgspec.Meta(min_length=1)]


class _HeadsPage(msgspec.Struct, gc=False, rename={"data": "_data", "meta": "_meta"}):
    data: list[_EntryHead]
    meta: Any = None


class _RawsPage(msgspec.Struct, gc=False, rename={"data": "_data"}):
    data: list[msgspec.Raw]


_HEADS_PAGE: Final = msgspec.json.Decoder(_HeadsPage)
_RAWS_PAGE: Final = msgspec.json.Decoder(_RawsPage)
_decode_json: Final = msgspec.json.Decoder().decode


def lean_entry_page(body: bytes) -> tuple[list[msgspec.Raw], Mapping[str, Any], list[str]]:
    """A page of entries read from its text: each entry as sent, its ``_meta``, the ids.

    Each entry stays the text of its object (`msgspec.Raw`, which the collector never visits)
    until it is used. Only a page in the expected shape is read so: an object whose ``_data``
    is a list of objects, each with a non-empty string ``id``.

    Raises:
        msgspec.MsgspecError: the page is not JSON, or not in that shape.
    """
    heads = _HEADS_PAGE.decode(body)
    raws = _RAWS_PAGE.decode(body).data
    meta = heads.meta
    return raws, meta if type(meta) is dict else {}, [head.id for head in heads.data]


def _entry_id(raw: object, where: str) -> str:
    if type(raw) is not dict:
        raise ProtocolError(f"{where} is not an object: {type(raw).__name__}")
    entry_id = raw.get("id")
    if type(entry_id) is not str or not entry_id:
        raise ProtocolError(f"{where}.id is missing or not a non-empty string: {entry_id!r}")
    return entry_id


def structure_entry(raw: object, where: str = "entry") -> JobEntry:
    """A `JobEntry` from one element of the entries listing, every field checked now.

    Args:
        raw: the entry as decoded from JSON.
        where: how to name the entry in errors.

    Raises:
        ProtocolError: naming the field that is missing or of the wrong type.
    """
    entry_id = _entry_id(raw, where)
    assert isinstance(raw, dict)  # noqa: S101 -- checked by _entry_id, for mypy
    entry: JobEntry = object.__new__(JobEntry)
    _set_id(entry, entry_id)
    _set_raw(entry, raw)
    _set_fields(entry, _entry_fields(raw, where))
    return entry


def _entry_fields(raw: Mapping[str, Any], where: str) -> _EntryFields:
    """Every field of an entry but its id, checked."""
    get = raw.get
    wrapper = get("data")
    api_type = None
    api_data: Mapping[str, Any] = _NO_API_DATA
    if wrapper is not None:
        if type(wrapper) is not dict:
            raise ProtocolError(f"{where}.data is not an object: {wrapper!r}")
        api_type = wrapper.get("apiType")
        api_data = wrapper.get("apiData") or _NO_API_DATA
        if type(api_data) is not dict and api_data is not _NO_API_DATA:
            raise ProtocolError(f"{where}.data.apiData is not an object: {api_data!r}")
    change = api_data.get("processUpdate")
    if change is None:
        change = api_data.get("processCreate")
    if change is not None and type(change) is not dict:
        raise ProtocolError(f"{where}.data.apiData.processUpdate is not an object: {change!r}")
    fields = (
        get("completionStatus"),
        get("completionMessage"),
        get("validationStatus"),
        get("validationMessage"),
        api_data.get("processId"),
        api_data.get("procedureId"),
        change,
        api_type,
    )
    text = _TEXT_TYPES
    if not all(type(fields[i]) in text for i in (0, 1, 2, 3, 4, 5, 7)):
        _raise_bad_text(raw, where)
    return _EntryFields(*fields, _time(raw, "createdAt", where), _time(raw, "updatedAt", where))


def _raise_bad_text(raw: Any, where: str) -> None:
    """Find the field that is not a string and raise a `ProtocolError` naming it."""
    for name in ("completionStatus", "completionMessage", "validationStatus", "validationMessage"):
        _text(raw, name, where)
    wrapper = raw.get("data") or {}
    _text(wrapper, "apiType", f"{where}.data")
    api_data = wrapper.get("apiData") or {}
    for name in ("processId", "procedureId"):
        _text(api_data, name, f"{where}.data.apiData")


def make_chakra_converter() -> cattrs.Converter:
    """The Chakra converter: the one place that maps wire names to the models.

    Structures `JobEntry` and `BackgroundJob` (the latter from ``{"_data": ..., "_meta": ...}``)
    and unstructures `ProcessUpdate` and `ProcessCreate` to their wire forms. Structuring errors
    are `ProtocolError`s naming the field.
    """
    converter = make_converter()
    converter.register_structure_hook(JobEntry, lambda raw, _: structure_entry(raw))
    converter.register_structure_hook(
        BackgroundJob,
        lambda body, _: structure_job(
            body.get("_data") if isinstance(body, dict) else body,
            body.get("_meta") or {} if isinstance(body, dict) else {},
        ),
    )
    converter.register_unstructure_hook(ProcessUpdate, ProcessUpdate.to_wire)
    converter.register_unstructure_hook(ProcessCreate, ProcessCreate.to_wire)
    return converter
