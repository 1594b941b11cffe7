"""ZefortClient against the simulator (and, for answers it cannot give, a small server of ours)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest
from aiohttp import web
from loopback import serve

from asyncbulk import (
    AuthenticationError,
    JobTimeoutError,
    NotFoundError,
    OutcomeUnknownError,
    ProtocolError,
    RetryPolicy,
    TrackingOptions,
    TransportError,
    ValidationError,
)
from asyncbulk.testing import Fault, ManualClock, Simulator
from asyncbulk.zefort import ZefortClient, ZefortTask

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

FAST = {"tracking": TrackingOptions(min_interval=0.02, max_interval=0.2, sweep_interval=0.05)}
BULK = "/api/contracts/bulk_update/"
TASK = "/api/tasks/{id}/"
TASKS = "/api/tasks/"
BODY = {
    "attributes": {"end_date": "2023-02-15"},
    "status": "done",
    "search": {"q_tags": "contracts of service"},
}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(zefort_task_delay=(0.05, 0.3)) as simulator:
        yield simulator


@pytest.fixture
async def zefort(sim: Simulator) -> AsyncIterator[ZefortClient]:
    async with ZefortClient(
        sim.zefort_api_key, base_url=sim.zefort_url, retry=RetryPolicy.testing(), **FAST
    ) as client:
        yield client


def running_tasks() -> set[asyncio.Task[object]]:
    """The loop's tasks but the in-process simulator's connection handlers."""
    return {
        task
        for task in asyncio.all_tasks()
        if "RequestHandler" not in getattr(task.get_coro(), "__qualname__", "")
    }


def make_tasks(sim: Simulator, count: int) -> list[str]:
    """Create tasks straight in the simulator's state (no HTTP), each with its own body."""
    return [
        sim.zefort.submit_bulk_update({"status": "review", "search": {"q": f"n{i}"}}).id
        for i in range(count)
    ]


# -- bulk updates ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_bulk_update_sends_the_documented_body_once(sim, zefort):
    """The body is the documented one, sent once, and the answer is read as a pending task."""
    task = await zefort.bulk_update_contracts(**BODY)
    assert isinstance(task, ZefortTask)
    assert task.id.startswith("task_")
    assert task.backend_status == "pending"
    assert not task.is_finished
    assert task.data == BODY
    (submission,) = sim.records.zefort_submissions
    assert submission.body == BODY
    assert submission.task_id == task.id


@pytest.mark.anyio
async def test_bulk_update_sends_extra_fields_and_lists_as_json(sim, zefort):
    """Extra fields travel as given; tuples travel as JSON lists."""
    await zefort.bulk_update_contracts(
        attributes={"parties": ("a", "b")}, search={"tags": ["nda"]}, extra={"recursive": None}
    )
    assert sim.records.zefort_submissions[0].body == {
        "attributes": {"parties": ["a", "b"]},
        "search": {"tags": ["nda"]},
    }


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"search": {}}, "attributes"),
        ({"attributes": {}, "search": {}}, "attributes"),
        ({"search": {"q": "x"}}, "attributes"),
        ({"attributes": ["end_date"], "search": {}}, "attributes"),
        ({"attributes": {"": 1}, "search": {}}, "attributes"),
        ({"attributes": {"end_date": object()}, "search": {}}, "attributes"),
        ({"attributes": {"score": math.nan}, "search": {}}, "attributes"),
        ({"status": "", "search": {}}, "status"),
        ({"status": "done", "search": "q_tags=x"}, "search"),
        ({"status": "done", "search": {"q": {1, 2}}}, "search"),
        ({"search": {}, "extra": {"owner": {1, 2}}}, "owner"),
        ({"status": "done"}, "search"),
        ({"status": "done", "search": {}, "all_contracts": True}, "all_contracts"),
        ({"status": "done", "search": {}, "extra": {"search": {}}}, "extra['search']"),
    ],
    ids=[
        "nothing",
        "empty-attributes",
        "search-only",
        "attributes-not-mapping",
        "empty-name",
        "not-json",
        "nan",
        "empty-status",
        "search-not-mapping",
        "search-not-json",
        "extra-not-json",
        "no-search",
        "search-and-all-contracts",
        "extra-names-a-field",
    ],
)
async def test_bulk_update_refuses_bad_input_before_sending(sim, zefort, kwargs, field):
    """Nothing to change, or a value that is not JSON, is a ValidationError naming the field."""
    with pytest.raises(ValidationError) as caught:
        await zefort.bulk_update_contracts(**kwargs)
    assert caught.value.field == field
    assert sim.records.total_requests == 0


