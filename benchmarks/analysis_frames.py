"""Benchmark: structured-log JSON lines into a DataFrame (snowkit.analysis.logs_frame).

Goal: 1,000,000 lines in <= 10 s on 2 cores. Prints our time and its ratio against a naive
baseline run side by side (``json.loads`` per line, ``DataFrame(list_of_dicts)``, then
``to_datetime``), plus ``pandas.read_json(lines=True)`` for reference (which cannot skip a torn
line, so it is not an option for live logs anyway). ``--quick`` uses 50,000 lines.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from snowkit.analysis.frames import logs_frame

EVENTS = ("request", "operation_complete", "retry_scheduled", "rate_limited", "operation_start")


def write_log(path: Path, lines: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    base = pd.Timestamp("2026-01-01T00:00:00Z")
    with path.open("w", encoding="utf-8") as fh:
        for i in range(lines):
            event = rng.choice(EVENTS)
            record = {
                "timestamp": (base + pd.Timedelta(milliseconds=i * 37)).isoformat(),
                "level": "info",
                "event": event,
                "logger": "snowkit.servicenow",
                "run_id": "20260101T000000Z-abc123",
                "correlation_id": f"{rng.getrandbits(128):032x}",
                "operation": rng.choice(("query", "create", "update")),
                "table": rng.choice(
                    ("cmdb_ci_netgear", "cmdb_ci_ip_switch", "cmdb_ci_wap_network")
                ),
                "duration_ms": round(rng.lognormvariate(4, 0.6), 3),
            }
            if event == "request":
                record.update(method="GET", status_code=rng.choice((200, 200, 201, 429, 503)))
                record["attempt"] = 1
            fh.write(json.dumps(record) + "\n")
        fh.write('{"timestamp": "2026-01-01T00:00:00+00:00", "lev')  # torn last line


def naive(path: Path) -> pd.DataFrame:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    frame = pd.DataFrame(rows)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    return frame


def read_json(path: Path) -> pd.DataFrame:
    text = path.read_text(encoding="utf-8").rsplit("\n", 1)[0]  # it cannot skip the torn line
    from io import StringIO

    frame = pd.read_json(StringIO(text), lines=True, dtype=False)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    return frame


def timed(fn: Callable[[Path], pd.DataFrame], path: Path) -> tuple[float, int]:
    start = time.perf_counter()
    frame = fn(path)
    return time.perf_counter() - start, len(frame)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="50,000 lines instead of 1,000,000")
    parser.add_argument("--lines", type=int, default=None)
    args = parser.parse_args(argv)
    lines = args.lines or (50_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "snowkit.jsonl"
        write_log(path, lines)
        ours, n_ours = timed(logs_frame, path)
        base, n_base = timed(naive, path)
        rj, n_rj = timed(read_json, path)
    assert n_ours == n_base == n_rj == lines, (n_ours, n_base, n_rj)
    print(f"lines: {lines:,}")
    print(f"{'variant':<34}{'seconds':>9}{'ratio vs naive':>16}")
    for name, secs in (
        ("naive json.loads -> DataFrame", base),
        ("pandas.read_json(lines=True)", rj),
        ("snowkit logs_frame (orjson cols)", ours),
    ):
        print(f"{name:<34}{secs:>9.2f}{secs / base:>16.2f}")
    goal = 10.0 * lines / 1_000_000
    print(f"goal: <= {goal:.2f} s for this size -> {'met' if ours <= goal else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
