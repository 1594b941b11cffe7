"""The one way in for the network: every request of every vendor client goes through `Session`.

The session authenticates, limits requests in flight, retries by the `RetryPolicy`, shares a
pause among all requests when the host answers 429 and decodes the vendor's envelope. It sends
every try through a `Transport` (`asyncbulk._transport`), the only module that imports aiohttp
for client work and the one place its exceptions become asyncbulk's own.
"""

from __future__ import annotations

import base64
import functools
import inspect
import ipaddress
import json
import logging
import math
import re
import string
import time
from collections.abc import Awaitable, Callable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol, Self
from urllib.parse import quote

import anyio
import attrs
import orjson
from yarl import URL

from asyncbulk._exceptions import (
    APIError,
    AsyncBulkError,
    AuthenticationError,
    ClientClosedError,
    DeadlineExceededError,
    NotFoundError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    TransportError,
    ValidationError,
    register_secrets,
    unregister_secrets,
)
from asyncbulk._flow import FlowControl, InFlight, Priority, RateLimit, SharedLimiter, loop_time
from asyncbulk._retry import RetryPolicy, is_idempotent, parse_retry_after
from asyncbulk._slots import slot_setter
from asyncbulk._transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    AiohttpTransport,
    RefusedAnswerError,
    Transport,
    TransportRequest,
    TransportResponse,
    build_request,
    check_max_response_bytes,
    parts_sender,
)
from asyncbulk._version import __version__

if TYPE_CHECKING:
    import ssl as _ssl
    from collections.abc import Mapping

    import aiohttp

__all__ = [
    "BasicAuth",
    "BearerAuth",
    "ChakraEnvelope",
    "ClientBase",
    "Credential",
    "PlainEnvelope",
    "RequestObserver",
    "RequestStats",
    "Response",
    "Session",
    "Timeouts",
    "TryInfo",
    "TryResult",
]

logger: Final = logging.getLogger("asyncbulk")
# A library configures no output of its own: without this, Python's last-resort handler would
# print retry warnings on stderr of every program that has not set up logging.
logger.addHandler(logging.NullHandler())

USER_AGENT: Final = f"asyncbulk/{__version__}"
_NO_BODY: Final = object()
_BODY_EXCERPT: Final = 500
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
#: Same-origin redirects a GET follows before the answer is taken to be a loop.
MAX_REDIRECTS: Final = 5


def _check_timeout(name: str) -> Callable[[object, object, float | None], None]:
    def check(_instance: object, _attribute: object, value: float | None) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValidationError(name, f"must be a number of seconds > 0, not {value!r}")

    return check


@attrs.frozen(kw_only=True)
class Timeouts:
    """How long one try of a request may take, in seconds.

    Args:
        connect: to get a connection (from the pool or a new one).
        total: for the whole try, connection, request and response body included.
        read: the longest pause while reading the answer; None for no limit but `total`.
    """

    connect: float = attrs.field(default=10.0, validator=_check_timeout("timeouts.connect"))
    total: float = attrs.field(default=60.0, validator=_check_timeout("timeouts.total"))
    read: float | None = attrs.field(default=None, validator=_check_timeout("timeouts.read"))


def _frozen_counts(value: Mapping[int, int]) -> Mapping[int, int]:
    return MappingProxyType(dict(value))


@attrs.frozen(kw_only=True)
class RequestStats:
    """A snapshot of what a client has sent and met, for progress displays and tests.

    Read ``client.stats`` again for fresh figures: a snapshot never changes.

    Attributes:
        requests: tries sent (each retry and each redirect followed counts).
        retries: tries that were retries.
        rate_limited: 429 answers met.
        errors: requests that ended in an error after their last try.
        by_status: answers per HTTP status.
        send_rate: the send rate in force, in requests per second: the configured
            `RateLimit`, or the rate learned from 429s; None while unlimited.
        limiter_wait: seconds requests spent waiting for their turn at the rate limiter and
            for pauses of the host, all requests together.
        host_pauses: times the whole host paused because its shared budget was spent.
    """

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    errors: int = 0
    by_status: Mapping[int, int] = attrs.field(factory=dict, converter=_frozen_counts)
    send_rate: float | None = None
    limiter_wait: float = 0.0
    host_pauses: int = 0


@attrs.define
class _Counters:
    """The session's running counts; only `Session` writes them, `RequestStats` shows them."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    errors: int = 0
    by_status: dict[int, int] = attrs.Factory(dict)


@attrs.frozen
class Response:
    """A decoded answer.

    Attributes:
        status: the HTTP status.
        data: the payload: Chakra's ``_data``, or Zefort's whole body.
        meta: Chakra's ``_meta`` (empty for Zefort).
        messages: error messages the vendor sent alongside a successful answer.
        url: the URL that was requested.
    """

    status: int
    data: Any
    meta: Mapping[str, Any]
    messages: tuple[str, ...]
    url: str


_RESPONSE_SETTERS: Final = tuple(
    slot_setter(Response, name) for name in ("status", "data", "meta", "messages", "url")
)


def _response(
    status: int, data: Any, meta: Mapping[str, Any], messages: tuple[str, ...], url: str
) -> Response:
    """A `Response`, as its constructor makes it, on the path every successful call takes.

    The frozen class's ``__init__`` costs twice as much as filling its slots.
    """
    response: Response = object.__new__(Response)
    set_status, set_data, set_meta, set_messages, set_url = _RESPONSE_SETTERS
    set_status(response, status)
    set_data(response, data)
    set_meta(response, meta)
    set_messages(response, messages)
    set_url(response, url)
    return response


#: A credential: a fixed string, or a function (plain or async) that returns the current one.
#: A function is asked on first use and again once after a 401, so a rotated key is picked up.
Credential = str | Callable[[], str] | Callable[[], Awaitable[str]]


class Auth(Protocol):
    """An authentication strategy: the header it adds, and the secrets to keep out of text."""

    @property
    def generation(self) -> int:
        """How many values the credential has had: a change means new headers."""
        ...

    @property
    def refreshable(self) -> bool:
        """Whether asking again may give another credential (it is a function)."""
        ...

    async def ensure(self) -> None:
        """Have a credential: ask the function the first time."""
        ...

    async def refresh(self) -> None:
        """Ask the function again (after a 401)."""
        ...

    def header(self) -> tuple[str, str]:
        """The header name and value to send."""
        ...

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in a log line, repr or message."""
        ...


