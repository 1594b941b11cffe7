"""The transport seam: a session over a scripted transport, and aiohttp options on loopback."""

from __future__ import annotations

import contextlib
import ssl

import aiohttp
import anyio
import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from loopback import serve

from asyncbulk import (
    AsyncBulkError,
    ChakraClient,
    ProtocolError,
    TransportError,
    ValidationError,
    ZefortClient,
)
from asyncbulk._retry import RetryPolicy
from asyncbulk._session import BearerAuth, ChakraEnvelope, Session
from asyncbulk._transport import (
    AiohttpTransport,
    MockTransport,
    TransportRequest,
    TransportResponse,
)

pytestmark = pytest.mark.anyio

TOKEN = "transport-test-token"
HOSTILE_LOCATIONS = [
    "https://evil.test/x",
    "//evil.test/x",
    "http://api.example.test/x",
    "https://api.example.test:444/x",
    "/same-origin",
    "https://api.example.test/x",
    "http://[::1",
    "",
]
HOSTILE_WAITS = ["86400", "1e300", "-5", "nan", "Fri, 31 Dec 9999 23:59:59 GMT", "soon", "0"]


def ok(data: object) -> TransportResponse:
    return TransportResponse.of(200, orjson.dumps({"_data": data, "_meta": {}, "_errors": []}))


def mock_session(transport: MockTransport, **options: object) -> Session:
    options.setdefault("retry", RetryPolicy.testing(attempts=3))
    return Session(
        base_url="https://api.example.test",
        auth=BearerAuth(TOKEN),
        envelope=ChakraEnvelope(),
        transport=transport,
        **options,  # type: ignore[arg-type]
    )


async def test_session_speaks_only_to_its_transport() -> None:
    """A session over a scripted transport sends the method, URL, headers and body it is given."""
    transport = MockTransport(lambda _request: ok({"id": "job-1"}))
    session = mock_session(transport)
    response = await session.request("PATCH", "/v1/ext/procedure/p/process", json_body={"a": 1})
    await session.aclose()
    assert response.data == {"id": "job-1"}
    (sent,) = transport.requests
    assert (sent.method, sent.url) == (
        "PATCH",
        "https://api.example.test/v1/ext/procedure/p/process",
    )
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert orjson.loads(sent.body or b"") == {"a": 1}
    assert transport.closed
    assert TOKEN not in repr(sent)


async def test_transport_errors_keep_their_sent_flag() -> None:
    """A TransportError(sent=False) from the transport is retried even for a PATCH."""
    answers = iter([None, None])

    def handler(request: TransportRequest) -> TransportResponse:
        if next(answers, "done") is None:
            raise TransportError("refused", method=request.method, url=request.url, sent=False)
        return ok({})

    transport = MockTransport(handler)
    session = mock_session(transport)
    await session.request("PATCH", "/x", json_body={})
    await session.aclose()
    assert len(transport.requests) == 3
    assert session.stats.retries == 2


async def test_async_handlers_are_awaited() -> None:
    """A MockTransport handler may be a coroutine function."""

    async def handler(_request: TransportRequest) -> TransportResponse:
        return ok([1, 2])

    session = mock_session(MockTransport(handler))
    assert (await session.request("GET", "/x")).data == [1, 2]
    await session.aclose()


def test_transport_excludes_aiohttp_options() -> None:
    """A transport of one's own cannot be combined with aiohttp's options: a ValidationError."""
    with pytest.raises(ValidationError, match="transport"):
        mock_session(MockTransport(lambda _r: ok({})), proxy="http://proxy.test:3128")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"ssl": "yes"}, "ssl"),
        ({"proxy": "socks5://x"}, "proxy"),
        ({"trust_env": 1}, "trust_env"),
    ],
    ids=["ssl-type", "proxy-scheme", "trust-env-type"],
)
def test_bad_aiohttp_options_are_refused(options: dict[str, object], field: str) -> None:
    """Options of the wrong type are ValidationErrors naming the field, on both clients."""
    for client in (ChakraClient, ZefortClient):
        with pytest.raises(ValidationError, match=field):
            client("a-credential", **options)  # type: ignore[arg-type]


def test_ssl_context_is_accepted() -> None:
    """An SSLContext (a custom CA) is a valid `ssl=`."""
    context = ssl.create_default_context()
    assert "AiohttpTransport" in repr(AiohttpTransport(ssl=context))
    ChakraClient("a-credential", ssl=context)


