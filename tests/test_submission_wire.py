"""Mappings go to the wire in one pass, checked exactly as `ProcessUpdate.from_mapping` checks."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncbulk import ProcessUpdate, ValidationError

ITEMS = [
    {"id": "p1", "data": {"a": 1}},
    {"lead_id": "L1", "update": {"status": "COMPLETED", "nextActionAt": "17"}},
    {"lead_id": 7, "assigned_to": "u1", "is_deleted": True},
    {"id": "p1", "update": {"state": "S", "assignedTo": "me", "isDeleted": False}},
    {"id": "p1"},
    {"id": "p1", "lead_id": "L1", "state": "S"},
    {"id": "", "state": "S"},
    {"lead_id": " ", "state": "S"},
    {"id": "p1", "status": "DONE"},
    {"id": "p1", "status": {}},
    {"id": "p1", "update": {"data": {"x": math.nan}}},
    {"id": "p1", "update": {"colour": "red"}},
    {"id": "p1", "update": "S", "state": "S"},
    {"id": "p1", "state": "S", "assigned_to": "a", "assignedTo": "b"},
    {"id": "p1", "next_action_at": -1},
    {"id": "p1", "is_deleted": "yes"},
    {"state": "S"},
    {"lead_id": "L1", "update": {"data": {"a": 1}}},
    {"id": "p1", "update": {"data": {"a": [1, {"b": None}]}}},
    {"id": 5, "update": {"data": {"a": 1}}},
    {"lead_id": 5, "update": {"data": {"a": 1}}},
    {"lead_id": True, "update": {"data": {"a": 1}}},
    {"status": "OPEN", "update": {"data": {"a": 1}}},
    {"lead_id": "L1", "update": {"data": {}}},
    {"lead_id": "L1", "update": {"data": {"a": math.inf}}},
    {"lead_id": "L1", "update": {"data": {1: "a"}}},
    {" ": "L1", "update": {"data": {"a": 1}}},
]


def _outcome(build, item):
    try:
        return ("ok", build(item))
    except ValidationError as exc:
        return ("error", exc.field, exc.reason)


@pytest.mark.parametrize("item", ITEMS, ids=[str(i) for i in range(len(ITEMS))])
def test_wire_from_mapping_is_from_mapping_then_to_wire(item):
    """Same wire form, or the same error naming the same field, for each kind of item."""
    assert _outcome(ProcessUpdate.wire_from_mapping, item) == _outcome(
        lambda i: ProcessUpdate.from_mapping(i).to_wire(), item
    )


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.text(max_size=3),
    st.floats(allow_nan=True),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
names = st.sampled_from(
    [
        "id",
        "lead_id",
        "data",
        "state",
        "status",
        "assignedTo",
        "assigned_to",
        "nextActionAt",
        "isDeleted",
        "update",
        "other",
    ]
)


@given(st.dictionaries(names, values, max_size=4))
def test_wire_from_mapping_agrees_on_any_item(item):
    """Whatever the item, the one-pass form and the object's form agree."""
    assert _outcome(ProcessUpdate.wire_from_mapping, item) == _outcome(
        lambda i: ProcessUpdate.from_mapping(i).to_wire(), item
    )


@given(
    names,
    values,
    st.dictionaries(st.one_of(st.text(max_size=2), st.integers(0, 2)), values, max_size=3),
    st.sampled_from([None, "lead_id", "other"]),
)
def test_data_only_items_agree_whatever_their_parts(name, value, data, key):
    """The commonest shape, an identifier and a data change, agrees for any parts and key."""
    item = {name: value, "update": {"data": data}}
    assert _outcome(lambda i: ProcessUpdate.wire_from_mapping(i, key=key), item) == _outcome(
        lambda i: ProcessUpdate.from_mapping(i, key=key).to_wire(), item
    )
