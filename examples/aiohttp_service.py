"""Embed asyncbulk in an aiohttp web service: one client for the app's lifetime.

``POST /updates/{procedure}`` takes a JSON array of updates (the Chakra wire form) and answers
with the background jobs at once; ``GET /jobs/{job_id}`` reports a job's counts. The client is
opened at startup and closed at shutdown (``cleanup_ctx``), so every request shares its
connection pool, its limits and its 429 pause.

    export CHAKRA_BASE_URL=http://127.0.0.1:8080 CHAKRA_TOKEN=chakra-sim-token
    python examples/aiohttp_service.py --port 8000
    curl -X POST localhost:8000/updates/tele_sales -d '[{"lead_id": "LEAD-001", "state": "x"}]'
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from aiohttp import web

from asyncbulk import NotFoundError, ValidationError
from asyncbulk.chakra import ChakraClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

CHAKRA: web.AppKey[ChakraClient] = web.AppKey("chakra", ChakraClient)


def make_app(*, base_url: str, token: str) -> web.Application:
    """The web application, with its Chakra client tied to the app's lifetime."""

    async def chakra_client(app: web.Application) -> AsyncIterator[None]:
        async with ChakraClient(token, base_url=base_url) as client:
            app[CHAKRA] = client
            yield

    async def submit(request: web.Request) -> web.Response:
        items = await request.json()
        if not isinstance(items, list):
            return web.json_response({"error": "expected a JSON array of updates"}, status=400)
        try:
            submission = await request.app[CHAKRA].bulk_update_processes(
                request.match_info["procedure"], items, batch_size=500
            )
        except ValidationError as exc:
            # Nothing was sent: the caller's input names the bad item (`updates[3].status`).
            return web.json_response({"error": str(exc)}, status=422)
        return web.json_response(
            {"jobs": list(submission.job_ids), "count": submission.count}, status=202
        )

    async def job(request: web.Request) -> web.Response:
        try:
            found = await request.app[CHAKRA].get_background_job(request.match_info["job_id"])
        except NotFoundError:
            return web.json_response({"error": "no such job"}, status=404)
        return web.json_response(
            {"id": found.id, "finished": found.is_finished, "counts": dict(found.status_counts)}
        )

    app = web.Application()
    app.cleanup_ctx.append(chakra_client)
    app.router.add_post("/updates/{procedure}", submit)
    app.router.add_get("/jobs/{job_id}", job)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=os.environ.get("CHAKRA_BASE_URL", ""))
    parser.add_argument("--token", default=os.environ.get("CHAKRA_TOKEN", ""))
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    web.run_app(make_app(base_url=args.base_url, token=args.token), port=args.port)
