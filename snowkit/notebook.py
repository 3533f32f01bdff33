"""Set-up glue for the notebooks: one call per notebook instead of the same cells in each.

Every notebook needs the same few steps: keep log lines out of cell output, start the embedded
instance (or build a client for a real one) once for the kernel's life and stop it at exit,
find the recorded history to analyse, and show a chart while saving it into the runner's report
folder. They live here so notebooks stay thin (notebook-kit notes §4.1) and behave alike; the
business logic stays in ``snowkit.cmdb``, ``snowkit.ops``, ``snowkit.analysis`` and
``snowkit.reports``.

Analysis notebooks must also run on a machine with no history (a fresh clone, CI under nbmake).
:func:`history` then generates a small sample on the embedded instance in a *separate* state
folder (``<state>/samples/<name>/``) so that sample never mixes with real runs and never
competes with a real load for the audit trail's single-writer lock.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import shutil
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from snowkit import paths

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from snowkit.cmdb.job import Connection
    from snowkit.cmdb.report import RunReport
    from snowkit.ops.health import HealthCheck
    from snowkit.ops.metrics import MetricsCollector
    from snowkit.unifi import Inventory, LabConfig

EMBEDDED = "embedded"
HEALTH_HISTORY = "health.jsonl"
#: Load statuses that do not fail a load notebook (see raise_for_status).
RAN_STATUSES = ("success", "partial", "dry_run")

_sessions: dict[tuple[str, bool], Session] = {}
_sessions_lock = threading.Lock()


# ---------------------------------------------------------------------------- logging


def quiet_logging(level: str = "INFO") -> Path:
    """Send snowkit's structured log to ``<state>/logs/snowkit.jsonl`` only, not to the cell.

    Log lines in cell output make reports unreadable and can trip papermill's IOPub limits
    (papermill #477). Returns the log file path.
    """
    from snowkit.ops.logging import configure_logging

    log_file = paths.logs_dir() / "snowkit.jsonl"
    configure_logging(level=level, file_path=log_file, console=False)
    return log_file


def progress_bars() -> bool:
    """Whether a load should draw progress bars: only where someone watches them.

    That is JupyterLab with ipywidgets (``make lab`` installs them). Under ``snowkit run``,
    papermill or nbmake nobody does, and without ipywidgets tqdm falls back to text bars that
    litter the executed notebook and its HTML report.
    """
    from importlib.util import find_spec

    from snowkit.reports import RUN_DIR_ENV

    return find_spec("ipywidgets") is not None and not os.environ.get(RUN_DIR_ENV)


# ---------------------------------------------------------------------------- session


@dataclass
class Session:
    """A ready ServiceNow client, plus the embedded instance when ``instance="embedded"``.

    Use :func:`connect` to get one. ``client`` is a ``ServiceNowAPIClient`` with its metrics
    in ``metrics``; ``sandbox`` is the running ``snowkit.sandbox.Sandbox`` or None.
    """

    instance: str
    connection: Connection
    credentials: Any
    metrics: MetricsCollector
    persist: bool = False
    closed: bool = field(default=False, init=False)

    @property
    def client(self) -> Any:
        return self.connection.client

    @property
    def sandbox(self) -> Any:
        return self.connection.sandbox

    @property
    def embedded(self) -> bool:
        return self.sandbox is not None

    @property
    def url(self) -> str:
        """The instance URL in use (the embedded instance's loopback URL when embedded)."""
        return str(self.sandbox.url if self.embedded else self.client.instance_url)

    def set_faults(self, profile: Mapping[str, Any] | None) -> None:
        """Replace the embedded instance's fault profile (None heals it); docs/sandbox.md."""
        if not self.embedded:
            raise ValueError(
                f"faults can only be injected into the embedded instance, not {self.url}; "
                "run this notebook with instance='embedded'"
            )
        self.sandbox.set_faults(dict(profile) if profile else None)

    def collect(self, source: str = "lab", lab: LabConfig | None = None) -> Inventory:
        """The UniFi inventory from ``source``: "lab" serves the generated lab on a loopback
        port of its own; the others read ``UNIFI_*`` from the environment."""
        from snowkit.cmdb.job import Connection, collect_inventory

        if source != "lab":
            return collect_inventory(source, lab=lab, connection=self.connection)
        # Not mounted on the embedded instance: it keeps serving the first app mounted at a
        # prefix, so a second, different lab in the same kernel would never be seen.
        scratch = Connection(self.client)
        try:
            return collect_inventory(source, lab=lab, connection=scratch)
        finally:
            if scratch.lab_server is not None:
                scratch.lab_server.shutdown()

    def load(self, inventory: Inventory | None = None, **options: Any) -> RunReport:
        """One load through ``snowkit.cmdb.job.run_load`` (same steps and files as
        ``snowkit load``); ``options`` are run_load's keyword arguments."""
        from snowkit.cmdb.job import run_load

        options.setdefault("progress", progress_bars())
        if self.embedded:
            options.setdefault("sandbox", self.sandbox)
        else:
            options.setdefault("instance", self.instance)
            options.setdefault("credentials", self.credentials)
        try:
            return run_load(inventory=inventory, **options)
        finally:
            quiet_logging()  # run_load points the log back at the file, keep the cell quiet

    def health(self, timeout_seconds: float = 15.0) -> dict[str, HealthCheck]:
        """Run the HealthMonitor checks (connectivity, credentials, breaker, this machine)."""
        from snowkit.ops.health import HealthMonitor

        monitor = HealthMonitor(
            client=self.client, credentials=self.credentials, metrics=self.metrics
        )
        return monitor.run_all_checks_sync(timeout_seconds=timeout_seconds)

    def close(self) -> None:
        """Close the client and stop the embedded instance (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.connection.close()
        if self.sandbox is not None:
            with contextlib.suppress(Exception):
                self.sandbox.stop()
        with _sessions_lock:
            for key, session in list(_sessions.items()):
                if session is self:
                    del _sessions[key]

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    instance: str = EMBEDDED,
    *,
    persist: bool = False,
    faults: Mapping[str, Any] | None = None,
    reuse: bool = True,
    client_options: Mapping[str, Any] | None = None,
) -> Session:
    """A :class:`Session` for ``instance`` that lives as long as the kernel.

    ``instance`` is ``"embedded"`` (start the embedded instance on a free loopback port) or an
    instance URL / name (credentials come from the environment or 1Password, never from a
    parameter). ``persist`` keeps the embedded instance's data in ``<state>/sandbox/`` so
    reruns see earlier loads (only one process should use it at a time); otherwise it lives in
    memory. ``faults`` is an initial fault profile (embedded only). With ``reuse`` a second
    call in the same kernel (re-running a cell) returns the open session instead of starting
    another instance. The session is closed at interpreter exit.
    """
    from snowkit.cmdb.job import connect as job_connect
    from snowkit.credentials import CredentialManager
    from snowkit.ops.metrics import MetricsCollector

    quiet_logging()
    key = (instance, persist)
    with _sessions_lock:
        existing = _sessions.get(key)
    if reuse and existing is not None and not existing.closed:
        if faults is not None:
            existing.set_faults(faults)
        return existing

    metrics = MetricsCollector()
    if instance == EMBEDDED:
        from snowkit.sandbox import Sandbox

        db: Path | str = ":memory:"
        if persist:
            from snowkit.cmdb.job import embedded_db_path

            db = embedded_db_path()
            paths.ensure_dir(db.parent)
        sandbox = Sandbox.start(db=db, faults=dict(faults) if faults else None)
        try:
            credentials = CredentialManager.static(
                basic=("admin", sandbox.users["admin"]), instance_url=sandbox.url
            )
            connection = job_connect(
                sandbox=sandbox,
                credentials=credentials,
                metrics=metrics,
                client_options=dict(client_options or {}),
            )
        except Exception:
            sandbox.stop()
            raise
    else:
        if faults:
            raise ValueError(
                "faults can only be injected into the embedded instance; use instance='embedded'"
            )
        credentials = CredentialManager()
        connection = job_connect(
            instance,
            credentials=credentials,
            metrics=metrics,
            client_options=dict(client_options or {}),
        )
    session = Session(instance, connection, credentials, metrics, persist)
    with _sessions_lock:
        _sessions[key] = session
    return session


def close_all() -> None:
    """Close every open session (registered with ``atexit``)."""
    with _sessions_lock:
        sessions = list(_sessions.values())
    for session in sessions:
        with contextlib.suppress(Exception):
            session.close()


atexit.register(close_all)


# ---------------------------------------------------------------------------- showing


def show(fig: Figure, name: str) -> Figure:
    """Save ``fig`` as ``figures/<name>.png`` in the runner's report folder, then return it.

    Outside ``snowkit run`` the save is a no-op. Return the figure as the cell's last value so
    Jupyter shows it once (library charts are not registered with pyplot).
    """
    from snowkit.reports import save_figure

    save_figure(fig, name)
    return fig


def display(obj: Any) -> None:
    """``IPython.display.display`` inside a kernel, ``print`` elsewhere (scripts, tests)."""
    try:
        from IPython.display import display as ipy_display
    except ImportError:  # pragma: no cover - ipykernel is a dependency
        print(obj)
        return
    ipy_display(obj)


def markdown(text: str) -> None:
    """Show ``text`` as Markdown in a kernel (plain text elsewhere)."""
    try:
        from IPython.display import Markdown
    except ImportError:  # pragma: no cover
        print(text)
        return
    display(Markdown(text))


def summary_frame(report: RunReport | Mapping[str, Any]) -> pd.DataFrame:
    """The headline numbers of one load as a two-column table (what, value)."""
    data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    totals = data.get("totals") or {}
    applied = data.get("applied") or {}
    requests = data.get("requests") or {}
    rel = data.get("relationships") or {}
    quality = data.get("data_quality") or {}
    rows: list[tuple[str, Any]] = [
        ("run id", data.get("run_id")),
        ("status", data.get("status")),
        ("instance", data.get("instance")),
        ("source", data.get("source")),
        ("duration (s)", data.get("duration_s")),
        ("planned", ", ".join(f"{k} {v}" for k, v in totals.items() if v) or "nothing"),
        ("written", ", ".join(f"{k} {v}" for k, v in applied.items() if v) or "nothing"),
        ("success rate", f"{100 * float(data.get('success_rate', 1.0)):.1f} %"),
        ("relationships linked", f"{rel.get('created', 0)} new, {rel.get('existing', 0)} kept"),
        ("relationship orphans", rel.get("orphans", 0)),
        ("requests", requests.get("total", 0)),
        ("retries", requests.get("retries", 0)),
        ("429 rate limited", requests.get("rate_limited", 0)),
        ("quarantined records", _count(quality.get("quarantined"))),
        ("outbox pending", (data.get("outbox") or {}).get("pending", 0)),
    ]
    return pd.DataFrame(rows, columns=["what", "value"]).astype({"value": str})


def _count(value: Any) -> int:
    if isinstance(value, list | tuple | dict):
        return len(value)
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def show_summary(report: RunReport | Mapping[str, Any]) -> pd.DataFrame:
    """Show a load's one-line summary, its message and suggestions; return the summary table.

    Also ``emit()``s the table as ``data/summary.csv`` when running under ``snowkit run``.
    """
    from snowkit.reports import emit

    data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    lines = [f"**Run `{data.get('run_id')}`: {data.get('status')}**"]
    if data.get("message"):
        lines.append(f"> {data['message']}")
    for tip in data.get("suggestions") or []:
        lines.append(f"- {tip}")
    markdown("\n\n".join(lines))
    table = summary_frame(data)
    emit("summary", table)
    return table


class LoadFailedError(RuntimeError):
    """Raised at the end of a load notebook so ``snowkit run`` / papermill exit non-zero."""


def raise_for_status(report: RunReport | Mapping[str, Any]) -> None:
    """Fail the notebook when the load failed or only queued its writes (the instance was
    unreachable), after its report has been shown, so a scheduler sees a non-zero exit.

    ``partial`` (some items failed, listed in the report) does not fail the notebook; the next
    run retries those items. Queued writes are kept in the outbox either way.
    """
    data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    status = data.get("status")
    if status not in RAN_STATUSES:
        raise LoadFailedError(
            f"load {data.get('run_id')} {status}: {data.get('message') or 'see the run report'}"
            f" ({(data.get('paths') or {}).get('report', 'report.json')})"
        )


def fault_profile(**settings: Any) -> dict[str, Any] | None:
    """A fault profile from notebook parameters, or None when every setting is off (0/None).

    ``fault_profile(error_rate=0.0, latency_ms=0)`` is None, so a notebook can pass it to
    :func:`connect` for a real instance too. ``seed`` alone does not make a profile.
    """
    profile = {k: v for k, v in settings.items() if v not in (None, 0, 0.0, False, {}, [])}
    if set(profile) <= {"seed"}:
        return None
    return profile


def counts_table(report: RunReport | Mapping[str, Any]) -> pd.DataFrame:
    """Planned records per class (rows) and action (columns) of one load."""
    data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    counts = data.get("counts") or {}
    frame = pd.DataFrame(counts).T.fillna(0).astype("int64")
    frame.index.name = "class"
    ordered = [a for a in ("create", "update", "no_change", "not_seen", "retire") if a in frame]
    return frame[ordered + [c for c in frame.columns if c not in ordered]].sort_index()


def inventory_frame(inventory: Any) -> pd.DataFrame:
    """How many of each kind the collector found (sites, gateways, switches, ...)."""
    counts = inventory.counts() if hasattr(inventory, "counts") else {}
    return pd.DataFrame(list(counts.items()), columns=["kind", "count"])


def error_summary(errors: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """Error contexts grouped by category, severity and operation: how many, when last,
    an example message and what to do (the category's guidance), most frequent first."""
    from snowkit.ops.errors import DEFAULT_GUIDANCE, ErrorCategory

    columns = ["category", "severity", "operation", "count", "last_seen", "example", "guidance"]
    if errors.empty:
        return pd.DataFrame(columns=columns)
    keys = ["category", "severity", "operation"]
    data = errors.assign(**{k: errors[k].fillna("unknown").astype(str) for k in keys})
    grouped = data.sort_values("timestamp").groupby(keys, sort=False)
    table = grouped.agg(
        count=("timestamp", "size"),
        last_seen=("timestamp", "max"),
        example=("error_message", "last"),
    ).reset_index()

    def guidance(category: str) -> str:
        try:
            return DEFAULT_GUIDANCE.get(ErrorCategory(category), "")
        except ValueError:
            return ""

    table["example"] = table["example"].astype(str).str.slice(0, 160)
    table["guidance"] = table["category"].map(guidance)
    return table.sort_values("count", ascending=False).head(top).reset_index(drop=True)[columns]


def health_status_rank(status: str) -> int:
    return {"pass": 0, "warn": 1, "fail": 2}.get(str(status).lower(), 2)


class UnhealthyError(RuntimeError):
    """Raised at the end of the health notebook so a scheduler sees a non-zero exit."""


def raise_for_health(document: Mapping[str, Any], fail_on: str = "fail") -> None:
    """Fail the notebook when the overall status is ``fail_on`` or worse ("never": don't)."""
    if fail_on == "never":
        return
    if fail_on not in ("warn", "fail"):
        raise ValueError(f"fail_on must be 'warn', 'fail' or 'never', not {fail_on!r}")
    status = str(document.get("status"))
    if health_status_rank(status) >= health_status_rank(fail_on):
        raise UnhealthyError(f"health is {status}: {document.get('output') or 'see the checks'}")


# ---------------------------------------------------------------------------- health history


def health_history_path() -> Path:
    """Where health results accumulate: ``<state>/health/health.jsonl``."""
    return paths.state_dir() / "health" / HEALTH_HISTORY


def record_health(document: Mapping[str, Any], path: Path | None = None) -> Path:
    """Append one ``application/health+json`` document (already redacted) to the history."""
    import orjson

    from snowkit.ops.redaction import redact

    target = path or health_history_path()
    paths.ensure_dir(target.parent)
    with open(target, "ab") as handle:
        handle.write(orjson.dumps(redact(dict(document)), default=str) + b"\n")
    return target


# ---------------------------------------------------------------------------- history


RUNS_TABLE_COLUMNS = (
    "run_id",
    "started",
    "status",
    "dry_run",
    "duration_s",
    "created",
    "updated",
    "failed",
    "queued",
    "requests",
    "retries",
    "rate_limited",
    "success_rate",
)


@dataclass(frozen=True)
class History:
    """What snowkit recorded under one state folder, as frames for the analysis notebooks.

    ``sample`` is True when the data was generated by :func:`history` because none existed.
    """

    home: Path
    sample: bool = False
    missing: str = "runs"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def errors_path(self) -> Path:
        return self.home / "errors" / "errors.jsonl"

    @property
    def audit_path(self) -> Path:
        return self.home / "audit" / "audit.jsonl"

    def run_dirs(self) -> list[Path]:
        """Load runs that finished (have a ``report.json``), oldest first."""
        return sorted(p.parent for p in self.runs_dir.glob("*/report.json"))

    def log_paths(self) -> list[Path]:
        """Every run's ``log.jsonl`` plus the shared log and its rotated files."""
        shared = sorted((self.home / "logs").glob("snowkit.jsonl*"), reverse=True)
        return [p for p in [*shared, *(d / "log.jsonl" for d in self.run_dirs())] if p.is_file()]

    def has(self, what: str = "runs") -> bool:
        """Whether there is anything to analyse: ``"runs"`` or ``"errors"``."""
        if what == "errors":
            return self.errors_path.is_file() and self.errors_path.stat().st_size > 0
        return bool(self.run_dirs())

    def logs(self) -> pd.DataFrame:
        from snowkit.analysis import logs_frame

        frame = logs_frame(self.log_paths())
        if frame.empty or "timestamp" not in frame.columns:
            return frame
        return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)

    def errors(self) -> pd.DataFrame:
        from snowkit.analysis import errors_frame

        return errors_frame(self.errors_path)

    def audit(self) -> pd.DataFrame:
        from snowkit.analysis import audit_frame

        return audit_frame(self.audit_path)

    def reports(self) -> pd.DataFrame:
        """Every load's counts (``run_reports_frame``), oldest run first."""
        from snowkit.analysis import run_reports_frame

        return run_reports_frame(self.runs_dir)

    def latest_report(self) -> dict[str, Any]:
        """The newest ``report.json`` as a dict (empty without runs)."""
        import orjson

        dirs = self.run_dirs()
        return orjson.loads((dirs[-1] / "report.json").read_bytes()) if dirs else {}

    def metrics(self) -> pd.DataFrame:
        """Per-operation metrics of the newest run (``metrics_frame``)."""
        from snowkit.analysis import metrics_frame

        dirs = self.run_dirs()
        return metrics_frame(dirs[-1] / "metrics.json" if dirs else {})

    def samples(self) -> pd.DataFrame:
        """Request samples of every run, with a ``run_id`` column (exact percentiles)."""
        from snowkit.analysis import samples_frame

        frames = [
            samples_frame(d / "metrics.json").assign(run_id=d.name)
            for d in self.run_dirs()
            if (d / "metrics.json").is_file()
        ]
        frames = [f for f in frames if not f.empty]
        if not frames:
            return samples_frame({}).assign(run_id=pd.Series(dtype=object))
        return pd.concat(frames, ignore_index=True)

    def runs_table(self) -> pd.DataFrame:
        """One row per load run, oldest first: status, duration, writes, requests, retries."""
        import orjson

        rows = []
        for run_dir in self.run_dirs():
            try:
                data = orjson.loads((run_dir / "report.json").read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue
            applied = data.get("applied") or {}
            requests = data.get("requests") or {}
            rows.append(
                {
                    "run_id": data.get("run_id", run_dir.name),
                    "started": data.get("started"),
                    "status": data.get("status"),
                    "dry_run": bool(data.get("dry_run")),
                    "duration_s": data.get("duration_s"),
                    "created": applied.get("created", 0),
                    "updated": applied.get("updated", 0),
                    "failed": applied.get("failed", 0),
                    "queued": applied.get("queued", 0),
                    "requests": requests.get("total", 0),
                    "retries": requests.get("retries", 0),
                    "rate_limited": requests.get("rate_limited", 0),
                    "success_rate": data.get("success_rate"),
                }
            )
        frame = pd.DataFrame(rows, columns=RUNS_TABLE_COLUMNS)
        frame["started"] = pd.to_datetime(frame["started"], utc=True, errors="coerce")
        return frame

    def verify_audit(self) -> Any:
        """``verify_audit`` over this folder's trail with its own key (an AuditVerification)."""
        from snowkit.ops.audit import AuditVerification, load_audit_key, verify_audit

        if not self.audit_path.is_file():
            return AuditVerification(ok=True, entries=0, message="no audit trail yet")
        key = load_audit_key(self.home / "audit" / "audit.key", create=False)
        return verify_audit(self.audit_path, key)

    def describe(self) -> str:
        """One Markdown line saying what is being analysed."""
        runs = len(self.run_dirs())
        where = f"`{self.home}`"
        if self.sample:
            nothing = "no errors were recorded" if self.missing == "errors" else "no loads ran"
            real = self.home.parents[1]  # <state>/samples/<name>
            return (
                f"In `{real}` {nothing} yet, so this notebook generated a **sample** on the "
                f"embedded instance ({runs} small loads, faults injected) in {where}. Run "
                "`snowkit load` or the load notebook to analyse your own runs."
            )
        if not runs:
            return (
                f"No load runs recorded in {where} yet, so the charts below say *no data*. "
                "Run `snowkit load` or the load notebook first."
            )
        return f"Analysing {runs} recorded load run(s) in {where}."


@contextlib.contextmanager
def state_home(home: Path) -> Iterator[Path]:
    """Point ``snowkit.paths`` (``$SNOWKIT_HOME``) at ``home`` for the block, then restore it."""
    previous = os.environ.get(paths.HOME_ENV)
    os.environ[paths.HOME_ENV] = str(home)
    try:
        yield home
    finally:
        if previous is None:
            os.environ.pop(paths.HOME_ENV, None)
        else:
            os.environ[paths.HOME_ENV] = previous
        quiet_logging()


def use_state(home: Path, *, fresh: bool = False) -> Path:
    """Point this kernel's snowkit state at ``home`` for the rest of its life (drills).

    ``fresh`` empties the folder first. Unlike :func:`state_home` nothing is restored: the
    chaos drill keeps its runs, audit trail and outbox apart from the user's real ones.
    """
    if fresh and home.exists():
        shutil.rmtree(home)
    paths.ensure_dir(home)
    os.environ[paths.HOME_ENV] = str(home.resolve())
    quiet_logging()
    return home.resolve()


def reports_root(reports_dir: str | Path | None = None) -> Path:
    """Where ``snowkit run`` leaves its report folders, seen from inside a notebook.

    The argument if given; else the folder above this run's (under ``snowkit run``); else
    ``$SNOWKIT_REPORTS``; else ``reports/`` of the working directory or, since notebooks run
    with ``notebooks/`` as working directory, of its parent.
    """
    from snowkit.reports import current_run_dir

    if reports_dir:
        return Path(reports_dir).resolve()
    run_dir = current_run_dir()
    if run_dir is not None:
        return run_dir.resolve().parents[2]  # <reports>/<notebook>/<date>/<run_id>
    if os.environ.get("SNOWKIT_REPORTS"):
        return paths.reports_dir()
    here = Path.cwd() / "reports"
    parent = Path.cwd().parent / "reports"
    return here.resolve() if here.is_dir() or not parent.is_dir() else parent.resolve()


def run_trend_chart(runs: pd.DataFrame, *, ax: Any = None) -> Figure:
    """Duration of each run over time, coloured by status (``runs_table`` or
    ``reports_history_frame``; one line per notebook when there is a ``notebook`` column)."""
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=(9.0, 3.6), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    time_column = "started" if "started" in runs.columns else "started_at"
    title = "Run duration over time"
    data = runs.dropna(subset=[time_column, "duration_s"]) if not runs.empty else runs
    if data.empty:
        ax.set_title(title)
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return fig
    groups = data.groupby("notebook") if "notebook" in data.columns else [("load", data)]
    for name, group in groups:
        group = group.sort_values(time_column)
        ax.plot(group[time_column], group["duration_s"], marker="o", label=str(name))
        failed = group[~group["status"].isin(["ok", "success", "dry_run"])]
        if not failed.empty:
            ax.scatter(failed[time_column], failed["duration_s"], color="tab:red", zorder=3)
    ax.set_title(f"{title} (red: not successful)")
    ax.set_xlabel("started (UTC)")
    ax.set_ylabel("seconds")
    ax.legend(loc="best", fontsize="small")
    return fig


def resilience_options(
    *,
    breaker_threshold: int = 5,
    breaker_recovery_s: float = 1.0,
    retry_attempts: int = 4,
    retry_base_delay_s: float = 0.05,
) -> dict[str, Any]:
    """Client options sharing ONE circuit breaker and retry manager across several loads.

    ``session.load(..., client_options=opts)`` then carries the breaker's state from run to
    run, so a drill shows it open during an outage and go half-open, then closed, after it.
    Short delays keep a drill to seconds; production uses the configured policy.
    """
    from snowkit.ops.breaker import CircuitBreaker
    from snowkit.ops.retry import RetryManager, RetryPolicy

    return {
        "circuit_breaker": CircuitBreaker(
            failure_threshold=breaker_threshold, recovery_timeout_seconds=breaker_recovery_s
        ),
        "retry_manager": RetryManager(
            RetryPolicy(
                max_attempts=retry_attempts,
                base_delay_seconds=retry_base_delay_s,
                max_delay_seconds=max(retry_base_delay_s * 16, 0.5),
            )
        ),
    }


def duplicate_source_ids(
    client: Any, tables: tuple[str, ...] = ("cmdb_ci", "cmn_location")
) -> list[str]:
    """Source ids held by more than one record (a write sent twice would show up here)."""
    from collections import Counter

    from snowkit.cmdb.verify import SOURCE_ID_FIELD

    seen: Counter[str] = Counter()
    for table in tables:
        for row in client.query(table, f"{SOURCE_ID_FIELD}ISNOTEMPTY", fields=[SOURCE_ID_FIELD]):
            value = row.get(SOURCE_ID_FIELD)
            if value:
                seen[f"{table}:{value}"] += 1
    return sorted(key for key, n in seen.items() if n > 1)


def phase_table(reports: Mapping[str, RunReport]) -> pd.DataFrame:
    """One row per named load (a drill's phases): status, writes, queue, requests, retries."""
    rows = []
    for phase, report in reports.items():
        data = report.to_dict()
        applied = data.get("applied") or {}
        requests = data.get("requests") or {}
        replayed = (data.get("outbox") or {}).get("replayed") or {}
        rows.append(
            {
                "phase": phase,
                "status": data.get("status"),
                "duration_s": data.get("duration_s"),
                "created": applied.get("created", 0),
                "updated": applied.get("updated", 0),
                "failed": applied.get("failed", 0),
                "queued": applied.get("queued", 0),
                "replayed": replayed.get("sent", 0),
                "outbox_pending": (data.get("outbox") or {}).get("pending", 0),
                "requests": requests.get("total", 0),
                "retries": requests.get("retries", 0),
                "server_errors": requests.get("server_errors", 0),
            }
        )
    return pd.DataFrame(rows)


class NotConvergedError(AssertionError):
    """The CMDB does not hold exactly what the source says after the drill healed."""


def assert_converged(final_plan: RunReport, client: Any) -> pd.DataFrame:
    """Check the final state is exact: nothing left to create or update, an empty outbox and
    no duplicate source ids; return the checks as a table, raise if one fails."""
    data = final_plan.to_dict()
    totals = data.get("totals") or {}
    duplicates = duplicate_source_ids(client)
    from snowkit.cmdb.outbox import Outbox

    with contextlib.closing(Outbox()) as outbox:
        pending = outbox.count()
    checks = [
        ("nothing left to create", totals.get("create", 0), totals.get("create", 0) == 0),
        ("nothing left to update", totals.get("update", 0), totals.get("update", 0) == 0),
        ("records in sync", totals.get("no_change", 0), totals.get("no_change", 0) > 0),
        ("outbox empty", pending, pending == 0),
        ("no duplicate source ids", len(duplicates), not duplicates),
    ]
    table = pd.DataFrame(checks, columns=["check", "observed", "ok"])
    if not table["ok"].all():
        failing = ", ".join(table.loc[~table["ok"], "check"])
        raise NotConvergedError(
            f"the CMDB did not converge after the drill ({failing}); examples of duplicates: "
            f"{duplicates[:5]}"
        )
    return table


#: The sample's fault profile: some 5xx and resets so errors, retries and guidance show up.
SAMPLE_FAULTS: dict[str, Any] = {"seed": 7, "error_rate": 0.08, "latency_ms": 2}


def history(
    instance: str = EMBEDDED,
    *,
    name: str = "sample",
    need: str = "runs",
    generate: bool = True,
    faults: Mapping[str, Any] | None = None,
    lab: LabConfig | None = None,
) -> History:
    """The recorded history (``snowkit.paths.state_dir()``), or a generated sample of it.

    When the state folder has nothing to analyse (``need``: ``"runs"`` or ``"errors"``),
    ``generate`` is set and ``instance`` is the embedded one, two small loads run on a fresh
    in-memory embedded instance (a clean one, then one with ``faults``) in
    ``<state>/samples/<name>/``, replacing an earlier sample there. A real instance is never
    loaded behind the user's back: then the (empty) real history is returned.
    """
    real = History(paths.state_dir())
    if real.has(need) or not generate or instance != EMBEDDED:
        return real
    home = paths.state_dir() / "samples" / name
    if home.exists():
        shutil.rmtree(home)
    generate_sample(home, faults=SAMPLE_FAULTS if faults is None else faults, lab=lab)
    return History(home, sample=True, missing=need)


def generate_sample(
    home: Path, *, faults: Mapping[str, Any] | None = None, lab: LabConfig | None = None
) -> list[RunReport]:
    """Two small loads into ``home`` on an in-memory embedded instance: clean, then faulty."""
    from snowkit.cmdb.job import run_load
    from snowkit.ops.retry import RetryManager, RetryPolicy
    from snowkit.sandbox import Sandbox
    from snowkit.unifi import LabConfig

    lab = lab or LabConfig(sites=2, devices_per_site=4, clients_per_site=8)
    reports = []
    with state_home(paths.ensure_dir(home)), Sandbox.start(db=":memory:") as sandbox:
        reports.append(run_load(sandbox=sandbox, lab=lab, progress=False))
        sandbox.set_faults(dict(faults) if faults else None)
        # short back-off so the sample takes seconds; the faults still cause real retries
        fast = RetryManager(RetryPolicy(max_attempts=5, base_delay_seconds=0.02))
        grown = dataclasses.replace(  # new devices and clients, some changed: real writes
            lab,
            devices_per_site=lab.devices_per_site + 1,
            clients_per_site=lab.clients_per_site + 2,
        )
        reports.append(
            run_load(
                sandbox=sandbox,
                lab=grown,
                progress=False,
                client_options={"retry_manager": fast},
            )
        )
        sandbox.set_faults(None)
    return reports


__all__ = [
    "EMBEDDED",
    "History",
    "LoadFailedError",
    "Session",
    "close_all",
    "connect",
    "display",
    "generate_sample",
    "health_history_path",
    "history",
    "markdown",
    "quiet_logging",
    "raise_for_status",
    "record_health",
    "show",
    "show_summary",
    "state_home",
    "summary_frame",
]
