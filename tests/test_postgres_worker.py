"""`asyncbulk.postgres.Worker` on the real PostgreSQL and the Zefort simulator."""

# ruff: noqa: S608 -- the statements name the test's own schema, never outside input

from __future__ import annotations

import bisect
import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import asyncpg
import attrs
import pytest

from asyncbulk import ChakraClient, ValidationError, ZefortClient
from asyncbulk.postgres import ChakraPoller, PostgresStore, Worker, ZefortPoller
from asyncbulk.redis import RedisRateLimit
from asyncbulk.testing import Simulator

pytestmark = pytest.mark.anyio

PROCESS = Path(__file__).with_name("postgres_worker_process.py")
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "scaling_out.py"


@attrs.frozen
class Origin:
    """The origin the test's tasks are stored under."""

    vendor: str
    base_url: str
    account: str = "sim"


def make_tasks(sim: Simulator, count: int) -> list[str]:
    return [sim.zefort.submit_bulk_update({"attributes": {"n": n}}).id for n in range(count)]


async def db_rows(dsn: str, sql: str, *args):
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetch(sql, *args)
    finally:
        await connection.close()


def test_bad_worker_settings_name_the_field() -> None:
    """An expiry too close to the heartbeat interval raises ValidationError naming it."""
    store = PostgresStore("postgresql://127.0.0.1:1/test")
    with pytest.raises(ValidationError) as caught:
        Worker(store, ZefortPoller(ZefortClient("k")), heartbeat_interval=1, expiry=2)
    assert caught.value.field == "expiry"


async def test_a_worker_tracks_and_delivers_each_task_once(pg_dsn, pg_schema) -> None:
    """One worker polls the simulator over HTTP, records each finish and delivers each task once."""
    delivered: list[str] = []
    async with (
        Simulator(zefort_task_delay=(0.1, 0.6)) as sim,
        PostgresStore(pg_dsn, schema=pg_schema) as store,
        ZefortClient(sim.zefort_api_key, base_url=sim.zefort_url) as zefort,
    ):
        origin = Origin("zefort", sim.zefort_url)
        ids = make_tasks(sim, 40)
        await store.add_jobs(origin, "task", ids)
        stop = anyio.Event()

        async def deliver(delivery) -> None:
            assert delivery.result["backend_status"] == "done"
            delivered.append(delivery.key.id)
            if len(delivered) == len(ids):
                stop.set()

        worker = Worker(
            store,
            ZefortPoller(zefort),
            origin=origin,
            deliver=deliver,
            heartbeat_interval=0.2,
            expiry=2,
            poll_interval=0.2,
        )
        with anyio.fail_after(60):
            await worker.run(stop=stop)
        polls = sim.records.count(route="/api/tasks/{id}/")
    stats = worker.statistics()
    statements = store.statistics()
    print(stats, statements)
    assert sorted(delivered) == sorted(ids)
    assert (stats.claimed, stats.finished, stats.refused, stats.delivered) == (40, 40, 0, 40)
    assert stats.polls == polls, "every poll is an HTTP request to the simulator"
    assert (
        statements.claims + statements.finishes + statements.deliveries + statements.heartbeats
        == statements.statements - statements.journal
    )
    assert statements.finishes <= stats.polls / 10, "finishes are recorded in batches"
    rows = await db_rows(pg_dsn, f'SELECT count(*) FROM "{pg_schema}".workers')
    assert rows[0][0] == 0, "a clean stop unregisters the worker"


async def test_a_clean_stop_releases_unfinished_jobs(pg_dsn, pg_schema) -> None:
    """Stopping a worker frees the jobs it had not finished, for the others to claim at once."""
    async with (
        Simulator(zefort_task_delay=3600) as sim,
        PostgresStore(pg_dsn, schema=pg_schema) as store,
        ZefortClient(sim.zefort_api_key, base_url=sim.zefort_url) as zefort,
    ):
        ids = make_tasks(sim, 5)
        await store.add_jobs(Origin("zefort", sim.zefort_url), "task", ids)
        stop = anyio.Event()
        worker = Worker(store, ZefortPoller(zefort), heartbeat_interval=0.1, expiry=1)
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: worker.run(stop=stop))
            with anyio.fail_after(30):
                while worker.statistics().polls < 5:  # noqa: ASYNC110 -- a statistics snapshot
                    await anyio.sleep(0.05)
            stop.set()
        await store.register_worker("next")
        assert len(await store.claim("next", limit=10)) == 5


