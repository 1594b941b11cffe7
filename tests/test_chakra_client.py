import contextlib
import datetime as dt

import anyio
import pytest
from aiohttp import web
from loopback import leads_simulator, serve

from asyncbulk import (
    IncompleteListingError,
    JobTimeoutError,
    NotFoundError,
    ProtocolError,
    RetryPolicy,
    ServerError,
    SubmissionError,
    TrackingOptions,
    TransportError,
    ValidationError,
)
from asyncbulk.chakra import (
    BackgroundJob,
    BatchError,
    ChakraClient,
    JobEntry,
    ProcessCreate,
    ProcessUpdate,
)
from asyncbulk.testing import Fault, ManualClock, Simulator

pytestmark = pytest.mark.anyio

UPDATE_ROUTE = "/v1/ext/procedure/{procedure}/process"
CREATE_ROUTE = "/v1/ext/procedure/{procedure}/process/bulk-create"
ENTRIES_ROUTE = "/v1/ext/background-job/{job_id}/entries"
JOB_ROUTE = "/v1/ext/background-job/{job_id}"
EXAMPLE_JOB = "19632427-908f-4bf3-a6f5-69b9a0bbfc63"  # 770 entries, ERROR at 1, 7 and 300
BIG_EXAMPLE_JOB = "006af7f9-d5fb-4d1a-8b31-ac6f3a3a1dfc"  # 2,500 entries
LEADS = 300


@pytest.fixture
async def sim():
    async with leads_simulator(LEADS) as simulator:
        yield simulator


@pytest.fixture
async def chakra(sim):
    async with ChakraClient(
        sim.chakra_token,
        base_url=sim.chakra_url,
        retry=RetryPolicy.testing(),
        tracking=TrackingOptions(min_interval=0.01, max_interval=0.05),
    ) as client:
        yield client


def patches(sim):
    return sim.records.count(vendor="chakra", method="PATCH", route=UPDATE_ROUTE)


def entry_requests(sim):
    return [r for r in sim.records.requests if r.route == ENTRIES_ROUTE]


async def read_into(out, iterator):
    """Append every item to `out` as it comes, so a test sees what came before an error."""
    async for item in iterator:
        out.append(item)


async def ids_into(out, iterator):
    """Append every entry id to `out` as it comes."""
    async for entry in iterator:
        out.append(entry.id)


# -- bulk updates --------------------------------------------------------------------------------


async def test_bulk_update_by_id_and_by_key_applies_every_change(sim, chakra):
    """Both identifier kinds and every change field reach the processes."""
    when = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    updates = [
        ProcessUpdate.by_id("pid-0", data={"city": "Goa"}, state="CALLED", assigned_to="a"),
        ProcessUpdate.by_key("lead_id", "L1", status="COMPLETED", next_action_at=when),
        {"lead_id": "L2", "update": {"data": {"n": 2}, "nextActionAt": "1616253910842"}},
        {"id": "pid-3", "isDeleted": True},
    ]
    submission = await chakra.bulk_update_processes("leads", updates)
    assert submission.count == 4
    assert submission.batches == {submission.jobs[0].id: range(4)}
    await submission.wait(timeout=10)
    body = sim.records.chakra_submissions[0].body
    assert body["processes"][1] == {
        "lead_id": "L1",
        "update": {"status": "COMPLETED", "nextActionAt": int(when.timestamp() * 1000)},
    }
    assert body["processes"][2]["update"]["nextActionAt"] == 1616253910842
    zero, one, two = (sim.chakra.process("leads", f"L{i}") for i in range(3))
    assert (zero.data["city"], zero.state, zero.assigned_to) == ("Goa", "CALLED", "a")
    assert one.status == "COMPLETED"
    assert two.data["n"] == 2
    assert sim.chakra.process("leads", "L3") is None


async def test_batches_are_in_input_order_with_their_positions(sim, chakra):
    """A generator is cut into batches; jobs come back in input order with their ranges."""
    seen = []
    submission = await chakra.bulk_update_processes(
        "leads",
        (ProcessUpdate.by_key("lead_id", f"L{i % LEADS}", data={"n": i}) for i in range(2500)),
        batch_size=1000,
        max_batches_in_flight=3,
        on_batch=lambda job, positions: seen.append((job.id, positions)),
    )
    assert [len(r) for r in submission.batches.values()] == [1000, 1000, 500]
    assert list(submission.batches.values()) == [range(1000), range(1000, 2000), range(2000, 2500)]
    assert [job.id for job in submission.jobs] == list(submission.batches)
    assert sorted(seen, key=lambda pair: pair[1].start) == list(submission.batches.items())
    by_job = {s.job_id: s.entries for s in sim.records.chakra_submissions}
    assert [by_job[job.id] for job in submission.jobs] == [1000, 1000, 500]
    assert submission.count == 2500
    assert submission.unsent_from is None


async def test_async_iterable_input_is_streamed(chakra):
    """An async generator of mappings works like any iterable."""

    async def lines():
        for i in range(30):
            yield {"lead_id": f"L{i}", "data": {"n": i}}

    submission = await chakra.bulk_update_processes("leads", lines(), batch_size=7)
    assert list(submission.batches.values())[-1] == range(28, 30)
    jobs = await submission.wait(timeout=10)
    assert all(job.is_finished for job in jobs)
    assert sum(job.status_counts["SUCCESS"] for job in jobs) == 30


