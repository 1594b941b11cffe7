"""``asyncbulk worker``: a tracking worker of the PostgreSQL store, delivering to a hook.

The worker claims a share of the jobs any replica recorded (``journal=PostgresJournal(...)``)
for the vendor account of its credential, polls them, records each finish once and hands each
finished job to the hook, an importable async callable taking a `asyncbulk.postgres.Delivery`.
SIGTERM (or Ctrl-C) stops it cleanly: polls and claims end, deliveries in flight finish, its
jobs are released for the other workers at once, and it exits 0. A second signal stops it at
once; the sweeper of the other workers frees its jobs after the expiry.
"""

from __future__ import annotations

import importlib
import inspect
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

import anyio
import attrs

from asyncbulk._exceptions import AsyncBulkError, TransportError, ValidationError
from asyncbulk.cli._chakra import chakra_client
from asyncbulk.cli._runner import EXIT_INTERRUPTED, EXIT_OK, _leaf, _message
from asyncbulk.cli._zefort import zefort_client

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from asyncbulk.cli._output import Output
    from asyncbulk.postgres import Delivery, JobPoller, PostgresStore
    from asyncbulk.redis import SharedLimiter

__all__ = ["WorkerSettings", "load_hook", "run_worker"]

Vendor = Literal["zefort", "chakra"]
_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
_REDIS_CHECK_SECONDS: Final = 5.0
_T = TypeVar("_T")


@attrs.frozen(kw_only=True)
class WorkerSettings:
    """What ``asyncbulk worker`` was asked to run, checked by click."""

    postgres: str
    redis: str | None
    redis_prefix: str
    hook: str
    vendor: Vendor
    credential: str | None
    base_url: str | None
    allow_insecure_http: bool
    schema: str
    rate: float
    worker_id: str | None
    heartbeat_interval: float
    expiry: float
    poll_interval: float
    max_jobs: int
    delivery_batch: int
    delivery_lease: float


