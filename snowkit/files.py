"""Atomic file replacement, shared by every writer whose readers must never see half a file.

The metrics snapshot, the UniFi last-known-good cache and the run report are read by other
processes (notebooks, cron, node_exporter) while a run may crash mid-write; writing to a temp
file in the same directory and ``os.replace``-ing it over the target gives them either the old
file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from pathlib import Path


def write_atomic(
    path: str | os.PathLike[str], data: bytes, *, fsync: bool = False, mode: int | None = None
) -> Path:
    """Replace ``path`` with ``data`` in one step (creating its directory); returns the path.

    ``fsync=True`` also forces the bytes to disk before the rename, for files whose loss after
    a power cut matters (the cache is what a later run falls back on). ``mode``: the file's
    permissions; by default those of any new file (``0o666`` less the umask). The temp file's
    private ``0o600`` had been kept, so a scheduler or monitor running as another user could
    not read ``run.json``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), mode if mode is not None else 0o666 & ~_umask())
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


@functools.cache
def _umask() -> int:
    """The process umask, read without changing it where Linux tells it (setting it to learn
    it would race with other threads creating files)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    current = os.umask(0o022)
    os.umask(current)
    return current
