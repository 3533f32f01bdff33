"""Set-up glue for the notebooks: one call per notebook instead of the same cells in each.

Every notebook needs the same few steps: keep log lines out of cell output, start the embedded
instance (or build a client for a real one) once for the kernel's life and stop it at exit,
find the recorded history to analyse, show a chart while saving it into the runner's report
folder, and end with a verdict that sets the run's exit code. They live here so notebooks stay
thin (notebook-kit notes §4.1) and behave alike; the business logic stays in ``snowkit.cmdb``,
``snowkit.ops``, ``snowkit.analysis`` and ``snowkit.reports``. Notebooks import this package
as ``nbk``:

- ``session``: :func:`connect` → :class:`Session` (client, embedded instance, collect, load,
  health); ``output``: :func:`show`, :func:`markdown`, :func:`display`;
- ``loads``: summary and counts tables, :func:`raise_for_status`;
- ``health``: :func:`check_health`, the health history, :func:`raise_for_health`;
- ``history``: :func:`history` → :class:`History` (frames of recorded runs, or a sample);
  ``error_summary`` and ``run_trend_chart`` now live in ``snowkit.analysis`` (re-exported);
- ``drill``: fault profiles, a breaker shared across loads (:class:`Resilience`),
  :func:`assert_converged`.
"""

from snowkit.analysis import error_summary, run_trend_chart  # moved; kept importable here
from snowkit.notebook.drill import (
    NotConvergedError,
    Resilience,
    assert_converged,
    drill_home,
    duplicate_source_ids,
    fault_profile,
    phase_table,
)
from snowkit.notebook.health import (
    UnhealthyError,
    check_health,
    health_history_path,
    health_status_rank,
    raise_for_health,
    record_health,
)
from snowkit.notebook.history import (
    RUNS_TABLE_COLUMNS,
    SAMPLE_FAULTS,
    History,
    generate_sample,
    history,
    reports_root,
    state_home,
    use_state,
)
from snowkit.notebook.loads import (
    RAN_STATUSES,
    LoadFailedError,
    counts_table,
    inventory_frame,
    raise_for_status,
    show_summary,
    summary_frame,
)
from snowkit.notebook.output import display, markdown, show
from snowkit.notebook.session import (
    EMBEDDED,
    Session,
    close_all,
    connect,
    progress_bars,
    quiet_logging,
)

__all__ = [
    "EMBEDDED",
    "RAN_STATUSES",
    "RUNS_TABLE_COLUMNS",
    "SAMPLE_FAULTS",
    "History",
    "LoadFailedError",
    "NotConvergedError",
    "Resilience",
    "Session",
    "UnhealthyError",
    "assert_converged",
    "check_health",
    "close_all",
    "connect",
    "counts_table",
    "display",
    "drill_home",
    "duplicate_source_ids",
    "error_summary",
    "fault_profile",
    "generate_sample",
    "health_history_path",
    "health_status_rank",
    "history",
    "inventory_frame",
    "markdown",
    "phase_table",
    "progress_bars",
    "quiet_logging",
    "raise_for_health",
    "raise_for_status",
    "record_health",
    "reports_root",
    "run_trend_chart",
    "show",
    "show_summary",
    "state_home",
    "summary_frame",
    "use_state",
]
