"""Realistic snowkit state for analysis tests, written in the formats of docs/architecture.md.

The analysis layer reads files other parts write; these builders write them independently
(seeded, deterministic) so the tests pin the on-disk contract, not another module's code.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BASE = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
RUN_ID = "20260301T080000Z-a1b2c3"
TABLES = ("cmdb_ci_netgear", "cmdb_ci_ip_switch", "cmdb_ci_wap_network")
OPERATIONS = ("query", "create", "update")


def ts(seconds: float) -> str:
    return (BASE + timedelta(seconds=seconds)).isoformat()


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")
    return path


def tear(path: Path, *, blank_lines: int = 2) -> None:
    """Append blank lines and a half-written last line, as a crash mid-write leaves."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write("\n" * blank_lines)
        fh.write('{"timestamp": "2026-03-01T09:00:00+00:00", "level": "info", "ev')


@dataclass
class LogPlan:
    """What the generated log contains, so tests can assert exact counts."""

    requests: int = 0
    status_429: int = 0
    retries_5xx: int = 0
    rate_limited: int = 0
    breaker_opens: int = 0
    quality: dict[str, int] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)


def log_records(n_requests: int = 300, seed: int = 7) -> LogPlan:
    """A load run's structured log: requests, retries, 429s, a breaker episode, data quality."""
    rng = random.Random(seed)
    plan = LogPlan()
    out = plan.records
    for i in range(n_requests):
        t = i * 6.0  # one request every 6 s: 30 minutes of traffic
        op = OPERATIONS[i % 3]
        table = TABLES[i % len(TABLES)]
        status = 200 if op == "query" else 201
        if i % 25 == 7:
            status = 429
        elif i % 40 == 13:
            status = 503
        cid = f"{rng.getrandbits(128):032x}"
        common = {"logger": "snowkit.servicenow", "run_id": RUN_ID, "correlation_id": cid}
        out.append(
            {
                "timestamp": ts(t),
                "level": "info",
                "event": "request",
                **common,
                "method": "GET" if op == "query" else "POST",
                "table": table,
                "status_code": status,
                "duration_ms": round(rng.uniform(40, 400), 2),
                "attempt": 1,
                "operation": op,
            }
        )
        plan.requests += 1
        if status == 429:
            plan.status_429 += 1
            plan.rate_limited += 1
            out.append(
                {
                    "timestamp": ts(t + 0.1),
                    "level": "warning",
                    "event": "rate_limited",
                    **common,
                    "retry_after_s": 2.0,
                    "operation": op,
                }
            )
            out.append(
                {
                    "timestamp": ts(t + 0.2),
                    "level": "info",
                    "event": "retry_scheduled",
                    **common,
                    "operation": op,
                    "attempt": 1,
                    "delay_s": 2.0,
                    "reason": "rate_limit 429",
                }
            )
        elif status == 503:
            plan.retries_5xx += 1
            out.append(
                {
                    "timestamp": ts(t + 0.2),
                    "level": "info",
                    "event": "retry_scheduled",
                    **common,
                    "operation": op,
                    "attempt": 1,
                    "delay_s": 1.3,
                    "reason": "servicenow_api 503",
                }
            )
    for t, old, new in (
        (600, "closed", "open"),
        (660, "open", "half_open"),
        (661, "half_open", "closed"),
    ):
        out.append(
            {
                "timestamp": ts(t),
                "level": "warning",
                "event": "breaker_state_change",
                "logger": "snowkit.ops.breaker",
                "run_id": RUN_ID,
                "breaker": "servicenow",
                "old": old,
                "new": new,
            }
        )
        plan.breaker_opens += new == "open"
    for t, rule, n in ((30, "missing_mac", 3), (31, "bad_ip", 2), (32, "missing_mac", 1)):
        out.append(
            {
                "timestamp": ts(t),
                "level": "warning",
                "event": "data_quality_issue",
                "logger": "snowkit.cmdb",
                "run_id": RUN_ID,
                "issue_type": rule,
                "affected_records": n,
                "details": {"site": "default"},
            }
        )
        plan.quality[rule] = plan.quality.get(rule, 0) + n
    out.append(
        {
            "timestamp": ts(1),
            "level": "info",
            "event": "credential_access",
            "logger": "snowkit.credentials",
            "method": "basic",
            "success": True,
        }
    )
    out.sort(key=lambda r: r["timestamp"])
    return plan


