"""`asyncbulk.postgres.PostgresStore` against the real PostgreSQL: claims, fencing, delivery."""

# ruff: noqa: S608 -- the statements name the test's own schema, never outside input

from __future__ import annotations

import anyio
import anyio.lowlevel
import asyncpg
import attrs
import pytest

from asyncbulk import TransportError, ValidationError
from asyncbulk.postgres import SCHEMA_VERSION, JobKey, PostgresStore, SchemaVersionError

pytestmark = pytest.mark.anyio


@attrs.frozen
class Origin:
    """A journal origin, as the journal's own class has it."""

    vendor: str = "zefort"
    base_url: str = "http://zefort.test/api"
    account: str = "acct"


@attrs.frozen
class Batch:
    """A journal batch record."""

    start: int
    stop: int
    state: str
    job_id: str | None = None
    error: str | None = None


@attrs.frozen
class Submission:
    """A journal submission record."""

    id: str
    origin: Origin
    target: str = "contracts"
    operation: str = "update"
    request: dict | None = None
    batches: tuple[Batch, ...] = ()


ORIGIN = Origin()


@pytest.fixture
async def store(pg_dsn, pg_schema):
    async with PostgresStore(pg_dsn, schema=pg_schema) as opened:
        yield opened


async def add(store: PostgresStore, count: int) -> list[str]:
    ids = [f"task-{n:04d}" for n in range(count)]
    await store.add_jobs(ORIGIN, "task", ids)
    return ids


async def test_tables_are_created_once_with_a_version(pg_dsn, pg_schema) -> None:
    """Stores opening together on one schema create its tables once and stamp the version."""
    stores = [PostgresStore(pg_dsn, schema=pg_schema) for _ in range(3)]
    async with anyio.create_task_group() as group:
        for each in stores:
            group.start_soon(each.open)
    for each in stores:
        await each.aclose()
    connection = await asyncpg.connect(pg_dsn)
    try:
        version = await connection.fetchval(
            f'SELECT value FROM "{pg_schema}".meta WHERE name = $1',
            "schema_version",
        )
        tables = await connection.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1", pg_schema
        )
    finally:
        await connection.close()
    assert version == SCHEMA_VERSION
    assert tables == 5


async def test_a_newer_schema_is_refused(pg_dsn, pg_schema, store) -> None:
    """Tables stamped by a newer asyncbulk raise SchemaVersionError and are left as they are."""
    connection = await asyncpg.connect(pg_dsn)
    try:
        await connection.execute(f'UPDATE "{pg_schema}".meta SET value = 99')
        with pytest.raises(SchemaVersionError) as caught:
            await PostgresStore(pg_dsn, schema=pg_schema).open()
        assert await connection.fetchval(f'SELECT value FROM "{pg_schema}".meta') == 99
    finally:
        await connection.close()
    assert caught.value.found == 99


@pytest.mark.parametrize(
    ("options", "field"),
    [
        pytest.param({"schema": 'x"; DROP TABLE y; --'}, "schema", id="injected-schema"),
        pytest.param({"schema": "Upper"}, "schema", id="upper-case-schema"),
        pytest.param({"pool_size": 0}, "pool_size", id="no-pool"),
        pytest.param({"timeout": float("nan")}, "timeout", id="nan-timeout"),
    ],
)
def test_bad_settings_name_the_field(options, field) -> None:
    """Each bad setting raises ValidationError naming it, before any connection."""
    with pytest.raises(ValidationError) as caught:
        PostgresStore("postgresql://127.0.0.1:1/test", **options)
    assert caught.value.field == field


async def test_an_unreachable_server_is_a_transport_error() -> None:
    """A PostgreSQL that refuses connections raises TransportError without the DSN's password."""
    store = PostgresStore("postgresql://u:pw-secret-9@127.0.0.1:1/test", timeout=5)
    with pytest.raises(TransportError) as caught:
        await store.open()
    assert "pw-secret-9" not in str(caught.value)
    assert "pw-secret-9" not in repr(store)


async def test_claims_share_out_without_overlap(pg_dsn, pg_schema, store) -> None:
    """Four workers claiming together take disjoint shares that cover every job once."""
    ids = await add(store, 120)
    claimed: dict[str, list[str]] = {}
    all_ready = anyio.Event()

    async def worker(name: str) -> None:
        async with PostgresStore(pg_dsn, schema=pg_schema) as own:
            await own.register_worker(name)
            claimed[name] = []
            if len(claimed) == 4:
                all_ready.set()
            await all_ready.wait()  # a slow connection must not find the work all taken
            while claims := await own.claim(name, limit=7):
                claimed[name].extend(c.key.id for c in claims)
                assert all(c.epoch == 1 for c in claims)
                await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as group:
        for n in range(4):
            group.start_soon(worker, f"w{n}")
    everything = [job for jobs in claimed.values() for job in jobs]
    assert sorted(everything) == ids
    assert all(claimed.values()), "each worker got a share"


