"""`Simulator`: both vendors' simulated APIs, served on loopback while in `async with`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

from aiohttp import web

from ._chakra import ChakraState, make_chakra_app
from ._clock import Clock, MonotonicClock
from ._faults import Fault, FaultSet
from ._records import Records
from ._zefort import TaskDelay, ZefortState, make_zefort_app

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType

    from ._limits import TokenBucket


class Simulator:
    """The Chakra and Zefort APIs, simulated, served over HTTP on loopback.

    Use it as an async context manager: entering starts both servers (on free ports by default),
    leaving stops them. Every setting is keyword-only and defaults to something fast: a small
    Chakra job finishes well within a second, a Zefort task within one.

    Attributes:
        chakra: The Chakra data (`ChakraState`): procedures, processes, jobs.
        zefort: The Zefort data (`ZefortState`): contracts, tasks.
        records: What both servers saw (`Records`).
        faults: The fault rules (`FaultSet`); add or remove rules while running.
        rate_limit: The `TokenBucket` of every credential, or None (its `refused` counts 429s).
        clock: The simulated clock both vendors share.
        chakra_token: The bearer token Chakra accepts.
        zefort_api_key: The API key Zefort accepts as the Basic-auth user name.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        chakra_entries_per_second: float = 20_000.0,
        chakra_error_rate: float = 0.0,
        zefort_task_delay: TaskDelay = (0.2, 1.0),
        zefort_failure_rate: float = 0.0,
        zefort_page_size_max: int = 1000,
        time_scale: float = 1.0,
        clock: Clock | None = None,
        faults: Iterable[Fault] = (),
        host: str = "127.0.0.1",
        chakra_port: int = 0,
        zefort_port: int = 0,
        chakra_token: str = "chakra-sim-token",  # noqa: S107 - a simulator's credential
        zefort_api_key: str = "zefort-sim-key",
        keep_requests: bool = True,
        examples: bool = True,
        rate_limit: TokenBucket | None = None,
    ) -> None:
        """Configure the simulator (nothing is served before `async with` or `start()`).

        Args:
            seed: Seeds every random choice: ids, ERROR entries, delays, faults.
            chakra_entries_per_second: Entries a Chakra job finishes per simulated second.
            chakra_error_rate: Fraction of valid Chakra entries that end in ERROR.
            zefort_task_delay: Simulated seconds before a Zefort task is done: a number, a
                (low, high) range drawn uniformly, or a function of the request body.
            zefort_failure_rate: Fraction of Zefort tasks that end in "error" instead of "done".
            zefort_page_size_max: The largest `page_size` the task listing honours.
            time_scale: Simulated seconds per real second (ignored when `clock` is given).
            clock: A clock of your own, e.g. a `ManualClock` a test advances by hand.
            faults: Fault rules to start with.
            host: The address both servers listen on.
            chakra_port: Chakra's port; 0 picks a free one.
            zefort_port: Zefort's port; 0 picks a free one.
            chakra_token: The bearer token Chakra accepts.
            zefort_api_key: The API key Zefort accepts.
            keep_requests: Keep a record of every request (`records.requests`); turn off for
                long benchmarks (the counters are kept either way).
            examples: Start with the documentation's example data.
            rate_limit: A `TokenBucket` each credential draws from, per vendor: requests past
                it are answered 429 (with its `Retry-After`) and not handled.
        """
        self.clock: Clock = clock or MonotonicClock(time_scale=time_scale)
        self.records = Records(self.clock, keep_requests=keep_requests)
        self.faults = FaultSet(faults, seed=seed)
        self.chakra = ChakraState(
            clock=self.clock,
            seed=seed,
            entries_per_second=chakra_entries_per_second,
            error_rate=chakra_error_rate,
            token=chakra_token,
            records=self.records,
            examples=examples,
        )
        self.zefort = ZefortState(
            clock=self.clock,
            seed=seed,
            task_delay=zefort_task_delay,
            failure_rate=zefort_failure_rate,
            page_size_max=zefort_page_size_max,
            api_key=zefort_api_key,
            records=self.records,
            examples=examples,
        )
        self.chakra_token = chakra_token
        self.zefort_api_key = zefort_api_key
        self.rate_limit = rate_limit
        self._host = host
        self._ports = {"chakra": chakra_port, "zefort": zefort_port}
        self._runners: dict[str, web.AppRunner] = {}

    def __repr__(self) -> str:
        """Show where it serves, once started."""
        if not self._runners:
            return "<Simulator (not started)>"
        return f"<Simulator chakra={self.chakra_url} zefort={self.zefort_url}>"

    @property
    def chakra_url(self) -> str:
        """Chakra's base URL, e.g. "http://127.0.0.1:8080" (API paths start with /v1/ext/)."""
        return self._url("chakra")

    @property
    def zefort_url(self) -> str:
        """Zefort's base URL, e.g. "http://127.0.0.1:8081" (API paths start with /api/)."""
        return self._url("zefort")

    def _url(self, vendor: str) -> str:
        runner = self._runners.get(vendor)
        if runner is None:
            raise RuntimeError("the simulator is not running: use `async with Simulator()`")
        host, port = runner.addresses[0][:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def rotate_credentials(
        self,
        *,
        chakra_token: str | None = None,
        zefort_api_key: str | None = None,
        window: float = 0.0,
    ) -> None:
        """Replace credentials as an operator rotating a key does, with a window of 401s.

        For `window` simulated seconds from now, both vendors refuse every request with 401,
        whatever credential it carries; after it, only the new credentials work.

        Args:
            chakra_token: Chakra's new bearer token (None keeps the current one).
            zefort_api_key: Zefort's new API key (None keeps the current one).
            window: Simulated seconds during which every request is refused.

        Raises:
            ValueError: `window` is negative.
        """
        if window < 0:
            raise ValueError(f"window cannot be negative, got {window!r}")
        if chakra_token is not None:
            self.chakra.token = self.chakra_token = chakra_token
        if zefort_api_key is not None:
            self.zefort.api_key = self.zefort_api_key = zefort_api_key
        until = self.clock.now() + window
        self.chakra.unauthorized_until = self.zefort.unauthorized_until = until

    async def start(self) -> None:
        """Start serving both vendors (what entering `async with` does).

        Raises:
            RuntimeError: Already started.
            OSError: A port could not be bound.
        """
        if self._runners:
            raise RuntimeError("the simulator is already running")
        apps = {
            "chakra": make_chakra_app(
                self.chakra,
                faults=self.faults,
                rate_limit=self.rate_limit,
                elsewhere=lambda: self.zefort_url,
            ),
            "zefort": make_zefort_app(
                self.zefort,
                faults=self.faults,
                rate_limit=self.rate_limit,
                elsewhere=lambda: self.chakra_url,
            ),
        }
        try:
            for vendor, app in apps.items():
                runner = web.AppRunner(
                    app, handle_signals=False, access_log=None, shutdown_timeout=0.5
                )
                await runner.setup()
                self._runners[vendor] = runner
                await web.TCPSite(runner, self._host, self._ports[vendor]).start()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop serving (what leaving `async with` does); safe to call twice."""
        runners, self._runners = self._runners, {}
        for runner in runners.values():
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        """Start serving and return the simulator."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop serving."""
        await self.aclose()
