"""The papermill runner end to end: real kernels (``python3``) on tiny notebooks.

Notebook executions are the slow part (about 1-2 s each), so each notebook runs once per module
in a fixture and several tests read the same run folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from snowkit.cli import main
from snowkit.reports import EXIT_FAILED, EXIT_OK, EXIT_USAGE, RunResult, list_runs, run

NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"
# one worker runs this module's notebooks (under `-n 2 --dist loadgroup`), so each runs once
pytestmark = pytest.mark.xdist_group("notebook-runs")

CANARY = "canary-Zq9vX2-never-write-me"
CODE_MARKER = "this-source-line-must-not-reach-the-html"


def _only_run_dir(reports: Path) -> Path:
    run_dirs = [p for p in reports.glob("*/*/*") if p.is_dir()]
    assert len(run_dirs) == 1, run_dirs
    return run_dirs[0]


@pytest.fixture(scope="module")
def passing_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """The passing notebook through the CLI, with a canary secret in the environment."""
    reports = tmp_path_factory.mktemp("reports")
    with pytest.MonkeyPatch.context() as mp:
        # where real credentials live (snowkit.credentials reads these in the kernel)
        mp.setenv("SERVICENOW_PASSWORD", CANARY)
        mp.setenv("SERVICENOW_API_KEY", CANARY)
        code = main(
            [
                "run",
                str(NOTEBOOKS / "passing.ipynb"),
                "-p",
                "points",
                "4",
                "-y",
                "{instance: lab-a, since: 2026-03-01}",
                "--timeout",
                "60",
                "--reports-dir",
                str(reports),
            ]
        )
    yield code, _only_run_dir(reports)


@pytest.fixture(scope="module")
def failing_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return run(NOTEBOOKS / "failing.ipynb", reports_dir=tmp_path_factory.mktemp("reports"))


def test_passing_run_exits_zero_with_the_documented_layout(passing_run: tuple[int, Path]) -> None:
    code, run_dir = passing_run
    assert code == EXIT_OK
    notebook, date, run_id = run_dir.parts[-3:]
    assert notebook == "passing"
    assert len(date) == 10 and date[4] == date[7] == "-"
    assert run_id.startswith(date.replace("-", "")) and run_id[15] == "Z"
    assert {p.name for p in run_dir.iterdir()} >= {
        "passing.ipynb",
        "report.html",
        "run.json",
        "figures",
        "data",
    }


def test_run_json_records_typed_parameters_versions_and_timings(
    passing_run: tuple[int, Path],
) -> None:
    _, run_dir = passing_run
    doc = json.loads((run_dir / "run.json").read_text())
    assert doc["status"] == "ok" and doc["error"] is None
    assert doc["parameters"] == {"instance": "lab-a", "points": 4, "since": "2026-03-01"}
    assert doc["run_id"] == run_dir.name and doc["notebook"] == "passing"
    assert set(doc["versions"]) >= {"python", "snowkit", "papermill", "nbconvert", "kernel"}
    assert doc["versions"]["kernel"] == "python3"
    assert doc["duration_s"] > 0 and doc["started_at"] < doc["finished_at"]


def test_figures_are_extracted_and_saved_and_sidecars_emitted(
    passing_run: tuple[int, Path],
) -> None:
    _, run_dir = passing_run
    pngs = sorted(p.name for p in (run_dir / "figures").glob("*.png"))
    assert "squares.png" in pngs  # save_figure() through SNOWKIT_RUN_DIR
    assert any(name.startswith("cell-") for name in pngs)  # extracted inline output
    for name in pngs:
        assert (run_dir / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((run_dir / "data" / "summary.json").read_text())
    assert summary == {"instance": "lab-a", "points": 4}


def test_html_has_outputs_but_no_code_and_no_injected_parameters(
    passing_run: tuple[int, Path],
) -> None:
    _, run_dir = passing_run
    html = (run_dir / "report.html").read_text()
    assert "visible output: instance=lab-a points=4" in html
    assert "data:image/png;base64" in html
    assert CODE_MARKER not in html
    assert "injected-parameters" not in html
    assert "Parameters" not in html  # papermill's "# Parameters" comment of the injected cell
    executed = nbformat.read(run_dir / "passing.ipynb", as_version=4)
    tags = [t for c in executed.cells for t in c.metadata.get("tags", [])]
    assert "injected-parameters" in tags  # the executed notebook keeps it: it is the run's log


def test_a_failed_cell_is_named_by_its_place_in_the_source_notebook(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With parameters, papermill's copy holds an injected cell that the user's notebook lacks."""
    reports = tmp_path / "reports"
    source = NOTEBOOKS / "failing.ipynb"
    code = main(["run", str(source), "-p", "instance", "lab-a", "--reports-dir", str(reports)])
    assert code == EXIT_FAILED
    run_dir = _only_run_dir(reports)
    doc = json.loads((run_dir / "run.json").read_text())
    assert doc["error"]["cell_index"] == 2  # the cell that raises, as in failing.ipynb
    assert "raise RuntimeError" in nbformat.read(source, as_version=4).cells[2].source
    assert f"failed in cell 3 of {source} (counting from 1)" in capsys.readouterr().err


