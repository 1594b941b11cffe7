"""``asyncbulk worker`` in a subprocess, against the real PostgreSQL and Redis and the simulator."""

# ruff: noqa: S608 -- the statements name the test's own schema, never outside input

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap

import anyio
import asyncpg
import pytest

from asyncbulk import ZefortClient
from asyncbulk.postgres import PostgresJournal
from asyncbulk.testing import Simulator

pytestmark = pytest.mark.anyio

HOOK = textwrap.dedent(
    """
    import json
    import os

    import anyio


    def _event(delivery, event):
        with open(os.environ["HOOK_EVENTS"], "a") as events:
            events.write(json.dumps({"id": delivery.key.id, "event": event}) + "\\n")


    async def deliver(delivery):
        _event(delivery, "start")
        await anyio.sleep(float(os.environ["HOOK_SECONDS"]))
        _event(delivery, "end")
    """
)


def read_events(path) -> list[dict]:
    """The hook's events so far."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_sigterm_finishes_deliveries_in_flight_and_releases_every_lease(
    tmp_path, pg_dsn, pg_schema, redis_address, redis_prefix
) -> None:
    """SIGTERM mid-delivery: the hook's calls complete and are acknowledged, every claim freed."""
    (tmp_path / "hookmod.py").write_text(HOOK)
    events = tmp_path / "events.jsonl"

    def delay(body) -> float:
        # Two tasks finish at once; four run on for an hour, claimed and never finished.
        return 0.0 if body["attributes"]["n"] < 2 else 3600.0

    async with (
        Simulator(zefort_task_delay=delay) as sim,
        PostgresJournal(pg_dsn, schema=pg_schema) as journal,
        ZefortClient(sim.zefort_api_key, base_url=sim.zefort_url) as replica,
    ):
        ids = [sim.zefort.submit_bulk_update({"attributes": {"n": n}}).id for n in range(6)]
        # A replica records what it submitted; the worker of the same account takes it over.
        await journal.add_jobs(replica._origin, "task", ids)
        command = [
            sys.executable,
            "-m",
            "asyncbulk",
            "worker",
            "--postgres",
            pg_dsn,
            "--schema",
            pg_schema,
            "--redis",
            redis_address,
            "--redis-prefix",
            redis_prefix,
            "--rate",
            "50",
            "--hook",
            "hookmod:deliver",
            "--worker-id",
            "cli-1",
            "--heartbeat",
            "0.2",
            "--expiry",
            "2",
            "--poll-interval",
            "0.2",
            "--json",
        ]
        env = {
            **os.environ,
            "ZEFORT_API_KEY": sim.zefort_api_key,
            "ZEFORT_BASE_URL": sim.zefort_url,
            "HOOK_EVENTS": str(events),
            "HOOK_SECONDS": "1.0",
        }
        log, report = tmp_path / "stderr.txt", tmp_path / "stdout.json"
        with log.open("wb") as stderr, report.open("wb") as stdout:
            process = await anyio.open_process(
                command, cwd=tmp_path, env=env, stdout=stdout, stderr=stderr
            )
        try:
            with anyio.fail_after(60):
                while not read_events(events):  # noqa: ASYNC110 -- another process's file
                    await anyio.sleep(0.05)
            owned = await fetch(
                pg_dsn, f'SELECT id FROM "{pg_schema}".jobs WHERE owner = $1', "cli-1"
            )
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                status = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
            await process.aclose()
    assert status == 0, log.read_text()
    assert "SIGTERM" in log.read_text()
    assert len(owned) == 6, "the worker held a lease on every task before SIGTERM"
    seen = read_events(events)
    started = {e["id"] for e in seen if e["event"] == "start"}
    ended = {e["id"] for e in seen if e["event"] == "end"}
    assert started, "a delivery was in flight when SIGTERM came"
    assert started == ended, "every delivery in flight ran to its end"
    rows = await fetch(
        pg_dsn,
        f"SELECT id, owner, finished_at IS NOT NULL AS finished, delivered_at IS NOT NULL AS "
        f'delivered FROM "{pg_schema}".jobs',
    )
    assert all(row["owner"] is None for row in rows if not row["finished"]), "leases released"
    assert {row["id"] for row in rows if row["delivered"]} == started, "each delivery acknowledged"
    assert sum(not row["finished"] for row in rows) == 4
    assert await fetch(pg_dsn, f'SELECT id FROM "{pg_schema}".workers') == []
    stats = json.loads(report.read_text())
    assert (stats["worker_id"], stats["delivered"], stats["claimed"]) == ("cli-1", len(started), 6)


UNREACHABLE = "postgresql://postgres:pw-0123456789@127.0.0.1:1/test"


@pytest.mark.parametrize(
    ("hook", "dsn", "extra", "named"),
    [
        pytest.param("nosuchmodule:deliver", UNREACHABLE, [], "--hook", id="missing-hook"),
        pytest.param("hookmod:nothing", UNREACHABLE, [], "--hook", id="missing-function"),
        pytest.param("hookmod:_event", UNREACHABLE, [], "--hook", id="not-async"),
        pytest.param("hookmod:deliver", UNREACHABLE, [], "--postgres", id="unreachable-dsn"),
        pytest.param(
            "hookmod:deliver", "mysql://root:pw-0123456789@host/db", [], "--postgres", id="bad-dsn"
        ),
        pytest.param(
            "hookmod:deliver",
            UNREACHABLE,
            ["--redis", "redis://:pw-0123456789@127.0.0.1:1/0"],
            "--redis",
            id="unreachable-redis",
        ),
    ],
)
async def test_a_missing_hook_or_a_bad_dsn_exits_2_with_one_line(
    tmp_path, hook, dsn, extra, named
) -> None:
    """The mistake is named in one line on stderr, status 2; no password is ever shown."""
    (tmp_path / "hookmod.py").write_text(HOOK)
    result = await anyio.run_process(
        [sys.executable, "-m", "asyncbulk", "worker", "--postgres", dsn, "--hook", hook, *extra],
        cwd=tmp_path,
        env={**os.environ, "ZEFORT_API_KEY": "a-zefort-key-0123"},
        check=False,
    )
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"asyncbulk: error: {named}: ")
    assert "pw-0123456789" not in lines[0]
    assert "a-zefort-key-0123" not in lines[0]
    assert result.stdout == b""


async def fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """Rows read by a connection of the test's own."""
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetch(sql, *args)
    finally:
        await connection.close()
