"""The session layer against real aiohttp servers on loopback."""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import anyio
import attrs
import pytest
from aiohttp import web
from loopback import serve

import asyncbulk
from asyncbulk import (
    APIError,
    AuthenticationError,
    ClientClosedError,
    NotFoundError,
    ProtocolError,
    RateLimitedError,
    RetryPolicy,
    ServerError,
    Timeouts,
    TransportError,
    ValidationError,
)
from asyncbulk._retry import parse_retry_after
from asyncbulk._session import (
    BasicAuth,
    BearerAuth,
    ChakraEnvelope,
    PlainEnvelope,
    Session,
    encode_segment,
)

pytestmark = pytest.mark.anyio

TOKEN = "chakra-secret-token-123"
API_KEY = "zefort-secret-key-456"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@attrs.define
class Seen:
    """One request as the server received it."""

    method: str
    raw_path: str
    headers: dict[str, str]
    body: bytes
    at: float


@attrs.define
class Server:
    """A loopback server whose answers a test scripts, recording every request."""

    url: str = ""
    seen: list[Seen] = attrs.Factory(list)
    handler: Handler | None = None

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(
            Seen(
                request.method,
                request.raw_path,
                dict(request.headers),
                await request.read(),
                time.monotonic(),
            )
        )
        assert self.handler is not None, f"unexpected request {request.method} {request.raw_path}"
        return await self.handler(request)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", srv.dispatch)
    async with serve(app) as srv.url:
        yield srv


def script(*answers: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Handler:
    """A handler answering with each of ``answers`` in turn, then repeating the last."""
    queue = list(answers)

    async def handler(request: web.Request) -> web.StreamResponse:
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        return await answer(request)

    return handler


def status(code: int, body: object = None, headers: dict[str, str] | None = None) -> Handler:
    async def answer(_request: web.Request) -> web.StreamResponse:
        return web.json_response(body if body is not None else {}, status=code, headers=headers)

    return answer


def chakra_ok(data: object, meta: object = None) -> Handler:
    return status(200, {"_data": data, "_meta": meta or {}, "_errors": []})


async def drop(request: web.Request) -> web.StreamResponse:
    """Close the connection after reading the request: the answer is lost."""
    await request.read()
    assert request.transport is not None
    request.transport.close()
    return web.Response()


def chakra_session(server: Server, **options: object) -> Session:
    options.setdefault("retry", RetryPolicy(initial_wait=0.001, max_wait=0.01))
    return Session(
        base_url=server.url,
        auth=BearerAuth(TOKEN),
        envelope=ChakraEnvelope(),
        name="ChakraClient",
        **options,  # type: ignore[arg-type]
    )


async def test_chakra_envelope_is_unwrapped(server: Server) -> None:
    """A Chakra answer's _data and _meta come back decoded, with the Bearer token sent."""
    server.handler = chakra_ok({"id": "job-1"}, {"total": 3})
    session = chakra_session(server)
    response = await session.request("GET", "/v1/ext/background-job/job-1")
    await session.aclose()
    assert response.data == {"id": "job-1"}
    assert response.meta == {"total": 3}
    assert server.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert server.seen[0].headers["User-Agent"] == f"asyncbulk/{asyncbulk.__version__}"


async def test_zefort_basic_auth_and_plain_body(server: Server) -> None:
    """Zefort gets HTTP Basic with the key as user name and an empty password; bodies are plain."""
    server.handler = status(200, {"id": "task_1", "backend_status": "pending"})
    session = Session(base_url=server.url, auth=BasicAuth(API_KEY), envelope=PlainEnvelope())
    response = await session.request("POST", "/api/contracts/bulk_update/", json_body={"a": 1})
    await session.aclose()
    assert response.data == {"id": "task_1", "backend_status": "pending"}
    expected = base64.b64encode(f"{API_KEY}:".encode()).decode()
    assert server.seen[0].headers["Authorization"] == f"Basic {expected}"
    assert json.loads(server.seen[0].body) == {"a": 1}
    assert server.seen[0].headers["Content-Type"] == "application/json"


async def test_a_reader_reads_the_body_and_errors_stay_errors(server: Server) -> None:
    """A reader gets a success's bytes; a body it refuses is retried, then a ProtocolError."""
    server.handler = script(
        status(200, {"n": "not a number"}), status(200, {"n": 2}), status(404, {"_errors": ["x"]})
    )
    session = chakra_session(server)

    def reader(body: bytes) -> int:
        value = json.loads(body)["n"]
        if not isinstance(value, int):
            raise ValueError("n is not a number")  # noqa: TRY004 -- what a decoder raises
        return value

    response = await session.request("GET", "/thing", reader=reader)
    assert (response.data, response.meta, len(server.seen)) == (2, {}, 2)
    with pytest.raises(NotFoundError):  # an error status is the session's, not the reader's
        await session.request("GET", "/thing", reader=reader)
    server.handler = status(200, {"n": "never"})
    with pytest.raises(ProtocolError) as caught:
        await session.request("GET", "/thing", reader=reader)
    await session.aclose()
    assert "n is not a number" in str(caught.value)
    assert caught.value.status == 200


async def test_retries_503_until_success(server: Server) -> None:
    """A 503 is retried, even for a PATCH, until the server answers."""
    server.handler = script(status(503), status(503), chakra_ok({"id": "j"}))
    session = chakra_session(server)
    response = await session.request("PATCH", "/v1/ext/procedure/p/process", json_body={})
    await session.aclose()
    assert response.data == {"id": "j"}
    assert len(server.seen) == 3
    assert session.stats.retries == 2


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (400, APIError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, NotFoundError),
        (409, APIError),
    ],
    ids=["400", "401", "403", "404", "409"],
)
async def test_client_errors_are_not_retried(
    server: Server, code: int, error: type[APIError]
) -> None:
    """4xx answers other than 429 map to their error and are sent exactly once, even for GET."""
    server.handler = status(code, {"_data": None, "_errors": ["nope", "really"]})
    session = chakra_session(server)
    with pytest.raises(error) as info:
        await session.request("GET", "/v1/ext/background-job/x")
    await session.aclose()
    assert type(info.value) is error
    assert len(server.seen) == 1
    assert info.value.status == code
    assert info.value.messages == ("nope", "really")
    assert info.value.method == "GET"
    assert info.value.url.endswith("/v1/ext/background-job/x")


