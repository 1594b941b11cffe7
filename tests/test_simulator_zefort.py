"""The simulated Zefort API, spoken to over raw HTTP."""

import base64
import math
import random
import re

import aiohttp
import pytest

from asyncbulk.testing import ManualClock, Simulator

pytestmark = pytest.mark.anyio

DOC_PAYLOAD = {
    "attributes": {"end_date": "2023-02-15"},
    "status": "done",
    "search": {"q_tags": "contracts of service"},
}
SERVICE_CONTRACTS = ["ct_1KmjVahd4Hg6W7l18c", "ct_1JXncwxR5skmpC4dDB"]


def basic(user, password=""):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
async def sim(clock):
    async with Simulator(clock=clock, zefort_task_delay=5.0) as simulator:
        yield simulator


@pytest.fixture
async def http(sim):
    headers = {"Authorization": basic(sim.zefort_api_key)}
    async with aiohttp.ClientSession(sim.zefort_url, headers=headers) as session:
        yield session


async def call(http, method, path, body=None):
    """Send a request; return (status, parsed body)."""
    async with http.request(method, path, json=body) as response:
        return response.status, await response.json(content_type=None)


async def bulk_update(http, body=None):
    status, task = await call(http, "POST", "/api/contracts/bulk_update/", body or DOC_PAYLOAD)
    assert status == 200, task
    return task


async def test_bulk_update_answers_the_documented_task(http):
    """The docs' bulk update, sent as printed, answers the pending task exactly as printed."""
    task = await bulk_update(http, DOC_PAYLOAD)
    assert re.fullmatch(r"task_[0-9A-Za-z]{18}", task.pop("id"))
    assert task == {
        "details": {
            "query_params": {},
            "data": {
                "attributes": {"end_date": "2023-02-15"},
                "status": "done",
                "search": {"q_tags": "contracts of service"},
            },
        },
        "backend_status": "pending",
        "backend_status_info": "",
        "frontend_status": "pending",
        "description": "Contract Bulk operation",
    }


async def test_task_polling_and_acknowledgement_as_documented(sim, clock, http):
    """A task is pending, then done listing the changed contracts; PATCH done unlists it."""
    task_id = (await bulk_update(http))["id"]
    _, pending = await call(http, "GET", f"/api/tasks/{task_id}/")
    assert pending["backend_status"] == "pending"
    assert sim.records.task_finished(task_id) is None
    clock.advance(5)
    _, done = await call(http, "GET", f"/api/tasks/{task_id}/")
    assert done == {
        "id": task_id,
        "details": {"data": {"contracts": SERVICE_CONTRACTS}, "query_params": {}},
        "backend_status": "done",
        "backend_status_info": "",
        "frontend_status": "pending",
        "description": "Contract Bulk operation",
    }
    for contract_id in SERVICE_CONTRACTS:
        contract = sim.zefort.contracts[contract_id]
        assert (contract.status, contract.attributes["end_date"]) == ("done", "2023-02-15")
    assert sim.zefort.contracts["ct_1KuKrFqQA25mskTpbK"].attributes == {}
    _, listed = await call(http, "GET", "/api/tasks/")
    assert [t["id"] for t in listed["results"]] == [task_id]
    status, acknowledged = await call(
        http, "PATCH", f"/api/tasks/{task_id}/", {"frontend_status": "done"}
    )
    assert status == 200
    assert acknowledged == {**done, "frontend_status": "done"}
    _, listed = await call(http, "GET", "/api/tasks/")
    assert listed["results"] == []
    assert listed["count"] == 0
    await call(http, "PATCH", f"/api/tasks/{task_id}/", {"frontend_status": "done"})
    assert sim.records.acknowledgements[task_id] == 2
    assert sim.records.task_finished(task_id).simulated == clock.start + 5
    assert sim.records.zefort_submissions[0].body == DOC_PAYLOAD


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        pytest.param({"q_tags": "contracts of service"}, SERVICE_CONTRACTS, id="q_tags"),
        pytest.param(
            {"tags": ["nda", "lease"]},
            ["ct_1KuKrFqQA25mskTpbK", "ct_1Lh8QmZr0Tq2pXwYbN"],
            id="tags",
        ),
        pytest.param({"tags": "nda"}, ["ct_1KuKrFqQA25mskTpbK"], id="one-tag"),
        pytest.param({"q": "confidential"}, ["ct_1KuKrFqQA25mskTpbK"], id="q"),
        pytest.param({"status": "review"}, ["ct_1JXncwxR5skmpC4dDB"], id="status"),
        pytest.param(
            {"q_tags": "service", "status": ["done"]}, ["ct_1KmjVahd4Hg6W7l18c"], id="combined"
        ),
        pytest.param({"q_parties": "helpdesk"}, ["ct_1JXncwxR5skmpC4dDB"], id="q_parties"),
        pytest.param({"q": "no such words"}, [], id="no-match"),
    ],
)
async def test_search_filters(sim, clock, http, search, expected):
    """The search selects the contracts a done task lists and changes."""
    task = await bulk_update(http, {"attributes": {"flag": 1}, "search": search})
    clock.advance(5)
    _, done = await call(http, "GET", f"/api/tasks/{task['id']}/")
    assert done["details"]["data"] == {"contracts": expected}
    flagged = [cid for cid, c in sim.zefort.contracts.items() if c.attributes.get("flag") == 1]
    assert flagged == expected


