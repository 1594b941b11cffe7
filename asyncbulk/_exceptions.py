"""Every error asyncbulk raises, in one tree.

```
AsyncBulkError
├── ValidationError          (also ValueError) bad input from the caller, raised before any request
├── ClientClosedError        (also RuntimeError) a client used after aclose()
├── APIError                 the server answered with an error status
│   ├── AuthenticationError  401, 403
│   ├── NotFoundError        404
│   ├── RateLimitedError     429, with retry_after
│   └── ServerError          5xx
├── TransportError           the request did not get an answer: connection failure, timeout
├── ProtocolError            an answer that is not what the API promises
│   └── IncompleteListingError  a listing ended before the entries its total promised
├── OutcomeUnknownError      a non-idempotent request may or may not have been carried out
├── SubmissionError          a bulk submission was accepted only in part
├── JournalError             the journal cannot be opened or failed to write
│   └── SchemaVersionError   its tables or file were written by a newer asyncbulk
├── BatchError               one batch of a submission not accepted (asyncbulk.chakra; in
│                            SubmissionError.errors, naming the batch's input positions)
├── JobTimeoutError          (also TimeoutError) a deadline passed with jobs still unfinished
└── DeadlineExceededError    (also TimeoutError) a wait (rate limiter, host pause, retry delay)
                             reached the caller's deadline
```

aiohttp's own exceptions never reach the caller: the session layer maps them to
`TransportError` in one place. No message or repr here ever holds a credential: URLs carry none
(credentials travel in headers), and every message is scrubbed of the credentials of the clients
alive in the process, so even a server that echoes a token into a field cannot make an error
show it.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "APIError",
    "AsyncBulkError",
    "AuthenticationError",
    "ClientClosedError",
    "DeadlineExceededError",
    "IncompleteListingError",
    "JobTimeoutError",
    "JournalError",
    "NotFoundError",
    "OutcomeUnknownError",
    "ProtocolError",
    "RateLimitedError",
    "SchemaVersionError",
    "ServerError",
    "SubmissionError",
    "TransportError",
    "ValidationError",
]


#: Credentials of the clients alive in this process, counted by the clients holding them.
_SECRETS: Final[Counter[str]] = Counter()
#: Shorter strings are not treated as secrets: scrubbing them would garble ordinary text.
_SHORTEST_SECRET: Final = 6


def register_secrets(secrets: tuple[str, ...]) -> None:
    """Scrub these strings from every message built from now on (a client was created)."""
    _SECRETS.update(s for s in secrets if len(s) >= _SHORTEST_SECRET)


def unregister_secrets(secrets: tuple[str, ...]) -> None:
    """Stop scrubbing these strings once no client holds them (a client was closed)."""
    _SECRETS.subtract(s for s in secrets if len(s) >= _SHORTEST_SECRET)
    for secret in [s for s, count in _SECRETS.items() if count <= 0]:
        del _SECRETS[secret]


def scrub(text: str) -> str:
    """``text`` with every live credential replaced by ``<redacted>``."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "<redacted>")
    return text


class AsyncBulkError(Exception):
    """The root of every error asyncbulk raises.

    Attributes:
        unfinished: when the error ended the tracking of jobs, the ids of every job not
            delivered (every job already detected was delivered before it); empty otherwise.
    """

    unfinished: tuple[str, ...] = ()

    def __init__(self, *args: object) -> None:
        """Keep the arguments, with any live credential scrubbed from the strings among them."""
        if _SECRETS:
            args = tuple(scrub(a) if isinstance(a, str) else a for a in args)
        super().__init__(*args)


class ValidationError(AsyncBulkError, ValueError):
    """The caller's input is wrong; nothing was sent.

    Attributes:
        field: the name of the offending field, with its position where there is one
            (``updates[3].status``, ``line 12``).
        reason: what is wrong with it.
    """

    def __init__(self, field: str, reason: str) -> None:
        """Name the field and say what is wrong with it."""
        reason = scrub(reason)
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def at(self, prefix: str) -> ValidationError:
        """Return the same error with its field placed under ``prefix`` (``updates[3]``)."""
        field = f"{prefix}.{self.field}" if self.field else prefix
        error = ValidationError(field, self.reason)
        error.__cause__ = self.__cause__
        return error


class ClientClosedError(AsyncBulkError, RuntimeError):
    """A client was used after `aclose()` or after its ``async with`` block ended."""


class APIError(AsyncBulkError):
    """The server answered with an error status.

    Attributes:
        status: the HTTP status code.
        method: the request's method.
        url: the request's URL (credentials travel in headers, never in it).
        messages: the vendor's error messages, as it sent them.
        body: the start of the response body, for diagnosis.
    """

    def __init__(
        self,
        *,
        status: int,
        method: str,
        url: str,
        messages: Sequence[str] = (),
        body: str = "",
    ) -> None:
        """Describe the failed request and what the server said."""
        self.status = status
        self.method = method
        self.url = url
        # The server's own words may echo a credential back: scrubbed like every message.
        self.messages = tuple(scrub(m) for m in messages) if _SECRETS else tuple(messages)
        self.body = scrub(body) if _SECRETS else body
        detail = "; ".join(self.messages)
        super().__init__(
            f"{method} {url} -> {status}" + (f": {detail}" if detail else ""),
        )


class AuthenticationError(APIError):
    """The credentials were refused (401) or lack the right (403)."""


class NotFoundError(APIError):
    """The resource does not exist (404)."""


