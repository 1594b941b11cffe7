"""OpenTelemetry traces and metrics, when ``opentelemetry-api`` is installed (``asyncbulk[otel]``).

Like the libraries that instrument themselves (azure-core, google-api-core), asyncbulk reports
whenever the OpenTelemetry API can be imported: the API does nothing until an application
installs an SDK and sets a tracer or meter provider, so the cost is a few no-op calls. Without
the API nothing is imported and no hook is installed: the check is one cached lookup per client.

What is reported:

- a CLIENT span per try on the wire (HTTP client semantic conventions), a child of whatever span
  is current, with ``url.full`` stripped of any user or password;
- an INTERNAL span per submission batch (Chakra) and per bulk update (Zefort);
- an INTERNAL span per tracked job's wait, from when it was added to its delivery, started and
  ended at delivery (no span object is kept per job while it is tracked);
- the metrics ``asyncbulk.requests`` (by status), ``asyncbulk.rate_limited`` (429s),
  ``asyncbulk.send_rate`` (the learned rate, a gauge), ``asyncbulk.jobs.tracked`` (an up-down
  counter), ``asyncbulk.jobs.detection_lag`` (a histogram, seconds from the server's finish to
  the tracker's delivery) and ``asyncbulk.entries`` (job entries streamed).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import time
import weakref
from typing import TYPE_CHECKING, Any

import attrs
from yarl import URL

from asyncbulk._exceptions import ValidationError, scrub
from asyncbulk._version import __version__

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from asyncbulk._session import RequestStats, TryInfo, TryResult

__all__ = ["JobTelemetry", "Telemetry", "Tracer", "available", "operation", "resolve"]

_SCOPE = "asyncbulk"


@functools.cache
def available() -> bool:
    """Whether ``opentelemetry-api`` can be imported; looked up once, without importing it."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False


@attrs.frozen(kw_only=True)
class Telemetry:
    """Where a client's spans and metrics go, when not the global OpenTelemetry providers.

    Pass it as ``telemetry=`` to a client; ``telemetry=True`` is the same as ``Telemetry()``.

    Attributes:
        tracer_provider: an ``opentelemetry.trace.TracerProvider``; None for the global one.
        meter_provider: an ``opentelemetry.metrics.MeterProvider``; None for the global one.
    """

    tracer_provider: Any = None
    meter_provider: Any = None


def resolve(telemetry: object) -> Tracer | None:
    """The instrumentation a client's ``telemetry=`` setting asks for, or None for none.

    None means on when the OpenTelemetry API is installed; True means on, and the API is
    required; False means off.

    Raises:
        ValidationError: ``telemetry`` is not a bool, None or `Telemetry`, or it asks for
            telemetry and ``opentelemetry-api`` is not installed.
    """
    if telemetry is None:
        return _instruments(None, None) if available() else None
    if telemetry is False:
        return None
    if telemetry is True:
        telemetry = Telemetry()
    if not isinstance(telemetry, Telemetry):
        raise ValidationError("telemetry", "must be True, False, None or a Telemetry")
    if not available():
        raise ValidationError("telemetry", "needs opentelemetry-api: pip install 'asyncbulk[otel]'")
    return _instruments(telemetry.tracer_provider, telemetry.meter_provider)


_cache: dict[tuple[int, int], tuple[Any, Any, Tracer]] = {}


def _ignore(_key: str, _value: Any) -> None:
    """Where attributes go when there is no span."""


@contextlib.contextmanager
def operation(
    tracer: Tracer | None, name: str, attributes: dict[str, Any]
) -> Iterator[Callable[[str, Any], None]]:
    """`Tracer.operation` when there is a tracer; otherwise nothing, at the cost of a call."""
    if tracer is None:
        yield _ignore
        return
    with tracer.operation(name, attributes) as set_attribute:
        yield set_attribute


def _instruments(tracer_provider: Any, meter_provider: Any) -> Tracer:
    # One set of instruments per pair of providers: creating an instrument twice under one
    # meter makes the SDK warn, and every client of a process shares the same instruments.
    # The entry holds the providers, so their ids cannot be reused by others while cached.
    key = (id(tracer_provider), id(meter_provider))
    found = _cache.get(key)
    if found is None or found[0] is not tracer_provider or found[1] is not meter_provider:
        found = _cache[key] = (
            tracer_provider,
            meter_provider,
            Tracer(tracer_provider, meter_provider),
        )
    return found[2]