async def test_get_retries_500_but_post_does_not(server: Server) -> None:
    """Other 5xx are retried for idempotent requests only."""
    server.handler = status(500, {"_errors": ["boom"]})
    session = chakra_session(server, retry=RetryPolicy(attempts=3, initial_wait=0.001))
    with pytest.raises(ServerError):
        await session.request("GET", "/a")
    assert len(server.seen) == 3
    with pytest.raises(ServerError):
        await session.request("POST", "/b", json_body=[])
    assert len(server.seen) == 4
    await session.aclose()


async def test_post_not_retried_after_the_connection_drops(server: Server) -> None:
    """A POST whose answer was lost is not sent again: the server sees it once."""
    server.handler = drop
    session = chakra_session(server)
    with pytest.raises(TransportError) as info:
        await session.request("POST", "/api/contracts/bulk_update/", json_body={"x": 1})
    await session.aclose()
    assert info.value.sent is True
    assert len(server.seen) == 1


async def test_get_retried_after_the_connection_drops(server: Server) -> None:
    """A GET whose answer was lost is retried, since repeating it changes nothing."""
    server.handler = script(drop, chakra_ok([]))
    session = chakra_session(server)
    response = await session.request("GET", "/v1/ext/background-job/j/entries")
    await session.aclose()
    assert response.data == []
    assert len(server.seen) == 2


