"""The collect+transform benchmark still runs (tiny size), so its harness cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_unifi_collect_benchmark_quick_run() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/unifi_collect.py",
            "--quick",
            "--clients",
            "600",
            "--sites",
            "3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    start = proc.stdout.index("{\n")
    figures = json.loads(proc.stdout[start:])
    assert figures["clients_in_lab"] == 600 and figures["records"] > 600
    assert figures["peak_rss_mb"] > 0 and figures["total_s"] > 0
