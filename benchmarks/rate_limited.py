"""Benchmark: a load against a rate-limited, concurrency-capped instance: adaptive vs fixed.

Three instances (each its own process, 50 ms + 0-10 ms latency), so each kind of 429 shows on
its own and together:
- **cap**: at most ``--cap`` requests in progress; an excess request queues
  ``--queue-timeout-ms``, then gets 429 with Retry-After: 1;
- **rule**: a rate-limit rule of N requests per W-second window, per user (429 with
  Retry-After = seconds until the window resets);
- **rule+cap**: both (the issue's scenario).

Both contenders are the sync engine (``SyncEngine.sync``: plan, Batch API writes,
relationships, verification, built as ``run_load`` builds it) with the same workers and batch
size; the only difference is the write path's concurrency:
- **fixed**: ``workers`` batch requests in flight, whatever the instance answers;
- **adaptive**: the same under ``AdaptiveLimiter(initial=workers, maximum=workers,
  latency_factor=5)`` (what ``run_load`` uses), which halves its limit on a 429 (or a 5x
  latency jump) and adds one after good answers.
(The limiter wraps only the engine's write batches; plan and verification reads run at
``workers`` either way.)

Every request the client makes (reads, writes, retries) is counted by its MetricsCollector.
Goal: no failed or queued record or link in either mode (every 429 is waited out), fewer 429s
with the adaptive limiter, and the time. Modes alternate over ``--reps`` repetitions, each on a
fresh instance; the table shows medians. ``--quick`` runs only rule+cap, once, small.

    .venv/bin/python benchmarks/rate_limited.py           # 2,000 CIs, 3 repetitions
    .venv/bin/python benchmarks/rate_limited.py --quick   # 60 CIs, 5 ms latency
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from load_throughput import (
    Instance,
    client_for,
    collect,
    machine_summary,
    median,
    print_table,
    sandbox_process,
    snowkit_home,
    trust_only_explicit_cas,
    workload,
)

MODES = ("fixed", "adaptive")


def run_engine(
    instance: Instance, result: Any, *, mode: str, workers: int, batch_size: int
) -> dict[str, Any]:
    """One sync with the engine as ``run_load`` builds it, plus (or not) the adaptive limiter."""
    from snowkit import paths
    from snowkit.cmdb.apply import SyncEngine
    from snowkit.cmdb.outbox import Outbox
    from snowkit.cmdb.schema import ensure_schema
    from snowkit.ops.audit import AuditTrail
    from snowkit.ops.metrics import MetricsCollector
    from snowkit.servicenow import AdaptiveLimiter

    metrics = MetricsCollector()
    limiter = None
    if mode == "adaptive":  # as run_load builds it
        limiter = AdaptiveLimiter(initial=workers, minimum=1, maximum=workers, latency_factor=5.0)
    start = time.perf_counter()
    with client_for(instance, metrics=metrics) as client:
        ensure_schema(client, create=True)
        audit, outbox = AuditTrail(paths.audit_path()), Outbox()
        try:
            engine = SyncEngine(
                client,
                audit=audit,
                outbox=outbox,
                batch_size=batch_size,
                workers=workers,
                limiter=limiter,
            )
            _plan, report = engine.sync(result, progress=False)
        finally:
            audit.close()
            outbox.close()
    seconds = time.perf_counter() - start
    ops = metrics.all_operation_metrics()
    by_op: dict[str, int] = {}
    for m in ops:  # one entry per (operation, table)
        if m.rate_limited:
            by_op[m.operation_name] = by_op.get(m.operation_name, 0) + m.rate_limited
    return {
        "seconds": seconds,
        "status": report.status,
        "message": report.message,
        "created": report.applied.get("created", 0),
        "failed": report.applied.get("failed", 0) + report.relationships.failed,
        "queued": report.applied.get("queued", 0) + report.relationships.queued,
        "links": report.relationships.created,
        "requests": sum(m.total_requests for m in ops),
        "throttled": sum(m.rate_limited for m in ops),
        "throttled_by_op": by_op,
        "retries": sum(m.retries for m in ops),
        "limiter_cuts": limiter.cuts if limiter else 0,
        "limiter_final": limiter.limit if limiter else workers,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run (seconds)")
    parser.add_argument("--cis", type=int, default=None, help="CIs (default 2000)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=None, help="default 50; quick 5")
    parser.add_argument("--cap", type=int, default=4, help="the instance's concurrency cap")
    parser.add_argument("--queue-timeout-ms", type=float, default=10.0)
    parser.add_argument("--rate-requests", type=int, default=None, help="rule: requests ...")
    parser.add_argument("--rate-window", type=float, default=None, help="... per window (s)")
    parser.add_argument("--latency-ms", type=float, default=None)
    args = parser.parse_args(argv)
    cis = args.cis or (60 if args.quick else 2000)
    args.batch_size = args.batch_size or (5 if args.quick else 50)
    reps = args.reps or (1 if args.quick else 3)
    latency = args.latency_ms if args.latency_ms is not None else (5.0 if args.quick else 50.0)
    rate_requests = args.rate_requests or (30 if args.quick else 100)
    rate_window = args.rate_window or (1 if args.quick else 5)
    base = {"seed": 7, "latency_ms": latency, "latency_jitter_ms": latency / 5}
    cap = {"max_concurrency": args.cap, "queue_timeout_ms": args.queue_timeout_ms}
    rule = {"rate_limit": {"requests": rate_requests, "window_seconds": rate_window}}
    scenarios = {
        "cap": {**base, **cap},
        "rule": {**base, **rule},
        "rule+cap": {**base, **cap, **rule},
    }
    if args.quick:
        scenarios = {"rule+cap": scenarios["rule+cap"]}
    trust_only_explicit_cas()
    print(machine_summary(), flush=True)
    print(f"workers={args.workers} batch_size={args.batch_size}; scenarios:", flush=True)
    for name, faults in scenarios.items():
        print(f"  {name}: {json.dumps(faults)}", flush=True)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with snowkit_home() as state:
        result = workload(collect(cis))
        print(
            f"workload: {len(result.records)} records, {len(result.relationships)} links",
            flush=True,
        )
        for rep in range(reps):
            for scenario, faults in scenarios.items():
                for mode in MODES if rep % 2 == 0 else tuple(reversed(MODES)):
                    where = Path(state) / f"sb-{scenario}-{mode}-{rep}"
                    # the fields are created inside each run (same for both modes), as the
                    # rate limit's window counts every request
                    with sandbox_process(faults, where, set_up=False) as instance:
                        run = run_engine(
                            instance,
                            result,
                            mode=mode,
                            workers=args.workers,
                            batch_size=args.batch_size,
                        )
                    runs.setdefault((scenario, mode), []).append(run)
                    print(
                        f"  rep {rep + 1} {scenario:<8} {mode:<8} {run['seconds']:6.2f} s, "
                        f"{run['status']}, 429s {run['throttled']} {run['throttled_by_op']}, "
                        f"retries {run['retries']}, failed {run['failed']}, "
                        f"queued {run['queued']}, limiter cuts {run['limiter_cuts']}",
                        flush=True,
                    )
    print()
    print(
        f"{cis} CIs, {args.workers} workers, batch {args.batch_size}; medians of {reps} "
        f"alternating repetitions; load average {os.getloadavg()[0]:.2f}"
    )
    rows = []
    for (scenario, mode), rs in runs.items():
        rows.append(
            [
                scenario,
                mode,
                f"{median([r['seconds'] for r in rs]):.2f}",
                f"{median([r['requests'] for r in rs]):.0f}",
                f"{median([r['throttled'] for r in rs]):.0f}",
                f"{median([r['retries'] for r in rs]):.0f}",
                f"{median([r['limiter_cuts'] for r in rs]):.0f}",
                f"{max(r['failed'] for r in rs)}",
                f"{max(r['queued'] for r in rs)}",
                ", ".join(sorted({r["status"] for r in rs})),
            ]
        )
    print_table(
        [
            "instance",
            "mode",
            "time s",
            "requests",
            "429s",
            "retries",
            "limiter cuts",
            "failed (max)",
            "queued (max)",
            "status",
        ],
        rows,
    )
    for scenario in scenarios:
        fixed, adaptive = runs[(scenario, "fixed")], runs[(scenario, "adaptive")]
        t_ratio = median(
            [f["seconds"] / a["seconds"] for f, a in zip(fixed, adaptive, strict=True)]
        )
        fewer = median([r["throttled"] for r in adaptive]) < median([r["throttled"] for r in fixed])
        print(
            f"{scenario}: time fixed / adaptive (median of pairs) {t_ratio:.2f}; "
            f"fewer 429s with the adaptive limiter: {'yes' if fewer else 'no'}"
        )
    failures = sum(r["failed"] + r["queued"] for rs in runs.values() for r in rs)
    print(f"failures: {failures} (goal 0) {'met' if failures == 0 else 'MISSED'}")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
