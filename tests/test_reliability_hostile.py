"""Hostile and malformed answers: a handled value or a ProtocolError, never a crash or a hang.

A small aiohttp server on loopback answers every request with a status, content type and body
drawn by hypothesis: nearly-right bodies for each endpoint the clients read (fields dropped,
nulled, of the wrong type, huge, extra), arbitrary JSON, HTML error pages, empty bodies, garbage.
Every client call must end, within a hard limit, with a value or an `AsyncBulkError`; never
KeyError, TypeError, AttributeError, a ValueError of another library, or a hang.

Listings that lie are covered too: a ``_meta.total`` or ``last_page`` larger or smaller than the
real listing neither loops forever nor drops entries silently, and a ``next`` link to another
host is never followed (a second, "evil" server proves it saw nothing).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest
from aiohttp import web
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from loopback import serve

from asyncbulk import (
    AsyncBulkError,
    IncompleteListingError,
    JobTimeoutError,
    ProtocolError,
    RetryPolicy,
    TrackingOptions,
)
from asyncbulk.chakra import ChakraClient
from asyncbulk.zefort import ZefortClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

pytestmark = pytest.mark.anyio

LIMIT = 5.0
CHECKS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@attrs.define
class Answer:
    """What the server answers next."""

    status: int = 200
    body: bytes = b"{}"
    content_type: str | None = "application/json"
    headers: dict[str, str] = attrs.Factory(dict)


@attrs.define
class Server:
    """A loopback server whose answers a test sets, and the requests it saw."""

    url: str = ""
    answer: Answer = attrs.Factory(Answer)
    route: Callable[[web.Request], web.Response] | None = None
    seen: list[str] = attrs.Factory(list)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(request.path_qs)
        if self.route is not None:
            return self.route(request)
        answer = self.answer
        response = web.Response(status=answer.status, body=answer.body, headers=answer.headers)
        if answer.content_type is not None:
            response.content_type = answer.content_type
        return response


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    made = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", made.handle)
    async with serve(app) as made.url:
        yield made


evil = server


# -- strategies ---------------------------------------------------------------------------------

HUGE_INTS = st.sampled_from([2**63, -(2**63) - 1, 10**30, -1, 0, 2**31])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    HUGE_INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", "x" * 100_000, "IN_PROGRESS", "SUCCESS", "pending", "done", "12345"]),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def nearly(template: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A template whose fields are kept, dropped or replaced, plus extra fields."""

    def field(value: Any) -> st.SearchStrategy[Any]:
        if isinstance(value, dict):
            return st.one_of(st.just(value), nearly(value), JSON)
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return st.one_of(st.just(value), st.lists(nearly(value[0]), max_size=3), JSON)
        return st.one_of(st.just(value), JSON)

    keys = list(template)
    return st.builds(
        lambda kept, values, extra: {**extra, **{k: v for k, v in values.items() if k in kept}},
        st.sets(st.sampled_from(keys)) if keys else st.just(set()),
        st.fixed_dictionaries({k: field(v) for k, v in template.items()}),
        st.dictionaries(st.text(max_size=6), JSON, max_size=2),
    )


