"""Where snowkit keeps its state on disk.

One place decides the layout so the loader, the notebooks, the CLI and the analysis code all
find the same files. ``SNOWKIT_HOME`` moves the whole tree (tests point it at a temp dir).
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "SNOWKIT_HOME"


def state_dir() -> Path:
    """The root of snowkit's state: ``$SNOWKIT_HOME`` or ``./.snowkit``."""
    return Path(os.environ.get(HOME_ENV) or ".snowkit").resolve()


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def sandbox_dir() -> Path:
    """CA, certificates and the SQLite file of the embedded instance."""
    return state_dir() / "sandbox"


def logs_dir() -> Path:
    """Structured JSON-lines logs (rotating)."""
    return state_dir() / "logs"


def errors_path() -> Path:
    """Persisted error contexts, one JSON object a line."""
    return state_dir() / "errors" / "errors.jsonl"


def audit_path() -> Path:
    """The tamper-evident audit trail (a hash chain across runs)."""
    return state_dir() / "audit" / "audit.jsonl"


def runs_dir() -> Path:
    """One folder per load run: report.json, metrics, the run's own log."""
    return state_dir() / "runs"


def outbox_path() -> Path:
    """The durable outbox of writes queued while the instance was unreachable."""
    return state_dir() / "outbox.sqlite3"


def cache_dir() -> Path:
    """Last-known-good copies of UniFi collections, one per source."""
    return state_dir() / "cache"


def reports_dir() -> Path:
    """Notebook run reports; ``reports/`` of the working directory unless overridden."""
    return Path(os.environ.get("SNOWKIT_REPORTS") or "reports").resolve()
