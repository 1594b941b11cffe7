"""Each batch is checked and encoded once, sent as given, and kept encoded, not item by item."""

from __future__ import annotations

import gc
import math
import weakref

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loopback import leads_simulator

from asyncbulk import RetryPolicy, SubmissionError, ValidationError
from asyncbulk.chakra import BatchOutcome, ChakraClient, ProcessCreate, ProcessUpdate
from asyncbulk.chakra._client import _SLICE
from asyncbulk.chakra._models import is_data_batch

pytestmark = pytest.mark.anyio

UPDATE_ROUTE = "/v1/ext/procedure/{procedure}/process"
LEADS = 60


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


def patches(sim):
    return sim.records.count(vendor="chakra", method="PATCH", route=UPDATE_ROUTE)


def sent(sim):
    return [item for record in sim.records.chakra_submissions for item in record.body["processes"]]


def _outcome(build, item):
    try:
        return ("ok", build(item))
    except ValidationError as exc:
        return ("error", exc.field, exc.reason)


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=3), st.floats(allow_nan=True)
)
data_items = st.builds(
    lambda name, value, data: {name: value, "update": {"data": data}},
    st.sampled_from(["id", "lead_id", "data", "update", " ", "other"]),
    st.one_of(st.text(max_size=2), st.integers(-2, 2), st.booleans()),
    st.dictionaries(st.one_of(st.text(max_size=2), st.integers(0, 2)), scalars, max_size=3),
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(data_items, min_size=1, max_size=4), st.sampled_from([None, "lead_id"]))
def test_a_batch_taken_whole_is_one_every_item_of_which_is_sent_as_given(batch, key):
    """A batch passes the column-wise check only if each item, read alone, is valid as given."""
    if is_data_batch(batch, key):
        for item in batch:
            assert _outcome(lambda i: ProcessUpdate.wire_from_mapping(i, key=key), item) == (
                "ok",
                item,
            )


def test_the_commonest_batch_is_taken_whole():
    """One identifier for all and a data change each: the batch is taken as it is."""
    batch = [{"lead_id": f"L{i}", "update": {"data": {"n": i, "city": None}}} for i in range(5)]
    assert is_data_batch(batch)
    assert is_data_batch([{"id": "p1", "update": {"data": {"a": True}}}])


@pytest.mark.parametrize(
    "bad",
    [
        {"lead_id": "L1", "update": {"data": {}}},
        {"lead_id": " ", "update": {"data": {"a": 1}}},
        {"lead_id": "L1", "update": {"data": {1: "a"}}},
        {"lead_id": "L1", "update": {"data": {"a": math.nan}}},
        {"id": 5, "update": {"data": {"a": 1}}},
        {"status": "OPEN", "update": {"data": {"a": 1}}},
        {"other_id": "L1", "update": {"data": {"a": 1}}},
        {"lead_id": "L1", "update": {"data": {"a": 1}, "status": "DONE"}},
        {"lead_id": "L1", "data": {"a": 1}},
    ],
)
def test_one_odd_item_sends_the_batch_item_by_item(bad):
    """Any item out of the commonest shape, valid or not, keeps the batch from being taken whole."""
    batch = [{"lead_id": f"L{i}", "update": {"data": {"a": i}}} for i in range(3)]
    assert not is_data_batch([*batch, bad])


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"lead_id": "L12", "update": {"data": {"x": math.inf}}}, "updates[12].update.data.x"),
        ({"lead_id": "L12", "update": {"data": {"x": {1: 2}}}}, "updates[12].update.data.x"),
        ({"lead_id": "L12", "update": {"data": {}}}, "updates[12].update"),
        ({"lead_id": "", "update": {"data": {"x": 1}}}, "updates[12].lead_id"),
        ({"lead_id": "L12", "update": {"data": {"x": 2**70}}}, "updates[12]"),
    ],
)
async def test_a_bad_mapping_is_named_as_the_item_by_item_path_names_it(sim, chakra, bad, field):
    """In a batch of plain dicts, a bad field raises the ValidationError naming it; nothing sent."""
    items = [{"lead_id": f"L{i}", "update": {"data": {"x": i}}} for i in range(20)]
    items[12] = bad
    with pytest.raises(ValidationError) as caught:
        await chakra.bulk_update_processes("leads", items, batch_size=20)
    assert caught.value.field == field
    assert sim.records.total_requests == 0


