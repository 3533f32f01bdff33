"""Turn what snowkit leaves on disk into pandas DataFrames for notebooks and reports.

Every loader reads the formats fixed in ``docs/architecture.md`` ("JSON-lines formats" and the
state layout), tolerates torn or blank lines (counted in ``frame.attrs["skipped_lines"]``),
returns tz-aware UTC timestamps, and returns an empty frame with the expected columns when the
file is missing, so a chart or a suggestion on a fresh install shows "no data" instead of
raising.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from snowkit.analysis._jsonl import (
    PathLike,
    as_paths,
    parse_times,
    read_jsonl_frame,
    rotated_family,
    to_utc,
)
from snowkit.ops.audit import audit_segments

LOG_COLUMNS = ("timestamp", "level", "event", "logger", "run_id", "correlation_id")
ERROR_COLUMNS = (
    "timestamp",
    "operation",
    "category",
    "severity",
    "error_message",
    "retryable",
    "http_status",
    "correlation_id",
    "details",
)
AUDIT_COLUMNS = (
    "seq",
    "timestamp",
    "run_id",
    "correlation_id",
    "actor",
    "action",
    "table",
    "sys_id",
    "source_id",
    "before",
    "after",
    "outcome",
)
CHAIN_COLUMNS = ("prev_hash", "hash")
OPERATION_COLUMNS = (
    "operation_name",
    "total_requests",
    "successful_requests",
    "failed_requests",
    "average_response_time_ms",
    "p50_response_time_ms",
    "p95_response_time_ms",
    "p99_response_time_ms",
    "max_response_time_ms",
    "error_rate_percent",
    "last_updated",
)
SAMPLE_COLUMNS = ("timestamp", "operation", "table", "method", "status_code", "duration_ms", "ok")
RUN_REPORT_COLUMNS = (
    "run_id",
    "started_at",
    "finished_at",
    "duration_s",
    "table",
    "action",
    "count",
)
HEALTH_COLUMNS = ("checked_at", "check", "status", "message", "response_time_ms", "overall")
HISTORY_COLUMNS = (
    "notebook",
    "date",
    "run_id",
    "status",
    "started_at",
    "finished_at",
    "duration_s",
    "error",
    "path",
)


def logs_frame(
    path_or_paths: PathLike | Iterable[PathLike], *, rotated: bool = False
) -> pd.DataFrame:
    """Structured log lines from one file or several (in the order given).

    ``rotated=True`` with one path also reads its rotated siblings (``snowkit.jsonl.1``, ...),
    oldest first, so the frame covers everything the rotating handler still keeps.
    """
    paths = as_paths(path_or_paths)
    if rotated and len(paths) == 1:
        paths = rotated_family(paths[0])
    return read_jsonl_frame(paths, ensure=LOG_COLUMNS)


def errors_frame(path: PathLike) -> pd.DataFrame:
    """Persisted error contexts (``errors.jsonl``), one row per captured error."""
    return read_jsonl_frame(as_paths(path), ensure=ERROR_COLUMNS)


def audit_frame(path: PathLike, *, keep_chain: bool = False, rotated: bool = True) -> pd.DataFrame:
    """Audit entries (checkpoints dropped, counted in ``attrs["checkpoints"]``).

    ``rotated`` also reads ``audit.jsonl.N`` siblings, oldest first, as the trail spans them.
    The hash-chain fields are noise for analysis and dropped unless ``keep_chain``; verifying
    the chain is ``snowkit audit verify``'s job, not this frame's.
    """
    base = Path(path)
    # Audit segments number up with age (.1 oldest), the reverse of log rotation: the trail's
    # own ordering keeps the chain in sequence.
    paths = (audit_segments(base) or [base]) if rotated else [base]
    frame = read_jsonl_frame(paths, ensure=AUDIT_COLUMNS + CHAIN_COLUMNS + ("type",))
    is_checkpoint = frame["type"].eq("checkpoint").fillna(False).astype(bool)
    checkpoints = int(is_checkpoint.sum())
    frame = frame.loc[~is_checkpoint].drop(columns=["type", "covers_hash", "hmac"], errors="ignore")
    if not keep_chain:
        frame = frame.drop(columns=list(CHAIN_COLUMNS))
    frame = frame.reset_index(drop=True)
    frame.attrs["checkpoints"] = checkpoints
    return frame


def _load_json(source: PathLike | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if not path.is_file():
        return {}
    return orjson.loads(path.read_bytes())


def metrics_frame(snapshot: PathLike | Mapping[str, Any]) -> pd.DataFrame:
    """Per-operation metrics from a ``metrics.json`` snapshot (or the snapshot dict itself)."""
    data = _load_json(snapshot)
    frame = pd.DataFrame(list(data.get("operations") or []))
    for name in OPERATION_COLUMNS:
        if name not in frame.columns:
            frame[name] = pd.Series(
                dtype="float64" if name.endswith(("_ms", "_percent")) else object
            )
    frame = parse_times(frame, ["last_updated"])
    frame.attrs["system"] = dict(data.get("system") or {})
    return frame


def samples_frame(snapshot: PathLike | Mapping[str, Any]) -> pd.DataFrame:
    """Individual request samples from a ``metrics.json`` snapshot, for exact percentiles."""
    data = _load_json(snapshot)
    frame = pd.DataFrame(list(data.get("samples") or []))
    for name in SAMPLE_COLUMNS:
        if name not in frame.columns:
            frame[name] = pd.Series(dtype="float64" if name == "duration_ms" else object)
    frame["duration_ms"] = pd.to_numeric(frame["duration_ms"], errors="coerce")
    return parse_times(frame, ["timestamp"])


def _count_rows(counts: Any) -> list[tuple[str, str, int]]:
    """Counts as ``{table: {action: n}}`` or ``[{"table"|"class", "action", "count"}]``."""
    rows: list[tuple[str, str, int]] = []
    if isinstance(counts, Mapping):
        for table, per_action in counts.items():
            if isinstance(per_action, Mapping):
                rows.extend((str(table), str(a), int(n or 0)) for a, n in per_action.items())
    elif isinstance(counts, list):
        for item in counts:
            if isinstance(item, Mapping):
                table = item.get("table", item.get("class", ""))
                rows.append((str(table), str(item.get("action", "")), int(item.get("count") or 0)))
    return rows


def _failure_rows(failures: Any) -> list[tuple[str, str, int]]:
    """``failures`` (one item per write that did not land) as ``failed`` counts per table."""
    per_table: dict[str, int] = {}
    for item in failures if isinstance(failures, list) else []:
        if isinstance(item, Mapping):
            table = str(item.get("table", ""))
            per_table[table] = per_table.get(table, 0) + 1
    return [(table, "failed", n) for table, n in sorted(per_table.items())]


def run_report_frame(report: PathLike | Mapping[str, Any]) -> pd.DataFrame:
    """One load run's ``report.json`` as rows of (table, action, count) with the run's timings.

    ``counts`` (``{table: {action: n}}``: the planned create / update / no_change / not_seen /
    retire) become one row each; the ``failures`` list adds a ``failed`` row per table, so a
    success rate per class is ``1 - failed / (create + update + retire)``. The whole report
    stays reachable in ``attrs["report"]`` (timings, relationships, data_quality, ...).
    """
    data = _load_json(report)
    run_id = data.get("run_id")
    rows = [
        {
            "run_id": run_id,
            "started_at": data.get("started_at", data.get("started")),
            "finished_at": data.get("finished_at", data.get("finished")),
            "duration_s": data.get("duration_s"),
            "table": table,
            "action": action,
            "count": count,
        }
        for table, action, count in [
            *_count_rows(data.get("counts")),
            *_failure_rows(data.get("failures")),
        ]
    ]
    frame = pd.DataFrame(rows, columns=list(RUN_REPORT_COLUMNS))
    frame["count"] = frame["count"].astype("int64")
    frame["duration_s"] = pd.to_numeric(frame["duration_s"], errors="coerce")
    frame = parse_times(frame, ["started_at", "finished_at"])
    frame.attrs["report"] = data
    return frame


def run_reports_frame(runs_dir: PathLike, *, dry_runs: bool = True) -> pd.DataFrame:
    """Every ``<runs_dir>/<run_id>/report.json`` stacked, oldest run first. ``dry_runs``
    False leaves out plans that wrote nothing (the load notebook makes one before every
    apply: counted, they doubled the attempted writes of a success rate)."""
    reports = sorted(Path(runs_dir).glob("*/report.json"))
    frames = [run_report_frame(p) for p in reports]
    frames = [
        f for f in frames if not f.empty and (dry_runs or not f.attrs["report"].get("dry_run"))
    ]
    if not frames:
        return run_report_frame({})
    frame = pd.concat(frames, ignore_index=True).sort_values(
        ["started_at", "run_id"], kind="stable"
    )
    return frame.reset_index(drop=True)


def _health_rows(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of one health document.

    Reads ``application/health+json`` (``checks: {"name:measurement": [{"status", "time",
    "observedValue", "observedUnit", "output"}...]}``, what ``HealthMonitor.to_health_json``
    writes) and the simpler ``checks: {name: {"status", "message", "response_time_ms"}}``.
    """
    checked_at = doc.get("checked_at") or doc.get("timestamp") or doc.get("time")
    overall = doc.get("status") or doc.get("overall")
    checks = doc.get("checks") or {}
    pairs: list[tuple[str, Any]]
    if isinstance(checks, Mapping):
        pairs = [
            (str(name), entry)
            for name, value in checks.items()
            for entry in (value if isinstance(value, list) else [value])
        ]
    else:
        pairs = [(str(c.get("name", "")), c) for c in checks if isinstance(c, Mapping)]
    rows = []
    for name, entry in pairs:
        if not isinstance(entry, Mapping):
            continue
        response = entry.get("response_time_ms")
        if response is None and entry.get("observedUnit") == "ms":
            response = entry.get("observedValue")
        rows.append(
            {
                "checked_at": entry.get("time") or entry.get("checked_at") or checked_at,
                "check": name,
                "status": entry.get("status"),
                "message": entry.get("message", entry.get("output")),
                "response_time_ms": response,
                "overall": overall,
            }
        )
    return rows