def error_records(n: int = 40) -> list[dict[str, Any]]:
    """``ErrorContext.to_dict()`` lines across categories and severities."""
    kinds = (
        ("rate_limit", "medium", 429, True),
        ("servicenow_api", "high", 503, True),
        ("data_validation", "low", None, False),
        ("authentication", "critical", 401, False),
    )
    out = []
    for i in range(n):
        category, severity, status, retryable = kinds[i % len(kinds)]
        out.append(
            {
                "operation": OPERATIONS[i % 3],
                "category": category,
                "severity": severity,
                "timestamp": ts(i * 45.0),
                "error_message": f"{category} problem #{i}",
                "stack_trace": None,
                "input_data": {"table": TABLES[i % 3]},
                "environment_info": {"python": "3.11"},
                "correlation_id": f"{i:032x}",
                "retryable": retryable,
                "http_status": status,
                "details": {"attempt": 1},
            }
        )
    return out


def audit_records(
    n: int = 12, checkpoint_every: int = 5, start_seq: int = 1, prev_hash: str = "0" * 64
) -> tuple[list[dict[str, Any]], str]:
    """Chained audit entries with checkpoint lines; returns (lines, last hash)."""
    out: list[dict[str, Any]] = []
    seq = start_seq
    for i in range(n):
        entry = {
            "seq": seq,
            "timestamp": ts(i * 10.0),
            "run_id": RUN_ID,
            "correlation_id": f"{i:032x}",
            "actor": "snowkit",
            "action": ("create", "update", "delete")[i % 3],
            "table": TABLES[i % 3],
            "sys_id": f"{i:032x}",
            "source_id": f"unifi:dev-{i}",
            "before": None if i % 3 == 0 else {"name": f"old-{i}"},
            "after": {"name": f"dev-{i}"},
            "outcome": "success" if i % 7 else "failure",
            "prev_hash": prev_hash,
        }
        entry["hash"] = hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()
        prev_hash = entry["hash"]
        out.append(entry)
        seq += 1
        if (i + 1) % checkpoint_every == 0:
            out.append(
                {
                    "seq": seq,
                    "type": "checkpoint",
                    "timestamp": ts(i * 10.0 + 1),
                    "covers_hash": prev_hash,
                    "hmac": "ab" * 32,
                }
            )
            seq += 1
    return out, prev_hash