async def test_connection_refused_is_retried_even_for_post() -> None:
    """A connection that never opened is retried for every method, then reported unsent."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    session = Session(
        base_url=f"http://127.0.0.1:{port}",
        auth=BearerAuth(TOKEN),
        envelope=ChakraEnvelope(),
        retry=RetryPolicy.testing(attempts=3),
    )
    with pytest.raises(TransportError) as info:
        await session.request("POST", "/x", json_body={})
    await session.aclose()
    assert info.value.sent is False
    assert session.stats.requests == 3
    assert TOKEN not in str(info.value)


async def test_retry_after_is_honoured(server: Server) -> None:
    """The wait after a 429 lasts at least its Retry-After."""
    server.handler = script(status(429, headers={"Retry-After": "0.3"}), chakra_ok({}))
    session = chakra_session(server)
    await session.request("GET", "/a")
    await session.aclose()
    gap = server.seen[1].at - server.seen[0].at
    assert gap >= 0.28
    assert session.stats.rate_limited == 1


async def test_one_429_delays_only_its_own_retry(server: Server) -> None:
    """A lone 429 delays the retry of the request that met it; the others go on meanwhile."""
    limited = anyio.Event()

    async def first_limited(request: web.Request) -> web.StreamResponse:
        if not limited.is_set() and request.path == "/first":
            limited.set()
            return await status(429, headers={"Retry-After": "0.5"})(request)
        return await chakra_ok({})(request)

    server.handler = first_limited
    session = chakra_session(server)

    async def later(n: int) -> None:
        await limited.wait()
        await anyio.sleep(0.05)
        await session.request("GET", f"/later/{n}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(session.request, "GET", "/first")
        for n in range(5):
            tg.start_soon(later, n)
    await session.aclose()
    t429 = server.seen[0].at
    others = [s.at - t429 for s in server.seen if s.raw_path.startswith("/later/")]
    (retry,) = [s.at - t429 for s in server.seen[1:] if s.raw_path == "/first"]
    assert len(others) == 5
    assert max(others) < retry
    assert retry >= 0.45
    assert session.stats.host_pauses == 0


async def test_429s_that_are_most_answers_pause_the_host(server: Server) -> None:
    """When the host refuses most requests at once, nothing is sent until its Retry-After ends."""
    refused = 0

    async def spent(request: web.Request) -> web.StreamResponse:
        nonlocal refused
        if refused < 4:
            refused += 1
            return await status(429, headers={"Retry-After": "0.5"})(request)
        return await chakra_ok({})(request)

    server.handler = spent
    session = chakra_session(server)
    async with anyio.create_task_group() as tg:
        for n in range(4):
            tg.start_soon(session.request, "GET", f"/{n}")
    await session.aclose()
    refusals = [s.at for s in server.seen[:4]]
    retries = [s.at for s in server.seen[4:]]
    assert len(retries) == 4
    assert min(retries) - max(refusals) >= 0.4
    # One pause, for the Retry-After: not 0.5 s for each of the four 429s.
    assert max(retries) - max(refusals) < 1.9
    assert session.stats.host_pauses == 1
    assert session.stats.rate_limited == 4


async def test_rate_limit_error_carries_retry_after(server: Server) -> None:
    """When 429s outlast the retries, RateLimitedError says how long the server asked to wait."""
    server.handler = status(429, headers={"Retry-After": "7"})
    session = chakra_session(server, retry=RetryPolicy.testing(attempts=2))
    with pytest.raises(RateLimitedError) as info:
        await session.request("GET", "/a")
    await session.aclose()
    assert info.value.retry_after == 7.0
    assert len(server.seen) == 2


async def test_retry_budget_stops_a_long_retry_after(server: Server) -> None:
    """A Retry-After longer than the retry budget ends the retries at once."""
    server.handler = status(429, headers={"Retry-After": "30"})
    session = chakra_session(server, retry=RetryPolicy(budget=1.0))
    with anyio.fail_after(3):
        with pytest.raises(RateLimitedError):
            await session.request("GET", "/a")
    await session.aclose()
    assert len(server.seen) == 1


async def test_total_timeout_raises_transport_error(server: Server) -> None:
    """An answer slower than the total timeout is a TransportError, retried for GET."""

    async def slow(_request: web.Request) -> web.StreamResponse:
        await anyio.sleep(2)
        return web.json_response({})

    server.handler = slow
    session = chakra_session(
        server, timeouts=Timeouts(total=0.2), retry=RetryPolicy.testing(attempts=2)
    )
    started = time.monotonic()
    with pytest.raises(TransportError, match="timed out"):
        await session.request("GET", "/slow")
    await session.aclose()
    assert time.monotonic() - started < 1.5
    assert len(server.seen) == 2


async def test_garbled_answer_is_a_protocol_error(server: Server) -> None:
    """A 200 whose body is not JSON raises ProtocolError (after GET retries), never ValueError."""

    async def garbled(_request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>oops</html>", content_type="text/html")

    server.handler = garbled
    session = chakra_session(server, retry=RetryPolicy.testing(attempts=2))
    with pytest.raises(ProtocolError, match="not JSON"):
        await session.request("GET", "/a")
    with pytest.raises(ProtocolError):
        await session.request("POST", "/b", json_body={})
    await session.aclose()
    assert len(server.seen) == 3


async def test_chakra_envelope_must_be_an_object(server: Server) -> None:
    """A Chakra answer that is not an object envelope is a ProtocolError."""
    server.handler = status(200, [1, 2, 3])
    session = chakra_session(server)
    with pytest.raises(ProtocolError, match="envelope"):
        await session.request("GET", "/a")
    await session.aclose()


async def test_html_error_page_keeps_status_mapping(server: Server) -> None:
    """An HTML 502 page still maps to ServerError, with an excerpt of the body."""

    async def html(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=502, text="<h1>Bad gateway</h1>", content_type="text/html")

    server.handler = html
    session = chakra_session(server, retry=RetryPolicy.testing(attempts=1))
    with pytest.raises(ServerError) as info:
        await session.request("GET", "/a")
    await session.aclose()
    assert "Bad gateway" in info.value.body


async def test_credentials_never_reach_logs_reprs_or_errors(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """With DEBUG logs and a server that echoes the Authorization header, no secret leaks."""

    async def echo(request: web.Request) -> web.StreamResponse:
        return web.json_response({"_errors": [request.headers["Authorization"]]}, status=503)

    server.handler = echo
    caplog.set_level(logging.DEBUG, logger="asyncbulk")
    bearer = chakra_session(server, retry=RetryPolicy.testing(attempts=2))
    basic = Session(
        base_url=server.url,
        auth=BasicAuth(API_KEY),
        envelope=PlainEnvelope(),
        retry=RetryPolicy.testing(attempts=2),
    )
    errors = []
    for session in (bearer, basic):
        with pytest.raises(ServerError) as info:
            await session.request("GET", "/a")
        errors.append(info.value)
        await session.aclose()
    encoded = base64.b64encode(f"{API_KEY}:".encode()).decode()
    text = " ".join(
        [r.getMessage() for r in caplog.records]
        + [repr(bearer), repr(basic), repr(BearerAuth(TOKEN)), repr(BasicAuth(API_KEY))]
        + [f"{e} {e!r} {e.messages} {e.body}" for e in errors]
    )
    assert caplog.records, "expected DEBUG and WARNING lines"
    for secret in (TOKEN, API_KEY, encoded):
        assert secret not in text
    assert "<redacted>" in text


async def test_every_request_is_logged_at_debug(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """One DEBUG line per try with method, path, status and attempt; one WARNING per retry."""
    server.handler = script(status(503), chakra_ok({}))
    caplog.set_level(logging.DEBUG, logger="asyncbulk")
    session = chakra_session(server)
    await session.request("GET", "/v1/x")
    await session.aclose()
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(debug) == 2
    assert "GET /v1/x -> 503 (attempt 1" in debug[0]
    assert "GET /v1/x -> 200 (attempt 2" in debug[1]
    assert len(warnings) == 1
    assert "retrying GET /v1/x" in warnings[0]


@pytest.mark.parametrize(
    "hostile",
    ["../contracts/bulk_update", "a/b", "what?x=1", "frag#ment", "100%", "with space", "..", "."],
    ids=["dotdot-path", "slash", "query", "fragment", "percent", "space", "dotdot", "dot"],
)
async def test_ids_stay_inside_their_path_segment(server: Server, hostile: str) -> None:
    """An id with /, .., ?, #, % or spaces reaches the server as one encoded segment."""
    server.handler = status(200, {})
    session = Session(base_url=server.url, auth=BasicAuth(API_KEY), envelope=PlainEnvelope())
    await session.request("GET", session.path("/api/tasks/{task_id}/", task_id=hostile))
    await session.aclose()
    raw = server.seen[0].raw_path
    assert raw == f"/api/tasks/{encode_segment(hostile)}/"
    assert raw.count("/") == 4
    assert "?" not in raw
    assert "#" not in raw


