"""Shared fixtures: every async test runs on asyncio, the only loop aiohttp supports."""

import pytest
from hypothesis import settings

# Tests never fail on timing: no per-example deadline (a first example on a busy machine may
# take a second while modules warm up).
settings.register_profile("asyncbulk", deadline=None)
settings.load_profile("asyncbulk")

# The PostgreSQL and Redis fixtures (tests/services.py).
pytest_plugins = ("services",)


@pytest.fixture
def anyio_backend() -> str:
    """Run anyio tests on asyncio only."""
    return "asyncio"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add --run-slow: run the long tests (full chaos, load) with the others."""
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="run tests marked slow (also run when selected with -m slow)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked slow unless --run-slow is given or -m names them."""
    if config.getoption("--run-slow") or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
