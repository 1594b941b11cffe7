"""The parent side of the benchmarks: processes, rows, goals, the table and RESULTS.md.

A scenario module (`tracking`, `streaming`, ...) describes its cases with `plan(size)`: each
`Case` is one server process (or one per run) with a setup, and its `Run`s are contenders, one
of them (or a computed row) the case's floor. Every contender is measured `--runs` times, the
contenders taking turns, each time in a fresh client process (`benchmarks._client`); a `Row`
holds the runs of one contender and shows the median and the range of each figure. The module
turns rows into goals with `goals(rows, size)`, judged on the medians, and may add computed
rows (a theoretical best) with `derived(rows, size)`.
"""

from __future__ import annotations

import json
import os
import platform
import re
import select
import statistics
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

Size = Literal["smoke", "quick", "full"]
_SERVER_START_TIMEOUT = 120.0


@dataclass(frozen=True)
class Run:
    """One contender, measured `--runs` times.

    Attributes:
        contender: The key of the scenario module's `CONTENDERS`.
        label: How the table names it.
        params: What the contender reads from `ctx.params`.
        unit: The unit of its throughput ("entries/s"), if it has one.
        timeout: Seconds before the parent gives up on the client process.
        floor: This run is the case's floor: the least work that does the same job.
    """

    contender: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    unit: str | None = None
    timeout: float = 600.0
    floor: bool = False


@dataclass(frozen=True)
class Case:
    """Runs that share a server setup; every run is measured `--runs` times, interleaved.

    Attributes:
        title: How the table names the case.
        runs: The contenders; the one marked `floor` is measured alongside the others.
        floor: What the floor is, in words (also when it is computed, not run).
        setup: Admin calls (path, body) the parent makes once per server before the runs; their
            answers are merged into the `setup` every run gets.
        server: The server's config (seed, page size, faults from the start, read-only app).
        server_per_run: Start a fresh server for every run (when runs would disturb each other).
    """

    title: str
    runs: tuple[Run, ...]
    floor: str = ""
    setup: tuple[tuple[str, dict[str, Any]], ...] = ()
    server: dict[str, Any] = field(default_factory=dict)
    server_per_run: bool = False