async def test_polls_never_touch_the_database(pg_dsn, pg_schema) -> None:
    """Tracking 200 running tasks costs 3 statements a heartbeat, however many polls are sent."""
    async with (
        Simulator(zefort_task_delay=3600) as sim,
        PostgresStore(pg_dsn, schema=pg_schema) as store,
        ZefortClient(sim.zefort_api_key, base_url=sim.zefort_url) as zefort,
    ):
        await store.add_jobs(Origin("zefort", sim.zefort_url), "task", make_tasks(sim, 200))
        stop = anyio.Event()
        worker = Worker(
            store, ZefortPoller(zefort), heartbeat_interval=0.5, expiry=2, poll_interval=0.2
        )
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: worker.run(stop=stop))
            with anyio.fail_after(60):
                while worker.statistics().polls < 1000:  # noqa: ASYNC110 -- a statistics snapshot
                    await anyio.sleep(0.05)
            stop.set()
        polls = sim.records.count(route="/api/tasks/{id}/")
    stats = store.statistics()
    rounds = stats.claims
    print(
        f"{polls} polls of 200 tasks, {stats.statements - stats.journal} statements: "
        f"{(stats.statements - stats.journal) / polls:.4f} per tracked task per poll round"
    )
    assert worker.statistics().polls == polls >= 1000
    assert (stats.finishes, stats.deliveries) == (0, 0)
    assert stats.statements - stats.journal == stats.claims + stats.heartbeats
    # A round is a heartbeat, a sweep and a claim; a stop may cut the last one short.
    assert stats.heartbeats <= 2 * rounds + 4, "register, release, two a round"


async def test_a_swept_worker_drops_its_jobs_and_starts_again(pg_dsn, pg_schema) -> None:
    """A worker swept as if stalled learns it at its next heartbeat; every task finishes once."""
    async with (
        Simulator(zefort_task_delay=1.5) as sim,
        PostgresStore(pg_dsn, schema=pg_schema) as store,
        ZefortClient(sim.zefort_api_key, base_url=sim.zefort_url) as zefort,
    ):
        await store.add_jobs(Origin("zefort", sim.zefort_url), "task", make_tasks(sim, 10))
        settings = {"heartbeat_interval": 0.2, "expiry": 1, "poll_interval": 0.1}
        first = Worker(store, ZefortPoller(zefort), worker_id="first", **settings)
        second = Worker(store, ZefortPoller(zefort), worker_id="second", **settings)
        stop = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: first.run(stop=stop))
            with anyio.fail_after(30):
                while first.statistics().owned < 10:  # noqa: ASYNC110 -- a statistics snapshot
                    await anyio.sleep(0.02)
            await db_rows(
                pg_dsn,
                f"UPDATE \"{pg_schema}\".workers SET last_seen = now() - interval '1 hour' "
                "WHERE id = 'first'",
            )
            assert (await store.sweep(expiry=1)).workers == ("first",)
            group.start_soon(lambda: second.run(stop=stop))
            with anyio.fail_after(30):
                await wait_for(
                    pg_dsn,
                    f'SELECT count(finished_at) FROM "{pg_schema}".jobs',
                    lambda rows: rows[0][0] == 10,
                )
            stop.set()
    rows = await db_rows(pg_dsn, f'SELECT finished_by, epoch FROM "{pg_schema}".jobs')
    assert first.statistics().swept == 1
    assert first.statistics().finished + second.statistics().finished == 10
    assert all(r["finished_by"] in {"first", "second"} and r["epoch"] == 2 for r in rows)


async def wait_for(dsn: str, sql: str, satisfied) -> list:
    """Read ``sql`` every 50 ms until ``satisfied(rows)``; the database has no event to wait on."""
    while not satisfied(rows := await db_rows(dsn, sql)):  # noqa: ASYNC110
        await anyio.sleep(0.05)
    return rows


async def stop_cleanly(process) -> dict:
    """SIGTERM a worker process; it must exit 0 and print its statistics."""
    process.send_signal(signal.SIGTERM)
    assert process.stdout is not None
    text = b"".join([chunk async for chunk in process.stdout]).decode()
    assert await process.wait() == 0, text
    return json.loads(text.splitlines()[-1])


def handled_events(tmp_path: Path) -> dict[str, list[dict]]:
    """Every hand-over to a delivery hook, by task id, in the order each process wrote them."""
    handled = collections.defaultdict(list)
    for path in sorted(tmp_path.glob("events-*.jsonl")):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            handled[event["id"]].append(event)
    return handled