JOB = {
    "id": "9d2c3a6e-0000-4000-8000-000000000001",
    "createdAt": 1700000000000,
    "updatedAt": 1700000000000,
    "completionStatus": "IN_PROGRESS",
    "statusMessage": None,
    "startedAt": 1700000000000,
    "completedAt": 0,
    "team": "t",
    "type": "y",
}
ENTRY = {
    "id": "e-1",
    "createdAt": 1700000000000,
    "updatedAt": 1700000000000,
    "data": {
        "apiData": {"processId": "p", "procedureId": "q", "processUpdate": {"status": "OPEN"}},
        "apiType": "process:ext-update",
    },
    "validationStatus": "VALID",
    "validationMessage": None,
    "completionStatus": "SUCCESS",
    "completionMessage": None,
}
CHAKRA_BODIES = st.one_of(
    nearly({"_data": JOB, "_meta": {"bjEntryCompletionStatusVsCount": {"SUCCESS": 1}}}),
    nearly({"_data": [ENTRY, {**ENTRY, "id": "e-2"}], "_meta": {"total": 2, "next": None}}),
    nearly({"_data": JOB, "_errors": ["boom"]}),
)
TASK = {
    "id": "task_1JgdgKhoZqSWVUIzgL",
    "details": {"query_params": {}, "data": {"status": "done", "search": {}}},
    "backend_status": "pending",
    "backend_status_info": "",
    "frontend_status": "pending",
    "description": "Contract Bulk operation",
}
ZEFORT_BODIES = st.one_of(
    nearly(TASK),
    nearly({**TASK, "backend_status": "done", "details": {"data": {"contracts": ["ct_1"]}}}),
    nearly(
        {
            "page_size": 24,
            "page": 1,
            "last_page": 1,
            "count": 1,
            "next": None,
            "previous": None,
            "results": [TASK],
        }
    ),
    st.lists(nearly(TASK), max_size=3),
)
NOT_JSON = st.one_of(
    st.just(b""),
    st.just(b"   "),
    st.just(b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"),
    st.just(b'{"_data": {"id": "x"'),
    st.just(b"null"),
    st.just(b"NaN"),
    st.just(b"\xff\xfe\x00garbage"),
    st.binary(max_size=64),
)
STATUSES = st.sampled_from(
    [200, 200, 200, 201, 202, 204, 400, 401, 403, 404, 409, 429, 500, 502, 503]
)
CONTENT_TYPES = st.sampled_from(["application/json", "text/html", "text/plain", None])


def answers(bodies: st.SearchStrategy[Any]) -> st.SearchStrategy[Answer]:
    encoded = st.one_of(
        bodies.map(lambda b: json.dumps(b).encode()),
        JSON.map(lambda b: json.dumps(b).encode()),
        NOT_JSON,
    )
    return st.builds(
        lambda status, body, content_type, retry_after: Answer(
            status=status,
            body=b"" if status == 204 else body,  # a 204 has no body
            content_type=content_type,
            headers={"Retry-After": retry_after} if retry_after is not None else {},
        ),
        STATUSES,
        encoded,
        CONTENT_TYPES,
        st.one_of(st.none(), st.sampled_from(["0", "-5", "abc", "1e400", "nan"])),
    )


# -- the calls ----------------------------------------------------------------------------------

NO_RETRY = RetryPolicy.testing(attempts=2)


async def survive(call: Callable[[], Awaitable[object]]) -> object:
    """Run one client call: a value or an AsyncBulkError is fine; anything else fails."""
    try:
        with anyio.fail_after(LIMIT):
            return await call()
    except AsyncBulkError as exc:
        return exc
    except TimeoutError:  # pragma: no cover -- the failure being looked for
        pytest.fail(f"{call} hung for {LIMIT} s")


async def drain(iterator: Any, out: list[Any] | None = None, cap: int = 10_000) -> list[Any]:
    out = [] if out is None else out
    async with iterator:
        async for item in iterator:
            out.append(item)
            assert len(out) <= cap, "the listing never ends"
    return out


ENTRY_FIELDS = (
    "completion_status",
    "completion_message",
    "validation_status",
    "validation_message",
    "process_id",
    "procedure_id",
    "process_update",
    "api_type",
    "created_at",
    "updated_at",
)


def read_every_field(entry: Any) -> None:
    """Read each field of a lazily built entry: a value of its type, or a ProtocolError."""
    try:
        values = [getattr(entry, name) for name in ENTRY_FIELDS]
    except ProtocolError:
        return
    assert all(v is None or isinstance(v, str | dict | dt.datetime) for v in values)
    assert entry == entry  # noqa: PLR0124 -- equality reads every field too
    hash(entry)


@given(answer=answers(CHAKRA_BODIES))
@CHECKS
async def test_chakra_survives_any_answer(server, answer):
    """Any status, content type or body gives Chakra calls a value or an AsyncBulkError."""
    server.answer = answer
    async with ChakraClient(
        "chakra-test-token",
        base_url=server.url,
        retry=NO_RETRY,
        tracking=TrackingOptions(min_interval=0.01, max_interval=0.02),
    ) as chakra:
        job = await survive(lambda: chakra.get_background_job("j"))
        if not isinstance(job, AsyncBulkError):
            assert isinstance(job.id, str)
            assert isinstance(job.is_finished, bool)
            assert all(isinstance(n, int) for n in job.status_counts.values())
        await survive(lambda: chakra.bulk_update_processes("p", [{"id": "x", "status": "OPEN"}]))
        entries = await survive(
            lambda: drain(chakra.iter_job_entries("j", page_size=2, prefetch=2))
        )
        if isinstance(entries, list):
            assert len({e.id for e in entries}) == len(entries)
            for entry in entries:
                read_every_field(entry)
        await survive(lambda: chakra.wait_for_job("j", timeout=0.05))


@given(answer=answers(ZEFORT_BODIES))
@example(answer=Answer(body=b'[{"id": []}]'))  # an unhashable id once crashed the sweep
@CHECKS
async def test_zefort_survives_any_answer(server, answer):
    """Any status, content type or body gives Zefort calls a value or an AsyncBulkError."""
    server.answer = answer
    async with ZefortClient(
        "zefort-test-key",
        base_url=server.url,
        retry=NO_RETRY,
        tracking=TrackingOptions(min_interval=0.01, max_interval=0.02),
    ) as zefort:
        task = await survive(lambda: zefort.get_task("task_1"))
        if not isinstance(task, AsyncBulkError):
            assert isinstance(task.id, str)
            assert isinstance(task.is_finished, bool)
        await survive(lambda: zefort.acknowledge_task("task_1"))
        await survive(lambda: zefort.bulk_update_contracts(status="done", search={}))
        await survive(lambda: drain(zefort.iter_tasks(page_size=24)))
        await survive(lambda: zefort.wait_for_task("task_1", timeout=0.05))
        await survive(lambda: drain(zefort.track_tasks(["task_1", "task_2"], timeout=0.05)))


# -- listings that lie --------------------------------------------------------------------------


def chakra_listing(
    real: int, *, total: int | None, honour_skip: bool = True, next_link: str | None = None
):
    """Serve `real` entries, claiming `total`; optionally ignore skip (repeat the first page)."""

    def route(request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "100"))
        skip = int(request.query.get("skip", "0")) if honour_skip else 0
        data = [{**ENTRY, "id": f"e-{i}"} for i in range(skip, min(real, skip + limit))]
        meta: dict[str, Any] = {"next": next_link}
        if total is not None:
            meta["total"] = total
        return web.json_response({"_data": data, "_meta": meta})

    return route