@pytest.mark.parametrize("value", ["", "   ", 17], ids=["empty", "blank", "not-a-string"])
def test_path_refuses_empty_ids(value: object) -> None:
    """An empty or non-string id is a ValidationError naming the parameter."""
    session = Session(base_url="https://x.test", auth=BasicAuth(API_KEY), envelope=PlainEnvelope())
    with pytest.raises(ValidationError, match="task_id"):
        session.path("/api/tasks/{task_id}/", task_id=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "link",
    [
        "https://evil.test/api/tasks/?page=2",
        "http://api.example.test/api/tasks/?page=2",
        "https://api.example.test:8443/api/tasks/",
        "//evil.test/api/tasks/",
    ],
    ids=["other-host", "other-scheme", "other-port", "scheme-relative"],
)
def test_links_to_other_origins_are_refused(link: str) -> None:
    """A link from a response is followed only to the configured scheme, host and port."""
    session = Session(
        base_url="https://api.example.test", auth=BasicAuth(API_KEY), envelope=PlainEnvelope()
    )
    with pytest.raises(ProtocolError, match="another origin"):
        session.resolve_link(link)


def test_same_origin_links_resolve_to_a_path() -> None:
    """Relative and same-origin absolute links resolve to a path and query under the base URL."""
    session = Session(
        base_url="https://api.example.test", auth=BasicAuth(API_KEY), envelope=PlainEnvelope()
    )
    assert session.resolve_link("https://api.example.test/api/tasks/?page=2") == (
        "/api/tasks/?page=2"
    )
    assert session.resolve_link("/v1/ext/x?skip=2limit=2") == "/v1/ext/x?skip=2limit=2"


