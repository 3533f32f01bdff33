"""Where load progress bars are drawn: the decision in ``snowkit.cmdb.progress``."""

from __future__ import annotations

import io
from pathlib import Path

import nbformat
import pytest

from snowkit.cmdb import progress
from snowkit.reports import RUN_DIR_ENV


@pytest.mark.parametrize(
    ("requested", "env", "notebook", "widgets", "tty", "expected"),
    [
        (False, {}, True, True, True, "none"),  # the caller said no
        (True, {RUN_DIR_ENV: "/r"}, True, True, True, "none"),  # under the runner
        (None, {RUN_DIR_ENV: "/r"}, False, False, True, "none"),
        (True, {}, True, True, False, "widget"),  # JupyterLab with ipywidgets
        (None, {}, True, False, True, "none"),  # kernel without ipywidgets: no text litter
        (True, {}, False, True, True, "text"),  # a terminal
        (None, {}, False, True, False, "none"),  # cron, CI, a pipe
        (True, {RUN_DIR_ENV: ""}, False, False, True, "text"),  # empty means unset
    ],
)
def test_bar_kind_rules(
    requested: bool | None, env: dict, notebook: bool, widgets: bool, tty: bool, expected: str
) -> None:
    kind = progress.bar_kind(requested, env=env, notebook=notebook, widgets=widgets, stderr_tty=tty)
    assert kind == expected


def test_run_dir_variable_is_the_runners() -> None:
    assert progress.RUN_DIR_ENV == RUN_DIR_ENV


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_text_bar_unless_the_runner_is_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)
    with progress.bar(4, "creating", unit="rec") as pbar:
        pbar.update(4)
    assert "creating:" in terminal.getvalue() and "0/4" in terminal.getvalue()

    monkeypatch.setenv(RUN_DIR_ENV, "/tmp/run")
    terminal.seek(0)
    terminal.truncate()
    with progress.bar(4, "creating") as pbar:
        pbar.update(4)
    assert type(pbar).__name__ == "_NullBar" and pbar.n == 4
    assert terminal.getvalue() == ""


def test_empty_work_never_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", _Terminal())
    assert type(progress.bar(0, "nothing")).__name__ == "_NullBar"


def test_a_kernel_without_ipywidgets_leaves_no_bar_and_no_warning_in_the_notebook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """papermill/nbmake outside the runner: a real kernel, no ipywidgets installed here."""
    import papermill as pm

    if progress.widgets_available():
        pytest.skip("ipywidgets is installed: the widget bar is the right choice")
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from snowkit.cmdb import progress\n"
            "with progress.bar(50, 'creating') as b:\n"
            "    b.update(50)\n"
            "print(progress.in_notebook(), progress.bar_kind())"
        )
    ]
    source, output = tmp_path / "bar.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, source)
    pm.execute_notebook(str(source), str(output), kernel_name="python3", progress_bar=False)
    outputs = nbformat.read(output, as_version=4).cells[0].outputs
    assert [(o.name, o.text) for o in outputs] == [("stdout", "True none\n")]