Figure = Callable[[dict[str, Any]], float | None]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass
class Row:
    """The figures of one contender over its runs: each figure is the median of the runs.

    Attributes:
        scenario: The scenario module's name.
        case: The case's title.
        contender: The run's label.
        results: One result per run, in the order they ran (failed runs hold an `error`).
        unit: The unit of its throughput, if any.
        floor: Whether this row is its case's floor.
    """

    scenario: str
    case: str
    contender: str
    results: list[dict[str, Any]]
    unit: str | None = None
    floor: bool = False

    @property
    def good(self) -> list[dict[str, Any]]:
        """The results of the runs that did not fail."""
        return [r for r in self.results if "error" not in r]

    @property
    def error(self) -> str | None:
        """What went wrong, if any run failed (the first failure)."""
        return next((r["error"] for r in self.results if "error" in r), None)

    @property
    def result(self) -> dict[str, Any]:
        """The first good result (for what is not a number: notes, ids), or the first result."""
        good = self.good
        return good[0] if good else self.results[0]

    def values(self, figure: Figure) -> list[float]:
        """A figure of every good run, where the run has it."""
        return [v for v in (figure(r) for r in self.good) if v is not None]

    def median(self, figure: Figure) -> float | None:
        """The median of a figure over the good runs, None if no run has it."""
        values = self.values(figure)
        return statistics.median(values) if values else None

    def middle(self, figure: Figure) -> dict[str, Any] | None:
        """The good run at the median of a figure (the upper one of two), None if none has it.

        For figures read together from one run (a ratio and the two values it divides), where
        the median of each could come from a different run.
        """
        runs = sorted((v, i) for i, r in enumerate(self.good) if (v := figure(r)) is not None)
        return self.good[runs[len(runs) // 2][1]] if runs else None

    def spread(self, figure: Figure) -> tuple[float, float] | None:
        """The lowest and the highest value of a figure over the good runs."""
        values = self.values(figure)
        return (min(values), max(values)) if values else None

    def get(self, key: str) -> Any:
        """The median of a numeric figure of the results; any other value from `result`."""
        value = self.result.get(key)
        if _number(value) is None:
            return value
        return self.median(lambda r: _number(r.get(key)))

    @property
    def throughput(self) -> float | None:
        """Items per second of wall time, when the run counts items (median)."""
        return self.median(throughput)

    @property
    def cpu_per_request_us(self) -> float | None:
        """Client CPU microseconds per request the server received (median)."""
        return self.median(cpu_per_request_us)

    def lag(self, key: str) -> float | None:
        """A detection-lag figure (p50, p99, max), when the run tracked tasks (median)."""
        return self.median(lambda r: lag(r, key))


def throughput(result: dict[str, Any]) -> float | None:
    """Items per second of wall time of one result."""
    items, wall = result.get("items"), result.get("wall")
    return None if items is None or not wall else float(items) / float(wall)


def cpu_per_request_us(result: dict[str, Any]) -> float | None:
    """Client CPU microseconds per request the server received, of one result."""
    cpu, requests = result.get("cpu"), result.get("requests")
    return None if cpu is None or not requests else float(cpu) / float(requests) * 1e6


def lag(result: dict[str, Any], key: str) -> float | None:
    """A detection-lag figure of one result."""
    return _number((result.get("lag") or {}).get(key))


def rss_growth_mb(result: dict[str, Any]) -> float | None:
    """Peak RSS over the RSS at the start of the measured part, of one result."""
    peak, start = result.get("peak_rss_mb"), result.get("rss_start_mb")
    return None if peak is None or start is None else float(peak) - float(start)


def gc_share(result: dict[str, Any]) -> float | None:
    """The share of the client's CPU time spent in the garbage collector, of one result."""
    gc_seconds, cpu = result.get("gc_seconds"), result.get("cpu")
    return None if gc_seconds is None or not cpu else float(gc_seconds) / float(cpu)


@dataclass(frozen=True)
class Goal:
    """A target from the issues, judged on this run's rows.

    Attributes:
        name: What is measured.
        target: The target, in words.
        value: The figure measured, in words.
        ratio: The figure over the target (or the comparison's ratio), None if not measurable.
        met: Whether the target is met; None when it could not be judged.
        info: A figure that explains a goal rather than a goal of its own.
    """

    name: str
    target: str
    value: str
    ratio: float | None
    met: bool | None
    info: bool = False

    def line(self) -> str:
        """One line: verdict, name, target, value, ratio."""
        ratio = "" if self.ratio is None else f" (ratio {self.ratio:.2f})"
        if self.info:
            return f"INFO: {self.name}: {self.value}{ratio}"
        verdict = {True: "MET", False: "NOT MET", None: "NOT MEASURED"}[self.met]
        return f"{verdict}: {self.name}: target {self.target}; measured {self.value}{ratio}"


# -- processes ----------------------------------------------------------------------------


class Server:
    """The simulator process (`benchmarks._server`), stopped by closing its stdin."""

    def __init__(self, config: dict[str, Any]) -> None:
        """Start the process and read its hello line."""
        self.process = subprocess.Popen(  # noqa: S603 - our own module, no shell
            [sys.executable, "-m", "benchmarks._server", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], _SERVER_START_TIMEOUT)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.close()
            raise RuntimeError("the simulator process did not start serving")
        self.hello: dict[str, Any] = json.loads(line)

    def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call an admin route (POST with a body, GET without)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - our own loopback admin URL
            self.hello["admin_url"] + path,
            data=data,
            headers={"Content-Type": "application/json"},
            method="GET" if data is None else "POST",
        )
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - loopback
            return json.load(response)

    def close(self) -> None:
        """Close its stdin so it stops; kill it if it does not."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def run_client(
    scenario: str,
    run: Run,
    server: Server,
    setup: dict[str, Any],
    profile: Path | None = None,
    *,
    shared: bool = False,
) -> dict[str, Any]:
    """Measure one contender in a fresh client process; return its result (or an error).

    With `shared`, other runs use the same server after this one.
    """
    spec = {
        "scenario": scenario,
        "contender": run.contender,
        "params": run.params,
        "setup": setup,
        "server": server.hello,
        "profile": None if profile is None else str(profile),
        "shared_server": shared,
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks._client"],
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            timeout=run.timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {run.timeout:.0f} s"}
    lines = done.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        result = {"error": f"client exited {done.returncode} without a result"}
    if "error" in result and done.stderr:
        result["stderr"] = done.stderr[-2000:]
    return result


def run_case(
    scenario: str,
    case: Case,
    runs: int,
    profiles: Path | None = None,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> list[Row]:
    """Measure every contender of a case `runs` times, interleaved; a row per contender.

    The contenders take turns (A1 B1 C1 A2 B2 C2 ...), so a change in the machine's load
    hits them alike. With `profiles`, a folder, each run writes a pyinstrument profile there;
    `progress` is called with the label and the result of each run as it ends.
    """
    server: Server | None = None
    setup: dict[str, Any] = {}
    results: list[list[dict[str, Any]]] = [[] for _ in case.runs]
    try:
        for round_ in range(runs):
            for index, run in enumerate(case.runs):
                if server is None or case.server_per_run:
                    if server is not None:
                        server.close()
                    server, setup = _start(case)
                profile = None
                if profiles is not None:
                    name = re.sub(r"[^A-Za-z0-9]+", "-", f"{scenario} {case.title} {run.label}")
                    profile = profiles / f"{name.strip('-').lower()}-{round_ + 1}.txt"
                result = run_client(
                    scenario, run, server, setup, profile, shared=not case.server_per_run
                )
                results[index].append(result)
                if progress is not None:
                    progress(run.label, result)
    finally:
        if server is not None:
            server.close()
    return [
        Row(scenario, case.title, run.label, results[index], run.unit, run.floor)
        for index, run in enumerate(case.runs)
    ]


def _start(case: Case) -> tuple[Server, dict[str, Any]]:
    """A server for the case, set up; the merged answers of its setup calls."""
    server = Server(case.server)
    setup: dict[str, Any] = {}
    try:
        for path, body in case.setup:
            setup |= server.admin(path, body)
    except BaseException:
        server.close()
        raise
    return server, setup


# -- the table ----------------------------------------------------------------------------

_COLUMNS = (
    "Scenario",
    "Case",
    "Contender",
    "Runs",
    "Wall s",
    "Requests",
    "Throughput",
    "Lag p50 s",
    "Lag p99 s",
    "CPU s",
    "CPU µs/req",
    "GC % CPU",
    "Peak RSS MB",
    "ΔRSS MB",
    "Notes",
)


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def median_range(row: Row, figure: Figure, digits: int = 2, scale: float = 1.0) -> str:
    """A figure's median over the runs, then its range (min-max) when there are several."""
    values = row.values(figure)
    if not values:
        return "-"
    middle = _num(statistics.median(values) * scale, digits)
    if min(values) == max(values):
        return middle
    return f"{middle} ({_num(min(values) * scale, digits)}-{_num(max(values) * scale, digits)})"


def _rate(row: Row) -> str:
    if row.unit is None:
        return "-"
    text = median_range(row, throughput, 0)
    return "-" if text == "-" else f"{text} {row.unit}"


def _notes(row: Row) -> str:
    notes = []
    failed = len(row.results) - len(row.good)
    if failed:
        notes.append(f"FAILED {failed} of {len(row.results)}: {row.error}")
    if not row.good:
        return "; ".join(notes)
    lag_ = row.result.get("lag")
    if lag_ and lag_.get("detected") != lag_.get("expected"):
        notes.append(f"detected {lag_.get('detected')}/{lag_.get('expected')}")
    statuses = row.result.get("by_status") or {}
    errors = {s: n for s, n in statuses.items() if not s.startswith("2")}
    if errors:
        notes.append("statuses " + ", ".join(f"{s}x{n}" for s, n in sorted(errors.items())))
    refused = (row.result.get("limit") or {}).get("refused_by") or {}
    listing = refused.get("GET /api/tasks/", 0)
    if listing:
        # A refused listing page delays every task on it by the Retry-After: the lag's tail.
        notes.append(f"{listing} of the 429s on listing pages")
    if row.result.get("note"):
        notes.append(str(row.result.get("note")))
    return "; ".join(notes)


def _requests(result: dict[str, Any]) -> float | None:
    return _number(result.get("requests"))


def cells(row: Row) -> list[str]:
    """The table cells of one row: medians, and the range over the runs in brackets."""
    label = f"floor: {row.contender}" if row.floor else row.contender
    runs = f"{len(row.good)}/{len(row.results)}"
    if not row.good:
        return [row.scenario, row.case, label, runs, *["-"] * 10, _notes(row)]
    return [
        row.scenario,
        row.case,
        label,
        runs,
        median_range(row, lambda r: _number(r.get("wall"))),
        median_range(row, _requests, 0),
        _rate(row),
        median_range(row, lambda r: lag(r, "p50")),
        median_range(row, lambda r: lag(r, "p99")),
        median_range(row, lambda r: _number(r.get("cpu"))),
        median_range(row, cpu_per_request_us, 0),
        median_range(row, gc_share, 0, 100.0),
        median_range(row, lambda r: _number(r.get("peak_rss_mb")), 1),
        median_range(row, rss_growth_mb, 1),
        _notes(row),
    ]


def table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table (also readable as plain text)."""
    lines = [_COLUMNS, *(tuple(cells(row)) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(_COLUMNS))]

    def render(line: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([render(lines[0]), rule, *(render(line) for line in lines[1:])])


def floors(cases: Sequence[tuple[str, Case]]) -> list[str]:
    """One line per case naming its floor."""
    return [
        f"- {scenario} / {case.title}: {case.floor or 'none named'}" for scenario, case in cases
    ]


# -- RESULTS.md ---------------------------------------------------------------------------


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment() -> list[str]:
    """Lines describing where and with what the benchmarks ran."""
    packages = ", ".join(
        f"{name} {_version(name)}" for name in ("asyncbulk", "aiohttp", "anyio", "attrs", "cattrs")
    )
    return [
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        (
            f"- Python {platform.python_version()} ({platform.python_implementation()}) on "
            f"{platform.system()} {platform.release()} {platform.machine()}"
        ),
        f"- Libraries: {packages}",
        (
            f"- CPUs: {os.cpu_count()}, shared with other work while the benchmarks ran: wall "
            "figures move between runs; ratios within one run are what count"
        ),
    ]


def results_markdown(
    rows: Sequence[Row],
    goals: Sequence[Goal],
    cases: Sequence[tuple[str, Case]],
    *,
    size: Size,
    runs: int,
    seconds: float,
    method: str,
    scenarios: Sequence[str] = (),
) -> str:
    """The whole RESULTS.md (`scenarios`: those run, when not all were)."""
    return "\n".join(
        [
            "# Benchmark results",
            "",
            (
                f"Written by `python -m benchmarks` ({size} size, {runs} runs of every "
                f"contender, {seconds / 60:.1f} minutes)."
            ),
            *([f"Scenarios run: {', '.join(scenarios)} (not the others)."] if scenarios else []),
            "",
            *environment(),
            "",
            "## Goals",
            "",
            *(f"- {goal.line()}" for goal in goals),
            "",
            "## Figures",
            "",
            "Each figure is the median of the runs, with the range (lowest-highest) in brackets.",
            "",
            table(rows),
            "",
            "## The floors",
            "",
            *floors(cases),
            "",
            "## How it is measured",
            "",
            method.strip(),
            "",
        ]
    )
