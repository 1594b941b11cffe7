import datetime as dt
import math
import pickle

import attrs
import orjson
import pytest

from asyncbulk import ProtocolError, ValidationError
from asyncbulk.chakra import (
    BackgroundJob,
    JobEntry,
    ProcessCreate,
    ProcessUpdate,
    make_chakra_converter,
)
from asyncbulk.chakra._models import entries_from, lazy_entries, lean_entry_page

PID = "1e50dd73-9ce6-405b-932a-9c4c5e7b5599"
AWARE = dt.datetime(2021, 3, 20, 15, 25, 10, 842000, tzinfo=dt.UTC)
NAIVE = dt.datetime(2021, 3, 20, 15, 25, 10)  # noqa: DTZ001 -- the naive datetime under test


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"data": {"a": 1}}, "id", id="no-identifier"),
        pytest.param({"id": PID, "key": ("lead_id", "L1"), "data": {"a": 1}}, "id", id="two"),
        pytest.param({"id": "", "data": {"a": 1}}, "id", id="empty-id"),
        pytest.param({"id": "   ", "data": {"a": 1}}, "id", id="blank-id"),
        pytest.param({"id": 42, "data": {"a": 1}}, "id", id="id-not-str"),
        pytest.param({"key": ("lead_id",), "data": {"a": 1}}, "key", id="key-not-pair"),
        pytest.param({"key": ("", "L1"), "data": {"a": 1}}, "key", id="key-empty-attr"),
        pytest.param({"key": ("lead_id", ""), "data": {"a": 1}}, "key", id="key-empty-value"),
        pytest.param({"key": ("lead_id", 1.5), "data": {"a": 1}}, "key", id="key-float"),
        pytest.param({"key": ("lead_id", True), "data": {"a": 1}}, "key", id="key-bool"),
        pytest.param({"key": ("id", "x"), "data": {"a": 1}}, "key", id="key-named-id"),
        pytest.param({"key": ("update", "x"), "data": {"a": 1}}, "key", id="key-reserved"),
        pytest.param({"id": PID}, "update", id="no-change"),
        pytest.param({"id": PID, "data": {}}, "update", id="empty-data-only"),
        pytest.param({"id": PID, "status": "DONE"}, "status", id="status-unknown"),
        pytest.param({"id": PID, "status": "open"}, "status", id="status-lowercase"),
        pytest.param({"id": PID, "state": ""}, "state", id="state-empty"),
        pytest.param({"id": PID, "state": 3}, "state", id="state-not-str"),
        pytest.param({"id": PID, "assigned_to": " "}, "assigned_to", id="assignee-blank"),
        pytest.param({"id": PID, "is_deleted": "yes"}, "is_deleted", id="is-deleted-str"),
        pytest.param({"id": PID, "is_deleted": 1}, "is_deleted", id="is-deleted-int"),
        pytest.param({"id": PID, "next_action_at": -1}, "next_action_at", id="nat-negative"),
        pytest.param({"id": PID, "next_action_at": "-5"}, "next_action_at", id="nat-neg-str"),
        pytest.param({"id": PID, "next_action_at": "soon"}, "next_action_at", id="nat-text"),
        pytest.param({"id": PID, "next_action_at": "1.5"}, "next_action_at", id="nat-decimal"),
        pytest.param({"id": PID, "next_action_at": True}, "next_action_at", id="nat-bool"),
        pytest.param({"id": PID, "next_action_at": 1.5}, "next_action_at", id="nat-fraction"),
        pytest.param({"id": PID, "next_action_at": math.nan}, "next_action_at", id="nat-nan"),
        pytest.param({"id": PID, "next_action_at": NAIVE}, "next_action_at", id="nat-naive"),
        pytest.param({"id": PID, "next_action_at": [1]}, "next_action_at", id="nat-list"),
        pytest.param({"id": PID, "data": [1]}, "data", id="data-not-mapping"),
        pytest.param({"id": PID, "data": {1: "x"}}, "data", id="data-int-key"),
        pytest.param({"id": PID, "data": {"a": {2: "x"}}}, "data.a", id="data-nested-int-key"),
        pytest.param({"id": PID, "data": {"a": {1, 2}}}, "data.a", id="data-set"),
        pytest.param({"id": PID, "data": {"a": math.inf}}, "data.a", id="data-infinity"),
        pytest.param({"id": PID, "data": {"a": b"x"}}, "data.a", id="data-bytes"),
    ],
)
def test_process_update_refuses_bad_input_naming_the_field(kwargs, field):
    """Every validation rule raises a ValidationError (a ValueError) naming the field."""
    with pytest.raises(ValidationError) as caught:
        ProcessUpdate(**kwargs)
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(1616253910842, 1616253910842, id="int"),
        pytest.param("1616253910842", 1616253910842, id="digits"),
        pytest.param(1616253910842.0, 1616253910842, id="whole-float"),
        pytest.param(AWARE, 1616253910842, id="aware-datetime"),
        pytest.param(0, 0, id="zero"),
    ],
)
def test_next_action_at_is_normalised_to_int_milliseconds(value, expected):
    """Ints, digit strings, whole floats and aware datetimes all become int milliseconds."""
    update = ProcessUpdate.by_id(PID, next_action_at=value)
    assert update.next_action_at == expected
    assert type(update.next_action_at) is int


