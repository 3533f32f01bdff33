"""Notebook runs and their report folders: the papermill runner, sidecars, the run catalog.

``run()`` executes a notebook into ``reports/<notebook>/<date>/<run_id>/``; notebooks call
``emit()`` and ``save_figure()`` to leave files next to the report; ``list_runs()`` reads the
folders back.
"""

from snowkit.reports.catalog import RunEntry, list_runs
from snowkit.reports.emit import RUN_DIR_ENV, current_run_dir, emit, save_figure
from snowkit.reports.runner import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    RunError,
    RunResult,
    RunUsageError,
    resolve_parameter,
    run,
)

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "RUN_DIR_ENV",
    "RunEntry",
    "RunError",
    "RunResult",
    "RunUsageError",
    "current_run_dir",
    "emit",
    "list_runs",
    "resolve_parameter",
    "run",
    "save_figure",
]
