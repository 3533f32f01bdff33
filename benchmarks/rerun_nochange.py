"""Benchmark: a no-change rerun against the initial load: >= 10x faster, zero writes.

Each repetition starts a fresh embedded instance in its own process (50 ms + 0-10 ms latency,
concurrency cap 8, as in load_throughput.py), runs the real job (``run_load``) once to load
5,000 CIs with their relationships, then runs it again with the same inventory. The pair runs
back to back, so the ratio of each pair is immune to load that comes and goes; the verdict is
the median ratio over ``--reps`` pairs.

"Zero writes" is checked two ways, independently of what the engine reports about itself:
- the instance's store: record counts of ``cmn_location``, ``cmdb_ci`` (all classes) and
  ``cmdb_rel_ci``, and how many of them have ``sys_mod_count > 0`` (updated at least once),
  before and after the rerun;
- the audit trail: entries carrying the rerun's ``run_id`` (every write is audited).

    .venv/bin/python benchmarks/rerun_nochange.py           # 5,000 CIs, 3 pairs
    .venv/bin/python benchmarks/rerun_nochange.py --quick   # 30 CIs, 2 ms latency
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
    require_success,
    run_job,
    sandbox_process,
    snowkit_home,
    trust_only_explicit_cas,
    use_home,
)

GOAL_SPEEDUP = 10.0
TABLES = ("cmn_location", "cmdb_ci", "cmdb_rel_ci")


def store_state(instance: Instance) -> dict[str, int]:
    """Per table: how many records, and how many were ever updated (``sys_mod_count > 0``)."""
    state: dict[str, int] = {}
    with client_for(instance) as client:
        for table in TABLES:
            state[f"{table} records"] = client.count(table)
            state[f"{table} updated"] = client.count(table, "sys_mod_count>0")
    return state


def audited_writes(run_id: str) -> int:
    """Audit entries (not checkpoints) written by ``run_id``."""
    from snowkit import paths
    from snowkit.ops.audit import read_audit

    if not paths.audit_path().exists():
        return 0
    return sum(
        1
        for entry in read_audit(paths.audit_path())
        if entry.get("type") != "checkpoint" and entry.get("run_id") == run_id
    )


def one_pair(
    faults: dict[str, Any], inventory: Any, args: argparse.Namespace, state: Path, rep: int
) -> dict[str, Any]:
    with (
        sandbox_process(faults, state / f"sb-{rep}") as instance,
        use_home(state / f"home-{rep}"),  # a first run: no state from an earlier pair
    ):
        start = time.perf_counter()
        first = run_job(instance, inventory, workers=args.workers, batch_size=args.batch_size)
        initial_s = time.perf_counter() - start
        require_success(first, "initial load")
        before = store_state(instance)
        start = time.perf_counter()
        again = run_job(instance, inventory, workers=args.workers, batch_size=args.batch_size)
        rerun_s = time.perf_counter() - start
        require_success(again, "rerun")
        after = store_state(instance)
        audited = audited_writes(again.run_id)
        audited_initial = audited_writes(first.run_id)
    changed = {k: after[k] - before[k] for k in before if after[k] != before[k]}
    return {
        "initial_s": initial_s,
        "rerun_s": rerun_s,
        "created": first.applied["created"],
        "links": first.relationships.created,
        "rerun_applied": {k: v for k, v in again.applied.items() if v},
        "rerun_links_created": again.relationships.created,
        "store_changes": changed,
        "store_after": after,
        "audited": audited,
        "audited_initial": audited_initial,
        "rerun_timings": dict(again.timings),
        "initial_timings": dict(first.timings),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run (seconds)")
    parser.add_argument("--cis", type=int, default=None, help="CIs (default 5000)")
    parser.add_argument("--reps", type=int, default=None, help="pairs (default 3)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=None)
    parser.add_argument("--jitter-ms", type=float, default=None)
    parser.add_argument("--cap", type=int, default=8)
    args = parser.parse_args(argv)
    cis = args.cis or (30 if args.quick else 5000)
    reps = args.reps or (1 if args.quick else 3)
    latency = args.latency_ms if args.latency_ms is not None else (2.0 if args.quick else 50.0)
    jitter = args.jitter_ms if args.jitter_ms is not None else (1.0 if args.quick else 10.0)
    faults = {"latency_ms": latency, "latency_jitter_ms": jitter, "max_concurrency": args.cap}

    trust_only_explicit_cas()
    print(machine_summary(), flush=True)
    print(
        f"instance faults: {json.dumps(faults)}; workers={args.workers} "
        f"batch_size={args.batch_size}",
        flush=True,
    )
    pairs = []
    with snowkit_home() as state:
        inventory = collect(cis)
        for rep in range(reps):
            pair = one_pair(faults, inventory, args, state, rep)
            pairs.append(pair)
            print(
                f"  pair {rep + 1}: initial {pair['initial_s']:.2f} s "
                f"({pair['created']} records, {pair['links']} links), "
                f"rerun {pair['rerun_s']:.2f} s, store changes {pair['store_changes'] or 'none'}, "
                f"audited writes {pair['audited']} (initial load: {pair['audited_initial']})",
                flush=True,
            )
    load = os.getloadavg()[0]
    ratio = median([p["initial_s"] / p["rerun_s"] for p in pairs])
    writes = max(
        sum(abs(v) for v in p["store_changes"].values())
        + p["audited"]
        + sum(p["rerun_applied"].get(k, 0) for k in ("created", "updated", "retired"))
        + p["rerun_links_created"]
        for p in pairs
    )
    print()
    print(f"{cis} CIs; medians of {len(pairs)} back-to-back pairs; load average {load:.2f}")
    print_table(
        ["run", "time s", "writes (store / audit / engine)"],
        [
            [
                "initial load (run_load)",
                f"{median([p['initial_s'] for p in pairs]):.2f}",
                f"{pairs[0]['created']} records + {pairs[0]['links']} links",
            ],
            [
                "no-change rerun (run_load)",
                f"{median([p['rerun_s'] for p in pairs]):.2f}",
                f"{writes}",
            ],
        ],
    )
    phases = pairs[len(pairs) // 2]["rerun_timings"]
    print("rerun phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items() if v))
    print(f"store after: {pairs[-1]['store_after']}")
    judged = not args.quick
    ok_speed = ratio >= GOAL_SPEEDUP
    verdict = ("met" if ok_speed else "MISSED") if judged else "(quick mode: not judged)"
    print(f"rerun speed-up: {ratio:.1f}x (goal >= {GOAL_SPEEDUP:.0f}x) {verdict}")
    print(f"writes on rerun: {writes} (goal 0) {'met' if writes == 0 else 'MISSED'}")
    return 0 if writes == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
