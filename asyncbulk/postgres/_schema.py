"""The tables `PostgresStore` keeps, created by the library, with a schema version.

```
meta         name -> value: "schema_version"
workers      one row per live worker: id, started_at, last_seen (its heartbeat)
jobs         one row per tracked job or task, keyed by (vendor, base_url, account, id):
             owner + epoch (the claim; the epoch grows with every claim, fencing late finishes),
             finished_at / finished_by / finished_epoch / result (recorded once),
             delivery_owner + deliveries (the delivery attempt) + delivery_until (its lease),
             delivered_at (the delivered mark)
submissions  one row per submission: origin, target, operation, request, ended_at
batches      one row per batch of a submission: start, stop, state, job_id, error
```

Version 2 added ``seq`` to jobs and submissions (the order they were added in); tables of
version 1 are upgraded in place when a store opens them. Creating them is idempotent and
serialised by an advisory lock, so workers starting together never race. A schema written by
a newer version of the library is refused, never changed.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from asyncbulk._exceptions import SchemaVersionError, ValidationError

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

__all__ = ["SCHEMA_VERSION", "SchemaVersionError", "check_schema_name", "create_schema"]

#: The version of the tables this library writes and reads.
SCHEMA_VERSION: Final = 2

_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")

_TABLES: Final = """
CREATE TABLE IF NOT EXISTS {s}.workers (
    id text PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {s}.jobs (
    vendor text NOT NULL,
    base_url text NOT NULL,
    account text NOT NULL,
    id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('job', 'task')),
    seq bigint GENERATED ALWAYS AS IDENTITY,
    added_at timestamptz NOT NULL DEFAULT now(),
    owner text,
    epoch bigint NOT NULL DEFAULT 0,
    finished_at timestamptz,
    finished_by text,
    finished_epoch bigint,
    result jsonb,
    delivery_owner text,
    delivery_until timestamptz,
    deliveries integer NOT NULL DEFAULT 0,
    delivered_at timestamptz,
    PRIMARY KEY (vendor, base_url, account, id)
);
CREATE INDEX IF NOT EXISTS jobs_unclaimed ON {s}.jobs (added_at)
    WHERE finished_at IS NULL AND owner IS NULL;
CREATE INDEX IF NOT EXISTS jobs_owned ON {s}.jobs (owner)
    WHERE finished_at IS NULL AND owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_undelivered ON {s}.jobs (finished_at)
    WHERE finished_at IS NOT NULL AND delivered_at IS NULL;
CREATE TABLE IF NOT EXISTS {s}.submissions (
    id text PRIMARY KEY,
    vendor text NOT NULL,
    base_url text NOT NULL,
    account text NOT NULL,
    target text NOT NULL,
    operation text NOT NULL,
    request jsonb,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    created_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz
);
CREATE INDEX IF NOT EXISTS submissions_open ON {s}.submissions (vendor, base_url, account)
    WHERE ended_at IS NULL;
CREATE TABLE IF NOT EXISTS {s}.batches (
    submission_id text NOT NULL REFERENCES {s}.submissions (id) ON DELETE CASCADE,
    start integer NOT NULL,
    stop integer NOT NULL,
    state text NOT NULL
        CHECK (state IN ('sending', 'accepted', 'rejected', 'unknown', 'not_sent')),
    job_id text,
    error text,
    PRIMARY KEY (submission_id, start)
);
"""
# What turns the tables of each older version into the next one; ``seq`` (version 2) keeps the
# order jobs and submissions were added in, which timestamps alone do not (one statement adds
# many jobs at the same instant).
_UPGRADES: Final = {
    1: """
ALTER TABLE {s}.jobs ADD COLUMN IF NOT EXISTS seq bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE {s}.submissions ADD COLUMN IF NOT EXISTS seq bigint GENERATED ALWAYS AS IDENTITY;
""",
}


def check_schema_name(schema: str) -> str:
    """Return ``schema`` quoted for SQL, or raise `ValidationError` for a name out of shape."""
    if not isinstance(schema, str) or not _NAME.fullmatch(schema):
        raise ValidationError(
            "schema", f"must be a lower-case SQL identifier ([a-z_][a-z0-9_]*), not {schema!r}"
        )
    return f'"{schema}"'


async def create_schema(connection: PoolConnectionProxy[asyncpg.Record], schema: str) -> None:
    """Create the schema and its tables unless they exist; refuse a newer version.

    Raises:
        SchemaVersionError: the tables carry a newer version.
    """
    quoted = check_schema_name(schema)
    async with connection.transaction():
        await connection.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))", f"asyncbulk schema {schema}"
        )
        await connection.execute(
            f"CREATE SCHEMA IF NOT EXISTS {quoted}; CREATE TABLE IF NOT EXISTS {quoted}.meta "
            "(name text PRIMARY KEY, value integer NOT NULL)"
        )
        found = await connection.fetchval(
            f"SELECT value FROM {quoted}.meta WHERE name = 'schema_version'"  # noqa: S608 -- the name is checked above
        )
        if found is not None and found > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"schema {schema!r} has asyncbulk tables of version {found}; this version of "
                f"asyncbulk knows versions up to {SCHEMA_VERSION}: upgrade asyncbulk",
                found=found,
                supported=SCHEMA_VERSION,
            )
        await connection.execute(_TABLES.format(s=quoted))
        for version in range(found or SCHEMA_VERSION, SCHEMA_VERSION):
            await connection.execute(_UPGRADES[version].format(s=quoted))
        await connection.execute(
            f"INSERT INTO {quoted}.meta (name, value) VALUES ('schema_version', $1) "  # noqa: S608 -- the name is checked above
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            SCHEMA_VERSION,
        )
