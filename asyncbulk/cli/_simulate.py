"""``asyncbulk simulate``: serve the simulated vendors, with the faults asked for injected."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs

from asyncbulk.cli._runner import EXIT_OK, EXIT_USAGE, Ledger, run_async
from asyncbulk.testing import Fault, RetryAfterForm, Simulator, TokenBucket

if TYPE_CHECKING:
    from asyncbulk.cli._output import Output

__all__ = ["Delay", "FaultOptions", "SimulatorOptions", "serve"]

Delay = float | tuple[float, float]


@attrs.frozen(kw_only=True)
class FaultOptions:
    """The faults the command line injects, each as the fraction of requests that meet it.

    Attributes:
        rate_429: answered 429 with ``Retry-After: retry_after``.
        retry_after: the seconds those 429s ask to wait.
        rate_503: answered 503.
        latency: seconds added before every request is handled (a number or a range).
        drop_before: the connection closed before the request is handled.
        drop_after: the request handled, then the connection closed without an answer.
        malformed: handled, then answered 200 with a body that is not JSON.
        retry_after_form: how the 429s (these and the rate limit's) write ``Retry-After``.
    """

    rate_429: float = 0.0
    retry_after: float = 1.0
    rate_503: float = 0.0
    latency: Delay | None = None
    drop_before: float = 0.0
    drop_after: float = 0.0
    malformed: float = 0.0
    retry_after_form: RetryAfterForm = "seconds"

    def rules(self) -> list[Fault]:
        """The simulator's fault rules: latency first (it adds to the others), then the rest."""
        rules: list[Fault] = []
        if self.latency is not None:
            rules.append(Fault("latency", delay=self.latency))
        if self.rate_429:
            rules.append(
                Fault(
                    "status",
                    rate=self.rate_429,
                    status=429,
                    retry_after=self.retry_after,
                    retry_after_form=self.retry_after_form,
                )
            )
        if self.rate_503:
            rules.append(Fault("status", rate=self.rate_503, status=503))
        rules.extend(
            Fault(kind, rate=rate)  # type: ignore[arg-type]  # the kinds named just here
            for kind, rate in (
                ("drop_before", self.drop_before),
                ("drop_after", self.drop_after),
                ("malformed", self.malformed),
            )
            if rate
        )
        return rules

    def describe(self) -> str:
        """The faults in one phrase, for the note printed at start."""
        parts = []
        if self.latency is not None:
            low, high = self.latency if isinstance(self.latency, tuple) else (self.latency,) * 2
            parts.append(f"{low:g}-{high:g} s latency" if low != high else f"{low:g} s latency")
        for label, rate in (
            (f"429s ({self._retry_after_text()})", self.rate_429),
            ("503s", self.rate_503),
            ("drops before handling", self.drop_before),
            ("drops after handling", self.drop_after),
            ("malformed answers", self.malformed),
        ):
            if rate:
                parts.append(f"{rate:.1%} {label}")
        return ", ".join(parts) if parts else "no faults"

    def _retry_after_text(self) -> str:
        if self.retry_after_form == "seconds":
            return f"Retry-After {self.retry_after:g} s"
        return f"Retry-After as {self.retry_after_form}"


@attrs.frozen(kw_only=True)
class SimulatorOptions:
    """How ``asyncbulk simulate`` sets up the simulator (see its ``--help``)."""

    host: str = "127.0.0.1"
    chakra_port: int = 8080
    zefort_port: int = 8081
    seed: int = 0
    time_scale: float = 1.0
    chakra_entries_per_second: float = 20_000.0
    chakra_error_rate: float = 0.0
    zefort_task_delay: Delay = (0.2, 1.0)
    zefort_failure_rate: float = 0.0
    faults: FaultOptions = FaultOptions()
    #: A token bucket per credential, as (rate per second, burst); None for no limit.
    rate_limit: tuple[float, int] | None = None

    def describe_limit(self) -> str:
        """The rate limit as a phrase to append to the faults', or nothing."""
        if self.rate_limit is None:
            return ""
        rate, burst = self.rate_limit
        return f", a rate limit of {rate:g} requests a second (burst {burst}) per credential"

    def bucket(self) -> TokenBucket | None:
        """The simulator's rate limit, its 429s' Retry-After in the faults' form."""
        if self.rate_limit is None:
            return None
        rate, burst = self.rate_limit
        return TokenBucket(rate, burst, retry_after_form=self.faults.retry_after_form)

    def simulator(self) -> Simulator:
        """A simulator configured by these options (not yet started)."""
        return Simulator(
            seed=self.seed,
            time_scale=self.time_scale,
            chakra_entries_per_second=self.chakra_entries_per_second,
            chakra_error_rate=self.chakra_error_rate,
            zefort_task_delay=self.zefort_task_delay,
            zefort_failure_rate=self.zefort_failure_rate,
            faults=self.faults.rules(),
            host=self.host,
            chakra_port=self.chakra_port,
            zefort_port=self.zefort_port,
            keep_requests=False,
            rate_limit=self.bucket(),
        )


_SETTINGS: Final = ("CHAKRA_BASE_URL", "CHAKRA_TOKEN", "ZEFORT_BASE_URL", "ZEFORT_API_KEY")


def serve(options: SimulatorOptions, *, output: Output) -> int:
    """Serve until SIGINT or SIGTERM; print the settings the other commands read first."""

    async def work() -> int:
        simulator = options.simulator()
        try:
            await simulator.start()
        except OSError as exc:
            hint = " (try another --port, or --port 0)" if exc.errno == errno.EADDRINUSE else ""
            output.error(
                f"cannot listen on {options.host}:{options.chakra_port}: "
                f"{exc.strerror or exc}{hint}"
            )
            return EXIT_USAGE
        try:
            values: dict[str, Any] = dict(
                zip(
                    _SETTINGS,
                    (
                        simulator.chakra_url,
                        simulator.chakra_token,
                        simulator.zefort_url,
                        simulator.zefort_api_key,
                    ),
                    strict=True,
                )
            )
            if output.json_mode:
                output.json({name.lower(): value for name, value in values.items()})
            else:
                # Never wrapped: the lines are pasted into a shell.
                output.stdout.print(
                    "\n".join(f"export {name}={value}" for name, value in values.items()),
                    markup=False,
                    soft_wrap=True,
                )
                output.stdout.file.flush()
                output.note(
                    f"Serving the simulated Chakra and Zefort APIs with "
                    f"{options.faults.describe()}{options.describe_limit()}; Ctrl-C stops."
                )
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await simulator.aclose()
        return EXIT_OK  # pragma: no cover -- sleep_forever only ends by cancellation

    return run_async(work, output=output, ledger=Ledger(), stop_ok=True)
