"""What the simulated servers saw: requests, bulk submissions, acknowledgements, finish times.

A test reads these to prove what a client did: that nothing was submitted twice and nothing lost,
that every task was acknowledged once, how long after a job finished the client noticed.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    from ._clock import Clock

Vendor = Literal["chakra", "zefort"]


@attrs.frozen
class RequestRecord:
    """One request as a simulated server received it.

    Attributes:
        vendor: "chakra" or "zefort".
        method: The HTTP method.
        path: The path exactly as received, before any decoding or normalisation.
        query: The query parameters, in order, as (name, value) pairs.
        route: The route template that matched (e.g. "/api/tasks/{id}/"), or None if none did.
        status: The status answered, or None when a fault dropped the connection.
        fault: The kind of the fault injected into this request, if any ("latency" included).
        at: Wall time (`time.time()`) at which the request arrived.
    """

    vendor: Vendor
    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    route: str | None
    status: int | None
    fault: str | None
    at: float


@attrs.frozen
class ChakraSubmission:
    """One Chakra bulk request that created a background job.

    Attributes:
        method: "PATCH" for a bulk update, "POST" for a bulk create.
        path: The path as received.
        procedure: The procedure id or short id as written in the path.
        raw: The request body as received.
        job_id: The id of the background job it created.
        entries: How many entries the job holds.
        received_at: Simulated time (seconds since the epoch) of the submission.
        received_wall: Wall time of the submission.
    """

    method: str
    path: str
    procedure: str
    raw: bytes = attrs.field(repr=False)
    job_id: str
    entries: int
    received_at: float
    received_wall: float

    @property
    def body(self) -> Any:
        """The request body parsed from `raw` (parsed on every access; keep the result)."""
        return json.loads(self.raw)


@attrs.frozen
class ZefortSubmission:
    """One Zefort bulk update that created a task.

    Attributes:
        path: The path as received.
        query: The query parameters as received.
        raw: The request body as received.
        task_id: The id of the task it created.
        received_at: Simulated time (seconds since the epoch) of the submission.
        received_wall: Wall time of the submission.
    """

    path: str
    query: dict[str, str]
    raw: bytes = attrs.field(repr=False)
    task_id: str
    received_at: float
    received_wall: float

    @property
    def body(self) -> Any:
        """The request body parsed from `raw` (parsed on every access; keep the result)."""
        return json.loads(self.raw)


@attrs.frozen
class FinishTime:
    """When a job or task finished.

    Attributes:
        simulated: The simulated time, in seconds since the epoch (Chakra reports it in ms).
        wall: The wall time (`time.time()` scale) of that instant; None with a `ManualClock`.
    """

    simulated: float
    wall: float | None


_CountKey = tuple[str, str, str | None, int | None]


class Records:
    """Everything the simulated servers saw, for a test or a benchmark to read.

    Attributes:
        requests: Every request, in arrival order (empty when created with `keep_requests=False`).
        chakra_submissions: Every Chakra bulk request that created a job, in arrival order.
        zefort_submissions: Every Zefort bulk update that created a task, in arrival order.
        acknowledgements: Per Zefort task id, how many `PATCH {"frontend_status": "done"}` it got.
        faults: Per fault kind, how many times one was injected ("rate_limit" counts the
            requests a `TokenBucket` refused).
        oversized_bytes: Bytes of "oversized" answers that went out before clients stopped.

    Counting (`count`, `by_route`, `by_status`) never scans `requests`: counters are kept as
    requests arrive, so they work with `keep_requests=False` too.
    """

    def __init__(self, clock: Clock, *, keep_requests: bool = True) -> None:
        """Create empty records.

        Args:
            clock: The simulated clock, used to tell whether a job or task has finished yet.
            keep_requests: Keep a `RequestRecord` per request; counters are kept either way.
        """
        self._clock = clock
        self._keep_requests = keep_requests
        self.requests: list[RequestRecord] = []
        self.chakra_submissions: list[ChakraSubmission] = []
        self.zefort_submissions: list[ZefortSubmission] = []
        self.acknowledgements: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.oversized_bytes = 0
        self._counts: Counter[_CountKey] = Counter()
        self._job_finish: dict[str, float] = {}
        self._task_finish: dict[str, float] = {}

    def __repr__(self) -> str:
        """Summarise the records."""
        return (
            f"<Records requests={self.total_requests} "
            f"chakra_submissions={len(self.chakra_submissions)} "
            f"zefort_submissions={len(self.zefort_submissions)}>"
        )

    @property
    def total_requests(self) -> int:
        """The number of requests received, by both servers."""
        return self._counts.total()

    def count(
        self,
        *,
        vendor: Vendor | None = None,
        method: str | None = None,
        route: str | None = None,
        status: int | None = None,
    ) -> int:
        """Count the requests that match every filter given.

        Args:
            vendor: "chakra" or "zefort".
            method: The HTTP method, e.g. "GET".
            route: The route template, e.g. "/api/tasks/{id}/".
            status: The status answered; dropped connections are counted under `status=0`.
        """
        return sum(
            n
            for (v, m, r, s), n in self._counts.items()
            if (vendor is None or v == vendor)
            and (method is None or m == method.upper())
            and (route is None or r == route)
            and (status is None or (s or 0) == status)
        )

    @property
    def by_route(self) -> Counter[tuple[str, str | None]]:
        """Requests per (method, route template); unmatched paths count under route None."""
        out: Counter[tuple[str, str | None]] = Counter()
        for (_, method, route, _), n in self._counts.items():
            out[method, route] += n
        return out

    @property
    def by_status(self) -> Counter[int]:
        """Requests per status answered; dropped connections count under 0."""
        out: Counter[int] = Counter()
        for (_, _, _, status), n in self._counts.items():
            out[status or 0] += n
        return out

    def chakra_submission(self, job_id: str) -> ChakraSubmission | None:
        """Return the submission that created the Chakra job `job_id`, if any."""
        return next((s for s in self.chakra_submissions if s.job_id == job_id), None)

    def zefort_submission(self, task_id: str) -> ZefortSubmission | None:
        """Return the submission that created the Zefort task `task_id`, if any."""
        return next((s for s in self.zefort_submissions if s.task_id == task_id), None)

    def job_finished(self, job_id: str) -> FinishTime | None:
        """Return when the Chakra job `job_id` finished, or None if it has not (or is unknown)."""
        return self._finished(self._job_finish.get(job_id))

    def task_finished(self, task_id: str) -> FinishTime | None:
        """Return when the Zefort task `task_id` finished (done or failed), or None if not yet."""
        return self._finished(self._task_finish.get(task_id))

    def finished_jobs(self) -> dict[str, FinishTime]:
        """Return the finish time of every Chakra job that has finished (a scan: for tests)."""
        return self._all_finished(self._job_finish)

    def finished_tasks(self) -> dict[str, FinishTime]:
        """Return the finish time of every Zefort task that has finished (a scan: for tests)."""
        return self._all_finished(self._task_finish)

    def record_request(self, record: RequestRecord) -> None:
        """Count a request (called by the simulated servers)."""
        self._counts[record.vendor, record.method, record.route, record.status] += 1
        if record.fault is not None:
            self.faults[record.fault] += 1
        if self._keep_requests:
            self.requests.append(record)

    def expect_job_finish(self, job_id: str, simulated: float) -> None:
        """Note the simulated time at which a Chakra job finishes (called by the simulator)."""
        self._job_finish[job_id] = simulated

    def expect_task_finish(self, task_id: str, simulated: float) -> None:
        """Note the simulated time at which a Zefort task finishes (called by the simulator)."""
        self._task_finish[task_id] = simulated

    def _finished(self, simulated: float | None) -> FinishTime | None:
        if simulated is None or simulated > self._clock.now():
            return None
        return FinishTime(simulated, self._clock.wall_time(simulated))

    def _all_finished(self, due: dict[str, float]) -> dict[str, FinishTime]:
        now = self._clock.now()
        return {
            key: FinishTime(at, self._clock.wall_time(at)) for key, at in due.items() if at <= now
        }


def wall_now() -> float:
    """Return the wall time; one place, so records agree on the time source."""
    return time.time()
