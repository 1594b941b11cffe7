"""`python -m benchmarks [SCENARIO ...] [--quick | --smoke] [--runs N] [--results PATH]`."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks._harness import Row, results_markdown, run_case, table

if TYPE_CHECKING:
    from collections.abc import Sequence

    from benchmarks._harness import Case, Goal, Size

SCENARIOS = ("tracking", "streaming", "submission", "overhead", "faults", "ratelimit")
RESULTS = Path(__file__).with_name("RESULTS.md")
#: Runs of every contender when `--runs` is not given: three for the full run, one otherwise.
DEFAULT_RUNS: dict[str, int] = {"smoke": 1, "quick": 1, "full": 3}
METHOD = """
- Every server runs in its own process (`benchmarks._server`): the simulator
  (`asyncbulk.testing.Simulator`), and for some cases a server that only reads (it accepts the
  bulk requests and serves precomputed bodies, doing as little as it can, so the client is what is
  measured) or the simulator behind a rate-limiting middleware (a per-credential token bucket,
  sporadic 429s, one huge Retry-After: the independent server an outsider would test against).
  Benchmark data (tasks, processes, finished jobs) is created directly in the simulator's state, not
  through the API. Request counts are what the server received (retries and errors included).
- Every contender runs `--runs` times (3 in the full run), the contenders taking turns
  (A1 B1 C1 A2 B2 C2 ...), each time in a fresh client process (`benchmarks._client`), never two
  at the same time. Every figure in the table is the median of those runs, with the range
  (lowest-highest) in brackets; every goal is judged on the medians.
- Wall and CPU time (`getrusage(RUSAGE_SELF)`, user + system) cover the measured part only.
  "Peak RSS" is the process's resident-set high-water mark during that part (the kernel's mark
  reset just before it), "ΔRSS" its growth over the resident set at the start. "GC % CPU" is the
  time spent in the cyclic garbage collector (timed by `gc.callbacks`) over the client's CPU time.
- Each case names its floor (below): the least work that does the same job, measured in the same
  run (raw aiohttp + json or orjson, the same concurrency, no models), or computed from the run
  (the theoretical best behind a rate limit). "Memory above the empty process" is the peak RSS of
  the contender minus that of a client process that holds the same inputs and does nothing,
  measured in the same way.
- Throughput is items over wall time. CPU µs/req is client CPU over requests the server received.
- Tracker memory per task is marginal: the RSS growth of the 100,000-task run minus that of the
  10,000-task run, over the 90,000 extra tasks, so fixed costs cancel out.
- Detection lag is when the client saw a task finished minus when the server finished it (both wall
  clock, same machine). The tracking and fault cases add 5 ms to every Zefort request.
- Behind the rate limit, "rate used" is the requests the bucket admitted from the first task's
  finish to the end of the run, over what the bucket allows in that time (rate x seconds).
- Baselines are plain aiohttp + json (or orjson) code as a user would write it
  (`benchmarks/_baselines.py`).
- The machine is a shared 2-core machine (other work ran alongside): wall figures move between
  runs, ratios within one run are what count.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"any of {', '.join(SCENARIOS)}"
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a small version, about a minute")
    size.add_argument("--smoke", action="store_true", help="the smallest version, for tests")
    parser.add_argument(
        "--runs",
        type=int,
        metavar="N",
        help="runs of every contender, interleaved (default: 3 at full size, 1 otherwise)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        help="where to write the Markdown results (default: benchmarks/RESULTS.md after a full "
        "run of every scenario; otherwise nowhere)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="write a pyinstrument profile of every run into DIR, with the time spent in the "
        "garbage collector (needs pyinstrument; the figures of a profiled run are inflated)",
    )
    return parser


def _scenario(
    name: str, size: Size, runs: int, profiles: Path | None, started: float
) -> tuple[list[Row], list[Goal], list[tuple[str, Case]]]:
    """Run one scenario's cases; its rows (computed ones included), goals and cases."""
    module = importlib.import_module(f"benchmarks.{name}")
    rows: list[Row] = []
    cases: list[tuple[str, Case]] = []
    for case in module.plan(size):
        cases.append((name, case))

        def progress(label: str, result: dict[str, Any], title: str = case.title) -> None:
            status = result.get("error") or f"{result['wall']:.1f} s"
            print(
                f"[{time.monotonic() - started:6.1f} s] {name} / {title} / {label}: {status}",
                file=sys.stderr,
                flush=True,
            )

        rows.extend(run_case(name, case, runs, profiles, progress))
    derived = getattr(module, "derived", None)
    if derived is not None:
        rows = derived(rows, size)
    return rows, module.goals(rows, size), cases


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scenarios asked for, print the table and the goals; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}: choose from {', '.join(SCENARIOS)}")
    size: Size = "smoke" if args.smoke else "quick" if args.quick else "full"
    runs = DEFAULT_RUNS[size] if args.runs is None else args.runs
    if runs < 1:
        parser.error("--runs must be at least 1")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rows: list[Row] = []
    goals: list[Goal] = []
    cases: list[tuple[str, Case]] = []
    for name in args.scenarios or SCENARIOS:
        scenario_rows, scenario_goals, scenario_cases = _scenario(
            name, size, runs, args.profile, started
        )
        rows += scenario_rows
        goals += scenario_goals
        cases += scenario_cases
    seconds = time.monotonic() - started
    print(table(rows))
    print()
    for goal in goals:
        print(goal.line())
    print(f"\n{len(rows)} contenders, {runs} runs each, in {seconds:.0f} s ({size} size)")
    path = args.results
    if path is None and size == "full" and not args.scenarios:
        path = RESULTS
    if path is not None:
        text = results_markdown(
            rows,
            goals,
            cases,
            size=size,
            runs=runs,
            seconds=seconds,
            method=METHOD,
            scenarios=args.scenarios,
        )
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 1 if any(row.error for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