def load_hook(spec: str) -> Callable[[Delivery], Awaitable[None]]:
    """The async callable ``module:function`` names (the current directory is importable).

    Raises:
        ValidationError: naming ``--hook``: malformed, not importable, missing or not async.
    """
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise ValidationError("--hook", f"must be module:function, not {spec!r}")
    # Like other worker commands: a hook module next to where the worker is started imports.
    here = str(Path.cwd())
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValidationError("--hook", f"cannot import {module_name!r}: {error}") from None
    except Exception as error:  # noqa: BLE001 -- any failure of the user's module is reported
        raise ValidationError(
            "--hook", f"importing {module_name!r} failed: {type(error).__name__}: {error}"
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValidationError("--hook", f"{module_name!r} has no {attribute!r}")
        target = getattr(target, part)
    if not (
        inspect.iscoroutinefunction(target)
        or inspect.iscoroutinefunction(getattr(target, "__call__", None))  # noqa: B004 -- an async __call__ counts
    ):
        raise ValidationError("--hook", f"{spec} is not an async function")
    hook: Callable[[Delivery], Awaitable[None]] = target
    return hook


def run_worker(settings: WorkerSettings, *, output: Output) -> int:
    """Run the worker until SIGTERM or Ctrl-C; the exit status.

    0 after a clean stop; 2 when the hook, the credential or the DSN is wrong (one line on
    stderr, nothing claimed); 1 when the work failed on the way.
    """
    try:
        hook = load_hook(settings.hook)
        return anyio.run(_work, settings, hook, output)
    except (AsyncBulkError, BaseExceptionGroup) as error:
        cause = _leaf(error)
        if not isinstance(cause, AsyncBulkError):
            raise
        status, message = _message(cause)
        output.error(message)
        return status


async def _work(
    settings: WorkerSettings, hook: Callable[[Delivery], Awaitable[None]], output: Output
) -> int:
    from asyncbulk.postgres import Worker  # noqa: PLC0415 -- needs the postgres extra

    client = (
        zefort_client(
            settings.credential, settings.base_url, allow_insecure_http=settings.allow_insecure_http
        )
        if settings.vendor == "zefort"
        else chakra_client(
            settings.credential, settings.base_url, allow_insecure_http=settings.allow_insecure_http
        )
    )
    # The origin replicas record their jobs under: the same base URL and account fingerprint.
    origin = client._origin  # noqa: SLF001 -- the client's own stamp, no credential in it
    limiter = _limiter(settings, origin.account)
    async with client:
        if limiter is not None:
            await _check_redis(limiter)
        store = await _open_store(settings)
        try:
            worker = _named_options(Worker)(
                store,
                _poller(settings.vendor, client, limiter),
                origin=origin,
                deliver=hook,
                worker_id=settings.worker_id,
                heartbeat_interval=settings.heartbeat_interval,
                expiry=settings.expiry,
                poll_interval=settings.poll_interval,
                max_jobs=settings.max_jobs,
                delivery_batch=settings.delivery_batch,
                delivery_lease=settings.delivery_lease,
            )
            stop, forced = anyio.Event(), anyio.Event()
            async with anyio.create_task_group() as group:
                group.start_soon(_stop_on_signal, stop, forced, group.cancel_scope, output, worker)
                output.note(
                    f"asyncbulk: worker {worker.worker_id} tracking {settings.vendor} jobs of "
                    f"{origin.base_url} in {store!r}"
                    + (" under a rate shared through Redis" if limiter is not None else "")
                    + "; SIGTERM stops it cleanly"
                )
                await worker.run(stop=stop)
                group.cancel_scope.cancel()
        finally:
            if limiter is not None:
                await limiter.aclose()
            await store.aclose()
    stats = worker.statistics()
    if forced.is_set():
        output.note(
            f"asyncbulk: worker {worker.worker_id} stopped at once: "
            "the other workers free its jobs once its heartbeat expires"
        )
        return EXIT_INTERRUPTED
    if output.json_mode:
        output.json({"worker_id": worker.worker_id, **attrs.asdict(stats)})
    output.note(
        f"asyncbulk: worker {worker.worker_id} stopped: {stats.finished} finished, "
        f"{stats.delivered} delivered, {stats.polls} polls; its jobs are released"
    )
    return EXIT_OK


async def _open_store(settings: WorkerSettings) -> PostgresStore:
    """The store, open; what keeps it from opening is a usage error naming ``--postgres``."""
    from asyncbulk.postgres import PostgresStore  # noqa: PLC0415 -- needs the postgres extra

    try:
        store = PostgresStore(settings.postgres, schema=settings.schema)
        await store.open()
    except ValidationError as error:
        field = "--postgres" if error.field == "dsn" else f"--{error.field}"
        raise ValidationError(field, error.reason) from None
    except TransportError as error:
        reason = str(error).removeprefix(f"{error.method} {error.url}: ")
        raise ValidationError(
            "--postgres", f"cannot open the store at {error.url}: {reason}"
        ) from None
    return store


async def _check_redis(limiter: SharedLimiter) -> None:
    """Take one slot now, so that a Redis out of reach is a usage error, not a silent stall."""
    try:
        await limiter.acquire(deadline=anyio.current_time() + _REDIS_CHECK_SECONDS)
    except TransportError as error:
        await limiter.aclose()
        reason = str(error).removeprefix(f"{error.method} {error.url}: ")
        raise ValidationError("--redis", f"cannot reach Redis at {error.url}: {reason}") from None
    except TimeoutError:
        # Reachable, and paused by a 429 another process saw: the polls wait for it.
        pass


_OPTION_OF: Final = {
    "heartbeat_interval": "--heartbeat",
    "expiry": "--expiry",
    "poll_interval": "--poll-interval",
    "max_jobs": "--max-jobs",
    "delivery_batch": "--delivery-batch",
    "delivery_lease": "--delivery-lease",
    "worker_id": "--worker-id",
}


def _named_options(build: Callable[..., _T]) -> Callable[..., _T]:
    """``build``, its `ValidationError` naming the command's option rather than the keyword."""

    def named(*args: Any, **kwargs: Any) -> _T:
        try:
            return build(*args, **kwargs)
        except ValidationError as error:
            raise ValidationError(_OPTION_OF.get(error.field, error.field), error.reason) from None

    return named


async def _stop_on_signal(
    stop: anyio.Event,
    forced: anyio.Event,
    scope: anyio.CancelScope,
    output: Output,
    worker: Any,
) -> None:
    with anyio.open_signal_receiver(*_STOP_SIGNALS) as signals:
        async for signum in signals:
            if stop.is_set():
                # A second signal: stop now, for an operator who will not wait for the hook.
                forced.set()
                scope.cancel()
                return
            output.note(
                f"asyncbulk: {signal.Signals(signum).name}: worker {worker.worker_id} finishing "
                "the deliveries in flight and releasing its jobs"
            )
            stop.set()


def _limiter(settings: WorkerSettings, account: str) -> SharedLimiter | None:
    if settings.redis is None:
        return None
    from asyncbulk.redis import RedisRateLimit  # noqa: PLC0415 -- needs the redis extra

    return RedisRateLimit(
        settings.redis,
        per_second=settings.rate,
        vendor=settings.vendor,
        account=account,
        key_prefix=settings.redis_prefix,
    )


def _poller(vendor: Vendor, client: Any, limiter: SharedLimiter | None) -> JobPoller:
    from asyncbulk.postgres import ChakraPoller, ZefortPoller  # noqa: PLC0415 -- needs the extra

    if vendor == "zefort":
        return ZefortPoller(client, limiter=limiter)
    return ChakraPoller(client, limiter=limiter)