async def test_a_claim_skips_rows_another_transaction_locks(pg_dsn, pg_schema, store) -> None:
    """Rows locked by another transaction are skipped, not waited for (SKIP LOCKED)."""
    ids = await add(store, 20)
    await store.register_worker("w")
    locker = await asyncpg.connect(pg_dsn)
    try:
        async with locker.transaction():
            await locker.execute(
                f'SELECT 1 FROM "{pg_schema}".jobs WHERE id = ANY($1::text[]) FOR UPDATE',
                ids[:5],
            )
            with anyio.fail_after(5):
                claims = await store.claim("w", limit=100)
    finally:
        await locker.close()
    assert sorted(c.key.id for c in claims) == ids[5:]


async def test_a_fenced_off_worker_records_nothing(pg_dsn, pg_schema, store) -> None:
    """A worker swept while stalled cannot finish the job another worker now owns."""
    await add(store, 1)
    await store.register_worker("stalled")
    [old] = await store.claim("stalled", limit=10)
    await anyio.sleep(0.3)
    await store.register_worker("alive")
    swept = await store.sweep(expiry=0.2)
    assert swept.workers == ("stalled",)
    [new] = await store.claim("alive", limit=10)
    assert (old.epoch, new.epoch) == (1, 2)
    assert await store.finish("stalled", [(old, {"by": "stalled"})]) == []
    assert await store.heartbeat("stalled") is False
    assert await store.finish("alive", [(new, {"by": "alive"})]) == [new.key]
    assert await store.finish("alive", [(new, {"by": "again"})]) == [], "finished once"
    connection = await asyncpg.connect(pg_dsn)
    try:
        row = await connection.fetchrow(
            f'SELECT finished_by, finished_epoch, result::text FROM "{pg_schema}".jobs'
        )
    finally:
        await connection.close()
    assert tuple(row) == ("alive", 2, '{"by": "alive"}')


async def test_a_stale_epoch_is_refused_even_for_the_same_owner(store) -> None:
    """A finish carrying an older epoch than the job's is refused, whoever sends it."""
    await add(store, 1)
    await store.register_worker("w")
    [first] = await store.claim("w", limit=1)
    await store.unregister_worker("w")
    await store.register_worker("w")
    [second] = await store.claim("w", limit=1)
    assert await store.finish("w", [(first, None)]) == []
    assert await store.finish("w", [(second, None)]) == [second.key]


async def test_the_sweeper_frees_an_expired_worker_for_takeover(store) -> None:
    """Jobs of a worker whose heartbeat expired are freed by a sweep and claimed by another."""
    ids = await add(store, 10)
    await store.register_worker("dead")
    await store.claim("dead", limit=10)
    await store.register_worker("alive")
    assert await store.claim("alive", limit=10) == []
    await anyio.sleep(0.3)
    assert await store.heartbeat("alive")
    swept = await store.sweep(expiry=0.2)
    assert (swept.workers, swept.jobs) == (("dead",), 10)
    taken = await store.claim("alive", limit=100)
    assert sorted(c.key.id for c in taken) == ids
    assert {c.epoch for c in taken} == {2}
    assert await store.claim("dead", limit=10) == [], "a swept worker claims nothing"


async def test_a_clean_stop_frees_the_jobs_at_once(store) -> None:
    """unregister_worker frees its unfinished jobs without waiting for the sweeper."""
    await add(store, 3)
    await store.register_worker("leaving")
    await store.claim("leaving", limit=10)
    assert await store.unregister_worker("leaving") == 3
    await store.register_worker("next")
    assert len(await store.claim("next", limit=10)) == 3


async def finish_all(store: PostgresStore, count: int) -> list[str]:
    ids = await add(store, count)
    await store.register_worker("w")
    claims = await store.claim("w", limit=count)
    recorded = await store.finish("w", [(c, {"id": c.key.id}) for c in claims])
    assert len(recorded) == count
    return ids


async def test_each_finished_job_is_delivered_once_to_one_of_four(pg_dsn, pg_schema, store) -> None:
    """Four consumers taking together each get disjoint jobs; every job is delivered once."""
    ids = await finish_all(store, 200)
    delivered: dict[str, list[str]] = {}

    async def consumer(name: str) -> None:
        async with PostgresStore(pg_dsn, schema=pg_schema) as own:
            delivered[name] = []
            while taken := await own.take_deliveries(name, limit=9, lease=60):
                assert all(d.attempt == 1 and d.result == {"id": d.key.id} for d in taken)
                acked = await own.acknowledge(name, taken)
                assert {k.id for k in acked} == {d.key.id for d in taken}
                delivered[name].extend(d.key.id for d in taken)

    async with anyio.create_task_group() as group:
        for n in range(4):
            group.start_soon(consumer, f"c{n}")
    assert sorted(j for jobs in delivered.values() for j in jobs) == ids
    assert await store.take_deliveries("late", limit=10, lease=60) == []


