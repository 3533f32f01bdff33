"""List past notebook runs from the report folders (``snowkit reports list``).

The folder tree is the catalog: ``<reports_dir>/<notebook>/<date>/<run_id>/run.json``. No
database to fall out of step with what is on disk; a run whose ``run.json`` is missing (killed
mid-run) is still listed, with status ``incomplete``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from snowkit import paths


@dataclass(frozen=True)
class RunEntry:
    """One run folder as the catalog sees it."""

    notebook: str
    date: str
    run_id: str
    status: str
    started_at: str | None
    duration_s: float | None
    path: Path
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["path"] = str(self.path)
        return doc


def _entry(run_dir: Path) -> RunEntry:
    notebook, date = run_dir.parent.parent.name, run_dir.parent.name
    try:
        doc = orjson.loads((run_dir / "run.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return RunEntry(notebook, date, run_dir.name, "incomplete", None, None, run_dir)
    error = doc.get("error") or {}
    message = (
        f"{error.get('ename')}: {error.get('evalue')}"
        if isinstance(error, dict) and error
        else None
    )
    return RunEntry(
        notebook=str(doc.get("notebook") or notebook),
        date=date,
        run_id=str(doc.get("run_id") or run_dir.name),
        status=str(doc.get("status") or "unknown"),
        started_at=doc.get("started_at"),
        duration_s=doc.get("duration_s"),
        path=run_dir,
        error=message,
    )


def list_runs(
    reports_dir: str | Path | None = None, *, notebook: str | None = None, limit: int | None = None
) -> list[RunEntry]:
    """Runs under ``reports_dir`` (default: ``snowkit.paths.reports_dir()``), newest first.

    ``notebook`` filters by notebook stem (``health_check`` or ``health_check.ipynb``).
    """
    base = Path(reports_dir) if reports_dir else paths.reports_dir()
    if not base.is_dir():
        return []
    stem = Path(notebook).stem if notebook else "*"
    run_dirs = [p for p in base.glob(f"{stem}/*/*") if p.is_dir()]
    entries = [_entry(p) for p in run_dirs]
    entries.sort(key=_started, reverse=True)
    return entries[:limit] if limit else entries


def _started(entry: RunEntry) -> str:
    """When a run started, as a sortable UTC string: ``started_at``, else the timestamp its
    run id starts with (a run still going, or killed, has no run.json: it had sorted as the
    oldest of its day), else when its folder was last written."""
    if entry.started_at:
        try:
            moment = datetime.fromisoformat(entry.started_at)
        except ValueError:
            moment = None
        if moment is not None:
            if moment.tzinfo is not None:
                moment = moment.astimezone(UTC)
            return moment.strftime("%Y-%m-%dT%H:%M:%S")
    stamp = started_from_run_id(entry.run_id)
    if stamp is None:  # a custom --run-id: when its folder was made, not the day's start
        try:
            stamp = datetime.fromtimestamp(entry.path.stat().st_mtime, UTC)
        except OSError:
            return f"{entry.date}T00:00:00"
    return stamp.strftime("%Y-%m-%dT%H:%M:%S")


def started_from_run_id(run_id: str) -> datetime | None:
    """The UTC time a run id begins with (``20260301T040000Z-...``); None for other ids."""
    try:
        return datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


__all__ = ["RunEntry", "list_runs", "started_from_run_id"]
