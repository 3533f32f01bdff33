"""The benchmark harness cannot rot: every benchmark script's ``--quick`` mode must still run.

Each script runs as a subprocess, as ``make bench-quick`` runs it. Only the exit status and the
shape of the output are checked, never a time: timings on a shared machine are not assertions
(the figures live in docs/performance.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = (
    "load_throughput",
    "rerun_nochange",
    "memory_scaling",
    "rate_limited",
    "ops_overhead",
    "sandbox_capacity",
    "client_overhead",
    "unifi_collect",
    "analysis_frames",
)
#: A line every script prints once it has a result (our scripts print Markdown tables).
EXPECTED = {
    "load_throughput": "snowkit vs pysnc loop",
    "rerun_nochange": "writes on rerun: 0",
    "memory_scaling": "peak RSS at",
    "rate_limited": "failures: 0",
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", SCRIPTS)
def test_quick_mode_runs(name: str, tmp_path: Path) -> None:
    script = BENCHMARKS / f"{name}.py"
    if not script.exists():
        pytest.skip(f"benchmarks/{name}.py is not there yet")
    env = {**os.environ, "SNOWKIT_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, str(script), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, (
        f"{name} --quick failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    assert done.stdout.strip(), f"{name} --quick printed nothing"
    if name in EXPECTED:
        assert EXPECTED[name] in done.stdout, done.stdout[-3000:]
        assert "| " in done.stdout  # the table