def _clean_url(url: URL) -> str:
    """The URL without user or password, and without any registered secret."""
    if url.raw_user is not None or url.raw_password is not None:
        url = url.with_user(None)
    return scrub(str(url))


def _placeholder_meters(metrics: Any) -> bool:
    """Whether the global meter provider is the API's stand-in, whose instruments count nothing.

    Until an application sets one, the API answers a proxy of a private class (that hands its
    instruments real ones once a provider is set), or the no-op provider.
    """
    provider = metrics.get_meter_provider()
    return isinstance(provider, metrics.NoOpMeterProvider) or (
        type(provider).__name__ == "_ProxyMeterProvider"
    )


class Tracer:
    """The spans and instruments of asyncbulk under one pair of providers.

    It is also the session's `RequestObserver`: a span per try, and the request metrics.
    """

    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        """Get the tracer and the meter and create the instruments."""
        from opentelemetry import metrics, trace  # noqa: PLC0415 -- only with the extra

        self._trace = trace
        self.tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
        # A provider given, or a global one set (which can be set only once): spans record.
        self._recording = tracer_provider is not None
        self._looked_at = -math.inf
        self._metrics = metrics
        # A provider given, or a global one set: the instruments count.
        self._counting = meter_provider is not None or not _placeholder_meters(metrics)
        meter = metrics.get_meter(_SCOPE, __version__, meter_provider=meter_provider)
        self.requests = meter.create_counter(
            "asyncbulk.requests", unit="{request}", description="Tries sent, by answer status"
        )
        self.rate_limited = meter.create_counter(
            "asyncbulk.rate_limited", unit="{request}", description="Answers with status 429"
        )
        self.jobs_tracked = meter.create_up_down_counter(
            "asyncbulk.jobs.tracked", unit="{job}", description="Jobs being tracked"
        )
        self.detection_lag = meter.create_histogram(
            "asyncbulk.jobs.detection_lag",
            unit="s",
            description="Seconds from a job's finish on the server to its delivery",
        )
        self.entries = meter.create_counter(
            "asyncbulk.entries", unit="{entry}", description="Job entries streamed"
        )
        self._rates: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        meter.create_observable_gauge(
            "asyncbulk.send_rate",
            callbacks=[self._observe_rates],
            unit="{request}/s",
            description="The send rate in force, learned from 429s or configured",
        )

    def recording(self) -> bool:
        """Whether spans go anywhere: False until an application sets a tracer provider.

        Until then every span would be a no-op, so none is built: a try or a tracked job
        costs a clock read, not a span with its attributes. The global provider is looked up
        at most once a second (the lookup reads the environment), so spans start at most a
        second after an application sets one.
        """
        if not self._recording:
            now = time.monotonic()
            if now - self._looked_at < 1.0:
                return False
            self._looked_at = now
            trace = self._trace
            provider = trace.get_tracer_provider()
            self._recording = not isinstance(
                provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
            )
        return self._recording

    def observing(self) -> bool:
        """Whether a try would be reported at all: a span recorded or a request counted.

        Until an application sets a tracer or a meter provider, neither would: the session
        then skips the observer's hooks, and builds no `TryInfo` or `TryResult` for them. The
        global providers are looked up at most once a second, as `recording` does.
        """
        if self._counting or self._recording:
            return True
        if time.monotonic() - self._looked_at < 1.0:
            return False
        self._counting = not _placeholder_meters(self._metrics)
        return self.recording() or self._counting

    def watch_rate(self, session: Any, vendor: str) -> None:
        """Report ``session.stats.send_rate`` in the gauge while the session lives."""
        self._rates[session] = vendor

    def _observe_rates(self, _options: Any) -> Iterator[Any]:
        from opentelemetry.metrics import Observation  # noqa: PLC0415 -- only with the extra

        for session, vendor in list(self._rates.items()):
            stats: RequestStats = session.stats
            if stats.send_rate is not None:
                yield Observation(stats.send_rate, {"asyncbulk.vendor": vendor})

    # -- the session's observer ---------------------------------------------------------------

    def try_started(self, info: TryInfo) -> object:
        """Start the try's CLIENT span; no credential is in what it records.

        The attributes are given at the start, as the conventions ask, so a sampler sees them.
        None when no span would be recorded (`recording`).
        """
        if not self.recording():
            return None
        url = URL(info.url, encoded=True)
        attributes: dict[str, Any] = {
            "http.request.method": info.method,
            "server.address": url.host or "",
            "url.full": _clean_url(url),
            "asyncbulk.vendor": info.vendor,
        }
        if url.port is not None:
            attributes["server.port"] = url.port
        if info.attempt > 1:
            attributes["http.request.resend_count"] = info.attempt - 1
        if info.job_id is not None:
            attributes["asyncbulk.job.id"] = info.job_id
        return self.tracer.start_span(
            info.method, kind=self._trace.SpanKind.CLIENT, attributes=attributes
        )

    def try_ended(self, info: TryInfo, context: object, result: TryResult) -> None:
        """End the span (if one was started) with the status or the error, and count the try."""
        span: Any = context
        status = result.status
        error_type: str | None = None
        if status is not None:
            if status >= 400:  # noqa: PLR2004
                error_type = str(status)
        elif result.error is not None:
            error_type = type(result.error).__name__
        else:
            error_type = "cancelled"
        metric: dict[str, Any] = {
            "asyncbulk.vendor": info.vendor,
            "http.request.method": info.method,
        }
        if status is not None:
            metric["http.response.status_code"] = status
        if error_type is not None:
            metric["error.type"] = error_type
        if span is not None:
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            if error_type is not None:
                span.set_attribute("error.type", error_type)
                span.set_status(self._trace.StatusCode.ERROR)
            span.end()
        self.requests.add(1, metric)
        if status == 429:  # noqa: PLR2004
            self.rate_limited.add(1, {"asyncbulk.vendor": info.vendor})

    # -- submissions --------------------------------------------------------------------------

    @contextlib.contextmanager
    def operation(
        self, name: str, attributes: dict[str, Any]
    ) -> Iterator[Callable[[str, Any], None]]:
        """An INTERNAL span, current while the block runs; the block may add attributes.

        An exception leaving the block marks the span as an error.
        """
        with self.tracer.start_as_current_span(
            name, kind=self._trace.SpanKind.INTERNAL, attributes=attributes
        ) as span:
            yield span.set_attribute

    def jobs(self, kind: str) -> JobTelemetry:
        """The wait spans and job metrics of one tracker of jobs of ``kind``."""
        return JobTelemetry(self, kind)