async def run_kill_test(
    dsn: str, schema: str, tmp_path: Path, count: int, delay: tuple[float, float]
) -> None:
    """Four worker processes, one SIGKILLed mid-run: nothing lost, finished once, delivered once.

    The exception is the stated window: a job the killed worker handed to its hook but had not
    acknowledged is delivered again by another worker.
    """
    jobs = f'"{schema}".jobs'
    names = [f"w{n}" for n in range(4)]
    async with (
        Simulator(zefort_task_delay=delay, seed=16) as sim,
        PostgresStore(dsn, schema=schema) as store,
    ):
        ids = make_tasks(sim, count)
        await store.add_jobs(Origin("zefort", sim.zefort_url), "task", ids)
        processes = {
            name: await anyio.open_process(
                [
                    *(sys.executable, str(PROCESS), dsn, schema),
                    *(sim.zefort_url, sim.zefort_api_key, name, tmp_path / f"events-{name}.jsonl"),
                ],
                stderr=subprocess.STDOUT,
            )
            for name in names
        }
        try:
            with anyio.fail_after(120):
                rows = await wait_for(
                    dsn,
                    "SELECT owner, count(*) FILTER (WHERE finished_at IS NULL) AS owned, "
                    f"count(finished_at) AS done FROM {jobs} GROUP BY owner",
                    lambda rows: (
                        sum(r["done"] for r in rows) >= count // 3
                        and any(r["owner"] and r["owned"] for r in rows)
                    ),
                )
                victim = max((r for r in rows if r["owner"]), key=lambda r: r["owned"])["owner"]
                processes[victim].send_signal(signal.SIGKILL)
                killed_at = time.time()
                await processes[victim].wait()
                orphans = {
                    r["id"]
                    for r in await db_rows(
                        dsn,
                        f"SELECT id FROM {jobs} WHERE owner = $1 AND finished_at IS NULL",
                        victim,
                    )
                }
                await wait_for(
                    dsn,
                    f"SELECT count(delivered_at) FROM {jobs}",
                    lambda rows: rows[0][0] == count,
                )
                outputs = [await stop_cleanly(p) for n, p in processes.items() if n != victim]
        finally:
            for process in processes.values():
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        polls = [r for r in sim.records.requests if r.at > killed_at]
    rows = await db_rows(dsn, f"SELECT finished_by, delivered_at FROM {jobs}")
    assert len(rows) == count
    assert all(r["finished_by"] and r["delivered_at"] for r in rows), "none lost"
    finished_by = collections.Counter(r["finished_by"] for r in rows)
    recorded = sum(o["finished"] for o in outputs)
    assert recorded == count - finished_by[victim], "no finish recorded twice"
    workers = await db_rows(dsn, f'SELECT id FROM "{schema}".workers')
    assert workers == [], "the survivors stopped cleanly"
    handled = handled_events(tmp_path)
    assert set(handled) == set(ids)
    twice = {job_id: events for job_id, events in handled.items() if len(events) > 1}
    for events in twice.values():
        attempts = sorted((e["attempt"], e["worker"] == victim) for e in events)
        assert attempts == [(1, True), (2, False)], events
    again: dict[str, float] = {}
    for poll in polls:
        job_id = poll.path.rstrip("/").rsplit("/", 1)[-1]
        again.setdefault(job_id, poll.at - killed_at)
    assert orphans <= set(again), "every job of the killed worker was polled again"
    print(
        f"{count} tasks, {victim} killed, {len(orphans)} taken over, the last polled again "
        f"{max(again[o] for o in orphans):.1f} s after the kill, {len(twice)} delivered twice "
        f"(window), finishes by worker {dict(finished_by)}, statements per poll "
        f"{[round(o['statements'] / max(1, o['polls']), 3) for o in outputs]}"
    )


async def test_four_workers_one_killed(pg_dsn, pg_schema, tmp_path) -> None:
    """300 tasks, 4 worker processes, one SIGKILLed mid-run: 0 lost, 0 finished twice."""
    await run_kill_test(pg_dsn, pg_schema, tmp_path, 300, (0.5, 4.0))


@pytest.mark.slow
async def test_four_workers_one_killed_at_scale(pg_dsn, pg_schema, tmp_path) -> None:
    """3,000 tasks of 2-15 s, 4 worker processes, one SIGKILLed mid-run: 0 lost, 0 twice."""
    await run_kill_test(pg_dsn, pg_schema, tmp_path, 3000, (2.0, 15.0))