@pytest.mark.parametrize(
    ("base_url", "allowed"),
    [
        ("https://api.chakrahq.com", True),
        ("http://127.0.0.1:8080", True),
        ("http://localhost:8080", True),
        ("http://[::1]:8080", True),
        ("http://api.chakrahq.com", False),
        ("http://10.0.0.5", False),
        ("api.chakrahq.com", False),
        ("ftp://api.chakrahq.com", False),
        ("https://user:pw@api.chakrahq.com", False),
        ("", False),
    ],
    ids=[
        "https",
        "http-loopback-ip",
        "http-localhost",
        "http-ipv6-loopback",
        "http-remote",
        "http-private",
        "no-scheme",
        "ftp",
        "userinfo",
        "empty",
    ],
)
def test_base_url_rules(base_url: str, allowed: bool) -> None:
    """Allow https anywhere, http only to loopback; refuse the rest."""
    if allowed:
        Session(base_url=base_url, auth=BearerAuth(TOKEN), envelope=ChakraEnvelope())
    else:
        with pytest.raises(ValidationError, match="base_url"):
            Session(base_url=base_url, auth=BearerAuth(TOKEN), envelope=ChakraEnvelope())


def test_plain_http_to_a_remote_host_needs_opting_in() -> None:
    """allow_insecure_http=True, by name, lets plain http reach a remote host."""
    session = Session(
        base_url="http://api.chakrahq.com",
        auth=BearerAuth(TOKEN),
        envelope=ChakraEnvelope(),
        allow_insecure_http=True,
    )
    assert str(session.base_url) == "http://api.chakrahq.com"


