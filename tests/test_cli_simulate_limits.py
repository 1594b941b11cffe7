"""`asyncbulk simulate --rate-limit` and `--retry-after-form`, through a subprocess."""

from __future__ import annotations

import email.utils
import json
import signal
import sys

import aiohttp
import anyio
import pytest
from test_cli import EXAMPLE_JOB

pytestmark = pytest.mark.anyio


async def _serve(*options: str) -> tuple[anyio.abc.Process, dict[str, str]]:
    command = [sys.executable, "-m", "asyncbulk", "simulate", *options, "--port", "0", "--json"]
    process = await anyio.open_process(command)
    line = b""
    assert process.stdout is not None
    async for chunk in process.stdout:
        line += chunk
        if b"\n" in line:
            break
    return process, json.loads(line)


async def _statuses(settings: dict[str, str], count: int) -> list[tuple[int, str | None]]:
    url = f"{settings['chakra_base_url']}/v1/ext/background-job/{EXAMPLE_JOB}"
    headers = {"Authorization": f"Bearer {settings['chakra_token']}"}
    seen = []
    async with aiohttp.ClientSession() as http:
        for _ in range(count):
            async with http.get(url, headers=headers) as response:
                seen.append((response.status, response.headers.get("Retry-After")))
    return seen


@pytest.mark.parametrize(
    ("options", "check"),
    [
        (["--rate-limit", "0.01/2"], lambda value: float(value) > 0),
        (
            ["--rate-limit", "0.01/2", "--retry-after-form", "http-date"],
            lambda value: email.utils.parsedate_to_datetime(value) is not None,
        ),
        (["--rate-limit", "0.01/2", "--retry-after-form", "absent"], lambda value: value is None),
    ],
    ids=["seconds", "http-date", "absent"],
)
async def test_rate_limit_answers_429_past_the_burst(options, check) -> None:
    """RATE/BURST lets BURST requests through, then 429s in the Retry-After form asked for."""
    with anyio.fail_after(30):
        process, settings = await _serve(*options)
        async with process:
            try:
                seen = await _statuses(settings, 3)
            finally:
                process.send_signal(signal.SIGINT)
                assert await process.wait() == 0
    assert [status for status, _ in seen] == [200, 200, 429]
    assert check(seen[2][1])


async def test_a_429_fault_takes_the_retry_after_form() -> None:
    """--rate-429 with --retry-after-form huge sends a day-long Retry-After."""
    with anyio.fail_after(30):
        process, settings = await _serve("--rate-429", "1", "--retry-after-form", "huge")
        async with process:
            try:
                seen = await _statuses(settings, 1)
            finally:
                process.send_signal(signal.SIGINT)
                assert await process.wait() == 0
    assert seen == [(429, "86400")]


@pytest.mark.parametrize("value", ["fast", "0/1", "5/0", "5/x"])
async def test_a_bad_rate_limit_is_a_usage_error(value: str) -> None:
    """A rate limit that does not read as RATE[/BURST] exits 2 naming the option."""
    result = await anyio.run_process(
        [sys.executable, "-m", "asyncbulk", "simulate", "--rate-limit", value], check=False
    )
    assert result.returncode == 2
    assert "--rate-limit" in result.stderr.decode()