class _CredentialAuth:
    """A credential, fixed or asked of a function, and how many values it has had."""

    __slots__ = ("_field", "_source", "_value", "generation")

    def __init__(self, credential: Credential, *, field: str) -> None:
        self._field = field
        self.generation = 0
        self._source: Callable[[], str | Awaitable[str]] | None = None
        self._value: str | None = None
        if callable(credential):
            self._source = credential
        else:
            _check_credential(field, credential)
            self._value = credential

    @property
    def refreshable(self) -> bool:
        """Whether the credential comes from a function."""
        return self._source is not None

    async def ensure(self) -> None:
        """Ask the function for a first credential, unless there is one."""
        if self._value is None:
            await self.refresh()

    async def refresh(self) -> None:
        """Ask the function again; a new value bumps `generation`.

        Raises:
            ValidationError: the function returned something that is not a usable credential.
        """
        if self._source is None:
            return
        value = self._source()
        if inspect.isawaitable(value):
            value = await value
        _check_credential(self._field, value)
        if value != self._value:
            self._value = value
            self.generation += 1

    def _current(self) -> str:
        if self._value is None:
            raise ClientClosedError("no credential yet: ensure() was not awaited")
        return self._value


class BearerAuth(_CredentialAuth):
    """``Authorization: Bearer <token>`` (ChakraHQ)."""

    __slots__ = ()

    def __init__(self, token: Credential, *, field: str = "token") -> None:
        """Keep the token or its function; an empty token is a `ValidationError` (``field``)."""
        super().__init__(token, field=field)

    def header(self) -> tuple[str, str]:
        """The Authorization header."""
        return "Authorization", f"Bearer {self._current()}"

    def secrets(self) -> tuple[str, ...]:
        """The token."""
        return (self._current(),)

    def __repr__(self) -> str:
        """Never shows the token."""
        return "BearerAuth(token=<redacted>)"


class BasicAuth(_CredentialAuth):
    """HTTP Basic with an API key as the user name and an empty password (Zefort)."""

    __slots__ = ()

    def __init__(self, api_key: Credential, *, field: str = "api_key") -> None:
        """Keep the key or its function; an empty key is a `ValidationError` (``field``)."""
        super().__init__(api_key, field=field)

    def _encoded(self) -> str:
        return base64.b64encode(f"{self._current()}:".encode()).decode("ascii")

    def header(self) -> tuple[str, str]:
        """The Authorization header."""
        return "Authorization", f"Basic {self._encoded()}"

    def secrets(self) -> tuple[str, ...]:
        """The key and its encoded form."""
        return (self._current(), self._encoded())

    def __repr__(self) -> str:
        """Never shows the key."""
        return "BasicAuth(api_key=<redacted>)"


def _check_credential(field: str, value: object) -> None:
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, not {type(value).__name__}")
    if not value.strip():
        raise ValidationError(field, "must not be empty")
    if any(ch in value for ch in "\r\n\x00"):
        raise ValidationError(field, "must not contain line breaks or NUL")


class Envelope(Protocol):
    """How a vendor wraps its answers."""

    def decode(self, body: Any) -> tuple[Any, Mapping[str, Any], tuple[str, ...]]:
        """Split a decoded 2xx body into payload, metadata and error messages."""
        ...

    def messages(self, body: Any) -> tuple[str, ...]:
        """The error messages in an error body, as the vendor wrote them."""
        ...


def _messages_from(value: Any) -> tuple[str, ...]:
    """Error messages from whatever shape a vendor used: strings, objects, lists, mappings."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list):
        return tuple(m for item in value for m in _messages_from(item))
    if isinstance(value, dict):
        for key in ("message", "msg", "detail", "error", "errors"):
            if key in value:
                return _messages_from(value[key])
        return tuple(f"{key}: {m}" for key, item in value.items() for m in _messages_from(item))
    return (str(value),)


class ChakraEnvelope:
    """ChakraHQ's ``{"_data": ..., "_meta": {...}, "_errors": [...]}``."""

    def decode(self, body: Any) -> tuple[Any, Mapping[str, Any], tuple[str, ...]]:
        """Split the envelope; a body that is not an object is a `ProtocolError`."""
        if not isinstance(body, dict):
            raise ProtocolError(f"expected a JSON object envelope, got {type(body).__name__}")
        meta, errors = body.get("_meta"), body.get("_errors")
        return (
            body.get("_data"),
            meta if type(meta) is dict else {},
            # No errors (every answer the vendor documents): nothing to walk.
            () if errors is None or errors == [] else _messages_from(errors),
        )

    def messages(self, body: Any) -> tuple[str, ...]:
        """The ``_errors`` list, or whatever message the body holds."""
        if isinstance(body, dict) and "_errors" in body:
            return _messages_from(body["_errors"])
        return _messages_from(body)


