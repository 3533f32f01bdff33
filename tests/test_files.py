"""Atomic writes: readers see the old file or the new one, with the permissions asked for."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from snowkit.files import write_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_written_file_has_the_permissions_of_any_new_file(tmp_path: Path) -> None:
    """The temp file's 0600 had been kept: another user's monitor could not read run.json."""
    umask = os.umask(0o022)
    os.umask(umask)
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    written = write_atomic(tmp_path / "sub" / "run.json", b"{}")
    assert written.read_bytes() == b"{}" and _mode(written) == _mode(plain) == 0o666 & ~umask


def test_a_private_file_stays_private_and_no_temp_file_is_left(tmp_path: Path) -> None:
    target = write_atomic(tmp_path / "cache.json", b"[]", fsync=True, mode=0o600)
    write_atomic(target, b"[1]", mode=0o600)
    assert _mode(target) == 0o600 and target.read_bytes() == b"[1]"
    assert [p.name for p in tmp_path.iterdir()] == ["cache.json"]
