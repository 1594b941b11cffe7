"""The transport seam: the one module that imports aiohttp for client work.

`Session` sends every try through a `Transport`: one request in (method, URL, headers, body,
timeout, size limit), one answer out (status, headers, body), or an asyncbulk error. aiohttp's
exceptions are mapped to `TransportError` here, in one place (`AiohttpTransport.send`), so
nothing above this module ever sees them. `MockTransport` answers from a function instead of the
network, for tests of the rules above the wire (httpx's ``MockTransport`` is the model).

Redirects are never followed here: a 3xx comes back as an answer, and the session decides.
"""

from __future__ import annotations

import inspect
import ssl as _ssl
from typing import TYPE_CHECKING, Final, Protocol

import aiohttp
import attrs
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from asyncbulk._exceptions import ProtocolError, TransportError, ValidationError
from asyncbulk._slots import slot_setter

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "AiohttpTransport",
    "MockTransport",
    "RefusedAnswerError",
    "Transport",
    "TransportRequest",
    "TransportResponse",
    "check_max_response_bytes",
]

#: The largest answer read by default: far above any page the vendors serve, far below what
#: would hurt a process's memory.
DEFAULT_MAX_RESPONSE_BYTES: Final = 32 * 1024 * 1024
_CHUNK: Final = 64 * 1024


def check_max_response_bytes(value: object) -> int:
    """Validate ``max_response_bytes``: an integer number of bytes, at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError("max_response_bytes", f"must be an integer >= 1, not {value!r}")
    return value


@attrs.frozen(kw_only=True)
class TransportRequest:
    """One try of a request, as the transport sends it.

    Attributes:
        method: the HTTP method.
        url: the full, encoded URL.
        headers: the headers to send (credentials included: never print them).
        body: the encoded body, or None for none.
        timeout: seconds the whole try may take, or None for the transport's own limit.
        max_response_bytes: the largest answer body to read.
    """

    method: str
    url: str
    headers: Mapping[str, str] = attrs.field(repr=False)
    body: bytes | None = attrs.field(default=None, repr=False)
    timeout: float | None = None
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES


@attrs.frozen(kw_only=True)
class TransportResponse:
    """An answer, read whole.

    Attributes:
        status: the HTTP status.
        headers: the answer's headers, case-insensitive.
        body: the answer's body.
    """

    status: int
    headers: CIMultiDictProxy[str] = attrs.field(repr=False)
    body: bytes = attrs.field(repr=False)

    @classmethod
    def of(
        cls, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> TransportResponse:
        """Build an answer from plain values (for `MockTransport` handlers)."""
        return cls(status=status, headers=CIMultiDictProxy(CIMultiDict(headers or {})), body=body)


_new: Final = object.__new__
_REQUEST_SETTERS: Final = tuple(
    slot_setter(TransportRequest, name)
    for name in ("method", "url", "headers", "body", "timeout", "max_response_bytes")
)
_set_status, _set_headers, _set_body = (
    slot_setter(TransportResponse, name) for name in ("status", "headers", "body")
)


def build_request(  # noqa: PLR0917 -- every field of the request, in order
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    timeout: float | None,
    max_response_bytes: int,
) -> TransportRequest:
    """A `TransportRequest`, as its constructor makes it, for the session's every try.

    The frozen class's keyword-only ``__init__`` costs twice as much as filling its slots.
    """
    request: TransportRequest = _new(TransportRequest)
    set_method, set_url, set_headers, set_body, set_timeout, set_max = _REQUEST_SETTERS
    set_method(request, method)
    set_url(request, url)
    set_headers(request, headers)
    set_body(request, body)
    set_timeout(request, timeout)
    set_max(request, max_response_bytes)
    return request


def _response(status: int, headers: CIMultiDictProxy[str], body: bytes) -> TransportResponse:
    """A `TransportResponse`, as its constructor makes it, at half the cost."""
    response: TransportResponse = _new(TransportResponse)
    _set_status(response, status)
    _set_headers(response, headers)
    _set_body(response, body)
    return response


def parts_sender(
    transport: Transport,
) -> Callable[
    [str, str, Mapping[str, str], bytes | None, float | None, int], Awaitable[TransportResponse]
]:
    """`send` of a request given as its fields, for the session's first try.

    The library's own transport's is `AiohttpTransport.send_parts`, which builds no
    `TransportRequest`; any other transport is sent one built from the fields.
    """
    if type(transport) is AiohttpTransport:
        return transport.send_parts

    async def send_parts(  # noqa: PLR0917 -- a `TransportRequest`'s fields, in order
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float | None,  # noqa: ASYNC109 -- the try's limit, given to the transport
        max_response_bytes: int,
    ) -> TransportResponse:
        request = build_request(method, url, headers, body, timeout, max_response_bytes)
        return await transport.send(request)

    return send_parts


class Transport(Protocol):
    """Sends one try of a request and reads its answer; follows no redirect."""

    async def send(self, request: TransportRequest) -> TransportResponse:
        """Send ``request`` and read the answer.

        Raises:
            TransportError: no answer came; ``sent`` says whether the server may have it.
            ProtocolError: the answer is larger than ``request.max_response_bytes``.
        """
        ...

    async def aclose(self) -> None:
        """Release what the transport holds; idempotent."""
        ...


class RefusedAnswerError(ProtocolError):
    """An answer refused on principle (too large, a redirect not to follow): never retried."""


def _too_large(method: str, url: str, limit: int, size: str) -> ProtocolError:
    return RefusedAnswerError(
        f"answer of {size} is larger than max_response_bytes ({limit})", method=method, url=url
    )


def check_ssl(value: object) -> bool | _ssl.SSLContext:
    """Validate ``ssl``: True (verify), False (do not verify) or an `ssl.SSLContext`."""
    if not isinstance(value, bool | _ssl.SSLContext):
        raise ValidationError("ssl", f"must be True, False or an ssl.SSLContext, not {value!r}")
    return value


def check_proxy(value: object) -> str | None:
    """Validate ``proxy``: None or an http(s) URL."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ValidationError("proxy", f"must be an http:// or https:// URL, not {value!r}")
    return value