@pytest.mark.parametrize(
    "body",
    [
        pytest.param([1, 2], id="not-an-object"),
        pytest.param({"status": "finished"}, id="bad-status"),
        pytest.param({"search": {"colour": "red"}}, id="unknown-search"),
        pytest.param({"search": "all"}, id="search-not-object"),
        pytest.param({"attributes": ["a"]}, id="attributes-not-object"),
    ],
)
async def test_bad_bulk_updates(sim, http, body):
    """A bulk update that cannot run answers 400 with a `detail`, and creates no task."""
    status, answer = await call(http, "POST", "/api/contracts/bulk_update/", body)
    assert status == 400
    assert isinstance(answer["detail"], str)
    assert sim.records.zefort_submissions == []


@pytest.mark.parametrize(
    "path",
    ["/api/tasks", "/api/tasks/task_1JgdgKhoZqSWVUIzgL", "/api/contracts/bulk_update"],
    ids=["tasks", "task", "bulk_update"],
)
@pytest.mark.parametrize("method", ["GET", "POST", "PATCH"])
async def test_paths_without_trailing_slash_are_404(http, method, path):
    """Zefort's paths end with a slash; without it the answer is 404 with a `detail`."""
    status, answer = await call(http, method, path, {})
    assert status == 404
    assert answer == {"detail": "Not found."}


async def test_unknown_task_is_404(http):
    """A task id that does not exist answers 404 to GET and PATCH."""
    for method in ("GET", "PATCH"):
        status, answer = await call(http, method, "/api/tasks/task_nope/", {})
        assert (status, answer) == (404, {"detail": "Not found."})


@pytest.mark.parametrize(
    "authorization",
    [None, basic("wrong"), "@key", basic("zefort-sim-key", "secret"), "Bearer zefort-sim-key"],
    ids=["missing", "wrong-key", "garbage", "with-password", "bearer"],
)
async def test_auth_is_required(sim, authorization):
    """Only Basic auth with the API key and an empty password gets in; otherwise 401."""
    headers = {} if authorization is None else {"Authorization": authorization}
    async with (
        aiohttp.ClientSession(sim.zefort_url, headers=headers) as http,
        http.get("/api/tasks/") as response,
    ):
        assert response.status == 401
        assert "detail" in await response.json()
        assert response.headers["WWW-Authenticate"].startswith("Basic")


async def test_listing_pages_like_zefort(sim, http):
    """The pending listing pages with page/page_size, full next/previous URLs, last_page."""
    ids = [(await bulk_update(http))["id"] for _ in range(50)]
    _, first = await call(http, "GET", "/api/tasks/")
    assert (first["page"], first["page_size"], first["last_page"], first["count"]) == (1, 24, 3, 50)
    assert first["next"] == f"{sim.zefort_url}/api/tasks/?page=2&page_size=24"
    assert first["previous"] is None
    assert [t["id"] for t in first["results"]] == ids[:24]
    status, last = await call(http, "GET", "/api/tasks/?page=3&page_size=24")
    assert status == 200
    assert [t["id"] for t in last["results"]] == ids[48:]
    assert last["next"] is None
    assert last["previous"] == f"{sim.zefort_url}/api/tasks/?page=2&page_size=24"
    _, big = await call(http, "GET", "/api/tasks/?page_size=100")
    assert (big["page_size"], big["last_page"], len(big["results"])) == (100, 1, 50)


@pytest.mark.parametrize(
    ("query", "status", "page_size"),
    [
        pytest.param("?page=4", 404, None, id="past-the-end"),
        pytest.param("?page=0", 404, None, id="page-zero"),
        pytest.param("?page=abc", 404, None, id="page-text"),
        pytest.param("?page_size=0", 200, 24, id="size-zero-default"),
        pytest.param("?page_size=abc", 200, 24, id="size-text-default"),
        pytest.param("?page_size=5000", 200, 30, id="size-clamped"),
    ],
)
async def test_listing_edges(clock, query, status, page_size):
    """Out-of-range pages are 404; a bad page_size falls back to 24; a big one is clamped."""
    async with (
        Simulator(clock=clock, zefort_page_size_max=30) as sim,
        aiohttp.ClientSession(
            sim.zefort_url, headers={"Authorization": basic(sim.zefort_api_key)}
        ) as http,
    ):
        for _ in range(50):
            await bulk_update(http)
        code, answer = await call(http, "GET", f"/api/tasks/{query}")
    assert code == status
    if page_size is not None:
        assert answer["page_size"] == page_size