@pytest.mark.anyio
async def test_dropped_answer_adopts_the_task_instead_of_posting_again(sim, zefort):
    """The server acted but the answer was lost: the pending task is adopted, one submission."""
    sim.faults.add(Fault("drop_after", vendor="zefort", route=BULK, times=1))
    task = await zefort.bulk_update_contracts(**BODY)
    (submission,) = sim.records.zefort_submissions
    assert task.id == submission.task_id
    assert sim.records.count(method="POST", route=BULK) == 1


@pytest.mark.anyio
async def test_unreadable_answer_adopts_the_task(sim, zefort):
    """A 200 that is not JSON means the server acted: the task is found and adopted."""
    sim.faults.add(Fault("malformed", vendor="zefort", route=BULK, times=1))
    task = await zefort.bulk_update_contracts(**BODY)
    assert [s.task_id for s in sim.records.zefort_submissions] == [task.id]


@pytest.mark.anyio
async def test_dropped_request_is_not_repeated_and_outcome_is_unknown(sim, zefort):
    """Dropped before handling: no task matches, OutcomeUnknownError carries the request."""
    sim.faults.add(Fault("drop_before", vendor="zefort", route=BULK, times=1))
    with pytest.raises(OutcomeUnknownError) as caught:
        await zefort.bulk_update_contracts(**BODY)
    error = caught.value
    assert error.method == "POST"
    assert error.url.endswith(BULK)
    assert error.body == BODY
    assert isinstance(error.__cause__, TransportError)
    assert len(sim.records.zefort_submissions) <= 1
    assert sim.records.count(method="POST", route=BULK) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("status", [500, 502, 504], ids=["500", "502", "504"])
async def test_ambiguous_status_is_not_retried(sim, zefort, status):
    """A 500/502/504 on the POST is never retried blindly; with no task found, outcome unknown."""
    sim.faults.add(Fault("status", status=status, vendor="zefort", route=BULK, times=1))
    with pytest.raises(OutcomeUnknownError):
        await zefort.bulk_update_contracts(**BODY)
    assert sim.records.count(method="POST", route=BULK) == 1
    assert sim.records.zefort_submissions == []


@pytest.mark.anyio
@pytest.mark.parametrize("fault", [{"status": 503}, {"retry_after": 0}], ids=["503", "429"])
async def test_not_acted_on_status_is_retried(sim, zefort, fault):
    """A 429 or 503 proves the server did nothing: the POST is sent again, one task results."""
    sim.faults.add(Fault("status", vendor="zefort", route=BULK, times=1, **fault))
    task = await zefort.bulk_update_contracts(**BODY)
    assert sim.records.count(method="POST", route=BULK) == 2
    assert [s.task_id for s in sim.records.zefort_submissions] == [task.id]


@pytest.mark.anyio
async def test_an_older_identical_task_is_not_adopted_but_the_new_one_is(sim, zefort):
    """After a lost answer, only the matching task absent from the listing read first is ours."""
    older = sim.zefort.submit_bulk_update(BODY)
    sim.faults.add(Fault("drop_after", vendor="zefort", route=BULK, times=1))
    task = await zefort.bulk_update_contracts(**BODY)
    assert sim.records.count(method="POST", route=BULK) == 1
    (submission,) = sim.records.zefort_submissions
    assert task.id == submission.task_id != older.id