@pytest.mark.parametrize(
    ("items", "field"),
    [
        pytest.param([{"lead_id": "L1", "status": "DONE"}], "updates[0].status", id="status"),
        pytest.param([{"status": "OPEN"}], "updates[0].id", id="no-identifier"),
        pytest.param(
            [{"id": "pid-1", "lead_id": "L1", "status": "OPEN"}], "updates[0].id", id="two-ids"
        ),
        pytest.param(
            [*({"id": f"pid-{i}", "state": "S"} for i in range(17)), {"id": "pid-17"}],
            "updates[17].update",
            id="no-change-at-17",
        ),
        pytest.param(
            [{"id": "pid-1", "update": {"nextActionAt": -1}}],
            "updates[0].update.nextActionAt",
            id="negative-time",
        ),
        pytest.param([{"id": "pid-1", "data": {"x": {1, 2}}}], "updates[0].data.x", id="set"),
        pytest.param(["pid-1"], "updates[0]", id="not-a-mapping"),
        pytest.param([None], "updates[0]", id="none"),
    ],
)
async def test_an_invalid_item_in_the_first_batch_sends_nothing(sim, chakra, items, field):
    """Each bad item raises a ValidationError naming its position, and no request is sent."""
    with pytest.raises(ValidationError) as caught:
        await chakra.bulk_update_processes("leads", items, batch_size=100)
    assert caught.value.field == field
    assert sim.records.total_requests == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"procedure": ""}, "procedure", id="empty-procedure"),
        pytest.param({"procedure": 3}, "procedure", id="procedure-not-str"),
        pytest.param({"batch_size": 0}, "batch_size", id="batch-zero"),
        pytest.param({"batch_size": 10_001}, "batch_size", id="batch-too-big"),
        pytest.param({"batch_size": "10"}, "batch_size", id="batch-str"),
        pytest.param({"batch_size": True}, "batch_size", id="batch-bool"),
        pytest.param({"max_batches_in_flight": 0}, "max_batches_in_flight", id="in-flight"),
        pytest.param({"updates": "abc"}, "updates", id="updates-str"),
        pytest.param({"updates": 5}, "updates", id="updates-int"),
    ],
)
async def test_bad_arguments_are_refused_before_any_request(sim, chakra, kwargs, field):
    """Procedure, batch size, concurrency and the input itself are checked first."""
    arguments = {"procedure": "leads", "updates": [ProcessUpdate.by_id("pid-1", state="S")]}
    arguments.update(kwargs)
    procedure = arguments.pop("procedure")
    updates = arguments.pop("updates")
    with pytest.raises(ValidationError) as caught:
        await chakra.bulk_update_processes(procedure, updates, **arguments)
    assert caught.value.field == field
    assert sim.records.total_requests == 0


async def test_an_invalid_item_in_a_later_batch_keeps_what_was_accepted(sim, chakra):
    """Batches before the bad one are kept in a SubmissionError; nothing after is sent."""
    items = [{"id": f"pid-{i}", "state": "S"} for i in range(25)]
    items[23]["status"] = "NOPE"
    with pytest.raises(SubmissionError) as caught:
        await chakra.bulk_update_processes("leads", items, batch_size=10, max_batches_in_flight=1)
    submission = caught.value.submission
    assert list(submission.batches.values()) == [range(10), range(10, 20)]
    assert submission.unsent_from == 20
    (error,) = caught.value.errors
    assert isinstance(error, ValidationError)
    assert error.field == "updates[23].status"
    assert patches(sim) == 2


async def test_a_lost_answer_fails_only_its_batch_and_the_rest_is_sent(sim, chakra):
    """A PATCH whose answer is lost is unknown, not resent, and the batches after it are sent."""

    def drop_the_next(_job, _positions):
        if not sim.faults:
            sim.faults.add(Fault("drop_after", route=UPDATE_ROUTE, method="PATCH", times=1))

    items = [ProcessUpdate.by_id(f"pid-{i}", data={"n": i}) for i in range(50)]
    with pytest.raises(SubmissionError) as caught:
        await chakra.bulk_update_processes(
            "leads", items, batch_size=20, max_batches_in_flight=1, on_batch=drop_the_next
        )
    submission = caught.value.submission
    assert [(b.start, b.stop, b.state) for b in submission.outcomes] == [
        (0, 20, "accepted"),
        (20, 40, "unknown"),
        (40, 50, "accepted"),
    ]
    (error,) = caught.value.errors
    assert isinstance(error, BatchError)
    assert error.positions == range(20, 40)
    assert error.outcome_unknown
    assert isinstance(error.error, TransportError)
    assert caught.value.stopped_by is None
    assert submission.unsent_from is None
    # The server did create the second job: which is why it was not sent again.
    assert patches(sim) == 3
    assert len(sim.records.chakra_submissions) == 3
    assert [u async for u in submission.failed_updates()] == []
    assert list(submission.unknown_updates()) == items[20:40]


