"""The simulator's rate limits, Retry-After forms, redirects, oversized answers and 401 windows.

First what the simulator serves, read with a bare aiohttp client; then what the library does
behind it, asserted on what the server recorded.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import time

import aiohttp
import anyio
import pytest

from asyncbulk import (
    AsyncBulkError,
    AuthenticationError,
    ChakraClient,
    DeadlineExceededError,
    ProtocolError,
    RateLimitedError,
    RetryPolicy,
    ValidationError,
    ZefortClient,
)
from asyncbulk.testing import Fault, ManualClock, Simulator, TokenBucket

pytestmark = pytest.mark.anyio

TASK_ROUTE = "/api/tasks/{id}/"
#: A background job of the documentation's example data.
EXAMPLE_JOB = "19632427-908f-4bf3-a6f5-69b9a0bbfc63"


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def make_tasks(sim: Simulator, n: int) -> list[str]:
    return [
        sim.zefort.submit_bulk_update({"attributes": {"n": i}, "search": {}}).id for i in range(n)
    ]


def _seconds_until(http_date: str) -> float:
    return email.utils.parsedate_to_datetime(http_date).timestamp() - time.time()


# -- what the simulator serves ---------------------------------------------------------------


async def test_token_bucket_refuses_past_the_burst_per_credential() -> None:
    """Past its burst a credential gets 429 with a computed Retry-After; another has its own."""
    async with (
        Simulator(rate_limit=TokenBucket(1, burst=5)) as sim,
        aiohttp.ClientSession() as http,
    ):
        url = f"{sim.zefort_url}/api/tasks/"
        statuses = []
        for _ in range(7):
            async with http.get(url, headers=basic(sim.zefort_api_key)) as resp:
                statuses.append(resp.status)
                retry_after = resp.headers.get("Retry-After")
        async with http.get(url, headers=basic("another-key")) as resp:
            other = resp.status
    assert statuses == [200] * 5 + [429] * 2
    assert retry_after is not None
    assert 0 < float(retry_after) <= 1
    assert other == 401
    assert sim.records.faults["rate_limit"] == 2
    assert sim.rate_limit is not None
    assert sim.rate_limit.refused == 2


@pytest.mark.parametrize(
    ("form", "check"),
    [
        ("seconds", lambda v: v == "2"),
        (
            "http-date",
            lambda v: 0 <= email.utils.parsedate_to_datetime(v).timestamp() - time.time() <= 4,
        ),
        ("absent", lambda v: v is None),
        ("garbage", lambda v: v is not None and not v.replace(".", "").isdigit()),
        ("huge", lambda v: v == "86400"),
    ],
    ids=["seconds", "http-date", "absent", "garbage", "huge"],
)
async def test_every_retry_after_form(form: str, check: object) -> None:
    """A 429 fault writes Retry-After as seconds, an HTTP date, nothing, garbage or a day."""
    fault = Fault("status", retry_after=2, retry_after_form=form)  # type: ignore[arg-type]
    async with (
        Simulator(faults=[fault]) as sim,
        aiohttp.ClientSession() as http,
        http.get(f"{sim.zefort_url}/api/tasks/", headers=basic(sim.zefort_api_key)) as resp,
    ):
        status, value = resp.status, resp.headers.get("Retry-After")
    assert status == 429
    assert check(value)  # type: ignore[operator]


async def test_redirect_fault_points_at_the_other_origin() -> None:
    """A redirect fault answers 307 to the same path on the other vendor's server."""
    async with (
        Simulator(faults=[Fault("redirect", vendor="zefort")]) as sim,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(
            f"{sim.zefort_url}/api/tasks/?page=2",
            headers=basic(sim.zefort_api_key),
            allow_redirects=False,
        ) as resp:
            status, location = resp.status, resp.headers["Location"]
        elsewhere = sim.chakra_url
    assert status == 307
    assert location == f"{elsewhere}/api/tasks/?page=2"


async def test_oversized_fault_streams_until_the_client_stops() -> None:
    """An oversized answer goes out in chunks; a client that stops early stops it."""
    fault = Fault("oversized", size=50 * 1024 * 1024)
    async with Simulator(faults=[fault]) as sim, aiohttp.ClientSession() as http:
        async with http.get(
            f"{sim.zefort_url}/api/tasks/", headers=basic(sim.zefort_api_key)
        ) as resp:
            first = await resp.content.read(1024)
            resp.close()
        await anyio.sleep(0.2)
    assert first.startswith(b"[0,0,")
    assert sim.records.oversized_bytes < 50 * 1024 * 1024


async def test_rotation_refuses_everyone_for_its_window() -> None:
    """During the window even the new key gets 401; after it, only the new key works."""
    clock = ManualClock()
    async with Simulator(clock=clock) as sim, aiohttp.ClientSession() as http:
        url = f"{sim.zefort_url}/api/tasks/"
        old = sim.zefort_api_key
        sim.rotate_credentials(zefort_api_key="rotated-key-1", window=5)
        during = []
        for key in (old, "rotated-key-1"):
            async with http.get(url, headers=basic(key)) as resp:
                during.append(resp.status)
        clock.advance(5)
        after = []
        for key in (old, "rotated-key-1"):
            async with http.get(url, headers=basic(key)) as resp:
                after.append(resp.status)
    assert during == [401, 401]
    assert after == [401, 200]


# -- the library behind them -----------------------------------------------------------------


async def test_behind_a_token_bucket_the_client_uses_the_rate_with_few_429s() -> None:
    """Behind 50 requests/s, burst 20, the client learns the rate: few 429s, all work done."""
    bucket = TokenBucket(50, burst=20, retry_after=1.0)
    async with Simulator(rate_limit=bucket, keep_requests=True) as sim:
        ids = make_tasks(sim, 200)
        async with ZefortClient(
            sim.zefort_api_key,
            base_url=sim.zefort_url,
            retry=RetryPolicy(initial_wait=0.05, max_wait=1.0),
        ) as zefort:
            async with anyio.create_task_group() as tg:
                for worker in range(16):
                    tg.start_soon(_read_all, zefort, ids[worker::16])
            stats = zefort.stats
    ok = [r for r in sim.records.requests if r.status == 200]
    refused = sim.records.count(status=429)
    assert len(ok) == 200
    # The naive rule (every 429 stops every request for its Retry-After) met 20 % here.
    assert refused <= 0.15 * len(ok)
    assert stats.rate_limited == refused
    assert stats.send_rate is not None
    span = ok[-1].at - ok[0].at
    assert len(ok) / span >= 15  # generous: the server allows 50


async def _read_all(zefort: ZefortClient, ids: list[str]) -> None:
    for task_id in ids:
        await zefort.get_task(task_id)


async def test_a_day_long_retry_after_does_not_outlive_the_deadline() -> None:
    """Retry-After: 86400 on every poll: a call with a 0.5 s timeout ends by its deadline."""
    fault = Fault("status", retry_after_form="huge", vendor="zefort")
    async with Simulator(faults=[fault]) as sim:
        (task_id,) = make_tasks(sim, 1)
        async with ZefortClient(
            sim.zefort_api_key, base_url=sim.zefort_url, retry=RetryPolicy(budget=1e6)
        ) as zefort:
            start = anyio.current_time()
            with pytest.raises(DeadlineExceededError) as info:
                await zefort.get_task(task_id, timeout=0.5)
            took = anyio.current_time() - start
            # The host is paused for the day now: another call also ends at its deadline.
            with pytest.raises(DeadlineExceededError):
                await zefort.get_task(task_id, deadline=anyio.current_time() + 0.3)
    assert isinstance(info.value.__cause__, RateLimitedError)
    assert took < 0.5 + 1.0
    assert sim.records.count(status=429) == 1


async def test_sporadic_429s_do_not_stall_other_requests() -> None:
    """5 % random 429s (Retry-After: 1): the other requests go on, the host never pauses."""
    fault = Fault("status", rate=0.05, retry_after=1, vendor="zefort", route=TASK_ROUTE)
    async with Simulator(faults=[fault], seed=3) as sim:
        ids = make_tasks(sim, 120)
        async with ZefortClient(
            sim.zefort_api_key, base_url=sim.zefort_url, retry=RetryPolicy(max_wait=0.1)
        ) as zefort:
            async with anyio.create_task_group() as tg:
                for worker in range(12):
                    tg.start_soon(_read_all, zefort, ids[worker::12])
            stats = zefort.stats
    refusals = [r.at for r in sim.records.requests if r.status == 429]
    assert refusals
    # Requests answered within a second of each 429: the naive shared pause had none.
    for at in refusals[:3]:
        answered = [r for r in sim.records.requests if at < r.at < at + 0.9 and r.status == 200]
        assert len(answered) >= 5
    assert stats.host_pauses == 0
    assert sim.records.count(status=200, route=TASK_ROUTE) == 120


async def test_redirect_of_a_bulk_update_sends_nothing_elsewhere() -> None:
    """A 307 of a Zefort bulk update to another origin is refused, naming the Location."""
    fault = Fault("redirect", vendor="zefort", method="POST")
    async with Simulator(faults=[fault]) as sim:
        elsewhere = sim.chakra_url
        async with ZefortClient(sim.zefort_api_key, base_url=sim.zefort_url) as zefort:
            with pytest.raises(AsyncBulkError) as info:
                await zefort.bulk_update_contracts(
                    attributes={"end_date": "2023-02-15"}, search={"q_tags": "x"}
                )
    refusal = info.value if isinstance(info.value, ProtocolError) else info.value.__cause__
    assert isinstance(refusal, ProtocolError)
    assert f"Location '{elsewhere}/api/contracts/bulk_update/'" in str(refusal)
    assert sim.records.count(vendor="chakra") == 0
    assert sim.records.zefort_submissions == []


async def test_an_oversized_answer_is_cut_short() -> None:
    """A 100 MiB answer with a 1 MiB limit: ProtocolError, and the server could not send it all."""
    async with Simulator(faults=[Fault("oversized", vendor="zefort", times=1)]) as sim:
        (task_id,) = make_tasks(sim, 1)
        async with ZefortClient(
            sim.zefort_api_key, base_url=sim.zefort_url, max_response_bytes=1024 * 1024
        ) as zefort:
            with pytest.raises(ProtocolError, match="max_response_bytes"):
                await zefort.get_task(task_id)
            await anyio.sleep(0.2)
            task = await zefort.get_task(task_id)
    assert task.id == task_id
    assert sim.records.oversized_bytes < 50 * 1024 * 1024


async def test_a_fixed_key_ends_at_the_first_401() -> None:
    """With a fixed key, a rotation's 401 is an AuthenticationError, sent once."""
    async with Simulator() as sim:
        (task_id,) = make_tasks(sim, 1)
        sim.rotate_credentials(zefort_api_key="rotated-key-2", window=0)
        async with ZefortClient("zefort-sim-key", base_url=sim.zefort_url) as zefort:
            with pytest.raises(AuthenticationError):
                await zefort.get_task(task_id)
    assert sim.records.count(status=401) == 1


# -- credentials asked of a function ---------------------------------------------------------


class KeyStore:
    """Where a deployment keeps its current key: the client asks it, counting the calls."""

    def __init__(self, key: str) -> None:
        """Hold ``key`` as the current one."""
        self.key = key
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return self.key


async def test_a_rotated_key_is_picked_up_after_a_401() -> None:
    """After a rotation the cached key meets 401; the function is asked once more, and it works."""
    async with Simulator() as sim:
        ids = make_tasks(sim, 12)
        store = KeyStore(sim.zefort_api_key)
        async with ZefortClient(store, base_url=sim.zefort_url) as zefort:
            await zefort.get_task(ids[0])
            store.key = "rotated-key-3"
            sim.rotate_credentials(zefort_api_key="rotated-key-3")
            async with anyio.create_task_group() as tg:
                for task_id in ids[1:]:
                    tg.start_soon(zefort.get_task, task_id)
    # Asked on first use, then once for all the requests that met the same 401.
    assert store.calls == 2
    assert sim.records.count(status=200) == 12
    assert 1 <= sim.records.count(status=401) <= 11


async def test_an_async_credential_outlasts_a_401_window() -> None:
    """An async key function asked again in a 401 window gets the key that works after it."""
    clock = ManualClock()
    async with Simulator(clock=clock) as sim:
        (task_id,) = make_tasks(sim, 1)
        asked: list[str] = []

        async def token() -> str:
            if asked:
                # Fetching the new secret takes the rest of the window.
                clock.advance(1)
            asked.append("asked")
            return sim.zefort_api_key

        async with ZefortClient(token, base_url=sim.zefort_url) as zefort:
            await zefort.get_task(task_id)
            sim.rotate_credentials(zefort_api_key="rotated-key-4", window=1)
            task = await zefort.get_task(task_id)
    assert task.id == task_id
    assert len(asked) == 2
    assert [r.status for r in sim.records.requests if r.route == TASK_ROUTE] == [200, 401, 200]


async def test_a_second_401_after_asking_again_ends_the_call() -> None:
    """The function is asked once per call: a key still refused raises AuthenticationError."""
    async with Simulator() as sim:
        (task_id,) = make_tasks(sim, 1)
        store = KeyStore("a-key-the-server-never-had")
        async with ZefortClient(store, base_url=sim.zefort_url) as zefort:
            with pytest.raises(AuthenticationError):
                await zefort.get_task(task_id)
    assert store.calls == 2
    assert sim.records.count(status=401) == 2


async def test_credentials_from_a_function_never_reach_a_log_or_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every value the function returns is a secret: not in DEBUG logs, scrubbed from errors."""
    caplog.set_level(logging.DEBUG, logger="asyncbulk")
    async with Simulator() as sim:
        ids = make_tasks(sim, 2)
        first, second = "first-rotating-key-5", "second-rotating-key-6"
        sim.rotate_credentials(chakra_token=first, zefort_api_key=first)
        store = KeyStore(first)
        async with (
            ZefortClient(store, base_url=sim.zefort_url) as zefort,
            ChakraClient(store, base_url=sim.chakra_url) as chakra,
        ):
            await zefort.get_task(ids[0])
            await chakra.get_background_job(EXAMPLE_JOB)
            store.key = second
            sim.rotate_credentials(chakra_token=second, zefort_api_key=second)
            await zefort.get_task(ids[1])
            await chakra.get_background_job(EXAMPLE_JOB)
            scrubbed = str(ProtocolError(f"echoed {first} and {second}"))
    encoded = [base64.b64encode(f"{k}:".encode()).decode() for k in (first, second)]
    text = " ".join(r.getMessage() for r in caplog.records) + repr(zefort) + repr(chakra)
    assert caplog.records
    for secret in (first, second, *encoded):
        assert secret not in text
        assert secret not in scrubbed
    assert sim.records.count(status=401) == 2


async def test_a_function_returning_no_key_is_refused() -> None:
    """A credential function that returns an empty string is a ValidationError, nothing sent."""
    async with Simulator() as sim, ZefortClient(lambda: "", base_url=sim.zefort_url) as zefort:
        with pytest.raises(ValidationError, match="api_key"):
            await zefort.get_task("task_1")
    assert sim.records.total_requests == 0