def test_update_by_id_serialises_in_the_wrapped_form_with_every_field():
    """Every change goes under "update" in camelCase; the identifier stays at the top."""
    update = ProcessUpdate.by_id(
        PID,
        data={"city": "Goa"},
        state="IN_PROGRESS",
        status="OPEN",
        assigned_to="shane.warne",
        next_action_at="1616253910842",
        is_deleted=False,
    )
    assert update.to_wire() == {
        "id": PID,
        "update": {
            "data": {"city": "Goa"},
            "state": "IN_PROGRESS",
            "status": "OPEN",
            "assignedTo": "shane.warne",
            "nextActionAt": 1616253910842,
            "isDeleted": False,
        },
    }


def test_update_by_key_serialises_the_key_attribute_and_omits_absent_fields():
    """A primary-key update names its attribute; fields not given are not sent."""
    update = ProcessUpdate.by_key("lead_id", "EXT-TEST-143", data={"score": "105"})
    assert make_chakra_converter().unstructure(update) == {
        "lead_id": "EXT-TEST-143",
        "update": {"data": {"score": "105"}},
    }


def test_update_copies_data_and_is_hashable():
    """The caller's dict is copied, and a frozen update can go in a set."""
    data = {"a": 1}
    update = ProcessUpdate.by_id(PID, data=data)
    data["a"] = 2
    assert update.data == {"a": 1}
    assert len({update, ProcessUpdate.by_id(PID, data={"a": 1})}) == 1


@pytest.mark.parametrize(
    ("mapping", "key", "expected"),
    [
        pytest.param(
            {"lead_id": "X", "update": {"data": {"score": "1"}}},
            None,
            ProcessUpdate.by_key("lead_id", "X", data={"score": "1"}),
            id="wrapped-by-key",
        ),
        pytest.param(
            {"id": PID, "data": {"city": "Goa"}, "state": "S"},
            None,
            ProcessUpdate.by_id(PID, data={"city": "Goa"}, state="S"),
            id="flat-by-id",
        ),
        pytest.param(
            {"id": PID, "nextActionAt": "1616253910842", "assignedTo": "a", "isDeleted": True},
            None,
            ProcessUpdate.by_id(
                PID, next_action_at=1616253910842, assigned_to="a", is_deleted=True
            ),
            id="flat-camel",
        ),
        pytest.param(
            {"phone_number": "9901258433", "next_action_at": 5, "assigned_to": "b"},
            "phone_number",
            ProcessUpdate.by_key("phone_number", "9901258433", next_action_at=5, assigned_to="b"),
            id="flat-snake-with-key",
        ),
    ],
)
def test_from_mapping_reads_both_documented_forms(mapping, key, expected):
    """Wrapped and flat wire forms, camelCase or snake_case, become the same update."""
    assert ProcessUpdate.from_mapping(mapping, key=key) == expected


