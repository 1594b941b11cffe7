"""The simulator's listings byte for byte: every field, in order, compact, UTF-8 unescaped."""

import base64
import json

import aiohttp
import pytest

from asyncbulk.testing import ManualClock, Simulator

pytestmark = pytest.mark.anyio

TELE_SALES = "f3eb37a9-b54e-4088-bc5f-948d37f8aa62"
FIELD_SALES = "7a409cf7-5529-4570-9085-90798d7eb742"
PROCESS_46CE = "46ce67e5-684e-4cfc-b47e-345a485d1cdd"
START_MS = 1_700_000_000_000


def wire(value):
    """Encode `value` the way both simulated vendors do: compact separators, UTF-8 as is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def entry(job_id, entry_id, *, updated, api_data, api_type, validation="", status="SUCCESS"):
    """One background job entry, every field in the order the entries API prints it."""
    return {
        "id": entry_id,
        "createdAt": START_MS,
        "updatedAt": START_MS + updated,
        "data": {"apiData": api_data, "apiType": api_type},
        "validationStatus": "INVALID" if validation else "SUCCESS",
        "validationMessage": validation,
        "validationResult": None,
        "completionStatus": status,
        "completionMessage": "simulated processing error" if status == "ERROR" else "",
        "completionResult": None,
        "team": "d3e64510-b75a-43a0-8ae5-dde78dac56c0",
        "backgroundJob": job_id,
        "createdBy": "5acc9b3b-9850-422b-81ce-22b01cb74356",
    }


def update(process_id, change):
    return {"processId": process_id, "procedureId": TELE_SALES, "processUpdate": change}


@pytest.fixture
def clock():
    return ManualClock()


async def get(http, path):
    """GET `path`; return the raw body after checking the status and content type."""
    async with http.get(path) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        return await response.read()


async def test_chakra_entries_pages_byte_for_byte(clock):
    """Entries of every state, an escaped change, a create job's filtered page: exact bytes."""
    async with (
        Simulator(
            clock=clock, chakra_entries_per_second=10.0, chakra_error_rate=0.5, seed=3
        ) as sim,
        aiohttp.ClientSession(
            sim.chakra_url, headers={"Authorization": f"Bearer {sim.chakra_token}"}
        ) as http,
    ):
        state = 'é "q" \u2028\n'
        items = [
            {"lead_id": "LEAD-001", "update": {"state": state, "data": {"score": 1.5}}},
            {"lead_id": "NOPE", "data": {}},
            {"lead_id": "LEAD-910", "data": {"city": "Tōkyō"}},
            {"lead_id": "LEAD-100", "status": "COMPLETED"},
            {"id": PROCESS_46CE, "nextActionAt": "1616253910842"},
        ]
        path = "/v1/ext/procedure/tele_sales/process"
        async with http.patch(path, json={"processes": items}) as response:
            job_id = (await response.json())["_data"]["id"]
        creates = [
            {"phone_number": "1", "data": {"city": "A"}},
            {"phone_number": "2"},
            {"phone_number": "3", "state": "new"},
        ]
        path = "/v1/ext/procedure/field_sales/process/bulk-create"
        async with http.post(path, json=creates) as response:
            create_id = (await response.json())["_data"]["id"]
        clock.advance(0.25)
        running = await get(http, f"/v1/ext/background-job/{job_id}/entries")
        summary = await get(http, f"/v1/ext/background-job/{job_id}")
        query = "?completionStatus=SUCCESS&limit=1"
        created = await get(http, f"/v1/ext/background-job/{create_id}/entries{query}")
    update_type = "process:ext-update"
    assert running == wire(
        {
            "_data": [
                entry(
                    job_id,
                    "6670359c-b7fe-4f51-b93f-fbef0d07aa48",
                    updated=100,
                    api_data=update(
                        "b033aa13-7890-4698-a2f9-f49e4d09e26a",
                        {"state": state, "data": {"score": 1.5}},
                    ),
                    api_type=update_type,
                ),
                entry(
                    job_id,
                    "08ec81d6-b930-40b7-880b-0ae500d2fe1a",
                    updated=0,
                    api_data=update(None, {"data": {}}),
                    api_type=update_type,
                    validation="no process with lead_id 'NOPE'",
                    status="INVALID",
                ),
                entry(
                    job_id,
                    "e17e582d-f03a-4382-9d13-9565d18f5569",
                    updated=200,
                    api_data=update(
                        "8b86a468-ec8f-4fb4-a7b5-7ea61254f087", {"data": {"city": "Tōkyō"}}
                    ),
                    api_type=update_type,
                    status="ERROR",
                ),
                entry(
                    job_id,
                    "51663d4f-2d81-48d2-b71e-c7ff2992b44f",
                    updated=200,
                    api_data=update(
                        "b5c67759-d9ec-45be-9480-2941ac53d670", {"status": "COMPLETED"}
                    ),
                    api_type=update_type,
                    status="IN_PROGRESS",
                ),
                entry(
                    job_id,
                    "6bb8aff0-3db2-40ae-96fb-5036adebbfa6",
                    updated=0,
                    api_data=update(PROCESS_46CE, {"nextActionAt": "1616253910842"}),
                    api_type=update_type,
                    status="NOT_STARTED",
                ),
            ],
            "_meta": {"total": 5, "next": None},
            "_errors": [],
        }
    )
    assert summary == wire(
        {
            "_data": {
                "id": job_id,
                "createdAt": START_MS,
                "updatedAt": START_MS + 250,
                "completionStatus": "IN_PROGRESS",
                "statusMessage": None,
                "startedAt": START_MS,
                "completedAt": 0,
                "team": "d3e64510-b75a-43a0-8ae5-dde78dac56c0",
                "type": "0b6f0c52-52a6-4f3c-9a1e-1c7f2ad1e6c1",
            },
            "_meta": {
                "bjEntryCompletionStatusVsCount": {
                    "INVALID": 1,
                    "NOT_STARTED": 1,
                    "IN_PROGRESS": 1,
                    "SUCCESS": 1,
                    "ERROR": 1,
                }
            },
            "_errors": [],
        }
    )
    assert created == wire(
        {
            "_data": [
                entry(
                    create_id,
                    "66b3f0d0-ced5-469a-99b3-831ae6fbe0ac",
                    updated=100,
                    api_data={
                        "processId": "5cde0036-2b19-4770-9bf7-e4abf1886078",
                        "procedureId": FIELD_SALES,
                        "processCreate": {"phone_number": "1", "data": {"city": "A"}},
                    },
                    api_type="process:ext-create",
                )
            ],
            "_meta": {
                "total": 2,
                "next": f"/v1/ext/background-job/{create_id}/entries?skip=1limit=1",
            },
            "_errors": [],
        }
    )


