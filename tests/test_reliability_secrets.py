"""Credentials never leak, and ids never escape their path segment.

With DEBUG logging on, every error path is taken (401, 404, 429, 5xx, dropped connections,
malformed answers, timeouts, deadlines, validation errors, partial submissions) against the
simulator and against a hostile server that echoes the credentials back in every answer. No
token, API key or its base64 form may appear in a log record, a repr, a str, or anywhere in an
exception's chain (``__cause__``, ``__context__``, grouped errors, `APIError.body`).

Ids holding ``/``, ``..``, ``?``, ``#``, ``%`` and spaces must reach the server as one
percent-encoded path segment, for every method that puts an id in a path.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
import pytest
from aiohttp import web
from loopback import serve

from asyncbulk import (
    AsyncBulkError,
    RetryPolicy,
    Timeouts,
    TrackingOptions,
    ValidationError,
)
from asyncbulk.chakra import ChakraClient, ProcessUpdate
from asyncbulk.testing import Fault, Simulator
from asyncbulk.zefort import ZefortClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

pytestmark = pytest.mark.anyio

TOKEN = "chakra-SECRET-token-7f3a9c"
API_KEY = "zefort-SECRET-key-41b7e2"
WRONG_TOKEN = "wrong-SECRET-token-0d5e1f"
FAST = RetryPolicy(attempts=2, initial_wait=0.0, max_wait=0.01, budget=5.0)


def secrets_of(*values: str) -> list[str]:
    """Each credential, and the base64 forms an Authorization header would carry."""
    out = []
    for value in values:
        out += [value, base64.b64encode(f"{value}:".encode()).decode()]
        out.append(base64.b64encode(value.encode()).decode().rstrip("="))
    return out


SECRETS = secrets_of(TOKEN, API_KEY, WRONG_TOKEN)


def texts_of(error: BaseException) -> Iterator[str]:
    """Every text an exception can show: str, repr, args, attributes, and its whole chain."""
    seen: set[int] = set()
    stack: list[BaseException] = [error]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield from (repr(arg) for arg in current.args)
        for name, value in vars(current).items():
            yield f"{name}={value!r}"
            if isinstance(value, BaseException):
                stack.append(value)
            if isinstance(value, tuple | list):
                stack.extend(v for v in value if isinstance(v, BaseException))
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)


def assert_clean(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} shows a credential: {text[:300]!r}"


class AllRecords(logging.Handler):
    """Keeps every log record of every logger, formatted with its traceback."""

    def __init__(self) -> None:
        """Collect at DEBUG."""
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the formatted record, its raw args and its exception text."""
        self.lines.append(self.format(record))
        self.lines.append(repr(record.args))
        self.lines.append(repr(record.msg))


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    handler = AllRecords()
    # Both: another test (the command line's) may have set asyncbulk's own level or propagation.
    loggers = [logging.getLogger(), logging.getLogger("asyncbulk")]
    saved = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    loggers[1].propagate = False
    try:
        yield handler.lines
    finally:
        for logger, (level, propagate) in zip(loggers, saved, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


async def collect(
    errors: list[BaseException], action: Awaitable[object] | Callable[[], Awaitable[object]]
) -> object:
    """Run an action, keeping whatever error it raises (bounded in time)."""
    try:
        with anyio.fail_after(20):
            return await (action() if callable(action) else action)
    except Exception as exc:  # noqa: BLE001 -- every error is checked below
        errors.append(exc)
        return None


async def drain(iterator: Any) -> list[Any]:
    out = []
    async with iterator:
        out += [item async for item in iterator]
    return out


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(
        chakra_token=TOKEN, zefort_api_key=API_KEY, seed=3, zefort_task_delay=1e6
    ) as simulator:
        yield simulator


async def test_no_credential_in_logs_reprs_or_errors_on_every_error_path(sim, log_lines):
    """Every error path with DEBUG logs on shows no token, key or base64 form anywhere."""
    errors: list[BaseException] = []
    shown: list[str] = []
    timeouts = Timeouts(total=0.3)
    async with (
        ChakraClient(TOKEN, base_url=sim.chakra_url, retry=FAST, timeouts=timeouts) as chakra,
        ZefortClient(
            API_KEY,
            base_url=sim.zefort_url,
            retry=FAST,
            timeouts=timeouts,
            tracking=TrackingOptions(min_interval=0.02, max_interval=0.05),
        ) as zefort,
        ChakraClient(WRONG_TOKEN, base_url=sim.chakra_url, retry=FAST) as wrong,
        ZefortClient(WRONG_TOKEN, base_url=sim.zefort_url, retry=FAST) as wrong_zefort,
    ):
        shown += [repr(chakra), repr(zefort), repr(chakra._session), repr(zefort._session)]
        shown += [repr(chakra._session._auth), repr(zefort._session._auth), str(chakra)]
        updates = [{"lead_id": "LEAD-001", "data": {"city": "Goa"}}]
        # 401 on both vendors.
        await collect(errors, wrong.get_background_job("job"))
        await collect(errors, wrong_zefort.get_task("task_1"))
        await collect(errors, wrong.bulk_update_processes("tele_sales", updates))
        # 404.
        await collect(errors, chakra.get_background_job("no-such-job"))
        await collect(errors, zefort.get_task("task_missing"))
        await collect(errors, lambda: drain(chakra.iter_job_entries("no-such-job")))
        # Validation.
        await collect(errors, chakra.bulk_update_processes("tele_sales", [{"id": ""}]))
        await collect(errors, zefort.bulk_update_contracts(search={}))
        with contextlib.suppress(ValidationError):
            ProcessUpdate(id="p", status="NOPE")  # type: ignore[arg-type]
        # Deadlines.
        await collect(errors, zefort.wait_for_task("task_missing", timeout=0.05))
        # Made on the server directly: under load, the client's short timeouts could fail it.
        slow = sim.zefort.submit_bulk_update({"status": "done", "search": {"q": "slow"}})
        await collect(errors, zefort.wait_for_task(slow.id, timeout=0.05))
        # Faults: every kind, every vendor.
        for fault in (
            Fault("status", retry_after=0.01),
            Fault("status", status=500),
            Fault("status", status=503),
            Fault("drop_before"),
            Fault("drop_after"),
            Fault("malformed"),
            Fault("latency", delay=1.0),
        ):
            sim.faults.add(fault)
            await collect(errors, chakra.get_background_job("19632427-0a4f-4f5f-bf66-f1b2ba5ec4d3"))
            await collect(errors, chakra.bulk_update_processes("tele_sales", updates))
            await collect(errors, lambda: drain(chakra.iter_job_entries("j")))
            await collect(errors, zefort.get_task(slow.id))
            await collect(errors, zefort.acknowledge_task(slow.id))
            await collect(errors, zefort.bulk_update_contracts(status="done", search={"q": "x"}))
            await collect(errors, lambda: drain(zefort.iter_tasks()))
            sim.faults.remove(fault)
        shown += [repr(chakra.stats), repr(zefort.stats)]
    kinds = {type(e).__name__ for e in errors}
    assert {
        "AuthenticationError",
        "NotFoundError",
        "RateLimitedError",
        "ServerError",
        "TransportError",
        "ProtocolError",
        "OutcomeUnknownError",
        "ValidationError",
        "JobTimeoutError",
    } <= kinds, kinds
    assert all(isinstance(e, AsyncBulkError) for e in errors), [type(e) for e in errors]
    for error in errors:
        for text in texts_of(error):
            assert_clean(type(error).__name__, text)
    for text in shown:
        assert_clean("a repr", text)
    assert any("DEBUG" in line for line in log_lines)
    for line in log_lines:
        assert_clean("a log record", line)


async def test_command_line_never_prints_a_credential(sim):
    """The command line at -vv, refused or faulted, prints no token or key on either stream."""
    env = {
        **os.environ,
        "CHAKRA_BASE_URL": sim.chakra_url,
        "CHAKRA_TOKEN": WRONG_TOKEN,
        "ZEFORT_BASE_URL": sim.zefort_url,
        "ZEFORT_API_KEY": API_KEY,
    }
    sim.faults.add(Fault("status", status=500, vendor="zefort"))
    outputs = []
    for args in (["-vv", "chakra", "job", "j1"], ["-vv", "zefort", "tasks", "--json"]):
        with anyio.fail_after(30):
            done = await anyio.run_process(
                [sys.executable, "-m", "asyncbulk", *args], env=env, check=False
            )
        assert done.returncode in {1, 2}, done.stderr
        outputs.append(done.stdout.decode() + done.stderr.decode())
    assert "401" in outputs[0]
    assert "500" in outputs[1]
    for text in outputs:
        assert_clean("the command line's output", text)


# -- a server that echoes the credentials back ------------------------------------------------


def echo_app() -> web.Application:
    """Answers every request with the Authorization header it got, in every place it can."""

    def auth_of(request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        value = header.partition(" ")[2]
        if header.startswith("Basic "):
            # Hand back the decoded key too, the way a careless error page would.
            value = f"{value} {base64.b64decode(value).decode().rstrip(':')}"
        return f"{header} {value}"

    def answer(mode: str, echo: str) -> web.Response:
        pages = {
            "401": lambda: web.json_response({"detail": echo, "_errors": [echo]}, status=401),
            "500": lambda: web.Response(text=f"<html><body>{echo}</body></html>", status=500),
            "429": lambda: web.json_response(
                {"_errors": [echo]}, status=429, headers={"Retry-After": "0"}
            ),
            "html": lambda: web.Response(text=f"<html>{echo}</html>", content_type="text/html"),
            # 2xx answers whose fields hold the credential where another type is expected.
            "field": lambda: web.json_response(
                {
                    "_data": {"id": echo, "createdAt": echo, "completionStatus": 7},
                    "_meta": {"total": echo, "bjEntryCompletionStatusVsCount": echo},
                    "id": 5,
                    "backend_status": echo,
                    "details": echo,
                }
            ),
            "entries": lambda: web.json_response({"_data": [{"id": "e1", "data": echo}]}),
            "listing": lambda: web.json_response({"results": echo, "count": echo}),
            "next": lambda: web.json_response({"results": [], "next": 5, "last_page": echo}),
        }
        plain = lambda: web.json_response({"_data": None, "_errors": [echo], "detail": echo})  # noqa: E731
        return pages.get(mode, plain)()

    async def handle(request: web.Request) -> web.StreamResponse:
        return answer(request.path.split("/")[1], auth_of(request))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    async with serve(echo_app()) as url:
        yield url


#: Error pages and unreadable answers that quote the request's Authorization header.
PAGE_MODES = ["401", "500", "429", "html", "plain"]
#: Well-formed JSON whose field values are the Authorization header, where the type is wrong.
FIELD_MODES = ["field", "entries", "listing", "next"]


async def test_credentials_echoed_in_error_pages_never_reach_an_error(echo_url, log_lines):
    """Error pages and garbled answers that echo the Authorization header never leak it."""
    await _echo_run(echo_url, log_lines, PAGE_MODES)


async def test_credentials_echoed_in_field_values_never_reach_an_error(echo_url, log_lines):
    """Field values that echo the Authorization header never make a ProtocolError show it."""
    await _echo_run(echo_url, log_lines, FIELD_MODES)


async def _echo_run(echo_url: str, log_lines: list[str], modes: list[str]) -> None:
    errors: list[BaseException] = []
    for mode in modes:
        # The mode travels in the base URL's path, so every endpoint answers in that mode.
        async with (
            ChakraClient(TOKEN, base_url=f"{echo_url}/{mode}", retry=FAST) as chakra,
            ZefortClient(API_KEY, base_url=f"{echo_url}/{mode}", retry=FAST) as zefort,
        ):
            await collect(errors, chakra.get_background_job("job"))
            await collect(errors, lambda c=chakra: drain(c.iter_job_entries("job")))
            await collect(
                errors, chakra.bulk_update_processes("p", [{"id": "p", "status": "OPEN"}])
            )
            await collect(errors, zefort.get_task("task_1"))
            await collect(errors, zefort.acknowledge_task("task_1"))
            await collect(errors, lambda z=zefort: drain(z.iter_tasks()))
            await collect(errors, zefort.bulk_update_contracts(status="done", search={}))
    assert len(errors) >= len(modes) * 4
    assert all(isinstance(e, AsyncBulkError) for e in errors), [repr(e)[:200] for e in errors]
    for error in errors:
        for text in texts_of(error):
            assert_clean(type(error).__name__, text)
    for line in log_lines:
        assert_clean("a log record", line)


# -- ids stay inside their path segment ---------------------------------------------------------

HOSTILE_IDS = [
    "a/b",
    "..",
    ".",
    "../../v1/ext/procedure/x/process",
    "id?x=1",
    "id#frag",
    "100%",
    "%2F",
    "has space",
    "a/../b?c#d e%",
]


def encoded(value: str) -> str:
    text = quote(value, safe="")
    return text.replace(".", "%2E") if text in {".", ".."} else text


def last_path(sim: Simulator) -> tuple[str, tuple[tuple[str, str], ...]]:
    record = sim.records.requests[-1]
    return record.path, record.query


@pytest.mark.parametrize("value", HOSTILE_IDS, ids=repr)
async def test_ids_stay_inside_their_path_segment(sim, value):
    """Every client method that puts an id in a path sends it as one encoded segment."""
    segment = encoded(value)
    never = RetryPolicy(attempts=1)
    async with (
        ChakraClient(TOKEN, base_url=sim.chakra_url, retry=never) as chakra,
        ZefortClient(API_KEY, base_url=sim.zefort_url, retry=never) as zefort,
    ):
        calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            (f"/v1/ext/background-job/{segment}", lambda: chakra.get_background_job(value)),
            (f"/v1/ext/background-job/{segment}", lambda: chakra.wait_for_job(value, timeout=5)),
            (
                f"/v1/ext/background-job/{segment}/entries",
                lambda: drain(chakra.iter_job_entries(value)),
            ),
            (
                f"/v1/ext/procedure/{segment}/process",
                lambda: chakra.bulk_update_processes(value, [{"id": "p", "status": "OPEN"}]),
            ),
            (
                f"/v1/ext/procedure/{segment}/process/bulk-create",
                lambda: chakra.bulk_create_processes(value, [{"lead_id": "N-1"}]),
            ),
            (f"/api/tasks/{segment}/", lambda: zefort.get_task(value)),
            (f"/api/tasks/{segment}/", lambda: zefort.acknowledge_task(value)),
            (f"/api/tasks/{segment}/", lambda: zefort.wait_for_task(value, timeout=5)),
        ]
        for expected, call in calls:
            before = sim.records.total_requests
            with anyio.fail_after(10), contextlib.suppress(AsyncBulkError):
                await call()
            assert sim.records.total_requests > before
            path, query = last_path(sim)
            assert path == expected
            if "entries" not in expected:
                assert query == ()
