"""Benchmark: peak RSS of a 50,000-CI load (goal <= 300 MB) and how time and memory grow.

Each size runs in its own child process, so one load's high-water mark never hides another's.
In the child, the embedded instance and the UniFi lab each run in a process of their own (their
memory is not snowkit's); the child collects the inventory from the lab through the real
collector, then runs the real job (``run_load``: transform, plan, Batch API writes,
relationships, verification). Its peak RSS (``ru_maxrss``) therefore covers what a user's
process holds for a load of that size. No latency is injected: time per CI here shows how the
CPU work grows, which is what would make a load super-linear.

    .venv/bin/python benchmarks/memory_scaling.py           # 1k, 5k, 20k, 50k CIs
    .venv/bin/python benchmarks/memory_scaling.py --quick   # 1k and 2k CIs

Sizes are run in rounds (ascending, then descending, ...) for ``--reps`` rounds; the table
shows per-size medians.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from load_throughput import (
    machine_summary,
    median,
    print_table,
    quiet_logs,
    require_success,
    run_job,
    sandbox_process,
    snowkit_home,
    trust_only_explicit_cas,
)

GOAL_MB = 300.0
HERE = Path(__file__).resolve()


def rss_peak_mb() -> float:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_now_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def serve_lab(cis: int) -> None:
    """Child mode: serve a lab of ``cis`` CIs on loopback until interrupted."""
    from load_throughput import lab_config
    from werkzeug.serving import make_server

    from snowkit.unifi import generate_lab, lab_app

    quiet_logs()
    app = lab_app(generate_lab(lab_config(cis)))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(
        json.dumps(
            {"port": server.server_port, "username": app.username, "password": app.password}
        ),
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


@contextlib.contextmanager
def lab_process(cis: int) -> Iterator[dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE), "--serve-lab", str(cis)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def collect_from(lab: dict[str, Any]) -> Any:
    import requests

    from snowkit.unifi import NetworkAppCollector

    session = requests.Session()
    session.trust_env = False
    base = f"http://127.0.0.1:{lab['port']}/network"
    collector = NetworkAppCollector(
        base, lab["username"], lab["password"], unifi_os=True, use_cache=False, session=session
    )
    return collector.collect()


def one_load(cis: int, workers: int, batch_size: int) -> dict[str, Any]:
    """Child mode: one load of ``cis`` CIs; returns the figures (printed as JSON)."""
    trust_only_explicit_cas()
    with (
        snowkit_home() as state,
        lab_process(cis) as lab,
        sandbox_process(None, state / "sb") as sb,
    ):
        base_mb = rss_now_mb()
        start = time.perf_counter()
        inventory = collect_from(lab)
        collect_s = time.perf_counter() - start
        start = time.perf_counter()
        report = run_job(sb, inventory, workers=workers, batch_size=batch_size)
        job_s = time.perf_counter() - start
        require_success(report, f"{cis}-CI load")
        return {
            "cis": cis,
            "records": report.applied["created"],
            "links": report.relationships.created,
            "collect_s": collect_s,
            "job_s": job_s,
            "baseline_mb": base_mb,
            "peak_mb": rss_peak_mb(),
            "timings": dict(report.timings),
        }


def run_child(cis: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(HERE),
        "--child",
        str(cis),
        "--workers",
        str(args.workers),
        "--batch-size",
        str(args.batch_size),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        sys.stderr.write(out.stdout[-2000:] + out.stderr[-4000:])
        raise SystemExit(f"the {cis}-CI child failed (exit {out.returncode})")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 2k CIs only")
    parser.add_argument("--sizes", type=str, default=None, help="comma-separated CI counts")
    parser.add_argument("--reps", type=int, default=None, help="rounds (default 2; quick 1)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--serve-lab", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_lab is not None:
        serve_lab(args.serve_lab)
        return 0
    if args.child is not None:
        print(json.dumps(one_load(args.child, args.workers, args.batch_size)), flush=True)
        return 0

    default = "1000,2000" if args.quick else "1000,5000,20000,50000"
    sizes = [int(s) for s in (args.sizes or default).split(",")]
    reps = args.reps or (1 if args.quick else 2)
    print(machine_summary(), flush=True)
    print(
        f"no injected latency; workers={args.workers} batch_size={args.batch_size}; "
        "instance and lab in their own processes",
        flush=True,
    )
    results: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
    for rep in range(reps):
        for cis in sizes if rep % 2 == 0 else list(reversed(sizes)):
            figures = run_child(cis, args)
            results[cis].append(figures)
            print(
                f"  round {rep + 1}: {cis} CIs: job {figures['job_s']:.2f} s, peak RSS "
                f"{figures['peak_mb']:.0f} MB (baseline {figures['baseline_mb']:.0f} MB)",
                flush=True,
            )
    rows = []
    previous: tuple[int, float] | None = None
    first = sizes[0]
    per_ci_first = median([r["job_s"] for r in results[first]]) / first
    for cis in sizes:
        rs = results[cis]
        job_s = median([r["job_s"] for r in rs])
        peak = median([r["peak_mb"] for r in rs])
        base = median([r["baseline_mb"] for r in rs])
        rows.append(
            [
                f"{cis:,}",
                f"{rs[0]['records']:,} + {rs[0]['links']:,}",
                f"{median([r['collect_s'] for r in rs]):.2f}",
                f"{job_s:.2f}",
                f"{job_s / cis * 1000:.3f}",
                f"{job_s / cis / per_ci_first:.2f}",
                f"{peak:.0f}",
                f"{peak - base:.0f}",
                "-"
                if previous is None
                else f"{(peak - previous[1]) / (cis - previous[0]) * 1024:.1f}",
            ]
        )
        previous = (cis, peak)
    print()
    print(f"medians of {reps} round(s); load average {__import__('os').getloadavg()[0]:.2f}")
    print_table(
        [
            "CIs",
            "records + links",
            "collect s",
            "load s",
            "ms / CI",
            f"time/CI vs {first:,}",
            "peak RSS MB",
            "above baseline MB",
            "marginal KB / CI",
        ],
        rows,
    )
    largest = sizes[-1]
    peak_largest = median([r["peak_mb"] for r in results[largest]])
    if args.quick:
        print(f"peak RSS at {largest:,} CIs: {peak_largest:.0f} MB (quick mode: not judged)")
    else:
        verdict = "met" if peak_largest <= GOAL_MB else "MISSED"
        print(
            f"peak RSS at {largest:,} CIs: {peak_largest:.0f} MB (goal <= {GOAL_MB:.0f}) {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
