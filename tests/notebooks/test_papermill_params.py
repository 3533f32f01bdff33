"""The kit's notebooks run with NON-default parameters through ``snowkit.reports.run``.

nbmake (``make test``) runs every notebook with its defaults; these runs prove the parameters
are really used: a smaller lab, other fault rates, a shorter outage. Each notebook runs once per
module (kernels are the slow part) with canary secrets in the environment, where real
credentials would live, and every file of each run folder is searched for them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from snowkit.reports import RunResult, run

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CANARY = "canary-7Hq2Lp-must-never-be-written"
CANARY_ENV = ("SERVICENOW_PASSWORD", "SERVICENOW_API_KEY", "UNIFI_PASSWORD", "UNIFI_API_KEY")
# one xdist worker runs this module, so each notebook executes once
pytestmark = pytest.mark.xdist_group("kit-notebook-runs")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One state folder (``state/``) and reports folder (``reports/``) for the module."""
    return tmp_path_factory.mktemp("kit")


def _run(workspace: Path, name: str, parameters: dict) -> RunResult:
    """Run a notebook with the module's state folder and canaries in the kernel's environment."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SNOWKIT_HOME", str(workspace / "state"))
        mp.setenv("SNOWKIT_AUDIT_KEY", CANARY + "-audit")  # used: it signs the audit trail
        for env in CANARY_ENV:
            mp.setenv(env, CANARY)
        return run(NOTEBOOKS / f"{name}.ipynb", parameters, reports_dir=workspace / "reports")


LOAD_PARAMETERS = {
    "instance": "embedded",
    "lab_sites": 1,
    "lab_devices_per_site": 3,
    "lab_clients_per_site": 4,
    "lab_seed": 11,
    "batch_size": 5,
    "workers": 2,
}
DRILL_PARAMETERS = {
    "lab_sites": 1,
    "lab_devices_per_site": 3,
    "lab_clients_per_site": 2,
    "error_rate": 0.3,
    "reset_rate": 0.0,
    "outage_seconds": 1.0,
    "breaker_recovery_s": 0.5,
}


@pytest.fixture(scope="module")
def load_run(workspace: Path) -> RunResult:
    return _run(workspace, "load", LOAD_PARAMETERS)


@pytest.fixture(scope="module")
def drill_run(workspace: Path) -> RunResult:
    return _run(workspace, "chaos_drill", DRILL_PARAMETERS)


@pytest.fixture(scope="module")
def errors_run(workspace: Path, load_run: RunResult) -> RunResult:
    # after a clean load there are no errors: the notebook generates its faulty sample
    return _run(workspace, "error_analysis", {"sample_error_rate": 0.4, "top": 2})


@pytest.fixture(scope="module")
def operations_run(workspace: Path, load_run: RunResult) -> RunResult:
    # a threshold no request can stay under: every operation is reported as slow
    return _run(workspace, "operations_report", {"p95_threshold_ms": 0.001})


def _error(result: RunResult) -> str:
    return f"{result.error} (see {result.html})"


def test_load_runs_with_a_smaller_lab_and_records_its_parameters(load_run: RunResult) -> None:
    assert load_run.ok, _error(load_run)
    doc = json.loads(load_run.run_json.read_text())
    assert doc["parameters"] == LOAD_PARAMETERS
    report = json.loads((load_run.run_dir / "data" / "report.json").read_text())
    assert report["status"] == "success"
    # one site: one location; the default lab (2 sites) would give two
    assert report["counts"]["cmn_location"]["create"] == 1
    assert report["applied"]["created"] == sum(report["totals"].values())


def test_load_report_has_named_charts_html_without_code_and_a_summary(
    load_run: RunResult,
) -> None:
    names = {p.name for p in load_run.figures}
    assert {"success_rate_by_class.png", "relationships.png", "throughput.png"} <= names
    for path in load_run.figures:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = load_run.html.read_text()
    assert "data:image/png;base64" in html
    assert "nbk.connect" not in html and "session.load" not in html
    summary = pd.read_csv(load_run.run_dir / "data" / "summary.csv")
    assert dict(zip(summary["what"], summary["value"], strict=True))["status"] == "success"


def test_load_leaves_its_run_in_the_state_folder(load_run: RunResult, workspace: Path) -> None:
    reports = list((workspace / "state" / "runs").glob("*/report.json"))
    statuses = sorted(json.loads(p.read_text())["status"] for p in reports)
    assert statuses == ["dry_run", "success"]  # the plan step, then the apply step


def test_chaos_drill_with_other_fault_rates_recovers_to_an_exact_state(
    drill_run: RunResult,
) -> None:
    assert drill_run.ok, _error(drill_run)  # the last cell raises unless the state is exact
    phases = pd.read_csv(drill_run.run_dir / "data" / "phases.csv").set_index("phase")
    assert list(phases.index) == ["baseline", "flaky", "outage", "healed"]
    assert phases.loc["flaky", "server_errors"] > 0  # 30 % of requests answered 5xx
    assert phases.loc["outage", "status"] == "queued"
    assert phases.loc["outage", "outbox_pending"] > 0
    assert phases.loc["healed", "status"] == "success"
    assert phases.loc["healed", "replayed"] >= phases.loc["outage", "outbox_pending"]
    assert phases.loc["healed", "outbox_pending"] == 0
    assert {"breaker_timeline.png", "retries.png"} <= {p.name for p in drill_run.figures}


def test_drill_keeps_its_state_apart_from_real_runs(drill_run: RunResult, workspace: Path) -> None:
    drill_runs = list((workspace / "state" / "drills" / "chaos" / "runs").glob("*/report.json"))
    assert len(drill_runs) == 5  # four phases and the final dry run
    real_runs = list((workspace / "state" / "runs").glob("*/report.json"))
    assert all("chaos" not in str(p) for p in real_runs)


def test_error_analysis_with_other_parameters_lists_the_sample_errors(
    errors_run: RunResult,
) -> None:
    assert errors_run.ok, _error(errors_run)
    summary = pd.read_csv(errors_run.run_dir / "data" / "error_summary.csv")
    assert 1 <= len(summary) <= 2  # top=2
    assert summary["count"].sum() > 0
    assert summary["guidance"].notna().all()
    html = errors_run.html.read_text()
    assert "generated a <strong>sample</strong>" in html


def test_operations_report_applies_its_threshold_to_the_real_load(
    operations_run: RunResult, load_run: RunResult
) -> None:
    assert operations_run.ok, _error(operations_run)
    suggestions = pd.read_csv(operations_run.run_dir / "data" / "suggestions.csv")
    assert suggestions["finding"].str.contains("p95 latency").any()
    runs = pd.read_csv(operations_run.run_dir / "data" / "runs.csv")
    assert list(runs["status"]) == ["dry_run", "success"]  # the load's runs, not a sample
    html = operations_run.html.read_text()
    assert "Audit chain" in html and "generated a <strong>sample</strong>" not in html
    # the load notebook's own report folder shows up in the trend across notebook runs
    assert load_run.run_id in html


def test_no_run_folder_contains_a_canary_secret(
    load_run: RunResult, drill_run: RunResult, errors_run: RunResult, operations_run: RunResult
) -> None:
    for result in (load_run, drill_run, errors_run, operations_run):
        files = [p for p in result.run_dir.rglob("*") if p.is_file()]
        assert len(files) >= 5
        for path in files:
            assert CANARY.encode() not in path.read_bytes(), path
