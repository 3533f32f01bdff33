"""snowkit.notebook without kernels: the small decisions notebooks rely on."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from snowkit import notebook as nbk
from snowkit.reports import RUN_DIR_ENV


def test_fault_profile_is_none_when_every_fault_is_off() -> None:
    assert nbk.fault_profile(seed=7, error_rate=0.0, latency_ms=0) is None
    assert nbk.fault_profile(seed=7, error_rate=0.1, latency_ms=0) == {
        "seed": 7,
        "error_rate": 0.1,
    }


@pytest.mark.parametrize("status", ["success", "partial", "dry_run"])
def test_a_load_that_ran_does_not_fail_the_notebook(status: str) -> None:
    nbk.raise_for_status({"run_id": "r", "status": status})


@pytest.mark.parametrize("status", ["failed", "queued"])
def test_a_failed_or_only_queued_load_fails_the_notebook_with_its_report_path(
    status: str,
) -> None:
    report = {
        "run_id": "r1",
        "status": status,
        "message": "instance unreachable",
        "paths": {"report": "/state/runs/r1/report.json"},
    }
    with pytest.raises(nbk.LoadFailedError, match=r"r1 .*unreachable.*runs/r1/report.json"):
        nbk.raise_for_status(report)


@pytest.mark.parametrize(
    ("status", "fail_on", "fails"),
    [
        ("pass", "warn", False),
        ("warn", "warn", True),
        ("warn", "fail", False),
        ("fail", "fail", True),
        ("fail", "never", False),
    ],
)
def test_health_fails_the_notebook_from_the_chosen_level(
    status: str, fail_on: str, fails: bool
) -> None:
    document = {"status": status, "output": "not healthy: servicenow"}
    if fails:
        with pytest.raises(nbk.UnhealthyError, match="servicenow"):
            nbk.raise_for_health(document, fail_on)
    else:
        nbk.raise_for_health(document, fail_on)


def test_unknown_fail_on_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="'warn', 'fail' or 'never'"):
        nbk.raise_for_health({"status": "pass"}, "sometimes")


def test_counts_table_orders_actions_and_summary_frame_reads_a_report() -> None:
    report = {
        "run_id": "r",
        "status": "success",
        "counts": {"cmn_location": {"no_change": 1, "create": 2}, "cmdb_ci_ip_switch": {}},
        "totals": {"create": 2, "no_change": 1},
        "applied": {"created": 2},
        "relationships": {"created": 3, "existing": 1, "orphans": 0},
        "requests": {"total": 9, "retries": 1},
        "data_quality": {"quarantined": [{"source_id": "x"}]},
    }
    table = nbk.counts_table(report)
    assert list(table.columns) == ["create", "no_change"]
    assert table.loc["cmn_location", "create"] == 2
    summary = dict(nbk.summary_frame(report).itertuples(index=False))
    assert summary["planned"] == "create 2, no_change 1"
    assert summary["retries"] == "1" and summary["quarantined records"] == "1"
    assert summary["relationships linked"] == "3 new, 1 kept"


def test_error_summary_groups_counts_and_adds_guidance() -> None:
    errors = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(
                ["2026-01-01T00:00Z", "2026-01-01T00:01Z", "2026-01-01T00:02Z"], utc=True
            ),
            "category": ["servicenow_api", "servicenow_api", "rate_limit"],
            "severity": ["medium", "medium", "low"],
            "operation": ["query", "query", "batch"],
            "error_message": ["HTTP 503 first", "HTTP 503 last", "HTTP 429"],
        }
    )
    summary = nbk.error_summary(errors, top=5)
    first = summary.iloc[0]
    assert (first["category"], first["count"], first["example"]) == (
        "servicenow_api",
        2,
        "HTTP 503 last",
    )
    assert summary["guidance"].str.len().gt(0).all()
    assert nbk.error_summary(errors.iloc[:0]).empty


def test_empty_history_frames_are_empty_not_errors(tmp_path: Path) -> None:
    history = nbk.History(tmp_path)
    assert not history.has("runs") and not history.has("errors")
    assert history.runs_table().empty and history.samples().empty
    assert history.metrics().empty and history.latest_report() == {}
    assert history.slow_operations().empty and history.errors().empty
    assert history.verify_audit().ok
    assert "No load runs recorded" in history.describe()


def test_history_reads_run_reports_oldest_first(tmp_path: Path) -> None:
    for run_id, status in (("20260101T000000Z-aaaaaa", "success"), ("20260102T0Z-b", "failed")):
        run_dir = tmp_path / "runs" / run_id
        run_dir.mkdir(parents=True)
        report = {"run_id": run_id, "status": status, "started": "2026-01-01T00:00:00+00:00"}
        (run_dir / "report.json").write_text(json.dumps(report))
    history = nbk.History(tmp_path)
    assert list(history.runs_table()["status"]) == ["success", "failed"]
    assert history.latest_report()["status"] == "failed"


def test_history_on_a_real_instance_never_generates_a_sample(snowkit_home: Path) -> None:
    history = nbk.history("https://example.service-now.com", name="x")
    assert not history.sample and history.home == snowkit_home.resolve()
    assert not (snowkit_home / "samples").exists()


def test_reports_root_prefers_the_runner_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "reports" / "operations_report" / "2026-01-01" / "r1"
    monkeypatch.setenv(RUN_DIR_ENV, str(run_dir))
    assert nbk.reports_root() == (tmp_path / "reports").resolve()
    assert nbk.reports_root(str(tmp_path / "elsewhere")) == (tmp_path / "elsewhere").resolve()
    monkeypatch.delenv(RUN_DIR_ENV)
    monkeypatch.setenv("SNOWKIT_REPORTS", str(tmp_path / "env-reports"))
    assert nbk.reports_root() == (tmp_path / "env-reports").resolve()


def test_progress_bars_are_off_under_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RUN_DIR_ENV, "/tmp/run")
    assert nbk.progress_bars() is False


def test_connect_refuses_faults_for_a_real_instance() -> None:
    with pytest.raises(ValueError, match="embedded"):
        nbk.connect("https://example.service-now.com", faults={"error_rate": 0.1})


def test_embedded_session_is_reused_then_closed() -> None:
    session = nbk.connect("embedded")
    try:
        assert nbk.connect("embedded") is session  # re-running the cell
        assert session.embedded and session.url.startswith("https://127.0.0.1:")
        assert session.client.ping() >= 0
        assert repr(session) == f"Session(instance='embedded', url='{session.url}', open)"
        assert session.sandbox.users["admin"] not in repr(session)
    finally:
        session.close()
    assert session.closed
    fresh = nbk.connect("embedded")
    try:
        assert fresh is not session
    finally:
        fresh.close()


def test_a_second_lab_in_the_same_session_is_the_one_collected() -> None:
    from snowkit.unifi import LabConfig

    def lab(sites: int) -> LabConfig:
        return LabConfig(sites=sites, devices_per_site=2, clients_per_site=1, seed=3)

    with nbk.connect("embedded", reuse=False) as session:
        first = session.collect("lab", lab(1))
        second = session.collect("lab", lab(2))
    assert (len(first.sites), len(second.sites)) == (1, 2)


def test_a_client_that_cannot_be_built_is_a_failed_health_check_not_a_crash() -> None:
    checks = nbk.check_health("http://example.com", timeout_seconds=5)
    assert checks["servicenow"].status.health_json == "fail"
    assert "plain http" in checks["servicenow"].message
    assert "system" in checks and "credentials" in checks


def test_a_queued_run_is_no_success_and_a_dry_run_has_no_rate() -> None:
    """A run that queued half its writes had shown 100 %, and so had a dry run."""
    from snowkit.cmdb.report import RunReport

    queued = RunReport(run_id="q", status="queued", applied={"created": 29, "queued": 15})
    assert queued.to_dict()["success_rate"] == round(29 / 44, 4)
    dry = RunReport(run_id="d", status="dry_run", dry_run=True)
    assert dry.to_dict()["success_rate"] is None
    summary = dict(nbk.summary_frame(dry.to_dict()).itertuples(index=False))
    assert summary["success rate"].startswith("—")


def test_the_history_leaves_dry_runs_out_of_the_write_counts(tmp_path: Path) -> None:
    from snowkit.analysis import run_reports_frame

    for run_id, dry in (("1-plan", True), ("2-apply", False)):
        (tmp_path / run_id).mkdir()
        report = {"run_id": run_id, "dry_run": dry, "started": f"2026-01-01T00:00:0{run_id[0]}",
                  "counts": {"cmdb_ci_hardware": {"create": 8}}}  # fmt: skip
        (tmp_path / run_id / "report.json").write_text(json.dumps(report))
    assert run_reports_frame(tmp_path)["count"].sum() == 16
    assert list(run_reports_frame(tmp_path, dry_runs=False)["run_id"]) == ["2-apply"]


def test_a_torn_health_line_does_not_swallow_the_next_check(tmp_path: Path) -> None:
    """A killed writer's partial line had glued the next run's document onto it (lost)."""
    from snowkit.analysis import health_frame
    from snowkit.notebook.health import record_health

    history = tmp_path / "health.jsonl"
    history.write_bytes(b'{"status": "pass", "checks": {"servicenow:resp')
    document = {"status": "pass", "checks": {"servicenow:responseTime": [
        {"status": "pass", "time": "2026-03-01T10:00:00+00:00", "observedValue": 5}]}}  # fmt: skip
    record_health(document, history)
    frame = health_frame(history)
    assert len(frame) == 1 and frame["check"].tolist() == ["servicenow:responseTime"]
