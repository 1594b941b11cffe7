"""`ChakraClient`: bulk process updates and creates, background jobs, and their entries."""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import weakref
from collections.abc import AsyncIterable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import attrs
import msgspec
import orjson

from asyncbulk._exceptions import (
    APIError,
    AsyncBulkError,
    AuthenticationError,
    DeadlineExceededError,
    IncompleteListingError,
    NotFoundError,
    ProtocolError,
    SubmissionError,
    TransportError,
    ValidationError,
)
from asyncbulk._flow import Priority
from asyncbulk._handles import Origin, account_of, read_handle
from asyncbulk._journal import SubmissionLog, TrackingLog, open_journal
from asyncbulk._outcome import Outcome, outcome_of
from asyncbulk._pagination import ClosingIterator, OrderedPages, check_prefetch
from asyncbulk._session import _BODY_EXCERPT, BearerAuth, ChakraEnvelope, ClientBase, Session
from asyncbulk._telemetry import Telemetry, Tracer
from asyncbulk._telemetry import operation as telemetry_span
from asyncbulk._telemetry import resolve as resolve_telemetry
from asyncbulk._tracking import TrackingOptions
from asyncbulk._tracking._options import check_seconds, resolve_tracking
from asyncbulk._tracking._requests import request_keywords
from asyncbulk._transport import DEFAULT_MAX_RESPONSE_BYTES
from asyncbulk.chakra._models import (
    ENTRY_STATUSES,
    BackgroundJob,
    JobEntry,
    ProcessCreate,
    ProcessUpdate,
    RawEntry,
    entry_ids,
    is_data_batch,
    lazy_entries,
    lean_entry_page,
    make_chakra_converter,
    structure_job,
)
from asyncbulk.chakra._resume import settle_interrupted, submission_from_handle
from asyncbulk.chakra._submission import (
    BatchEncoder,
    BatchOutcome,
    BatchState,
    BulkSubmission,
    Operation,
    SentItems,
)

if TYPE_CHECKING:
    import os
    import ssl as _ssl
    from collections.abc import AsyncGenerator, Callable, Hashable

    import aiohttp

    from asyncbulk._flow import RateLimit, SharedLimiter
    from asyncbulk._journal import JobKind, Journal, Pending
    from asyncbulk._retry import RetryPolicy
    from asyncbulk._session import Credential, Response, Timeouts
    from asyncbulk._tracking import SweepView, TrackerStats, TrackIterator

__all__ = ["ChakraClient", "ChakraJobSource", "JobEntries", "JobEntryPages"]

DEFAULT_BASE_URL: Final = "https://api.chakrahq.com"
#: The entries API's largest page, and its default.
MAX_PAGE_SIZE: Final = 100
#: Full pages in a row holding only entries seen before, after which a listing is taken to
#: repeat itself and ends.
_STALE_PAGES: Final = 10
#: Entry ids kept before the job is asked whether it has finished (then again at each doubling
#: while it runs): a finished job's offsets are stable, so its later ids need not be kept.
_KEEP_BEFORE_ASKING: Final = 10_000
_UUID_TEXT: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: The largest batch the library will send in one request (the vendor documents no limit).
MAX_BATCH_SIZE: Final = 10_000
#: The longest grace a cancelled submission gives the batches on the wire, seconds.
_MAX_CANCEL_GRACE: Final = 300.0
#: A 400 to a bulk request is about the request's shape (Chakra reports a bad item as an
#: INVALID entry, not as a refusal), and 405 about its method: every batch would meet them.
_SHAPE_STATUSES: Final = frozenset({400, 405})

_JOB_PATH: Final = "/v1/ext/background-job/{job_id}"
_ENTRIES_PATH: Final = "/v1/ext/background-job/{job_id}/entries"
_UPDATE_PATH: Final = "/v1/ext/procedure/{procedure}/process"
_CREATE_PATH: Final = "/v1/ext/procedure/{procedure}/process/bulk-create"
_MODELS: Final = {ProcessUpdate}
#: Items read, checked and encoded at a time (`BatchEncoder`): so few of the caller's objects
#: are alive at once that the cyclic collector, run every 700 new objects by default, seldom
#: runs during a submission, let alone meets them.
_SLICE: Final = 128

T = TypeVar("T")