@pytest.mark.anyio
async def test_a_proxy_502_never_adopts_an_older_identical_task():
    """A 502 the app never saw: the older identical task is a candidate, never the result."""
    # A clock that stands still keeps the older task pending for the re-read, on any machine.
    async with (
        Simulator(clock=ManualClock()) as sim,
        ZefortClient(
            sim.zefort_api_key, base_url=sim.zefort_url, retry=RetryPolicy.testing(), **FAST
        ) as zefort,
    ):
        older = sim.zefort.submit_bulk_update(BODY)
        sim.faults.add(Fault("proxy", vendor="zefort", route=BULK, times=1))
        with pytest.raises(OutcomeUnknownError) as caught:
            await zefort.bulk_update_contracts(**BODY)
    assert caught.value.candidates == (older.id,)
    assert caught.value.body == BODY
    assert sim.records.count(method="POST", route=BULK) == 1
    assert sim.records.zefort_submissions == []


@pytest.mark.anyio
async def test_a_task_another_call_was_answered_with_is_not_adopted(sim, zefort):
    """Two identical updates at once: the one whose answer is lost does not take the other's."""
    drop = sim.faults.add(Fault("drop_before", vendor="zefort", route=BULK, times=1))
    results: list[object] = []

    async def one() -> None:
        try:
            results.append(await zefort.bulk_update_contracts(**BODY))
        except OutcomeUnknownError as exc:
            results.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(one)
        group.start_soon(one)
    assert sim.faults.fired(drop) == 1
    (submission,) = sim.records.zefort_submissions
    tasks = [r for r in results if isinstance(r, ZefortTask)]
    unknown = [r for r in results if isinstance(r, OutcomeUnknownError)]
    assert [t.id for t in tasks] == [submission.task_id]
    assert len(unknown) == 1
    assert unknown[0].candidates in {(), (submission.task_id,)}


@pytest.mark.anyio
async def test_all_contracts_sends_no_search(sim, zefort):
    """``all_contracts=True`` is the only way to send a bulk update without a search."""
    await zefort.bulk_update_contracts(status="done", all_contracts=True)
    assert sim.records.zefort_submissions[0].body == {"status": "done"}


@pytest.mark.anyio
async def test_a_misspelt_field_is_a_type_error(sim, zefort):
    """A typo such as ``attribute=`` is a TypeError, and nothing is sent."""
    with pytest.raises(TypeError):
        await zefort.bulk_update_contracts(attribute={"x": 1}, search={})  # type: ignore[call-arg]
    assert sim.records.total_requests == 0


# -- tasks -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_get_task_and_acknowledge(sim, zefort):
    """A done task lists its contracts; acknowledging it takes it off the pending list."""
    (task_id,) = make_tasks(sim, 1)
    await anyio.sleep(0.35)
    task = await zefort.get_task(task_id)
    assert task.is_done
    assert task.is_finished
    assert not task.is_failed
    assert task.affected_contracts == ()
    assert not task.is_acknowledged
    acknowledged = await zefort.acknowledge_task(task_id)
    assert acknowledged.is_acknowledged
    assert sim.records.acknowledgements[task_id] == 1
    assert [t.id async for t in zefort.iter_tasks()] == []


@pytest.mark.anyio
async def test_missing_task_is_not_found(zefort):
    """An unknown task id is a NotFoundError, from a read and from a wait."""
    with pytest.raises(NotFoundError):
        await zefort.get_task("task_nope")
    with pytest.raises(NotFoundError):
        await zefort.wait_for_task("task_nope", timeout=5)


@pytest.mark.anyio
@pytest.mark.parametrize("bad", ["", 5, None], ids=["empty", "number", "none"])
async def test_bad_task_id_is_refused(sim, zefort, bad):
    """A task id that is not a non-empty string is refused before any request."""
    with pytest.raises(ValidationError):
        await zefort.get_task(bad)
    with pytest.raises(ValidationError) as caught:
        await zefort.wait_for_task(bad)
    assert caught.value.field == "task_id"
    with pytest.raises(ValidationError) as caught:
        zefort.track_tasks(["task_ok", bad])
    assert caught.value.field == "task_ids[1]"
    assert sim.records.total_requests == 0