class RateLimitedError(APIError):
    """The server asked us to slow down (429) and retries did not outlast it.

    Attributes:
        retry_after: seconds the server asked us to wait, when it said.
    """

    def __init__(self, *, retry_after: float | None = None, **kwargs: Any) -> None:
        """Describe the refused request and the wait the server asked for."""
        super().__init__(**kwargs)
        self.retry_after = retry_after


class ServerError(APIError):
    """The server failed (5xx)."""


class TransportError(AsyncBulkError):
    """The request got no answer: the connection failed, dropped or timed out.

    Attributes:
        method: the request's method.
        url: the request's URL.
        sent: False when the request certainly never reached the server (the connection was
            refused or never established); True when it may have been received and acted on.
    """

    def __init__(self, message: str, *, method: str, url: str, sent: bool) -> None:
        """Describe the request that got no answer."""
        super().__init__(f"{method} {url}: {message}")
        self.method = method
        self.url = url
        self.sent = sent


class ProtocolError(AsyncBulkError):
    """The server's answer is not what the API promises.

    Not JSON, a required field missing or of the wrong type, a link to another host.

    Attributes:
        method: the request's method, when known.
        url: the request's URL, when known.
        status: the response's status, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        url: str | None = None,
        status: int | None = None,
    ) -> None:
        """Say what was wrong with the answer and which request it answered."""
        where = f"{method} {url}" if method and url else (url or "")
        super().__init__(f"{where}: {message}" if where else message)
        self.method = method
        self.url = url
        self.status = status


class IncompleteListingError(ProtocolError):
    """A listing could not be read to the end its server announced.

    Raised after every entry that could be read was yielded: a page stayed empty (or held
    only entries already read) before ``_meta.total`` was reached, even when read again.

    Attributes:
        read: the entries yielded before the listing broke off.
        total: the total the server announced.
        offset: the offset (``skip``) from which entries could not be read.
    """

    def __init__(
        self,
        *,
        read: int,
        total: int,
        offset: int,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        """Say how far the listing got and what it promised."""
        super().__init__(
            f"listing incomplete: {read} of {total} entries read; "
            f"none could be read from offset {offset}",
            method=method,
            url=url,
        )
        self.read = read
        self.total = total
        self.offset = offset


class OutcomeUnknownError(AsyncBulkError):
    """A request that is not safe to repeat failed in a way that hides whether it took effect.

    asyncbulk does not send it again by itself. The caller decides, with the request in hand.

    Attributes:
        method: the request's method.
        url: the request's URL.
        body: the JSON body that was sent.
        candidates: ids of what the request may have started (pending tasks whose data is the
            request's), none of them proved to be its own.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str,
        url: str,
        body: Any,
        candidates: Sequence[str] = (),
    ) -> None:
        """Describe the request whose outcome is unknown."""
        super().__init__(f"{method} {url}: outcome unknown: {message}")
        self.method = method
        self.url = url
        self.body = body
        self.candidates = tuple(candidates)


class SubmissionError(AsyncBulkError):
    """A bulk submission was accepted only in part.

    Attributes:
        submission: the record of what was accepted (its jobs, and the input positions each
            carries); nothing accepted is lost track of.
        errors: the errors met, each naming the input positions it concerns.
        stopped_by: the error that stopped sending (one every later batch would meet, such
            as an `AuthenticationError`; an invalid item; the last of a run of failures), or
            None when every batch was sent.
    """

    def __init__(
        self,
        message: str,
        *,
        submission: Any,
        errors: Sequence[BaseException],
        stopped_by: BaseException | None = None,
    ) -> None:
        """Keep the partial submission, the errors met, and what stopped it."""
        super().__init__(message)
        self.submission = submission
        self.errors = tuple(errors)
        self.stopped_by = stopped_by


class JournalError(AsyncBulkError):
    """The journal cannot be opened (a newer schema, not a journal) or a write to it failed.

    After a failed write the journal refuses every later call with this error: what it holds
    stops at its last commit, and the work it records must not go on as if it were recorded.
    """


class SchemaVersionError(JournalError):
    """The journal's tables (or file) were written by a newer asyncbulk; they are left untouched.

    Attributes:
        found: the version the tables carry.
        supported: the newest version this library knows.
    """

    def __init__(self, message: str, *, found: int, supported: int) -> None:
        """Say where the newer tables are and which versions were found and are known."""
        super().__init__(message)
        self.found = found
        self.supported = supported


class JobTimeoutError(AsyncBulkError, TimeoutError):
    """A deadline passed before every job finished.

    Attributes:
        unfinished: the ids of the jobs still unfinished at the deadline.
        finished: the jobs (as returned by the client) that finished before it, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        unfinished: Sequence[str],
        finished: Mapping[str, Any] | None = None,
    ) -> None:
        """Name the jobs that did not finish in time."""
        ids = tuple(unfinished)
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")  # noqa: PLR2004
        super().__init__(f"{message} (unfinished: {shown})" if ids else message)
        self.unfinished = ids
        self.finished = dict(finished or {})


class DeadlineExceededError(AsyncBulkError, TimeoutError):
    """A request's wait (the rate limiter, a pause of the host, a retry delay) reached its deadline.

    Raised at the deadline, never later. Callers with a timeout error of their own (the
    tracker's `JobTimeoutError`) catch it and raise theirs.

    Attributes:
        method: the request's method, when known.
        url: the request's URL, when known.
    """

    def __init__(self, message: str, *, method: str | None = None, url: str | None = None) -> None:
        """Say which wait reached the deadline, and for which request."""
        where = f"{method} {url}" if method and url else (url or "")
        super().__init__(f"{where}: {message}" if where else message)
        self.method = method
        self.url = url