async def test_an_unencodable_update_in_a_later_batch_is_not_sent(sim, chakra):
    """A number JSON cannot carry stops the submission at its batch, named by its position."""
    items = [ProcessUpdate.by_key("lead_id", f"L{i}", data={"n": i}) for i in range(30)]
    items[25] = ProcessUpdate.by_key("lead_id", "L25", data={"n": 2**70})
    with pytest.raises(SubmissionError) as caught:
        await chakra.bulk_update_processes("leads", items, batch_size=10, max_batches_in_flight=1)
    submission = caught.value.submission
    assert [(b.start, b.state) for b in submission.outcomes] == [
        (0, "accepted"),
        (10, "accepted"),
        (20, "not_sent"),
    ]
    assert caught.value.stopped_by is not None
    assert isinstance(caught.value.stopped_by, ValidationError)
    assert caught.value.stopped_by.field == "updates[25]"
    assert submission.outcomes[2].items == tuple(items[20:])
    assert patches(sim) == 2


async def test_what_the_server_recorded_is_what_was_given(sim, chakra):
    """Plain dicts, flat or wrapped, and ProcessUpdates reach the server as their wire forms."""
    wrapped = [{"lead_id": f"L{i}", "update": {"data": {"n": i, "city": "Goa"}}} for i in range(25)]
    await chakra.bulk_update_processes("leads", wrapped, batch_size=10)
    assert sent(sim) == wrapped

    sim.records.chakra_submissions.clear()
    mixed = [
        {"id": "pid-1", "state": "S"},
        ProcessUpdate.by_key("lead_id", "L2", data={"n": [1, {"a": None}]}),
        {"lead_id": "L3", "update": {"status": "COMPLETED", "nextActionAt": 17}},
        ProcessUpdate.by_id("pid-4", status="OPEN", is_deleted=False),
    ]
    await chakra.bulk_update_processes("leads", mixed, batch_size=10)
    assert sent(sim) == [
        {"id": "pid-1", "update": {"state": "S"}},
        {"lead_id": "L2", "update": {"data": {"n": [1, {"a": None}]}}},
        {"lead_id": "L3", "update": {"status": "COMPLETED", "nextActionAt": 17}},
        {"id": "pid-4", "update": {"status": "OPEN", "isDeleted": False}},
    ]


async def test_a_sent_batch_gives_back_its_items_as_sent(sim, chakra):
    """Outcomes, positions and the sending report give each item: mappings as sent, models equal."""
    updates = [ProcessUpdate.by_key("lead_id", f"L{i}", data={"n": i}) for i in range(15)]
    mappings = [{"id": f"pid-{i}", "state": "S"} for i in range(15, 20)]
    reported: list[BatchOutcome] = []
    submission = await chakra.bulk_update_processes(
        "leads", [*updates, *mappings], batch_size=10, on_state=reported.append
    )
    wire = [{"id": m["id"], "update": {"state": "S"}} for m in mappings]
    assert submission.outcomes[0].items == tuple(updates[:10])
    assert submission.outcomes[1].items == (*updates[10:], *wire)
    assert [p.item for p in submission.positions()] == [*updates, *wire]
    sending = [o for o in reported if o.state == "sending"]
    assert [o.items for o in sending] == [o.items for o in submission.outcomes]
    assert submission.outcomes[0] == BatchOutcome(
        0, 10, "accepted", job=submission.outcomes[0].job, items=tuple(updates[:10])
    )


async def test_records_come_back_as_they_were_given(sim, chakra):
    """A bulk create's outcome gives back each ProcessCreate equal to the one sent."""
    records: list[object] = [
        ProcessCreate(key=("lead_id", f"N{i}"), data={"city": "Goa"}) for i in range(3)
    ]
    records.append({"lead_id": "N3", "data": {"city": "Pune"}})
    submission = await chakra.bulk_create_processes("leads", records)
    assert submission.outcomes[0].items == (
        *records[:3],
        ProcessCreate(key=("lead_id", "N3"), data={"city": "Pune"}),
    )
    assert sim.records.chakra_submissions[0].body == [
        {"lead_id": f"N{i}", "data": {"city": "Goa"}} for i in range(3)
    ] + [{"lead_id": "N3", "data": {"city": "Pune"}}]