async def test_workers_keep_to_a_limit_shared_through_redis(
    pg_dsn, pg_schema, redis_address, redis_prefix
) -> None:
    """Two workers polling through one RedisRateLimit of 20/s: no second above 22 polls."""
    async with (
        Simulator(zefort_task_delay=3600) as sim,
        PostgresStore(pg_dsn, schema=pg_schema) as store,
        ZefortClient(sim.zefort_api_key, base_url=sim.zefort_url) as zefort,
    ):
        origin = Origin("zefort", sim.zefort_url)
        await store.add_jobs(origin, "task", make_tasks(sim, 60))
        stop = anyio.Event()
        limits = [
            RedisRateLimit(
                redis_address,
                per_second=20,
                vendor="zefort",
                account=origin.account,
                key_prefix=redis_prefix,
            )
            for _ in range(2)
        ]
        workers = [
            Worker(
                store,
                ZefortPoller(zefort, limiter=limit),
                claim_batch=30,
                heartbeat_interval=0.2,
                expiry=2,
                poll_interval=0.1,
            )
            for limit in limits
        ]
        try:
            async with anyio.create_task_group() as group:
                for worker in workers:
                    group.start_soon(lambda w=worker: w.run(stop=stop))
                await anyio.sleep(3)
                stop.set()
        finally:
            for limit in limits:
                await limit.aclose()
        arrivals = sorted(r.at for r in sim.records.requests if r.route == "/api/tasks/{id}/")
    busiest = max(bisect.bisect_left(arrivals, t + 1.0) - i for i, t in enumerate(arrivals))
    print(f"{len(arrivals)} polls in 3 s, busiest second {busiest}")
    assert all(worker.statistics().polls > 0 for worker in workers)
    assert busiest <= 22


async def test_the_scaling_out_example_runs(pg_dsn, pg_schema, redis_address, redis_prefix) -> None:
    """examples/scaling_out.py delivers each of its 100 tasks once, with two workers."""
    env = {
        **os.environ,
        "ASYNCBULK_POSTGRES": pg_dsn,
        "ASYNCBULK_REDIS": redis_address,
        "ASYNCBULK_SCHEMA": pg_schema,
        "ASYNCBULK_REDIS_PREFIX": redis_prefix,
    }
    with anyio.fail_after(120):
        process = await anyio.run_process(
            [sys.executable, str(EXAMPLE)], check=False, env=env, stderr=subprocess.STDOUT
        )
    out = process.stdout.decode()
    assert process.returncode == 0, out
    assert "100 of 100 tasks delivered, each once: True" in out


async def test_a_worker_tracks_chakra_jobs_and_delivers_each_once(pg_dsn, pg_schema) -> None:
    """ChakraPoller: each background job is polled over HTTP until finished, delivered once."""
    delivered: list[dict] = []
    async with (
        Simulator(chakra_entries_per_second=4) as sim,
        PostgresStore(pg_dsn, schema=pg_schema) as store,
        ChakraClient(sim.chakra_token, base_url=sim.chakra_url) as chakra,
    ):
        sim.chakra.add_procedure("leads", primary_key="lead_id", attributes=["city"])
        for i in range(10):
            sim.chakra.add_process("leads", {"lead_id": f"L{i}"}, id=f"pid-{i}")
        updates = [{"id": f"pid-{i}", "data": {"city": "Goa"}} for i in range(10)]
        submission = await chakra.bulk_update_processes("leads", updates, batch_size=2)
        ids = [job.id for job in submission.jobs]
        origin = Origin("chakra", sim.chakra_url)
        await store.add_jobs(origin, "job", ids)
        stop = anyio.Event()

        async def deliver(delivery) -> None:
            delivered.append(delivery.result)
            if len(delivered) == len(ids):
                stop.set()

        worker = Worker(
            store,
            ChakraPoller(chakra),
            origin=origin,
            deliver=deliver,
            heartbeat_interval=0.2,
            expiry=2,
            poll_interval=0.1,
        )
        with anyio.fail_after(60):
            await worker.run(stop=stop)
        polls = sim.records.count(route="/v1/ext/background-job/{job_id}")
    stats = worker.statistics()
    assert sorted(r["id"] for r in delivered) == sorted(ids)
    assert all(r["status_counts"] == {"SUCCESS": 2} for r in delivered)
    assert (stats.finished, stats.refused, stats.delivered) == (5, 0, 5)
    assert stats.polls == polls > 5, "jobs were polled while running, each poll one request"


def test_a_poller_limiter_wait_is_checked() -> None:
    """A limiter wait that is not a positive number of seconds names the field."""
    with pytest.raises(ValidationError) as caught:
        ChakraPoller(ChakraClient("t" * 10), limiter_wait=0)
    assert caught.value.field == "limiter_wait"
