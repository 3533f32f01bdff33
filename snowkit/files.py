"""Atomic file replacement, shared by every writer whose readers must never see half a file.

The metrics snapshot, the UniFi last-known-good cache and the run report are read by other
processes (notebooks, cron, node_exporter) while a run may crash mid-write; writing to a temp
file in the same directory and ``os.replace``-ing it over the target gives them either the old
file or the new one, never a torn one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], data: bytes, *, fsync: bool = False) -> Path:
    """Replace ``path`` with ``data`` in one step (creating its directory); returns the path.

    ``fsync=True`` also forces the bytes to disk before the rename, for files whose loss after
    a power cut matters (the cache is what a later run falls back on).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
