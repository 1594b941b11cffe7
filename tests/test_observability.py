"""Structured log records and the observer hook around every try, over real HTTP."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from asyncbulk import RetryPolicy, TransportError, ZefortClient
from asyncbulk._session import BearerAuth, ChakraEnvelope, Session, TryInfo, TryResult
from asyncbulk._transport import MockTransport, TransportRequest, TransportResponse
from asyncbulk.testing import Fault, Simulator

pytestmark = pytest.mark.anyio

FIELDS = ("vendor", "method", "path", "status", "attempt", "ms", "job_id")


class JsonHandler(logging.Handler):
    """Formats each record as one JSON object, as a log shipper would: message plus extra."""

    def __init__(self) -> None:
        """Start with no lines."""
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record as a JSON line."""
        payload = {"level": record.levelname, "message": record.getMessage()}
        payload.update({name: getattr(record, name, None) for name in (*FIELDS, "delay", "error")})
        self.lines.append(json.dumps(payload))


@pytest.fixture
def json_log():
    handler = JsonHandler()
    logger = logging.getLogger("asyncbulk")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_every_session_record_carries_its_facts(json_log: JsonHandler) -> None:
    """DEBUG per try and WARNING per retry carry vendor, method, path, status, attempt, ms, job."""
    async with Simulator(faults=[Fault("status", status=503, times=1)]) as sim:
        task = sim.zefort.submit_bulk_update({"attributes": {"n": 1}, "search": {}})
        async with ZefortClient(
            sim.zefort_api_key, base_url=sim.zefort_url, retry=RetryPolicy(initial_wait=0.001)
        ) as zefort:
            await zefort.get_task(task.id)
    records = [json.loads(line) for line in json_log.lines]
    session = [r for r in records if r["vendor"] is not None]
    assert [(r["level"], r["status"], r["attempt"]) for r in session] == [
        ("DEBUG", 503, 1),
        ("WARNING", 503, 1),
        ("DEBUG", 200, 2),
    ]
    path = f"/api/tasks/{task.id}/"
    for record in session:
        assert record["vendor"] == "zefort"
        assert record["method"] == "GET"
        assert record["path"] == path
        assert record["job_id"] == task.id
        assert isinstance(record["ms"], float)
    # The messages are what they were: the fields come in addition.
    assert session[0]["message"].startswith(f"ZefortClient GET {path} -> 503 (attempt 1")
    assert session[1]["message"].startswith(f"ZefortClient retrying GET {path} in ")
    assert session[1]["error"] == "ServerError"
    assert sim.zefort_api_key not in "".join(json_log.lines)


class Recorder:
    """An observer that keeps what it saw, as a tracer would open and close spans."""

    def __init__(self) -> None:
        """Nothing seen yet."""
        self.events: list[tuple[str, Any]] = []

    def try_started(self, info: TryInfo) -> object:
        """Open a span."""
        self.events.append(("start", info))
        return len(self.events)

    def try_ended(self, info: TryInfo, context: object, result: TryResult) -> None:
        """Close it."""
        self.events.append(("end", (info, context, result)))


async def test_the_observer_sees_each_try_start_and_end() -> None:
    """Every try on the wire, retries and redirects included, opens and closes once."""
    async with Simulator(faults=[Fault("status", status=503, times=1)]) as sim:
        task = sim.zefort.submit_bulk_update({"attributes": {"n": 1}, "search": {}})
        recorder = Recorder()
        async with ZefortClient(
            sim.zefort_api_key, base_url=sim.zefort_url, retry=RetryPolicy(initial_wait=0.001)
        ) as zefort:
            zefort._session.observe_with(recorder)
            await zefort.get_task(task.id)
    kinds = [kind for kind, _ in recorder.events]
    assert kinds == ["start", "end", "start", "end"]
    ends = [payload for kind, payload in recorder.events if kind == "end"]
    assert [(info.attempt, result.status) for info, _, result in ends] == [(1, 503), (2, 200)]
    assert [context for _, context, _ in ends] == [1, 3]
    info = ends[0][0]
    assert (info.vendor, info.method, info.job_id) == ("zefort", "GET", task.id)
    assert info.url.endswith(f"/api/tasks/{task.id}/")
    assert all(result.seconds >= 0 for _, _, result in ends)


class QuietRecorder(Recorder):
    """A recorder that reports only while told to, as a tracer with no provider set."""

    def __init__(self) -> None:
        """Quiet at first."""
        super().__init__()
        self.wanted = False

    def observing(self) -> bool:
        """Whether the tries are wanted now."""
        return self.wanted


async def test_an_observer_not_observing_gets_no_hooks() -> None:
    """While `observing()` is False no hook runs; once True, each try opens and closes."""
    async with Simulator() as sim:
        task = sim.zefort.submit_bulk_update({"attributes": {"n": 1}, "search": {}})
        recorder = QuietRecorder()
        async with ZefortClient(sim.zefort_api_key, base_url=sim.zefort_url) as zefort:
            zefort._session.observe_with(recorder)
            await zefort.get_task(task.id)
            assert recorder.events == []
            recorder.wanted = True
            await zefort.get_task(task.id)
        assert sim.records.count(method="GET", route="/api/tasks/{id}/") == 2
    assert [kind for kind, _ in recorder.events] == ["start", "end"]


async def test_the_observer_sees_a_try_that_got_no_answer() -> None:
    """A try that fails on the wire ends with its error and no status."""

    def refuse(request: TransportRequest) -> TransportResponse:
        raise TransportError("refused", method=request.method, url=request.url, sent=False)

    recorder = Recorder()
    session = Session(
        base_url="https://api.example.test",
        auth=BearerAuth("observer-token"),
        envelope=ChakraEnvelope(),
        transport=MockTransport(refuse),
        retry=RetryPolicy.never(),
        observer=recorder,
        vendor="chakra",
    )
    with pytest.raises(TransportError):
        await session.request("GET", "/v1/ext/background-job/j", job_id="j")
    await session.aclose()
    ((_, (info, _, result)),) = [e for e in recorder.events if e[0] == "end"]
    assert (info.vendor, info.path, info.job_id) == ("chakra", "/v1/ext/background-job/j", "j")
    assert result.status is None
    assert isinstance(result.error, TransportError)
