"""`python -m benchmarks [SCENARIO ...] [--quick | --smoke] [--results PATH]`."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks._harness import Row, results_markdown, run_case, table

if TYPE_CHECKING:
    from collections.abc import Sequence

    from benchmarks._harness import Goal, Size

SCENARIOS = ("tracking", "streaming", "submission", "overhead", "faults")
RESULTS = Path(__file__).with_name("RESULTS.md")
METHOD = """
- The simulator (`asyncbulk.testing.Simulator`) runs in its own process (`benchmarks._server`);
  benchmark data (tasks, processes, finished jobs) is created directly in its state, not through the
  API. Request counts are what the server received (retries and errors included).
- Every contender runs in a fresh client process (`benchmarks._client`), one after another, never at
  the same time. Wall and CPU time (`getrusage(RUSAGE_SELF)`, user + system) cover the measured part
  only; "Peak RSS" is the process's resident-set high-water mark during that part (the kernel's mark
  reset just before it), "ΔRSS" its growth over the resident set at the start.
- Throughput is items over wall time. CPU µs/req is client CPU over requests the server received;
  in the overhead scenario each contender is measured three times, taking turns, and the run of
  median CPU is shown.
- Tracker memory per task is marginal: the RSS growth of the 100,000-task run minus that of the
  10,000-task run, over the 90,000 extra tasks, so fixed costs cancel out.
- Detection lag is when the client saw a task finished minus when the server finished it (both wall
  clock, same machine). The tracking and fault cases add 5 ms to every Zefort request.
- Baselines are plain aiohttp + json code as a user would write it (`benchmarks/_baselines.py`).
- The machine is shared: wall figures move between runs, ratios within one run are what count.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"any of {', '.join(SCENARIOS)}"
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a small version, under a minute")
    size.add_argument("--smoke", action="store_true", help="the smallest version, for tests")
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
        help="write a pyinstrument profile of every run into DIR (needs pyinstrument; the "
        "figures of a profiled run are inflated)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scenarios asked for, print the table and the goals; return the exit status."""
    args = _parser().parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        _parser().error(f"unknown scenario {unknown[0]!r}: choose from {', '.join(SCENARIOS)}")
    size: Size = "smoke" if args.smoke else "quick" if args.quick else "full"
    chosen = args.scenarios or list(SCENARIOS)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rows: list[Row] = []
    goals: list[Goal] = []
    for name in chosen:
        module = importlib.import_module(f"benchmarks.{name}")
        scenario_rows: list[Row] = []
        for case in module.plan(size):
            for row in run_case(name, case, args.profile):
                scenario_rows.append(row)
                status = row.error or f"{row.result['wall']:.1f} s"
                print(
                    f"[{time.monotonic() - started:6.1f} s] {name} / {case.title} / "
                    f"{row.contender}: {status}",
                    file=sys.stderr,
                    flush=True,
                )
        rows.extend(scenario_rows)
        goals.extend(module.goals(scenario_rows, size))
    seconds = time.monotonic() - started
    print(table(rows))
    print()
    for goal in goals:
        print(goal.line())
    print(f"\n{len(rows)} runs in {seconds:.0f} s ({size} size)")
    path = args.results
    if path is None and size == "full" and not args.scenarios:
        path = RESULTS
    if path is not None:
        path.write_text(results_markdown(rows, goals, size, seconds, METHOD), encoding="utf-8")
        print(f"wrote {path}")
    return 1 if any(row.error for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
