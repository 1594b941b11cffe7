"""The simulator process of the benchmarks: `python -m benchmarks._server '<json config>'`.

It serves both simulated vendors (`asyncbulk.testing.Simulator`) plus a small admin app on a
port of its own, prints one JSON line with the URLs and credentials on stdout, and serves until
its stdin closes (so it never outlives the benchmark that started it) or it gets SIGTERM.

Running the simulator in its own process keeps its CPU out of the client's figures. The admin app
sets a benchmark up directly in the simulator's state, not through the vendor APIs, so setup is
fast and never counted as client requests:

- `POST /admin/zefort/tasks` `{"count", "over", "offset", "create"}`: create `count` pending tasks
  that finish at uniformly random times between `offset` and `offset + over` seconds from now;
  answers `{"ids": [...]}` (with `"create": false`, ids of the same length and no tasks). With
  `"hold": true` they stay due far ahead until released.
- `POST /admin/zefort/release` `{"start"}`: the held tasks' due times counted from `start` (a
  `time.monotonic()` reading, the same clock in every process of the machine) instead of from
  their creation; answers `{"late": s}`, how long after `start` the release ended.
- `POST /admin/chakra/processes` `{"count"}`: a procedure `bench` (primary key `lead_id`) with
  processes `L0`, `L1`, ... answers `{"procedure": "bench", "key": "lead_id", "prefix": "L"}`.
- `POST /admin/chakra/job` `{"entries"}`: a background job over that many of those processes,
  already finished; answers `{"job_id": ...}`.
- `POST /admin/zefort/unlist` `{"ids"}`: take those tasks off the pending listing (as an
  acknowledgement would), so that a run leaves nothing behind for the next run on the server.
- `POST /admin/zefort/one-task`: one finished task for per-request GETs; answers `{"id": ...}`.
- `POST /admin/faults` `{"faults": [{"kind": ..., ...}]}`: replace the fault rules (`Fault`
  keyword arguments; a list `delay` is a (low, high) range).
- `POST /admin/limit` `{"rate", "burst", "sporadic", "once", "retry_after"}`: the rate limits of
  the limited Zefort URL (`benchmarks._limits`); `{}` lifts them.
- `GET /admin/report` (`?finished=1` adds the finish time of every finished task): requests per
  route and per status (the read-only server's included), faults injected, acknowledgements, and
  what the rate limiter admitted and refused.

Besides the simulator's two URLs it serves the simulated Zefort API behind the rate-limiting
middleware (`limited_zefort_url`, same data, same records) and, when the config has
`readonly_entries`, a server that only reads (`readonly_url`, `benchmarks._readonly`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import signal
import sys
import threading
import time
from typing import Any

from aiohttp import web

from asyncbulk.testing import Fault, Simulator
from benchmarks._limits import Limiter, limited_zefort_app
from benchmarks._readonly import ReadOnly

_ADMIN_HOST = "127.0.0.1"
_BENCH_PROCEDURE = "bench"
_BENCH_KEY = "lead_id"
_BENCH_PREFIX = "L"
# What every benchmark task does: a bulk update matching no contract, so finishing it is cheap.
# How far ahead benchmark tasks are made due while they are being made (seconds).
_AHEAD = 1_000_000.0
_TASK_BODY = {"status": "done", "search": {"q_tags": "benchmark"}}


def _fault(spec: dict[str, Any]) -> Fault:
    spec = dict(spec)
    delay = spec.get("delay")
    if isinstance(delay, list):
        spec["delay"] = tuple(delay)
    return Fault(spec.pop("kind"), **spec)


class _Admin:
    """The admin routes, over one simulator."""

    def __init__(self, sim: Simulator, limiter: Limiter, readonly: ReadOnly | None) -> None:
        self.sim = sim
        self.limiter = limiter
        self.readonly = readonly
        self.processes = 0
        # When the held tasks were made (`hold`), until they are released.
        self._held: float | None = None

    async def zefort_tasks(self, request: web.Request) -> web.Response:
        spec = await request.json()
        count, over, offset = int(spec["count"]), float(spec["over"]), float(spec.get("offset", 0))
        if not spec.get("create", True):
            # Ids as long as the simulator's, for a process that must hold the same inputs
            # without anything to track (the empty process).
            return web.json_response({"ids": [f"task_{i:018d}" for i in range(count)]})
        state = self.sim.zefort
        began = time.monotonic()
        saved = state.task_delay
        # Made due far ahead, so that none finishes while a million are being made; then
        # brought back so that the offset counts from the end of setup. Each is due counted
        # from when the first was made, not from its own making (which takes seconds for a
        # million): they all finish within `over`, at a uniform rate.
        low, high = _AHEAD + offset, _AHEAD + offset + over
        tasks = []
        try:
            for _ in range(count):
                late = time.monotonic() - began
                state.task_delay = (low - late, high - late)
                tasks.append(state.submit_bulk_update(_TASK_BODY))
        finally:
            state.task_delay = saved
        # Each task's listing text is made once and kept until the task changes: make it now,
        # so the first read of the listing costs the server what every later read does.
        ids = [task.json_text() and task.id for task in tasks]
        # Sorting a million due times into the simulator's backlog takes about a second: done
        # first (moving nothing), so that the setup's length is read after it, and the tasks
        # still begin to finish `offset` after setup ends.
        state.postpone_tasks(0.0)
        if spec.get("hold"):
            # Due far ahead until `/admin/zefort/release` names when the client begins.
            self._held = began
        else:
            state.postpone_tasks(time.monotonic() - began - _AHEAD)
        gc.freeze()
        return web.json_response({"ids": ids})

    async def zefort_release(self, request: web.Request) -> web.Response:
        start = float((await request.json())["start"])
        if self._held is None:
            raise web.HTTPConflict(text="no tasks held")
        began, self._held = self._held, None
        # Their due times counted from `start` where they counted from their creation.
        self.sim.zefort.postpone_tasks(start - began - _AHEAD)
        return web.json_response({"late": max(0.0, time.monotonic() - start)})

    async def zefort_unlist(self, request: web.Request) -> web.Response:
        ids = (await request.json())["ids"]
        state = self.sim.zefort
        for task_id in ids:
            state.acknowledge(task_id, "done")
        return web.json_response({"unlisted": len(ids)})

    async def zefort_one_task(self, _: web.Request) -> web.Response:
        state = self.sim.zefort
        saved = state.task_delay
        state.task_delay = 0.0
        try:
            task = state.submit_bulk_update(_TASK_BODY)
        finally:
            state.task_delay = saved
        return web.json_response({"id": task.id})

    async def chakra_processes(self, request: web.Request) -> web.Response:
        spec = await request.json()
        count = int(spec["count"])
        state = self.sim.chakra
        if state.procedure(_BENCH_PROCEDURE) is None:
            state.add_procedure(_BENCH_PROCEDURE, primary_key=_BENCH_KEY, attributes=("score",))
        for index in range(self.processes, count):
            state.add_process(_BENCH_PROCEDURE, {_BENCH_KEY: f"{_BENCH_PREFIX}{index}"})
        self.processes = max(self.processes, count)
        gc.freeze()
        return web.json_response(
            {"procedure": _BENCH_PROCEDURE, "key": _BENCH_KEY, "prefix": _BENCH_PREFIX}
        )

    async def chakra_job(self, request: web.Request) -> web.Response:
        spec = await request.json()
        count = int(spec["entries"])
        state = self.sim.chakra
        procedure = state.procedure(_BENCH_PROCEDURE)
        if procedure is None or self.processes < count:
            raise web.HTTPConflict(text="create the processes first")
        items = [
            {_BENCH_KEY: f"{_BENCH_PREFIX}{i}", "update": {"data": {"score": str(i % 100)}}}
            for i in range(count)
        ]
        saved = state.entries_per_second
        # A job that is already finished when the benchmark starts reading it.
        state.entries_per_second = 1e12
        try:
            job = state.submit_update(procedure, items)
        finally:
            state.entries_per_second = saved
        state.settle()
        gc.freeze()
        return web.json_response({"job_id": job.id})

    async def faults(self, request: web.Request) -> web.Response:
        spec = await request.json()
        self.sim.faults.clear()
        for rule in spec.get("faults", []):
            self.sim.faults.add(_fault(rule))
        return web.json_response({"faults": len(self.sim.faults)})

    async def limit(self, request: web.Request) -> web.Response:
        self.limiter.configure(await request.json())
        return web.json_response({"active": self.limiter.active})

    async def report(self, request: web.Request) -> web.Response:
        records = self.sim.records
        by_route = {f"{m} {r}": n for (m, r), n in records.by_route.items()}
        by_status = {str(s): n for s, n in records.by_status.items()}
        total = records.total_requests
        if self.readonly is not None:
            readonly = self.readonly.report()
            by_route |= {f"read-only {route}": n for route, n in readonly.items()}
            served = sum(readonly.values())
            total += served
            by_status["200"] = by_status.get("200", 0) + served
        body: dict[str, Any] = {
            "total": total,
            "by_route": by_route,
            "by_status": by_status,
            "faults": dict(records.faults),
            "acknowledgements": sum(records.acknowledgements.values()),
        }
        if self.limiter.active:
            body["limit"] = self.limiter.report()
        if request.query.get("finished"):
            body["finished"] = {
                task_id: at.wall for task_id, at in records.finished_tasks().items()
            }
        return web.json_response(body)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_post("/admin/zefort/tasks", self.zefort_tasks)
        app.router.add_post("/admin/zefort/release", self.zefort_release)
        app.router.add_post("/admin/zefort/one-task", self.zefort_one_task)
        app.router.add_post("/admin/zefort/unlist", self.zefort_unlist)
        app.router.add_post("/admin/chakra/processes", self.chakra_processes)
        app.router.add_post("/admin/chakra/job", self.chakra_job)
        app.router.add_post("/admin/faults", self.faults)
        app.router.add_post("/admin/limit", self.limit)
        app.router.add_get("/admin/report", self.report)
        return app


async def serve(config: dict[str, Any]) -> None:
    """Serve the simulator and the admin app until stdin closes or SIGTERM arrives."""
    async with Simulator(
        seed=int(config.get("seed", 0)),
        zefort_page_size_max=int(config.get("zefort_page_size_max", 1000)),
        faults=[_fault(rule) for rule in config.get("faults", [])],
        keep_requests=False,
        examples=False,
    ) as sim:
        limiter = Limiter(seed=int(config.get("seed", 0)))
        limited = limited_zefort_app(sim, limiter)
        entries = config.get("readonly_entries")
        readonly = None if entries is None else ReadOnly(int(entries))
        apps = {"admin": _Admin(sim, limiter, readonly).app(), "limited": limited}
        if readonly is not None:
            apps["readonly"] = readonly.app()
        runners: dict[str, web.AppRunner] = {}
        try:
            urls = {}
            for name, app in apps.items():
                runner = web.AppRunner(app, handle_signals=False, access_log=None)
                runners[name] = runner
                await runner.setup()
                await web.TCPSite(runner, _ADMIN_HOST, 0).start()
                host, port = runner.addresses[0][:2]
                urls[name] = f"http://{host}:{port}"
            hello = {
                "chakra_url": sim.chakra_url,
                "zefort_url": sim.zefort_url,
                "limited_zefort_url": urls["limited"],
                "readonly_url": urls.get("readonly"),
                "chakra_token": sim.chakra_token,
                "zefort_api_key": sim.zefort_api_key,
                "admin_url": urls["admin"],
            }
            sys.stdout.write(json.dumps(hello) + "\n")
            sys.stdout.flush()
            await _until_stopped()
        finally:
            for runner in runners.values():
                await runner.cleanup()


async def _until_stopped() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)

    def wait_for_eof() -> None:
        # A blocking read returns at EOF, when the parent closes our stdin (or dies). A daemon
        # thread, not the loop's executor, so that a SIGTERM exit does not wait for it.
        sys.stdin.buffer.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_eof, daemon=True, name="stdin-eof").start()
    await stop.wait()


def main() -> None:
    """Read the JSON config from the first argument and serve."""
    config = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))


if __name__ == "__main__":
    main()
