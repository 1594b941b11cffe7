"""Scaling out (issue 16): workers sharing tracking through PostgreSQL and a limit in Redis.

    python -m benchmarks.scaleout                     # the full figures: 20,000 tasks, 10 runs
    python -m benchmarks.scaleout --tasks 2000 --runs 3 --limit-runs 2

Three measurements, against the real PostgreSQL and Redis (``ASYNCBULK_POSTGRES``,
``ASYNCBULK_REDIS``; loopback by default) and the simulator, each in a schema or key prefix of
its own, removed afterwards:

- **kill**: ``--tasks`` Zefort tasks tracked by 4 ``asyncbulk worker`` processes (the shipped
  command, default settings), one SIGKILLed once a third are finished; per run: tasks lost,
  finishes recorded twice (counted by a trigger on every write of a finish), seconds until the
  last of the dead worker's tasks was polled again (at the server), tasks delivered twice and
  how many of those are the stated window (handed to the dead worker's hook, not acknowledged);
- **limit**: 4 processes polling as fast as a `RedisRateLimit` of 50/s shared between them lets
  them, for 10 s: the busiest one-second window of requests at the server;
- **statements**: 1, 2 and 4 workers tracking 2,000 running tasks: database statements per
  tracked job per poll round, and polls per second.

Each figure is printed as the median and range over its runs.
"""

# ruff: noqa: S608 -- every statement names the benchmark's own schema, never outside input

from __future__ import annotations

import argparse
import bisect
import collections
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import asyncpg

from asyncbulk import ZefortClient
from asyncbulk.postgres import PostgresStore, Worker, ZefortPoller
from asyncbulk.redis import RedisRateLimit
from asyncbulk.testing import Simulator

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from asyncbulk.postgres import Delivery