async def test_a_consumer_that_dies_mid_handling_is_redelivered(store) -> None:
    """A lease run out hands the job to the next consumer as attempt 2; the late ack fails."""
    [job_id] = await finish_all(store, 1)
    [first] = await store.take_deliveries("dying", limit=5, lease=0.2)
    assert await store.take_deliveries("other", limit=5, lease=60) == [], "leased"
    await anyio.sleep(0.3)
    [second] = await store.take_deliveries("other", limit=5, lease=60)
    assert (first.attempt, second.attempt, second.key.id) == (1, 2, job_id)
    assert await store.acknowledge("dying", [first]) == []
    assert await store.acknowledge("other", [second]) == [second.key]
    await anyio.sleep(0.3)
    assert await store.take_deliveries("third", limit=5, lease=60) == []


async def test_a_swept_worker_s_deliveries_go_out_again_at_once(pg_dsn, pg_schema, store) -> None:
    """The sweep hands out a dead worker's long-leased deliveries as attempt 2; its ack fails."""
    [job_id] = await finish_all(store, 1)
    [held] = await store.take_deliveries("w", limit=5, lease=3600)
    await store.register_worker("alive")
    connection = await asyncpg.connect(pg_dsn)
    try:
        await connection.execute(
            f"UPDATE \"{pg_schema}\".workers SET last_seen = now() - interval '1 hour' "
            "WHERE id = 'w'"
        )
    finally:
        await connection.close()
    assert (await store.sweep(expiry=60)).workers == ("w",)
    [again] = await store.take_deliveries("alive", limit=5, lease=60)
    assert (held.attempt, again.attempt, again.key.id) == (1, 2, job_id)
    assert await store.acknowledge("w", [held]) == []
    assert await store.acknowledge("alive", [again]) == [again.key]


async def test_statements_per_job(store) -> None:
    """Claiming, finishing and delivering 500 jobs costs 4 statements, not 4 per job."""
    ids = await add(store, 500)
    await store.register_worker("w")
    before = store.statistics()
    claims = await store.claim("w", limit=500)
    await store.finish("w", [(c, None) for c in claims])
    taken = await store.take_deliveries("c", limit=500, lease=60)
    assert len(await store.acknowledge("c", taken)) == len(ids)
    after = store.statistics()
    assert after.statements - before.statements == 4
    assert (after.claims, after.finishes, after.deliveries) == (1, 1, 2)


async def test_submissions_are_kept_in_the_journal_shape(store) -> None:
    """Submissions, their batches and tracked jobs read back as pending until ended/delivered."""
    other = Origin(account="someone-else")
    await store.begin_submission(
        Submission(id="s1", origin=ORIGIN, request={"k": 1}, batches=(Batch(0, 10, "sending"),))
    )
    await store.begin_submission(Submission(id="s2", origin=ORIGIN))
    await store.begin_submission(Submission(id="s3", origin=other))
    await store.record_batch("s1", Batch(0, 10, "accepted", job_id="t1"))
    await store.record_batch("s1", Batch(10, 12, "unknown", error="no answer"))
    await store.end_submission("s2")
    await store.add_jobs(ORIGIN, "task", ["t1", "t2"])
    await store.finish_job(ORIGIN, "t2")
    await store.deliver_job(ORIGIN, "t2")
    pending = await store.pending(ORIGIN)
    [s1] = pending.submissions
    assert (s1.id, s1.request, s1.target, s1.operation) == ("s1", {"k": 1}, "contracts", "update")
    assert [(b.start, b.stop, b.state, b.job_id, b.error) for b in s1.batches] == [
        (0, 10, "accepted", "t1", None),
        (10, 12, "unknown", None, "no answer"),
    ]
    assert [(j.key.id, j.finished) for j in pending.jobs] == [("t1", False)]
    assert pending.jobs[0].key == JobKey(
        vendor="zefort", base_url="http://zefort.test/api", account="acct", id="t1"
    )


@pytest.mark.parametrize(
    ("write", "field"),
    [
        pytest.param("again", "submission.id", id="duplicate-submission"),
        pytest.param("batch-of-unknown", "submission_id", id="batch-of-unknown"),
        pytest.param("end-unknown", "submission_id", id="end-unknown"),
        pytest.param("bad-state", "batch.state", id="bad-batch-state"),
    ],
)
async def test_journal_mistakes_name_the_field(store, write, field) -> None:
    """Writes about unknown or duplicate submissions raise ValidationError naming the field."""
    await store.begin_submission(Submission(id="s1", origin=ORIGIN))
    writes = {
        "again": lambda: store.begin_submission(Submission(id="s1", origin=ORIGIN)),
        "batch-of-unknown": lambda: store.record_batch("nope", Batch(0, 1, "sending")),
        "end-unknown": lambda: store.end_submission("nope"),
        "bad-state": lambda: store.record_batch("s1", Batch(0, 1, "lost")),
    }
    with pytest.raises(ValidationError) as caught:
        await writes[write]()
    assert caught.value.field == field
