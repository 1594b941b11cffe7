"""Every kind of record asyncbulk logs carries its facts as fields a JSON handler can read."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

import pytest

from asyncbulk import (
    ChakraClient,
    JobTimeoutError,
    JobTracker,
    NotFoundError,
    RetryPolicy,
    TrackingOptions,
    ZefortClient,
)
from asyncbulk.testing import Fault, Simulator

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.anyio

BULK = "/api/contracts/bulk_update/"
TASKS = "/api/tasks/"
JOB = "/v1/ext/background-job/{job_id}"
FIELDS = ("vendor", "method", "path", "status", "attempt", "ms", "job_id", "job_kind", "error")


class JsonHandler(logging.Handler):
    """One JSON object per record, the message and every field, as a log shipper would."""

    def __init__(self) -> None:
        """Start with no records."""
        super().__init__(logging.DEBUG)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record as parsed JSON."""
        payload = {"level": record.levelname, "message": record.getMessage()}
        payload.update({name: getattr(record, name, None) for name in FIELDS})
        self.records.append(json.loads(json.dumps(payload)))

    def find(self, text: str) -> dict[str, Any]:
        """The one record whose message holds ``text``."""
        (found,) = [r for r in self.records if text in r["message"]]
        return found


@pytest.fixture
def log() -> Iterator[JsonHandler]:
    handler = JsonHandler()
    logger = logging.getLogger("asyncbulk")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_tracker_records_name_vendor_kind_job_and_error(log: JsonHandler) -> None:
    """A failed poll, a job not found and a job past its deadline each carry the job's facts."""
    fault = Fault("status", status=503, vendor="chakra", route=JOB, times=1)
    async with Simulator(chakra_entries_per_second=100_000, faults=[fault]) as sim:
        sim.chakra.add_procedure("leads", primary_key="lead_id", attributes=["n"])
        sim.chakra.add_process("leads", {"lead_id": "L0"}, id="pid-0")
        async with ChakraClient(
            sim.chakra_token,
            base_url=sim.chakra_url,
            retry=RetryPolicy(attempts=1),
            tracking=TrackingOptions(min_interval=0.01, max_interval=0.02),
        ) as chakra:
            submission = await chakra.bulk_update_processes(
                "leads", [{"id": "pid-0", "update": {"data": {"n": 1}}}]
            )
            job_id = submission.jobs[0].id
            await chakra.wait_for_job(job_id, timeout=30)
            with pytest.raises(NotFoundError):
                await chakra.wait_for_job("no-such-job", timeout=30)
            sim.faults.add(Fault("latency", delay=5, vendor="chakra", route=JOB))
            tracker = JobTracker(chakra.job_source, job_timeout=0.2, timeout=30)
            tracker.add(job_id)
            tracker.close()
            with contextlib.suppress(JobTimeoutError):
                delivered = [job async for job in tracker]
                assert delivered == []
            assert tracker.expired == (job_id,)
        assert sim.records.count(vendor="chakra", route=JOB, status=503) == 1
    failed = log.find("poll failed, trying later")
    assert failed["level"] == "DEBUG"
    assert failed["vendor"] == "chakra"
    assert failed["job_kind"] == "Chakra background job"
    assert failed["job_id"] == job_id
    assert failed["error"] == "ServerError"
    assert failed["status"] == 503
    assert failed["method"] == "GET"
    assert failed["path"] == f"/v1/ext/background-job/{job_id}"
    lost = log.find("was not found")
    assert (lost["level"], lost["job_id"], lost["status"]) == ("WARNING", "no-such-job", 404)
    expired = log.find("passed its deadline unfinished")
    assert (expired["vendor"], expired["job_id"]) == ("chakra", job_id)
    assert sim.chakra_token not in json.dumps(log.records)


async def test_zefort_records_name_the_task_and_the_failure(log: JsonHandler) -> None:
    """An unread pending listing and an adopted task carry vendor, task id, error and status."""
    async with Simulator(zefort_task_delay=(0.05, 0.1)) as sim:
        async with ZefortClient(
            sim.zefort_api_key, base_url=sim.zefort_url, retry=RetryPolicy(attempts=1)
        ) as zefort:
            sim.faults.add(Fault("drop_after", vendor="zefort", route=BULK, times=1))
            adopted = await zefort.bulk_update_contracts(attributes={"n": 2}, search={"q": "b"})
        async with ZefortClient(
            sim.zefort_api_key, base_url=sim.zefort_url, retry=RetryPolicy(attempts=1)
        ) as zefort:
            sim.faults.add(Fault("status", status=500, vendor="zefort", route=TASKS, times=1))
            await zefort.bulk_update_contracts(attributes={"n": 1}, search={"q": "a"})
        unread = log.find("pending tasks could not be read")
        assert unread["vendor"] == "zefort"
        assert (unread["error"], unread["status"], unread["method"]) == ("ServerError", 500, "GET")
        assert unread["path"] == TASKS
        record = log.find("adopted pending task")
        assert record["job_id"] == adopted.id
        assert record["error"] == "TransportError"
        assert record["method"] == "POST"
        assert record["path"] == BULK
        assert sim.zefort_api_key not in json.dumps(log.records)
