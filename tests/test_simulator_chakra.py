"""The simulated Chakra API, spoken to over raw HTTP."""

import json

import aiohttp
import pytest

from asyncbulk.testing import ManualClock, Simulator

PROCESS_1E50 = "1e50dd73-9ce6-405b-932a-9c4c5e7b5599"
PROCESS_46CE = "46ce67e5-684e-4cfc-b47e-345a485d1cdd"
ENTRY_FIELDS = {
    "id",
    "createdAt",
    "updatedAt",
    "data",
    "validationStatus",
    "validationMessage",
    "validationResult",
    "completionStatus",
    "completionMessage",
    "completionResult",
    "team",
    "backgroundJob",
    "createdBy",
}
ACK_FIELDS = {
    "id",
    "createdAt",
    "updatedAt",
    "completionStatus",
    "statusMessage",
    "startedAt",
    "completedAt",
    "team",
    "type",
}

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
async def sim(clock):
    async with Simulator(clock=clock, chakra_entries_per_second=10.0) as simulator:
        yield simulator


@pytest.fixture
async def http(sim):
    headers = {"Authorization": f"Bearer {sim.chakra_token}"}
    async with aiohttp.ClientSession(sim.chakra_url, headers=headers) as session:
        yield session


async def call(http, method, path, body=None, *, raw=None):
    """Send a request; return (status, parsed body)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body))
    async with http.request(method, path, data=data) as response:
        return response.status, await response.json(content_type=None)


async def submit(http, body, procedure="tele_sales"):
    status, answer = await call(http, "PATCH", f"/v1/ext/procedure/{procedure}/process", body)
    assert status == 200, answer
    return answer["_data"]["id"]


async def entries(http, job_id, query=""):
    status, answer = await call(http, "GET", f"/v1/ext/background-job/{job_id}/entries{query}")
    assert status == 200, answer
    return answer


async def job(http, job_id):
    status, answer = await call(http, "GET", f"/v1/ext/background-job/{job_id}")
    assert status == 200, answer
    return answer


DOC_EXAMPLES = [
    pytest.param(
        "tele_sales",
        {
            "processes": [
                {"lead_id": "EXT-TEST-143", "update": {"data": {"score": "105"}}},
                {
                    "id": PROCESS_1E50,
                    "update": {"data": {"city": "Goa"}, "state": "IN_PROGRESS"},
                },
            ]
        },
        ["SUCCESS", "SUCCESS"],
        id="curl-example-wrapped",
    ),
    pytest.param(
        "tele_sales",
        {
            "processes": [
                {
                    "id": PROCESS_46CE,
                    "state": "IN_PROGRESS",
                    "status": "OPEN",
                    "assignedTo": "shane.warne",
                    "nextActionAt": "1616253910842",
                    "data": {"first_name": "shane", "last_name": "warne"},
                }
            ]
        },
        ["SUCCESS"],
        id="flat-with-digit-string-nextActionAt",
    ),
    pytest.param(
        "tele_sales",
        {"processes": [{"lead_id": "LEAD-910", "data": {"country": "Japan", "city": "Tokyo"}}]},
        ["SUCCESS"],
        id="flat-by-primary-key",
    ),
    pytest.param(
        "tele_sales",
        {"processes": [{"status": "COMPLETED"}]},
        ["INVALID"],
        id="no-identifier-is-invalid",
    ),
    pytest.param(
        "7a409cf7-5529-4570-9085-90798d7eb742",
        {"processes": [{"phone_number": "9901258433", "update": {"data": {"score": 42}}}]},
        ["SUCCESS"],
        id="procedure-uuid-and-phone-number-key",
    ),
    pytest.param(
        "tele_sales",
        {"processes": [{"id": "LEAD-001", "update": {"status": "CANCELLED"}}]},
        ["SUCCESS"],
        id="prose-id-LEAD-001",
    ),
]


@pytest.mark.parametrize(("procedure", "body", "outcome"), DOC_EXAMPLES)
async def test_doc_examples_as_printed(clock, http, procedure, body, outcome):
    """Every bulk-update body of the docs is acknowledged, then ends as the docs imply."""
    status, answer = await call(http, "PATCH", f"/v1/ext/procedure/{procedure}/process", body)
    assert status == 200
    assert answer["_errors"] == []
    assert answer["_meta"] == {}
    ack = answer["_data"]
    assert set(ack) == ACK_FIELDS
    assert ack["completionStatus"] == "IN_PROGRESS"
    assert ack["completedAt"] == 0
    assert ack["statusMessage"] is None
    clock.advance(10)
    listing = await entries(http, ack["id"])
    assert [e["completionStatus"] for e in listing["_data"]] == outcome
    for entry in listing["_data"]:
        assert set(entry) == ENTRY_FIELDS
        assert entry["data"]["apiType"] == "process:ext-update"
        assert entry["backgroundJob"] == ack["id"]
    done = await job(http, ack["id"])
    assert done["_data"]["completionStatus"] == "COMPLETED"
    assert done["_data"]["completedAt"] > 0


async def test_changes_reach_the_store(sim, clock, http):
    """A successful entry changes the process; the digit-string nextActionAt becomes an int."""
    await submit(http, DOC_EXAMPLES[0].values[1])
    await submit(http, DOC_EXAMPLES[1].values[1])
    clock.advance(10)
    assert sim.chakra.process("tele_sales", "EXT-TEST-143").data["score"] == "105"
    moved = sim.chakra.process("tele_sales", PROCESS_1E50)
    assert (moved.data["city"], moved.state) == ("Goa", "IN_PROGRESS")
    shane = sim.chakra.processes[PROCESS_46CE]
    assert shane.assigned_to == "shane.warne"
    assert shane.next_action_at == 1616253910842
    assert shane.data["first_name"] == "shane"


async def test_the_entries_example_request_as_printed(http):
    """The docs' entries request (SUCCESS, limit 10, skip 2000) answers ten SUCCESS entries."""
    path = (
        "/v1/ext/background-job/006af7f9-d5fb-4d1a-8b31-ac6f3a3a1dfc/entries"
        "?completionStatus=SUCCESS&limit=10&skip=2000"
    )
    status, answer = await call(http, "GET", path)
    assert status == 200
    assert len(answer["_data"]) == 10
    assert {e["completionStatus"] for e in answer["_data"]} == {"SUCCESS"}
    assert all(set(e) == ENTRY_FIELDS for e in answer["_data"])
    assert answer["_meta"]["total"] == 2498


