"""Command-line mistakes a user can make end in one line saying what to do, never a traceback
(found by review: each had raised, or been recorded as a failed notebook run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from snowkit.cli import main
from snowkit.reports.runner import RunUsageError, check_parameters

NOTEBOOKS = Path(__file__).resolve().parents[1] / "reports" / "notebooks"


@pytest.mark.parametrize("timeout", ["0", "-5", "nan", "inf"])
def test_a_timeout_that_is_no_positive_number_is_a_usage_error(
    timeout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`health --timeout 0` had failed every check of a healthy instance (exit 2 as 'fail')."""
    for command in (["health"], ["run", str(NOTEBOOKS / "passing.ipynb")], ["demo"]):
        with pytest.raises(SystemExit) as info:
            main([*command, "--timeout", timeout])
        assert info.value.code == 2
        assert "must be a number above 0" in capsys.readouterr().err


def test_a_reports_dir_that_is_a_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    occupied = tmp_path / "reports"
    occupied.write_text("not a folder")
    assert main(["run", str(NOTEBOOKS / "passing.ipynb"), "--reports-dir", str(occupied)]) == 2
    err = capsys.readouterr().err
    assert "cannot create the run folder" in err and "--reports-dir" in err


def test_a_secret_in_a_url_parameter_is_refused() -> None:
    """`-p instance "https://x/?x-sn-apikey=..."` had reached run.json and the notebook."""
    urls = ("https://acme.service-now.com/?x-sn-apikey=abcd1234",
            "https://h/#access_token=abcd1234", "https://h/?a=1&password=abcd1234")  # fmt: skip
    for url in urls:
        with pytest.raises(RunUsageError):
            check_parameters({"instance": url})
    assert check_parameters({"instance": "https://acme.service-now.com/?lang=en"})


def test_a_textfile_that_is_not_prometheus_text_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.prom"
    bad.write_text("x{\n")
    assert main(["metrics", "--textfile", str(bad)]) == 1
    assert "is not a Prometheus text file" in capsys.readouterr().err


def test_a_database_file_that_is_not_sqlite_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "notdb.sqlite"
    bad.write_bytes(b"this is no database, just some bytes " * 100)
    assert main(["sandbox", "serve", "--db", str(bad), "--port", "0"]) == 1
    assert "could not start" in capsys.readouterr().err