async def test_a_500_on_the_only_batch_is_unknown_and_not_retried(sim, chakra):
    """A 500 on the only batch is not retried (not idempotent): its outcome is unknown."""
    sim.faults.add(Fault("status", status=500, route=UPDATE_ROUTE, times=1))
    with pytest.raises(SubmissionError) as caught:
        await chakra.bulk_update_processes("leads", [ProcessUpdate.by_id("pid-1", state="S")])
    assert isinstance(caught.value.__cause__, ServerError)
    assert [b.state for b in caught.value.submission.outcomes] == ["unknown"]
    assert patches(sim) == 1
    assert sim.records.chakra_submissions == []


@pytest.mark.parametrize("status", [429, 503], ids=str)
async def test_statuses_that_did_nothing_are_retried(sim, chakra, status):
    """429 and 503 mean the batch was not acted on: it is sent again, and accepted once."""
    sim.faults.add(Fault("status", status=status, route=UPDATE_ROUTE, times=2))
    submission = await chakra.bulk_update_processes(
        "leads", [ProcessUpdate.by_id("pid-1", state="S")]
    )
    assert patches(sim) == 3
    assert [s.job_id for s in sim.records.chakra_submissions] == [submission.jobs[0].id]


@pytest.mark.parametrize("count", [1, 40], ids=["one batch", "forty batches"])
async def test_an_unknown_procedure_stops_alike_whatever_the_size(sim, chakra, count):
    """A 404 for the procedure stops sending: the same error shape for one batch or forty."""
    items = [ProcessUpdate.by_id(f"pid-{i}", state="S") for i in range(count * 10)]
    with pytest.raises(SubmissionError) as caught:
        await chakra.bulk_update_processes("nope", items, batch_size=10, max_batches_in_flight=1)
    assert isinstance(caught.value.stopped_by, NotFoundError)
    assert isinstance(caught.value.__cause__, NotFoundError)
    submission = caught.value.submission
    assert submission.counts() == {"rejected": 10, **({"not_sent": 390} if count > 1 else {})}
    assert patches(sim) == 1
    expected = f"updates: 0 of {count * 10} accepted (0 jobs), 10 rejected"
    assert str(caught.value).startswith(expected)


# -- creates -------------------------------------------------------------------------------------


async def test_bulk_create_posts_a_bare_array_and_creates_processes(sim, chakra):
    """Records (mappings or ProcessCreate) become processes through one job per batch."""
    records = [
        {"lead_id": "NEW-1", "data": {"city": "Goa"}, "status": "OPEN"},
        ProcessCreate(key=("lead_id", "NEW-2"), state="FRESH", next_action_at="5"),
    ]
    submission = await chakra.bulk_create_processes("leads", records, batch_size=1)
    assert submission.operation == "create"
    assert len(submission.jobs) == 2
    await submission.wait(timeout=10)
    bodies = [s.body for s in sim.records.chakra_submissions]
    assert bodies == [
        [{"lead_id": "NEW-1", "data": {"city": "Goa"}, "status": "OPEN"}],
        [{"lead_id": "NEW-2", "state": "FRESH", "nextActionAt": 5}],
    ]
    assert sim.chakra.process("leads", "NEW-1").data["city"] == "Goa"
    assert sim.chakra.process("leads", "NEW-2").state == "FRESH"
    assert sim.records.count(method="POST", route=CREATE_ROUTE) == 2


async def test_bulk_create_validates_records_before_sending(sim, chakra):
    """A bad record is named by position and nothing is sent."""
    with pytest.raises(ValidationError) as caught:
        await chakra.bulk_create_processes("leads", [{"lead_id": "A"}, {"lead_id": "B", "x": 1}])
    assert caught.value.field == "records[1].lead_id"
    assert sim.records.total_requests == 0


@pytest.fixture
async def bare_server():
    """A loopback Chakra look-alike answering whatever `answers[route]` says."""
    answers = {}

    async def handle(request):
        kind = request.match_info.get("kind", "")
        status, body = answers[request.method, kind]
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_route("*", "/v1/ext/{kind:.*}", handle)
    async with serve(app) as url:
        yield url, answers


@pytest.mark.parametrize(
    "body",
    [{"_data": {}}, {}, {"_data": None}, {"_data": {"id": ""}}],
    ids=["empty", "none", "null", "blank"],
)
async def test_a_create_answer_without_a_job_id_is_accepted_with_no_job(bare_server, body):
    """No ``_data.id`` in a 2xx accepts the batch with no job to follow, and says so."""
    url, answers = bare_server
    answers["POST", "procedure/leads/process/bulk-create"] = (200, body)
    async with ChakraClient("t", base_url=url, retry=RetryPolicy.testing()) as client:
        submission = await client.bulk_create_processes(
            "leads", [{"lead_id": "X"}, {"lead_id": "Y"}], batch_size=1
        )
    assert [(b.state, b.job) for b in submission.outcomes] == [("accepted", None)] * 2
    assert all("names no job" in b.warnings[-1] for b in submission.outcomes)
    assert submission.jobs == ()


# -- jobs ----------------------------------------------------------------------------------------


async def test_get_background_job_reads_times_and_counts(chakra):
    """A finished job has aware datetimes, status counts and is_finished."""
    job = await chakra.get_background_job(EXAMPLE_JOB)
    assert isinstance(job, BackgroundJob)
    assert job.id == EXAMPLE_JOB
    assert job.status_counts == {"SUCCESS": 767, "ERROR": 3}
    assert job.is_finished
    assert not job.is_failed
    assert job.completed_at.tzinfo is dt.UTC
    assert job.raw["team"]