class PlainEnvelope:
    """Zefort's plain bodies: the payload is the body itself."""

    def decode(self, body: Any) -> tuple[Any, Mapping[str, Any], tuple[str, ...]]:
        """The body, no metadata, no messages."""
        return body, {}, ()

    def messages(self, body: Any) -> tuple[str, ...]:
        """``detail``, or field errors as ``field: message``."""
        return _messages_from(body)


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(base_url: object, *, allow_insecure_http: bool) -> URL:
    """Validate a base URL: https (or http to loopback, or by opt-in), with a host."""
    if not isinstance(base_url, str | URL):
        raise ValidationError("base_url", f"must be a string, not {type(base_url).__name__}")
    text = str(base_url).strip()
    if not text:
        raise ValidationError("base_url", "must not be empty")
    try:
        url = URL(text)
    except ValueError as exc:
        raise ValidationError("base_url", f"is not a URL: {exc}") from None
    if url.scheme not in {"http", "https"} or not url.host:
        raise ValidationError("base_url", f"must start with https:// and name a host, got {text!r}")
    if url.user or url.password:
        raise ValidationError("base_url", "must not carry credentials; pass them separately")
    if url.query_string or url.fragment:
        raise ValidationError("base_url", "must not carry a query or fragment")
    if url.scheme == "http" and not allow_insecure_http and not _is_loopback(url.host):
        raise ValidationError(
            "base_url",
            f"plain http:// to {url.host} would send credentials in clear; use https://, or "
            "allow it (allow_insecure_http=True in Python, --allow-insecure-http on the command "
            "line)",
        )
    return url


