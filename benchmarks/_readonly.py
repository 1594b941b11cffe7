"""A server that only reads: the vendors' bulk and read routes with precomputed answers.

The simulator does real work for every request (validating a batch, applying it, building
entries), and on a shared machine that work slows the client it competes with. This app does as
little as a server can: it reads each request body to the end, and answers with a body prepared
before the benchmark (the entries pages are encoded when it starts, only the ids changing), so
the figures measured against it are the client's own. Nothing it answers depends on what it was
sent. Routes (no authentication, nothing recorded but a count per route):

- `PATCH /v1/ext/procedure/{procedure}/process`: a new, running background job (a fresh id).
- `GET /v1/ext/background-job/{job_id}`: a completed job of `entries` entries.
- `GET /v1/ext/background-job/{job_id}/entries?limit=&skip=`: that job's entries, `limit` from
  `skip`, each with an id of its own; `_meta.total` is `entries`.
- `POST /api/contracts/bulk_update/`: a new, pending Zefort task (a fresh id).
- `GET /api/tasks/{id}/`: a finished Zefort task.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any

from aiohttp import web

#: The job the read-only server serves (any id is answered the same).
JOB_ID = "00000000-0000-4000-8000-00000000b0b0"
#: The task the read-only server serves (any id is answered the same).
TASK_ID = "task_000000000000readonly"
_TEAM = "d3e64510-b75a-43a0-8ae5-dde78dac56c0"
_TYPE = "0b6f0c52-52a6-4f3c-9a1e-1c7f2ad1e6c1"
_MAX_LIMIT = 100
_JSON = "application/json"


def _job(job_id: str, status: str, entries: int) -> dict[str, Any]:
    done = status == "COMPLETED"
    return {
        "_data": {
            "id": job_id,
            "createdAt": 1796151457830,
            "updatedAt": 1796151457831,
            "completionStatus": status,
            "statusMessage": None,
            "startedAt": 1796151457830,
            "completedAt": 1796151457831 if done else 0,
            "team": _TEAM,
            "type": _TYPE,
        },
        "_meta": {"bjEntryCompletionStatusVsCount": {"SUCCESS": entries}} if done else {},
        "_errors": [],
    }


def _entry_template() -> tuple[str, str]:
    """The text of one entry before and after its id."""
    entry = {
        "id": "@ID@",
        "createdAt": 1796151457830,
        "updatedAt": 1796151457831,
        "data": {
            "apiData": {
                "processId": "12963c7c-3608-4faf-95db-d2a0cb838a9c",
                "procedureId": "aee29d54-5c2d-429e-a005-b871bf28250c",
                "processUpdate": {"data": {"score": "1"}},
            },
            "apiType": "process:ext-update",
        },
        "validationStatus": "SUCCESS",
        "validationMessage": "",
        "validationResult": None,
        "completionStatus": "SUCCESS",
        "completionMessage": "",
        "completionResult": None,
        "team": _TEAM,
        "backgroundJob": JOB_ID,
        "createdBy": "5acc9b3b-9850-422b-81ce-22b01cb74356",
    }
    before, after = json.dumps(entry, separators=(",", ":")).split("@ID@")
    return before, after


def _task(task_id: str, backend_status: str) -> dict[str, Any]:
    return {
        "id": task_id,
        "details": {"query_params": {}, "data": {"contracts": []}},
        "backend_status": backend_status,
        "backend_status_info": "",
        "frontend_status": "pending",
        "description": "Contract Bulk operation",
    }


def _split(body: dict[str, Any], value: str) -> tuple[bytes, bytes]:
    """The encoded body before and after the one place `value` appears."""
    before, after = json.dumps(body, separators=(",", ":")).split(value)
    return before.encode(), after.encode()


class ReadOnly:
    """The app and its counts: requests per (method, route)."""

    def __init__(self, entries: int = 0) -> None:
        """Prepare every answer for a job of `entries` entries."""
        self.total = entries
        self.counts: Counter[tuple[str, str]] = Counter()
        self._ids = itertools.count()
        self._job = json.dumps(_job(JOB_ID, "COMPLETED", entries)).encode()
        self._new_job = _split(_job("@ID@", "IN_PROGRESS", 0), "@ID@")
        self._task = json.dumps(_task(TASK_ID, "done")).encode()
        self._new_task = _split(_task("@ID@", "pending"), "@ID@")
        self._entry = _entry_template()
        # Every page of the clients' page size is encoded before serving, so that a page costs
        # the server a lookup, not the work of building it.
        self._pages = {skip: self._page(_MAX_LIMIT, skip) for skip in range(0, entries, _MAX_LIMIT)}

    def _count(self, request: web.Request) -> None:
        resource = request.match_info.route.resource
        route = "" if resource is None else resource.canonical
        self.counts[request.method, route] += 1

    def _answer(self, body: bytes) -> web.Response:
        return web.Response(body=body, content_type=_JSON)

    async def bulk_update(self, request: web.Request) -> web.Response:
        """Read the batch, answer a new job."""
        await request.read()
        self._count(request)
        before, after = self._new_job
        job_id = f"{next(self._ids):08x}-0000-4000-8000-000000000000".encode()
        return self._answer(before + job_id + after)

    async def job(self, request: web.Request) -> web.Response:
        """The completed job."""
        self._count(request)
        return self._answer(self._job)

    async def entries(self, request: web.Request) -> web.Response:
        """A page of the job's entries, each id its own."""
        self._count(request)
        query = request.query
        limit = min(_MAX_LIMIT, int(query.get("limit", _MAX_LIMIT)))
        skip = int(query.get("skip", 0))
        body = self._pages.get(skip) if limit == _MAX_LIMIT else None
        return self._answer(self._page(limit, skip) if body is None else body)

    def _page(self, limit: int, skip: int) -> bytes:
        before, after = self._entry
        page = ",".join(
            f"{before}{i:08x}-0000-4000-8000-{i:012x}{after}"
            for i in range(skip, min(skip + limit, self.total))
        )
        meta = json.dumps({"total": self.total, "next": None})
        return f'{{"_data":[{page}],"_meta":{meta},"_errors":[]}}'.encode()

    async def zefort_bulk_update(self, request: web.Request) -> web.Response:
        """Read the body, answer a new task."""
        await request.read()
        self._count(request)
        before, after = self._new_task
        return self._answer(before + f"task_{next(self._ids):020d}".encode() + after)

    async def task(self, request: web.Request) -> web.Response:
        """The finished task."""
        self._count(request)
        return self._answer(self._task)

    def report(self) -> dict[str, Any]:
        """Requests per route, as the admin report adds them."""
        return {f"{method} {route}": n for (method, route), n in self.counts.items()}

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=1024**3)
        app.router.add_patch("/v1/ext/procedure/{procedure}/process", self.bulk_update)
        app.router.add_get("/v1/ext/background-job/{job_id}", self.job)
        app.router.add_get("/v1/ext/background-job/{job_id}/entries", self.entries)
        app.router.add_post("/api/contracts/bulk_update/", self.zefort_bulk_update)
        app.router.add_get("/api/tasks/{id}/", self.task)
        return app