async def test_zefort_listing_pages_byte_for_byte(clock):
    """Done, pending (echoing an escaped body and query) and failed tasks list as exact bytes."""
    key = base64.b64encode(b"zefort-sim-key:").decode()
    async with (
        Simulator(clock=clock, zefort_task_delay=2.0, seed=3) as sim,
        aiohttp.ClientSession(sim.zefort_url, headers={"Authorization": f"Basic {key}"}) as http,
    ):
        bodies = [
            (
                "",
                {
                    "attributes": {"end_date": "2023-02-15"},
                    "status": "done",
                    "search": {"q_tags": "contracts of service"},
                },
            ),
            ("?note=é", {"attributes": {"n": 1.5, "t": 'é "q"'}, "search": {"q": "nda"}}),
            ("", {"search": {"tags": ["lease"]}}),
        ]
        ids = []
        for query, body in bodies:
            async with http.post(f"/api/contracts/bulk_update/{query}", json=body) as response:
                ids.append((await response.json())["id"])
            if len(ids) == 1:
                clock.advance(2)
        sim.zefort.fail_task(ids[2], "limited", info="quota é", at_once=True)
        first = await get(http, "/api/tasks/?page_size=2&page=1")
        second = await get(http, "/api/tasks/?page_size=2&page=2")
        url = sim.zefort_url
    assert ids == ["task_A5jzlddobPfXX8tINC", "task_kmVrt4YBD9P3qWtNYe", "task_oINWYVlfXD6LWCKuJ7"]

    def task(task_id, query_params, data, status="pending", info=""):
        return {
            "id": task_id,
            "details": {"query_params": query_params, "data": data},
            "backend_status": status,
            "backend_status_info": info,
            "frontend_status": "pending",
            "description": "Contract Bulk operation",
        }

    assert first == wire(
        {
            "page_size": 2,
            "page": 1,
            "last_page": 2,
            "count": 3,
            "next": f"{url}/api/tasks/?page=2&page_size=2",
            "previous": None,
            "results": [
                task(
                    ids[0],
                    {},
                    {"contracts": ["ct_1KmjVahd4Hg6W7l18c", "ct_1JXncwxR5skmpC4dDB"]},
                    "done",
                ),
                task(ids[1], {"note": "é"}, bodies[1][1]),
            ],
        }
    )
    assert second == wire(
        {
            "page_size": 2,
            "page": 2,
            "last_page": 2,
            "count": 3,
            "next": None,
            "previous": f"{url}/api/tasks/?page=1&page_size=2",
            "results": [task(ids[2], {}, bodies[2][1], "limited", "quota é")],
        }
    )


async def test_chakra_page_text_is_the_encoded_page(clock):
    """The entries page the API answers equals its readable form encoded, in every state."""
    async with Simulator(
        clock=clock, chakra_entries_per_second=10.0, chakra_error_rate=0.3, seed=5
    ) as sim:
        state = sim.chakra
        procedure = state.procedures["tele_sales"]
        items = [
            {"lead_id": "LEAD-001", "update": {"state": f"é\n{i}", "data": {"score": i / 3}}}
            if i % 4
            else {"lead_id": f"NOPE-{i}", "data": {}}
            for i in range(40)
        ]
        jobs = [
            state.submit_update(procedure, items),
            state.submit_create(procedure, [{"lead_id": f"N{i}", "state": "ü"} for i in range(9)]),
            *state.jobs.values(),
        ]
        for seconds in (0.0, 0.05, 1.0, 2.5, 100.0):
            clock.set(clock.start + seconds)
            now = clock.now()
            for job in jobs:
                for status in (None, "INVALID", "NOT_STARTED", "IN_PROGRESS", "SUCCESS", "ERROR"):
                    for skip, limit in ((0, 100), (3, 7), (25, 100)):
                        entries, total = job.page(status, skip, limit, now)
                        text, same_total = job.page_json(status, skip, limit, now)
                        assert (text.encode(), same_total) == (wire(entries), total)


async def test_zefort_task_text_is_the_encoded_task(clock):
    """A task's answer equals its readable form encoded, also after its parts are replaced."""
    async with Simulator(clock=clock, zefort_task_delay=1.0) as sim:
        task = sim.zefort.submit_bulk_update({"search": {"q": "é"}}, {"x": 'a"b'})
        assert task.json_text().encode() == wire(task.to_json())
        clock.advance(1)
        sim.zefort.settle()
        assert task.json_text().encode() == wire(task.to_json())
        task.contracts = ["ct_x"]
        task.frontend_status = "done"
        assert task.json_text().encode() == wire(task.to_json())
