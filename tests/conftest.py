"""Shared fixtures: every async test runs on asyncio, the only loop aiohttp supports."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Run anyio tests on asyncio only."""
    return "asyncio"