class AiohttpTransport:
    """A `Transport` over an aiohttp client session: its own, or one the caller lends.

    Args:
        session: a caller's aiohttp session, used as is and never closed here; None to create
            one on first use (and close it in `aclose`).
        max_connections: the size of the connection pool of a session created here.
        connect_timeout: seconds to get a connection.
        read_timeout: the longest pause while reading an answer; None for no limit but the
            try's own timeout.
        total_timeout: the default limit of one try, when a request gives none.
        trust_env: read proxies and ``.netrc`` from the environment (a session created here).
        ssl: True to verify certificates, False not to, or an `ssl.SSLContext` (a custom CA).
        proxy: the URL of a proxy every request goes through.

    Raises:
        ValidationError: an option is of the wrong type, or ``trust_env`` is given with a
            caller's session (set it on that session instead).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        max_connections: int = 16,
        connect_timeout: float = 10.0,
        read_timeout: float | None = None,
        total_timeout: float = 60.0,
        trust_env: bool = False,
        ssl: bool | _ssl.SSLContext = True,
        proxy: str | None = None,
    ) -> None:
        """Check the options; no connection is made before the first request."""
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise ValidationError("session", "must be an aiohttp.ClientSession")
        if not isinstance(trust_env, bool):
            raise ValidationError("trust_env", f"must be True or False, not {trust_env!r}")
        if trust_env and session is not None:
            raise ValidationError(
                "trust_env", "applies to the client's own aiohttp session: set it on yours"
            )
        self._ssl = check_ssl(ssl)
        self._proxy = check_proxy(proxy)
        self._trust_env = trust_env
        self._session = session
        self._owns_session = session is None
        self._max_connections = max_connections
        self._connect = connect_timeout
        self._read = read_timeout
        self._total = total_timeout
        self._closed = False
        #: The headers the own session sends by default: the last request's (see `send`).
        self._defaults: dict[str, str] = {}
        # The common try's limits, built once: most requests have no deadline of their own.
        self._default_timeout = self._timeout(total_timeout)

    def __repr__(self) -> str:
        """Whether the session is the transport's own; never a header."""
        owner = "own" if self._owns_session else "caller's"
        return f"AiohttpTransport(session={owner}, proxy={self._proxy!r})"

    def _timeout(self, total: float) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=total, connect=min(self._connect, total), sock_read=self._read
        )

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=self._max_connections
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=self._total, connect=self._connect, sock_read=self._read
                ),
                raise_for_status=False,
                trust_env=self._trust_env,
            )
        return self._session

    async def open(self) -> None:
        """Create the aiohttp session now rather than on first use."""
        self._client()

    async def send(self, request: TransportRequest) -> TransportResponse:
        """Send one try through aiohttp (`send_parts` of the request's fields).

        Raises:
            TransportError: the connection failed, dropped or timed out.
            ProtocolError: the answer is larger than ``request.max_response_bytes``; the
                connection is closed and the rest is never read.
        """
        return await self.send_parts(
            request.method,
            request.url,
            request.headers,
            request.body,
            request.timeout,
            request.max_response_bytes,
        )

    async def send_parts(  # noqa: PLR0917 -- a `TransportRequest`'s fields, in order
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float | None,  # noqa: ASYNC109 -- the try's limit, given to aiohttp
        max_response_bytes: int,
    ) -> TransportResponse:
        """`send` of a request given as its fields: the session's first try builds no request.

        aiohttp's every exception is mapped here, and nowhere else.

        Raises:
            TransportError: the connection failed, dropped or timed out.
            ProtocolError: the answer is larger than ``max_response_bytes``; the connection
                is closed and the rest is never read.
        """
        client = self._session or self._client()
        if timeout is None or timeout == self._total:
            limits = self._default_timeout
        else:
            limits = self._timeout(timeout)
        sent: Mapping[str, str] | None = headers
        if self._owns_session:
            # aiohttp merges a request's headers into a copy of the session's, item by item:
            # on the session's own, the headers of the last request are its defaults, and a
            # request with the same ones (nearly all: one credential, with or without a body)
            # passes none. Nothing awaits between this and aiohttp's copy of them.
            if headers != self._defaults:
                self._defaults = dict(headers)
                defaults = client.headers
                defaults.clear()
                defaults.update(self._defaults)
            sent = None
        error: TransportError
        try:
            async with client.request(
                method,
                URL(url, encoded=True),
                data=body,
                headers=sent,
                allow_redirects=False,
                timeout=limits,
                ssl=self._ssl,
                proxy=self._proxy,
            ) as resp:
                declared = resp.content_length
                if declared is not None and declared <= max_response_bytes:
                    # aiohttp's parser reads no more than the declared length: one read.
                    read = await resp.read()
                else:
                    read = await _read_bounded(resp, method, url, max_response_bytes)
                return _response(resp.status, resp.headers, read)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            error = TransportError(f"could not connect: {exc}", method=method, url=url, sent=False)
        except TimeoutError:
            error = TransportError(
                "timed out waiting for the answer", method=method, url=url, sent=True
            )
        except aiohttp.ClientError as exc:
            error = TransportError(
                f"connection failed: {type(exc).__name__}: {exc}", method=method, url=url, sent=True
            )
        # Raised outside the handlers, so aiohttp's exception does not hang on it as context:
        # it may hold the request's headers (the credentials) or the whole body.
        raise error

    async def aclose(self) -> None:
        """Close the aiohttp session if it is the transport's own; idempotent."""
        if self._closed:
            return
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()