def health_frame(
    health: PathLike | Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> pd.DataFrame:
    """Health results (one ``to_health_json`` document, a list of them, or a JSON/JSONL file).

    One row per check per document: ``checked_at, check, status, message, response_time_ms,
    overall``; a list of documents is a health history.
    """
    docs: list[Mapping[str, Any]]
    if isinstance(health, Mapping):
        docs = [health]
    elif isinstance(health, str | Path):
        path = Path(health)
        if not path.is_file():
            docs = []
        elif path.suffix == ".jsonl":
            frame = read_jsonl_frame([path], times=())
            docs = frame.to_dict("records")
        else:
            loaded = orjson.loads(path.read_bytes())
            docs = loaded if isinstance(loaded, list) else [loaded]
    else:
        docs = list(health)
    rows = [row for doc in docs for row in _health_rows(doc)]
    frame = pd.DataFrame(rows, columns=list(HEALTH_COLUMNS))
    frame["response_time_ms"] = pd.to_numeric(frame["response_time_ms"], errors="coerce")
    return parse_times(frame, ["checked_at"])


def reports_history_frame(reports_dir: PathLike) -> pd.DataFrame:
    """Every notebook run under ``reports/<notebook>/<date>/<run_id>/``, oldest first.

    For trends across scheduled runs (status and duration over time per notebook). A run folder
    without a readable ``run.json`` (the run was killed, or is still going) is a row with
    status ``incomplete``, started when its run id says; they are counted in
    ``attrs["incomplete_runs"]``. A kill is what an operations report most needs to show, and
    leaving such runs out had hidden them. The run this kernel belongs to (``SNOWKIT_RUN_DIR``)
    is left out: it is not over.
    """
    from snowkit.reports.catalog import started_from_run_id
    from snowkit.reports.emit import RUN_DIR_ENV

    own = os.environ.get(RUN_DIR_ENV)
    own_dir = Path(own).resolve() if own else None
    rows: list[dict[str, Any]] = []
    incomplete = 0
    for run_dir in Path(reports_dir).glob("*/*/*"):
        if not run_dir.is_dir() or run_dir.resolve() == own_dir:
            continue
        try:
            doc = orjson.loads((run_dir / "run.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            doc = None
        if not isinstance(doc, dict):
            incomplete += 1
            started = started_from_run_id(run_dir.name)
            doc = {"status": "incomplete", "started_at": started.isoformat() if started else None}
        error = doc.get("error") or {}
        rows.append(
            {
                "notebook": doc.get("notebook") or run_dir.parent.parent.name,
                "date": run_dir.parent.name,
                "run_id": doc.get("run_id") or run_dir.name,
                "status": doc.get("status"),
                "started_at": doc.get("started_at"),
                "finished_at": doc.get("finished_at"),
                "duration_s": doc.get("duration_s"),
                "error": error.get("ename") if isinstance(error, Mapping) else None,
                "path": str(run_dir),
            }
        )
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    frame["duration_s"] = pd.to_numeric(frame["duration_s"], errors="coerce")
    frame = parse_times(frame, ["started_at", "finished_at"])
    frame = frame.sort_values(["started_at", "run_id"], kind="stable").reset_index(drop=True)
    frame.attrs["incomplete_runs"] = incomplete
    return frame


__all__ = [
    "audit_frame",
    "errors_frame",
    "health_frame",
    "logs_frame",
    "metrics_frame",
    "reports_history_frame",
    "run_report_frame",
    "run_reports_frame",
    "samples_frame",
    "to_utc",
]