def proxy_app(seen: list[str]) -> web.Application:
    """A forward proxy that records the request target and answers for the origin."""

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(str(request.url))
        return web.json_response({"id": "task_1", "backend_status": "pending"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def test_requests_go_through_the_proxy() -> None:
    """With proxy=, every request reaches the proxy, naming the origin's URL."""
    seen: list[str] = []
    async with (
        serve(proxy_app(seen)) as proxy,
        ZefortClient("key-123456", base_url="http://127.0.0.1:9", proxy=proxy) as zefort,
    ):
        task = await zefort.get_task("task_1")
    assert task.id == "task_1"
    assert seen == ["http://127.0.0.1:9/api/tasks/task_1/"]


async def test_trust_env_reads_the_proxy_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """trust_env=True sends requests through the proxy named in HTTP_PROXY; without it, not."""
    seen: list[str] = []
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with serve(proxy_app(seen)) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy)
        async with ZefortClient(
            "key-123456", base_url="http://127.0.0.1:9", trust_env=True
        ) as zefort:
            await zefort.get_task("task_1")
        async with ZefortClient(
            "key-123456", base_url="http://127.0.0.1:9", retry=RetryPolicy.testing(attempts=1)
        ) as zefort:
            with pytest.raises(TransportError):
                await zefort.get_task("task_1")
    assert seen == ["http://127.0.0.1:9/api/tasks/task_1/"]


async def test_oversized_mock_answer_is_refused() -> None:
    """The size limit holds for any transport: a larger scripted answer is a ProtocolError."""
    session = mock_session(
        MockTransport(lambda _r: TransportResponse.of(200, b"[" + b"1," * 100 + b"1]")),
        max_response_bytes=64,
    )
    with pytest.raises(ProtocolError, match="max_response_bytes"):
        await session.request("GET", "/x")
    await session.aclose()


@settings(max_examples=150, deadline=None)
@given(
    status=st.sampled_from([300, 301, 302, 303, 304, 307, 308, 429]),
    location=st.one_of(st.none(), st.text(max_size=40), st.sampled_from(HOSTILE_LOCATIONS)),
    retry_after=st.one_of(st.none(), st.text(max_size=30), st.sampled_from(HOSTILE_WAITS)),
    method=st.sampled_from(["GET", "PATCH"]),
)
def test_hostile_redirects_and_retry_afters_end_in_a_library_error(
    status: int, location: str | None, retry_after: str | None, method: str
) -> None:
    """Any 3xx or 429 headers end a call fast (an answer or an AsyncBulkError), never elsewhere."""
    headers = {}
    if location is not None and location.isprintable():
        headers["Location"] = location
    if retry_after is not None and retry_after.isprintable():
        headers["Retry-After"] = retry_after
    transport = MockTransport(lambda _r: TransportResponse.of(status, b"{}", headers))

    async def run() -> None:
        session = mock_session(transport, retry=RetryPolicy(attempts=2, max_wait=0.01, budget=1))
        body = {"json_body": {}} if method == "PATCH" else {}
        with anyio.fail_after(5):
            with contextlib.suppress(AsyncBulkError):
                await session.request(method, "/x", **body)
        await session.aclose()

    anyio.run(run)
    for request in transport.requests:
        assert request.url.startswith("https://api.example.test/")
    assert len(transport.requests) <= 2 * 6


def recording_app(seen: list[tuple[str, dict[str, str]]], refused: set[str]) -> web.Application:
    """Records each request's method and headers; answers 401 to a refused credential."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        seen.append((request.method, dict(request.headers)))
        if request.headers.get("Authorization") in refused:
            return web.json_response({"_data": None, "_meta": {}, "_errors": []}, status=401)
        return web.json_response({"_data": {"ok": True}, "_meta": {}, "_errors": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def test_each_request_carries_its_own_headers_on_the_wire() -> None:
    """GETs, bodies and a rotated credential, interleaved: each request sends just its headers."""
    seen: list[tuple[str, dict[str, str]]] = []
    tokens = iter(["first-token-123", "second-token-456"])
    async with serve(recording_app(seen, {"Bearer first-token-123"})) as url:
        session = Session(
            base_url=url,
            auth=BearerAuth(lambda: next(tokens)),
            envelope=ChakraEnvelope(),
            transport=AiohttpTransport(),
            retry=RetryPolicy.testing(attempts=3),
        )
        try:
            async with anyio.create_task_group() as tg:
                for i in range(6):
                    if i % 2:
                        tg.start_soon(lambda n=i: session.request("PUT", "/p", json_body=[n]))
                    else:
                        tg.start_soon(session.request, "GET", f"/get/{i}")
            await session.request("GET", "/last")
        finally:
            await session.aclose()
    assert seen, "the server saw no request"
    for method, headers in seen:
        # Only a request with a body says what it is; no GET inherits a PUT's header.
        assert ("Content-Type" in headers) == (method == "PUT"), (method, headers)
        if method == "PUT":
            assert headers["Content-Type"] == "application/json"
        assert headers["Accept"] == "application/json"
    # The refused credential was sent until the 401s, and never after the new one was asked for.
    auths = [headers["Authorization"] for _method, headers in seen]
    first_new = auths.index("Bearer second-token-456")
    assert set(auths[:first_new]) == {"Bearer first-token-123"}
    assert set(auths[first_new:]) == {"Bearer second-token-456"}
    assert seen[-1][1]["Authorization"] == "Bearer second-token-456"


async def test_a_lent_session_keeps_its_own_default_headers() -> None:
    """On a caller's aiohttp session, headers go per request and its defaults stay as they were."""
    seen: list[tuple[str, dict[str, str]]] = []
    async with (
        serve(recording_app(seen, set())) as url,
        aiohttp.ClientSession(headers={"X-Caller": "mine"}) as http,
    ):
        session = Session(
            base_url=url,
            auth=BearerAuth(TOKEN),
            envelope=ChakraEnvelope(),
            transport=AiohttpTransport(http),
        )
        try:
            await session.request("GET", "/x")
            await session.request("PATCH", "/y", json_body={"a": 1})
        finally:
            await session.aclose()
        assert dict(http.headers) == {"X-Caller": "mine"}
    assert [h["Authorization"] for _m, h in seen] == [f"Bearer {TOKEN}"] * 2
    assert all(h["X-Caller"] == "mine" for _m, h in seen)