@pytest.mark.anyio
async def test_iter_tasks_reads_every_page_once(sim):
    """All pages are read, each once, with the page size the server answered."""
    ids = make_tasks(sim, 30)
    sim.zefort.page_size_max = 7
    async with ZefortClient(sim.zefort_api_key, base_url=sim.zefort_url) as zefort:
        listed = [task.id async for task in zefort.iter_tasks(page_size=100)]
    assert listed == ids
    assert sim.records.count(method="GET", route=TASKS) == 5
    assert {q for r in sim.records.requests for q in r.query if q[0] == "page_size"} == {
        ("page_size", "100")
    }


@pytest.mark.anyio
async def test_iter_tasks_break_leaves_nothing_running(sim, zefort):
    """Breaking out of the listing cancels the pages fetched ahead."""
    make_tasks(sim, 50)
    before = running_tasks()
    async for _ in zefort.iter_tasks(page_size=5):
        break
    await anyio.lowlevel.checkpoint()
    assert running_tasks() == before


@pytest.mark.anyio
async def test_wait_for_task_acknowledges_once(sim, zefort):
    """`wait_for_task` returns the done task, acknowledged exactly once."""
    task = await zefort.bulk_update_contracts(**BODY)
    done = await zefort.wait_for_task(task.id, timeout=5, acknowledge=True)
    assert done.is_done
    assert done.is_acknowledged
    assert done.affected_contracts == ("ct_1KmjVahd4Hg6W7l18c", "ct_1JXncwxR5skmpC4dDB")
    assert sim.records.acknowledgements == {task.id: 1}


@pytest.mark.anyio
async def test_wait_for_task_deadline_names_the_task(sim, zefort):
    """A task still pending at the deadline: JobTimeoutError with it as unfinished."""
    sim.zefort.task_delay = 60.0
    (task_id,) = make_tasks(sim, 1)
    with pytest.raises(JobTimeoutError) as caught:
        await zefort.wait_for_task(task_id, timeout=0.3)
    assert caught.value.unfinished == (task_id,)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "status", ["error", "FAILED", "failure", "Cancelled"], ids=lambda s: s.lower()
)
async def test_failure_statuses_finish_as_failed(sim, zefort, status):
    """Undocumented failure values finish the task as failed, never as done."""
    (task_id,) = make_tasks(sim, 1)
    sim.zefort.fail_task(task_id, status, at_once=True)
    iterator = zefort.track_tasks([task_id], timeout=5)
    (task,) = [task async for task in iterator]
    assert task.is_failed
    assert task.is_finished
    assert not task.is_done
    assert task.backend_status_info == "simulated failure"
    assert iterator.stats.failed == 1


@pytest.mark.anyio
async def test_unknown_status_is_running_warned_once_and_bounded(sim, zefort, caplog):
    """An undocumented status is taken as running, warned about once, and ends at the deadline."""
    sim.zefort.task_delay = 60.0
    ids = make_tasks(sim, 3)
    for task_id in ids:
        sim.zefort.fail_task(task_id, "running", at_once=True)
    with caplog.at_level(logging.WARNING, logger="asyncbulk"), pytest.raises(JobTimeoutError):
        async for _ in zefort.track_tasks(ids, timeout=0.3):
            pass
    warnings = [r for r in caplog.records if "'running'" in r.getMessage()]
    assert len(warnings) == 1
    with caplog.at_level(logging.WARNING, logger="asyncbulk"), pytest.raises(JobTimeoutError):
        await zefort.wait_for_task(ids[0], timeout=0.1)
    assert len([r for r in caplog.records if "'running'" in r.getMessage()]) == 1


# -- tracking many tasks -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_track_tasks_in_finishing_order_with_deadline(sim, zefort):
    """Tasks come out as they finish; at the deadline the unfinished ones are named."""
    ids = make_tasks(sim, 20)
    late = make_tasks_with_delay(sim, 60.0, 2)
    got: list[str] = []
    with pytest.raises(JobTimeoutError) as caught:
        await collect_ids(zefort.track_tasks([*ids, *late], timeout=0.8), got)
    assert sorted(got) == sorted(ids)
    finished = {i: sim.records.task_finished(i) for i in got}
    order = [finished[i].simulated for i in got]
    assert all(b >= a - 0.15 for a, b in itertools.pairwise(order))
    assert sorted(caught.value.unfinished) == sorted(late)


