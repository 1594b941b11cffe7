"""OpenTelemetry spans and metrics, read from the SDK's in-memory exporters, over real HTTP."""

from __future__ import annotations

import sys
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from asyncbulk import (
    ChakraClient,
    RateLimit,
    RetryPolicy,
    Telemetry,
    TrackingOptions,
    ValidationError,
    ZefortClient,
)
from asyncbulk._telemetry import available, resolve
from asyncbulk.testing import Fault, Simulator

pytestmark = pytest.mark.anyio

ENTRIES_ROUTE = "/v1/ext/background-job/{job_id}/entries"


class Otel:
    """An SDK of the test's own: spans kept in memory, metrics read on demand."""

    def __init__(self) -> None:
        """Fresh providers, so no test sees another's telemetry."""
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.telemetry = Telemetry(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def finished(self, name: str | None = None) -> list[Any]:
        """The ended spans, optionally only those named ``name``."""
        spans = self.spans.get_finished_spans()
        return [s for s in spans if name is None or s.name == name]

    def points(self, metric: str) -> list[Any]:
        """Every data point of ``metric`` collected now."""
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for item in scope.metrics:
                    if item.name == metric:
                        found.extend(item.data.data_points)
        return found


@pytest.fixture
def otel() -> Otel:
    return Otel()


@pytest.fixture
async def sim():
    async with Simulator(chakra_entries_per_second=100_000) as simulator:
        simulator.chakra.add_procedure("leads", primary_key="lead_id", attributes=["n"])
        for i in range(30):
            simulator.chakra.add_process("leads", {"lead_id": f"L{i}"}, id=f"pid-{i}")
        yield simulator


def test_the_api_is_found() -> None:
    """With the extra installed, the default (None) turns telemetry on; False turns it off."""
    assert available()
    assert resolve(None) is not None
    assert resolve(telemetry=False) is None
    with pytest.raises(ValidationError, match="telemetry"):
        resolve("yes")


async def test_a_span_per_try_follows_the_http_conventions(otel: Otel) -> None:
    """Each try is a CLIENT span with method, host, port, URL, status, resend count, error type."""
    fault = Fault("status", status=503, times=1, vendor="zefort")
    async with Simulator(faults=[fault]) as sim:
        task = sim.zefort.submit_bulk_update({"attributes": {"n": 1}, "search": {}})
        async with ZefortClient(
            sim.zefort_api_key,
            base_url=sim.zefort_url,
            retry=RetryPolicy(initial_wait=0.001),
            telemetry=otel.telemetry,
        ) as zefort:
            await zefort.get_task(task.id)
        assert sim.records.count(vendor="zefort") == 2
        port = int(sim.zefort_url.rsplit(":", 1)[1].split("/")[0])
    first, second = otel.finished("GET")
    for span in (first, second):
        assert span.kind is SpanKind.CLIENT
        assert span.attributes["http.request.method"] == "GET"
        assert span.attributes["server.address"] == "127.0.0.1"
        assert span.attributes["server.port"] == port
        assert span.attributes["url.full"].endswith(f"/api/tasks/{task.id}/")
        assert span.attributes["asyncbulk.job.id"] == task.id
    assert first.attributes["http.response.status_code"] == 503
    assert first.attributes["error.type"] == "503"
    assert first.status.status_code is StatusCode.ERROR
    assert "http.request.resend_count" not in first.attributes
    assert second.attributes["http.response.status_code"] == 200
    assert second.attributes["http.request.resend_count"] == 1
    assert "error.type" not in second.attributes
    by_status = {
        p.attributes["http.response.status_code"]: p.value
        for p in otel.points("asyncbulk.requests")
    }
    assert by_status == {503: 1, 200: 1}


async def test_no_credential_reaches_a_span(otel: Otel) -> None:
    """Neither the token nor the API key appears in any span's name, attributes or events."""
    async with Simulator() as sim:
        sim.chakra.add_procedure("leads", primary_key="lead_id", attributes=["n"])
        sim.chakra.add_process("leads", {"lead_id": "L0"}, id="pid-0")
        async with (
            ChakraClient(
                sim.chakra_token,
                base_url=sim.chakra_url,
                telemetry=otel.telemetry,
                retry=RetryPolicy.testing(),
            ) as chakra,
            ZefortClient(
                sim.zefort_api_key, base_url=sim.zefort_url, telemetry=otel.telemetry
            ) as zefort,
        ):
            await chakra.bulk_update_processes(
                "leads", [{"id": "pid-0", "update": {"data": {"n": 1}}}]
            )
            task = await zefort.bulk_update_contracts(attributes={"n": 1}, search={"q": "x"})
            await zefort.get_task(task.id)
        secrets = (sim.chakra_token, sim.zefort_api_key)
    spans = otel.finished()
    assert len(spans) >= 4
    for span in spans:
        text = span.to_json()
        for secret in secrets:
            assert secret not in text


async def test_a_span_per_batch_is_the_parent_of_its_requests(sim: Simulator, otel: Otel) -> None:
    """Each Chakra batch is a span with its positions, state and job; its PATCH is a child."""
    async with ChakraClient(
        sim.chakra_token, base_url=sim.chakra_url, telemetry=otel.telemetry
    ) as chakra:
        updates = [{"id": f"pid-{i}", "update": {"data": {"n": i}}} for i in range(25)]
        submission = await chakra.bulk_update_processes("leads", updates, batch_size=10)
    batches = sorted(
        otel.finished("chakra bulk update"), key=lambda s: s.attributes["asyncbulk.batch.start"]
    )
    assert [
        (s.attributes["asyncbulk.batch.start"], s.attributes["asyncbulk.batch.stop"])
        for s in batches
    ] == [
        (0, 10),
        (10, 20),
        (20, 25),
    ]
    assert {s.attributes["asyncbulk.job.id"] for s in batches} == {j.id for j in submission.jobs}
    assert all(s.attributes["asyncbulk.batch.state"] == "accepted" for s in batches)
    assert all(s.kind is SpanKind.INTERNAL for s in batches)
    patches = otel.finished("PATCH")
    assert len(patches) == 3 == sim.records.count(vendor="chakra", method="PATCH")
    assert {p.parent.span_id for p in patches} == {b.context.span_id for b in batches}


async def test_zefort_bulk_update_is_a_span(otel: Otel) -> None:
    """A Zefort bulk update is one span naming its task, with the POST under it."""
    async with (
        Simulator() as sim,
        ZefortClient(
            sim.zefort_api_key, base_url=sim.zefort_url, telemetry=otel.telemetry
        ) as zefort,
    ):
        task = await zefort.bulk_update_contracts(attributes={"n": 1}, search={"q": "x"})
    (span,) = otel.finished("zefort bulk update")
    assert span.attributes["asyncbulk.job.id"] == task.id
    (post,) = otel.finished("POST")
    assert post.parent.span_id == span.context.span_id


async def test_tracked_jobs_give_wait_spans_lag_and_a_count(sim: Simulator, otel: Otel) -> None:
    """A wait span per job from add to delivery, the lag histogram, and jobs tracked back to 0."""
    async with ChakraClient(
        sim.chakra_token,
        base_url=sim.chakra_url,
        telemetry=otel.telemetry,
        tracking=TrackingOptions(min_interval=0.01, max_interval=0.05),
    ) as chakra:
        updates = [{"id": f"pid-{i}", "update": {"data": {"n": i}}} for i in range(6)]
        submission = await chakra.bulk_update_processes("leads", updates, batch_size=2)
        ids = [job.id for job in submission.jobs]
        delivered = [job.id async for job in chakra.track_jobs(ids, timeout=30)]
    assert sorted(delivered) == sorted(ids)
    waits = otel.finished("Chakra background job wait")
    assert sorted(s.attributes["asyncbulk.job.id"] for s in waits) == sorted(ids)
    for span in waits:
        assert span.attributes["asyncbulk.job.outcome"] == "finished"
        assert span.end_time >= span.start_time
    (tracked,) = otel.points("asyncbulk.jobs.tracked")
    assert tracked.value == 0
    (lag,) = otel.points("asyncbulk.jobs.detection_lag")
    assert lag.count == len(ids)


async def test_entries_streamed_429s_and_the_send_rate(otel: Otel) -> None:
    """Entries read are counted, each 429 is counted, and the rate in force is a gauge."""
    fault = Fault("status", status=429, retry_after=0.01, times=2, route=ENTRIES_ROUTE)
    async with Simulator(chakra_entries_per_second=100_000, faults=[fault]) as sim:
        sim.chakra.add_procedure("leads", primary_key="lead_id", attributes=["n"])
        for i in range(30):
            sim.chakra.add_process("leads", {"lead_id": f"L{i}"}, id=f"pid-{i}")
        async with ChakraClient(
            sim.chakra_token,
            base_url=sim.chakra_url,
            telemetry=otel.telemetry,
            retry=RetryPolicy.testing(),
            rate_limit=RateLimit(per_second=1000, burst=100),
        ) as chakra:
            updates = [{"id": f"pid-{i}", "update": {"data": {"n": i}}} for i in range(30)]
            submission = await chakra.bulk_update_processes("leads", updates, batch_size=30)
            job = await chakra.wait_for_job(submission.jobs[0].id, timeout=30)
            entries = [e async for e in chakra.iter_job_entries(job.id, page_size=5)]
            rates = otel.points("asyncbulk.send_rate")
        throttled = sim.records.count(vendor="chakra", status=429)
    assert len(entries) == 30
    (streamed,) = otel.points("asyncbulk.entries")
    assert streamed.value == 30
    assert throttled == 2
    (limited,) = otel.points("asyncbulk.rate_limited")
    assert limited.value == throttled
    # The cap, or less once the 429s have cut the rate: the gauge reads the rate in force.
    (rate,) = rates
    assert 0 < rate.value <= 1000
    assert rate.attributes == {"asyncbulk.vendor": "chakra"}


HIDDEN = """
import importlib.abc, sys

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ModuleNotFoundError(name)
        return None

sys.meta_path.insert(0, Hide())
import asyncbulk
from asyncbulk import ChakraClient, ValidationError

client = ChakraClient("a-token-of-the-test", base_url="https://chakra.example")
assert client._telemetry is None
try:
    ChakraClient("a-token-of-the-test", base_url="https://chakra.example", telemetry=True)
except ValidationError as exc:
    assert "asyncbulk[otel]" in str(exc)
else:
    raise AssertionError("telemetry=True without the API")
assert not [m for m in sys.modules if m.startswith("opentelemetry")]
"""


async def test_without_the_api_nothing_is_imported_or_hooked() -> None:
    """Without opentelemetry-api: no observer, nothing imported, and True asks for the extra."""
    result = await anyio.run_process([sys.executable, "-c", HIDDEN], check=False)
    assert result.returncode == 0, result.stderr.decode()
