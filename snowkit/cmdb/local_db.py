"""Opening the loader's local SQLite files (outbox, intent journal, sync state) one way.

Why one place: each is opened with WAL and its schema, and a file that is no database (a disk
fault, a half-copied backup, something else saved under its name) raised a bare
``sqlite3.DatabaseError: file is not a database`` naming no file. Now the error names the file
and says what to do, which depends on what the file holds.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from snowkit import paths


class LocalStoreError(RuntimeError):
    """A local store cannot be opened; the message names the file and what to do."""


def open_store(path: Path, schema: str, *, what: str, advice: str) -> sqlite3.Connection:
    """A connection to ``path`` (created with ``schema`` if new) for any thread, autocommit
    (transactions are explicit), WAL. ``what`` names the store, ``advice`` says what to do
    if the file is unreadable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(schema)
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()
        if "locked" in str(exc):
            advice = "another snowkit process is using it; run again once that one has finished"
        elif not os.access(path.parent, os.W_OK):
            advice = (
                f"its directory is not writable: point {paths.HOME_ENV} at a writable directory"
            )
        raise LocalStoreError(f"the {what} {path} cannot be opened ({exc}): {advice}") from exc
    return conn
