"""Bad input from the caller is refused before any request, with an error naming the field.

Each case below is one malformed input to the public API. It must raise `ValidationError` whose
field (and message) names the offending field and its position, and the simulator must have seen
no request at all. The command-line cases must exit with status 2, name the line, and send
nothing either.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

import pytest

from asyncbulk import RetryPolicy, Timeouts, ValidationError
from asyncbulk.chakra import ChakraClient, ProcessUpdate
from asyncbulk.cli._app import run
from asyncbulk.testing import Simulator
from asyncbulk.zefort import ZefortClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

GOOD = {"lead_id": "LEAD-001", "data": {"city": "Goa"}}


class Clients:
    """Clients on the simulator, and a way to build more with the simulator's settings."""

    def __init__(self, sim: Simulator, chakra: ChakraClient, zefort: ZefortClient) -> None:
        """Hold the simulator and one client of each vendor."""
        self.sim = sim
        self.chakra = chakra
        self.zefort = zefort

    def new_chakra(self, **kwargs: Any) -> ChakraClient:
        options: dict[str, Any] = {"token": self.sim.chakra_token, "base_url": self.sim.chakra_url}
        return ChakraClient(**{**options, **kwargs})

    def new_zefort(self, **kwargs: Any) -> ZefortClient:
        options: dict[str, Any] = {
            "api_key": self.sim.zefort_api_key,
            "base_url": self.sim.zefort_url,
        }
        return ZefortClient(**{**options, **kwargs})


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    async with (
        Simulator() as sim,
        ChakraClient(sim.chakra_token, base_url=sim.chakra_url) as chakra,
        ZefortClient(sim.zefort_api_key, base_url=sim.zefort_url) as zefort,
    ):
        yield Clients(sim, chakra, zefort)


def updates_with(bad: dict[str, Any], at: int = 3, total: int = 10) -> list[dict[str, Any]]:
    """Valid updates with one bad one at position `at`, all in the first batch."""
    items = [{"lead_id": f"LEAD-{i}", "data": {"city": "Goa"}} for i in range(total)]
    items[at] = bad
    return items


async def update(c: Clients, items: Any, **kwargs: Any) -> None:
    await c.chakra.bulk_update_processes("tele_sales", items, **kwargs)


async def drain(iterator: Any) -> None:
    async for _ in iterator:
        pass