async def test_get_background_job_errors(sim, chakra):
    """An unknown id is NotFoundError; an empty one is refused before any request."""
    with pytest.raises(NotFoundError):
        await chakra.get_background_job("no-such-job")
    with pytest.raises(ValidationError, match="job_id"):
        await chakra.get_background_job(" ")
    assert sim.records.total_requests == 1


async def test_wait_for_job_and_track_jobs_see_jobs_finish(chakra):
    """Waiting returns the finished job; tracking yields each job once."""
    submission = await chakra.bulk_update_processes(
        "leads", [ProcessUpdate.by_id(f"pid-{i}", state="S") for i in range(30)], batch_size=10
    )
    job = await chakra.wait_for_job(submission.jobs[0].id, timeout=10)
    assert job.is_finished
    assert job.status_counts == {"SUCCESS": 10}
    finished = [job.id async for job in chakra.track_jobs(submission.job_ids, timeout=10)]
    assert sorted(finished) == sorted(submission.job_ids)


@pytest.mark.parametrize("shape", ["extended", "documented", "lagging"])
@pytest.mark.parametrize("invalid", [False, True], ids=["valid", "only-invalid"])
async def test_wait_for_job_finishes_on_each_documented_shape(sim, chakra, shape, invalid):
    """Counts only, a status that lags its counts, or the extended shape: each job finishes."""
    sim.chakra.job_shape = shape
    items = [
        ProcessUpdate.by_id("no-such-process" if invalid else f"pid-{i}", state="S")
        for i in range(50)
    ]
    submission = await chakra.bulk_update_processes("leads", items, batch_size=50)
    job = await chakra.wait_for_job(submission.jobs[0].id, timeout=10)
    assert job.is_finished
    assert job.status_counts == ({"INVALID": 50} if invalid else {"SUCCESS": 50})
    polled = sim.records.count(route=JOB_ROUTE)
    assert polled >= 1
    if shape == "documented":
        assert "completionStatus" not in job.raw
        assert "completedAt" not in job.raw
    if shape != "extended":
        assert job.raw["type"] == "bulk_api_job"
        assert job.completed_at is None
    if shape == "lagging":
        assert job.completion_status == "IN_PROGRESS"


async def test_a_lagging_job_is_not_finished_while_its_counts_run():
    """IN_PROGRESS with completedAt 0 and counts still running: the wait times out."""
    async with (
        Simulator(chakra_entries_per_second=5.0) as slow,
        ChakraClient(
            slow.chakra_token,
            base_url=slow.chakra_url,
            tracking=TrackingOptions(min_interval=0.01, max_interval=0.05),
        ) as client,
    ):
        slow.chakra.job_shape = "lagging"
        items = [ProcessUpdate.by_key("lead_id", "LEAD-001", state=f"S{i}") for i in range(100)]
        submission = await client.bulk_update_processes("tele_sales", items, batch_size=100)
        with pytest.raises(JobTimeoutError):
            await client.wait_for_job(submission.jobs[0].id, timeout=0.3)
        job = await client.get_background_job(submission.jobs[0].id)
        assert job.completion_status == "IN_PROGRESS"
        assert set(job.status_counts) & {"NOT_STARTED", "IN_PROGRESS"}
        assert not job.is_finished


async def test_waits_have_deadlines():
    """A job that does not finish in time raises JobTimeoutError naming it."""
    async with (
        Simulator(chakra_entries_per_second=1.0) as slow,
        ChakraClient(
            slow.chakra_token,
            base_url=slow.chakra_url,
            tracking=TrackingOptions(min_interval=0.01, max_interval=0.05),
        ) as client,
    ):
        submission = await client.bulk_update_processes(
            "tele_sales", [ProcessUpdate.by_key("lead_id", "LEAD-001", state="S")] * 20
        )
        with pytest.raises(JobTimeoutError) as caught:
            await client.wait_for_job(submission.jobs[0].id, timeout=0.2)
        assert caught.value.unfinished == submission.job_ids
        with pytest.raises(JobTimeoutError):
            await submission.wait(timeout=0.2)


async def test_track_jobs_refuses_an_empty_id_by_position(chakra):
    """Ids are checked before any polling."""
    with pytest.raises(ValidationError) as caught:
        chakra.track_jobs([EXAMPLE_JOB, ""])
    assert caught.value.field == "job_ids[1]"


# -- entries -------------------------------------------------------------------------------------


async def test_entries_of_the_documented_job(sim, chakra):
    """770 entries in order, 8 pages read concurrently, raw fields kept."""
    entries = [e async for e in chakra.iter_job_entries(EXAMPLE_JOB)]
    assert len(entries) == 770
    assert len({e.id for e in entries}) == 770
    assert entries[0].id == "e9bc853c-0af7-414c-bc7b-ccc7a40aa510"
    assert entries[1].completion_status == "ERROR"
    assert isinstance(entries[0], JobEntry)
    assert entries[0].raw["createdBy"]
    skips = sorted(int(dict(r.query)["skip"]) for r in entry_requests(sim))
    assert skips == [i * 100 for i in range(8)]
    assert all(dict(r.query)["limit"] == "100" for r in entry_requests(sim))