async def test_empty_listing(http):
    """With no task the first page exists and is empty."""
    status, answer = await call(http, "GET", "/api/tasks/")
    assert status == 200
    assert answer == {
        "page_size": 24,
        "page": 1,
        "last_page": 1,
        "count": 0,
        "next": None,
        "previous": None,
        "results": [],
    }


async def test_listing_after_acknowledgements_keeps_order(sim, http):
    """Acknowledged tasks leave the listing; the others keep their order; pending re-lists."""
    ids = [(await bulk_update(http))["id"] for _ in range(30)]
    for task_id in ids[::3]:
        await call(http, "PATCH", f"/api/tasks/{task_id}/", {"frontend_status": "done"})
    remaining = [t for i, t in enumerate(ids) if i % 3]
    _, page1 = await call(http, "GET", "/api/tasks/?page_size=7")
    _, page3 = await call(http, "GET", "/api/tasks/?page=3&page_size=7")
    assert page1["count"] == 20
    assert [t["id"] for t in page1["results"]] == remaining[:7]
    assert [t["id"] for t in page3["results"]] == remaining[14:20]
    await call(http, "PATCH", f"/api/tasks/{ids[0]}/", {"frontend_status": "pending"})
    _, again = await call(http, "GET", "/api/tasks/?page_size=2")
    assert [t["id"] for t in again["results"]] == [ids[0], ids[1]]
    status, _ = await call(http, "PATCH", f"/api/tasks/{ids[1]}/", {"frontend_status": "maybe"})
    assert status == 400


async def test_listing_pages_cut_through_runs_of_unlisted_tasks(sim, clock, http):
    """Every page, at every size, is its slice of the listing after random acks and re-lists."""
    rng = random.Random(7)
    ids = [(await bulk_update(http))["id"] for _ in range(40)]
    listed = dict.fromkeys(ids, True)
    for _ in range(60):
        task_id = rng.choice(ids)
        status = rng.choice(["done", "done", "pending"])
        await call(http, "PATCH", f"/api/tasks/{task_id}/", {"frontend_status": status})
        listed[task_id] = status == "pending"
    clock.advance(1000)  # finished tasks show their new status in the listing too
    expected = [task_id for task_id in ids if listed[task_id]]
    for page_size in (1, 3, 7, 40):
        pages = math.ceil(len(expected) / page_size)
        for page in range(1, pages + 1):
            _, body = await call(http, "GET", f"/api/tasks/?page={page}&page_size={page_size}")
            start = (page - 1) * page_size
            assert [t["id"] for t in body["results"]] == expected[start : start + page_size]
            assert {t["backend_status"] for t in body["results"]} == {"done"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("backend_status", "error"),
        ("backend_status_info", "went wrong"),
        ("frontend_status", "done"),
        ("data", {"status": "draft"}),
        ("query_params", {"dry": "1"}),
        ("contracts", ["ct_1"]),
    ],
)
async def test_a_task_shows_a_field_set_after_its_text_was_made(sim, http, field, value):
    """Setting any field a task shows, alone, changes what GET and the listing answer."""
    task_id = (await bulk_update(http))["id"]
    task = sim.zefort.tasks[task_id]
    _, before = await call(http, "GET", f"/api/tasks/{task_id}/")
    assert before == task.to_json()  # the text is made and kept now
    setattr(task, field, value)
    _, after = await call(http, "GET", f"/api/tasks/{task_id}/")
    assert after == task.to_json() != before
    _, listing = await call(http, "GET", "/api/tasks/")
    assert listing["results"] == [task.to_json()]


async def test_failing_a_task_on_request(sim, clock, http):
    """A test can fail a task now or at its due time; its contracts stay unchanged."""
    now_id = (await bulk_update(http))["id"]
    later_id = (await bulk_update(http))["id"]
    sim.zefort.fail_task(now_id, at_once=True)
    sim.zefort.fail_task(later_id, "cancelled", info="stopped")
    _, failed = await call(http, "GET", f"/api/tasks/{now_id}/")
    assert (failed["backend_status"], failed["backend_status_info"]) == (
        "error",
        "simulated failure",
    )
    _, waiting = await call(http, "GET", f"/api/tasks/{later_id}/")
    assert waiting["backend_status"] == "pending"
    clock.advance(5)
    _, cancelled = await call(http, "GET", f"/api/tasks/{later_id}/")
    assert (cancelled["backend_status"], cancelled["backend_status_info"]) == (
        "cancelled",
        "stopped",
    )
    assert sim.zefort.contracts["ct_1KmjVahd4Hg6W7l18c"].attributes["end_date"] == "2022-12-31"
    with pytest.raises(ValueError, match="already finished"):
        sim.zefort.fail_task(now_id)