POSTGRES = os.environ.get("ASYNCBULK_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("ASYNCBULK_REDIS", "redis://127.0.0.1:6379/0")
TASK_ROUTE = "/api/tasks/{id}/"
WORKERS = 4

# Every write of a finish, as the database saw it: a finish recorded twice shows as two rows.
AUDIT = """
CREATE TABLE {s}.finish_log (id text NOT NULL, finished_by text, epoch bigint);
CREATE FUNCTION {s}.log_finish() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {s}.finish_log VALUES (NEW.id, NEW.finished_by, NEW.finished_epoch);
    RETURN NEW;
END $$;
CREATE TRIGGER log_finish AFTER UPDATE OF finished_at ON {s}.jobs FOR EACH ROW
    WHEN (NEW.finished_at IS DISTINCT FROM OLD.finished_at) EXECUTE FUNCTION {s}.log_finish();
"""


async def deliver(delivery: Delivery) -> None:
    """The workers' hook: one line per hand-over, written before the acknowledgement."""
    line = {"id": delivery.key.id, "attempt": delivery.attempt, "worker": os.environ["WORKER"]}
    async with await anyio.open_file(os.environ["SCALEOUT_EVENTS"], "a") as events:
        await events.write(json.dumps(line) + "\n")


# -- kill ----------------------------------------------------------------------------------------


async def kill_run(seed: int, count: int, work: Path) -> dict[str, Any]:
    """One run of the kill measurement."""
    schema = f"asyncbulk_bench_{uuid.uuid4().hex[:12]}"
    jobs = f'"{schema}".jobs'
    async with (
        Simulator(zefort_task_delay=(1.0, 10.0), seed=seed) as sim,
        PostgresStore(POSTGRES, schema=schema) as store,
        ZefortClient(sim.zefort_api_key, base_url=sim.zefort_url) as replica,
    ):
        await script(AUDIT.format(s=f'"{schema}"'))
        ids = [sim.zefort.submit_bulk_update({"attributes": {"n": n}}).id for n in range(count)]
        await store.add_jobs(replica._origin, "task", ids)  # noqa: SLF001 -- the replica's stamp
        names = [f"w{n}" for n in range(WORKERS)]
        processes = {name: await start_worker(sim, schema, name, work) for name in names}
        started = time.monotonic()
        try:
            rows = await wait_for(
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
                for r in await sql(
                    f"SELECT id FROM {jobs} WHERE owner = $1 AND finished_at IS NULL",
                    victim,
                )
            }
            await wait_for(
                f"SELECT count(delivered_at) FROM {jobs}",
                lambda rows: rows[0][0] == count,
                within=600,
            )
            elapsed = time.monotonic() - started
            for name, process in processes.items():
                if name != victim and process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            statuses = {name: await process.wait() for name, process in processes.items()}
        finally:
            for process in processes.values():
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        polls_after = [r for r in sim.records.requests if r.at > killed_at]
        polls = sim.records.count(route=TASK_ROUTE)
        finishes = await sql(f'SELECT id FROM "{schema}".finish_log')
        delivered = await sql(f"SELECT count(delivered_at) FROM {jobs}")
        leftover = await sql(f'SELECT count(*) FROM "{schema}".workers')
    await script(f'DROP SCHEMA "{schema}" CASCADE')
    again: dict[str, float] = {}
    for poll in polls_after:
        again.setdefault(poll.path.rstrip("/").rsplit("/", 1)[-1], poll.at - killed_at)
    handled = events(work)
    twice = {i: e for i, e in handled.items() if len(e) > 1}
    window = sum(any(e["worker"] == victim for e in each) for each in twice.values())
    return {
        "lost": count - len(set(handled) & set(ids)),
        "undelivered_in_db": count - delivered[0][0],
        "finished_twice": len(finishes) - len({r["id"] for r in finishes}),
        "taken_over": len(orphans),
        "repolled_within_s": max((again.get(o, float("inf")) for o in orphans), default=0.0),
        "delivered_twice": len(twice),
        "delivered_twice_in_window": window,
        "workers_left_registered": leftover[0][0],
        # A survivor that did not exit 0 on SIGTERM; its stderr is in the work directory.
        "survivors_failed": sorted(n for n, code in statuses.items() if n != victim and code),
        "seconds": elapsed,
        "polls": polls,
    }


async def start_worker(sim: Simulator, schema: str, name: str, work: Path) -> Any:
    """One ``asyncbulk worker`` process with the command's default settings."""
    with (work / f"stderr-{name}.txt").open("ab") as stderr:
        return await anyio.open_process(
            [
                *(sys.executable, "-m", "asyncbulk", "worker", "--postgres", POSTGRES),
                *("--schema", schema, "--worker-id", name, "--json"),
                *("--hook", "benchmarks.scaleout:deliver"),
            ],
            env={
                **os.environ,
                "ZEFORT_API_KEY": sim.zefort_api_key,
                "ZEFORT_BASE_URL": sim.zefort_url,
                "SCALEOUT_EVENTS": str(work / f"events-{name}.jsonl"),
                "WORKER": name,
            },
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def events(work: Path) -> dict[str, list[dict[str, Any]]]:
    """Every hand-over to a hook, by task id; the files are emptied for the next run."""
    handled: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for path in sorted(work.glob("events-*.jsonl")):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            handled[event["id"]].append(event)
        path.unlink()
    return handled


# -- limit ---------------------------------------------------------------------------------------


async def limit_run(seed: int, seconds: float, rate: float) -> dict[str, Any]:
    """One run of the shared-limit measurement: 4 processes, one RedisRateLimit."""
    prefix = f"asyncbulk-bench-{uuid.uuid4().hex[:12]}"
    async with Simulator(zefort_task_delay=3600, seed=seed) as sim:
        task = sim.zefort.submit_bulk_update({"attributes": {"n": 0}})
        args = [sim.zefort_url, sim.zefort_api_key, task.id, prefix, str(seconds), str(rate)]
        async with anyio.create_task_group() as group:
            for _ in range(WORKERS):
                group.start_soon(
                    lambda: anyio.run_process(
                        [sys.executable, "-m", "benchmarks.scaleout", "--child-limit", *args],
                        stderr=subprocess.STDOUT,
                    )
                )
        arrivals = sorted(r.at for r in sim.records.requests if r.route == TASK_ROUTE)
    busiest = max(bisect.bisect_left(arrivals, t + 1.0) - i for i, t in enumerate(arrivals))
    span = arrivals[-1] - arrivals[0]
    return {
        "busiest_second": busiest,
        "requests": len(arrivals),
        "per_second": len(arrivals) / span,
    }


async def limit_child(args: Sequence[str]) -> None:
    """One process of the limit measurement: 8 loops polling as fast as the limit lets them."""
    url, key, task_id, prefix, seconds, rate = args
    limit = RedisRateLimit(
        REDIS, per_second=float(rate), vendor="zefort", account="bench", key_prefix=prefix
    )
    ends = anyio.current_time() + float(seconds)
    async with ZefortClient(key, base_url=url) as zefort:
        poller = ZefortPoller(zefort, limiter=limit)

        async def loop() -> None:
            claim = _claim(task_id)
            while anyio.current_time() < ends:
                try:
                    await poller.poll(claim)
                except TimeoutError:
                    return

        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(loop)
    await limit.aclose()


def _claim(task_id: str) -> Any:
    from asyncbulk.postgres import Claim, JobKey  # noqa: PLC0415 -- only the child needs them

    key = JobKey(vendor="zefort", base_url="-", account="bench", id=task_id)
    return Claim(key=key, kind="task", epoch=1)


# -- statements ----------------------------------------------------------------------------------


async def statements_run(workers: int, count: int, seconds: float) -> dict[str, Any]:
    """Workers in one process tracking running tasks: statements per job per poll round."""
    schema = f"asyncbulk_bench_{uuid.uuid4().hex[:12]}"
    async with Simulator(zefort_task_delay=3600, seed=workers) as sim:
        stores = [PostgresStore(POSTGRES, schema=schema, pool_size=2) for _ in range(workers)]
        async with ZefortClient(sim.zefort_api_key, base_url=sim.zefort_url) as zefort:
            for store in stores:
                await store.open()
            try:
                ids = [
                    sim.zefort.submit_bulk_update({"attributes": {"n": n}}).id for n in range(count)
                ]
                await stores[0].add_jobs(zefort._origin, "task", ids)  # noqa: SLF001 -- its stamp
                running = [Worker(store, ZefortPoller(zefort)) for store in stores]
                stop = anyio.Event()
                async with anyio.create_task_group() as group:
                    for worker in running:
                        group.start_soon(functools.partial(worker.run, stop=stop))
                    while sum(w.statistics().owned for w in running) < count:  # noqa: ASYNC110 -- snapshots
                        await anyio.sleep(0.1)
                    await anyio.sleep(2.0)  # every worker past its first poll round
                    before = _totals(stores, running)
                    await anyio.sleep(seconds)
                    after = _totals(stores, running)
                    stop.set()
            finally:
                for store in stores:
                    await store.aclose()
    await script(f'DROP SCHEMA "{schema}" CASCADE')
    statements, polls = (a - b for a, b in zip(after, before, strict=True))
    rounds = polls / count
    return {
        "workers": workers,
        "statements_per_job_per_round": statements / (count * rounds),
        "poll_rounds": rounds,
        "polls_per_second": polls / seconds,
    }


def _totals(stores: Sequence[PostgresStore], workers: Sequence[Worker]) -> tuple[int, int]:
    return (
        sum(s.statistics().statements for s in stores),
        sum(w.statistics().polls for w in workers),
    )


# -- running -------------------------------------------------------------------------------------


async def sql(statement: str, *args: object) -> list[asyncpg.Record]:
    """Rows read (or a statement run) by a connection of the benchmark's own."""
    connection = await asyncpg.connect(POSTGRES)
    try:
        return await connection.fetch(statement, *args)
    finally:
        await connection.close()


async def script(statements: str) -> None:
    """Run statements (no arguments, no rows) on a connection of the benchmark's own."""
    connection = await asyncpg.connect(POSTGRES)
    try:
        await connection.execute(statements)
    finally:
        await connection.close()


async def wait_for(
    statement: str, satisfied: Callable[[list[asyncpg.Record]], bool], within: float = 300
) -> list[asyncpg.Record]:
    """Read ``statement`` every 200 ms until ``satisfied(rows)``, for ``within`` seconds at most."""
    with anyio.fail_after(within):
        while not satisfied(rows := await sql(statement)):  # noqa: ASYNC110 -- no event in SQL
            await anyio.sleep(0.2)
    return rows


def summary(name: str, values: Sequence[float], unit: str = "") -> str:
    """``name: median (min-max) over N``."""
    median = statistics.median(values)
    return (
        f"{name}: {median:.3g}{unit} (range {min(values):.3g}-{max(values):.3g}{unit}, "
        f"{len(values)} runs)"
    )


async def run_all(options: argparse.Namespace) -> None:
    """Every measurement, printed as it completes."""
    print(f"# scale-out: {options.tasks} tasks x {options.runs} kill runs", flush=True)
    runs = []
    work = Path(tempfile.mkdtemp(prefix="asyncbulk-scaleout-"))
    print(f"# worker stderr in {work}", flush=True)
    for seed in range(options.runs):
        result = await kill_run(seed, options.tasks, work)
        print(f"kill run {seed + 1}: {json.dumps(result)}", flush=True)
        runs.append(result)
    if runs:
        for field in ("lost", "finished_twice", "delivered_twice", "delivered_twice_in_window"):
            print(summary(field, [r[field] for r in runs]))
        print(summary("repolled_within", [r["repolled_within_s"] for r in runs], " s"))
        print(summary("run length", [r["seconds"] for r in runs], " s"))
    limits = []
    for seed in range(options.limit_runs):
        result = await limit_run(seed, options.limit_seconds, options.rate)
        print(f"limit run {seed + 1}: {json.dumps(result)}", flush=True)
        limits.append(result)
    if limits:
        shared = f"busiest second at {options.rate:g}/s shared by {WORKERS}"
        print(summary(shared, [r["busiest_second"] for r in limits]))
    for workers in options.statement_workers:
        result = await statements_run(workers, options.statement_tasks, options.statement_seconds)
        print(f"statements: {json.dumps(result)}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaleout", description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per kill run")
    parser.add_argument("--runs", type=int, default=10, help="kill runs")
    parser.add_argument("--limit-runs", type=int, default=3, help="shared-limit runs")
    parser.add_argument("--limit-seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=50.0, help="the shared limit, per second")
    parser.add_argument(
        "--statement-workers",
        type=lambda text: [int(n) for n in text.split(",") if n],
        default=[1, 2, 4],
        help="worker counts of the statements measurement, comma-separated ('' skips it)",
    )
    parser.add_argument("--statement-tasks", type=int, default=2000)
    parser.add_argument("--statement-seconds", type=float, default=5.0)
    parser.add_argument("--child-limit", nargs=6, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child_limit:
        anyio.run(limit_child, options.child_limit)
        return
    anyio.run(run_all, options)


if __name__ == "__main__":
    main()
