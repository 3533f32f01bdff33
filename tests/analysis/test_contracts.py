"""The frames read what the other parts really write (skipped while a part is absent).

The builders pin the documented formats; these tests catch drift between those documents and
the producing code (metrics snapshot, health+json, the load run report).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from snowkit.analysis import health_frame, metrics_frame, run_report_frame, samples_frame


def test_metrics_snapshot_from_the_collector(tmp_path: Path) -> None:
    metrics = pytest.importorskip("snowkit.ops.metrics")
    collector = metrics.MetricsCollector()
    for i in range(20):
        collector.record_request("GET", "query", 200 if i % 5 else 503, 50.0 + i, table="cmdb_ci")
    path = collector.write_snapshot(tmp_path / "metrics.json")
    ops = metrics_frame(path)
    assert ops.loc[0, "operation_name"] == "query" and ops.loc[0, "total_requests"] == 20
    samples = samples_frame(path)
    assert len(samples) == 20 and samples["timestamp"].notna().all()
    assert str(samples["timestamp"].dt.tz) == "UTC"


def test_health_json_from_the_monitor() -> None:
    health = pytest.importorskip("snowkit.ops.health")
    checks = {
        "servicenow": health.HealthCheck(
            "servicenow", health.HealthStatus.DEGRADED, "slow", 900.0,
            observed_value=900.0, observed_unit="ms", measurement="responseTime",
        ),
        "credentials": health.HealthCheck("credentials", health.HealthStatus.HEALTHY, "ok"),
    }  # fmt: skip
    frame = health_frame(health.to_health_json(checks))
    assert set(frame["status"]) == {"warn", "pass"}
    slow = frame.loc[frame["status"] == "warn"].iloc[0]
    assert slow["response_time_ms"] == 900.0 and slow["checked_at"].tzname() == "UTC"


def test_run_report_from_the_sync_engine() -> None:
    report_mod = pytest.importorskip("snowkit.cmdb.report")
    report = report_mod.RunReport(
        run_id="r1",
        counts={"cmdb_ci_ip_switch": {"create": 4, "update": 1}},
        failures=[report_mod.ItemFailure("unifi:x", "cmdb_ci_ip_switch", "create", "boom", 500)],
    )
    report.finish("partial", clock_s=1.5)
    frame = run_report_frame(report.to_dict())
    counts = frame.set_index("action")["count"].to_dict()
    assert counts == {"create": 4, "update": 1, "failed": 1}
    assert frame["started_at"].notna().all() and frame["duration_s"].iloc[0] == 1.5