async def test_entries_filtered_by_status(chakra):
    """A filter reads only the matching entries."""
    errors = [e async for e in chakra.iter_job_entries(EXAMPLE_JOB, completion_status="ERROR")]
    assert [e.completion_status for e in errors] == ["ERROR"] * 3


@pytest.mark.parametrize(
    ("count", "requests"),
    [
        pytest.param(0, 1, id="filter-with-no-match"),
        pytest.param(100, 2, id="exactly-100"),
        pytest.param(101, 2, id="101"),
        pytest.param(250, 3, id="250"),
    ],
)
async def test_page_edges(sim, chakra, count, requests):
    """Empty, exactly one full page, one more, and a partial last page."""
    items = [ProcessUpdate.by_id(f"pid-{i % LEADS}", state="S") for i in range(max(count, 1))]
    submission = await chakra.bulk_update_processes("leads", items, batch_size=max(count, 1))
    (job,) = await submission.wait(timeout=10)
    status = "SUCCESS" if count else "ERROR"
    entries = [e async for e in chakra.iter_job_entries(job.id, completion_status=status)]
    assert len(entries) == count
    assert len(entry_requests(sim)) == requests


async def test_pages_come_in_order_whatever_order_they_arrive_in(sim, chakra):
    """With random latency per page, prefetching yields the same order as reading one by one."""
    sim.faults.add(Fault("latency", delay=(0.0, 0.02), route=ENTRIES_ROUTE))
    one_by_one = [e.id async for e in chakra.iter_job_entries(BIG_EXAMPLE_JOB, prefetch=1)]
    ahead = [e.id async for e in chakra.iter_job_entries(BIG_EXAMPLE_JOB, prefetch=8)]
    assert ahead == one_by_one
    assert len(ahead) == 2500


async def test_page_level_iteration_and_small_pages(chakra):
    """The page variant yields lists of page_size entries."""
    pages = [p async for p in chakra.iter_job_entry_pages(EXAMPLE_JOB, page_size=50)]
    assert [len(p) for p in pages] == [50] * 15 + [20]


async def test_a_running_job_listing_yields_each_entry_at_most_once():
    """A filtered listing that shifts while the job runs never repeats an entry."""
    async with (
        Simulator(chakra_entries_per_second=2000) as running,
        ChakraClient(running.chakra_token, base_url=running.chakra_url) as client,
    ):
        running.faults.add(Fault("latency", delay=0.01, route=ENTRIES_ROUTE))
        items = [ProcessUpdate.by_key("lead_id", "LEAD-001", state=f"S{i}") for i in range(1500)]
        submission = await client.bulk_update_processes("tele_sales", items, batch_size=1500)
        job_id = submission.jobs[0].id
        for status in ("NOT_STARTED", "SUCCESS", None):
            seen = [
                e.id
                async for e in client.iter_job_entries(
                    job_id, completion_status=status, page_size=20, prefetch=2
                )
            ]
            assert len(seen) == len(set(seen))


async def test_a_short_page_mid_way_is_read_on_at_the_next_offset(sim, chakra):
    """97 entries instead of 100 at skip 1200: the 3 missing are read at 1297, none lost."""
    sim.chakra.short_page(1200, keep=97)
    ids = [e.id async for e in chakra.iter_job_entries(BIG_EXAMPLE_JOB, prefetch=8)]
    assert ids == [e.id async for e in chakra.iter_job_entries(BIG_EXAMPLE_JOB)]
    assert len(ids) == len(set(ids)) == 2500
    reads = [dict(r.query) for r in entry_requests(sim)]
    assert {"skip": "1297", "limit": "3"} in reads


async def test_an_empty_page_mid_way_is_read_again_once(sim, chakra):
    """An empty page at skip 1200 before the total of 2,500 is read again, and nothing lost."""
    sim.chakra.short_page(1200, keep=0, times=1)
    ids = [e.id async for e in chakra.iter_job_entries(BIG_EXAMPLE_JOB, prefetch=8)]
    assert len(ids) == len(set(ids)) == 2500
    skips = [dict(r.query)["skip"] for r in entry_requests(sim)]
    assert skips.count("1200") == 2


async def test_a_page_that_stays_empty_raises_after_every_entry_before_it(sim, chakra):
    """A page still empty when read again raises IncompleteListingError with read, total, offset."""
    sim.chakra.short_page(1200, keep=0, times=None)
    ids = []
    with pytest.raises(IncompleteListingError) as caught:
        await ids_into(ids, chakra.iter_job_entries(BIG_EXAMPLE_JOB, prefetch=8))
    assert len(ids) == len(set(ids)) == 1200
    error = caught.value
    assert (error.read, error.total, error.offset) == (1200, 2500, 1200)
    assert isinstance(error, ProtocolError)
    assert "1200 of 2500" in str(error)
    assert chakra._session._limiter.used == 0