def make_tasks_with_delay(sim: Simulator, delay: float, count: int) -> list[str]:
    previous, sim.zefort.task_delay = sim.zefort.task_delay, delay
    try:
        return make_tasks(sim, count)
    finally:
        sim.zefort.task_delay = previous


async def collect_ids(iterator, got: list[str]) -> None:
    async for task in iterator:
        got.append(task.id)  # noqa: PERF401 -- keeps the ids that came before an error


@pytest.mark.anyio
async def test_thousand_tasks_take_few_requests(sim, zefort):
    """1,000 tasks are followed by sweeping the listing: far fewer requests than polls."""
    sim.zefort.task_delay = (0.1, 1.0)
    ids = make_tasks(sim, 1000)
    iterator = zefort.track_tasks(ids, timeout=20)
    got = [task.id async for task in iterator]
    assert sorted(got) == sorted(ids)
    listing = sim.records.count(method="GET", route=TASKS)
    single = sim.records.count(method="GET", route=TASK)
    # Polling each task every 0.2 s for about a second would take thousands of requests.
    assert listing + single < 100
    assert single <= 10
    assert iterator.stats.requests == listing + single


@pytest.mark.anyio
async def test_task_acknowledged_elsewhere_gets_one_individual_read(sim, zefort):
    """A tracked task missing from the listing is read once on its own and still delivered."""
    ids = make_tasks(sim, 10)
    await anyio.sleep(0.35)
    sim.zefort.acknowledge(ids[3], "done")
    got = [task async for task in zefort.track_tasks(ids, timeout=5, acknowledge=True)]
    assert sorted(t.id for t in got) == sorted(ids)
    reads = [r.path for r in sim.records.requests if r.route == TASK and r.method == "GET"]
    assert reads == [f"/api/tasks/{ids[3]}/"]
    assert sim.records.acknowledgements[ids[3]] == 1  # ours was not needed: it was done


@pytest.mark.anyio
async def test_each_task_acknowledged_exactly_once(sim, zefort):
    """With acknowledge=True every task is yielded as seen, then acknowledged once when taken."""
    ids = make_tasks(sim, 60)
    iterator = zefort.track_tasks(ids, timeout=10, acknowledge=True)
    got = [task async for task in iterator]
    assert len(got) == 60
    assert not any(task.is_acknowledged for task in got)  # yielded before acknowledgement
    assert dict(sim.records.acknowledgements) == dict.fromkeys(ids, 1)
    assert iterator.unacknowledged == ()
    assert iterator.stats.acknowledged == 60
    assert sim.records.count(method="PATCH", route=TASK) == 60


