import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("tracking", "streaming", "submission", "overhead", "faults", "ratelimit")


def test_smoke_run_produces_a_table_with_figures(tmp_path):
    """`python -m benchmarks --smoke` runs every scenario and writes a table of figures."""
    results = tmp_path / "RESULTS.md"
    done = subprocess.run(  # noqa: S603 - our own module, no shell
        [sys.executable, "-m", "benchmarks", "--smoke", "--results", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert {row.split("|")[1].strip() for row in rows[1:]} == set(SCENARIOS)
    assert all(re.search(r"\| \d[\d,]*\.\d\d +\|", row) for row in rows[1:]), "a row has no wall"
    text = results.read_text(encoding="utf-8")
    assert "## Goals" in text
    assert "## Figures" in text
    assert re.search(r"^- (MET|NOT MET): ", text, re.MULTILINE)