class JobTelemetry:
    """A tracker's jobs: their count, their detection lag, a span per wait.

    Only the time each job was added is kept while it is tracked (an int in a dict).
    """

    def __init__(self, tracer: Tracer, kind: str) -> None:
        """For the jobs of ``kind`` ("job", "task")."""
        self._tracer = tracer
        self._kind = kind
        self._attributes = {"asyncbulk.job.kind": kind}
        self._added: dict[str, int] = {}

    def added(self, job_id: str) -> None:
        """A job is tracked from now."""
        if job_id not in self._added:
            self._added[job_id] = time.time_ns()
            self._tracer.jobs_tracked.add(1, self._attributes)

    def added_many(self, job_ids: list[str]) -> None:
        """Jobs tracked from now, not tracked before (`added` for each, at one time)."""
        now = time.time_ns()
        added = self._added
        before = len(added)
        for job_id in job_ids:
            added.setdefault(job_id, now)
        if len(added) > before:
            self._tracer.jobs_tracked.add(len(added) - before, self._attributes)

    def ended(self, job_id: str, outcome: str, lag: float | None = None) -> None:
        """The job left the tracker: delivered (finished or failed), expired, lost or removed."""
        start = self._added.pop(job_id, None)
        if start is None:
            return
        tracer = self._tracer
        tracer.jobs_tracked.add(-1, self._attributes)
        if lag is not None:
            tracer.detection_lag.record(lag, self._attributes)
        if not tracer.recording():
            return
        attributes: dict[str, Any] = {
            **self._attributes,
            "asyncbulk.job.id": job_id,
            "asyncbulk.job.outcome": outcome,
        }
        if lag is not None:
            attributes["asyncbulk.job.detection_lag"] = lag
        span = tracer.tracer.start_span(
            f"{self._kind} wait",
            start_time=start,
            attributes=attributes,
        )
        if outcome not in {"finished", "removed"}:
            span.set_status(tracer._trace.StatusCode.ERROR)  # noqa: SLF001 -- one module
        span.end()

    def abandon(self) -> None:
        """The tracker ended with jobs still tracked: each wait ends as ``unfinished``."""
        for job_id in list(self._added):
            self.ended(job_id, "unfinished")