@pytest.mark.parametrize(
    ("real", "total", "honour_skip"),
    [
        (250, 250, True),
        (250, 10**9, True),
        (250, 10, True),
        (250, 0, True),
        (250, None, True),
        (200, 200, True),
        (0, 10**6, True),
        (100, 10**9, False),
        (100, 100, False),
        (30, 10**9, False),
    ],
    ids=[
        "honest",
        "total-huge",
        "total-small",
        "total-zero",
        "total-missing",
        "exact-pages",
        "empty-listing-huge-total",
        "skip-ignored-huge-total",
        "skip-ignored-honest-total",
        "skip-ignored-short-page",
    ],
)
async def test_chakra_entries_with_a_lying_total_end_with_every_entry(
    server, real, total, honour_skip
):
    """A wrong _meta.total neither loops forever nor drops entries; each entry comes once.

    When fewer entries can be read than the total announces, the stream says so with an
    IncompleteListingError after the last of them.
    """
    server.route = chakra_listing(real, total=total, honour_skip=honour_skip)
    entries: list[Any] = []
    async with ChakraClient("chakra-test-token", base_url=server.url, retry=NO_RETRY) as chakra:
        with anyio.fail_after(LIMIT):
            outcome = await survive(
                lambda: drain(chakra.iter_job_entries("j", page_size=100, prefetch=4), entries)
            )
    expected = real if honour_skip else min(real, 100)
    assert [e.id for e in entries] == [f"e-{i}" for i in range(expected)]
    if total is not None and expected < total:
        assert isinstance(outcome, IncompleteListingError)
        assert (outcome.read, outcome.total) == (expected, total)
    else:
        assert isinstance(outcome, list)
    assert len(server.seen) < 50


