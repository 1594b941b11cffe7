"""Fixtures for the tests that need the real PostgreSQL or Redis.

The addresses come from ``ASYNCBULK_TEST_POSTGRES`` (a DSN) and ``ASYNCBULK_TEST_REDIS`` (a
URL), with the loopback services as defaults. A test that needs a service it cannot reach is
skipped with the reason, except under ``ASYNCBULK_REQUIRE_SERVICES=1`` (CI), where it fails.
Each test gets its own PostgreSQL schema or Redis key prefix, removed when it ends, so runs in
parallel never meet.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

POSTGRES_ENV = "ASYNCBULK_TEST_POSTGRES"
REDIS_ENV = "ASYNCBULK_TEST_REDIS"
REQUIRE_ENV = "ASYNCBULK_REQUIRE_SERVICES"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"

_reachable: dict[tuple[str, int], bool] = {}


def postgres_dsn() -> str:
    """The DSN of the PostgreSQL the tests use."""
    return os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES


def redis_url() -> str:
    """The URL of the Redis the tests use."""
    return os.environ.get(REDIS_ENV) or DEFAULT_REDIS


def _require(name: str, address: str, env: str, default_port: int) -> None:
    """Skip (or fail, when services are required) unless ``address`` accepts connections."""
    parts = urlsplit(address)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    if (host, port) not in _reachable:
        try:
            socket.create_connection((host, port), timeout=1.0).close()
        except OSError:
            _reachable[host, port] = False
        else:
            _reachable[host, port] = True
    if _reachable[host, port]:
        return
    reason = f"{name} not reachable at {host}:{port}: start it or set {env}=" + (
        "dsn" if env == POSTGRES_ENV else "url"
    )
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
    pytest.skip(reason)


@pytest.fixture
def pg_dsn() -> str:
    """The PostgreSQL DSN, once the server is known to accept connections."""
    dsn = postgres_dsn()
    _require("PostgreSQL", dsn, POSTGRES_ENV, 5432)
    return dsn


@pytest.fixture
async def pg_schema(pg_dsn: str) -> AsyncIterator[str]:
    """A schema name of this test's own; the schema is dropped when the test ends."""
    import asyncpg  # noqa: PLC0415 -- only the tests that need PostgreSQL import its driver

    schema = f"asyncbulk_test_{uuid.uuid4().hex[:12]}"
    try:
        yield schema
    finally:
        connection = await asyncpg.connect(pg_dsn, timeout=10)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await connection.close()


@pytest.fixture
def redis_address() -> str:
    """The Redis URL, once the server is known to accept connections."""
    url = redis_url()
    _require("Redis", url, REDIS_ENV, 6379)
    return url


@pytest.fixture
def redis_prefix(redis_address: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted when the test ends."""
    import redis  # noqa: PLC0415 -- only the tests that need Redis import its client

    prefix = f"asyncbulk-test-{uuid.uuid4().hex[:12]}"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(redis_address, socket_timeout=5)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