async def test_a_short_page_that_cannot_be_completed_yields_what_it_has_then_raises(sim, chakra):
    """97 entries at skip 1200 and nothing from 1297: the 97 come, then the error names 1297."""
    sim.chakra.short_page(1200, keep=97, times=None)
    sim.chakra.short_page(1297, keep=0, times=None)
    pages = []
    with pytest.raises(IncompleteListingError) as caught:
        await read_into(pages, chakra.iter_job_entry_pages(BIG_EXAMPLE_JOB, prefetch=4))
    assert [len(page) for page in pages] == [100] * 12 + [97]
    assert (caught.value.read, caught.value.offset) == (1297, 1297)


def big_job(sim, count):
    """A job of `count` entries made straight in the simulator's state (no HTTP)."""
    items = [{"id": f"pid-{i % LEADS}", "update": {"state": "S"}} for i in range(count)]
    return sim.chakra.submit_update(sim.chakra.procedures["leads"], items).id


async def test_a_finished_job_streams_each_id_once_without_keeping_them_all(sim, chakra):
    """Past 10,000 ids the job is asked once; finished, later pages' ids are checked, not kept."""
    job_id = big_job(sim, 25_000)
    await chakra.wait_for_job(job_id, timeout=10)
    polls = sim.records.count(route=JOB_ROUTE)
    async with chakra.iter_job_entry_pages(job_id) as pages:
        ids = [e.id for page in [p async for p in pages] for e in page]
        kept = pages._seen.kept
    assert len(ids) == len(set(ids)) == 25_000
    assert ids == [sim.chakra.jobs[job_id].entry_id(i) for i in range(25_000)]
    assert sim.records.count(route=JOB_ROUTE) == polls + 1
    assert kept <= 10_000 + 17 * 100  # what was read before the answer, and the pages in flight


async def test_a_running_job_keeps_every_id_as_16_bytes():
    """While the job runs, every id is kept past 10,000, as the UUID's 16 bytes."""
    async with (
        Simulator(clock=ManualClock()) as running,
        ChakraClient(running.chakra_token, base_url=running.chakra_url) as client,
    ):
        running.chakra.add_procedure("leads", primary_key="lead_id")
        running.chakra.add_process("leads", {"lead_id": "L0"}, id="pid-0")
        items = [{"id": "pid-0", "update": {"state": f"S{i}"}} for i in range(12_000)]
        job_id = running.chakra.submit_update(running.chakra.procedures["leads"], items).id
        async with client.iter_job_entry_pages(job_id) as pages:
            ids = [e.id for page in [p async for p in pages] for e in page]
            seen = pages._seen
        assert len(ids) == len(set(ids)) == 12_000
        assert seen.kept == 12_000
        assert seen.compacted
        assert all(type(key) is bytes and len(key) == 16 for key in seen.compacted)
        assert not (await client.get_background_job(job_id)).is_finished


async def test_a_finished_job_answering_more_than_asked_still_yields_each_id_once():
    """A server whose pages overlap (limit + 5 entries) past the check yields no id twice."""
    size = 12_500

    async def handle(request):
        if not request.path.endswith("/entries"):
            body = {
                "_data": {"id": "j"},
                "_meta": {"bjEntryCompletionStatusVsCount": {"SUCCESS": size}},
            }
            return web.json_response(body)
        skip = int(request.query["skip"])
        limit = int(request.query["limit"]) + 5
        data = [{"id": f"e{i}"} for i in range(skip, min(size, skip + limit))]
        return web.json_response({"_data": data, "_meta": {"total": size}})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    async with serve(app) as url, ChakraClient("t", base_url=url) as client:
        ids = [e.id async for e in client.iter_job_entries("j")]
    assert ids == [f"e{i}" for i in range(size)]


def uuid_of(i):
    """The UUID text of entry `i`."""
    return f"{i:08x}-0000-4000-8000-{i:012x}"


def finished_listing(size, pages, *, status="COMPLETED", entry_id="e{}".format):
    """A job of `size` entries (finished) whose page at a skip in `pages` is answered otherwise.

    `pages` maps a skip to a function of the entries asked for, giving the entries answered
    (the first time only); every answer is recorded as ``(skip, limit)`` in the list returned.
    """
    reads = []
    altered = dict(pages)

    async def handle(request):
        if not request.path.endswith("/entries"):
            counts = {"SUCCESS": size} if status == "COMPLETED" else {"IN_PROGRESS": size}
            meta = {"bjEntryCompletionStatusVsCount": counts}
            body = {"_data": {"id": "j", "completionStatus": status}, "_meta": meta}
            return web.json_response(body)
        skip, limit = int(request.query["skip"]), int(request.query["limit"])
        reads.append((skip, limit))
        data = [{"id": entry_id(i)} for i in range(skip, min(size, skip + limit))]
        if skip in altered:
            data = altered.pop(skip)(data)
        return web.json_response({"_data": data, "_meta": {"total": size}})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app, reads


async def read_pages(app: web.Application) -> tuple[list[str], object]:
    """Every entry id of job ``j`` served by ``app``, read by pages, and the ids kept."""
    async with (
        serve(app) as url,
        ChakraClient("t", base_url=url) as client,
        client.iter_job_entry_pages("j") as pages,
    ):
        return [e.id async for page in pages for e in page], pages._seen