@pytest.mark.parametrize(
    "value", ["", "  ", None, "a\nb"], ids=["empty", "blank", "none", "newline"]
)
def test_bad_credentials_are_refused(value: object) -> None:
    """An empty, missing or header-breaking credential is a ValidationError naming it."""
    with pytest.raises(ValidationError, match="token"):
        BearerAuth(value)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="api_key"):
        BasicAuth(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"timeouts": "10"}, "timeouts"),
        ({"retry": 3}, "retry"),
    ],
    ids=["in-flight-zero", "timeouts-type", "retry-type"],
)
def test_bad_session_options_are_refused(options: dict[str, object], field: str) -> None:
    """Settings of the wrong type or range are ValidationErrors naming the field."""
    with pytest.raises(ValidationError, match=field):
        Session(
            base_url="https://x.test",
            auth=BearerAuth(TOKEN),
            envelope=ChakraEnvelope(),
            **options,  # type: ignore[arg-type]
        )


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"attempts": 0}, "attempts"),
        ({"initial_wait": -1}, "initial_wait"),
        ({"budget": 0}, "budget"),
        ({"max_wait": float("nan")}, "max_wait"),
        ({"retry_statuses": {200}}, "retry_statuses"),
    ],
    ids=["attempts", "initial-wait", "budget", "max-wait-nan", "statuses"],
)
def test_bad_retry_policies_are_refused(options: dict[str, object], field: str) -> None:
    """A retry policy that makes no sense is a ValidationError naming the field."""
    with pytest.raises(ValidationError, match=field):
        RetryPolicy(**options)  # type: ignore[arg-type]


def test_bad_timeouts_are_refused() -> None:
    """Negative or zero timeouts are ValidationErrors naming the field."""
    with pytest.raises(ValidationError, match=r"timeouts\.total"):
        Timeouts(total=-1)
    with pytest.raises(ValidationError, match=r"timeouts\.connect"):
        Timeouts(connect=0)


def test_retry_after_parsing() -> None:
    """Retry-After is read as seconds or an HTTP date; junk and the past give None or 0."""
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_backoff_grows_and_is_capped() -> None:
    """Full-jitter waits stay under the doubling cap and never exceed max_wait."""
    policy = RetryPolicy(initial_wait=0.1, max_wait=1.0)
    for attempt in range(1, 10):
        cap = min(1.0, 0.1 * 2 ** (attempt - 1))
        assert all(0 <= policy.delay(attempt) <= cap for _ in range(50))
    assert policy.delay(1, retry_after=5.0) == 5.0


async def test_closed_session_refuses_requests(server: Server) -> None:
    """Using a session after aclose raises ClientClosedError; closing twice is fine."""
    server.handler = chakra_ok({})
    session = chakra_session(server)
    await session.request("GET", "/a")
    await session.aclose()
    await session.aclose()
    with pytest.raises(ClientClosedError):
        await session.request("GET", "/a")
    assert len(server.seen) == 1


async def test_callers_own_session_is_used_and_never_closed(server: Server) -> None:
    """A caller's aiohttp session carries our requests and stays open after aclose."""
    server.handler = chakra_ok({"ok": True})
    async with aiohttp.ClientSession() as own:
        session = chakra_session(server, session=own)
        response = await session.request("GET", "/a")
        await session.aclose()
        assert response.data == {"ok": True}
        assert not own.closed
    assert server.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"


async def test_testing_policy_never_sleeps(server: Server) -> None:
    """RetryPolicy.testing() retries at once, whatever Retry-After says."""
    server.handler = status(429, headers={"Retry-After": "30"})
    session = chakra_session(server, retry=RetryPolicy.testing(attempts=4))
    with anyio.fail_after(2):
        with pytest.raises(RateLimitedError):
            await session.request("GET", "/a")
    await session.aclose()
    assert len(server.seen) == 4


async def test_in_flight_limit_is_respected(server: Server) -> None:
    """No more than max_in_flight requests are at the server at once."""
    current = 0
    peak = 0

    async def slow(_request: web.Request) -> web.StreamResponse:
        nonlocal current, peak
        current += 1
        peak = max(peak, current)
        await anyio.sleep(0.02)
        current -= 1
        return web.json_response({"_data": None})

    server.handler = slow
    session = chakra_session(server, max_in_flight=3)
    async with anyio.create_task_group() as tg:
        for n in range(12):
            tg.start_soon(session.request, "GET", f"/{n}")
    await session.aclose()
    assert peak == 3
    assert len(server.seen) == 12