# (id, action, text the error's field must contain)
CASES: list[tuple[str, Callable[[Clients], Awaitable[object]], str]] = [
    # -- client settings --
    ("chakra-empty-token", lambda c: _make(c.new_chakra, token=""), "token"),
    ("chakra-blank-token", lambda c: _make(c.new_chakra, token="   "), "token"),
    ("chakra-token-newline", lambda c: _make(c.new_chakra, token="abc\r\nX-Evil: 1"), "token"),
    ("chakra-token-not-str", lambda c: _make(c.new_chakra, token=None), "token"),
    ("base-url-no-scheme", lambda c: _make(c.new_chakra, base_url="api.chakrahq.com"), "base_url"),
    (
        "base-url-plain-http-remote",
        lambda c: _make(c.new_chakra, base_url="http://api.chakrahq.com"),
        "base_url",
    ),
    (
        "base-url-with-credentials",
        lambda c: _make(c.new_chakra, base_url="https://user:pw@api.chakrahq.com"),
        "base_url",
    ),
    ("base-url-empty", lambda c: _make(c.new_zefort, base_url=""), "base_url"),
    ("base-url-ftp", lambda c: _make(c.new_zefort, base_url="ftp://my.zefort.com"), "base_url"),
    ("zefort-empty-key", lambda c: _make(c.new_zefort, api_key=""), "api_key"),
    ("max-in-flight-zero", lambda c: _make(c.new_chakra, max_in_flight=0), "max_in_flight"),
    (
        "poll-interval-inverted",
        lambda c: _make(c.new_chakra, poll_interval=(5.0, 1.0)),
        "poll_interval",
    ),
    (
        "zefort-negative-poll",
        lambda c: _make(c.new_zefort, poll_min_interval=-1.0),
        "poll_min_interval",
    ),
    ("retry-zero-attempts", lambda _: _make(RetryPolicy, attempts=0), "attempts"),
    ("retry-negative-wait", lambda _: _make(RetryPolicy, initial_wait=-1), "initial_wait"),
    ("timeouts-negative", lambda _: _make(Timeouts, total=-1), "timeouts.total"),
    # -- Chakra bulk updates --
    ("empty-procedure", lambda c: c.chakra.bulk_update_processes("", [GOOD]), "procedure"),
    (
        "no-identifier",
        lambda c: update(c, updates_with({"data": {"city": "Goa"}})),
        "updates[3]",
    ),
    (
        "two-identifiers",
        lambda c: update(c, updates_with({"id": "p1", "lead_id": "L", "status": "OPEN"})),
        "updates[3]",
    ),
    ("empty-id", lambda c: update(c, updates_with({"id": "", "status": "OPEN"})), "updates[3]"),
    (
        "bad-status",
        lambda c: update(c, updates_with({"id": "p1", "status": "FINISHED"})),
        "updates[3]",
    ),
    (
        "next-action-at-not-a-number",
        lambda c: update(c, updates_with({"id": "p1", "nextActionAt": "tomorrow"})),
        "updates[3]",
    ),
    (
        "next-action-at-negative",
        lambda c: update(c, updates_with({"id": "p1", "nextActionAt": -5})),
        "updates[3]",
    ),
    (
        "next-action-at-fraction",
        lambda c: update(c, updates_with({"id": "p1", "nextActionAt": 1.5})),
        "updates[3]",
    ),
    ("nothing-to-update", lambda c: update(c, updates_with({"id": "p1"})), "updates[3]"),
    (
        "data-not-json",
        lambda c: update(c, updates_with({"id": "p1", "data": {"x": object()}})),
        "updates[3]",
    ),
    (
        "data-nan",
        lambda c: update(c, updates_with({"id": "p1", "data": {"x": float("nan")}})),
        "updates[3]",
    ),
    (
        "data-not-a-mapping",
        lambda c: update(c, updates_with({"id": "p1", "data": ["x"]})),
        "updates[3]",
    ),
    (
        "is-deleted-not-bool",
        lambda c: update(c, updates_with({"id": "p1", "isDeleted": "yes"})),
        "updates[3]",
    ),
    ("item-not-a-mapping", lambda c: update(c, updates_with("p1")), "updates[3]"),  # type: ignore[arg-type]
    ("updates-a-string", lambda c: update(c, "lead_id"), "updates"),
    ("batch-size-zero", lambda c: update(c, [GOOD], batch_size=0), "batch_size"),
    ("batch-size-negative", lambda c: update(c, [GOOD], batch_size=-1), "batch_size"),
    ("batch-size-not-int", lambda c: update(c, [GOOD], batch_size="10"), "batch_size"),
    (
        "batches-in-flight-zero",
        lambda c: update(c, [GOOD], max_batches_in_flight=0),
        "max_batches_in_flight",
    ),
    ("model-no-identifier", lambda _: _make(ProcessUpdate, status="OPEN"), "id"),
    ("model-nothing-to-update", lambda _: _make(ProcessUpdate, id="p1"), "update"),
    # -- Chakra jobs and entries --
    ("job-id-empty", lambda c: c.chakra.get_background_job(""), "job_id"),
    ("job-id-not-str", lambda c: c.chakra.get_background_job(7), "job_id"),  # type: ignore[arg-type]
    ("wait-negative-timeout", lambda c: c.chakra.wait_for_job("j1", timeout=-1), "timeout"),
    ("track-empty-id", lambda c: drain(c.chakra.track_jobs(["j1", " "])), "job_ids[1]"),
    ("track-negative-timeout", lambda c: drain(c.chakra.track_jobs(["j1"], timeout=-2)), "timeout"),
    (
        "entries-page-size-zero",
        lambda c: drain(c.chakra.iter_job_entries("j", page_size=0)),
        "page_size",
    ),
    (
        "entries-page-size-big",
        lambda c: drain(c.chakra.iter_job_entries("j", page_size=101)),
        "page_size",
    ),
    (
        "entries-bad-status",
        lambda c: drain(c.chakra.iter_job_entries("j", completion_status="DONE")),
        "completion_status",
    ),
    (
        "entries-prefetch-zero",
        lambda c: drain(c.chakra.iter_job_entries("j", prefetch=0)),
        "prefetch",
    ),
    ("entries-empty-job", lambda c: drain(c.chakra.iter_job_entries("")), "job_id"),
    # -- Zefort --
    ("zefort-nothing-to-change", lambda c: c.zefort.bulk_update_contracts(search={}), "attributes"),
    (
        "zefort-attributes-not-json",
        lambda c: c.zefort.bulk_update_contracts(attributes={"a": {1, 2}}, search={}),
        "attributes",
    ),
    (
        "zefort-attributes-empty-name",
        lambda c: c.zefort.bulk_update_contracts(attributes={"": 1}, search={}),
        "attributes",
    ),
    (
        "zefort-empty-status",
        lambda c: c.zefort.bulk_update_contracts(status=" ", search={}),
        "status",
    ),
    (
        "zefort-search-not-mapping",
        lambda c: c.zefort.bulk_update_contracts(status="done", search=["q"]),  # type: ignore[arg-type]
        "search",
    ),
    (
        "zefort-extra-not-json",
        lambda c: c.zefort.bulk_update_contracts(
            status="done", search={}, extra={"note": float("inf")}
        ),
        "note",
    ),
    ("task-id-empty", lambda c: c.zefort.get_task(""), "task_id"),
    ("ack-task-id-empty", lambda c: c.zefort.acknowledge_task(""), "task_id"),
    ("wait-task-negative-timeout", lambda c: c.zefort.wait_for_task("t1", timeout=-1), "timeout"),
    ("track-tasks-one-string", lambda c: drain(c.zefort.track_tasks("task_1")), "task_ids"),
    ("track-tasks-empty-id", lambda c: drain(c.zefort.track_tasks(["t1", ""])), "task_ids[1]"),
    (
        "track-tasks-nan-timeout",
        lambda c: drain(c.zefort.track_tasks(["t1"], timeout=float("nan"))),
        "timeout",
    ),
    ("iter-tasks-page-size-zero", lambda c: drain(c.zefort.iter_tasks(page_size=0)), "page_size"),
]


