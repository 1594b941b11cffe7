"""Updates built the quick way are the updates the constructor builds, and are sent the same."""

from __future__ import annotations

import copy
import pickle
import weakref

import attrs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loopback import leads_simulator

from asyncbulk import RetryPolicy, ValidationError
from asyncbulk.chakra import ChakraClient, ProcessCreate, ProcessUpdate
from asyncbulk.chakra._submission import encode_batch

pytestmark = pytest.mark.anyio

LEADS = 40


@pytest.fixture
async def sim():
    async with leads_simulator(LEADS) as simulator:
        yield simulator


@pytest.fixture
async def chakra(sim):
    async with ChakraClient(
        sim.chakra_token, base_url=sim.chakra_url, retry=RetryPolicy.testing()
    ) as client:
        yield client


def _outcome(build):
    try:
        update = build()
    except ValidationError as exc:
        return ("error", exc.field, exc.reason)
    return ("ok", update, repr(update), update.to_wire())


texts = st.one_of(st.text(max_size=3), st.sampled_from(["id", "update", "data", " ", "lead_id"]))
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.text(max_size=2),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.one_of(st.text(max_size=1), st.integers(0, 1)), st.integers(), max_size=2),
    st.frozensets(st.integers(), max_size=1),
)
data = st.one_of(
    st.dictionaries(st.one_of(st.text(max_size=2), st.integers(0, 1)), values, max_size=3),
    st.none(),
    st.just([("a", 1)]),
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(texts, st.one_of(texts, st.integers(-2, 2), st.booleans(), st.none()), data)
def test_by_key_is_the_constructor_whatever_the_parts(attribute, value, changes):
    """by_key gives the update, repr, wire form or error (same field) the constructor gives."""
    assert _outcome(lambda: ProcessUpdate.by_key(attribute, value, data=changes)) == _outcome(
        lambda: ProcessUpdate(key=(attribute, value), data=changes)
    )


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(texts, st.integers(-2, 2), st.none()), data)
def test_by_id_is_the_constructor_whatever_the_parts(process_id, changes):
    """by_id gives the update, repr, wire form or error (same field) the constructor gives."""
    assert _outcome(lambda: ProcessUpdate.by_id(process_id, data=changes)) == _outcome(
        lambda: ProcessUpdate(id=process_id, data=changes)
    )


updates = st.one_of(
    st.builds(
        lambda v, d: ProcessUpdate.by_key("lead_id", v, data=d),
        st.text(min_size=1, max_size=2).filter(str.strip),
        st.dictionaries(st.text(max_size=2), st.integers(-9, 9), min_size=1, max_size=2),
    ),
    st.builds(
        lambda v, d: ProcessUpdate.by_id(v, data=d),
        st.text(min_size=1, max_size=2).filter(str.strip),
        st.dictionaries(st.text(max_size=2), st.text(max_size=2), min_size=1, max_size=2),
    ),
    st.builds(
        lambda v, s: ProcessUpdate(key=("lead_id", v), status=s, next_action_at=0),
        st.integers(0, 3),
        st.sampled_from(["OPEN", "COMPLETED"]),
    ),
    st.builds(lambda v: ProcessUpdate(id="p", data={"a": v}, is_deleted=False), st.integers(-9, 9)),
    st.builds(lambda n: {"lead_id": f"L{n}", "update": {"data": {"n": n}}}, st.integers(0, 5)),
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(updates, min_size=1, max_size=6))
def test_a_batch_is_encoded_as_each_items_wire_form(batch):
    """One encoding of a mixed batch is each item's to_wire (dicts as given), items kept equal."""
    body, sent = encode_batch(batch, "update", "updates", 0)
    expected = [item if isinstance(item, dict) else item.to_wire() for item in batch]
    assert orjson.loads(body) == {"processes": expected}
    assert sent.wire() == expected
    assert sent.items() == tuple(batch)


def test_a_batch_of_new_processes_is_encoded_as_their_wire_forms():
    """A bulk create's models are encoded in their flat form, mappings as given."""
    batch = [ProcessCreate(key=("lead_id", "N1"), data={"a": 1}), {"lead_id": "N2"}]
    body, sent = encode_batch(batch, "create", "records", 0)
    assert orjson.loads(body) == [{"lead_id": "N1", "data": {"a": 1}}, {"lead_id": "N2"}]
    assert sent.items() == (batch[0], {"lead_id": "N2"})


def test_an_unencodable_model_is_named_by_its_position():
    """An integer too large for JSON, in a model's data, is a ValidationError at its position."""
    batch = [
        ProcessUpdate.by_key("lead_id", "L1", data={"n": 1}),
        ProcessUpdate.by_id("p", data={"n": 2**70}),
    ]
    with pytest.raises(ValidationError) as caught:
        encode_batch(batch, "update", "updates", 10)
    assert caught.value.field == "updates[11]"


