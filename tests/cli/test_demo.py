"""`snowkit demo` end to end on a tiny lab, plus its failure and usage paths.

The end-to-end run executes the four demo notebooks for real (embedded instance, lab, papermill
kernels) into a temp reports folder; the failure path swaps the runner for a stand-in so it
costs no kernels.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snowkit import reports
from snowkit.cli import build_parser, main
from snowkit.cli.demo import DEMO_NOTEBOOKS, run_demo
from snowkit.reports import EXIT_FAILED, EXIT_OK, EXIT_USAGE, RunError, RunResult

pytestmark = pytest.mark.xdist_group("kit-demo")
TINY_LAB = ["--lab-sites", "1", "--lab-devices", "3", "--lab-clients", "4"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path, Path]:
    """Run the demo once: (exit code, stdout, reports folder, state folder)."""
    root = tmp_path_factory.mktemp("demo")
    state, reports_dir = root / "state", root / "reports"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SNOWKIT_HOME", str(state))
        mp.chdir(root)  # not the source tree: the demo must find the notebooks by itself
        lines: list[str] = []
        args = build_parser().parse_args(["demo", "--reports-dir", str(reports_dir), *TINY_LAB])
        code = run_demo(args, out=lines.append)
    return code, "\n".join(lines), reports_dir, state


def test_demo_runs_the_four_notebooks_and_exits_zero(demo: tuple[int, str, Path, Path]) -> None:
    code, output, reports_dir, _ = demo
    assert code == EXIT_OK, output
    for name in DEMO_NOTEBOOKS:
        (run_dir,) = [p for p in (reports_dir / name).glob("*/*") if p.is_dir()]
        doc = json.loads((run_dir / "run.json").read_text())
        assert doc["status"] == "ok", doc["error"]
        assert doc["parameters"]["instance"] == "embedded"
        assert (run_dir / "report.html").stat().st_size > 1000
        assert str(run_dir / "report.html") in output  # the user is told where it is


def test_demo_passes_the_lab_size_to_the_load(demo: tuple[int, str, Path, Path]) -> None:
    _, _, reports_dir, _ = demo
    (run_json,) = reports_dir.glob("load/*/*/run.json")
    params = json.loads(run_json.read_text())["parameters"]
    assert params["lab_sites"] == 1 and params["lab_devices_per_site"] == 3
    assert params["lab_clients_per_site"] == 4


def test_the_notebooks_share_the_callers_state_folder(demo: tuple[int, str, Path, Path]) -> None:
    _, _, reports_dir, state = demo
    loads = [json.loads(p.read_text()) for p in (state / "runs").glob("*/report.json")]
    assert sorted(r["status"] for r in loads) == ["dry_run", "success"]
    assert (state / "sandbox" / "sandbox.sqlite3").is_file()  # the instance's data persists
    assert (state / "health" / "health.jsonl").is_file()
    # operations_report analysed the load's run, not a generated sample
    (ops,) = reports_dir.glob("operations_report/*/*/report.html")
    assert "generated a <strong>sample</strong>" not in ops.read_text()


def _result(tmp_path: Path, name: str, ok: bool) -> RunResult:
    run_dir = tmp_path / name
    run_dir.mkdir()
    return RunResult(
        status="ok" if ok else "failed",
        run_id="20260101T000000Z-abcdef",
        run_dir=run_dir,
        executed_notebook=run_dir / f"{name}.ipynb",
        html=run_dir / "report.html",
        run_json=run_dir / "run.json",
        error=None if ok else RunError("UnhealthyError", "health is fail: servicenow", 9),
    )


def test_a_failed_notebook_makes_the_demo_exit_one_and_name_its_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[str] = []

    def fake_run(notebook: Path, parameters: dict, **_: object) -> RunResult:
        name = Path(notebook).stem
        ran.append(name)
        return _result(tmp_path, name, ok=name != "health_check")

    monkeypatch.setattr(reports, "run", fake_run)
    code = main(["demo", "--reports-dir", str(tmp_path / "reports")])
    out, err = capsys.readouterr()
    assert code == EXIT_FAILED
    assert ran == list(DEMO_NOTEBOOKS)  # a failure does not hide the later reports
    assert "FAILED  health_check" in out and "UnhealthyError" in out
    assert f"health_check failed; see {tmp_path / 'health_check' / 'report.html'}" in err


def test_missing_notebooks_are_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["demo", "--notebooks-dir", str(tmp_path)])
    assert code == EXIT_USAGE
    assert "--notebooks-dir" in capsys.readouterr().err


def test_lab_size_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--lab-sites", "0"])
    assert exc.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err