async def test_the_entries_example_response_shape(http):
    """The docs' example job answers its first two entries and the malformed `next` as printed."""
    job_id = "19632427-908f-4bf3-a6f5-69b9a0bbfc63"
    answer = await entries(http, job_id, "?limit=2")
    first, second = answer["_data"]
    assert first["id"] == "e9bc853c-0af7-414c-bc7b-ccc7a40aa510"
    assert (first["completionStatus"], second["completionStatus"]) == ("SUCCESS", "ERROR")
    assert first["data"] == {
        "apiData": {
            "processId": PROCESS_1E50,
            "procedureId": "f3eb37a9-b54e-4088-bc5f-948d37f8aa62",
            "processUpdate": {"data": {"lead_id": "100"}},
        },
        "apiType": "process:ext-update",
    }
    assert first["team"] == "d3e64510-b75a-43a0-8ae5-dde78dac56c0"
    assert first["createdBy"] == "5acc9b3b-9850-422b-81ce-22b01cb74356"
    assert answer["_meta"] == {
        "total": 770,
        "next": f"/v1/ext/background-job/{job_id}/entries?skip=2limit=2",
    }


async def test_entries_progress_with_the_clock(sim, clock, http):
    """Entries go NOT_STARTED, IN_PROGRESS, SUCCESS at the set rate; the job then completes."""
    items = [{"lead_id": "LEAD-001", "update": {"state": f"s{i}"}} for i in range(5)]
    job_id = await submit(http, {"processes": items})
    start = await job(http, job_id)
    assert start["_meta"]["bjEntryCompletionStatusVsCount"] == {"NOT_STARTED": 4, "IN_PROGRESS": 1}
    assert start["_data"]["completionStatus"] == "IN_PROGRESS"
    clock.advance(0.25)
    middle = await job(http, job_id)
    counts = middle["_meta"]["bjEntryCompletionStatusVsCount"]
    assert counts == {"SUCCESS": 2, "IN_PROGRESS": 1, "NOT_STARTED": 2}
    listing = await entries(http, job_id)
    statuses = [e["completionStatus"] for e in listing["_data"]]
    assert statuses == ["SUCCESS", "SUCCESS", "IN_PROGRESS", "NOT_STARTED", "NOT_STARTED"]
    clock.advance(1)
    final = await job(http, job_id)
    assert final["_meta"]["bjEntryCompletionStatusVsCount"] == {"SUCCESS": 5}
    assert final["_data"]["completionStatus"] == "COMPLETED"
    assert final["_data"]["completedAt"] == final["_data"]["startedAt"] + 500
    assert sim.chakra.process("tele_sales", "LEAD-001").state == "s4"
    finished = sim.records.job_finished(job_id)
    assert finished.simulated * 1000 == pytest.approx(final["_data"]["completedAt"], abs=1)
    assert finished.wall is None


