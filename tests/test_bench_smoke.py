"""Every benchmark in bench/ runs end to end in its smoke mode (tiny sizes, about a second per
measurement) against the local PostgreSQL, with the same Python as the tests, so that none of
them rots unnoticed when the application changes. Only the exit status and the headings of the
figures are checked: the figures of a smoke run mean nothing.

The selected benchmarks start together (each has its own databases and role) and each test
waits for its own: most of a smoke run is starting interpreters and waiting for commits, so
on two cores they take about half as long as one after the other."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 600

HEADINGS = {
    "transitions.py": ["## SQL per transition", "## Service layer", "## Raw psycopg baseline", "## HTTP", "## Worker memory", "## Target"],
    "privacy.py": ["## 1. Reading one person", "## 2. Audit verification", "## 3. Audit appends"],
    "handovers.py": ["## 1. Inbox latency", "## 2. Acknowledgements", "## Acknowledgement target"],
    "report.py": ["## Data", "## Report against hand-written SQL", "## Where the report's time goes",
                  "## OCEL export"],
    "retention.py": ["## Retention run", "## Master key rotation"],
    # Not a figure: the streamed export must be the same bytes as the whole document.
    "ocel.py": ["## OCEL export", "same bytes as before: yes", "## Over HTTP", "## Targets"],
    # Its exit status is 1 on any error, so the smoke run also asserts the mix answers as expected.
    "load.py": ["## Load: 5 users", "## Latency per request kind", "## Target"],
    # The README's first command, timed: it also fails if /docs never answers.
    "demo.py": ["## Demo: each run", "## Target"],
}


@pytest.fixture(scope="module")
def smoke_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[dict[str, tuple[subprocess.Popen, Path]]]:
    """The smoke runs of the benchmarks this session selected, started at once; output goes to
    files (a full pipe would stall a run whose test is not yet reading)."""
    selected = {item.callspec.params["script"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_benchmark_runs_in_smoke_mode"}
    out = tmp_path_factory.mktemp("bench-smoke")
    runs: dict[str, tuple[subprocess.Popen, Path]] = {}
    try:
        for script in sorted(selected):
            log = out / f"{script}.log"
            with open(log, "w") as fh:
                runs[script] = (subprocess.Popen([sys.executable, str(ROOT / "bench" / script), "--smoke"],
                                                 cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, text=True), log)
        yield runs
    finally:
        for proc, _ in runs.values():
            if proc.poll() is None:
                proc.terminate()  # the benchmark drops its databases on SIGTERM
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()


@pytest.mark.parametrize("script", sorted(HEADINGS))
def test_benchmark_runs_in_smoke_mode(script: str, smoke_runs: dict[str, tuple[subprocess.Popen, Path]]) -> None:
    proc, log = smoke_runs[script]
    status = proc.wait(TIMEOUT)
    output = log.read_text()
    assert status == 0, f"bench/{script} --smoke exited {status}:\n{output[-6000:]}"
    lines = output.splitlines()
    missing = [h for h in HEADINGS[script] if not any(line.startswith(h) for line in lines)]
    assert not missing, f"bench/{script} --smoke printed no {missing}:\n{output[-6000:]}"