async def test_a_finished_job_that_answers_a_page_short_keeps_every_id_from_there():
    """A short page past the check shows the listing moving: a later repeat is yielded once."""
    size = 15_000
    app, reads = finished_listing(
        size,
        {12_000: lambda data: data[:97], 13_500: lambda data: [*data, {"id": "e12050"}]},
    )
    ids, seen = await read_pages(app)
    assert ids == [f"e{i}" for i in range(size)]
    assert (12_097, 3) in reads
    assert "e12050" in seen.compacted
    assert seen.kept <= 10_000 + 17 * 100 + 3_000


async def test_a_finished_job_that_repeats_an_entry_keeps_every_id_from_there():
    """An id repeated on the next page past the check, then again 9 pages on: yielded once."""
    size = 15_000
    app, _reads = finished_listing(
        size,
        {
            12_100: lambda data: [*data, {"id": "e12050"}],
            13_000: lambda data: [{"id": "e12150"}, *data],
        },
    )
    async with serve(app) as url, ChakraClient("t", base_url=url) as client:
        ids = [e.id async for e in client.iter_job_entries("j")]
    assert ids == [f"e{i}" for i in range(size)]


async def test_a_running_job_that_repeats_an_entry_far_on_yields_it_once():
    """A running job's ids kept as 16 bytes: an id repeated 15 pages on, and a short page."""
    size = 13_000
    app, reads = finished_listing(
        size,
        {
            11_000: lambda data: data[:40],
            12_500: lambda data: [*data, {"id": uuid_of(11_020)}],
        },
        status="IN_PROGRESS",
        entry_id=uuid_of,
    )
    ids, seen = await read_pages(app)
    assert ids == [uuid_of(i) for i in range(size)]
    assert (11_040, 60) in reads
    assert seen.kept == size
    assert bytes.fromhex(uuid_of(11_020).replace("-", "")) in seen.compacted
    assert all(type(key) is bytes and len(key) == 16 for key in seen.compacted)


async def test_a_finished_job_that_behaves_keeps_no_more_ids_once_asked():
    """A finished listing read to the end keeps no id past those read before the check."""
    size = 30_000
    app, _reads = finished_listing(size, {})
    kept = []
    count = 0
    async with (
        serve(app) as url,
        ChakraClient("t", base_url=url) as client,
        client.iter_job_entry_pages("j") as pages,
    ):
        async for page in pages:
            count += len(page)
            kept.append(pages._seen.kept)
    assert count == size
    assert kept[-1] == kept[len(kept) // 2] <= 10_000 + 17 * 100


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"page_size": 0}, "page_size", id="page-zero"),
        pytest.param({"page_size": 101}, "page_size", id="page-101"),
        pytest.param({"page_size": 1.0}, "page_size", id="page-float"),
        pytest.param({"completion_status": "success"}, "completion_status", id="status"),
        pytest.param({"prefetch": 0}, "prefetch", id="prefetch"),
        pytest.param({"job_id": ""}, "job_id", id="job-id"),
    ],
)
async def test_entry_arguments_are_checked_before_any_request(sim, chakra, kwargs, field):
    """Page size 1..100, a documented status, prefetch >= 1 and an id."""
    arguments = {"job_id": EXAMPLE_JOB, **kwargs}
    with pytest.raises(ValidationError) as caught:
        chakra.iter_job_entries(arguments.pop("job_id"), **arguments)
    assert caught.value.field == field
    assert sim.records.total_requests == 0


def lying_listing(size, *, total, shift=0, ignore_skip=False):
    """Answers for a listing of `size` entries that claims `total` and shifts by `shift`."""
    calls = []

    async def handle(request):
        skip = int(request.query.get("skip", 0))
        limit = int(request.query.get("limit", 100))
        calls.append(skip)
        if ignore_skip:
            skip = 0
        elif len(calls) > 1:
            skip = max(0, skip - shift)
        data = [{"id": f"e{i}"} for i in range(skip, min(size, skip + limit))]
        meta = {"next": "bogus"} if total is None else {"total": total, "next": "bogus"}
        return web.json_response({"_data": data, "_meta": meta})

    return handle, calls


@pytest.fixture
async def listing_server():
    """A loopback server whose entries listing a test replaces."""
    holder = {}

    async def handle(request):
        return await holder["handler"](request)

    app = web.Application()
    app.router.add_get("/v1/ext/background-job/{job}/entries", handle)
    async with (
        serve(app) as url,
        ChakraClient("t", base_url=url, retry=RetryPolicy.testing()) as client,
    ):
        yield client, holder


