"""Suggestions fire on the evidence in real frames, name the numbers, and stay quiet otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from snowkit.analysis import (
    Suggestion,
    logs_frame,
    metrics_frame,
    run_report_frame,
    suggestions,
    suggestions_frame,
)


def _by_keyword(items: list[Suggestion], word: str) -> list[Suggestion]:
    return [s for s in items if word in s.finding]


def test_suggestions_from_a_troubled_run(state: dict[str, Path], b: Any) -> None:
    plan = b.log_records()
    items = suggestions(metrics_frame(state["metrics"]), logs_frame(state["log"]), b.run_report())

    (limited,) = _by_keyword(items, "429")
    assert f"{plan.rate_limited} times" in limited.finding and "--workers" in limited.action

    (breaker,) = _by_keyword(items, "circuit breaker")
    assert breaker.severity == "critical" and "health" in breaker.action

    slow = _by_keyword(items, "p95 latency")
    assert [s.finding.split()[1] for s in slow] == ["create"]
    assert "page size" in slow[0].action and "fields" in slow[0].action

    (server,) = _by_keyword(items, "server errors")
    assert f"{plan.retries_5xx} retries" in server.finding and "instance health" in server.action

    (quarantine,) = _by_keyword(items, "quarantined")
    assert "2 record(s)" in quarantine.finding and "source" in quarantine.action

    assert items[0].severity == "critical"  # worst first
    table = suggestions_frame(items)
    assert list(table.columns) == ["severity", "finding", "action"] and len(table) == len(items)


def test_quarantine_from_a_run_report_frame(state: dict[str, Path]) -> None:
    items = suggestions(pd.DataFrame(), report=run_report_frame(state["report"]))
    assert [s.finding for s in _by_keyword(items, "quarantined by")] == [
        "2 record(s) were quarantined by validation"
    ]


def test_links_not_made_and_fields_read_back_different_are_named(b: Any) -> None:
    """The report had said nothing about orphans, lost links or read-back mismatches."""
    report = b.run_report()
    report["relationships"].update(orphans=2, orphan_examples=["cl:1 -> dev:9 (Connects to)"],
                                   dropped=3)  # fmt: skip
    report["mismatches"] = [
        {"source_id": "dev:1", "table": "cmdb_ci_ip_switch", "field": "name",
         "expected": "a", "actual": "A"},
    ]  # fmt: skip
    items = suggestions(pd.DataFrame(), report=report)
    (orphans,) = _by_keyword(items, "orphaned")
    assert "2 relationship(s)" in orphans.finding and "cl:1 -> dev:9" in orphans.finding
    (dropped,) = _by_keyword(items, "because an end was quarantined")
    assert dropped.finding.startswith("3 relationship(s)")
    (read_back,) = _by_keyword(items, "read back different")
    assert "cmdb_ci_ip_switch.name" in read_back.finding and "business rule" in read_back.action


def test_thresholds_are_tunable(state: dict[str, Path]) -> None:
    metrics = metrics_frame(state["metrics"])
    assert not _by_keyword(suggestions(metrics, p95_threshold_ms=1e9), "p95")
    assert len(_by_keyword(suggestions(metrics, p95_threshold_ms=1), "p95")) == 3


def test_open_breaker_in_the_system_snapshot_is_reported(b: Any) -> None:
    snapshot = b.metrics_snapshot()
    snapshot["system"]["circuit_breaker_states"] = {"servicenow": "open"}
    (item,) = _by_keyword(suggestions(metrics_frame(snapshot)), "open now: servicenow")
    assert item.severity == "critical"


def test_failed_credential_access_is_critical(tmp_path: Path, b: Any) -> None:
    path = b.write_jsonl(
        tmp_path / "log.jsonl",
        [{"timestamp": b.ts(0), "event": "credential_access", "method": "op", "success": False}],
    )
    (item,) = suggestions(pd.DataFrame(), logs_frame(path))
    assert item.severity == "critical" and "credential" in item.finding


def test_a_clean_run_has_no_suggestions(tmp_path: Path, b: Any) -> None:
    snapshot = b.metrics_snapshot(slow_op="none")
    for op in snapshot["operations"]:
        op["error_rate_percent"] = 0.0
    assert suggestions(metrics_frame(snapshot), logs_frame(tmp_path / "absent.jsonl"), {}) == []
    assert suggestions(pd.DataFrame()) == []