def zefort_listing(
    real: int,
    *,
    page_size: int,
    count: int | None,
    last_page: int | None,
    next_link: Any = None,
    honour_page: bool = True,
):
    """Serve `real` tasks in pages, claiming `count` and `last_page`."""

    def route(request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1")) if honour_page else 1
        start = (page - 1) * page_size
        if start >= real and page > 1:
            return web.json_response({"detail": "Invalid page."}, status=404)
        results = [{**TASK, "id": f"task_{i}"} for i in range(start, min(real, start + page_size))]
        more = start + page_size < real
        link = (
            next_link
            if next_link is not None
            else (f"/api/tasks/?page={page + 1}" if more else None)
        )
        return web.json_response(
            {
                "page_size": page_size,
                "page": page,
                "last_page": last_page,
                "count": count,
                "next": link,
                "previous": None,
                "results": results,
            }
        )

    return route


@pytest.mark.parametrize(
    ("real", "count", "last_page", "honour_page"),
    [
        (95, 95, 4, True),
        (95, 10**9, None, True),
        (95, None, 10**9, True),
        (95, 3, 1, True),
        (95, None, None, True),
        (0, 10**6, 10**6, True),
        (24, 10**9, 10**9, False),
    ],
    ids=[
        "honest",
        "count-huge",
        "last-page-huge",
        "count-small",
        "nothing-said",
        "empty-huge",
        "page-ignored",
    ],
)
async def test_zefort_listing_with_a_lying_count_ends_with_every_task(
    server, real, count, last_page, honour_page
):
    """A wrong count or last_page neither loops nor drops tasks silently; each task comes once."""
    server.route = zefort_listing(
        real, page_size=24, count=count, last_page=last_page, honour_page=honour_page
    )
    async with ZefortClient("zefort-test-key", base_url=server.url, retry=NO_RETRY) as zefort:
        with anyio.fail_after(LIMIT):
            if honour_page:
                tasks = await drain(zefort.iter_tasks(page_size=24))
            else:
                # Page 2 repeats page 1: the listing says it cannot be read whole.
                with pytest.raises(ProtocolError, match="ignores `page`"):
                    await drain(zefort.iter_tasks(page_size=24))
                tasks = []
    expected = real if honour_page else 0
    assert [t.id for t in tasks] == [f"task_{i}" for i in range(expected)]
    assert len(server.seen) < 50


async def test_a_next_link_to_another_host_is_never_followed(server, evil):
    """Links to another host in _meta.next or a listing's next are never requested."""
    link = f"{evil.url}/v1/ext/background-job/j/entries?skip=100&limit=100"
    server.route = chakra_listing(250, total=250, next_link=link)
    async with ChakraClient("chakra-test-token", base_url=server.url, retry=NO_RETRY) as chakra:
        with anyio.fail_after(LIMIT):
            entries = await drain(chakra.iter_job_entries("j"))
    assert len(entries) == 250
    server.route = zefort_listing(
        95, page_size=24, count=None, last_page=None, next_link=f"{evil.url}/api/tasks/?page=2"
    )
    async with ZefortClient(
        "zefort-test-key",
        base_url=server.url,
        retry=NO_RETRY,
        tracking=TrackingOptions(sweep_interval=0.01),
    ) as zefort:
        with anyio.fail_after(LIMIT):
            tasks = await drain(zefort.iter_tasks(page_size=24))
            await survive(
                lambda: drain(zefort.track_tasks([f"task_{i}" for i in range(95)], timeout=0.3))
            )
            await survive(lambda: zefort.bulk_update_contracts(status="done", search={}))
    assert len(tasks) == 95
    assert evil.seen == []


# -- short and empty pages, and each documented job shape ---------------------------------------


@attrs.define
class Cut:
    """The answer at one `skip` holds `keep` entries at most, `times` times (None: always)."""

    keep: int
    times: int | None


def cut_listing(real: int, cuts: dict[int, Cut]) -> Callable[[web.Request], web.Response]:
    """Serve `real` entries with an honest total, cutting the answers at the offsets in `cuts`."""

    def route(request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "100"))
        skip = int(request.query.get("skip", "0"))
        cut = cuts.get(skip)
        if cut is not None and cut.times != 0:
            limit = min(limit, cut.keep)
            if cut.times is not None:
                cut.times -= 1
        data = [{**ENTRY, "id": f"e-{i}"} for i in range(skip, min(real, skip + limit))]
        return web.json_response({"_data": data, "_meta": {"total": real, "next": None}})

    return route