async def _make(factory: Callable[..., object], **kwargs: Any) -> object:
    """Build something (a client, a policy) from keyword arguments; close it if it is a client."""
    made = factory(**kwargs)
    aclose = getattr(made, "aclose", None)
    if aclose is not None:
        await aclose()
    return made


@pytest.mark.parametrize(
    ("action", "field"), [(a, f) for _, a, f in CASES], ids=[i for i, _, _ in CASES]
)
async def test_bad_input_is_refused_before_any_request(clients, action, field):
    """A malformed input raises ValidationError naming its field and position; nothing is sent."""
    with pytest.raises(ValidationError) as caught:
        await action(clients)
    assert field in caught.value.field
    assert field in str(caught.value)
    assert caught.value.reason
    assert clients.sim.records.total_requests == 0


def test_the_table_is_large():
    """The table holds at least 30 distinct malformed inputs with unique ids."""
    ids = [i for i, _, _ in CASES]
    assert len(ids) >= 30
    assert len(set(ids)) == len(ids)


# -- the command line ---------------------------------------------------------------------------


class ThreadedSimulator:
    """A simulator served from its own thread, for the command line's own event loop."""

    def __init__(self) -> None:
        """Prepare the simulator and its thread; nothing runs before `with`."""
        self.sim = Simulator()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.sim:
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Simulator:
        """Start serving; return the simulator."""
        self._thread.start()
        assert self._ready.wait(10)
        return self.sim

    def __exit__(self, *exc_info: object) -> None:
        """Stop serving and join the thread."""
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def threaded_sim() -> Iterator[Simulator]:
    with ThreadedSimulator() as sim:
        yield sim


