"""emit() and save_figure(): sidecars in the run folder, redacted, no-ops outside a run."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the test picks the backend; the library never does

import pandas as pd
import pytest
from matplotlib.figure import Figure

from snowkit.ops.redaction import secrets
from snowkit.reports import RUN_DIR_ENV, emit, save_figure


def test_outside_a_run_nothing_is_written(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert emit("x", 1) is None
    assert save_figure(Figure(), "x") is None
    assert list(tmp_path.iterdir()) == []


def test_emit_json_and_csv_into_the_env_run_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path))
    path = emit("summary/total", {"created": 3, "when": pd.Timestamp("2026-03-01", tz="UTC")})
    assert path == tmp_path / "data" / "summary_total.json"
    assert json.loads(path.read_text()) == {"created": 3, "when": "2026-03-01 00:00:00+00:00"}
    frame = pd.DataFrame({"table": ["a", "b"], "n": [1, 2]})
    csv = emit("counts", frame)
    assert csv is not None and csv.suffix == ".csv"
    assert pd.read_csv(csv).equals(frame)


def test_explicit_run_dir_wins_and_secrets_are_masked(tmp_path: Path) -> None:
    secret = "s3cr3t-value-for-emit-test"
    secrets.register(secret)
    path = emit("doc", {"password": "pw", "note": f"token was {secret}"}, run_dir=tmp_path)
    text = path.read_text()
    assert secret not in text and '"pw"' not in text
    frame = pd.DataFrame({"note": [f"has {secret}"]})
    assert secret not in emit("frame", frame, run_dir=tmp_path).read_text()


def test_save_figure_writes_a_png(tmp_path: Path) -> None:
    fig = Figure()
    fig.add_subplot().plot([1, 2, 3])
    path = save_figure(fig, "line chart", run_dir=tmp_path)
    assert path == tmp_path / "figures" / "line_chart.png"
    assert path.read_bytes().startswith(b"\x89PNG")


def test_unusable_names_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file name"):
        emit("../..", 1, run_dir=tmp_path)
