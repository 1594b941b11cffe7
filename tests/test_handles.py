"""Handles: versioned JSON dicts with no credential, refused when they do not fit the client."""

from __future__ import annotations

import json
import string
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncbulk import (
    BackgroundJob,
    BatchRecord,
    BulkSubmission,
    NotFoundError,
    Origin,
    RetryPolicy,
    ValidationError,
)
from asyncbulk._handles import (
    BATCH_STATES,
    fingerprint,
    job_handle,
    read_handle,
    read_submission,
    submission_handle,
)
from asyncbulk.chakra import ChakraClient
from asyncbulk.testing import Simulator
from asyncbulk.zefort import ZefortClient, ZefortTask

JOB_ROUTE = "/v1/ext/background-job/{job_id}"
TASK_ROUTE = "/api/tasks/{id}/"

texts = st.text(min_size=1).filter(lambda s: s.strip() != "")
origins = st.builds(
    Origin,
    vendor=st.sampled_from(["chakra", "zefort"]),
    base_url=st.sampled_from(["https://api.chakrahq.com", "http://127.0.0.1:8080/api"]),
    account=st.text("0123456789abcdef", min_size=32, max_size=32),
)


@st.composite
def batch_lists(draw: st.DrawFn) -> list[BatchRecord]:
    """Batches in input order, not overlapping, each with a state its fields agree with."""
    batches = []
    position = draw(st.integers(0, 5))
    for _ in range(draw(st.integers(0, 6))):
        start = position + draw(st.integers(0, 3))
        stop = start + draw(st.integers(1, 1000))
        state = draw(st.sampled_from(BATCH_STATES))
        job_id = draw(st.one_of(st.none(), texts)) if state == "accepted" else None
        error = draw(st.one_of(st.none(), st.text()))
        batches.append(BatchRecord(start=start, stop=stop, state=state, job_id=job_id, error=error))
        position = stop
    return batches


def submission_of(origin: Origin, batches: list[BatchRecord]) -> dict[str, Any]:
    """A submission handle of these batches."""
    return submission_handle(
        origin, submission_id="s-1", target="leads", operation="update", batches=batches
    )


def round_trip(handle: dict[str, Any]) -> Any:
    """The handle as a file or a database gives it back."""
    return json.loads(json.dumps(handle))


# -- pure properties ---------------------------------------------------------------------------


@given(origin=origins, job_id=texts, kind=st.sampled_from(["job", "task"]))
def test_job_and_task_handles_round_trip_through_json(origin, job_id, kind):
    """A job's or task's handle survives json.dumps/json.loads and reads back as the same id."""
    handle = job_handle(origin, kind, job_id)
    back = round_trip(handle)
    assert back == handle
    read_kind, fields = read_handle(back, origin, (kind,))
    assert read_kind == kind
    assert fields[f"{kind}_id"] == job_id


@given(origin=origins, batches=batch_lists())
def test_submission_handles_round_trip_with_every_batch(origin, batches):
    """A submission's handle survives JSON and gives back every batch, state and id as made."""
    back = round_trip(submission_of(origin, batches))
    _, fields = read_handle(back, origin, ("submission",))
    assert read_submission(fields) == tuple(batches)


# Each mutation of a job handle and the field its refusal must name.
_BAD_VALUES: list[tuple[str, Any]] = [
    ("asyncbulk_handle", 2),
    ("asyncbulk_handle", "1"),
    ("asyncbulk_handle", True),
    ("vendor", "other"),
    ("vendor", 3),
    ("base_url", "https://elsewhere.example"),
    ("base_url", None),
    ("account", "0" * 32),
    ("account", ""),
    ("kind", "submission"),
    ("kind", None),
    ("job_id", ""),
    ("job_id", 7),
]


@given(origin=origins, job_id=texts, mutation=st.sampled_from(_BAD_VALUES))
def test_every_mutated_field_of_a_job_handle_is_refused_by_name(origin, job_id, mutation):
    """Another version, vendor, host, account, kind or a malformed id names its field."""
    field, value = mutation
    handle = round_trip(job_handle(origin, "job", job_id))
    if handle[field] == value:
        return
    handle[field] = value
    with pytest.raises(ValidationError) as caught:
        read_handle(handle, origin, ("job",))
    assert caught.value.field == field


@given(
    origin=origins,
    job_id=texts,
    field=st.sampled_from(["asyncbulk_handle", "vendor", "base_url", "account", "kind", "job_id"]),
)
def test_a_missing_field_is_refused_by_name(origin, job_id, field):
    """A handle without one of its fields names the field missing."""
    handle = round_trip(job_handle(origin, "job", job_id))
    del handle[field]
    with pytest.raises(ValidationError, match="is missing") as caught:
        read_handle(handle, origin, ("job",))
    assert caught.value.field == field