INVALID_ITEMS = [
    pytest.param({"id": "00000000-0000-4000-8000-000000000000", "data": {}}, "no process", id="id"),
    pytest.param({"lead_id": "NOPE", "data": {}}, "no process with lead_id", id="primary-key"),
    pytest.param({"lead_id": "LEAD-001", "data": {"shoe": 9}}, "unknown attribute", id="attr"),
    pytest.param({"lead_id": "LEAD-001", "status": "DONE"}, "invalid status", id="status"),
    pytest.param({"lead_id": "LEAD-001", "nextActionAt": "soon"}, "nextActionAt", id="when"),
    pytest.param({"lead_id": "LEAD-001", "colour": "red"}, "unknown field", id="field"),
    pytest.param({"lead_id": "LEAD-001", "update": {}, "state": "x"}, "not both", id="mixed"),
    pytest.param({"id": PROCESS_46CE, "lead_id": "LEAD-001"}, "different", id="two-ids"),
    pytest.param("LEAD-001", "object", id="not-an-object"),
]


@pytest.mark.parametrize(("item", "message"), INVALID_ITEMS)
async def test_invalid_entries(sim, clock, http, item, message):
    """An item that cannot apply is INVALID at once, with a message saying why."""
    job_id = await submit(http, {"processes": [item, {"lead_id": "LEAD-001", "data": {}}]})
    invalid = await entries(http, job_id, "?completionStatus=INVALID")
    assert invalid["_meta"]["total"] == 1
    (entry,) = invalid["_data"]
    assert entry["validationStatus"] == "INVALID"
    assert message in entry["validationMessage"]


async def test_error_rate_is_seeded_and_reported():
    """ERROR entries follow the seed, carry a completionMessage and match the counts."""
    outcomes = []
    for _ in range(2):
        clock = ManualClock()
        async with (
            Simulator(clock=clock, seed=7, chakra_error_rate=0.3) as sim,
            aiohttp.ClientSession(
                sim.chakra_url, headers={"Authorization": f"Bearer {sim.chakra_token}"}
            ) as http,
        ):
            items = [{"lead_id": "LEAD-001", "data": {"score": str(i)}} for i in range(100)]
            job_id = await submit(http, {"processes": items})
            clock.advance(60)
            errors = await entries(http, job_id, "?completionStatus=ERROR")
            counts = (await job(http, job_id))["_meta"]["bjEntryCompletionStatusVsCount"]
            assert counts["ERROR"] == errors["_meta"]["total"] == len(errors["_data"])
            assert counts["SUCCESS"] + counts["ERROR"] == 100
            assert 10 < counts["ERROR"] < 50
            assert all(e["completionMessage"] for e in errors["_data"])
            outcomes.append([e["data"]["apiData"]["processUpdate"] for e in errors["_data"]])
    assert outcomes[0] == outcomes[1]


async def test_bulk_create_with_a_bare_array(sim, clock, http):
    """Bulk create takes a bare array, makes a job of create entries, then the processes."""
    body = [
        {"lead_id": "NEW-1", "data": {"city": "Kochi"}, "state": "NEW"},
        {"lead_id": "NEW-2", "data": {"city": "Agra"}, "status": "OPEN"},
        {"lead_id": "NEW-1", "data": {}},
        {"data": {"city": "Nowhere"}},
    ]
    status, answer = await call(
        http, "POST", "/v1/ext/procedure/tele_sales/process/bulk-create", body
    )
    assert status == 200
    assert set(answer["_data"]) == ACK_FIELDS
    clock.advance(10)
    listing = await entries(http, answer["_data"]["id"])
    statuses = [e["completionStatus"] for e in listing["_data"]]
    assert statuses == ["SUCCESS", "SUCCESS", "INVALID", "INVALID"]
    assert {e["data"]["apiType"] for e in listing["_data"]} == {"process:ext-create"}
    created = sim.chakra.process("tele_sales", "NEW-1")
    assert created.id == listing["_data"][0]["data"]["apiData"]["processId"]
    assert (created.data["city"], created.state) == ("Kochi", "NEW")
    assert len(sim.records.chakra_submissions) == 1
    assert sim.records.chakra_submissions[0].body == body