def metrics_snapshot(n_samples: int = 200, slow_op: str = "create") -> dict[str, Any]:
    """A ``metrics.json`` snapshot: operations, system and request samples."""
    rng = random.Random(11)
    samples = []
    for i in range(n_samples):
        op = OPERATIONS[i % 3]
        scale = 3000 if op == slow_op else 120
        status = 429 if i % 50 == 3 else 200
        samples.append(
            {
                "timestamp": ts(i * 3.0),
                "operation": op,
                "table": TABLES[i % 3],
                "method": "GET" if op == "query" else "POST",
                "status_code": status,
                "duration_ms": round(rng.uniform(0.5, 1.5) * scale, 2),
                "ok": status < 400,
            }
        )
    operations = []
    for op in OPERATIONS:
        durations = sorted(s["duration_ms"] for s in samples if s["operation"] == op)
        failed = sum(not s["ok"] for s in samples if s["operation"] == op)
        total = len(durations)
        operations.append(
            {
                "operation_name": op,
                "total_requests": total,
                "successful_requests": total - failed,
                "failed_requests": failed,
                "average_response_time_ms": sum(durations) / total,
                "p50_response_time_ms": durations[total // 2],
                "p95_response_time_ms": durations[int(total * 0.95)],
                "p99_response_time_ms": durations[int(total * 0.99)],
                "max_response_time_ms": durations[-1],
                "error_rate_percent": 100 * failed / total,
                "last_updated": ts(600),
            }
        )
    system = {
        "memory_usage_mb": 180.5,
        "cpu_usage_percent": 12.0,
        "active_connections": 4,
        "circuit_breaker_states": {"servicenow": "closed"},
        "health_status": "pass",
        "uptime_seconds": 900,
    }
    return {"operations": operations, "system": system, "samples": samples}


def run_report(run_id: str = RUN_ID, started: float = 0.0) -> dict[str, Any]:
    """A load run's ``report.json`` (the sync engine's RunReport.to_dict() shape)."""

    def failure(table: str, i: int) -> dict[str, Any]:
        return {
            "source_id": f"unifi:dev-{i}",
            "table": table,
            "action": "create",
            "error": "servicenow_api 500",
            "status_code": 500,
            "sys_id": None,
        }

    return {
        "run_id": run_id,
        "status": "partial",
        "message": "",
        "started": ts(started),
        "finished": ts(started + 95.5),
        "duration_s": 95.5,
        "counts": {
            "cmdb_ci_netgear": {
                "create": 3,
                "update": 1,
                "no_change": 5,
                "not_seen": 0,
                "retire": 0,
            },
            "cmdb_ci_ip_switch": {
                "create": 10,
                "update": 2,
                "no_change": 0,
                "not_seen": 1,
                "retire": 0,
            },
            "cmdb_ci_wap_network": {
                "create": 20,
                "update": 0,
                "no_change": 0,
                "not_seen": 0,
                "retire": 0,
            },
        },
        "applied": {"created": 29, "updated": 3, "failed": 4},
        "timings": {"collect": 2.5, "plan": 1.0, "apply": 90.0, "relationships": 2.0},
        "relationships": {
            "wanted": 33,
            "created": 20,
            "existing": 10,
            "orphans": 2,
            "failed": 1,
            "queued": 0,
            "orphan_examples": ["unifi:dev-9"],
            "rate": 0.9091,
        },
        "failures": [failure("cmdb_ci_ip_switch", 1)]
        + [failure("cmdb_ci_wap_network", i) for i in (2, 3, 4)],
        "data_quality": {
            "records": 44,
            "quarantined": 2,
            "duplicates": 0,
            "issues": 5,
            "errors": 2,
            "warnings": 3,
            "by_rule": [],
        },
    }


def health_docs(n: int = 6) -> list[dict[str, Any]]:
    """A health history: ``application/health+json`` documents (``to_health_json``), hourly,
    with one degraded hour."""
    docs = []
    for i in range(n):
        degraded = i == 3
        stamp = ts(i * 3600.0)

        def entry(
            status: str, value: Any, unit: str | None, output: str = "", stamp: str = stamp
        ) -> dict[str, Any]:
            item = {
                "componentId": "x",
                "componentType": "component",
                "observedValue": value,
                "status": status,
                "time": stamp,
            }
            if unit:
                item["observedUnit"] = unit
            if output:
                item["output"] = output
            return item

        docs.append(
            {
                "status": "warn" if degraded else "pass",
                "version": "1",
                "serviceId": "snowkit",
                "output": "not healthy: servicenow_connectivity" if degraded else "",
                "checks": {
                    "servicenow_connectivity:responseTime": [
                        entry("warn", 900.0, "ms", "slow")
                        if degraded
                        else entry("pass", 85.0, "ms")
                    ],
                    "credentials:available": [entry("pass", True, None)],
                    "system_resources:memory": [entry("pass", 180.0, "MiB")],
                },
            }
        )
    return docs


def reports_tree(root: Path) -> list[Path]:
    """``reports/<nb>/<date>/<run_id>/run.json`` for two notebooks over three days."""
    made = []
    for day in range(3):
        for nb, status in (("health_check", "ok"), ("load", "failed" if day == 1 else "ok")):
            started = BASE + timedelta(days=day, hours=1)
            run_id = f"{started:%Y%m%dT%H%M%SZ}-{day:06x}"
            run_dir = root / nb / f"{started:%Y-%m-%d}" / run_id
            run_dir.mkdir(parents=True)
            doc = {
                "notebook": nb,
                "run_id": run_id,
                "status": status,
                "started_at": started.isoformat(),
                "finished_at": (started + timedelta(seconds=30 + day)).isoformat(),
                "duration_s": 30.0 + day,
                "parameters": {"instance": "embedded"},
                "error": (
                    {"ename": "RuntimeError", "evalue": "x", "cell_index": 3}
                    if status == "failed"
                    else None
                ),
            }
            (run_dir / "run.json").write_text(json.dumps(doc))
            made.append(run_dir)
    broken = root / "load" / "2026-03-04" / "20260304T010000Z-badbad"
    broken.mkdir(parents=True)
    (broken / "run.json").write_text('{"notebook": "lo')
    return made