def test_body_that_is_not_json_is_refused_before_sending() -> None:
    """A body that cannot be JSON is a ValidationError and nothing is sent."""
    session = Session(base_url="https://x.test", auth=BearerAuth(TOKEN), envelope=ChakraEnvelope())

    async def send() -> None:
        await session.request("POST", "/a", json_body={"when": object()})
        await session.aclose()

    with pytest.raises(ValidationError, match="body"):
        anyio.run(send)
    assert session.stats.requests == 0


def test_errors_scrub_the_credentials_of_live_clients() -> None:
    """Any error built while a client is alive has its credential replaced, even in args."""
    secret = "a-token-only-this-test-knows"
    session = Session(base_url="https://x.test", auth=BearerAuth(secret), envelope=ChakraEnvelope())
    error = ProtocolError(f"task.id: expected a string, got {['Bearer ' + secret]!r}")
    invalid = ValidationError("data.note", f"is not JSON: {secret}")
    for text in (str(error), repr(error), str(error.args), str(invalid), invalid.reason):
        assert secret not in text
        assert "<redacted>" in text
    anyio.run(session.aclose)
    assert secret in str(ProtocolError(f"later: {secret}"))


def test_unrepeatable_requests_retry_only_what_proves_nothing_happened() -> None:
    """A bulk submission's policy keeps only 429 and 503, and never widens the caller's set."""
    assert RetryPolicy().for_unrepeatable().retry_statuses == {429, 503}
    narrowed = RetryPolicy(retry_statuses={429, 502}).for_unrepeatable()
    assert narrowed.retry_statuses == {429}
    assert not narrowed.retries_status(502, idempotent=False)


# -- redirects and answer size ---------------------------------------------------------------


@pytest.fixture
async def other() -> AsyncIterator[Server]:
    """A second server, on another port: another origin."""
    srv = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", srv.dispatch)
    async with serve(app) as srv.url:
        yield srv


def redirect(code: int, location: str) -> Handler:
    async def answer(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=code, headers={"Location": location})

    return answer


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308], ids=str)
@pytest.mark.parametrize("method", ["GET", "PATCH"])
async def test_redirects_to_another_origin_are_never_followed(
    server: Server, other: Server, code: int, method: str
) -> None:
    """A redirect to another port is a ProtocolError naming the Location; nothing reaches it."""
    location = f"{other.url}/v1/ext/background-job/x"
    server.handler = redirect(code, location)
    other.handler = chakra_ok({"id": "forged"})
    session = chakra_session(server)
    options = {"json_body": {"processes": [{"id": "p"}]}} if method == "PATCH" else {}
    with pytest.raises(ProtocolError, match="another origin") as info:
        await session.request(method, "/v1/ext/procedure/p/process", **options)
    await session.aclose()
    assert location in str(info.value)
    assert other.seen == []
    assert len(server.seen) == 1


async def test_same_origin_get_redirects_are_followed(server: Server) -> None:
    """A GET redirected on its own origin is followed, relative Location included."""

    async def moved(request: web.Request) -> web.StreamResponse:
        if request.path == "/old":
            return web.Response(status=301, headers={"Location": "/new?x=1"})
        return await chakra_ok({"path": request.path_qs})(request)

    server.handler = moved
    session = chakra_session(server)
    response = await session.request("GET", "/old")
    await session.aclose()
    assert response.data == {"path": "/new?x=1"}
    assert [s.raw_path for s in server.seen] == ["/old", "/new?x=1"]
    assert server.seen[1].headers["Authorization"] == f"Bearer {TOKEN}"