async def _read_bounded(resp: aiohttp.ClientResponse, method: str, url: str, limit: int) -> bytes:
    """The body, never more than ``limit``: a larger answer closes the connection."""
    declared = resp.content_length
    if declared is not None:
        if declared > limit:
            resp.close()
            raise _too_large(method, url, limit, f"{declared} bytes (Content-Length)")
        # aiohttp's parser reads no more than the declared length: one read, no chunk list.
        return await resp.read()
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            resp.close()
            raise _too_large(method, url, limit, f"more than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


class MockTransport:
    """A `Transport` that answers from a function instead of the network, for tests.

    The handler gets each `TransportRequest` and returns a `TransportResponse` (or an awaitable
    of one), or raises `TransportError` to simulate a failed connection. Every request is kept
    in `requests`, in order.

    Args:
        handler: what answers each request (a plain or an async function).
    """

    def __init__(
        self,
        handler: Callable[[TransportRequest], TransportResponse | Awaitable[TransportResponse]],
    ) -> None:
        """Answer with ``handler``."""
        self._handler = handler
        self.requests: list[TransportRequest] = []
        self.closed = False

    def __repr__(self) -> str:
        """How many requests it has answered."""
        return f"MockTransport(requests={len(self.requests)})"

    async def send(self, request: TransportRequest) -> TransportResponse:
        """Answer ``request`` with the handler, enforcing the size limit as the network does.

        Raises:
            TransportError: the handler raised it.
            ProtocolError: the handler's answer is larger than the request's limit.
        """
        self.requests.append(request)
        answer = self._handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        if len(answer.body) > request.max_response_bytes:
            raise _too_large(
                request.method, request.url, request.max_response_bytes, f"{len(answer.body)} bytes"
            )
        return answer

    async def aclose(self) -> None:
        """Mark the transport closed."""
        self.closed = True
