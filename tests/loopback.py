"""A test's own aiohttp application, served on loopback.

For the tests that need a server the simulator cannot be: hostile answers, scripted failures;
and `leads_simulator`, the simulator set up with the processes the Chakra tests update.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from aiohttp import web

from asyncbulk.testing import Simulator

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port; yield its base URL; stop it on exit."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def leads_simulator(leads: int) -> AsyncIterator[Simulator]:
    """A simulator with a Chakra procedure ``leads`` (key ``lead_id``) of processes L0, L1..."""
    async with Simulator(chakra_entries_per_second=100_000) as simulator:
        simulator.chakra.add_procedure("leads", primary_key="lead_id", attributes=["city", "n"])
        for i in range(leads):
            simulator.chakra.add_process("leads", {"lead_id": f"L{i}"}, id=f"pid-{i}")
        yield simulator