CUTS = st.dictionaries(
    st.integers(0, 300),
    st.builds(Cut, st.integers(0, 120), st.one_of(st.none(), st.integers(0, 3))),
    max_size=6,
)


@given(
    real=st.integers(0, 300),
    cuts=CUTS,
    page_size=st.integers(1, 100),
    prefetch=st.integers(1, 6),
)
@example(real=300, cuts={100: Cut(97, 1)}, page_size=100, prefetch=4)
@example(real=300, cuts={100: Cut(0, 1)}, page_size=100, prefetch=4)
@example(real=300, cuts={100: Cut(0, None)}, page_size=100, prefetch=4)
@CHECKS
async def test_short_and_empty_pages_never_end_the_stream_silently(
    server, real, cuts, page_size, prefetch
):
    """Short or empty answers mid-way: every entry in order, or the error names where it broke."""
    transient = all(cut.times is not None and cut.times <= 1 for cut in cuts.values())
    server.route = cut_listing(real, cuts)
    entries: list[Any] = []
    async with ChakraClient("chakra-test-token", base_url=server.url, retry=NO_RETRY) as chakra:
        outcome = await survive(
            lambda: drain(
                chakra.iter_job_entries("j", page_size=page_size, prefetch=prefetch), entries
            )
        )
    ids = [e.id for e in entries]
    if isinstance(outcome, IncompleteListingError):
        assert not transient, "an answer cut once is read again"
        assert ids == [f"e-{i}" for i in range(outcome.read)]
        assert (outcome.total, outcome.offset) == (real, outcome.read)
        assert outcome.read < real
    else:
        assert isinstance(outcome, list)
        assert ids == [f"e-{i}" for i in range(real)]


STATUS_COUNTS = st.dictionaries(
    st.sampled_from(["INVALID", "NOT_STARTED", "IN_PROGRESS", "SUCCESS", "ERROR", "CANCELLED"]),
    st.integers(0, 1000),
    max_size=6,
)
DOCUMENTED_JOB = {k: v for k, v in JOB.items() if k not in {"completionStatus", "completedAt"}}
SHAPES = st.sampled_from(
    [
        DOCUMENTED_JOB,
        {**DOCUMENTED_JOB, "type": "bulk_api_job"},
        JOB,
        {**JOB, "completionStatus": "NOT_STARTED"},
        {**JOB, "completionStatus": "COMPLETED", "completedAt": 1700000001000},
    ]
)


@given(data=SHAPES, counts=STATUS_COUNTS)
@CHECKS
async def test_each_job_shape_is_finished_exactly_when_the_rule_says(server, data, counts):
    """Counts only, IN_PROGRESS lagging or not, INVALID only: waiting ends exactly when finished."""
    body = {"_data": data, "_meta": {"bjEntryCompletionStatusVsCount": counts}}
    server.answer = Answer(body=json.dumps(body).encode())
    settled = bool(counts) and not (counts.get("NOT_STARTED") or counts.get("IN_PROGRESS"))
    terminal = data.get("completionStatus") not in {None, "IN_PROGRESS", "NOT_STARTED"}
    finished = settled or terminal or bool(data.get("completedAt"))
    async with ChakraClient(
        "chakra-test-token",
        base_url=server.url,
        retry=NO_RETRY,
        tracking=TrackingOptions(min_interval=0.01, max_interval=0.02),
    ) as chakra:
        job = await survive(lambda: chakra.get_background_job("j"))
        # A finished job ends the wait at its first poll: the long deadline only keeps a busy
        # machine from turning it into a timeout.
        timeout = 30.0 if finished else 0.05
        waited = await survive(lambda: chakra.wait_for_job("j", timeout=timeout))
    assert job.is_finished is finished
    if finished:
        assert waited.id == job.id
    else:
        assert isinstance(waited, JobTimeoutError)