@pytest.mark.parametrize(
    ("mapping", "key", "field"),
    [
        pytest.param({"status": "COMPLETED"}, None, "id", id="no-identifier"),
        pytest.param({"id": PID, "lead_id": "X", "status": "OPEN"}, None, "id", id="two-ids"),
        pytest.param({"lead_id": "X", "status": "OPEN"}, "phone", "lead_id", id="wrong-key"),
        pytest.param({"id": PID, "update": {"status": "NOPE"}}, None, "update.status", id="w-st"),
        pytest.param({"id": PID, "update": {"colour": "red"}}, None, "update.colour", id="unk"),
        pytest.param({"id": PID, "update": "x"}, None, "update", id="update-not-mapping"),
        pytest.param({"id": PID, "update": {}, "status": "OPEN"}, None, "status", id="both"),
        pytest.param({"id": PID, "nextActionAt": "x"}, None, "nextActionAt", id="flat-camel"),
        pytest.param({"id": "", "status": "OPEN"}, None, "id", id="empty-id"),
        pytest.param({"lead_id": "", "status": "OPEN"}, None, "lead_id", id="empty-key"),
        pytest.param(
            {"id": PID, "status": "OPEN", "update": {}}, None, "status", id="flat-and-update"
        ),
    ],
)
def test_from_mapping_names_the_field_as_the_item_spells_it(mapping, key, field):
    """Errors from wire-form items name the field the way the input wrote it."""
    with pytest.raises(ValidationError) as caught:
        ProcessUpdate.from_mapping(mapping, key=key)
    assert caught.value.field == field


def test_process_create_reads_records_and_serialises_flat():
    """A create record keeps its primary key at the top and its fields flat."""
    record = ProcessCreate.from_mapping(
        {"lead_id": "L1", "data": {"city": "Goa"}, "nextActionAt": "10", "status": "OPEN"}
    )
    assert record.to_wire() == {
        "lead_id": "L1",
        "data": {"city": "Goa"},
        "status": "OPEN",
        "nextActionAt": 10,
    }


@pytest.mark.parametrize(
    ("mapping", "field"),
    [
        pytest.param({"lead_id": "L1", "phone": "2"}, "lead_id", id="two-keys"),
        pytest.param({"lead_id": "L1", "isDeleted": True}, "isDeleted", id="is-deleted"),
        pytest.param({"lead_id": "L1", "status": "X"}, "status", id="status"),
        pytest.param({"lead_id": "L1", "data": {"a": math.nan}}, "data.a", id="nan"),
    ],
)
def test_process_create_refuses_bad_records(mapping, field):
    """Create records are validated like updates, naming the field."""
    with pytest.raises(ValidationError) as caught:
        ProcessCreate.from_mapping(mapping)
    assert caught.value.field == field


ACK = {
    "id": "19632427-908f-4bf3-a6f5-69b9a0bbfc63",
    "createdAt": 1617966536310,
    "updatedAt": 1617966536310,
    "completionStatus": "IN_PROGRESS",
    "statusMessage": None,
    "startedAt": 1617966536310,
    "completedAt": 0,
    "team": "t",
    "type": "u",
    "brandNew": {"x": 1},
}


def test_background_job_structures_times_counts_and_keeps_raw():
    """Epoch ms become aware UTC datetimes, 0 becomes None, unknown fields stay in raw."""
    job = make_chakra_converter().structure(
        {"_data": ACK, "_meta": {"bjEntryCompletionStatusVsCount": {"NOT_STARTED": 3}}},
        BackgroundJob,
    )
    assert job.id == ACK["id"]
    assert job.created_at == dt.datetime(2021, 4, 9, 11, 8, 56, 310000, tzinfo=dt.UTC)
    assert job.completed_at is None
    assert job.status_counts == {"NOT_STARTED": 3}
    assert job.raw["brandNew"] == {"x": 1}
    assert not job.is_finished


@pytest.mark.parametrize(
    ("data", "counts", "finished", "failed"),
    [
        pytest.param({"completionStatus": "IN_PROGRESS"}, {}, False, False, id="running"),
        pytest.param({"completionStatus": "NOT_STARTED"}, {}, False, False, id="not-started"),
        pytest.param({"completedAt": 1}, {}, True, False, id="completed-at"),
        pytest.param({"completionStatus": "COMPLETED"}, {}, True, False, id="completed"),
        pytest.param({"completionStatus": "SUCCESS"}, {}, True, False, id="success"),
        pytest.param({"completionStatus": "FAILED"}, {}, True, True, id="failed"),
        pytest.param({}, {"SUCCESS": 3, "ERROR": 1}, True, False, id="counts-done"),
        pytest.param({}, {"SUCCESS": 3, "IN_PROGRESS": 1}, False, False, id="counts-running"),
        pytest.param({}, {"SUCCESS": 3, "NOT_STARTED": 1}, False, False, id="counts-waiting"),
        pytest.param({}, {}, False, False, id="nothing-known"),
        pytest.param(
            {"completionStatus": "IN_PROGRESS"}, {"SUCCESS": 3}, True, False, id="counts-win"
        ),
    ],
)
def test_is_finished_follows_the_documented_rule(data, counts, finished, failed):
    """Any of completedAt, a terminal completionStatus, or settled counts means finished."""
    job = make_chakra_converter().structure(
        {"_data": {"id": "j", **data}, "_meta": {"bjEntryCompletionStatusVsCount": counts}},
        BackgroundJob,
    )
    assert (job.is_finished, job.is_failed) == (finished, failed)