async def test_future_tasks_can_be_made_to_fail(sim, clock, http):
    """fail_next_tasks makes the next tasks fail, then tasks succeed again."""
    sim.zefort.fail_next_tasks(2, "error")
    ids = [(await bulk_update(http))["id"] for _ in range(3)]
    clock.advance(5)
    statuses = [(await call(http, "GET", f"/api/tasks/{i}/"))[1]["backend_status"] for i in ids]
    assert statuses == ["error", "error", "done"]


@pytest.mark.parametrize(
    ("delay", "pending_at", "done_at"),
    [
        pytest.param(2.0, 1.9, 2.0, id="fixed"),
        pytest.param((3.0, 4.0), 2.9, 4.0, id="range"),
        pytest.param(lambda body: len(body["search"]), 0.9, 1.0, id="callable"),
    ],
)
async def test_task_delays(clock, delay, pending_at, done_at):
    """The task delay may be fixed, a seeded random range, or a function of the request."""
    async with (
        Simulator(clock=clock, zefort_task_delay=delay) as sim,
        aiohttp.ClientSession(
            sim.zefort_url, headers={"Authorization": basic(sim.zefort_api_key)}
        ) as http,
    ):
        task_id = (await bulk_update(http))["id"]
        clock.advance(pending_at)
        assert (await call(http, "GET", f"/api/tasks/{task_id}/"))[1]["backend_status"] == "pending"
        clock.advance(done_at - pending_at)
        assert (await call(http, "GET", f"/api/tasks/{task_id}/"))[1]["backend_status"] == "done"


async def test_failure_rate_is_seeded(clock):
    """zefort_failure_rate fails a seeded share of tasks, the same ones for the same seed."""
    runs = []
    for _ in range(2):
        async with Simulator(clock=ManualClock(), seed=3, zefort_failure_rate=0.5) as sim:
            tasks = [sim.zefort.submit_bulk_update(DOC_PAYLOAD) for _ in range(40)]
            sim.clock.advance(5)
            runs.append([sim.zefort.task(t.id).backend_status for t in tasks])
    assert runs[0] == runs[1]
    assert 5 < runs[0].count("error") < 35
    assert set(runs[0]) == {"done", "error"}


async def test_query_params_are_echoed(http):
    """Query parameters of the bulk update appear in details.query_params."""
    status, task = await call(http, "POST", "/api/contracts/bulk_update/?dry=1", DOC_PAYLOAD)
    assert status == 200
    assert task["details"]["query_params"] == {"dry": "1"}


async def test_postponed_and_new_tasks_finish_exactly_when_due_over_http(sim, clock, http):
    """After postpone_tasks, tasks finish at their due times, old and new ones interleaved."""
    sim.zefort.task_delay = (0.5, 6.0)
    old = [(await bulk_update(http))["id"] for _ in range(30)]
    sim.zefort.postpone_tasks(1.0)
    clock.advance(2.0)
    new = [(await bulk_update(http))["id"] for _ in range(30)]
    due = {task_id: sim.zefort.task(task_id).due_at for task_id in old + new}
    for _ in range(16):
        clock.advance(0.5)
        status, body = await call(http, "GET", "/api/tasks/?page_size=100")
        assert status == 200
        listed = {task["id"]: task["backend_status"] for task in body["results"]}
        now = clock.now()
        assert listed == {i: "done" if at <= now else "pending" for i, at in due.items()}


async def test_postponed_tasks_finish_that_much_later_over_http(sim, clock, http):
    """postpone_tasks moves every unfinished task's due time; a finished one stays finished."""
    early = await bulk_update(http)
    clock.advance(6.0)
    status, body = await call(http, "GET", f"/api/tasks/{early['id']}/")
    assert body["backend_status"] == "done"
    late = await bulk_update(http)
    clock.advance(4.0)
    sim.zefort.postpone_tasks(3.0)
    clock.advance(2.0)  # 6 s after creation: due at 5 s, postponed to 8 s
    status, body = await call(http, "GET", f"/api/tasks/{late['id']}/")
    assert (status, body["backend_status"]) == (200, "pending")
    clock.advance(2.5)
    status, body = await call(http, "GET", f"/api/tasks/{late['id']}/")
    assert body["backend_status"] == "done"
    status, body = await call(http, "GET", f"/api/tasks/{early['id']}/")
    assert body["backend_status"] == "done"
