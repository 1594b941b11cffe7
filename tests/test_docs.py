"""Every code sample of the documentation site runs, and the reference covers the public API."""

import re
import sys
from pathlib import Path

import anyio
import pytest

import asyncbulk
import asyncbulk.chakra
import asyncbulk.zefort

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def samples() -> list[pytest.param]:
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        for number, match in enumerate(FENCE.finditer(page.read_text()), 1):
            name = f"{page.relative_to(DOCS).with_suffix('')}-{number}"
            found.append(pytest.param(match.group(1), id=name))
    return found


def test_the_site_has_samples():
    """The extraction finds the samples (a broken pattern would make every page pass)."""
    assert len(samples()) >= 10


@pytest.mark.anyio
@pytest.mark.parametrize("code", samples())
async def test_sample_runs(code, tmp_path):
    """The sample runs as written, as a script, against the simulator it starts, and exits 0."""
    script = tmp_path / "sample.py"
    script.write_text(code)
    with anyio.fail_after(120):
        process = await anyio.run_process([sys.executable, str(script)], check=False)
    assert process.returncode == 0, process.stderr.decode()


def test_reference_covers_every_public_name():
    """Each name asyncbulk exports is on a reference page: the root's list or its vendor's page."""
    root = (DOCS / "reference" / "asyncbulk.md").read_text()
    listed = set(re.findall(r"^        - (\w+)$", root, re.MULTILINE))
    vendors = set(asyncbulk.chakra.__all__) | set(asyncbulk.zefort.__all__)
    missing = set(asyncbulk.__all__) - listed - vendors - {"__version__"}
    assert not missing
    for module in ("chakra", "zefort", "testing"):
        page = (DOCS / "reference" / f"{module}.md").read_text()
        assert f"::: asyncbulk.{module}\n" in page