async def test_nothing_of_an_item_outlives_its_acknowledged_batch(sim, chakra):
    """Once a submission is done, none of the ProcessUpdates it sent is still referenced."""
    alive: list[weakref.ref[ProcessUpdate]] = []

    def updates():
        for i in range(LEADS):
            update = ProcessUpdate.by_key("lead_id", f"L{i}", data={"n": i})
            alive.append(weakref.ref(update))
            yield update

    submission = await chakra.bulk_update_processes("leads", updates(), batch_size=20)
    gc.collect()
    assert submission.count == LEADS
    assert [ref for ref in alive if ref() is not None] == []


def _mixed(count):
    """Updates at even positions, wire-form dicts at odd ones, of the leads L0, L1, ..."""
    return [
        ProcessUpdate.by_key("lead_id", f"L{i % LEADS}", data={"n": i})
        if i % 2 == 0
        else {"lead_id": f"L{i % LEADS}", "update": {"data": {"n": i}}}
        for i in range(count)
    ]


def _wire(item):
    return item.to_wire() if isinstance(item, ProcessUpdate) else item


async def _async_items(items):
    for item in items:
        yield item


@pytest.mark.parametrize("make", [list, iter, _async_items], ids=["list", "iterator", "async"])
@pytest.mark.parametrize(("count", "batch_size"), [(300, 300), (256, 1000), (256, 128), (301, 150)])
async def test_a_batch_read_a_slice_at_a_time_is_sent_whole_and_in_order(
    sim, chakra, make, count, batch_size
):
    """Batches longer than a slice, or ending on one or at the input's end, arrive whole."""
    items = _mixed(count)
    submission = await chakra.bulk_update_processes("leads", make(items), batch_size=batch_size)
    bodies = [record.body["processes"] for record in sim.records.chakra_submissions]
    assert [len(body) for body in bodies] == [
        min(batch_size, count - start) for start in range(0, count, batch_size)
    ]
    assert sent(sim) == [_wire(item) for item in items]
    assert [p.item for p in submission.positions()] == items
    assert submission.count == count


async def test_a_bad_item_after_the_first_slices_stops_its_batch_with_every_item_kept(sim, chakra):
    """An invalid item past the first slices: the batch is not sent, and keeps all its items."""
    items = _mixed(400)
    items[330] = {"lead_id": "L1", "update": {"data": {"n": math.nan}}}
    with pytest.raises(SubmissionError) as caught:
        await chakra.bulk_update_processes(
            "leads", iter(items), batch_size=300, max_batches_in_flight=1
        )
    submission = caught.value.submission
    assert [(b.start, b.stop, b.state) for b in submission.outcomes] == [
        (0, 300, "accepted"),
        (300, 400, "not_sent"),
    ]
    assert caught.value.stopped_by.field == "updates[330].update.data.n"
    assert submission.outcomes[1].items == tuple(items[300:])
    assert patches(sim) == 1


async def test_a_bad_item_late_in_the_first_batch_raises_before_any_request(sim, chakra):
    """Caught in the first batch's third slice: the ValidationError itself, nothing sent."""
    items = _mixed(300)
    items[290] = ProcessUpdate.by_key("lead_id", "L1", data={"n": 2**70})
    with pytest.raises(ValidationError) as caught:
        await chakra.bulk_update_processes("leads", _async_items(items), batch_size=300)
    assert caught.value.field == "updates[290]"
    assert sim.records.total_requests == 0


async def test_no_more_than_a_slice_of_the_callers_updates_is_alive_at_once(sim, chakra):
    """Reading a batch of 1,000 keeps at most one slice of its updates alive, not the batch."""
    alive: list[weakref.ref[ProcessUpdate]] = []
    most = 0

    def updates():
        nonlocal most
        for i in range(2000):
            update = ProcessUpdate.by_key("lead_id", f"L{i % LEADS}", data={"n": i})
            alive.append(weakref.ref(update))
            most = max(most, sum(ref() is not None for ref in alive[-1100:]))
            yield update

    submission = await chakra.bulk_update_processes("leads", updates(), batch_size=1000)
    assert submission.count == 2000
    # The slice being read, and the one update the generator holds as it yields.
    assert 1 < most <= _SLICE + 1