def _files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "no-id-column.csv": "state,status,assignedTo\nnew,OPEN,ana\n",
        "no-key-column.csv": "city,state\nGoa,new\n",
        "broken-line.jsonl": '{"lead_id": "A", "data": {"city": "Goa"}}\n'
        '{"lead_id": "B", "data": {"city": "Goa"}}\n'
        '{"lead_id": "C", "data": {"city": \n',
        "bad-status-line.jsonl": '{"lead_id": "A", "status": "OPEN"}\n'
        '{"lead_id": "B", "status": "DONE"}\n',
        "empty.csv": "",
        "bad-next-action.csv": "lead_id,nextActionAt\nA,soon\n",
    }
    out = {}
    for name, text in files.items():
        path = tmp_path / name
        path.write_text(text)
        out[name] = path
    return out


# (id, arguments after the vendor's connection options, text the one-line error must hold)
CLI_CASES: list[tuple[str, list[str], list[str]]] = [
    (
        "csv-no-identifier-column",
        ["chakra", "update", "tele_sales", "@no-id-column.csv"],
        ["line 1"],
    ),
    (
        "jsonl-broken-line",
        ["chakra", "update", "tele_sales", "@broken-line.jsonl"],
        ["line 3"],
    ),
    (
        "jsonl-bad-status",
        ["chakra", "update", "tele_sales", "@bad-status-line.jsonl"],
        ["line 2", "status"],
    ),
    (
        "csv-no-key-column",
        ["chakra", "update", "--key", "lead_id", "tele_sales", "@no-key-column.csv"],
        ["line 1", "lead_id"],
    ),
    ("csv-empty", ["chakra", "update", "tele_sales", "@empty.csv"], ["line 1"]),
    (
        "csv-bad-next-action",
        ["chakra", "update", "--key", "lead_id", "tele_sales", "@bad-next-action.csv"],
        ["line 2", "nextActionAt"],
    ),
    (
        "batch-size-zero",
        ["chakra", "update", "--batch-size", "0", "tele_sales", "@empty.csv"],
        ["batch-size"],
    ),
    (
        "zefort-attributes-not-json",
        ["zefort", "bulk-update", "--attributes", "{x", "--search", "{}"],
        ["attributes"],
    ),
    ("zefort-nothing-to-change", ["zefort", "bulk-update", "--search", "{}"], ["attributes"]),
    ("zefort-negative-timeout", ["zefort", "wait", "--timeout", "-1", "task_1"], ["timeout"]),
    (
        "chakra-base-url-no-scheme",
        ["chakra", "job", "j1", "--base-url", "api.chakrahq.com"],
        ["base_url"],
    ),
    ("chakra-empty-token", ["chakra", "job", "j1", "--token", ""], ["token"]),
]


@pytest.fixture
def cli_env(threaded_sim, monkeypatch) -> Simulator:
    """Point the command line at the threaded simulator through its environment variables."""
    monkeypatch.setenv("CHAKRA_BASE_URL", threaded_sim.chakra_url)
    monkeypatch.setenv("CHAKRA_TOKEN", threaded_sim.chakra_token)
    monkeypatch.setenv("ZEFORT_BASE_URL", threaded_sim.zefort_url)
    monkeypatch.setenv("ZEFORT_API_KEY", threaded_sim.zefort_api_key)
    return threaded_sim


@pytest.mark.parametrize(
    ("argv", "expected"),
    [(a, e) for _, a, e in CLI_CASES],
    ids=[i for i, _, _ in CLI_CASES],
)
def test_command_line_refuses_bad_input_with_status_2(cli_env, tmp_path, capsys, argv, expected):
    """The command line exits 2 with one line naming the field or line, and sends nothing."""
    files = _files(tmp_path)
    before = cli_env.records.total_requests
    args = [str(files[a[1:]]) if a.startswith("@") else a for a in argv]
    status = run(args)
    err = capsys.readouterr().err
    assert status == 2, err
    for text in expected:
        assert text in err, err
    assert "Traceback" not in err
    assert cli_env.records.total_requests == before
