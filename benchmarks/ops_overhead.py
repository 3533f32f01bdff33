"""Benchmark: per-call overhead of the operational layer (snowkit.ops) on a request's path.

Goal: each component well under 50 µs median, the whole stack under 150 µs per request
(a ServiceNow round trip is tens to hundreds of ms). Every call is timed on its own with
``perf_counter_ns``; the table shows median and p95 in µs, with an empty call measured side by
side as the floor (timer overhead included in every row). ``--quick`` runs fewer iterations.

Components: metrics ``record_request``; one structlog JSON log line to a file (through
``configure_logging``); ``CircuitBreaker.call``; ``RetryManager.execute_with_retry`` on
success; ``AuditTrail.record`` without and with fsync; and the composed stack (retry → breaker →
request stub → metrics → log → audit inside a batch, i.e. one fsync per batch).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from snowkit.ops.audit import AuditTrail
from snowkit.ops.breaker import CircuitBreaker
from snowkit.ops.logging import configure_logging, get_logger
from snowkit.ops.metrics import MetricsCollector
from snowkit.ops.retry import RetryManager, RetryPolicy

COMPONENT_GOAL_US = 50.0
STACK_GOAL_US = 150.0


@dataclass
class Result:
    name: str
    iterations: int
    median_us: float
    p95_us: float
    goal_us: float | None

    @property
    def verdict(self) -> str:
        if self.goal_us is None:
            return ""
        return "ok" if self.median_us < self.goal_us else "OVER GOAL"


def measure(fn: Callable[[], object], iterations: int, warmup: int = 200) -> tuple[float, float]:
    """(median, p95) in µs over ``iterations`` individually timed calls."""
    for _ in range(min(warmup, iterations)):
        fn()
    clock = time.perf_counter_ns
    timings = [0] * iterations
    gc.collect()
    for i in range(iterations):
        start = clock()
        fn()
        timings[i] = clock() - start
    timings.sort()
    median = statistics.median(timings) / 1000.0
    p95 = timings[min(len(timings) - 1, int(0.95 * len(timings)))] / 1000.0
    return median, p95


def run(iterations: int, fsync_iterations: int, workdir: Path) -> list[Result]:
    results: list[Result] = []

    def add(name: str, fn: Callable[[], object], n: int, goal: float | None) -> None:
        median, p95 = measure(fn, n, warmup=min(200, n // 10 + 1))
        results.append(Result(name, n, median, p95, goal))

    add("empty call (timer floor)", lambda: None, iterations, None)

    metrics = MetricsCollector()
    add(
        "metrics.record_request",
        lambda: metrics.record_request("GET", "query", 200, 12.5, "cmdb_ci"),
        iterations,
        COMPONENT_GOAL_US,
    )

    configure_logging(level="INFO", file_path=workdir / "bench.jsonl", console=False)
    log = get_logger("snowkit.bench")
    add(
        "log line (structlog JSON to file)",
        lambda: log.info(
            "request", method="GET", table="cmdb_ci", status_code=200, duration_ms=12.5, attempt=1
        ),
        iterations,
        COMPONENT_GOAL_US,
    )

    breaker = CircuitBreaker(name="bench", log_transitions=False)
    add("breaker.call", lambda: breaker.call(_request_stub, "query"), iterations, COMPONENT_GOAL_US)

    retry = RetryManager(RetryPolicy(max_attempts=3), sleep=lambda _s: None)
    add(
        "retry wrapper (success)",
        lambda: retry.execute_with_retry(_request_stub, operation_name="query"),
        iterations,
        COMPONENT_GOAL_US,
    )

    audit = AuditTrail(workdir / "audit" / "audit.jsonl", key=b"bench-key", fsync=False)
    record = _audit_record(audit)
    add("audit append (no fsync)", record, iterations, COMPONENT_GOAL_US)
    audit.close()

    synced = AuditTrail(workdir / "audit-fsync" / "audit.jsonl", key=b"bench-key", fsync=True)
    add("audit append (fsync each)", _audit_record(synced), fsync_iterations, None)
    synced.close()

    stack_audit = AuditTrail(workdir / "audit-stack" / "audit.jsonl", key=b"bench-key", fsync=True)
    stack_metrics = MetricsCollector()
    stack_breaker = CircuitBreaker(name="stack", log_transitions=False)
    stack_retry = RetryManager(RetryPolicy(max_attempts=3), sleep=lambda _s: None)

    def one_request() -> None:
        started = time.perf_counter()
        response = stack_breaker.call(_request_stub, "create")
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        stack_metrics.record_request("POST", "create", response, elapsed_ms, "cmdb_ci")
        log.info(
            "request", method="POST", table="cmdb_ci", status_code=response, duration_ms=elapsed_ms
        )
        stack_audit.record("create", "cmdb_ci", "0" * 32, source_id="unifi:1", after={"n": 1})

    with stack_audit.batch():  # the sync engine writes in batches: one fsync per batch
        add(
            "whole stack per request",
            lambda: stack_retry.execute_with_retry(one_request, operation_name="create"),
            iterations,
            STACK_GOAL_US,
        )
    stack_audit.close()
    configure_logging(console=True)
    return results


def _request_stub() -> int:
    return 201


def _audit_record(trail: AuditTrail) -> Callable[[], object]:
    before = {"name": "usw-flex-1", "ip_address": "10.0.0.2", "serial_number": "F09FC2A1B2C3"}
    after = {**before, "ip_address": "10.0.0.3"}

    def record() -> object:
        return trail.record(
            "update", "cmdb_ci_ip_switch", "0" * 32, "unifi:abc", before=before, after=after
        )

    return record


def print_table(results: list[Result]) -> None:
    header = (
        f"{'component':36} {'iters':>8} {'median µs':>10} {'p95 µs':>9} {'goal µs':>8}  verdict"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        goal = f"{r.goal_us:.0f}" if r.goal_us is not None else "-"
        print(
            f"{r.name:36} {r.iterations:>8} {r.median_us:>10.2f} {r.p95_us:>9.2f} "
            f"{goal:>8}  {r.verdict}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (seconds)")
    parser.add_argument("--iterations", type=int, default=None)
    args = parser.parse_args(argv)
    iterations = args.iterations or (5_000 if args.quick else 100_000)
    fsync_iterations = 50 if args.quick else 1_000
    with tempfile.TemporaryDirectory(prefix="snowkit-bench-") as tmp:
        results = run(iterations, fsync_iterations, Path(tmp))
    print(f"snowkit.ops per-call overhead (Python {sys.version.split()[0]})")
    print_table(results)
    over = [r.name for r in results if r.verdict == "OVER GOAL"]
    if over:
        print(f"over goal: {', '.join(over)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