DOCUMENTED_FETCH = {
    "id": "19632427-908f-4bf3-a6f5-69b9a0bbfc63",
    "createdAt": 1617966536310,
    "updatedAt": 1617966539528,
    "startedAt": 1617966536310,
    "team": "d3e64510-b75a-43a0-8ae5-dde78dac56c0",
    "type": "bulk_api_job",
}
LAGGING = {**DOCUMENTED_FETCH, "completionStatus": "IN_PROGRESS", "completedAt": 0}


@pytest.mark.parametrize(
    ("data", "counts", "finished"),
    [
        pytest.param(
            DOCUMENTED_FETCH,
            {"INVALID": 100, "NOT_STARTED": 120, "SUCCESS": 389, "ERROR": 3},
            False,
            id="counts-only-running",
        ),
        pytest.param(
            DOCUMENTED_FETCH, {"INVALID": 100, "SUCCESS": 509, "ERROR": 3}, True, id="counts-only"
        ),
        pytest.param(
            LAGGING, {"IN_PROGRESS": 1, "NOT_STARTED": 9, "SUCCESS": 2}, False, id="in-progress"
        ),
        pytest.param(LAGGING, {"SUCCESS": 10, "ERROR": 2}, True, id="status-lags-counts"),
        pytest.param(DOCUMENTED_FETCH, {"INVALID": 12}, True, id="only-invalid"),
        pytest.param(LAGGING, {"INVALID": 12}, True, id="only-invalid-in-progress"),
    ],
)
def test_each_documented_job_shape_is_decided(data, counts, finished):
    """The documented shapes: counts only, IN_PROGRESS running or lagging, INVALID only."""
    job = make_chakra_converter().structure(
        {"_data": data, "_meta": {"bjEntryCompletionStatusVsCount": counts}}, BackgroundJob
    )
    assert job.is_finished is finished
    assert job.is_failed is False
    assert job.raw["type"] == "bulk_api_job"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({"_data": {}}, "_data.id", id="no-id"),
        pytest.param({"_data": None}, "_data is not an object", id="no-data"),
        pytest.param({"_data": {"id": "j", "createdAt": "soon"}}, "_data.createdAt", id="time"),
        pytest.param({"_data": {"id": "j", "completionStatus": 3}}, "completionStatus", id="st"),
        pytest.param(
            {"_data": {"id": "j"}, "_meta": {"bjEntryCompletionStatusVsCount": [1]}},
            "bjEntryCompletionStatusVsCount",
            id="counts",
        ),
    ],
)
def test_background_job_protocol_errors_name_the_field(body, message):
    """A job answer missing or mistyping a field we need is a ProtocolError naming it."""
    with pytest.raises(ProtocolError, match=message):
        make_chakra_converter().structure(body, BackgroundJob)


ENTRY = {
    "id": "e9bc853c-0af7-414c-bc7b-ccc7a40aa510",
    "createdAt": 1617966536310,
    "updatedAt": 1617966539528,
    "data": {
        "apiData": {
            "processId": PID,
            "procedureId": "f3eb37a9-b54e-4088-bc5f-948d37f8aa62",
            "processUpdate": {"data": {"lead_id": "100"}},
        },
        "apiType": "process:ext-update",
    },
    "validationStatus": "SUCCESS",
    "validationMessage": "",
    "validationResult": None,
    "completionStatus": "SUCCESS",
    "completionMessage": "",
    "completionResult": None,
    "team": "d3e64510-b75a-43a0-8ae5-dde78dac56c0",
    "backgroundJob": "19632427-908f-4bf3-a6f5-69b9a0bbfc63",
    "createdBy": "5acc9b3b-9850-422b-81ce-22b01cb74356",
}