@given(origin=origins, job_id=texts, extra=texts)
def test_an_unknown_field_is_refused_by_name(origin, job_id, extra):
    """A field this version does not write is refused, naming it, instead of being ignored."""
    handle = round_trip(job_handle(origin, "job", job_id))
    if extra in handle:
        return
    handle[extra] = 1
    with pytest.raises(ValidationError) as caught:
        read_handle(handle, origin, ("job",))
    assert caught.value.field == extra


_BAD_BATCH_VALUES: list[tuple[str, Any]] = [
    ("start", -1),
    ("start", "0"),
    ("stop", 0),
    ("stop", 1.5),
    ("state", "done"),
    ("job_id", ""),
    ("error", 3),
]


@given(
    origin=origins,
    batches=batch_lists().filter(bool),
    data=st.data(),
    mutation=st.sampled_from(_BAD_BATCH_VALUES),
)
def test_every_mutated_batch_field_is_refused_by_its_position(origin, batches, data, mutation):
    """A malformed batch is refused naming it and its field: ``batches[2].state``."""
    field, value = mutation
    index = data.draw(st.integers(0, len(batches) - 1))
    handle = round_trip(submission_of(origin, batches))
    handle["batches"][index][field] = value
    _, fields = read_handle(handle, origin, ("submission",))
    with pytest.raises(ValidationError) as caught:
        read_submission(fields)
    assert caught.value.field == f"batches[{index}].{field}"


def test_a_job_id_on_a_batch_not_accepted_is_refused():
    """Only an accepted batch carries a job id: anything else is a malformed handle."""
    origin = Origin(vendor="chakra", base_url="https://api.chakrahq.com", account="a" * 32)
    batch = {"start": 0, "stop": 1, "state": "rejected", "job_id": "j", "error": None}
    handle = {**submission_of(origin, []), "batches": [batch]}
    with pytest.raises(ValidationError) as caught:
        read_submission(read_handle(handle, origin, ("submission",))[1])
    assert caught.value.field == "batches[0].job_id"


# Tokens and keys as vendors issue them: long, so a short word of the handle never matches one.
credentials = st.text(string.ascii_letters + string.digits + "-_.", min_size=20, max_size=80)


@given(credential=credentials, vendor=st.sampled_from(["chakra", "zefort"]))
def test_no_credential_appears_in_a_handle(credential, vendor):
    """The account is a fingerprint: the credential is nowhere in the handle's JSON."""
    origin = Origin(
        vendor=vendor, base_url="https://h.example", account=fingerprint(vendor, credential)
    )
    text = json.dumps(job_handle(origin, "job", "j-1"), ensure_ascii=False)
    assert credential not in text
    assert len(origin.account) == 32


