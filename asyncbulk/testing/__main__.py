"""`python -m asyncbulk.testing`: serve the simulated Chakra and Zefort APIs until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import TYPE_CHECKING

from ._simulator import Simulator

if TYPE_CHECKING:
    from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m asyncbulk.testing",
        description="Serve the simulated ChakraHQ and Zefort APIs until interrupted (Ctrl-C).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port",
        type=int,
        default=8080,
        help="Chakra's port; Zefort listens on the next one (0: free ports)",
    )
    parser.add_argument("--chakra-port", type=int, help="Chakra's port (overrides --port)")
    parser.add_argument("--zefort-port", type=int, help="Zefort's port (overrides --port + 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="simulated seconds per real second"
    )
    parser.add_argument(
        "--chakra-rate", type=float, default=20_000.0, help="Chakra entries per second per job"
    )
    parser.add_argument(
        "--chakra-error-rate", type=float, default=0.0, help="fraction of entries in ERROR"
    )
    parser.add_argument(
        "--zefort-delay", type=float, default=None, help="seconds a Zefort task takes (0.2-1)"
    )
    return parser


async def _serve(args: argparse.Namespace) -> None:
    chakra_port = args.chakra_port if args.chakra_port is not None else args.port
    zefort_port = args.zefort_port
    if zefort_port is None:
        zefort_port = args.port + 1 if args.port else 0
    async with Simulator(
        seed=args.seed,
        time_scale=args.time_scale,
        chakra_entries_per_second=args.chakra_rate,
        chakra_error_rate=args.chakra_error_rate,
        zefort_task_delay=(0.2, 1.0) if args.zefort_delay is None else args.zefort_delay,
        host=args.host,
        chakra_port=chakra_port,
        zefort_port=zefort_port,
        keep_requests=False,
    ) as sim:
        sys.stdout.write(
            f"Chakra: {sim.chakra_url}  (Authorization: Bearer {sim.chakra_token})\n"
            f"Zefort: {sim.zefort_url}  (Basic auth user {sim.zefort_api_key!r}, no password)\n"
            "Serving until Ctrl-C.\n"
        )
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the standalone simulator; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        sys.stderr.write(f"cannot serve: {exc}\n")
        return 1
    sys.stdout.write("Stopped.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