def test_canary_secret_from_the_environment_is_nowhere_in_the_run_folder(
    passing_run: tuple[int, Path],
) -> None:
    _, run_dir = passing_run
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(files) >= 5
    for path in files:
        assert CANARY.encode() not in path.read_bytes(), path


def test_failing_notebook_exits_one_and_the_html_shows_the_error(failing_run: RunResult) -> None:
    assert failing_run.status == "failed" and failing_run.exit_code == EXIT_FAILED
    assert failing_run.error is not None
    assert failing_run.error.ename == "RuntimeError"
    assert failing_run.error.cell_index == 2
    html = failing_run.html.read_text()
    assert "drill failure: the notebook stopped on purpose" in html
    assert "raise RuntimeError" not in html  # the traceback shows, the code cell does not
    doc = json.loads(failing_run.run_json.read_text())
    assert doc["status"] == "failed"
    assert doc["error"]["ename"] == "RuntimeError"
    assert "on purpose" in doc["error"]["evalue"]


def test_dead_kernel_is_a_failure_with_its_own_message(tmp_path: Path) -> None:
    result = run(NOTEBOOKS / "dead_kernel.ipynb", reports_dir=tmp_path, run_id="dead-1")
    assert result.exit_code == EXIT_FAILED
    assert result.error is not None and result.error.ename == "DeadKernelError"
    assert "kernel died" in result.error.evalue
    assert "kernel died" in result.html.read_text()


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["-p", "sn_password", "x"], "looks like a secret"),
        (["-p", "api_token", "x"], "looks like a secret"),
        (["-p", "client_secret", "x"], "Configure credentials"),
        (["-p", "not-an-identifier", "1"], "identifier"),
        (["-y", "[1, 2]"], "YAML mapping"),
        (["--kernel", "no-such-kernel-xyz"], "no Jupyter kernel"),
    ],
)
def test_usage_errors_exit_two_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv_tail: list[str], message: str
) -> None:
    reports = tmp_path / "reports"
    argv = ["run", str(NOTEBOOKS / "passing.ipynb"), "--reports-dir", str(reports), *argv_tail]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    assert not reports.exists()


def test_secret_parameter_value_is_never_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", str(NOTEBOOKS / "passing.ipynb"), "--reports-dir", str(tmp_path)]
    assert main([*argv, "-p", "password", CANARY]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert CANARY not in captured.err + captured.out


def test_missing_notebook_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["run", str(tmp_path / "nope.ipynb")]) == EXIT_USAGE
    (tmp_path / "notes.txt").write_text("not a notebook")
    assert main(["run", str(tmp_path / "notes.txt")]) == EXIT_USAGE