def test_the_fingerprint_is_stable_across_processes():
    """Another interpreter computes the same fingerprint, so a handle resumes after a restart."""
    code = "from asyncbulk._handles import fingerprint; print(fingerprint('chakra', 'tok-123456'))"
    other = subprocess.run(  # noqa: S603 -- this interpreter, no shell
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert other == fingerprint("chakra", "tok-123456")
    assert other != fingerprint("zefort", "tok-123456")


def test_an_object_built_by_hand_has_no_handle():
    """A job not built by a client cannot say where it lives: handle() refuses, naming it."""
    with pytest.raises(ValidationError) as caught:
        BackgroundJob(id="j").handle()
    assert caught.value.field == "handle"


# -- against the simulator ---------------------------------------------------------------------


@pytest.fixture
async def sim():
    """A simulator with one Chakra procedure of ten processes."""
    async with Simulator(chakra_entries_per_second=100_000) as simulator:
        simulator.chakra.add_procedure("leads", primary_key="lead_id", attributes=["city"])
        for i in range(10):
            simulator.chakra.add_process("leads", {"lead_id": f"L{i}"}, id=f"pid-{i}")
        yield simulator


def chakra_client(sim: Simulator, token: str | None = None) -> ChakraClient:
    """A client of the simulator's Chakra."""
    return ChakraClient(
        token or sim.chakra_token, base_url=sim.chakra_url, retry=RetryPolicy.testing()
    )


def zefort_client(sim: Simulator) -> ZefortClient:
    """A client of the simulator's Zefort."""
    return ZefortClient(sim.zefort_api_key, base_url=sim.zefort_url, retry=RetryPolicy.testing())


async def submitted_jobs(sim: Simulator, count: int) -> list[BackgroundJob]:
    """Jobs the server made from a real bulk update, one per batch of five."""
    updates = [{"id": f"pid-{i}", "data": {"city": "Goa"}} for i in range(count)]
    async with chakra_client(sim) as chakra:
        submission = await chakra.bulk_update_processes("leads", updates, batch_size=5)
    return list(submission.jobs)


@pytest.mark.anyio
async def test_a_job_handle_resumes_in_another_client_of_the_same_account(sim):
    """A job's handle, through JSON, rebuilds the job in a new client, which fetches it."""
    (acknowledged,) = await submitted_jobs(sim, 5)
    async with chakra_client(sim) as first:
        handle = json.dumps((await first.get_background_job(acknowledged.id)).handle())
    assert sim.chakra_token not in handle
    before = sim.records.count(vendor="chakra", method="GET", route=JOB_ROUTE)
    async with chakra_client(sim) as second:
        job = await second.resume(json.loads(handle))
    assert isinstance(job, BackgroundJob)
    assert job.id == acknowledged.id
    assert sim.records.count(vendor="chakra", method="GET", route=JOB_ROUTE) == before + 1
    assert job.handle() == json.loads(handle)


@pytest.mark.anyio
async def test_a_handle_of_another_account_host_or_vendor_is_refused_before_any_request(sim):
    """Another token, base URL or vendor is a ValidationError naming the field; nothing is sent."""
    (acknowledged,) = await submitted_jobs(sim, 5)
    async with chakra_client(sim) as chakra:
        handle = (await chakra.get_background_job(acknowledged.id)).handle()
    before = sim.records.total_requests
    async with chakra_client(sim, token="another-account-token") as other:
        with pytest.raises(ValidationError) as caught:
            await other.resume(handle)
    assert caught.value.field == "account"
    async with ChakraClient(
        sim.chakra_token, base_url=sim.chakra_url + "/v2", retry=RetryPolicy.testing()
    ) as elsewhere:
        with pytest.raises(ValidationError) as caught:
            await elsewhere.resume(handle)
    assert caught.value.field == "base_url"
    async with zefort_client(sim) as zefort:
        with pytest.raises(ValidationError) as caught:
            await zefort.resume(handle)
    assert caught.value.field == "vendor"
    assert sim.records.total_requests == before


@pytest.mark.anyio
async def test_a_submission_handle_rebuilds_the_submission_and_fetches_its_jobs(sim):
    """Accepted batches come back as fetched jobs with their positions; the others as failed."""
    jobs = await submitted_jobs(sim, 10)
    async with chakra_client(sim) as chakra:
        origin = (await chakra.get_background_job(jobs[0].id)).handle()
        base = {k: origin[k] for k in ("vendor", "base_url", "account")}
        batches = [
            BatchRecord(start=0, stop=5, state="accepted", job_id=jobs[0].id),
            BatchRecord(start=5, stop=10, state="accepted", job_id=jobs[1].id),
            BatchRecord(start=10, stop=15, state="rejected", error="400: bad"),
            BatchRecord(start=15, stop=20, state="unknown", error="connection lost"),
            BatchRecord(start=20, stop=25, state="not_sent"),
        ]
        handle = round_trip(submission_of(Origin(**base), batches))
        before = sim.records.count(vendor="chakra", method="GET", route=JOB_ROUTE)
        submission = await chakra.resume(handle)
    assert isinstance(submission, BulkSubmission)
    assert submission.job_ids == (jobs[0].id, jobs[1].id)
    assert submission.batches == {jobs[0].id: range(5), jobs[1].id: range(5, 10)}
    assert [(b.positions, b.outcome_unknown) for b in submission.failed_batches] == [
        (range(10, 15), False),
        (range(15, 20), True),
    ]
    assert submission.unsent_from == 20
    assert sim.records.count(vendor="chakra", method="GET", route=JOB_ROUTE) == before + 2


@pytest.mark.anyio
async def test_a_handle_of_a_job_that_is_gone_is_not_found(sim):
    """A well-formed handle naming a job the server does not know is NotFoundError."""
    async with chakra_client(sim) as chakra:
        (acknowledged,) = await submitted_jobs(sim, 5)
        handle = (await chakra.get_background_job(acknowledged.id)).handle()
        handle["job_id"] = "no-such-job"
        with pytest.raises(NotFoundError):
            await chakra.resume(handle)


@pytest.mark.anyio
async def test_a_task_handle_resumes_and_a_chakra_client_refuses_it(sim):
    """A Zefort task's handle rebuilds the task as it stands; its kind is not Chakra's."""
    async with zefort_client(sim) as zefort:
        task = await zefort.bulk_update_contracts(status="review", search={"q": "x"})
        handle = round_trip(task.handle())
    assert sim.zefort_api_key not in json.dumps(handle)
    assert handle["kind"] == "task"
    before = sim.records.count(vendor="zefort", method="GET", route=TASK_ROUTE)
    async with zefort_client(sim) as zefort:
        again = await zefort.resume(handle)
    assert isinstance(again, ZefortTask)
    assert again.id == task.id
    assert sim.records.count(vendor="zefort", method="GET", route=TASK_ROUTE) == before + 1
    async with chakra_client(sim) as chakra:
        with pytest.raises(ValidationError) as caught:
            await chakra.resume(handle)
    assert caught.value.field == "vendor"
