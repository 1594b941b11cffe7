"""The simulator's rate limits, Retry-After forms, redirects, oversized answers and 401 windows.

First what the simulator serves, read with a bare aiohttp client; then what the library does
behind it, asserted on what the server recorded.
"""

from __future__ import annotations

import base64
import email.utils
import time

import aiohttp
import anyio
import pytest

from asyncbulk import (
    AsyncBulkError,
    AuthenticationError,
    DeadlineExceededError,
    ProtocolError,
    RateLimitedError,
    RetryPolicy,
    ZefortClient,
)
from asyncbulk.testing import Fault, ManualClock, Simulator, TokenBucket

pytestmark = pytest.mark.anyio

TASK_ROUTE = "/api/tasks/{id}/"


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
                await zefort._session.request("GET", f"/api/tasks/{task_id}/", timeout=0.5)
            took = anyio.current_time() - start
            # The host is paused for the day now: another call also ends at its deadline.
            with pytest.raises(DeadlineExceededError):
                await zefort._session.request("GET", "/api/tasks/", timeout=0.3)
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