def test_a_quick_update_is_a_frozen_attrs_model():
    """An update from by_key is a frozen attrs model: evolved, copied, pickled, weakly held."""
    update = ProcessUpdate.by_key("lead_id", "L1", data={"city": "Goa"})
    same = ProcessUpdate(key=("lead_id", "L1"), data={"city": "Goa"})
    assert type(update) is ProcessUpdate
    assert update == same
    assert hash(update) == hash(same)
    assert [f.name for f in attrs.fields(ProcessUpdate)] == [
        "id",
        "key",
        "data",
        "state",
        "status",
        "assigned_to",
        "next_action_at",
        "is_deleted",
    ]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        update.state = "S"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        del update.data
    assert attrs.evolve(update, status="OPEN").to_wire() == {
        "lead_id": "L1",
        "update": {"data": {"city": "Goa"}, "status": "OPEN"},
    }
    assert pickle.loads(pickle.dumps(update)) == update  # noqa: S301 -- our own bytes
    assert copy.deepcopy(update) == update
    assert copy.copy(update) == update
    assert weakref.ref(update)() is update
    assert not hasattr(update, "__dict__")
    assert ProcessUpdate.__match_args__[:2] == ("id", "key")


def test_a_quick_update_keeps_a_copy_of_its_data():
    """by_key and by_id keep a copy of the data given, as the constructor does."""
    given = {"city": "Goa"}
    by_key = ProcessUpdate.by_key("lead_id", "L1", data=given)
    by_id = ProcessUpdate.by_id("pid-1", data=given)
    given["city"] = "Pune"
    assert by_key.data == by_id.data == {"city": "Goa"}
    assert by_key.data is not given


def test_a_subclass_builds_instances_of_itself():
    """by_key on a subclass of ProcessUpdate gives an instance of the subclass, checked."""

    class Tagged(ProcessUpdate):
        pass

    update = Tagged.by_key("lead_id", "L1", data={"a": 1})
    assert type(update) is Tagged
    assert update.to_wire() == {"lead_id": "L1", "update": {"data": {"a": 1}}}
    with pytest.raises(ValidationError) as caught:
        Tagged.by_key("lead_id", " ", data={"a": 1})
    assert caught.value.field == "key"


def test_data_with_other_changes_or_none_is_the_constructors_update():
    """by_key and by_id with data and a status, or a status alone, are the constructor's."""
    assert ProcessUpdate.by_key("lead_id", "L1", data={"a": 1}, status="OPEN") == ProcessUpdate(
        key=("lead_id", "L1"), data={"a": 1}, status="OPEN"
    )
    assert ProcessUpdate.by_id("p1", status="COMPLETED") == ProcessUpdate(
        id="p1", status="COMPLETED"
    )
    with pytest.raises(ValidationError) as caught:
        ProcessUpdate.by_key("lead_id", "L1", data=None)
    assert caught.value.field == "update"
    with pytest.raises(TypeError):
        ProcessUpdate.by_key("lead_id", "L1", {"a": 1})  # data is keyword-only


async def test_quick_and_general_updates_reach_the_server_as_their_wire_forms(sim, chakra):
    """Quick updates by key and by id, others and dicts: the server records each wire form."""
    given = [
        ProcessUpdate.by_key("lead_id", "L1", data={"city": "Goa", "n": 1}),
        ProcessUpdate.by_id("pid-2", data={"ok": True, "none": None}),
        ProcessUpdate(key=("lead_id", "L3"), data={"n": [1, 2]}, status="COMPLETED"),
        {"lead_id": "L4", "update": {"data": {"n": 4}}},
        ProcessUpdate.by_key("lead_id", "L5", data={"score": 1.5}),
    ]
    submission = await chakra.bulk_update_processes("leads", given, batch_size=3)
    recorded = [
        item for record in sim.records.chakra_submissions for item in record.body["processes"]
    ]
    assert recorded == [
        {"lead_id": "L1", "update": {"data": {"city": "Goa", "n": 1}}},
        {"id": "pid-2", "update": {"data": {"ok": True, "none": None}}},
        {"lead_id": "L3", "update": {"data": {"n": [1, 2]}, "status": "COMPLETED"}},
        {"lead_id": "L4", "update": {"data": {"n": 4}}},
        {"lead_id": "L5", "update": {"data": {"score": 1.5}}},
    ]
    assert len(sim.records.chakra_submissions) == 2
    assert [p.item for p in submission.positions()] == given


async def test_a_batch_of_quick_updates_from_a_generator_is_sent_once_each(sim, chakra):
    """A generator of by_key updates, over several batches: each recorded once, in order."""
    updates = (ProcessUpdate.by_key("lead_id", f"L{i}", data={"n": str(i)}) for i in range(25))
    submission = await chakra.bulk_update_processes("leads", updates, batch_size=10)
    recorded = [
        item for record in sim.records.chakra_submissions for item in record.body["processes"]
    ]
    assert recorded == [{"lead_id": f"L{i}", "update": {"data": {"n": str(i)}}} for i in range(25)]
    assert submission.count == 25
    assert [len(o.items) for o in submission.outcomes] == [10, 10, 5]