def test_job_entry_structures_the_documented_example():
    """The documentation's entry maps onto snake_case fields, raw fields kept."""
    entry = make_chakra_converter().structure(ENTRY, JobEntry)
    assert entry.id == ENTRY["id"]
    assert entry.completion_status == "SUCCESS"
    assert entry.process_id == PID
    assert entry.procedure_id == "f3eb37a9-b54e-4088-bc5f-948d37f8aa62"
    assert entry.process_update == {"data": {"lead_id": "100"}}
    assert entry.api_type == "process:ext-update"
    assert entry.updated_at == dt.datetime(2021, 4, 9, 11, 8, 59, 528000, tzinfo=dt.UTC)
    assert entry.raw["createdBy"] == ENTRY["createdBy"]


def test_job_entry_tolerates_missing_optional_fields():
    """Only the id is required; the rest may be absent."""
    entry = make_chakra_converter().structure({"id": "e"}, JobEntry)
    assert entry == JobEntry("e")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param({}, "entry.id", id="no-id"),
        pytest.param([], "entry is not an object", id="not-object"),
        pytest.param({"id": "e", "data": 3}, "entry.data", id="data"),
        pytest.param({"id": "e", "data": {"apiData": 3}}, "apiData", id="api-data"),
        pytest.param({"id": "e", "completionStatus": 3}, "completionStatus", id="status"),
        pytest.param({"id": "e", "data": {"apiData": {"processId": 3}}}, "processId", id="pid"),
        pytest.param({"id": "e", "updatedAt": "yesterday"}, "entry.updatedAt", id="time"),
        pytest.param(
            {"id": "e", "data": {"apiData": {"processUpdate": "x"}}}, "processUpdate", id="pu"
        ),
    ],
)
def test_job_entry_protocol_errors_name_the_field(raw, message):
    """A malformed entry is a ProtocolError naming the field, never a KeyError."""
    with pytest.raises(ProtocolError, match=message):
        make_chakra_converter().structure(raw, JobEntry)


def test_job_entry_is_a_frozen_value():
    """Entries compare, hash, print and pickle by their fields, and refuse changes."""
    entry = make_chakra_converter().structure(ENTRY, JobEntry)
    same = JobEntry(
        ENTRY["id"],
        completion_status="SUCCESS",
        completion_message="",
        validation_status="SUCCESS",
        validation_message="",
        process_id=PID,
        procedure_id="f3eb37a9-b54e-4088-bc5f-948d37f8aa62",
        process_update={"data": {"lead_id": "100"}},
        api_type="process:ext-update",
        created_at=entry.created_at,
        updated_at=entry.updated_at,
    )
    assert entry == same
    assert hash(entry) == hash(same)
    assert entry != JobEntry("other")
    assert repr(JobEntry("e")).startswith("JobEntry(id='e', completion_status=None,")
    assert pickle.loads(pickle.dumps(entry)) == entry  # noqa: S301 -- our own bytes
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        entry.completion_status = "ERROR"


def test_entries_of_a_page_are_read_lazily_and_checked_on_use():
    """A page's entries need only an id; a bad field is a ProtocolError naming it when read."""
    good, bad = entries_from([ENTRY, {"id": "e2", "completionStatus": 3}])
    assert good.completion_status == "SUCCESS"
    assert good.updated_at == dt.datetime(2021, 4, 9, 11, 8, 59, 528000, tzinfo=dt.UTC)
    assert bad.id == "e2"
    with pytest.raises(ProtocolError, match="completionStatus"):
        _ = bad.completion_status
    with pytest.raises(ProtocolError, match=r"_data\[1\]\.id"):
        entries_from([ENTRY, {"completionStatus": "SUCCESS"}])


def test_entries_of_a_page_read_lean_are_the_entries_read_parsed():
    """Entries kept as their text until used read, compare and pickle as parsed ones do."""
    body = orjson.dumps({"_data": [ENTRY, {"id": "e2", "completionStatus": 3}], "_meta": {}})
    raws, meta, ids = lean_entry_page(body)
    assert (meta, ids) == ({}, [ENTRY["id"], "e2"])
    good, bad = lazy_entries(list(zip(ids, raws, strict=True)))
    (unread, _) = lazy_entries(list(zip(ids, raws, strict=True)))
    (parsed,) = entries_from([ENTRY])
    assert pickle.loads(pickle.dumps(unread)).raw == ENTRY  # noqa: S301 -- our own bytes
    assert good == parsed
    assert hash(good) == hash(parsed)
    assert good.raw == ENTRY
    assert bad.raw == {"id": "e2", "completionStatus": 3}
    with pytest.raises(ProtocolError, match="completionStatus"):
        _ = bad.completion_status
