"""`ZefortClient`: contract bulk updates, and the tasks that carry them out, followed to the end.

Every request goes through the shared `Session` (Basic auth with the key as user name, plain
JSON bodies, retries, the shared 429 pause). Following tasks is the vendor-neutral `JobTracker`'s
work; `ZefortTaskSource` tells it how to read one task (``GET /api/tasks/{id}/``) and many at once
(the pending listing, ``GET /api/tasks/``, all pages), which is what makes following thousands of
tasks cheap: one sweep of a few pages replaces thousands of polls.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import Counter, deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs

from asyncbulk._exceptions import (
    APIError,
    AsyncBulkError,
    NotFoundError,
    OutcomeUnknownError,
    ProtocolError,
    RateLimitedError,
    TransportError,
    ValidationError,
)
from asyncbulk._flow import Priority
from asyncbulk._handles import Origin, account_of, read_handle
from asyncbulk._journal import SubmissionLog, TrackingLog, open_journal
from asyncbulk._logs import log_fields
from asyncbulk._outcome import Outcome, outcome_of
from asyncbulk._pagination import ClosingIterator, OrderedPages
from asyncbulk._session import BasicAuth, ClientBase, PlainEnvelope, Response, Session
from asyncbulk._telemetry import Telemetry, Tracer
from asyncbulk._telemetry import operation as telemetry_span
from asyncbulk._telemetry import resolve as resolve_telemetry
from asyncbulk._tracking import TrackingOptions, TrackIterator, track, wait_for
from asyncbulk._tracking._options import check_count, check_seconds, resolve_tracking
from asyncbulk._tracking._requests import request_keywords
from asyncbulk._transport import DEFAULT_MAX_RESPONSE_BYTES
from asyncbulk.zefort._models import (
    FINISHED_CATEGORIES,
    ListedTask,
    TaskPage,
    ZefortTask,
    make_zefort_converter,
    read_listed_page,
    status_category,
    structure_page,
    structure_task,
)

if TYPE_CHECKING:
    import os
    import ssl as _ssl
    from collections.abc import Callable, Iterable

    import aiohttp

    from asyncbulk._flow import RateLimit, SharedLimiter
    from asyncbulk._handles import BatchRecord
    from asyncbulk._journal import JobKind, Journal, Pending, SubmissionRecord
    from asyncbulk._retry import RetryPolicy
    from asyncbulk._session import Credential, RequestStats, Timeouts
    from asyncbulk._tracking import SweepView, TrackerStats

__all__ = ["ZefortClient", "ZefortTaskListing", "ZefortTaskSource"]

logger: Final = logging.getLogger("asyncbulk")

_BULK_UPDATE: Final = "/api/contracts/bulk_update/"
# A bulk update is one request: journaled as one batch of one position.
_ONE_BATCH: Final = range(1)
_TASKS: Final = "/api/tasks/"
_TASK: Final = "/api/tasks/{task_id}/"
#: A listing read keeps at most 1/_LISTING_SHARE of the client's requests in flight: the rest
#: stay free for polls, acknowledgements and submissions.
_LISTING_SHARE: Final = 2
_THROTTLED: Final = 429
#: What a task just submitted says, and says until it finishes: a sweep builds nothing for it.
_PENDING: Final = "pending"
#: The tracking settings when none are given: as many polls at once as before TrackingOptions.
_DEFAULT_TRACKING: Final = TrackingOptions(max_in_flight=8)


class _PageIgnoredError(ProtocolError):
    """The listing answered the same tasks for page 2 as for page 1: it ignores ``page``."""


#: Seconds a pending-listing snapshot is shared by the bulk updates started after it began: a
#: task another process starts in that window could pass for ours, so it is kept short.
_SNAPSHOT_FRESH: Final = 1.0
#: Task ids of this client's own bulk updates remembered, so none is adopted by another call.
_CLAIMED_KEPT: Final = 10_000
#: The body fields `bulk_update_contracts` names; `extra` may not hold them.
_NAMED_FIELDS: Final = frozenset({"attributes", "status", "search"})


@attrs.define
class _Snapshot:
    """One read of the pending listing, shared by the bulk updates started while fresh."""

    started: float
    ids: frozenset[str] | None = None
    ready: anyio.Event = attrs.field(factory=anyio.Event)


def _canonical(value: Any) -> str:
    """One spelling of a JSON value, so two equal bodies compare equal as text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _as_json(field: str, value: Any) -> Any:
    """``value`` as it will travel (tuples become lists); a `ValidationError` names ``field``."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValidationError(field, f"is not JSON-serialisable: {exc}") from None


def _check_task_id(field: str, task_id: object) -> str:
    if not isinstance(task_id, str):
        raise ValidationError(field, f"must be a string, not {type(task_id).__name__}")
    if not task_id.strip():
        raise ValidationError(field, "must not be empty")
    return task_id


def _attributes(attributes: Any) -> Any:
    if not isinstance(attributes, Mapping):
        raise ValidationError("attributes", "must be a mapping of attribute names to values")
    for name in attributes:
        if not isinstance(name, str) or not name.strip():
            raise ValidationError("attributes", f"names must be non-empty strings: {name!r}")
    return _as_json("attributes", dict(attributes))


def _bulk_body(
    attributes: Mapping[str, Any] | None,
    status: str | None,
    search: Mapping[str, Any] | None,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if attributes is not None and (checked := _attributes(attributes)):
        body["attributes"] = checked
    if status is not None:
        if not isinstance(status, str) or not status.strip():
            raise ValidationError("status", f"must be a non-empty string, not {status!r}")
        body["status"] = status
    for name, value in extra.items():
        if value is not None:
            body[name] = _as_json(name, value)
    if not body:
        raise ValidationError(
            "attributes", "nothing to change: give attributes, a status or another field to set"
        )
    if search is not None:
        if not isinstance(search, Mapping):
            raise ValidationError("search", "must be a mapping of search parameters")
        body["search"] = _as_json("search", dict(search))
    return body


def _is_ambiguous(error: AsyncBulkError) -> bool:
    """Whether a failed POST may have been carried out all the same."""
    return outcome_of(error) is Outcome.UNKNOWN


def _site_url(base_url: str) -> str:
    """The base URL without a final ``/api`` segment: every path here starts with ``/api/``."""
    # Anything but a string is left for the session to refuse, naming the field.
    text = base_url.strip().rstrip("/") if isinstance(base_url, str) else ""
    return text.removesuffix("/api") if text.endswith("/api") else base_url


class ZefortClient(ClientBase):
    """An asyncio client for Zefort's contract bulk operations and their tasks.

    Use it as an async context manager (or call `aclose`)::

        async with ZefortClient(api_key) as zefort:
            task = await zefort.bulk_update_contracts(
                attributes={"end_date": "2023-02-15"},
                search={"q_tags": "contracts of service"},
            )
            task = await zefort.wait_for_task(task.id, timeout=300, acknowledge=True)

    Args:
        api_key: the API key, sent as the Basic-auth user name with an empty password, or a
            function (plain or async) that returns the current one: it is asked on first use
            and again once after a 401, so a rotated key is picked up.
        base_url: ``https://sandbox.zefort.com``, ``https://my.zefort.com`` (EU),
            ``https://us.zefort.com`` (US) or a dedicated host; given with or without the
            ``/api/`` the vendor's "API base URL" ends with.
        retry: the retry policy; the default retries reads and never repeats a bulk update
            the server may have acted on.
        timeouts: the time limits of one try of a request.
        max_in_flight: requests in flight at once.
        session: an aiohttp session of your own, used as is and never closed by the client.
        allow_insecure_http: allow plain http:// to a host other than loopback.
        tracking: how tasks are followed (`TrackingOptions`); by default polls start 0.25 s
            apart, back off to 5 s, the pending listing is read at most every 0.5 s, and 8
            polls, listing reads or acknowledgements run at once.
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
        listing_page_size: the page size asked of the pending listing; the server may answer
            with a smaller one, which is then used.
        poll_min_interval: deprecated: ``tracking=TrackingOptions(min_interval=...)``.
        poll_max_interval: deprecated: ``tracking=TrackingOptions(max_interval=...)``.
        sweep_interval: deprecated: ``tracking=TrackingOptions(sweep_interval=...)``.
        polls_in_flight: deprecated: ``tracking=TrackingOptions(max_in_flight=...)``.
        journal: where bulk updates and tracked tasks are recorded to resume after a restart:
            a file path (a `SQLiteJournal` the client opens and closes) or a `Journal` of your
            own (used as is, never closed here); None keeps them in memory.
        account: a stable name for the account, for handles and journals; needed only when
            the credential is a function (by default the credential's fingerprint names it).
        telemetry: OpenTelemetry spans and metrics (`asyncbulk.Telemetry`): None (the
            default) reports to the global providers whenever ``opentelemetry-api`` is
            installed (a no-op until an SDK sets a provider); True requires the API; False
            reports nothing; a `Telemetry` names providers of your own.

    Raises:
        ValidationError: a setting is out of range, or the key is empty.
    """

    def __init__(
        self,
        api_key: Credential,
        *,
        base_url: str = "https://sandbox.zefort.com",
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        max_in_flight: int = 16,
        session: aiohttp.ClientSession | None = None,
        allow_insecure_http: bool = False,
        tracking: TrackingOptions | None = None,
        trust_env: bool = False,
        ssl: bool | _ssl.SSLContext = True,
        proxy: str | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        rate_limit: RateLimit | SharedLimiter | None = None,
        listing_page_size: int = 1000,
        poll_min_interval: float | None = None,
        poll_max_interval: float | None = None,
        sweep_interval: float | None = None,
        polls_in_flight: int | None = None,
        journal: Journal | str | os.PathLike[str] | None = None,
        account: str | None = None,
        telemetry: bool | Telemetry | None = None,
    ) -> None:
        """Check the settings; the connection pool opens on first use."""
        tracer = resolve_telemetry(telemetry)
        self._session = Session(
            base_url=_site_url(base_url),
            auth=BasicAuth(api_key),
            envelope=PlainEnvelope(),
            retry=retry,
            timeouts=timeouts,
            max_in_flight=max_in_flight,
            session=session,
            allow_insecure_http=allow_insecure_http,
            name="ZefortClient",
            vendor="zefort",
            trust_env=trust_env,
            ssl=ssl,
            proxy=proxy,
            max_response_bytes=max_response_bytes,
            rate_limit=rate_limit,
            observer=tracer,
        )
        self._telemetry = tracer
        if tracer is not None:
            tracer.watch_rate(self._session, "zefort")
        self._tracking = resolve_tracking(
            tracking,
            _DEFAULT_TRACKING,
            {
                "min_interval": ("poll_min_interval", poll_min_interval),
                "max_interval": ("poll_max_interval", poll_max_interval),
                "sweep_interval": ("sweep_interval", sweep_interval),
                "max_in_flight": ("polls_in_flight", polls_in_flight),
            },
        )
        if self._tracking.max_in_flight is None:
            self._tracking = attrs.evolve(self._tracking, max_in_flight=8)
        self._page_size = check_count("listing_page_size", listing_page_size, least=1)
        self._converter = make_zefort_converter()
        self._warned: set[str] = set()
        self._snapshot: _Snapshot | None = None
        # Tasks this client's bulk updates were answered with: never another call's to adopt.
        self._claimed: deque[str] = deque(maxlen=_CLAIMED_KEPT)
        self._sending: Counter[str] = Counter()
        self.task_source = ZefortTaskSource(self)
        self._origin = Origin(
            vendor="zefort",
            base_url=str(self._session.base_url),
            account=account_of("zefort", api_key, account),
        )
        self._journal, self._owns_journal = open_journal(journal, self._origin)
        # Only a journal the caller gave keeps accepted jobs pending until delivered: the
        # default in-memory one would otherwise grow with every job never tracked.
        self._follow: JobKind | None = None if journal is None else "task"

    async def aclose(self) -> None:
        """Close the session and the journal the client opened; idempotent."""
        try:
            await super().aclose()
        finally:
            if self._owns_journal:
                await self._journal.aclose()

    @property
    def journal(self) -> Journal:
        """Where this client records bulk updates and tracked tasks."""
        return self._journal

    # -- handles and resuming -----------------------------------------------------------------

    async def resume(self, handle: Mapping[str, Any]) -> ZefortTask:
        """Rebuild the task a handle names, as it stands now.

        Args:
            handle: what `ZefortTask.handle` gave, possibly after a trip through
                ``json.dumps`` and ``json.loads``.

        Raises:
            ValidationError: naming the field, before any request: another handle version,
                vendor, base URL or account, a kind other than ``task``, or a malformed field.
            NotFoundError: the task does not exist (any more).
        """
        _, fields = read_handle(handle, self._origin, ("task",))
        return await self.get_task(fields["task_id"])

    async def resume_pending(self) -> Pending:
        """What this client's journal holds unfinished, for this base URL and account.

        Tracked tasks not yet delivered come back as `TrackedJob`s (``id``, ``handle()``, and
        ``key`` to deduplicate a delivery), to track again. Bulk updates that never ended come
        back with their batch as recorded, except that one left ``sending`` by a crash is
        settled first, by the rule for an ambiguous failure: the pending tasks are searched
        for one whose data is exactly the recorded request body; exactly one found is adopted
        (``accepted`` with its id, and tracked: it comes back among the jobs), otherwise the
        batch is ``unknown`` with the reason. A task that finished before the restart no
        longer shows the body, so it cannot be proved: ``unknown``, never sent again. The
        settlement is recorded. End a bulk update you have dealt with with
        ``journal.end_submission(record.id)``.

        Raises:
            JournalError: the journal cannot be read or written.
        """
        pending = await self._journal.pending(self._origin)
        submissions = []
        for submission in pending.submissions:
            batches = []
            for batch in submission.batches:
                if batch.state == "sending":
                    settled = await self._settle_sending(submission, batch)
                    if settled.job_id is not None:
                        # An adopted task is followed like one accepted before the crash.
                        await self._journal.add_jobs(self._origin, "task", [settled.job_id])
                    await self._journal.record_batch(submission.id, settled)
                    batches.append(settled)
                else:
                    batches.append(batch)
            submissions.append(attrs.evolve(submission, batches=tuple(batches)))
        await self._journal.flush()
        return attrs.evolve(pending, submissions=tuple(submissions))

    async def _settle_sending(
        self, submission: SubmissionRecord, batch: BatchRecord
    ) -> BatchRecord:
        """A batch a crash left ``sending``, settled by adoption with proof, or ``unknown``."""
        body = (submission.request or {}).get("body")
        if not isinstance(body, Mapping):
            return attrs.evolve(
                batch, state="unknown", error="the journal holds no request body to look for"
            )
        interrupted = AsyncBulkError("the process stopped while the request was being sent")
        url = f"{self._session.base_url}{_BULK_UPDATE}"
        # The same proof as after an ambiguous failure: exactly one pending task with this body
        # that was not pending before the POST was sent (the snapshot journaled with the batch).
        recorded = (submission.request or {}).get("pending_before")
        before = (
            frozenset(str(task_id) for task_id in recorded)
            if isinstance(recorded, list | tuple)
            else None
        )
        try:
            # No call of this client is sending it now: the crashed process was.
            task = await self._adopt(dict(body), url, interrupted, before, own=0)
        except OutcomeUnknownError as exc:
            return attrs.evolve(batch, state="unknown", error=str(exc))
        return attrs.evolve(batch, state="accepted", job_id=task.id, error=None)

    # -- bulk operations ----------------------------------------------------------------------

    async def bulk_update_contracts(
        self,
        *,
        attributes: Mapping[str, Any] | None = None,
        status: str | None = None,
        search: Mapping[str, Any] | None = None,
        all_contracts: bool = False,
        extra: Mapping[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- a bound on the POST, not a scope
        journal_note: Mapping[str, Any] | None = None,
    ) -> ZefortTask:
        """Change many contracts at once: ``POST /api/contracts/bulk_update/``.

        Without `search`, Zefort applies the change to every contract: so a call without it
        is refused unless ``all_contracts=True`` says that is meant.

        The POST is not idempotent, so it is sent again only when the server certainly did not
        act on it (the rule of `asyncbulk.Outcome`: 429, 503, no connection). Before sending,
        the client reads the pending listing (one pass, shared by the bulk updates started
        while it is fresh and waited for before any of them is sent). After an ambiguous
        failure (the connection dropped after sending, a read timeout, a 408, a 500, 501, 502
        or 504, an unreadable 2xx) the listing is read again, and a pending task is adopted
        only with proof: its ``details.data`` is exactly this request's body, it was absent
        from the listing read before the POST, and no other call of this client was answered
        with it. Exactly one such task is returned; otherwise `OutcomeUnknownError` carries the
        request and the candidate task ids, and the caller decides. So a 502 from a proxy (the
        app never saw the request) never adopts an older, identical task, and the same bulk
        operation is never started twice by the client.

        Args:
            attributes: attribute values to set on every matching contract.
            status: the contract status to set (archived, done, error, limited, processing,
                queued, review).
            search: which contracts: Zefort's search parameters (``q``, ``q_tags``, ``tags``,
                ``owner``, ``binder``...).
            all_contracts: True to send no `search` and change every contract.
            extra: further fields of the request body the library does not name, sent as given.
            timeout: seconds the POST may take, its retries included (each try is still
                bounded by the client's ``timeouts``); the read of the pending listing it
                shares with other calls, and the read after an ambiguous failure, keep the
                client's limits, so that a task started is still adopted.

            journal_note: JSON data kept with the bulk update in the client's journal (read back
                as ``SubmissionRecord.request["note"]`` by `resume_pending`); never a credential.

        The client's journal records the bulk update as one batch, ``range(0, 1)``: ``sending``
        (on disk, with the body and the ids of the pending listing read before) before the
        POST, then ``accepted`` with the task id (on disk) before it is returned, or its
        failure. One killed on the wire stays ``sending`` and `resume_pending` settles it.

        Returns:
            the task carrying the operation out (``backend_status`` ``pending`` at first).

        Raises:
            ValidationError: no `search` without `all_contracts` (or both), nothing to change,
                or a value that is not JSON.
            OutcomeUnknownError: the request may or may not have been carried out; its
                ``__cause__`` is the failure met and ``candidates`` the matching task ids.
            APIError: the server refused the request.
            DeadlineExceededError: ``timeout`` passed before the POST could be sent, or
                while waiting to retry one the server certainly did not act on.
        """
        per_request = check_seconds("timeout", timeout, optional=True)
        if not isinstance(all_contracts, bool):
            raise ValidationError("all_contracts", f"must be True or False, not {all_contracts!r}")
        if search is None and not all_contracts:
            raise ValidationError(
                "search",
                "is required: without it every contract is changed "
                "(pass all_contracts=True if that is meant)",
            )
        if search is not None and all_contracts:
            raise ValidationError("all_contracts", "cannot be True when a search is given")
        if extra is not None and not isinstance(extra, Mapping):
            raise ValidationError("extra", "must be a mapping of field names to values")
        fields = dict(extra or {})
        for name in fields:
            if name in _NAMED_FIELDS or not isinstance(name, str):
                raise ValidationError(
                    f"extra[{name!r}]", "is a field of its own: pass it as its argument"
                )
        body = _bulk_body(attributes, status, search, fields)
        if journal_note is not None and not isinstance(journal_note, Mapping):
            raise ValidationError("journal_note", "must be a mapping of JSON data")
        with telemetry_span(
            self._telemetry, "zefort bulk update", {"asyncbulk.vendor": "zefort"}
        ) as note:
            task = await self._bulk_update(body, per_request, journal_note)
            note("asyncbulk.job.id", task.id)
        return task

    async def _bulk_update(
        self,
        body: dict[str, Any],
        timeout: float | None,  # noqa: ASYNC109 -- a bound on the POST, not a scope
        journal_note: Mapping[str, Any] | None,
    ) -> ZefortTask:
        before = await self._pending_snapshot()
        # What settling a crash needs: the body to look for, and the proof a task is new.
        request: dict[str, Any] = {
            "body": body,
            "pending_before": None if before is None else sorted(before),
        }
        if journal_note is not None:
            request["note"] = dict(journal_note)
        log = await SubmissionLog.begin(
            self._journal, self._origin, target="contracts", operation="update", request=request
        )
        return await self._post_bulk(body, before, log, timeout)

    async def _post_bulk(
        self,
        body: dict[str, Any],
        before: frozenset[str] | None,
        log: SubmissionLog,
        timeout: float | None,  # noqa: ASYNC109 -- a bound on the POST, not a scope
    ) -> ZefortTask:
        """Send a bulk update journaled in `log`, adopting its task after an ambiguous failure."""
        policy = self._session.retry.for_unrepeatable()
        wanted = _canonical(body)
        self._sending[wanted] += 1
        try:
            await log.sending(_ONE_BATCH)
            try:
                try:
                    response = await self._session.request(
                        "POST",
                        _BULK_UPDATE,
                        json_body=body,
                        idempotent=False,
                        retry=policy,
                        timeout=timeout,
                    )
                    task = self._task(response, "POST")
                except (TransportError, ProtocolError, APIError) as exc:
                    if not _is_ambiguous(exc):
                        raise
                    url = exc.url or f"{self._session.base_url}{_BULK_UPDATE}"
                    task = await self._adopt(body, url, exc, before)
            except OutcomeUnknownError as exc:
                await log.failed(_ONE_BATCH, "unknown", str(exc))
                await log.end()
                raise
            except AsyncBulkError as exc:
                await log.failed(_ONE_BATCH, "rejected", str(exc))
                await log.end()
                raise
            await log.accepted(_ONE_BATCH, task.id, track=self._follow)
            await log.end()
            self._claimed.append(task.id)
        finally:
            self._sending[wanted] -= 1
            if not self._sending[wanted]:
                del self._sending[wanted]
        return task

    async def _pending_snapshot(self) -> frozenset[str] | None:
        """The ids of the pending tasks, from a listing read that began before this call.

        Shared by the calls started while it is fresh; None when it could not be read (then
        no task can be proved new, and nothing is adopted).
        """
        snapshot = self._snapshot
        now = anyio.current_time()
        if snapshot is None or now - snapshot.started > _SNAPSHOT_FRESH:
            snapshot = _Snapshot(started=now)
            self._snapshot = snapshot
            try:
                snapshot.ids = await self._pending_ids()
            except AsyncBulkError as exc:
                logger.warning(
                    "ZefortClient: pending tasks could not be read before a bulk update (%s); "
                    "its task cannot be adopted if the answer is lost",
                    exc,
                    extra=log_fields("zefort", error=exc),
                )
            finally:
                snapshot.ready.set()
        else:
            await snapshot.ready.wait()
        return snapshot.ids

    async def _pending_ids(self) -> frozenset[str]:
        ids: set[str] = set()
        async with self._listing(self._page_size) as pages:
            async for page in pages:
                ids.update(
                    raw["id"]
                    for raw in page.results
                    if isinstance(raw, Mapping) and isinstance(raw.get("id"), str)
                )
        return frozenset(ids)

    async def _adopt(
        self,
        body: dict[str, Any],
        url: str,
        error: AsyncBulkError,
        before: frozenset[str] | None,
        *,
        own: int = 1,
    ) -> ZefortTask:
        """The task an ambiguous bulk update started, if proved; else the outcome is unknown."""
        wanted = _canonical(body)
        matches: list[ZefortTask] = []
        try:
            async with self._listing(self._page_size) as pages:
                async for page in pages:
                    for raw in page.results:
                        details = raw.get("details") if isinstance(raw, Mapping) else None
                        if (
                            isinstance(details, Mapping)
                            and _canonical(details.get("data")) == wanted
                        ):
                            matches.append(self._converter.structure(raw, ZefortTask))
        except AsyncBulkError as lookup:
            raise OutcomeUnknownError(
                f"{error}; and the pending tasks could not be read to look for it ({lookup})",
                method="POST",
                url=url,
                body=body,
            ) from error
        candidates = tuple(t.id for t in matches)
        # Another identical update of this client on the wire may have started any new match.
        alone = self._sending[wanted] <= own
        new = [
            t
            for t in matches
            if before is not None and t.id not in before and t.id not in self._claimed
        ]
        if alone and len(new) == 1:
            logger.warning(
                "ZefortClient: bulk update failed ambiguously (%s); adopted pending task %s, "
                "whose data is exactly the request's and which was not pending before it",
                error,
                new[0].id,
                extra=log_fields("zefort", job_id=new[0].id, error=error),
            )
            return new[0]
        shown = ", ".join(candidates[:5])
        if before is None:
            reason = "the pending tasks were not read before sending, so no task is proved new"
        elif not alone:
            reason = (
                "another identical bulk update of this client is in flight, so no matching "
                f"task ({shown or 'none found'}) is proved to be this one's"
            )
        elif len(new) > 1:
            reason = (
                f"{len(new)} new pending tasks match the request exactly ({shown}); adopting none"
            )
        elif matches:
            reason = (
                f"{len(matches)} pending task(s) match the request exactly ({shown}), but each "
                "was pending before it was sent or is another call's: adopting none"
            )
        else:
            reason = (
                "no pending task matches the request: it may not have been received, or its "
                "task may have finished already"
            )
        raise OutcomeUnknownError(
            f"{error}; {reason}", method="POST", url=url, body=body, candidates=candidates
        ) from error

    # -- tasks --------------------------------------------------------------------------------

    async def get_task(
        self,
        task_id: str,
        *,
        deadline: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the per-call limit of every client call
    ) -> ZefortTask:
        """One task as it stands: ``GET /api/tasks/{task_id}/``.

        Args:
            task_id: the task's id.
            deadline: when the call must be over, in `anyio.current_time` seconds.
            timeout: seconds the call may take, retries included (each try is still bounded
                by the client's ``timeouts``).

        Raises:
            ValidationError: the id is not a non-empty string.
            NotFoundError: no such task.
            ProtocolError: the answer is not a task (the message names the field).
            DeadlineExceededError: the deadline or timeout came first.
        """
        path = self._session.path(_TASK, task_id=task_id)
        response = await self._session.request(
            "GET",
            path,
            priority=Priority.DETECT,
            job_id=task_id,
            deadline=deadline,
            timeout=timeout,
        )
        return self._task(response, "GET")

    async def acknowledge_task(
        self,
        task_id: str,
        *,
        deadline: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the per-call limit of every client call
    ) -> ZefortTask:
        """Mark a task seen (``PATCH {"frontend_status": "done"}``): it leaves the pending list.

        Acknowledging twice has the effect of once, so the request is retried like a read.

        Args:
            task_id: the task's id.
            deadline: when the call must be over, in `anyio.current_time` seconds.
            timeout: seconds the call may take, retries included (each try is still bounded
                by the client's ``timeouts``).

        Raises:
            ValidationError: the id is not a non-empty string.
            NotFoundError: no such task.
            DeadlineExceededError: the deadline or timeout came first.
        """
        path = self._session.path(_TASK, task_id=task_id)
        response = await self._session.request(
            "PATCH",
            path,
            json_body={"frontend_status": "done"},
            idempotent=True,
            priority=Priority.HOUSEKEEPING,
            job_id=task_id,
            deadline=deadline,
            timeout=timeout,
        )
        return self._task(response, "PATCH")

    def iter_tasks(
        self,
        *,
        page_size: int | None = None,
        timeout: float | None = None,
    ) -> ZefortTaskListing:
        """Every pending (unacknowledged) task, page after page: ``GET /api/tasks/``.

        The first page tells how many there are; the following pages are fetched several at a
        time and handed out in order. A task seen twice (the listing shifted between pages) is
        yielded once. Use it in ``async for``; breaking out leaves nothing running.

        Args:
            page_size: the page size to ask for; by default the client's ``listing_page_size``.
            timeout: seconds each page's request may take, retries included (each try is
                still bounded by the client's ``timeouts``); None for the client's limits.

        Raises:
            ValidationError: page_size is not an integer >= 1, or timeout not > 0.
            DeadlineExceededError: while iterating, a page's request outlasted ``timeout``.
        """
        size = (
            self._page_size if page_size is None else check_count("page_size", page_size, least=1)
        )
        per_request = check_seconds("timeout", timeout, optional=True)
        return ZefortTaskListing(
            self._listing(size, timeout=per_request), self._converter.structure
        )

    def _listing(
        self,
        page_size: int,
        *,
        deadline: float | None = None,
        timeout: float | None = None,
        lean: bool = False,
        skipped: set[int] | None = None,
    ) -> OrderedPages[TaskPage]:
        """The pending listing's pages, in order; ``lean`` reads `ListedTask` records only.

        With a ``skipped`` set, a page after the first that the server answers 429 is not
        retried: its number goes into the set and an empty page stands in for it. (Page 1
        still raises `RateLimitedError`: without it the listing's length is unknown.)
        """
        keywords: dict[str, Any] = {**request_keywords("detect", deadline), "timeout": timeout}
        if skipped is not None:
            keywords["retry"] = self._unthrottled_retry()
        last_page: list[int | None] = [None]

        async def fetch(index: int) -> TaskPage:
            page = index + 1
            params = {"page": page, "page_size": page_size}
            reader = (
                functools.partial(read_listed_page, page=page, page_size=page_size)
                if lean
                else None
            )
            try:
                response = await self._session.request(
                    "GET", _TASKS, params=params, reader=reader, **keywords
                )
            except NotFoundError:
                if page == 1:
                    raise
                # The listing shrank while we read it (tasks acknowledged): it ends here.
                return TaskPage(results=(), page=page, page_size=page_size, last_page=page - 1)
            except RateLimitedError:
                if skipped is None or page == 1:
                    raise
                skipped.add(page)
                return TaskPage(results=(), page=page, page_size=page_size, last_page=last_page[0])
            # The lean reader made the page; the full listing is built from the parsed answer.
            listed: TaskPage = response.data if lean else _page_of(response, page, page_size)
            if page == 1:
                last_page[0] = listed.last_page
            return listed

        return OrderedPages(
            fetch,
            count=lambda page: page.last_page,
            is_last=_listing_end(f"{self._session.base_url}{_TASKS}", skipped),
            prefetch=max(1, self._session.max_in_flight // _LISTING_SHARE),
        )

    def _unthrottled_retry(self) -> RetryPolicy:
        """The client's retry policy, but for 429: that is left to the caller."""
        policy = self._session.retry
        return attrs.evolve(policy, retry_statuses=policy.retry_statuses - {_THROTTLED})

    def _task(self, response: Response, method: str) -> ZefortTask:
        try:
            return structure_task(response.data, origin=self._origin)
        except ProtocolError as exc:
            raise ProtocolError(
                str(exc), method=method, url=response.url, status=response.status
            ) from None

    # -- following tasks ----------------------------------------------------------------------

    async def wait_for_task(
        self,
        task_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- the tracker's deadline, not a scope's
        acknowledge: bool = False,
        on_progress: Callable[[TrackerStats], None] | None = None,
    ) -> ZefortTask:
        """Wait until a task finishes (done or failed) and return it.

        Args:
            task_id: the task.
            timeout: seconds to wait at most; None waits as long as it takes.
            acknowledge: acknowledge the task once it finished, and return it acknowledged.
                If that fails, the task is returned all the same with ``frontend_status``
                still ``pending`` (and a warning logged): call `acknowledge_task` again later.
            on_progress: called with a `TrackerStats` snapshot at most every 0.5 s, and once
                at the end.

        Raises:
            JobTimeoutError: the deadline passed; ``unfinished`` is ``(task_id,)``.
            NotFoundError: no such task.
            ValidationError: the id is not a non-empty string.
        """
        _check_task_id("task_id", task_id)
        return await wait_for(
            self.task_source,
            task_id,
            timeout=timeout,
            on_progress=on_progress,
            **self._track_options(acknowledge),
        )

    def track_tasks(
        self,
        task_ids: Iterable[str],
        *,
        timeout: float | None = None,
        acknowledge: bool = False,
        task_timeout: float | None = None,
        on_progress: Callable[[TrackerStats], None] | None = None,
    ) -> TrackIterator[ZefortTask]:
        """Yield each task once, as it finishes, in the order they finish.

        While many tasks are pending, the tracker reads the pending listing (a few pages)
        instead of polling each task; a task missing from it gets one individual read. A plain
        ``async for`` polls only while it waits for the next task, so breaking out leaves
        nothing running; inside ``async with`` it polls in the background, for the lowest lag.

        Args:
            task_ids: the tasks; an id given twice is followed once.
            timeout: seconds after which the iteration ends with `JobTimeoutError` naming the
                tasks still unfinished (every task finished before was yielded first).
            acknowledge: acknowledge each task once you have taken it: when you ask for the
                next task, or the loop ends normally. A task is yielded as soon as it is seen
                finished (still ``frontend_status`` ``pending``); if your loop raises while
                holding it, it stays pending on the server and is found again next run. The
                iteration ends once every acknowledgement has settled (or the deadline
                passed); tasks whose acknowledgement failed are named by the iterator's
                ``unacknowledged`` and in a warning. Inside ``async with`` acknowledgements go
                out in the background at once; in a plain loop, while it waits for the next
                finished task.
            task_timeout: a deadline for each task; a task past it is dropped, the others are
                still yielded, and the iteration then ends with `JobTimeoutError` naming it.
            on_progress: called with a `TrackerStats` snapshot at most every 0.5 s, and once
                when the iteration ends.

        Raises:
            ValidationError: an id is not a non-empty string (the error names its position).
        """
        if isinstance(task_ids, str | bytes):
            raise ValidationError("task_ids", "must be an iterable of ids, not a single string")
        ids = [_check_task_id(f"task_ids[{i}]", task_id) for i, task_id in enumerate(task_ids)]
        return track(
            self.task_source,
            ids,
            timeout=timeout,
            job_timeout=task_timeout,
            on_progress=on_progress,
            **self._track_options(acknowledge),
        )

    def _track_options(self, acknowledge: bool) -> dict[str, Any]:
        log = TrackingLog(self._journal, self._origin, "task")
        if acknowledge:
            return {"options": self._tracking, "on_taken": self._acknowledge_taken, "log": log}
        return {"options": self._tracking, "log": log}

    async def _acknowledge_taken(self, task: ZefortTask, deadline: float | None) -> ZefortTask:
        """Acknowledge a task the consumer took, by ``deadline``, as housekeeping."""
        if task.is_acknowledged:
            return task  # acknowledged elsewhere already
        path = self._session.path(_TASK, task_id=task.id)
        response = await self._session.request(
            "PATCH",
            path,
            json_body={"frontend_status": "done"},
            idempotent=True,
            **request_keywords("housekeeping", deadline),
        )
        return self._task(response, "PATCH")

    def _note_status(self, task: ZefortTask) -> None:
        """Warn once per client about each backend_status value Zefort does not document."""
        status = task.backend_status
        if task.is_known_status or status in self._warned:
            return
        self._warned.add(status)
        logger.warning(
            "ZefortClient: task %s has backend_status %r, which Zefort does not document; "
            "taking it as still running until it changes or the deadline passes",
            task.id,
            status,
            extra=log_fields("zefort", job_id=task.id, backend_status=status),
        )


def _listed_id(raw: object) -> object:
    if type(raw) is ListedTask:
        return raw.id
    return raw.get("id") if type(raw) is dict else None


def _id_and_status(listed: object) -> tuple[object, object]:
    """A listed task's id and ``backend_status``, from a parsed task object (or anything else)."""
    if type(listed) is dict:
        return listed.get("id"), listed.get("backend_status")
    return None, None


def _changed(page: TaskPage, listed_many: Callable[..., list[int]]) -> list[int]:
    """The indexes of the listed tasks a sweep must build: tracked, and moved since last seen."""
    results = page.results
    if page.body is not None:  # `ListedTask` records, every one (`read_listed_page`)
        ids = [task.id for task in results]
        statuses = [task.backend_status for task in results]
    else:
        pairs = [_id_and_status(item) for item in results]
        ids = [task_id for task_id, _ in pairs]
        statuses = [status for _, status in pairs]
    return listed_many(ids, statuses, _PENDING, page=page.page)


def _page_of(response: Response, page: int, page_size: int) -> TaskPage:
    """A listing page built from its parsed answer."""
    try:
        return structure_page(response.data, page=page, page_size=page_size)
    except ProtocolError as exc:
        raise ProtocolError(
            str(exc), method="GET", url=response.url, status=response.status
        ) from None


def _listing_end(url: str, skipped: set[int] | None) -> Callable[[int, TaskPage], bool]:
    """`OrderedPages`'s ``is_last`` for the pending listing at ``url``."""
    previous: list[tuple[Any, ...]] = [()]

    def is_last(index: int, page: TaskPage) -> bool:
        # A server that ignores `page` answers the same page for ever: reading on would
        # never end, and stopping would end short without saying so.
        # The page's length and its first and last ids tell a repeat; keeping every id of
        # the page until the next would hold one reference per pending task for nothing.
        if skipped and page.page in skipped:
            # Not read: the listing goes on unless the page was the last one counted.
            return page.last_page is not None and page.page >= page.last_page
        results = page.results
        ids = (len(results), _listed_id(results[0]), _listed_id(results[-1])) if results else ()
        if ids and ids == previous[0]:
            raise _PageIgnoredError(
                f"page {index + 1} repeats page {index} of the pending listing: the "
                "server ignores `page`, so the listing cannot be read whole",
                method="GET",
                url=url,
            )
        previous[0] = ids
        return _is_last_page(index, page)

    return is_last


def _is_last_page(_: int, page: TaskPage) -> bool:
    if not page.results:
        return True
    if page.last_page is not None and page.page < page.last_page:
        return False
    # At the last page the server counted, a link to a next page says the count fell short:
    # read on rather than drop tasks (the page after the real end is empty or a 404).
    return page.next is None


class ZefortTaskListing(ClosingIterator):
    """The pending tasks, page after page, as an async iterator (see `ZefortClient.iter_tasks`)."""

    def __init__(
        self,
        pages: OrderedPages[TaskPage],
        structure: Callable[[Any, type[ZefortTask]], ZefortTask],
    ) -> None:
        """Wrap the pages; nothing is fetched before the first ``__anext__``."""
        self._pages = pages
        self._structure = structure
        self._buffer: deque[Any] = deque()
        self._seen: set[str] = set()

    def __repr__(self) -> str:
        """How far the listing has been read."""
        return f"ZefortTaskListing(pages_read={self._pages.consumed}, tasks={len(self._seen)})"

    async def __anext__(self) -> ZefortTask:
        """The next pending task.

        Raises:
            ProtocolError: a page or a task is not what the API promises, or the listing
                ignores ``page`` (page 2 repeats page 1), so it cannot be read whole.
            APIError: the server refused a page.
        """
        while True:
            while not self._buffer:
                try:
                    page = await self._pages.__anext__()
                except _PageIgnoredError:
                    await self.aclose()  # the pages fetched ahead are of no use now
                    raise
                self._buffer.extend(page.results)
            task = self._structure(self._buffer.popleft(), ZefortTask)
            if task.id not in self._seen:
                self._seen.add(task.id)
                return task

    async def aclose(self) -> None:
        """Stop reading; pages still being fetched are cancelled. Idempotent."""
        self._buffer.clear()
        await self._pages.aclose()


class ZefortTaskSource:
    """The `JobSource` of Zefort tasks: how the tracker reads one task, or the whole listing.

    Use it with `asyncbulk.JobTracker` to add tasks while tracking; `track_tasks` and
    `wait_for_task` cover the common cases.

    Attributes:
        kind: "Zefort task", for messages.
        stats: the client's request counts, so the tracker can report requests and 429s.
    """

    kind = "Zefort task"
    vendor = "zefort"

    def __init__(self, client: ZefortClient) -> None:
        """Serve the tasks of ``client``."""
        self._client = client
        self._pages = 1
        # Whether the last sweep left pages the server answered 429 to the next one.
        self._skipped = False

    @property
    def telemetry(self) -> Tracer | None:
        """The client's OpenTelemetry instrumentation, which the tracker reports through."""
        return self._client._telemetry  # noqa: SLF001 -- the client's own source

    def __repr__(self) -> str:
        """The client it reads through."""
        return f"ZefortTaskSource({self._client!r})"

    @property
    def stats(self) -> RequestStats:
        """A snapshot of the client's request counts."""
        return self._client.stats

    async def fetch(self, job_id: str, *, deadline: float | None = None) -> ZefortTask:
        """``GET /api/tasks/{id}/``, ending by ``deadline``."""
        session = self._client._session  # noqa: SLF001 -- the client's own source
        path = session.path(_TASK, task_id=job_id)
        response = await session.request("GET", path, **request_keywords("detect", deadline))
        return self._client._task(response, "GET")  # noqa: SLF001

    def is_finished(self, job: ZefortTask) -> bool:
        """Done or failed; an undocumented status is still running (warned about once)."""
        category = status_category(job.backend_status)
        if category == "unknown":
            self._client._note_status(job)  # noqa: SLF001 -- the client's own helper
        return category in FINISHED_CATEGORIES

    def is_failed(self, job: ZefortTask) -> bool:
        """Finished in failure."""
        return job.is_failed

    def progress(self, job: ZefortTask) -> str:
        """The backend status: a change (pending to anything) means the task moved."""
        return job.backend_status

    def finished_at(self, job: ZefortTask) -> float | None:  # noqa: ARG002 -- JobSource's signature
        """Zefort does not say when a task finished."""
        return None

    async def sweep(self, view: SweepView[ZefortTask], *, deadline: float | None = None) -> bool:
        """Report the tracked tasks the pending listing shows, reading its pages concurrently.

        Up to half the client's ``max_in_flight`` pages are read at once, so a long listing
        does not wait a round trip per page, and the other half of the connections stays free
        for polls, acknowledgements and submissions.

        Only a tracked task whose ``backend_status`` moved is built into a `ZefortTask`; the
        others cost a dictionary lookup, and nothing of them outlives their page. A listed task
        that cannot be read is left out: its own fetch will tell.

        When the pending count differs between two pages (tasks acknowledged or added while
        the listing was read), or a listing of several pages does not say it, the view is told
        (`SweepView.shifted`): a task may have slipped past a page boundary unread.

        A page the server answers 429 is not retried after its ``Retry-After``: the tasks on
        it are left to the next sweep, which reads them afresh sooner than a retry would
        (`SweepView.skipped`; a 429 on page 1 leaves the whole listing to it). The 429 still
        counts for the client's flow control. The sweep after one that skipped a page retries
        as any request does, so a listing throttled sweep after sweep is still read.

        Returns:
            True once every page was read; False when the listing ignores ``page`` (page 2
            repeats page 1), so that it can never be read whole.
        """
        client = self._client
        listed_many = view.listed_many
        origin, page_size = client._origin, client._page_size  # noqa: SLF001 -- its own source
        skipped: set[int] | None = None if self._skipped else set()
        self._skipped = False
        listing = client._listing(  # noqa: SLF001
            page_size, deadline=deadline, lean=True, skipped=skipped
        )
        counts: set[int | None] = set()
        read = 0
        async with listing as pages:
            try:
                async for page in pages:
                    if skipped and page.page in skipped:
                        continue
                    read += 1
                    counts.add(page.count)
                    changed = _changed(page, listed_many)
                    for task in page.changed_tasks(changed, origin=origin):
                        view.changed(task.id, task)
            except _PageIgnoredError as exc:
                logger.warning(
                    "ZefortClient: %s; following tasks one by one instead",
                    exc,
                    extra=log_fields("zefort", error=exc),
                )
                return False
            except RateLimitedError:
                if skipped is None:
                    raise
                # Page 1: the listing's length is unknown, and so is the rest; the cost of
                # a sweep is still what the last one that read page 1 learnt.
                skipped.add(1)
            else:
                self._pages = max(1, pages.expected)
        if read > 1 and (len(counts) > 1 or None in counts):
            view.shifted()
        if skipped:
            self._skipped = True
            view.skipped()
        return True

    def sweep_cost(self) -> int:
        """The pages the listing took last time it was read (1 before that)."""
        return self._pages