@pytest.mark.parametrize(
    ("count", "query", "expected"),
    [
        pytest.param(0, "", (0, 0, False), id="empty-job"),
        pytest.param(100, "", (100, 100, False), id="exactly-100"),
        pytest.param(101, "", (100, 101, True), id="101-first-page"),
        pytest.param(101, "?skip=100", (1, 101, False), id="101-second-page"),
        pytest.param(101, "?limit=500", (100, 101, True), id="limit-clamped-to-100"),
        pytest.param(101, "?completionStatus=ERROR", (0, 0, False), id="filter-without-match"),
        pytest.param(5, "?skip=50", (0, 5, False), id="skip-past-the-end"),
        pytest.param(5, "?limit=2&skip=1", (2, 5, True), id="middle-page"),
    ],
)
async def test_entries_pagination(clock, http, count, query, expected):
    """Pages hold at most 100 entries; total and next follow skip, limit and the filter."""
    page, total, has_next = expected
    items = [{"lead_id": "LEAD-910", "data": {}} for _ in range(count)]
    job_id = await submit(http, {"processes": items})
    clock.advance(60)
    answer = await entries(http, job_id, query)
    assert len(answer["_data"]) == page
    assert answer["_meta"]["total"] == total
    assert (answer["_meta"]["next"] is not None) == has_next


@pytest.mark.parametrize(
    "query",
    ["?limit=0", "?limit=-1", "?limit=ten", "?skip=-5", "?skip=x", "?completionStatus=DONE"],
    ids=["limit-0", "limit-negative", "limit-text", "skip-negative", "skip-text", "bad-status"],
)
async def test_entries_bad_queries(http, query):
    """A query the API cannot honour answers 400 with `_errors`."""
    job_id = "19632427-908f-4bf3-a6f5-69b9a0bbfc63"
    status, answer = await call(http, "GET", f"/v1/ext/background-job/{job_id}/entries{query}")
    assert status == 400
    assert answer["_errors"]
    assert answer["_data"] is None


async def test_filtered_listings_partition_a_running_job(sim, clock, http):
    """While a job runs, the per-status listings add up to the job and each holds its status."""
    items = [{"lead_id": "LEAD-001", "data": {}} for _ in range(30)]
    items[3] = items[17] = {"lead_id": "GHOST", "data": {}}
    job_id = await submit(http, {"processes": items})
    clock.advance(1.05)
    seen = {}
    for status in ("INVALID", "NOT_STARTED", "IN_PROGRESS", "SUCCESS", "ERROR", "CANCELLED"):
        answer = await entries(http, job_id, f"?completionStatus={status}")
        assert {e["completionStatus"] for e in answer["_data"]} <= {status}
        assert answer["_meta"]["total"] == len(answer["_data"])
        seen.update({e["id"]: status for e in answer["_data"]})
    assert len(seen) == 30
    counts = (await job(http, job_id))["_meta"]["bjEntryCompletionStatusVsCount"]
    assert counts == {"INVALID": 2, "SUCCESS": 10, "IN_PROGRESS": 1, "NOT_STARTED": 17}
    everything = await entries(http, job_id)
    assert {e["id"]: e["completionStatus"] for e in everything["_data"]} == seen


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic Y2hha3JhOg=="}],
    ids=["missing", "wrong-token", "wrong-scheme"],
)
async def test_auth_is_required(sim, headers):
    """Without the right bearer token every route answers 401 with `_errors`."""
    async with (
        aiohttp.ClientSession(sim.chakra_url) as http,
        http.get(
            "/v1/ext/background-job/19632427-908f-4bf3-a6f5-69b9a0bbfc63", headers=headers
        ) as response,
    ):
        assert response.status == 401
        body = await response.json()
    assert body["_errors"]
    assert body["_data"] is None


@pytest.mark.parametrize(
    ("method", "path", "raw", "status"),
    [
        ("PATCH", "/v1/ext/procedure/nope/process", '{"processes": []}', 404),
        ("GET", "/v1/ext/background-job/nope", None, 404),
        ("GET", "/v1/ext/background-job/nope/entries", None, 404),
        ("GET", "/v1/ext/nothing-here", None, 404),
        ("PATCH", "/v1/ext/procedure/tele_sales/process", "{not json", 400),
        ("PATCH", "/v1/ext/procedure/tele_sales/process", '{"processes": {}}', 400),
        ("POST", "/v1/ext/procedure/tele_sales/process/bulk-create", '{"a": 1}', 400),
    ],
    ids=[
        "unknown-procedure",
        "unknown-job",
        "unknown-job-entries",
        "unknown-route",
        "not-json",
        "processes-not-array",
        "create-not-array",
    ],
)
async def test_errors_are_wrapped(http, method, path, raw, status):
    """Errors come in the usual wrapper with a message in `_errors`."""
    code, answer = await call(http, method, path, raw=raw)
    assert code == status
    assert answer["_data"] is None
    assert isinstance(answer["_errors"][0], str)