async def test_requests_with_a_body_follow_no_redirect(server: Server) -> None:
    """A PATCH redirected to its own origin is refused: its body is sent exactly once."""
    server.handler = redirect(307, "/v1/ext/procedure/p/process2")
    session = chakra_session(server)
    with pytest.raises(ProtocolError, match="redirect of a PATCH"):
        await session.request("PATCH", "/v1/ext/procedure/p/process", json_body={"a": 1})
    await session.aclose()
    assert len(server.seen) == 1


async def test_redirect_loops_end(server: Server) -> None:
    """A GET redirected to itself forever is a ProtocolError after a bounded number of hops."""
    server.handler = redirect(302, "/loop")
    session = chakra_session(server)
    with pytest.raises(ProtocolError, match="redirects"):
        await session.request("GET", "/loop")
    await session.aclose()
    assert len(server.seen) == 6


async def test_an_answer_larger_than_the_limit_is_refused(server: Server) -> None:
    """An answer whose Content-Length exceeds max_response_bytes is a ProtocolError, not retried."""
    server.handler = status(200, {"_data": "x" * 5000})
    session = chakra_session(server, max_response_bytes=1000)
    with pytest.raises(ProtocolError, match="max_response_bytes"):
        await session.request("GET", "/big")
    await session.aclose()
    assert len(server.seen) == 1


async def test_a_streamed_answer_is_not_read_past_the_limit(server: Server) -> None:
    """A chunked answer with no length is cut at the limit: the server cannot send it all."""
    written = 0
    chunk = b" " * 65536

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal written
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(1600):  # 100 MiB, if the client read it all
                await response.write(chunk)
                written += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return response

    server.handler = endless
    session = chakra_session(server, max_response_bytes=256 * 1024)
    with pytest.raises(ProtocolError, match="max_response_bytes"):
        await session.request("GET", "/stream")
    await session.aclose()
    await anyio.sleep(0.2)
    assert written < 50 * 1024 * 1024


def test_max_response_bytes_is_checked() -> None:
    """A size limit that is not a positive integer is a ValidationError naming it."""
    for value in (0, -1, 1.5, True):
        with pytest.raises(ValidationError, match="max_response_bytes"):
            asyncbulk.ChakraClient("a-token", max_response_bytes=value)  # type: ignore[arg-type]


async def test_first_try_handed_on_is_counted_once(server: Server) -> None:
    """A first answer of 429, then 503, then 200: each try counted once, as the server saw it."""
    server.handler = script(
        status(429, {}, {"Retry-After": "0"}), status(503), chakra_ok({"id": "job-1"})
    )
    session = chakra_session(server)
    response = await session.request("GET", "/v1/ext/background-job/job-1")
    stats = session.stats
    await session.aclose()
    assert response.data == {"id": "job-1"}
    assert len(server.seen) == 3
    assert stats.requests == 3
    assert stats.retries == 2
    assert dict(stats.by_status) == {429: 1, 503: 1, 200: 1}


async def test_first_answer_not_json_is_retried_by_the_loop(server: Server) -> None:
    """A first 200 whose body is not JSON is read again by the retry loop, and a GET retried."""

    async def garbage(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"<html>not json</html>", content_type="text/html")

    server.handler = script(garbage, chakra_ok({"id": "job-1"}))
    session = chakra_session(server)
    response = await session.request("GET", "/v1/ext/background-job/job-1")
    stats = session.stats
    await session.aclose()
    assert response.data == {"id": "job-1"}
    assert len(server.seen) == 2
    assert dict(stats.by_status) == {200: 2}


async def test_first_try_redirect_is_followed_by_the_loop(server: Server) -> None:
    """A first answer of 307 to the same host is followed, and both tries are counted."""

    async def moved(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=307, headers={"Location": "/v1/ext/background-job/job-2"})

    server.handler = script(moved, chakra_ok({"id": "job-2"}))
    session = chakra_session(server)
    response = await session.request("GET", "/v1/ext/background-job/job-1")
    stats = session.stats
    await session.aclose()
    assert response.data == {"id": "job-2"}
    assert [s.raw_path for s in server.seen] == [
        "/v1/ext/background-job/job-1",
        "/v1/ext/background-job/job-2",
    ]
    assert dict(stats.by_status) == {307: 1, 200: 1}
