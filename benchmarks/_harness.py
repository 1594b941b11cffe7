"""The parent side of the benchmarks: processes, rows, goals, the table and RESULTS.md.

A scenario module (`tracking`, `streaming`, ...) describes its cases with `plan(size)`: each
`Case` is one simulator process (or one per run) with a setup, and its `Run`s are contenders,
each measured in a fresh client process (`benchmarks._client`). The module also turns rows into
goals with `goals(rows)`.
"""

from __future__ import annotations

import json
import os
import platform
import re
import select
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

Size = Literal["smoke", "quick", "full"]
_SERVER_START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Run:
    """One contender measured once.

    Attributes:
        contender: The key of the scenario module's `CONTENDERS`.
        label: How the table names it.
        params: What the contender reads from `ctx.params`.
        unit: The unit of its throughput ("entries/s"), if it has one.
        timeout: Seconds before the parent gives up on the client process.
    """

    contender: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    unit: str | None = None
    timeout: float = 600.0


@dataclass(frozen=True)
class Case:
    """Runs that share a simulator setup.

    Attributes:
        title: How the table names the case.
        runs: The contenders.
        setup: Admin calls (path, body) the parent makes once per server before the runs; their
            answers are merged into the `setup` every run gets.
        server: The server's config (seed, page size, faults from the start).
        server_per_run: Start a fresh server for every run (when runs would disturb each other).
        rounds: Measure every run this many times, the runs taking turns, and keep for each the
            measurement of median CPU time: for figures a loaded machine makes noisy.
    """

    title: str
    runs: tuple[Run, ...]
    setup: tuple[tuple[str, dict[str, Any]], ...] = ()
    server: dict[str, Any] = field(default_factory=dict)
    server_per_run: bool = False
    rounds: int = 1


@dataclass
class Row:
    """The figures of one run, as the table shows them."""

    scenario: str
    case: str
    contender: str
    result: dict[str, Any]
    unit: str | None = None

    @property
    def error(self) -> str | None:
        """What went wrong, if the run failed."""
        return self.result.get("error")

    def get(self, key: str) -> Any:
        """A figure of the result, or None."""
        return self.result.get(key)

    @property
    def throughput(self) -> float | None:
        """Items per second of wall time, when the run counts items."""
        items, wall = self.result.get("items"), self.result.get("wall")
        if items is None or not wall:
            return None
        return float(items) / float(wall)

    @property
    def cpu_per_request_us(self) -> float | None:
        """Client CPU microseconds per request the server received."""
        cpu, requests = self.result.get("cpu"), self.result.get("requests")
        if cpu is None or not requests:
            return None
        return float(cpu) / float(requests) * 1e6

    def lag(self, key: str) -> float | None:
        """A detection-lag figure (p50, p99, max), when the run tracked tasks."""
        lag = self.result.get("lag") or {}
        value = lag.get(key)
        return None if value is None else float(value)


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
        verdict = {True: "MET", False: "MISSED", None: "NOT MEASURED"}[self.met]
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
) -> dict[str, Any]:
    """Measure one contender in a fresh client process; return its result (or an error)."""
    spec = {
        "scenario": scenario,
        "contender": run.contender,
        "params": run.params,
        "setup": setup,
        "server": server.hello,
        "profile": None if profile is None else str(profile),
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


def run_case(scenario: str, case: Case, profiles: Path | None = None) -> Iterator[Row]:
    """Run every contender of a case; yield a row per run as it finishes (or after all rounds).

    With `profiles`, a folder, each run writes a pyinstrument profile there.
    """
    server: Server | None = None
    setup: dict[str, Any] = {}
    results: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(case.runs))}
    try:
        for _ in range(case.rounds):
            for index, run in enumerate(case.runs):
                if server is None or case.server_per_run:
                    if server is not None:
                        server.close()
                    server, setup = _start(case)
                profile = None
                if profiles is not None:
                    name = re.sub(r"[^A-Za-z0-9]+", "-", f"{scenario} {case.title} {run.label}")
                    profile = profiles / f"{name.strip('-').lower()}.txt"
                result = run_client(scenario, run, server, setup, profile)
                if case.rounds == 1:
                    yield Row(scenario, case.title, run.label, result, run.unit)
                results[index].append(result)
    finally:
        if server is not None:
            server.close()
    if case.rounds > 1:
        for index, run in enumerate(case.runs):
            yield Row(scenario, case.title, run.label, _median(results[index]), run.unit)


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


def _median(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The result of median CPU time, noting the spread of all the rounds."""
    good = sorted((r for r in results if "error" not in r), key=lambda r: r["cpu"])
    if not good:
        return results[0]
    chosen = dict(good[len(good) // 2])
    spread = ", ".join(f"{r['cpu']:.2f}" for r in good)
    chosen["note"] = f"median of {len(good)} rounds by CPU s ({spread})"
    return chosen


# -- the table ----------------------------------------------------------------------------

_COLUMNS = (
    "Scenario",
    "Case",
    "Contender",
    "Wall s",
    "Requests",
    "Throughput",
    "Lag p50 s",
    "Lag p99 s",
    "CPU s",
    "CPU µs/req",
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


def _rate(row: Row) -> str:
    rate = row.throughput
    if rate is None or row.unit is None:
        return "-"
    return f"{rate:,.0f} {row.unit}"


def _notes(row: Row) -> str:
    if row.error:
        return f"FAILED: {row.error}"
    notes = []
    lag = row.get("lag")
    if lag and lag.get("detected") != lag.get("expected"):
        notes.append(f"detected {lag.get('detected')}/{lag.get('expected')}")
    statuses = row.get("by_status") or {}
    errors = {s: n for s, n in statuses.items() if not s.startswith("2")}
    if errors:
        notes.append("statuses " + ", ".join(f"{s}x{n}" for s, n in sorted(errors.items())))
    if row.get("note"):
        notes.append(str(row.get("note")))
    return "; ".join(notes)


def cells(row: Row) -> list[str]:
    """The table cells of one row."""
    if row.error:
        return [row.scenario, row.case, row.contender, *["-"] * 9, _notes(row)]
    peak, start = row.get("peak_rss_mb"), row.get("rss_start_mb")
    return [
        row.scenario,
        row.case,
        row.contender,
        _num(row.get("wall")),
        f"{row.get('requests') or 0:,}",
        _rate(row),
        _num(row.lag("p50")),
        _num(row.lag("p99")),
        _num(row.get("cpu")),
        _num(row.cpu_per_request_us, 0),
        _num(peak, 1),
        _num(None if peak is None or start is None else peak - start, 1),
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
        f"- CPUs: {os.cpu_count()}",
    ]


def results_markdown(
    rows: Sequence[Row], goals: Sequence[Goal], size: Size, seconds: float, method: str
) -> str:
    """The whole RESULTS.md."""
    return "\n".join(
        [
            "# Benchmark results",
            "",
            f"Written by `python -m benchmarks` ({size} size, {seconds / 60:.1f} minutes).",
            "",
            *environment(),
            "",
            "## Goals",
            "",
            *(f"- {goal.line()}" for goal in goals),
            "",
            "## Figures",
            "",
            table(rows),
            "",
            "## How it is measured",
            "",
            method.strip(),
            "",
        ]
    )