def _check_int(field: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(field, f"must be an integer from {low} to {high}, not {value!r}")
    return value


def _check_completion_status(value: object) -> str | None:
    if value is not None and value not in ENTRY_STATUSES:
        raise ValidationError(
            "completion_status", f"must be one of {', '.join(ENTRY_STATUSES)}, not {value!r}"
        )
    return value


def _tracking_options(
    tracking: TrackingOptions | None, poll_interval: object, max_in_flight: int
) -> TrackingOptions:
    """The client's tracking options, from ``tracking=`` or the deprecated ``poll_interval``."""
    pair: tuple[Any, Any] = (None, None)
    if poll_interval is not None:
        if not isinstance(poll_interval, tuple) or len(poll_interval) != 2:  # noqa: PLR2004 -- a pair
            raise ValidationError("poll_interval", "must be a (first, largest) pair of seconds")
        pair = poll_interval
    default = TrackingOptions(max_in_flight=max(1, max_in_flight // 2))
    options = resolve_tracking(
        tracking,
        default,
        {"min_interval": ("poll_interval", pair[0]), "max_interval": ("poll_interval", pair[1])},
    )
    if options.max_in_flight is None:
        return attrs.evolve(options, max_in_flight=default.max_in_flight)
    return options


def _total(meta: Mapping[str, Any], url: str) -> int | None:
    total = meta.get("total")
    if total is None:
        return None
    if isinstance(total, str) and total.isascii() and total.isdigit():
        total = int(total)
    if type(total) is not int or total < 0:
        raise ProtocolError(f"_meta.total is not a count: {total!r}", method="GET", url=url)
    return total


class ChakraClient(ClientBase):
    """An asyncio client for ChakraHQ's bulk process APIs and their background jobs.

    Use it as an async context manager (or call `aclose`)::

        async with ChakraClient(token) as chakra:
            submission = await chakra.bulk_update_processes("tele_sales", updates)
            await submission.wait(timeout=600)
            summary = await submission.summary()

    Args:
        token: the access token shown in a Chakra API key's details, or a function (plain or
            async) that returns the current one: it is asked on first use and again once
            after a 401, so a rotated token is picked up; a fixed token ends at a 401.
        base_url: the API's base URL.
        retry: the retry policy for reads; bulk submissions use a stricter one derived from it
            (see `bulk_update_processes`).
        timeouts: the time limits of one try of a request.
        max_in_flight: requests in flight at once, all methods together.
        session: an aiohttp session of your own, used as is and never closed here.
        allow_insecure_http: allow plain http:// to a host that is not loopback.
        trust_env: let the client's own aiohttp session read proxy settings and ``.netrc``
            from the environment.
        ssl: True to verify the server's certificate, False not to, or an `ssl.SSLContext`
            (a custom CA, a client certificate).
        proxy: the URL of an HTTP proxy every request goes through.
        max_response_bytes: the largest answer read (32 MiB by default); a larger one raises
            `ProtocolError` and its connection is closed unread.
        rate_limit: a cap on the send rate (`RateLimit`) for a known quota, or a rate shared
            with other processes (a `SharedLimiter`, e.g. `asyncbulk.redis.RedisRateLimit`);
            without it the rate is unlimited until the server answers 429, and then learned.
        max_batches_in_flight: the default number of batches a bulk submission keeps in flight.
        tracking: how jobs are followed (`TrackingOptions`); by default polls start 0.25 s
            apart and back off to 5 s, with half of ``max_in_flight`` polling at once.
        poll_interval: deprecated: ``tracking=TrackingOptions(min_interval=a, max_interval=b)``.
        journal: where submissions and tracked jobs are recorded to resume after a restart: a
            file path (a `SQLiteJournal` the client opens and closes) or a `Journal` of your own
            (used as is, never closed here); None keeps them in memory.
        account: a stable name for the account, for handles and journals; needed only when
            the credential is a function (by default the credential's fingerprint names it).
        telemetry: OpenTelemetry spans and metrics (`asyncbulk.Telemetry`): None (the
            default) reports to the global providers whenever ``opentelemetry-api`` is
            installed (a no-op until an SDK sets a provider); True requires the API; False
            reports nothing; a `Telemetry` names providers of your own.

    Attributes:
        converter: the cattrs converter of the Chakra models (wire names live in its hooks).
        job_source: what the shared job tracker polls (`ChakraJobSource`), for building a
            `JobTracker` of your own.

    Raises:
        ValidationError: a setting is wrong (an empty token, a bad URL, ...).
    """

    def __init__(
        self,
        token: Credential,
        *,
        base_url: str = DEFAULT_BASE_URL,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        max_in_flight: int = 16,
        session: aiohttp.ClientSession | None = None,
        allow_insecure_http: bool = False,
        trust_env: bool = False,
        ssl: bool | _ssl.SSLContext = True,
        proxy: str | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        rate_limit: RateLimit | SharedLimiter | None = None,
        max_batches_in_flight: int = 4,
        tracking: TrackingOptions | None = None,
        poll_interval: tuple[float, float] | None = None,
        journal: Journal | str | os.PathLike[str] | None = None,
        account: str | None = None,
        telemetry: bool | Telemetry | None = None,
    ) -> None:
        """Check the settings; no connection is made before the first request."""
        tracer = resolve_telemetry(telemetry)
        self._session = Session(
            base_url=base_url,
            auth=BearerAuth(token, field="token"),
            envelope=ChakraEnvelope(),
            retry=retry,
            timeouts=timeouts,
            max_in_flight=max_in_flight,
            session=session,
            allow_insecure_http=allow_insecure_http,
            name="ChakraClient",
            vendor="chakra",
            trust_env=trust_env,
            ssl=ssl,
            proxy=proxy,
            max_response_bytes=max_response_bytes,
            rate_limit=rate_limit,
            observer=tracer,
        )
        self._telemetry = tracer
        if tracer is not None:
            tracer.watch_rate(self._session, "chakra")
        self._max_batches = _check_int("max_batches_in_flight", max_batches_in_flight, 1, 1024)
        self._tracking = _tracking_options(tracking, poll_interval, self._session.max_in_flight)
        # A bulk PATCH sent twice starts two jobs: retried only when it was certainly not acted on.
        self._submit_retry = self._session.retry.for_unrepeatable()
        self.converter = make_chakra_converter()
        self._iterators: weakref.WeakSet[JobEntryPages] = weakref.WeakSet()
        self.job_source = ChakraJobSource(self)
        self._origin = Origin(
            vendor="chakra",
            base_url=str(self._session.base_url),
            account=account_of("chakra", token, account),
        )
        self._journal, self._owns_journal = open_journal(journal, self._origin)
        # Only a journal the caller gave keeps accepted jobs pending until delivered: the
        # default in-memory one would otherwise grow with every job never tracked.
        self._follow: JobKind | None = None if journal is None else "job"

    async def aclose(self) -> None:
        """Stop every entries iterator still reading, close the session and the journal it opened.

        Idempotent.
        """
        for pages in list(self._iterators):
            await pages.aclose()
        try:
            await super().aclose()
        finally:
            if self._owns_journal:
                await self._journal.aclose()

    @property
    def journal(self) -> Journal:
        """Where this client records submissions and tracked jobs."""
        return self._journal

    # -- handles and resuming ------------------------------------------------------------

    async def resume(self, handle: Mapping[str, Any]) -> BackgroundJob | BulkSubmission:
        """Rebuild the live object a handle names, fetching its current state.

        A job's handle gives the `BackgroundJob` as it stands now; a submission's gives a
        `BulkSubmission` whose accepted batches' jobs are fetched, and whose other batches
        are listed in ``failed_batches``. Neither a handle nor the journal holds the items:
        a resumed submission gives every batch's positions, state, job and error, `wait`,
        `summary` and the failed entries of its jobs as the server records them
        (``failed_updates`` rebuilds them from the entries, since it cannot match them to
        items), but not the items of batches rejected, unknown or not sent: read those
        from your input by position.

        Args:
            handle: what `BackgroundJob.handle` or a submission's ``handle()`` gave, possibly
                after a trip through ``json.dumps`` and ``json.loads``.

        Raises:
            ValidationError: naming the field, before any request: another handle version,
                vendor, base URL or account, a kind other than ``job`` or ``submission``, or
                a malformed field.
            NotFoundError: a job the handle names does not exist (any more).
        """
        kind, fields = read_handle(handle, self._origin, ("job", "submission"))
        if kind == "job":
            return await self.get_background_job(fields["job_id"])
        return await submission_from_handle(fields, self.get_background_job, client=self)

    async def resume_pending(self) -> Pending:
        """What this client's journal holds unfinished, for this base URL and account.

        Tracked jobs not yet delivered come back as `TrackedJob`s (``id``, ``handle()``, and
        ``key`` to deduplicate a delivery), to track again: ``track_jobs(j.id for j in
        pending.jobs)``. Submissions that never ended come back with their batches as
        recorded, except that a batch left ``sending`` by a crash is settled first: Chakra
        gives no way to tell whether it was accepted, so it becomes ``unknown``, with an error
        saying so, and that is recorded. End a submission you have dealt with with
        ``journal.end_submission(record.id)``.

        Raises:
            JournalError: the journal cannot be read or written.
        """
        pending = await self._journal.pending(self._origin)
        submissions = [await settle_interrupted(self._journal, s) for s in pending.submissions]
        return attrs.evolve(pending, submissions=tuple(submissions))

    # -- background jobs -----------------------------------------------------------------

    async def get_background_job(
        self,
        job_id: str,
        *,
        deadline: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the per-call limit of every client call
    ) -> BackgroundJob:
        """Fetch one background job, with its entry counts per status.

        Args:
            job_id: the background job's id.
            deadline: when the call must be over, in `anyio.current_time` seconds.
            timeout: seconds the call may take, retries included (each try is still bounded
                by the client's ``timeouts``).

        Raises:
            ValidationError: `job_id` is empty.
            NotFoundError: there is no such job.
            ProtocolError: the answer lacks the job's id or has a field of the wrong type.
            DeadlineExceededError: the deadline or timeout came first.
        """
        path = self._session.path(_JOB_PATH, job_id=job_id)
        response = await self._session.request(
            "GET", path, priority=Priority.DETECT, job_id=job_id, deadline=deadline, timeout=timeout
        )
        return _job_from(response, origin=self._origin)

    async def wait_for_job(
        self,
        job_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- the contract's name; a JobTimeoutError names the job
        on_progress: Callable[[TrackerStats], None] | None = None,
    ) -> BackgroundJob:
        """Poll a job until it finishes, and return it.

        Finished means done, successfully or not: see `BackgroundJob.is_finished`.

        Args:
            job_id: the background job id.
            timeout: seconds to wait at most; None waits as long as it takes.
            on_progress: called with a `TrackerStats` snapshot at most every 0.5 s and once at
                the end; its ``entries`` holds the job's entry counts per completion status.

        Raises:
            JobTimeoutError: the deadline passed first (``unfinished`` names the job).
            ValidationError: `job_id` is empty.
        """
        from asyncbulk._tracking import wait_for  # noqa: PLC0415 -- shared module, loaded on use

        self._session.path(_JOB_PATH, job_id=job_id)
        return await wait_for(
            self.job_source,
            job_id,
            timeout=timeout,
            options=self._tracking,
            on_progress=on_progress,
            log=TrackingLog(self._journal, self._origin, "job"),
        )

    def track_jobs(
        self,
        job_ids: Iterable[str],
        *,
        timeout: float | None = None,
        on_progress: Callable[[TrackerStats], None] | None = None,
    ) -> TrackIterator[BackgroundJob]:
        """Follow many jobs and yield each once, as it finishes.

        Use ``async for job in chakra.track_jobs(ids)``; ``async with`` around it stops the
        polling at once when you leave early. The client's journal records each job added,
        finished when seen, and delivered (on disk) once you ask for the next job or the loop
        ends normally: after a restart `resume_pending` names the jobs not delivered.

        Args:
            job_ids: the background job ids.
            timeout: seconds for all of them at most; None waits as long as it takes.
            on_progress: called with a `TrackerStats` snapshot at most every 0.5 s and once
                when the iteration ends; its ``entries`` sums the entry counts per completion
                status over the jobs, so a large job shows movement before it finishes.

        Raises:
            ValidationError: an id is empty (named with its position, ``job_ids[3]``).
            JobTimeoutError: while iterating, the deadline passed with jobs unfinished.
        """
        from asyncbulk._tracking import track  # noqa: PLC0415 -- shared module, loaded on use

        ids = list(job_ids) if not isinstance(job_ids, str) else [job_ids]
        for index, job_id in enumerate(ids):
            try:
                self._session.path(_JOB_PATH, job_id=job_id)
            except ValidationError as exc:
                raise ValidationError(f"job_ids[{index}]", exc.reason) from None
        return track(
            self.job_source,
            ids,
            timeout=timeout,
            options=self._tracking,
            on_progress=on_progress,
            log=TrackingLog(self._journal, self._origin, "job"),
        )

    # -- entries -------------------------------------------------------------------------

    def iter_job_entries(
        self,
        job_id: str,
        *,
        completion_status: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
        prefetch: int = 16,
        timeout: float | None = None,
    ) -> JobEntries:
        """Stream a job's entries, optionally of one completion status.

        Reads the first page, then fetches the following pages concurrently (`prefetch` in
        flight or waiting), and yields entries in listing order, so memory stays bounded by
        about ``prefetch x page_size`` entries however large the job. ``skip`` is computed
        here; the server's ``_meta.next`` is never followed. Each entry id is yielded at most
        once: the first 10,000 ids are remembered; past them the job is asked (one GET) whether
        it has finished. A finished job's offsets are stable, so the ids of the pages read after
        that are checked but not kept, until the listing shows them moving (a page answered
        short, an id repeated): every id is kept again from there. A running job's are kept,
        a UUID in 16 bytes.
        Entries are built straight from the parsed JSON, their fields read on first use.

        The stream never ends short of ``_meta.total`` without saying so: a page answered short
        before the total is read on from the next offset, an empty one is read once more, and
        when entries still cannot be read an `IncompleteListingError` (naming how many were
        read, the total and the offset) is raised after every entry that could be read.

        A consistent listing needs a finished job: while a job runs, its entries change status,
        so a filtered listing shifts between pages and an entry may be missed (never repeated);
        each page's own ``_meta.total`` is taken as the end.

        ``async for entry in chakra.iter_job_entries(job_id)``; breaking out stops the fetches
        ahead (use ``async with`` around it to stop them at once whatever holds the iterator).

        Args:
            job_id: the background job id.
            completion_status: INVALID, NOT_STARTED, IN_PROGRESS, SUCCESS, ERROR or CANCELLED.
            page_size: entries per request, 1 to 100.
            prefetch: pages fetched ahead, at least 1.
            timeout: seconds each page's request may take, retries included (each try is
                still bounded by the client's ``timeouts``); None for the client's limits.

        Raises:
            ValidationError: before any request, for a bad argument.
            IncompleteListingError: while iterating, the listing broke off before its total.
            DeadlineExceededError: while iterating, a page's request outlasted ``timeout``.
        """
        return JobEntries(
            self.iter_job_entry_pages(
                job_id,
                completion_status=completion_status,
                page_size=page_size,
                prefetch=prefetch,
                timeout=timeout,
            )
        )

    def iter_job_entry_pages(
        self,
        job_id: str,
        *,
        completion_status: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
        prefetch: int = 16,
        timeout: float | None = None,
    ) -> JobEntryPages:
        """Stream a job's entries page by page: each item is a list of `JobEntry`.

        The same as `iter_job_entries` (see there), a page at a time; a page may hold fewer
        entries than `page_size` when duplicates were dropped.

        Raises:
            ValidationError: before any request, for a bad argument.
            IncompleteListingError: while iterating, the listing broke off before its total.
        """
        path = self._session.path(_ENTRIES_PATH, job_id=job_id)
        pages = JobEntryPages(
            self._session,
            path,
            job_path=self._session.path(_JOB_PATH, job_id=job_id),
            completion_status=_check_completion_status(completion_status),
            page_size=_check_int("page_size", page_size, 1, MAX_PAGE_SIZE),
            prefetch=check_prefetch(prefetch),
            telemetry=self._telemetry,
            timeout=check_seconds("timeout", timeout, optional=True),
        )
        self._iterators.add(pages)
        return pages

    # -- bulk submissions ----------------------------------------------------------------

    async def bulk_update_processes(
        self,
        procedure: str,
        updates: Iterable[ProcessUpdate | Mapping[str, Any]]
        | AsyncIterable[ProcessUpdate | Mapping[str, Any]],
        *,
        batch_size: int = 1000,
        max_batches_in_flight: int | None = None,
        max_consecutive_failures: int = 5,
        cancel_grace: float = 10.0,
        on_batch: Callable[[BackgroundJob, range], object] | None = None,
        on_state: Callable[[BatchOutcome], object] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- a per-request bound, not a scope
        journal_note: Mapping[str, Any] | None = None,
    ) -> BulkSubmission:
        """Send process updates in batches; each accepted batch becomes one background job.

        `updates` is read lazily, a batch at a time. Items are `ProcessUpdate`s or mappings in
        the wire form (see `ProcessUpdate.from_mapping`). Every item of a batch is validated
        before the batch is sent, so invalid input in the first batch sends nothing at all.

        Every input position ends in exactly one batch state (`BatchOutcome`): ``accepted``
        (with its job; Chakra may name none), ``rejected`` (certainly not applied: a 4xx, a
        429 or 503 once retries ran out, no connection), ``unknown`` (sent, and then the
        connection dropped, the read timed out, a 408 or another 5xx: it may have been
        applied), or ``not_sent``. A bulk PATCH is not idempotent, so a batch is sent again
        only when the server certainly did not act on it (the rule of `asyncbulk.Outcome`).

        A failed batch does not stop the submission: later batches are sent. Sending stops
        only on an error every later batch would meet (401, 403, a 404 for the procedure, a
        400 or 405 about the request's shape), on an invalid item, or after
        `max_consecutive_failures` failed batches in a row (a circuit); the rest of the input
        is then read through, unsent, and named as ``not_sent`` batches.

        When every batch is accepted, the submission is returned. Otherwise a
        `SubmissionError` is raised, of the same shape whatever the input's size: its
        ``submission`` accounts for every position, ``stopped_by`` is the error that stopped
        sending (an `AuthenticationError` for a wrong token, whether the input is one batch
        or forty), and ``errors`` name the failed batches. Only a `ValidationError` in the
        first batch, before any request, is raised as itself.

        Cancelled mid-submission, a caller can rely on this: no batch is started after the
        cancellation; each batch already on the wire is given `cancel_grace` seconds to be
        answered, and then ends ``accepted`` (reported through `on_batch` and `on_state`),
        ``rejected`` or ``unknown`` (reported through `on_state`) before the cancellation
        goes on. Every batch that reached the server is thus reported; a position never
        reported as ``sending`` was never sent.

        Args:
            procedure: the procedure id or short id.
            updates: the updates, any iterable or async iterable.
            batch_size: items per request, 1 to 10,000.
            max_batches_in_flight: batches sent at once; the client's default when None.
            max_consecutive_failures: failed batches in a row after which sending stops.
            cancel_grace: seconds a batch on the wire may take to be answered once the
                submission is cancelled (0 to 300).
            on_batch: called with each batch accepted with a job, and its input positions, as
                it comes (for progress displays); an exception it raises stops the submission.
            on_state: called with every batch's `BatchOutcome` at each change of state
                (``sending``, then its final state; ``not_sent`` once); for journals.
            timeout: seconds each batch's request may take, its retries included (each try
                is still bounded by the client's ``timeouts``); a batch that runs out of time
                before it could be sent is ``rejected`` (a try cut short on the wire is
                ``unknown``). None for the client's limits.
            journal_note: JSON data kept with the submission in the client's journal (read
                back as ``SubmissionRecord.request["note"]`` by `resume_pending`), for
                whoever finishes it after a restart; never put a credential in it.

        The client's journal records the submission as it goes: each batch ``sending``
        (on disk) before its request leaves, ``accepted`` with its job id (on disk) before
        ``on_batch`` or ``on_state`` hears of it, and its failure when known. The submission
        leaves the journal's pending work once every batch is final; a cancelled or killed
        one stays, for `resume_pending`, and `BulkSubmission.handle` names it.

        Returns:
            The submission, every batch of it accepted.

        Raises:
            ValidationError: a bad argument, or a bad item in the first batch (nothing sent).
            SubmissionError: some batch was not accepted (see above).
        """
        return await self._submit(
            "update",
            _UPDATE_PATH,
            procedure,
            updates,
            batch_size=batch_size,
            max_batches_in_flight=max_batches_in_flight,
            max_consecutive_failures=max_consecutive_failures,
            cancel_grace=cancel_grace,
            on_batch=on_batch,
            on_state=on_state,
            timeout=timeout,
            journal_note=journal_note,
        )

    async def bulk_create_processes(
        self,
        procedure: str,
        records: Iterable[ProcessCreate | Mapping[str, Any]]
        | AsyncIterable[ProcessCreate | Mapping[str, Any]],
        *,
        batch_size: int = 1000,
        max_batches_in_flight: int | None = None,
        max_consecutive_failures: int = 5,
        cancel_grace: float = 10.0,
        on_batch: Callable[[BackgroundJob, range], object] | None = None,
        on_state: Callable[[BatchOutcome], object] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- a per-request bound, not a scope
        journal_note: Mapping[str, Any] | None = None,
    ) -> BulkSubmission:
        """Create processes in batches (``POST .../process/bulk-create``, a bare JSON array).

        Records are `ProcessCreate`s or mappings such as ``{"lead_id": "L1", "data": {...},
        "state": ...}`` (see `ProcessCreate.from_mapping`). Batching, validation, retries,
        batch states, stopping, cancellation, ``timeout`` and the journal work as in
        `bulk_update_processes` (``journal_note`` too). The
        vendor marks this API "developing" and its reference shows a 200 answer of ``{}``: a
        2xx answer without a job id accepts its batch with no job to follow (``job`` None, a
        warning in ``warnings``), and the submission goes on.

        Raises:
            ValidationError: a bad argument, or a bad record in the first batch (nothing sent).
            SubmissionError: some batch was not accepted.
        """
        return await self._submit(
            "create",
            _CREATE_PATH,
            procedure,
            records,
            batch_size=batch_size,
            max_batches_in_flight=max_batches_in_flight,
            max_consecutive_failures=max_consecutive_failures,
            cancel_grace=cancel_grace,
            on_batch=on_batch,
            on_state=on_state,
            timeout=timeout,
            journal_note=journal_note,
        )

    async def _submit(  # noqa: C901, PLR0912, PLR0915 -- the submission loop reads best in one place
        self,
        operation: Operation,
        template: str,
        procedure: str,
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        batch_size: int,
        max_batches_in_flight: int | None,
        max_consecutive_failures: int,
        cancel_grace: float,
        on_batch: Callable[[BackgroundJob, range], object] | None,
        on_state: Callable[[BatchOutcome], object] | None,
        timeout: float | None,  # noqa: ASYNC109 -- a per-request bound, not a scope
        journal_note: Mapping[str, Any] | None,
    ) -> BulkSubmission:
        name = "updates" if operation == "update" else "records"
        path = self._session.path(template, procedure=procedure)
        size = _check_int("batch_size", batch_size, 1, MAX_BATCH_SIZE)
        in_flight = (
            self._max_batches
            if max_batches_in_flight is None
            else _check_int("max_batches_in_flight", max_batches_in_flight, 1, 1024)
        )
        circuit = _check_int("max_consecutive_failures", max_consecutive_failures, 1, 1_000_000)
        per_request = check_seconds("timeout", timeout, optional=True)
        if (
            isinstance(cancel_grace, bool)
            or not isinstance(cancel_grace, int | float)
            or not 0 <= cancel_grace <= _MAX_CANCEL_GRACE
        ):
            raise ValidationError(
                "cancel_grace", f"must be 0 to {_MAX_CANCEL_GRACE:g} seconds, not {cancel_grace!r}"
            )
        if not isinstance(items, Iterable | AsyncIterable) or isinstance(items, str | Mapping):
            raise ValidationError(name, "must be an iterable or async iterable of items")
        if journal_note is not None and not isinstance(journal_note, Mapping):
            raise ValidationError("journal_note", "must be a mapping of JSON data")
        check = _update_checker(name) if operation == "update" else _create_checker(name)
        method = "PATCH" if operation == "update" else "POST"
        log = await SubmissionLog.begin(
            self._journal,
            self._origin,
            target=procedure,
            operation=operation,
            request=None if journal_note is None else {"note": dict(journal_note)},
        )
        outcomes: dict[int, BatchOutcome] = {}
        slots = anyio.Semaphore(in_flight)
        wire_scopes: set[anyio.CancelScope] = set()
        stopped_by: BaseException | None = None
        failures_in_a_row = 0
        position = 0

        def report(outcome: BatchOutcome) -> None:
            if on_state is not None:
                on_state(outcome)
            if outcome.job is not None and on_batch is not None:
                on_batch(outcome.job, outcome.positions)

        async def send(body: bytes, sent: SentItems, positions: range) -> None:
            nonlocal stopped_by, failures_in_a_row
            start, stop = positions.start, positions.stop
            try:
                outcome: BatchOutcome | None = None
                # Shielded: a batch on the wire when the caller cancels is given `cancel_grace`
                # seconds to be answered, so that what it did is known, not guessed.
                with anyio.CancelScope(shield=True) as scope:
                    wire_scopes.add(scope)
                    try:
                        response = await self._session.request(
                            method,
                            path,
                            # Encoded once, with the batch: the session sends it as it is.
                            json_body=orjson.Fragment(body),
                            idempotent=False,
                            retry=self._submit_retry,
                            timeout=per_request,
                        )
                        job, warnings = _acknowledged(response, method)
                        if job is not None:
                            job = attrs.evolve(job, origin=self._origin)
                        outcome = BatchOutcome(
                            start, stop, "accepted", job=job, warnings=warnings, items=sent
                        )
                    except (APIError, TransportError, ProtocolError, DeadlineExceededError) as exc:
                        certain = outcome_of(exc) is Outcome.NOT_APPLIED
                        state: BatchState = "rejected" if certain else "unknown"
                        outcome = BatchOutcome(start, stop, state, error=exc, items=sent)
                    finally:
                        wire_scopes.discard(scope)
                if outcome is None:
                    outcome = BatchOutcome(
                        start,
                        stop,
                        "unknown",
                        error=TransportError(
                            f"no answer within {cancel_grace:g} s of the submission's cancellation",
                            method=method,
                            url=f"{self._session.base_url}{path}",
                            sent=True,
                        ),
                        items=sent,
                    )
                outcomes[start] = outcome
                # Shielded: what became of a batch on the wire is recorded even when the
                # caller cancels, and its job id is on disk before anyone hears of it.
                with anyio.CancelScope(shield=True):
                    if outcome.state == "accepted":
                        await log.accepted(positions, outcome.job_id, track=self._follow)
                    else:
                        state = "rejected" if outcome.state == "rejected" else "unknown"
                        await log.failed(positions, state, outcome.message or "")
                if outcome.state == "accepted":
                    failures_in_a_row = 0
                else:
                    failures_in_a_row += 1
                    error = outcome.error
                    if stopped_by is None and (
                        _stops_every_batch(error) or failures_in_a_row >= circuit
                    ):
                        stopped_by = error
                report(outcome)
            finally:
                slots.release()

        async def traced_send(body: bytes, sent: SentItems, positions: range) -> None:
            attributes = {
                "asyncbulk.vendor": "chakra",
                "asyncbulk.procedure": procedure,
                "asyncbulk.batch.start": positions.start,
                "asyncbulk.batch.stop": positions.stop,
            }
            with telemetry_span(self._telemetry, f"chakra bulk {operation}", attributes) as note:
                await send(body, sent, positions)
                outcome = outcomes.get(positions.start)
                if outcome is not None:
                    note("asyncbulk.batch.state", outcome.state)
                    if outcome.job is not None:
                        note("asyncbulk.job.id", outcome.job.id)
                    if outcome.error is not None:
                        note("error.type", type(outcome.error).__name__)

        async def watch_cancellation(done: anyio.Event) -> None:
            try:
                await done.wait()
            finally:
                if not done.is_set():
                    deadline = anyio.current_time() + cancel_grace
                    for scope in wire_scopes:
                        scope.deadline = min(scope.deadline, deadline)

        def stopped() -> BaseException | None:
            # Read through a call: the send tasks set it while this loop awaits.
            return stopped_by

        async def not_sent(raw: list[Any], start: int, error: BaseException | None) -> int:
            outcome = BatchOutcome(
                start, start + len(raw), "not_sent", error=error, items=tuple(raw)
            )
            outcomes[start] = outcome
            await log.not_sent(outcome.positions, outcome.message)
            report(outcome)
            return outcome.stop

        try:
            async with anyio.create_task_group() as group:
                done = anyio.Event()
                group.start_soon(watch_cancellation, done)
                # The batch being read: its encoder, or its items once it will not be sent.
                batch: BatchEncoder | list[Any] | None = None
                refusal: BaseException | None = None
                async with contextlib.aclosing(_slices(items, size)) as slices:
                    async for part, ends in slices:
                        if batch is None:
                            if not part:
                                continue  # the input ended with the last batch
                            # A batch begins: it waits for its place among those in flight.
                            if stopped() is None:
                                await slots.acquire()
                                if stopped() is not None:
                                    slots.release()
                            if stopped() is None:
                                batch = BatchEncoder(operation, name, position)
                            else:
                                # Every later batch would meet the same error: named, not sent.
                                batch, refusal = [], stopped_by
                        if isinstance(batch, list):
                            batch.extend(part)
                        elif part:
                            try:
                                # Checked, put in wire form and encoded a slice at a time: the
                                # slice's items die here, and only the encoded batch goes on.
                                checked, kinds = check(part, position + len(batch))
                                batch.add(checked, kinds=kinds)
                                del checked
                            except ValidationError as exc:
                                slots.release()
                                stopped_by = refusal = exc
                                batch = [*batch.sent().items(), *part]
                        del part
                        if not ends:
                            continue
                        if isinstance(batch, list):
                            position = await not_sent(batch, position, refusal)
                            batch = None
                            continue
                        body, sent = batch.finish()
                        batch = None
                        positions = range(position, position + len(sent))
                        await log.sending(positions)
                        if on_state is not None:
                            on_state(
                                BatchOutcome(positions.start, positions.stop, "sending", items=sent)
                            )
                        group.start_soon(traced_send, body, sent, positions)
                        position = positions.stop
                        del body, sent
                for _ in range(in_flight):
                    await slots.acquire()
                done.set()
        except BaseExceptionGroup as group_error:
            # One failure inside the group (a caller's callback, a bug) is raised as itself.
            if len(group_error.exceptions) == 1:
                raise group_error.exceptions[0] from None
            raise
        # Every batch is final: the submission leaves the journal's pending work.
        await log.end()
        submission = BulkSubmission(
            procedure=procedure,
            operation=operation,
            outcomes=tuple(outcomes[start] for start in sorted(outcomes)),
            stopped_by=stopped_by,
            client=self,
            submission_id=log.id,
        )
        if submission.count == submission.total:
            return submission
        first = submission.outcomes[0]
        if isinstance(stopped_by, ValidationError) and first.state == "not_sent":
            # Caught before any request: a caller's mistake, raised as itself.
            raise stopped_by
        raise _submission_error(name, submission)


def _submission_error(name: str, submission: BulkSubmission) -> SubmissionError:
    """The same error shape whatever the input's size: counts per state, and what stopped it."""
    counts = submission.counts()
    jobs = len(submission.jobs)
    parts = [
        (
            f"{name}: {counts.get('accepted', 0):,} of {submission.total:,} accepted "
            f"({jobs:,} job{'s' if jobs != 1 else ''})"
        )
    ]
    parts.extend(
        f"{counts[state]:,} {label}"
        for state, label in (
            ("rejected", "rejected"),
            ("unknown", "of unknown outcome"),
            ("not_sent", "not sent"),
        )
        if counts.get(state)
    )
    failures = [b for b in submission.outcomes if b.state in {"rejected", "unknown"}]
    stopped = submission.stopped_by
    text = ", ".join(parts)
    if stopped is not None:
        text += f"; stopped by: {stopped}"
    elif failures:
        text += f"; first failure: {failures[0].error}"
    error = SubmissionError(
        text,
        submission=submission,
        errors=[
            *submission.failed_batches,
            *([stopped] if isinstance(stopped, ValidationError) else []),
        ],
        stopped_by=stopped,
    )
    error.__cause__ = stopped or (failures[0].error if failures else None)
    return error


def _stops_every_batch(error: BaseException | None) -> bool:
    """Whether every later batch of the submission would meet this error too."""
    if isinstance(error, AuthenticationError | NotFoundError):
        # The credential, its rights, or the procedure in the path: shared by every batch.
        return True
    return isinstance(error, APIError) and error.status in _SHAPE_STATUSES


def _update_checker(
    name: str,
) -> Callable[[list[Any], int], tuple[list[Any], set[type] | None]]:
    """Check a batch of updates that starts at a position: each ready to send, or an error.

    A batch of `ProcessUpdate`s, or of plain dicts in the commonest wire form, is taken whole
    (see `is_data_batch`); otherwise each mapping is checked and put in its wire form in one
    pass, with no `ProcessUpdate` built. The batch then holds exactly what is sent; it comes
    with the set of its items' types when that is known (read once, for `BatchEncoder.add` too).
    """
    convert = _update_converter(name)

    def check(raw: list[Any], start: int) -> tuple[list[Any], set[type] | None]:
        kinds = set(map(type, raw))
        if kinds == _MODELS or is_data_batch(raw, kinds=kinds):
            return raw, kinds
        return [convert(item, at) for at, item in enumerate(raw, start)], None

    return check


def _create_checker(
    name: str,
) -> Callable[[list[Any], int], tuple[list[Any], set[type] | None]]:
    """Check a batch of records that starts at a position: each a `ProcessCreate`, or an error."""
    convert = _create_converter(name)

    def check(raw: list[Any], start: int) -> tuple[list[Any], set[type] | None]:
        return [convert(item, at) for at, item in enumerate(raw, start)], None

    return check


def _update_converter(name: str) -> Callable[[Any, int], ProcessUpdate | dict[str, Any]]:
    # A mapping is checked and put in its wire form in one pass, with no ProcessUpdate built.
    wire_from_mapping = ProcessUpdate.wire_from_mapping

    def convert(item: Any, position: int) -> ProcessUpdate | dict[str, Any]:
        if type(item) is ProcessUpdate:
            return item
        # `type(...) is dict` first: parsed JSON Lines are dicts, and an ABC check costs more.
        if type(item) is dict or isinstance(item, Mapping):
            try:
                return wire_from_mapping(item)
            except ValidationError as exc:
                raise exc.at(f"{name}[{position}]") from None
        if isinstance(item, ProcessUpdate):
            return item
        raise ValidationError(
            f"{name}[{position}]",
            f"must be a ProcessUpdate or a mapping, not {type(item).__name__}",
        )

    return convert


def _create_converter(name: str) -> Callable[[Any, int], ProcessCreate]:
    def convert(item: Any, position: int) -> ProcessCreate:
        if isinstance(item, ProcessCreate):
            return item
        if isinstance(item, Mapping):
            try:
                return ProcessCreate.from_mapping(item)
            except ValidationError as exc:
                raise exc.at(f"{name}[{position}]") from None
        raise ValidationError(
            f"{name}[{position}]",
            f"must be a ProcessCreate or a mapping, not {type(item).__name__}",
        )

    return convert


async def _slices(
    items: Iterable[T] | AsyncIterable[T], size: int
) -> AsyncGenerator[tuple[list[T], bool]]:
    """Batches of up to `size` items, read lazily in slices of at most `_SLICE` items.

    Yields each slice with whether it ends its batch. The input's end may show only after a
    full slice, as an empty slice that ends the batch (which is then empty if it just began).
    """
    # An async generator is safe here: it holds no task group or cancel scope across a yield.
    step = min(size, _SLICE)
    if isinstance(items, AsyncIterable):
        part: list[T] = []
        count = 0
        async for item in items:
            part.append(item)
            count += 1
            if count == size:
                yield part, True
                part, count = [], 0
            elif len(part) == step:
                yield part, False
                part = []
        yield part, True
        return
    iterator = iter(items)
    while True:
        left = size
        while left:
            wanted = min(step, left)
            part = list(itertools.islice(iterator, wanted))
            left -= len(part)
            if len(part) < wanted:
                yield part, True
                return
            yield part, not left
            # Dropped before the next is read: a slice's items, encoded by now, die young.
            del part
        # A sync generator may read files for a while: let the batches in flight progress.
        await anyio.lowlevel.checkpoint()


def _job_from(response: Response, *, origin: Origin | None = None) -> BackgroundJob:
    """The job in an answer, read by the client ``origin`` names."""
    try:
        return structure_job(response.data, response.meta, origin=origin)
    except ProtocolError as exc:
        raise ProtocolError(str(exc), url=response.url, status=response.status) from None


def _acknowledged(response: Response, method: str) -> tuple[BackgroundJob | None, tuple[str, ...]]:
    """The job a 2xx bulk answer names (None when it names none) and the ``_errors`` it holds."""
    data = response.data
    warnings = tuple(response.messages)
    if isinstance(data, Mapping) and data.get("id"):
        try:
            return structure_job(data, response.meta), warnings
        except ProtocolError as exc:
            raise ProtocolError(
                str(exc), method=method, url=response.url, status=response.status
            ) from None
    # Chakra's reference shows bulk create answered `{}`: accepted, with no job to follow.
    return None, (*warnings, "the answer names no job (_data.id missing)")


# -- entries iterators ---------------------------------------------------------------------------


@attrs.frozen
class _Page:
    """One slot of the listing as read: parsed entries, not yet `JobEntry` objects.

    Entries are built only when the page is handed out, and only for ids not seen before: a
    page waiting ahead holds as few objects for the collector to walk as it can.
    """

    #: The entries (parsed, or as sent: see `lean_entry_page`), and their ids (checked), in
    #: listing order.
    raws: list[RawEntry]
    ids: list[str]
    #: Where the page's slot starts (``skip``) and how much of the slot the server filled.
    offset: int
    size: int
    #: ``_meta.total`` as the page's last answer gave it.
    total: int | None
    url: str
    #: The offset from which the slot could not be read, before the total; None when whole.
    missing_from: int | None = None
    #: Whether the first answer came short of the slot, before the total: the listing moved.
    mended: bool = False


class _EntriesFetcher:
    """Fetches the slot of one page of entries: ``page_size`` entries from ``index x page_size``.

    A server may answer a slot short, or empty, before the end its ``_meta.total`` announces.
    The slot is then read on from where the answer broke off, and an empty answer is read once
    more, so every page task fills its own slot and the pages around it stay concurrent. A slot
    that still cannot be filled is handed out with ``missing_from`` set.

    Kept apart from the iterator so that the fetch tasks never keep a dropped iterator alive.
    """

    __slots__ = ("expected", "page_size", "params", "path", "session", "timeout")

    def __init__(
        self,
        session: Session,
        path: str,
        params: dict[str, str | int],
        timeout: float | None,
    ) -> None:
        self.session = session
        self.timeout = timeout
        self.path = path
        self.params = params
        self.page_size = int(params["limit"])
        self.expected: int | None = None

    async def __call__(self, index: int) -> _Page:
        start = index * self.page_size
        stop = start + self.page_size
        raws, ids, total, url = await self._read(start, self.page_size)
        offset = start + len(ids)
        known: set[str] | None = None
        again = False
        while offset < stop and total is not None and offset < total:
            # Short or empty before the total: read on from where the answer broke off.
            more, more_ids, total, url = await self._read(offset, stop - offset)
            if known is None:
                known = set(ids)
            fresh = [n for n, entry_id in enumerate(more_ids) if entry_id not in known]
            if not fresh:
                if again or (total is not None and offset >= total):
                    break
                again = True
                continue
            again = False
            for n in fresh:
                known.add(more_ids[n])
                ids.append(more_ids[n])
                raws.append(more[n])
            offset += len(more)
        missing = offset if total is not None and offset < min(stop, total) else None
        mended = known is not None
        return _Page(raws, ids, start, offset - start, total, url, missing, mended=mended)

    async def _read(
        self, skip: int, limit: int
    ) -> tuple[list[RawEntry], list[str], int | None, str]:
        params = {**self.params, "skip": skip, "limit": limit}
        response = await self.session.request(
            "GET",
            self.path,
            params=params,
            priority=Priority.DETECT,
            timeout=self.timeout,
            reader=_read_entries,
        )
        data, meta, lean_ids = response.data
        if lean_ids is not None:
            return data, lean_ids, _total(meta, response.url), response.url
        if not isinstance(data, list):
            raise ProtocolError(
                f"_data is not a list of entries: {type(data).__name__}",
                method="GET",
                url=response.url,
                status=response.status,
            )
        try:
            ids = entry_ids(data)
        except ProtocolError as exc:
            raise ProtocolError(str(exc), method="GET", url=response.url) from None
        return data, ids, _total(meta, response.url), response.url

    def count(self, page: _Page) -> int | None:
        if page.total is None:
            return None
        self.expected = max(1, math.ceil(page.total / self.page_size))
        return self.expected

    def is_last(self, _index: int, page: _Page) -> bool:
        # A slot is left short only at the total, without one, or when it could not be read.
        return page.size < self.page_size


_ENVELOPE: Final = ChakraEnvelope()


def _read_entries(body: bytes) -> tuple[Any, Mapping[str, Any], list[str] | None]:
    """A page of entries: its ``_data``, its ``_meta``, and the ids when already checked.

    A page in the expected shape is read lean (`lean_entry_page`); any other is read as every
    answer is (JSON, then the envelope), its ids left to check, so it fails exactly as then.

    Raises:
        ProtocolError: the answer is not JSON, or not an envelope.
    """
    try:
        return lean_entry_page(body)
    except msgspec.MsgspecError:
        pass
    parsed = None
    if body.strip():
        try:
            parsed = orjson.loads(body)
        except ValueError:
            excerpt = body.decode("utf-8", "replace")[:_BODY_EXCERPT]
            raise ProtocolError(f"answer is not JSON: {excerpt!r}") from None
    data, meta, _ = _ENVELOPE.decode(parsed)
    return data, meta, None


def _compact(entry_id: str) -> bytes | str:
    """A UUID as its 16 bytes (a third of the text's size); any other id as it is."""
    if len(entry_id) == 36 and _UUID_TEXT.fullmatch(entry_id):  # noqa: PLR2004 -- a UUID's text
        return bytes.fromhex(entry_id.replace("-", ""))
    return entry_id


class _SeenIds:
    """The ids a listing has yielded, kept in as little memory as the job allows.

    While the job may be running, a filtered listing shifts and an entry can come back at any
    later offset, so every id is kept: as text at first, then (past `_KEEP_BEFORE_ASKING`, when
    the job still runs) as 16 bytes per UUID. Once the job is known to be finished, the pages
    asked for afterwards (from offset `stable_from`) read a listing that no longer changes, so
    their ids are checked against those kept and against the page before (which an answer
    longer than asked for overlaps), but no longer kept.

    That trust lasts only while the listing behaves as a finished one does: a page that repeats
    an id, or that had to be mended (answered short before the total), shows the offsets
    moving, and from that page on every id is kept again, compactly (`distrust`).
    """

    __slots__ = ("ask_at", "compact", "compacted", "previous", "stable_from", "texts")

    def __init__(self) -> None:
        self.texts: set[str] = set()
        self.compacted: set[bytes | str] = set()
        self.compact = False
        self.previous: set[str] = set()
        self.stable_from: float = math.inf
        self.ask_at: int | None = _KEEP_BEFORE_ASKING

    @property
    def kept(self) -> int:
        return len(self.texts) + len(self.compacted)

    def fresh(self, page: _Page) -> list[tuple[str, RawEntry]]:
        """The page's entries whose id was not seen before, with it, in order, remembering them."""
        if page.offset < self.stable_from:
            return self._kept(page)
        fresh = self._checked(page)
        if page.mended or len(fresh) < len(page.ids):
            self.distrust()
        return fresh

    def distrust(self) -> None:
        """Keep every id from now on: the listing was seen moving."""
        compacted = self.compacted
        compacted.update(_compact(entry_id) for entry_id in self.previous)
        self.previous = set()
        self.compact = True
        self.stable_from = math.inf

    def _kept(self, page: _Page) -> list[tuple[str, RawEntry]]:
        texts = self.texts
        pairs = zip(page.ids, page.raws, strict=True)
        if not self.compact:
            add_text = texts.add
            # One pass: keep an entry only the first time its id shows up.
            return [pair for pair in pairs if not (pair[0] in texts or add_text(pair[0]))]
        compacted = self.compacted
        fresh: list[tuple[str, RawEntry]] = []
        for pair in pairs:
            entry_id = pair[0]
            if entry_id in texts:
                continue
            key = _compact(entry_id)
            if key not in compacted:
                compacted.add(key)
                fresh.append(pair)
        return fresh

    def _checked(self, page: _Page) -> list[tuple[str, RawEntry]]:
        texts = self.texts
        compacted = self.compacted
        previous = self.previous
        ids: set[str] = set()
        add = ids.add
        fresh = [
            (i, raw)
            for i, raw in zip(page.ids, page.raws, strict=True)
            if not (i in texts or i in previous or i in ids or add(i))
            and not (compacted and _compact(i) in compacted)
        ]
        self.previous = ids
        return fresh


class JobEntryPages(ClosingIterator):
    """An async iterator over a job's entries, a list per page, read ahead concurrently.

    Made by `ChakraClient.iter_job_entry_pages`; see there. Use it in ``async for``, and
    ``async with`` (or `aclose`) to stop the fetches ahead at once.
    """

    def __init__(
        self,
        session: Session,
        path: str,
        *,
        job_path: str,
        completion_status: str | None,
        page_size: int,
        prefetch: int,
        telemetry: Tracer | None = None,
        timeout: float | None = None,
    ) -> None:
        """Set up the listing; nothing is fetched before the first ``__anext__``."""
        self._telemetry = telemetry
        params: dict[str, str | int] = {"limit": page_size}
        if completion_status is not None:
            params["completionStatus"] = completion_status
        self._fetcher = _EntriesFetcher(session, path, params, timeout)
        self._job_path = job_path
        self._seen = _SeenIds()
        self._stale = 0
        self._stale_from = 0
        self._yielded = 0
        self._broken: IncompleteListingError | None = None
        self._pages: OrderedPages[_Page] = OrderedPages(
            self._fetcher,
            count=self._fetcher.count,
            is_last=self._fetcher.is_last,
            prefetch=prefetch,
        )

    def __repr__(self) -> str:
        """The listing and how far it got."""
        fetcher = self._fetcher
        return f"<JobEntryPages {fetcher.path} params={fetcher.params} {self._pages!r}>"

    async def aclose(self) -> None:
        """Stop the fetches ahead and end the iteration; idempotent."""
        self._broken = None
        await self._pages.aclose()

    def _count(self, fresh: list[tuple[str, RawEntry]]) -> None:
        self._yielded += len(fresh)
        if self._telemetry is not None and fresh:
            self._telemetry.entries.add(len(fresh), {"asyncbulk.vendor": "chakra"})

    async def __anext__(self) -> list[JobEntry]:
        """The next page's entries not yielded before.

        Raises:
            StopAsyncIteration: the listing has ended.
            IncompleteListingError: after the last entries that could be read, when the
                listing broke off before its ``_meta.total``.
            APIError, TransportError, ProtocolError: a page could not be read.
        """
        if self._broken is not None:
            broken, self._broken = self._broken, None
            raise broken
        seen = self._seen
        while True:
            page = await self._pages.__anext__()
            fresh = seen.fresh(page)
            if seen.ask_at is not None and seen.kept >= seen.ask_at:
                await self._ask_if_finished()
            if page.missing_from is not None:
                self._count(fresh)
                broken = self._incomplete(page, page.missing_from)
                if not fresh:
                    raise broken
                self._broken = broken
                return lazy_entries(fresh)
            if fresh:
                self._stale = 0
                self._count(fresh)
                return lazy_entries(fresh)
            expected = self._fetcher.expected
            beyond = expected is None or self._pages.consumed > expected
            if self._stale == 0:
                self._stale_from = page.offset
            self._stale = self._stale + 1 if page.ids else 0
            # A server that ignores `skip` and claims a huge total repeats one page for ever:
            # so many full pages in a row with nothing new cannot be a listing shifting.
            if page.ids and (beyond or self._stale >= _STALE_PAGES):
                # Past the total, a full page of entries already seen means the server is
                # repeating itself: stop rather than read forever, and say so when the
                # entries read fall short of its total.
                await self._pages.aclose()
                if page.total is not None and self._yielded < page.total:
                    raise self._incomplete(page, self._stale_from)
                raise StopAsyncIteration

    async def _ask_if_finished(self) -> None:
        """Ask the job whether it has finished: from then on, its offsets are stable."""
        seen = self._seen
        try:
            fetcher = self._fetcher
            response = await fetcher.session.request("GET", self._job_path, timeout=fetcher.timeout)
            finished = _job_from(response).is_finished
        except AsyncBulkError:
            finished = False  # unknown: keep every id, and ask again later
        if finished:
            # Pages asked for from now on read a listing that no longer changes.
            seen.stable_from = self._pages.launched * self._fetcher.page_size
            seen.ask_at = None
        else:
            seen.compact = True
            seen.ask_at = 2 * seen.kept

    def _incomplete(self, page: _Page, offset: int) -> IncompleteListingError:
        return IncompleteListingError(
            read=self._yielded, total=page.total or 0, offset=offset, method="GET", url=page.url
        )


class JobEntries(ClosingIterator):
    """An async iterator over a job's entries, one `JobEntry` at a time.

    Made by `ChakraClient.iter_job_entries`; see there.
    """

    def __init__(self, pages: JobEntryPages) -> None:
        """Wrap a page iterator."""
        self._pages = pages
        self._page: list[JobEntry] = []
        self._next = 0

    def __repr__(self) -> str:
        """The listing and how far it got."""
        return f"<JobEntries {self._pages!r}>"

    async def aclose(self) -> None:
        """Stop the fetches ahead and end the iteration; idempotent."""
        self._page = []
        await self._pages.aclose()

    async def __anext__(self) -> JobEntry:
        """The next entry.

        Raises:
            StopAsyncIteration: the listing has ended.
            IncompleteListingError: after the last entry that could be read, when the listing
                broke off before its ``_meta.total``.
            APIError, TransportError, ProtocolError: a page could not be read.
        """
        if self._next >= len(self._page):
            self._page = await self._pages.__anext__()
            self._next = 0
        entry = self._page[self._next]
        self._next += 1
        return entry


# -- the tracker's view of Chakra ----------------------------------------------------------------


class ChakraJobSource:
    """What the shared job tracker needs to follow Chakra background jobs.

    Chakra has no listing of jobs, so every job is polled on its own (`sweep` is None).
    """

    kind = "Chakra background job"
    vendor = "chakra"

    def __init__(self, client: ChakraClient) -> None:
        """Poll through `client`."""
        self._client = client

    @property
    def telemetry(self) -> Tracer | None:
        """The client's OpenTelemetry instrumentation, which the tracker reports through."""
        return self._client._telemetry  # noqa: SLF001 -- the client's own source

    async def fetch(self, job_id: str, *, deadline: float | None = None) -> BackgroundJob:
        """One GET of one job, ending by ``deadline``."""
        session = self._client._session  # noqa: SLF001 -- the client's own source
        path = session.path(_JOB_PATH, job_id=job_id)
        response = await session.request("GET", path, **request_keywords("detect", deadline))
        return attrs.evolve(_job_from(response), origin=self._client._origin)  # noqa: SLF001

    def is_finished(self, job: BackgroundJob) -> bool:
        """Done, success or failure (`BackgroundJob.is_finished`)."""
        return job.is_finished

    def is_failed(self, job: BackgroundJob) -> bool:
        """Finished with a job-level status that is not a success."""
        return job.is_failed

    def progress(self, job: BackgroundJob) -> Hashable | None:
        """The entry counts per status: they change as the job makes progress."""
        return tuple(sorted(job.status_counts.items())) or None

    def entry_counts(self, job: BackgroundJob) -> Mapping[str, int] | None:
        """The job's entries per completion status (``_meta.bjEntryCompletionStatusVsCount``)."""
        return job.status_counts or None

    def finished_at(self, job: BackgroundJob) -> float | None:
        """When the server says the job completed, in epoch seconds."""
        return None if job.completed_at is None else job.completed_at.timestamp()

    async def sweep(
        self,
        view: SweepView[BackgroundJob],  # noqa: ARG002 -- the protocol's signature
        *,
        deadline: float | None = None,  # noqa: ARG002
    ) -> bool | None:
        """None: Chakra offers no listing of background jobs."""
        return None

    def sweep_cost(self) -> int | None:
        """None: there is no sweep."""
        return None