async def test_primary_key_change_is_applied(sim, clock, http):
    """A change of the primary key re-indexes the process; a clash with another key is INVALID."""
    job_id = await submit(
        http,
        {
            "processes": [
                {"lead_id": "LEAD-910", "update": {"data": {"lead_id": "LEAD-911"}}},
                {"lead_id": "LEAD-001", "update": {"data": {"lead_id": "LEAD-100"}}},
            ]
        },
    )
    clock.advance(10)
    statuses = [e["completionStatus"] for e in (await entries(http, job_id))["_data"]]
    assert statuses == ["SUCCESS", "INVALID"]
    assert sim.chakra.process("tele_sales", "LEAD-911") is not None
    assert sim.chakra.process("tele_sales", "LEAD-910") is None


async def test_delete_hides_the_process(sim, clock, http):
    """Deleting with isDeleted removes the process from lookups; later updates of it are INVALID."""
    await submit(http, {"processes": [{"lead_id": "LEAD-100", "update": {"isDeleted": True}}]})
    clock.advance(10)
    assert sim.chakra.process("tele_sales", "LEAD-100") is None
    job_id = await submit(http, {"processes": [{"lead_id": "LEAD-100", "data": {}}]})
    listing = await entries(http, job_id)
    assert listing["_data"][0]["completionStatus"] == "INVALID"


async def test_created_processes_can_be_updated_next(sim, clock, http):
    """Once a bulk create finishes, a bulk update finds the new process by its key."""
    path = "/v1/ext/procedure/tele_sales/process/bulk-create"
    await call(http, "POST", path, [{"lead_id": "NEW-9", "data": {"city": "Ooty"}}])
    early = await submit(http, {"processes": [{"lead_id": "NEW-9", "data": {"score": "1"}}]})
    clock.advance(10)
    late = await submit(http, {"processes": [{"lead_id": "NEW-9", "data": {"score": "2"}}]})
    clock.advance(10)
    assert (await entries(http, early))["_data"][0]["completionStatus"] == "INVALID"
    assert (await entries(http, late))["_data"][0]["completionStatus"] == "SUCCESS"
    assert sim.chakra.process("tele_sales", "NEW-9").data == {
        "lead_id": "NEW-9",
        "city": "Ooty",
        "score": "2",
    }


async def test_job_shapes_as_served(sim, clock, http):
    """Documented: counts only, type bulk_api_job; lagging: IN_PROGRESS and completedAt 0."""
    job_id = await submit(http, {"processes": [{"lead_id": "LEAD-001", "state": "s"}]})
    clock.advance(10)
    sim.chakra.job_shape = "documented"
    documented = await job(http, job_id)
    assert set(documented["_data"]) == {"id", "createdAt", "updatedAt", "startedAt", "team", "type"}
    assert documented["_data"]["type"] == "bulk_api_job"
    assert documented["_meta"]["bjEntryCompletionStatusVsCount"] == {"SUCCESS": 1}
    sim.chakra.job_shape = "lagging"
    lagging = (await job(http, job_id))["_data"]
    assert (lagging["completionStatus"], lagging["completedAt"]) == ("IN_PROGRESS", 0)
    assert lagging["type"] == "bulk_api_job"
    with pytest.raises(ValueError, match="job_shape"):
        sim.chakra.job_shape = "finished"


async def test_short_and_empty_pages_keep_the_total(sim, http):
    """A cut page answers fewer entries (or none) at its skip, the announced total unchanged."""
    job_id = "006af7f9-d5fb-4d1a-8b31-ac6f3a3a1dfc"
    sim.chakra.short_page(1200, keep=97, job_id=job_id)
    sim.chakra.short_page(1300, keep=0, times=None)
    short = await entries(http, job_id, "?skip=1200&limit=100")
    assert (len(short["_data"]), short["_meta"]["total"]) == (97, 2500)
    again = await entries(http, job_id, "?skip=1200&limit=100")
    assert len(again["_data"]) == 100
    for _ in range(2):
        empty = await entries(http, job_id, "?skip=1300&limit=100")
        assert (empty["_data"], empty["_meta"]["total"]) == ([], 2500)
    assert len((await entries(http, job_id, "?skip=1301&limit=100"))["_data"]) == 100