@pytest.mark.anyio
async def test_failed_acknowledgement_does_not_lose_the_task(sim, zefort, caplog):
    """When the acknowledgement fails, the task is yielded unacknowledged and a warning says so."""
    (task_id,) = make_tasks(sim, 1)
    sim.faults.add(Fault("status", status=500, vendor="zefort", method="PATCH"))
    with caplog.at_level(logging.WARNING, logger="asyncbulk"):
        task = await zefort.wait_for_task(task_id, timeout=5, acknowledge=True)
    assert task.is_done
    assert not task.is_acknowledged
    assert any("could not be acknowledged" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_a_stray_429_stalls_no_other_request(sim):
    """One 429 with Retry-After delays its own retry only: other requests go on meanwhile."""
    ids = make_tasks(sim, 40)
    sim.faults.add(Fault("status", vendor="zefort", retry_after=0.6, times=1))
    policy = RetryPolicy(initial_wait=0.01, max_wait=0.02)

    async def read(zefort, n, task_id):
        await anyio.sleep(0.02 * n)
        return await zefort.get_task(task_id)

    async with ZefortClient(
        sim.zefort_api_key, base_url=sim.zefort_url, retry=policy, **FAST
    ) as zefort:
        async with anyio.create_task_group() as tg:
            for n, task_id in enumerate(ids):
                tg.start_soon(read, zefort, n, task_id)
        assert zefort.stats.rate_limited == 1
    (limited,) = [r for r in sim.records.requests if r.status == 429]
    during = [r for r in sim.records.requests if limited.at + 0.05 < r.at < limited.at + 0.55]
    assert len(during) >= 10
    assert sim.records.count(route="/api/tasks/{id}/") == 41


@pytest.mark.anyio
@pytest.mark.parametrize("background", [False, True], ids=["plain", "async-with"])
async def test_leaving_tracking_early_leaves_nothing_running(sim, zefort, background):
    """Breaking out, or a cancel scope around tracking, leaves no task running."""
    ids = make_tasks(sim, 30)
    before = running_tasks()
    if background:
        async with zefort.track_tasks(ids, timeout=10) as iterator:
            async for _ in iterator:
                break
    else:
        async for _ in zefort.track_tasks(ids, timeout=10):
            break
    assert running_tasks() == before
    late = make_tasks_with_delay(sim, 60.0, 3)
    with anyio.move_on_after(0.2) as scope:
        async for _ in zefort.track_tasks(late):
            pass
    assert scope.cancelled_caught
    assert running_tasks() == before
    seen = sim.records.total_requests
    await anyio.sleep(0.2)
    assert sim.records.total_requests == seen


# -- the client itself -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_wrong_key_is_an_authentication_error(sim):
    """Refused credentials surface at once, from a read and from tracking."""
    async with ZefortClient("wrong", base_url=sim.zefort_url, **FAST) as zefort:
        with pytest.raises(AuthenticationError):
            await zefort.get_task("task_x")
        with pytest.raises(AuthenticationError):
            async for _ in zefort.track_tasks(["task_x"], timeout=5):
                pass


@pytest.mark.anyio
@pytest.mark.parametrize(
    "suffix", ["", "/", "/api", "/api/"], ids=["bare", "slash", "api", "api-slash"]
)
async def test_base_url_with_or_without_api_requests_the_documented_paths(sim, suffix):
    """`.../api/` (the vendor's "API base URL") and the bare host both reach /api/..., once."""
    async with ZefortClient(
        sim.zefort_api_key, base_url=sim.zefort_url + suffix, retry=RetryPolicy.testing(), **FAST
    ) as zefort:
        task = await zefort.bulk_update_contracts(**BODY)
        await zefort.wait_for_task(task.id, timeout=10, acknowledge=True)
        [t async for t in zefort.iter_tasks()]
    paths = {r.path for r in sim.records.requests}
    assert paths == {BULK, TASKS, f"/api/tasks/{task.id}/"}
    assert sim.records.count(route=TASK) >= 1


DOCUMENTED_SEARCH = {
    "q": "service",
    "q_main_documents": "service",
    "q_attachments": "annex",
    "q_parties": "Acme",
    "q_notes": "renewal",
    "q_tags": "contracts of service",
    "q_emails": "legal",
    "tags": ["tag_1"],
    "owner": "usr_1",
    "binder": "bnd_1KkRayN40nouuVTujc",
    "recursive": True,
    "language": "en",
    "receive_time": "2023-01-01,2023-12-31",
    "activities_times": "2023-01-01,2023-12-31",
    "pending_activities_times": "2023-01-01,",
    "cover_document_docai_task_status": "done",
    "esign_status": "signed",
    "num_parties": 2,
    "num_attachments": 0,
    "minimal": True,
    "sort": "-receive_time",
}


@pytest.mark.anyio
async def test_every_documented_search_parameter_is_accepted(sim, zefort):
    """A search with every parameter Zefort's reference documents starts a task, body intact."""
    task = await zefort.bulk_update_contracts(status="done", search=DOCUMENTED_SEARCH)
    (submission,) = sim.records.zefort_submissions
    assert submission.body == {"status": "done", "search": DOCUMENTED_SEARCH}
    assert submission.task_id == task.id


def test_client_settings_are_checked():
    """Bad settings are ValidationErrors naming the field; the key never shows in the repr."""
    with pytest.raises(ValidationError, match="api_key"):
        ZefortClient("")
    with pytest.raises(ValidationError, match="base_url"):
        ZefortClient("k", base_url="http://zefort.example.com")
    with pytest.raises(ValidationError, match="tracking"):
        ZefortClient("k", tracking={"min_interval": 1})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="listing_page_size"):
        ZefortClient("k", listing_page_size=0)
    assert "secret-key" not in repr(ZefortClient("secret-key"))