def _check_in_flight(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError("max_in_flight", f"must be an integer >= 1, not {value!r}")
    return value


@functools.lru_cache(maxsize=256)
def _shape(template: str) -> tuple[str, str, str] | tuple[()]:
    """``template`` split around its one field, or () if it has not exactly one plain field."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:
        return ()
    if not parts or len(parts) > 2:  # noqa: PLR2004
        return ()
    prefix, name, spec, conversion = parts[0]
    if name is None or not name.isidentifier() or spec or conversion:
        return ()
    suffix = ""
    if len(parts) == 2:  # noqa: PLR2004
        suffix, field, _, _ = parts[1]
        if field is not None:
            return ()
    return prefix, name, suffix


#: A path segment that needs no encoding: ASCII letters, digits, "-" and "_", at least one.
_PLAIN_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-]+").fullmatch


@functools.lru_cache(maxsize=4096)
def encode_segment(value: str) -> str:
    """Percent-encode ``value`` so it stays one path segment, whatever characters it holds."""
    if _PLAIN_SEGMENT(value) is not None:
        # Letters, digits, "-" and "_" only (every id the vendors make): nothing to encode,
        # and `quote` costs more than the rest of building the path.
        return value
    encoded = quote(value, safe="")
    if encoded in {".", ".."}:
        return encoded.replace(".", "%2E")
    return encoded


@attrs.frozen(kw_only=True)
class TryInfo:
    """One try of a request about to go on the wire (each redirect followed is a try too).

    Attributes:
        vendor: "chakra", "zefort", or the session's name.
        method: the HTTP method.
        url: the full URL (credentials travel in headers, never in it).
        path: the URL's path, without the query.
        attempt: the try's number within its call, from 1.
        priority: the call's `Priority`.
        job_id: the job or task the call concerns, when the caller said.
    """

    vendor: str
    method: str
    url: str
    path: str
    attempt: int
    priority: Priority
    job_id: str | None


@attrs.frozen(kw_only=True)
class TryResult:
    """How a try ended.

    Attributes:
        status: the answer's status, or None when no answer came.
        error: the error the try raised (no answer, an answer refused), or None.
        seconds: the try's time on the wire.
    """

    status: int | None
    error: AsyncBulkError | None
    seconds: float


class RequestObserver(Protocol):
    """Hooks around every try on the wire, for tracing and metrics; the default does nothing.

    `try_started` runs just before the request is sent (its turn at the rate limiter and its
    in-flight slot already taken) and may return anything, a span say; `try_ended` gets it
    back with the result, whether the try was answered, failed or was cancelled (then with
    no status and no error).

    An observer may also have an ``observing()`` method: while it returns False, a try calls
    neither hook (nothing is built for them), as asyncbulk's OpenTelemetry observer does until
    an application sets a provider.
    """

    def try_started(self, info: TryInfo) -> object:
        """A try is about to be sent; return what `try_ended` should get back."""
        ...

    def try_ended(self, info: TryInfo, context: object, result: TryResult) -> None:
        """The try is over."""
        ...


class _NoObserver:
    """Observes nothing, at the cost of two calls per try."""

    def try_started(self, info: TryInfo) -> object:  # noqa: ARG002 -- the protocol's signature
        return None

    def try_ended(self, info: TryInfo, context: object, result: TryResult) -> None:
        """Nothing to do."""


_NO_OBSERVER: Final = _NoObserver()


def _always() -> bool:
    """An observer with no ``observing`` method wants every try."""
    return True


class Session:
    """Requests to one vendor host: auth, limits, retries, the 429 pause, envelopes, errors.

    Args:
        base_url: the vendor's base URL.
        auth: the authentication strategy.
        envelope: how the vendor wraps its answers.
        retry: the default retry policy.
        timeouts: the time limits of one try.
        max_in_flight: requests in flight at once; the connection pool matches it.
        session: a caller's own aiohttp session, used as is and never closed by us.
        allow_insecure_http: allow plain http:// to a host that is not loopback.
        name: the client's name, for messages.
        trust_env: let the client's own aiohttp session read proxies from the environment.
        ssl: True to verify certificates, False not to, or an `ssl.SSLContext`.
        proxy: the URL of a proxy for every request.
        transport: what sends each try (an `AiohttpTransport` by default); when given,
            ``session``, ``trust_env``, ``ssl`` and ``proxy`` must not be.
        max_response_bytes: the largest answer read; a larger one is a `ProtocolError`, and
            the connection is closed without reading the rest.
        rate_limit: a cap on the send rate from the start (`RateLimit`), or a rate shared by
            processes (a `SharedLimiter`, asked before every try and told of every 429);
            without it the rate is unlimited until the server answers 429, and then learned.
        vendor: the vendor's name in log records and observer calls (the name if empty).
        observer: hooks around every try (`RequestObserver`); None for none.
    """

    def __init__(
        self,
        *,
        base_url: str,
        auth: Auth,
        envelope: Envelope,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        max_in_flight: int = 16,
        session: aiohttp.ClientSession | None = None,
        allow_insecure_http: bool = False,
        name: str = "client",
        trust_env: bool = False,
        ssl: bool | _ssl.SSLContext = True,
        proxy: str | None = None,
        transport: Transport | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        rate_limit: RateLimit | SharedLimiter | None = None,
        vendor: str = "",
        observer: RequestObserver | None = None,
    ) -> None:
        """Check the settings; the transport opens its connections on first use."""
        self.base_url = check_base_url(base_url, allow_insecure_http=allow_insecure_http)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ValidationError("retry", "must be a RetryPolicy")
        if timeouts is not None and not isinstance(timeouts, Timeouts):
            raise ValidationError("timeouts", "must be a Timeouts")
        self.max_in_flight = _check_in_flight(max_in_flight)
        self.max_response_bytes = check_max_response_bytes(max_response_bytes)
        self.retry = retry or RetryPolicy()
        self.timeouts = timeouts or Timeouts()
        if transport is None:
            transport = AiohttpTransport(
                session,
                max_connections=self.max_in_flight,
                connect_timeout=self.timeouts.connect,
                read_timeout=self.timeouts.read,
                total_timeout=self.timeouts.total,
                trust_env=trust_env,
                ssl=ssl,
                proxy=proxy,
            )
        elif session is not None or trust_env or ssl is not True or proxy is not None:
            raise ValidationError(
                "transport", "give either a transport or session/trust_env/ssl/proxy, not both"
            )
        self._counts = _Counters()
        self._shared: SharedLimiter | None = None
        if isinstance(rate_limit, SharedLimiter) and not isinstance(rate_limit, RateLimit):
            self._shared, rate_limit = rate_limit, None
        elif rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise ValidationError("rate_limit", "must be a RateLimit or a SharedLimiter")
        self._flow = FlowControl(rate_limit, max_pause=self.retry.budget)
        self._auth = auth
        self._envelope = envelope
        self._name = name
        self._vendor = vendor or name
        self.observe_with(observer)
        self._prefix = self.base_url.raw_path.rstrip("/")
        self._root = f"{self.base_url.origin()}{self._prefix}"
        self._origin = (self.base_url.scheme, self.base_url.host, self.base_url.port)
        self._header_sets: tuple[int, dict[str, str], dict[str, str]] | None = None
        self._secrets: list[str] = []
        self._auth_lock: anyio.Lock | None = None
        if not auth.refreshable:
            self._headers_now()
        self._transport = transport
        #: `send` of a request given as its fields, for the first try.
        self._send_parts = parts_sender(transport)
        self._closed = False
        self._limiter: InFlight | None = None

    def __repr__(self) -> str:
        """The base URL and the auth kind, never the credentials."""
        return f"Session(base_url={str(self.base_url)!r}, auth={self._auth!r})"

    @property
    def closed(self) -> bool:
        """Whether `aclose` has been called."""
        return self._closed

    def observe_with(self, observer: RequestObserver | None) -> None:
        """Report every try from now on to ``observer`` (None: to no one).

        Whether it would report a try (`RequestObserver`'s optional ``observing``) is looked
        up here once, not on every try.
        """
        self._observer: RequestObserver = observer or _NO_OBSERVER
        #: Asked before each try whether its hooks are wanted; None when they never are.
        self._observing: Callable[[], bool] | None = (
            None
            if self._observer is _NO_OBSERVER
            else getattr(self._observer, "observing", _always)
        )

    @property
    def stats(self) -> RequestStats:
        """A snapshot of the requests sent, retries, 429s, errors and the rate in force."""
        counts = self._counts
        return RequestStats(
            requests=counts.requests,
            retries=counts.retries,
            rate_limited=counts.rate_limited,
            errors=counts.errors,
            by_status=counts.by_status,
            send_rate=self._flow.rate(),
            limiter_wait=self._flow.waited,
            host_pauses=self._flow.throttles.pauses,
        )

    def path(self, template: str, **segments: str) -> str:
        """Fill a path template with ids, each percent-encoded as a single segment.

        Raises:
            ValidationError: an id is not a non-empty string (the error names it).
        """
        shape = _shape(template)
        if shape and len(segments) == 1:
            prefix, name, suffix = shape
            value = segments.get(name)
            if type(value) is str and _PLAIN_SEGMENT(value) is not None:
                # One id of letters, digits, "-" and "_" (every id the vendors make): nothing
                # to check or encode, and no template to parse again.
                return prefix + value + suffix
        encoded = {}
        for name, value in segments.items():
            if not isinstance(value, str):
                raise ValidationError(name, f"must be a string, not {type(value).__name__}")
            if not value.strip():
                raise ValidationError(name, "must not be empty")
            encoded[name] = encode_segment(value)
        return template.format_map(encoded)

    def resolve_link(self, link: str) -> str:
        """The path and query of a link from a response, if it points at our own base URL.

        Raises:
            ProtocolError: the link is not a string, or leads to another scheme, host or port.
        """
        if not isinstance(link, str) or not link:
            raise ProtocolError(f"link is not a non-empty string: {link!r}")
        try:
            target = self.base_url.join(URL(link, encoded=True))
        except ValueError as exc:
            raise ProtocolError(f"link {link!r} is not a URL: {exc}") from None
        if (target.scheme, target.host, target.port) != self._origin:
            raise ProtocolError(f"refusing to follow a link to another origin: {link!r}")
        path = target.raw_path
        if not path.startswith(self._prefix):
            raise ProtocolError(f"refusing to follow a link outside the base URL: {link!r}")
        path = path[len(self._prefix) :]
        return f"{path}?{target.raw_query_string}" if target.raw_query_string else path

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError(f"{self._name} is closed")

    async def open(self) -> None:
        """Open the transport now rather than on first use."""
        self._check_open()
        opener = getattr(self._transport, "open", None)
        if opener is not None:
            await opener()

    async def aclose(self) -> None:
        """Close the transport (never an aiohttp session the caller passed); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._flow.close()
        unregister_secrets(tuple(self._secrets))
        await self._transport.aclose()

    async def request(  # noqa: C901, PLR0912 -- the first try inline: see below
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json_body: Any = _NO_BODY,
        idempotent: bool | None = None,
        retry: RetryPolicy | None = None,
        priority: Priority = Priority.SUBMIT,
        deadline: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the contract's name, bounded by deadline
        job_id: str | None = None,
        reader: Callable[[bytes], Any] | None = None,
    ) -> Response:
        """Send a request, retrying by the policy, and decode its answer.

        Args:
            method: the HTTP method.
            path: an encoded path from `path` or `resolve_link`, relative to the base URL.
            params: query parameters.
            json_body: the body, sent as JSON.
            idempotent: whether the request may be repeated safely; by default GET, HEAD,
                OPTIONS, PUT and DELETE are, POST and PATCH are not.
            retry: a policy for this request instead of the session's.
            priority: its place in line when the send rate is what limits.
            deadline: when the call must be over, in `anyio.current_time` seconds; every wait
                (a turn at the rate limiter, a pause of the host, a retry delay) that would end
                after it ends at it with `DeadlineExceededError`, and each try is cut short.
            timeout: seconds the whole call may take (tries, waits and retries together); each
                try is still bounded by the client's ``timeouts.total``.
            job_id: the job or task the call concerns, for log records and the observer.
            reader: reads a successful answer's body (bytes) instead of the JSON decoder and
                the vendor's envelope; `Response.data` is what it returns. It raises
                `ProtocolError` (or `ValueError`) for a body it cannot read, which is then
                treated as any undecodable answer (retried when the request may be repeated).

        Raises:
            APIError: the server answered with an error status (after retries where allowed).
            DeadlineExceededError: the deadline (or timeout) came first.
            TransportError: no answer came (after retries where allowed).
            ProtocolError: the answer was not JSON or not in the vendor's envelope.
            ClientClosedError: the client was closed.
            ValidationError: ``priority``, ``deadline`` or ``timeout`` is of the wrong type.
        """
        data = None if json_body is _NO_BODY else _encode_json(json_body)
        if deadline is None and timeout is None and type(priority) is Priority:
            limit = None
        else:
            limit = _call_deadline(priority, deadline, timeout)
        self._check_open()
        if params:
            url_text = str(URL(f"{self._root}{path}", encoded=True).update_query(params))
        else:
            # The path is already encoded (`path`, `resolve_link`): joining strings gives the
            # URL yarl would, without building one per request.
            url_text = f"{self._root}{path}"
        started = time.monotonic()
        limiter = self._limiter
        if limiter is None:
            limiter = self._limiter = InFlight(self.max_in_flight)
        sets = self._header_sets
        observing = self._observing
        handed: TransportResponse | TransportError | ProtocolError | None = None
        # The first try, when nothing need wait (a turn, a slot, a credential, a deadline) and
        # no one observes it, goes from here: most calls end with it, and no `_Call` is built
        # for them. Any other answer, and every other try, is `_tries`' to handle.
        if (
            sets is not None
            and sets[0] == self._auth.generation
            and self._shared is None
            and (observing is None or not observing())
            and (retry or self.retry).wait
            and (limit is None or (left := limit - loop_time()) > 0)
            and limiter.take_now()
        ):
            if self._flow.turn_now():
                try_timeout = (
                    self.timeouts.total if limit is None else min(self.timeouts.total, left)
                )
                self._counts.requests += 1
                headers = sets[1] if data is None else sets[2]
                try:
                    answer = await self._send_parts(
                        method, url_text, headers, data, try_timeout, self.max_response_bytes
                    )
                except (TransportError, ProtocolError) as exc:
                    handed = exc
                finally:
                    limiter.release()
                if handed is None:
                    status = answer.status
                    if self._counted(status):
                        await self._throttled(answer)
                    if status < 300 and not logger.isEnabledFor(logging.DEBUG):  # noqa: PLR2004
                        try:
                            if reader is not None:
                                return self._read_with(reader, method, url_text, answer)
                            body = self._parse(method, url_text, answer)
                            return self._unwrap(method, url_text, status, body)
                        except ProtocolError:
                            pass  # `_tries` reads it again, and decides
                    handed = answer
            else:
                limiter.release()
        call = self._new_call(
            method,
            url_text,
            path if not params else None,
            data,
            idempotent,
            retry,
            priority,
            limit,
            started,
            job_id,
            reader,
        )
        if handed is None:
            return await self._tries(call, None)
        assert sets is not None  # noqa: S101 -- the first try was sent with them
        return await self._tries(call, (sets, handed))

    async def _tries(  # noqa: C901, PLR0912, PLR0915 -- every try in one loop: see below
        self,
        call: _Call,
        handed: tuple[
            tuple[int, dict[str, str], dict[str, str]],
            TransportResponse | TransportError | ProtocolError,
        ]
        | None,
    ) -> Response:
        """Every try of ``call``, until one succeeds or no other may follow.

        ``handed`` is the first try, when `request` sent it: the headers it went with, and
        its answer (counted already) or the error it met.
        """
        data, url_text, raw_path, method = call.data, call.url_text, call.raw_path, call.method
        flow, limiter, reader = self._flow, self._limiter, call.reader
        assert limiter is not None  # noqa: S101 -- made by `request`
        # Every try and every redirect it follows in this one coroutine: the path each request
        # takes, where each layer of coroutines would cost more than the rest of its work.
        # The steps that wait (a turn, a slot, a credential) await only when they must.
        while True:
            call.attempt += 1
            first = None
            if handed is not None:
                (sets, first), handed = handed, None
            else:
                current = self._header_sets
                if current is None or current[0] != self._auth.generation:
                    current = await self._credential(None)
                sets = current
            headers = sets[1] if data is None else sets[2]
            url, path = url_text, raw_path
            try:
                for _ in range(MAX_REDIRECTS + 1):
                    if first is not None:
                        # The try `request` sent: its answer is counted already.
                        if not isinstance(first, TransportResponse):
                            raise first
                        answer, first = first, None
                        status = answer.status
                    else:
                        if call.wait:
                            if not flow.turn_now():
                                await flow.turn(
                                    call.priority, call.deadline, method=method, url=url
                                )
                            if self._shared is not None:
                                await self._shared_turn(call.deadline, method, url)
                        else:
                            flow.note_send()
                        if not limiter.take_now():
                            await self._slot(call, url)
                        try:
                            request = self._request_of(call, url, headers)
                            observing = self._observing
                            if observing is None or not observing():
                                # No one to tell: no `TryInfo` or `TryResult` built for nothing.
                                answer = await self._transport.send(request)
                            else:
                                answer = await self._observed(call, request, path)
                        finally:
                            limiter.release()
                        status = answer.status
                        if self._counted(status):
                            await self._throttled(answer)
                    if status not in _REDIRECTS:
                        break
                    target = self._redirect_target(method, url, data, answer)
                    url, path = str(target), target.raw_path
                else:
                    raise RefusedAnswerError(
                        f"more than {MAX_REDIRECTS} redirects", method=method, url=url
                    )
                if status < 400:  # noqa: PLR2004
                    if reader is not None:
                        read = self._read_with(reader, method, url, answer)
                        if logger.isEnabledFor(logging.DEBUG):
                            self._log(call, status)
                        return read
                    body = self._parse(method, url, answer)
                else:
                    raw = self._read(answer, url)
                if logger.isEnabledFor(logging.DEBUG):
                    self._log(call, status)
            except TransportError as exc:
                error: AsyncBulkError = exc
                retriable = call.idempotent or not exc.sent
            except ProtocolError as exc:
                # `from None` only hides the context: a JSON decoder's error would still hang
                # on it, with the whole answer (which may echo a credential). Drop it.
                exc.__context__ = None
                error = exc
                retriable = call.idempotent and not isinstance(exc, RefusedAnswerError)
            except DeadlineExceededError:
                self._counts.errors += 1
                raise
            else:
                if status < 400:  # noqa: PLR2004
                    return self._unwrap(method, url, status, body)
                error, retriable = await self._refused(call, sets[0], raw)
            await self._before_retry(call, error, retriable)

    async def _slot(self, call: _Call, url: str) -> None:
        """Wait for a slot among the requests in flight, within the call's deadline."""
        assert self._limiter is not None  # noqa: S101 -- made by _new_call
        if call.deadline is None:
            await self._limiter.take()
            return
        with anyio.move_on_after(call.deadline - loop_time()):
            await self._limiter.take()
            return
        raise DeadlineExceededError(
            "the deadline passed waiting for a request in flight to end",
            method=call.method,
            url=url,
        )

    def _request_of(self, call: _Call, url: str, headers: Mapping[str, str]) -> TransportRequest:
        """The try to send, bounded by the call's deadline; counted as a request sent.

        Raises:
            ClientClosedError: the client closed while this request waited.
            DeadlineExceededError: the deadline passed before the request was sent.
        """
        # Closed while this request waited (a retry, the limiter): nothing may be sent.
        self._check_open()
        timeout = self.timeouts.total
        deadline = call.deadline
        if deadline is not None:
            left = deadline - loop_time()
            if left <= 0:
                raise DeadlineExceededError(
                    "the deadline passed before the request was sent", method=call.method, url=url
                )
            timeout = min(timeout, left)
        self._counts.requests += 1
        return build_request(call.method, url, headers, call.data, timeout, self.max_response_bytes)

    def _new_call(  # noqa: PLR0917 -- `request`'s arguments, checked in one place
        self,
        method: str,
        url_text: str,
        path: str | None,
        data: bytes | None,
        idempotent: bool | None,
        retry: RetryPolicy | None,
        priority: Priority,
        limit: float | None,
        started: float,
        job_id: str | None,
        reader: Callable[[bytes], Any] | None,
    ) -> _Call:
        """A call of `request` beyond its first try: its URL's parts, its policy, its state.

        ``path`` is the path as given, or None when a query was added to it.
        """
        policy = retry or self.retry
        if idempotent is None:
            idempotent = is_idempotent(method)
        if path is None:
            url = URL(url_text, encoded=True)
            raw_path, path_qs = url.raw_path, url.raw_path_qs
        else:
            path_qs = f"{self._prefix}{path}"
            raw_path = path_qs.partition("?")[0]
        # Positional, in the fields' order: keywords cost several times more to pass.
        return _Call(
            method,
            url_text,
            raw_path,
            path_qs,
            data,
            priority,
            limit,
            policy.wait,
            policy,
            idempotent,
            started,
            policy.attempts,
            job_id,
            reader,
        )

    async def _refused(
        self, call: _Call, generation: int, raw: _RawResponse
    ) -> tuple[AsyncBulkError, bool]:
        """The error of an error status, and whether it may be retried."""
        error = self._status_error(call.method, raw.url, raw)
        retriable = call.policy.retries_status(raw.status, idempotent=call.idempotent)
        if raw.status == 401 and self._auth.refreshable and not call.refreshed:  # noqa: PLR2004
            # Perhaps a rotated credential: ask for it once more, and try once more. The
            # server refused the request, so even a bulk body is safe to send again.
            call.refreshed = True
            await self._credential(generation)
            call.attempts += 1
            return error, True
        return error, retriable

    async def _before_retry(self, call: _Call, error: AsyncBulkError, retriable: bool) -> None:
        """Raise ``error`` if it is the last, else wait before the next try, within the deadline."""
        policy = call.policy
        # The server's Retry-After delays this request's own retry, and no other.
        retry_after = error.retry_after if isinstance(error, RateLimitedError) else None
        delay = policy.delay(call.attempt, retry_after)
        out_of_time = time.monotonic() - call.started + delay > policy.budget
        if not retriable or call.attempt >= call.attempts or out_of_time:
            self._counts.errors += 1
            raise error
        self._counts.retries += 1
        fields = self._fields(call, error.status if isinstance(error, APIError) else None)
        fields["delay"] = round(delay, 3)
        fields["error"] = type(error).__name__
        logger.warning(
            "%s retrying %s %s in %.2f s (attempt %d of %d): %s",
            self._name,
            call.method,
            call.raw_path,
            delay,
            call.attempt + 1,
            call.attempts,
            error,
            extra=fields,
        )
        if policy.wait:
            try:
                await self._flow.sleep(delay, call.deadline, method=call.method, url=call.url_text)
            except DeadlineExceededError as exc:
                self._counts.errors += 1
                raise exc from error

    def _headers_now(self) -> tuple[int, dict[str, str], dict[str, str]]:
        """The headers of the credential's current value; a new value becomes a secret."""
        auth = self._auth
        sets = self._header_sets
        if sets is None or sets[0] != auth.generation:
            name, value = auth.header()
            plain = {name: value, "User-Agent": USER_AGENT, "Accept": "application/json"}
            sets = (auth.generation, plain, {**plain, "Content-Type": "application/json"})
            fresh = tuple(secret for secret in auth.secrets() if secret)
            register_secrets(fresh)
            self._secrets.extend(fresh)
            self._header_sets = sets
        return sets

    async def _credential(self, stale: int | None) -> tuple[int, dict[str, str], dict[str, str]]:
        """The headers to send; with ``stale``, after asking for a newer credential than that.

        Concurrent requests that met the same 401 ask the credential's function once between
        them: whoever comes second finds the generation moved on and uses the new value.
        """
        auth = self._auth
        if auth.refreshable and (self._header_sets is None or stale is not None):
            if self._auth_lock is None:
                self._auth_lock = anyio.Lock()
            async with self._auth_lock:
                if stale is None:
                    await auth.ensure()
                elif auth.generation == stale:
                    await auth.refresh()
        return self._headers_now()

    def _redirect_target(
        self, method: str, url: str, data: bytes | None, answer: TransportResponse
    ) -> URL:
        """Where a redirect leads, if it may be followed: same origin, no body to send again.

        Raises:
            ProtocolError: no Location, another origin, or a request with a body.
        """
        location = answer.headers.get("Location")

        def refused(message: str) -> RefusedAnswerError:
            return RefusedAnswerError(message, method=method, url=url, status=answer.status)

        if not location:
            raise refused("a redirect without a Location")
        try:
            target = URL(url, encoded=True).join(URL(location, encoded=True))
        except ValueError:
            raise refused(f"a redirect to a bad Location {location!r}") from None
        if (target.scheme, target.host, target.port) != self._origin:
            raise refused(f"refusing to follow a redirect to another origin: Location {location!r}")
        if data is not None or method not in {"GET", "HEAD"}:
            # Sending a bulk body again, even to the same host, could apply it twice.
            raise refused(f"refusing to follow a redirect of a {method}: Location {location!r}")
        return target

    def _counted(self, status: int) -> bool:
        """Count an answer's status; True for a 429 (for `_throttled`), else calm the flow."""
        by_status = self._counts.by_status
        by_status[status] = by_status.get(status, 0) + 1
        if status == 429:  # noqa: PLR2004
            return True
        self._flow.calm()
        return False

    async def _throttled(self, answer: TransportResponse) -> None:
        """Learn from a 429: count it, and tell the flow control and any shared limiter."""
        self._counts.rate_limited += 1
        retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        # Capped at the budget: a hostile "Retry-After: 1e9" must not stall every request.
        if retry_after is not None:
            retry_after = min(retry_after, self.retry.budget)
        self._flow.answered(answer.status, retry_after)
        if self._shared is not None:
            await self._shared.note_throttled(1.0 if retry_after is None else retry_after)

    async def _shared_turn(self, deadline: float | None, method: str, url: str) -> None:
        """The turn at the rate shared with other processes, within the call's deadline."""
        assert self._shared is not None  # noqa: S101 -- only called with a shared limiter
        try:
            await self._shared.acquire(deadline=deadline)
        except DeadlineExceededError:
            raise
        except TimeoutError:
            raise DeadlineExceededError(
                "the deadline passed waiting for the shared rate limit", method=method, url=url
            ) from None

    async def _observed(
        self, call: _Call, request: TransportRequest, path: str
    ) -> TransportResponse:
        """Send through the transport, between the observer's two hooks: the point to trace."""
        info = TryInfo(
            vendor=self._vendor,
            method=request.method,
            url=request.url,
            path=path,
            attempt=call.attempt,
            priority=call.priority,
            job_id=call.job_id,
        )
        observer = self._observer
        context = observer.try_started(info)
        began = time.monotonic()
        status: int | None = None
        failure: AsyncBulkError | None = None
        try:
            answer = await self._transport.send(request)
            status = answer.status
        except AsyncBulkError as exc:
            failure = exc
            raise
        finally:
            result = TryResult(status=status, error=failure, seconds=time.monotonic() - began)
            observer.try_ended(info, context, result)
        return answer

    def _parse(self, method: str, url: str, answer: TransportResponse) -> Any:
        """A successful answer's JSON body (None for an empty one)."""
        raw = answer.body
        try:
            return orjson.loads(raw)
        except ValueError:
            if not raw.strip():
                return None
            raise ProtocolError(
                f"answer is not JSON: {self._excerpt(raw)!r}",
                method=method,
                url=url,
                status=answer.status,
            ) from None

    def _unwrap(self, method: str, url: str, status: int, body: Any) -> Response:
        """A successful answer's envelope, unwrapped."""
        try:
            data, meta, messages = self._envelope.decode(body)
        except ProtocolError as exc:
            raise ProtocolError(str(exc), method=method, url=url, status=status) from None
        return _response(status, data, meta, messages, url)

    def _read(self, answer: TransportResponse, url: str) -> _RawResponse:
        """An error answer's body: its JSON, or its text when it is not JSON."""
        raw = answer.body
        body: Any = None
        if raw.strip():
            try:
                body = orjson.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        # Positional, in the fields' order.
        return _RawResponse(answer.status, body, answer.headers.get("Retry-After"), url)

    def _read_with(
        self, reader: Callable[[bytes], Any], method: str, url: str, answer: TransportResponse
    ) -> Response:
        """Read a successful answer with the caller's reader."""
        try:
            data = reader(answer.body)
        except ProtocolError as exc:
            raise ProtocolError(str(exc), method=method, url=url, status=answer.status) from None
        except ValueError as exc:
            raise ProtocolError(
                f"answer cannot be read: {exc}", method=method, url=url, status=answer.status
            ) from None
        return _response(answer.status, data, {}, (), url)

    def decode(self, method: str, raw: _RawResponse) -> Response:
        """Unwrap a successful answer's envelope."""
        return self._unwrap(method, raw.url, raw.status, raw.body)

    def _status_error(self, method: str, url: str, raw: _RawResponse) -> APIError:
        body = raw.body
        messages = self._envelope.messages(body)
        excerpt = self._excerpt(body if isinstance(body, str) else json.dumps(body))
        kwargs: dict[str, Any] = {
            "status": raw.status,
            "method": method,
            "url": url,
            "messages": messages,
            "body": excerpt,
        }
        status = raw.status
        if status in {401, 403}:
            return AuthenticationError(**kwargs)
        if status == 404:  # noqa: PLR2004
            return NotFoundError(**kwargs)
        if status == 429:  # noqa: PLR2004
            return RateLimitedError(retry_after=parse_retry_after(raw.retry_after), **kwargs)
        if status >= 500:  # noqa: PLR2004
            return ServerError(**kwargs)
        return APIError(**kwargs)

    def _excerpt(self, raw: bytes | str) -> str:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        return text[:_BODY_EXCERPT]

    def _fields(self, call: _Call, status: int | None) -> dict[str, Any]:
        """The facts of a log record, as ``extra=`` fields a structured handler can read."""
        return {
            "vendor": self._vendor,
            "method": call.method,
            "path": call.raw_path,
            "status": status,
            "attempt": call.attempt,
            "ms": round((time.monotonic() - call.started) * 1000, 1),
            "job_id": call.job_id,
        }

    def _log(self, call: _Call, status: int) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            fields = self._fields(call, status)
            logger.debug(
                "%s %s %s -> %d (attempt %d, %.1f ms)",
                self._name,
                call.method,
                call.path_qs,
                status,
                call.attempt,
                fields["ms"],
                extra=fields,
            )


@attrs.define
class _Call:
    """One call of `Session.request`, across its tries; built with positional arguments."""

    method: str
    url_text: str
    raw_path: str
    path_qs: str
    data: bytes | None
    #: Its place in line, its absolute deadline, and whether its tries sleep (the retry
    #: policy's ``wait``) or go at once.
    priority: Priority
    deadline: float | None
    wait: bool
    policy: RetryPolicy
    idempotent: bool
    started: float
    attempts: int
    job_id: str | None = None
    reader: Callable[[bytes], Any] | None = None
    attempt: int = 0
    refreshed: bool = False


def _call_deadline(priority: object, deadline: object, timeout: object) -> float | None:
    """The call's absolute deadline, from ``deadline`` and ``timeout``; checks all three."""
    if not isinstance(priority, Priority):
        raise ValidationError("priority", f"must be a Priority, not {priority!r}")
    if deadline is not None and (
        isinstance(deadline, bool) or not isinstance(deadline, int | float) or math.isnan(deadline)
    ):
        raise ValidationError("deadline", f"must be a time in seconds or None, not {deadline!r}")
    if timeout is None:
        return deadline
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValidationError("timeout", f"must be a number of seconds > 0, not {timeout!r}")
    ends = loop_time() + timeout
    return ends if deadline is None else min(deadline, ends)


def _encode_json(body: Any) -> bytes:
    try:
        # orjson: several times faster than the standard library both ways, which matters on
        # the hot paths (pages of entries, batches of updates). It writes NaN as null, so the
        # clients refuse non-finite numbers when they validate their input, before this.
        return orjson.dumps(body)
    except (TypeError, ValueError, orjson.JSONEncodeError) as exc:
        raise ValidationError("body", f"is not JSON-serialisable: {exc}") from None


class ClientBase:
    """What every vendor client shares: its session's lifetime, stats and repr."""

    _session: Session

    async def __aenter__(self) -> Self:
        """Open the client's session."""
        await self._session.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the client."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client's aiohttp session (not one the caller passed in); idempotent."""
        await self._session.aclose()

    @property
    def closed(self) -> bool:
        """Whether the client has been closed."""
        return self._session.closed

    @property
    def stats(self) -> RequestStats:
        """Requests sent, retries, 429s met and errors so far."""
        return self._session.stats

    def __repr__(self) -> str:
        """The client's base URL; credentials are never shown."""
        return f"{type(self).__name__}(base_url={str(self._session.base_url)!r})"


@attrs.define
class _RawResponse:
    status: int
    body: Any
    retry_after: str | None
    url: str