@pytest.mark.parametrize(
    ("listing", "expected", "incomplete"),
    [
        pytest.param({"size": 250, "total": 10_000}, 250, (250, 10_000, 250), id="total-too-large"),
        pytest.param({"size": 450, "total": 30}, 450, None, id="total-too-small"),
        pytest.param({"size": 300, "total": None}, 300, None, id="no-total-read-on"),
        pytest.param({"size": 500, "total": 500, "shift": 7}, 500, None, id="listing-shifts-back"),
        pytest.param(
            {"size": 500, "total": 500, "ignore_skip": True},
            100,
            (100, 500, 100),
            id="ignores-skip",
        ),
        pytest.param(
            {"size": 500, "total": 50, "ignore_skip": True}, 100, None, id="ignores-and-lies"
        ),
    ],
)
async def test_lying_totals_and_shifting_listings_end_with_each_id_once(
    listing_server, listing, expected, incomplete
):
    """Whatever `_meta.total` claims, the listing ends, no id comes twice, and short is said."""
    client, holder = listing_server
    holder["handler"], calls = lying_listing(**listing)
    ids = []
    with pytest.raises(IncompleteListingError) if incomplete else contextlib.nullcontext() as got:
        await ids_into(ids, client.iter_job_entries("j", prefetch=4))
    assert len(ids) == len(set(ids)) == expected
    assert len(calls) < 30
    if incomplete:
        assert (got.value.read, got.value.total, got.value.offset) == incomplete


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({"_data": {"id": "x"}}, "_data is not a list", id="not-list"),
        pytest.param({"_data": [{"id": "a"}, {"x": 1}]}, r"_data\[1\]\.id", id="entry-no-id"),
        pytest.param({"_data": [], "_meta": {"total": "many"}}, "_meta.total", id="total"),
    ],
)
async def test_malformed_listings_are_protocol_errors(listing_server, body, message):
    """A listing that is not what the API promises names the field, never a KeyError."""
    client, holder = listing_server

    async def handle(_request):
        return web.json_response(body)

    holder["handler"] = handle
    with pytest.raises(ProtocolError, match=message):
        async for _entry in client.iter_job_entries("j"):
            pass


async def test_breaking_out_stops_the_fetches_ahead(sim, chakra):
    """After `break`, no entries request is left running."""
    sim.faults.add(Fault("latency", delay=0.3, route=ENTRIES_ROUTE))
    async for _entry in chakra.iter_job_entries(BIG_EXAMPLE_JOB, prefetch=8):
        await anyio.sleep(0.05)
        assert chakra._session._limiter.used == 8
        break
    await anyio.sleep(0.05)
    assert chakra._session._limiter.used == 0


async def test_closing_the_client_stops_open_iterators(sim, chakra):
    """aclose() on the client cancels the fetches of an iterator still held."""
    sim.faults.add(Fault("latency", delay=0.3, route=ENTRIES_ROUTE))
    pages = chakra.iter_job_entry_pages(BIG_EXAMPLE_JOB, prefetch=8)
    with anyio.move_on_after(1):
        await pages.__anext__()
    await chakra.aclose()
    assert chakra._session._limiter.used == 0
    with pytest.raises(StopAsyncIteration):
        await pages.__anext__()


# -- summaries and resubmission ------------------------------------------------------------------


async def test_summary_and_resubmitting_exactly_the_failures():
    """Failed entries are summarised with their batch positions and resent, and only they."""
    async with (
        Simulator(chakra_entries_per_second=100_000, chakra_error_rate=0.2, seed=3) as sim,
        ChakraClient(
            sim.chakra_token,
            base_url=sim.chakra_url,
            retry=RetryPolicy.testing(),
            tracking=TrackingOptions(min_interval=0.01, max_interval=0.05),
        ) as client,
    ):
        sim.chakra.add_procedure("leads", primary_key="lead_id", attributes=["n"])
        for i in range(400):
            sim.chakra.add_process("leads", {"lead_id": f"L{i}"}, id=f"pid-{i}")
        items = [ProcessUpdate.by_key("lead_id", f"L{i}", data={"n": i}) for i in range(400)]
        items.append(ProcessUpdate.by_key("lead_id", "GHOST", data={"n": 0}))
        submission = await client.bulk_update_processes("leads", items, batch_size=150)
        await submission.wait(timeout=10)
        summary = await submission.summary()
        assert summary.finished
        assert sum(summary.counts.values()) == 401
        assert summary.counts["INVALID"] == 1
        (ghost,) = summary.invalid
        assert ghost.positions == range(300, 401)
        assert "GHOST" in ghost.message
        assert len(summary.failed) == summary.counts["ERROR"] > 0
        assert all(f.entry.completion_message for f in summary.failed)
        failed_ids = {f.entry.process_id for f in summary.failed}
        for failure in summary.failed:
            assert submission.batches[failure.job_id] == failure.positions

        retry = await client.bulk_update_processes("leads", submission.failed_updates())
        assert retry.count == len(failed_ids)
        resent = [item for s in sim.records.chakra_submissions[-1:] for item in s.body["processes"]]
        assert {item["id"] for item in resent} == failed_ids
        assert all(item["update"]["data"]["n"] == int(item["id"][4:]) for item in resent)
        assert not [u async for u in submission.failed_updates(include_invalid=True)][-1].key


async def test_failed_updates_is_for_update_submissions(chakra):
    """A create submission has no updates to rebuild."""
    submission = await chakra.bulk_create_processes("leads", [{"lead_id": "Z1"}])
    with pytest.raises(ValidationError, match="bulk-update"):
        submission.failed_updates()


# -- the client itself ---------------------------------------------------------------------------


def test_the_token_never_shows():
    """Neither repr nor errors show the token; settings are checked at construction."""
    client = ChakraClient("s3cret-token", base_url="http://127.0.0.1:1")
    assert "s3cret" not in repr(client)
    with pytest.raises(ValidationError, match="token"):
        ChakraClient("")
    with pytest.raises(ValidationError, match="base_url"):
        ChakraClient("t", base_url="http://api.chakrahq.com")
    with pytest.raises(ValidationError, match="max_batches_in_flight"):
        ChakraClient("t", max_batches_in_flight=0)