# -- answers the simulator never gives ---------------------------------------------------------


@pytest.fixture
async def odd_server() -> AsyncIterator[tuple[str, dict[str, object]]]:
    """A loopback server answering whatever the test puts in `answers` (by path)."""
    answers: dict[str, object] = {}

    async def handler(request: web.Request) -> web.Response:
        key = request.path_qs if request.path_qs in answers else request.path
        if key not in answers:
            raise AssertionError(f"unexpected request {request.method} {request.path_qs}")
        return web.json_response(answers[key])

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with serve(app) as url:
        yield url, answers


#: A task with every field a string, as the server sends it.
WHOLE_TASK = {
    "id": "t",
    "backend_status": "done",
    "backend_status_info": "",
    "frontend_status": "pending",
    "description": "",
}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "field"),
    [
        ({"id": "", "backend_status": "pending"}, "task.id"),
        ({"backend_status": "pending"}, "task.id"),
        ({"id": "t", "backend_status": 5}, "task.backend_status"),
        ({"id": "t"}, "task.backend_status"),
        ({"id": "t", "backend_status": "done", "details": []}, "task.details"),
        ({"id": "t", "backend_status": "done", "frontend_status": 1}, "task.frontend_status"),
        (["not", "a", "task"], "task"),
        ({**WHOLE_TASK, "id": "  "}, "task.id"),
        ({**WHOLE_TASK, "backend_status": " "}, "task.backend_status"),
    ],
    ids=[
        "empty-id",
        "no-id",
        "status-number",
        "no-status",
        "details-list",
        "frontend",
        "list",
        "blank-id-all-strings",
        "blank-status-all-strings",
    ],
)
async def test_malformed_task_is_a_protocol_error_naming_the_field(odd_server, answer, field):
    """A task answer of the wrong shape is a ProtocolError naming the field, not a KeyError."""
    url, answers = odd_server
    answers["/api/tasks/t/"] = answer
    async with ZefortClient("k", base_url=url, retry=RetryPolicy.testing(attempts=1)) as zefort:
        with pytest.raises(ProtocolError, match=field) as caught:
            await zefort.get_task("t")
    assert caught.value.method == "GET"


@pytest.mark.anyio
async def test_listing_without_counts_follows_pages_by_number(odd_server):
    """A listing with no last_page or count is read page by page while `next` says there is more."""
    url, answers = odd_server
    task = {"id": "t1", "backend_status": "pending", "unknown_field": 1}
    answers["/api/tasks/?page=1&page_size=1000"] = {
        "results": [task],
        "next": "https://elsewhere.example.com/?page=2",
    }
    answers["/api/tasks/?page=2&page_size=1000"] = {"results": [{**task, "id": "t2"}], "next": None}
    async with ZefortClient("k", base_url=url) as zefort:
        listed = [t async for t in zefort.iter_tasks()]
    assert [t.id for t in listed] == ["t1", "t2"]
    assert listed[0].raw["unknown_field"] == 1


@pytest.mark.anyio
async def test_bulk_updates_started_together_share_one_listing_read(sim, zefort):
    """Five bulk updates at once read the pending listing once before sending, not five times."""

    async def one(n: int) -> None:
        await zefort.bulk_update_contracts(status="done", search={"q": f"n{n}"})

    async with anyio.create_task_group() as group:
        for n in range(5):
            group.start_soon(one, n)
    assert sim.records.count(method="GET", route=TASKS) == 1
    assert sim.records.count(method="POST", route=BULK) == 5
