"""`snowkit metrics`: a run's request metrics as a table, Prometheus text or JSON.

Reads ``.snowkit/runs/<run_id>/metrics.json`` (the latest run by default) or, with
``--textfile``, a ``*.prom`` file written for node_exporter.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from snowkit import paths
from snowkit.ops.metrics import MetricsCollector

_TABLE_COLUMNS = (
    "operation_name",
    "table",
    "total_requests",
    "failed_requests",
    "error_rate_percent",
    "average_response_time_ms",
    "p50_response_time_ms",
    "p95_response_time_ms",
    "p99_response_time_ms",
    "max_response_time_ms",
    "retries",
    "rate_limited",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("metrics", help="show a run's request metrics")
    parser.add_argument("--run", dest="run_id", help="run id (default: the latest run)")
    parser.add_argument(
        "--format", choices=("table", "prom", "json"), default="table", help="output format"
    )
    parser.add_argument("--textfile", type=Path, help="read this *.prom file instead of a run")
    parser.set_defaults(func=run_metrics)


def latest_run_with_metrics() -> Path | None:
    """The newest run folder holding metrics.json (run ids sort by time)."""
    root = paths.runs_dir()
    if not root.is_dir():
        return None
    candidates = sorted(p for p in root.iterdir() if (p / "metrics.json").is_file())
    return candidates[-1] if candidates else None


def run_metrics(args: argparse.Namespace) -> int:
    if args.textfile is not None:
        return _show_textfile(args.textfile, args.format)
    run_dir = paths.runs_dir() / args.run_id if args.run_id else latest_run_with_metrics()
    if run_dir is None or not (run_dir / "metrics.json").is_file():
        where = run_dir or paths.runs_dir()
        print(
            f"no metrics.json under {where}; run a load first (`snowkit load`) "
            "or pass --run RUN_ID / --textfile PATH",
            file=sys.stderr,
        )
        return 1
    if args.format == "prom":
        prom = run_dir / "metrics.prom"
        if not prom.is_file():
            print(f"{prom} does not exist; use --format table or json", file=sys.stderr)
            return 1
        sys.stdout.write(prom.read_text())
        return 0
    if args.format == "json":
        sys.stdout.write((run_dir / "metrics.json").read_text())
        return 0
    snapshot = MetricsCollector.load_snapshot(run_dir / "metrics.json")
    print(f"run {run_dir.name}")
    frame = snapshot.to_frame()
    if frame.empty:
        print("no requests recorded")
    else:
        print(frame.loc[:, list(_TABLE_COLUMNS)].round(1).to_string(index=False))
    if snapshot.system is not None:
        system = snapshot.system
        print(
            f"memory {system.memory_usage_mb} MiB, cpu {system.cpu_usage_percent}%, "
            f"health {system.health_status}, uptime {system.uptime_seconds} s, "
            f"breakers {system.circuit_breaker_states or '{}'}"
        )
    return 0


def _show_textfile(path: Path, fmt: str) -> int:
    if not path.is_file():
        print(f"no such textfile: {path}", file=sys.stderr)
        return 1
    text = path.read_text()
    if fmt == "prom":
        sys.stdout.write(text)
        return 0
    from prometheus_client.parser import text_string_to_metric_families

    try:
        rows = [
            {"name": sample.name, "labels": sample.labels, "value": sample.value}
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]
    except ValueError as exc:  # the parser's word for any malformed line
        print(
            f"{path} is not a Prometheus text file ({exc}); point --textfile at the file "
            "MetricsCollector.write_textfile wrote",
            file=sys.stderr,
        )
        return 1
    if fmt == "json":
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return 0
    for row in rows:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(row["labels"].items()))
        print(f"{row['name']}{{{labels}}} {row['value']:g}")
    return 0