def test_reports_list_shows_runs_newest_first(
    passing_run: tuple[int, Path],
    failing_run: RunResult,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, passing_dir = passing_run
    reports = passing_dir.parents[2]
    assert main(["reports", "list", "--reports-dir", str(reports), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["run_id"] for r in rows] == [passing_dir.name]
    assert rows[0]["status"] == "ok" and rows[0]["duration_s"] > 0

    # the failing run lives in another reports dir: list both kinds in one folder
    other = failing_run.run_dir.parents[2]
    (other / "passing").mkdir()
    newer = other / "passing" / "2999-01-01" / "29990101T000000Z-ffffff"
    newer.mkdir(parents=True)
    entries = list_runs(other)
    assert [e.status for e in entries] == ["incomplete", "failed"]
    assert entries[1].error is not None and entries[1].error.startswith("RuntimeError")
    assert [e.notebook for e in list_runs(other, notebook="failing.ipynb")] == ["failing"]

    assert main(["reports", "list", "--reports-dir", str(other)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:5] == ["notebook", "date", "run_id", "status", "duration"]
    assert "failed" in table[2]


def test_reports_list_on_an_empty_folder_says_how_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reports", "list", "--reports-dir", str(tmp_path / "none")]) == 0
    assert "snowkit run" in capsys.readouterr().out


def test_a_report_that_cannot_render_still_leaves_html_and_run_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import snowkit.reports.html as html

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("template exploded")

    monkeypatch.setattr(html, "write_html", broken)
    result = run(NOTEBOOKS / "failing.ipynb", reports_dir=tmp_path)
    assert result.exit_code == EXIT_FAILED
    page = result.html.read_text()
    assert "template exploded" in page and "RuntimeError" in page and "executed notebook" in page
    assert json.loads(result.run_json.read_text())["error"]["ename"] == "RuntimeError"


def _kernel_paths(result: RunResult) -> dict[str, str]:
    assert result.ok, result.error
    return json.loads((result.run_dir / "data" / "paths.json").read_text())


def test_kernel_uses_the_callers_state_and_reports_folders_not_the_notebooks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    caller = tmp_path / "caller"
    caller.mkdir()
    monkeypatch.chdir(caller)
    monkeypatch.delenv("SNOWKIT_HOME", raising=False)
    monkeypatch.delenv("SNOWKIT_REPORTS", raising=False)
    seen = _kernel_paths(run(NOTEBOOKS / "state_paths.ipynb"))
    assert Path(seen["cwd"]) == NOTEBOOKS  # the kernel runs in the notebook's folder ...
    assert Path(seen["state_dir"]) == caller / ".snowkit"  # ... with the caller's state
    assert Path(seen["reports_dir"]) == caller / "reports"
    assert "SNOWKIT_HOME" not in os.environ  # only the kernel's environment was changed


def test_a_relative_snowkit_home_is_resolved_against_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SNOWKIT_HOME", "my-state")
    seen = _kernel_paths(run(NOTEBOOKS / "state_paths.ipynb", reports_dir=tmp_path / "out"))
    assert Path(seen["state_dir"]) == tmp_path / "my-state"
    assert Path(seen["reports_dir"]) == tmp_path / "out"  # this run's reports folder
    assert os.environ["SNOWKIT_HOME"] == "my-state"


def test_the_kernel_channels_are_encrypted_where_the_kernel_supports_it(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Plain loopback TCP lets any local user read the code and outputs (and the kernel warns
    so on every run); the kernelspecs ``make`` installs declare CurveZMQ support."""
    from jupyter_client.manager import AsyncKernelManager

    if "transport_encryption" not in AsyncKernelManager.class_trait_names():
        pytest.skip("this jupyter_client cannot encrypt kernel channels")
    result = run(NOTEBOOKS / "passing.ipynb", reports_dir=tmp_path, parameters={"points": 2})
    assert result.exit_code == EXIT_OK
    assert "without encryption" not in capfd.readouterr().err


def test_a_pyzmq_without_curve_or_a_users_setting_keeps_the_kernel_manager_as_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """jupyter_client refuses "auto" outright when pyzmq lacks CurveZMQ (no libsodium): the
    runner then asks nothing; and a user's own ``transport_encryption`` setting stands."""
    import zmq
    from jupyter_client.manager import AsyncKernelManager
    from traitlets.config import Config

    from snowkit.reports.runner import _kernel_manager_class

    if "transport_encryption" not in AsyncKernelManager.class_trait_names():
        pytest.skip("this jupyter_client cannot encrypt kernel channels")
    chosen = Config({"KernelManager": {"transport_encryption": "disabled"}})
    manager = _kernel_manager_class({})(kernel_name="python3", config=chosen)
    assert manager.transport_encryption == "disabled"
    monkeypatch.setattr(zmq, "has", lambda capability: False)
    plain = _kernel_manager_class({})(kernel_name="python3")  # built, not refused
    assert plain.transport_encryption != "auto"


@pytest.mark.parametrize(
    "value",
    [
        f"https://svc:{CANARY}@acme.service-now.com",
        f"https://{CANARY}@127.0.0.1:1",
        f"prefix {CANARY} suffix",  # the password the environment holds
    ],
)
def test_a_parameter_carrying_credentials_is_refused_before_anything_is_written(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    value: str,
) -> None:
    """An instance URL with user:password@ had gone into run.json and the executed notebook."""
    monkeypatch.setenv("SERVICENOW_PASSWORD", CANARY)
    reports = tmp_path / "reports"
    argv = ["run", str(NOTEBOOKS / "passing.ipynb"), "--reports-dir", str(reports)]
    assert main([*argv, "-p", "instance", value]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert "user name or password" in captured.err
    assert CANARY not in captured.err + captured.out
    assert not reports.exists()


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["-p", "lab_sitez", "2"], "has no parameter 'lab_sitez'; its parameters are: "),
        (["-p", "lab_sites", "abc"], "parameter 'lab_sites' of load.ipynb takes int"),
        (["-p", "dry_run", "1"], "takes bool"),
    ],
)
def test_parameters_the_notebook_does_not_declare_or_type_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv_tail: list[str], message: str
) -> None:
    """A typo had run with the default and exit 0; a wrong type failed cells later."""
    reports = tmp_path / "reports"
    notebook = Path(__file__).parents[2] / "notebooks" / "load.ipynb"
    assert main(["run", str(notebook), "--reports-dir", str(reports), *argv_tail]) == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not reports.exists()


def test_a_run_without_run_json_sorts_by_its_run_id_not_last(tmp_path: Path) -> None:
    """A run still going (or killed) has no run.json: it had been listed as the oldest."""
    day = tmp_path / "load" / "2026-03-01"
    for run_id, started in (("20260301T090000Z-aaaaaa", "2026-03-01T09:00:00+00:00"),
                            ("20260301T100000Z-bbbbbb", "2026-03-01T10:00:00+00:00")):  # fmt: skip
        (day / run_id).mkdir(parents=True)
        (day / run_id / "run.json").write_text(json.dumps(
            {"notebook": "load", "run_id": run_id, "status": "ok", "started_at": started}
        ))  # fmt: skip
    (day / "20260301T110000Z-cccccc").mkdir()  # under way: no run.json yet
    assert [e.run_id[:15] for e in list_runs(tmp_path)] == [
        "20260301T110000",
        "20260301T100000",
        "20260301T090000",
    ]


def test_none_is_refused_for_a_parameter_whose_default_is_not_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notebook = Path(__file__).parents[2] / "notebooks" / "load.ipynb"
    argv = ["run", str(notebook), "--reports-dir", str(tmp_path / "r"), "-p", "lab_sites", "None"]
    assert main(argv) == EXIT_USAGE
    assert "takes int" in capsys.readouterr().err


def test_a_fractional_timeout_runs(tmp_path: Path) -> None:
    """papermill takes whole seconds: 30.5 had failed the run with a TraitError (exit 1)."""
    result = run(NOTEBOOKS / "passing.ipynb", reports_dir=tmp_path, timeout=30.5)
    assert result.status == "ok", result.error
    assert json.loads(result.run_json.read_text())["timeout_per_cell_s"] == 30.5
