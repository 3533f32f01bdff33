"""Where the audit trail's HMAC key comes from, and that it is never empty."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from snowkit.credentials import CredentialManager
from snowkit.ops.audit import AuditError, AuditTrail
from snowkit.ops.audit_chain import default_key_file, load_audit_key


def test_an_empty_key_file_is_refused_not_used() -> None:
    """A crash between creating the file and writing the key had left it empty: every
    checkpoint was then signed with the empty key, which anyone can forge."""
    key_file = default_key_file()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text("\n")
    with pytest.raises(AuditError, match="is empty: restore the key"):
        AuditTrail(Path(key_file.parent) / "audit.jsonl")


def test_a_new_key_file_appears_whole_and_private() -> None:
    key = load_audit_key()
    key_file = default_key_file()
    assert len(key) == 64 and key_file.read_text().strip().encode() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not [p for p in key_file.parent.iterdir() if p.name.endswith(".tmp")]
    assert load_audit_key() == key  # the same key next time


def test_the_1password_reference_variable_is_the_key(tmp_path: Path) -> None:
    """SNOWKIT_AUDIT_KEY_OP_REF had been ignored: a key file was made next to the trail."""
    op = tmp_path / "op"
    op.write_text(
        '#!/bin/sh\ncase "$1" in whoami) exit 0 ;; read) printf %s "key-from-1password" ;; esac\n'
    )
    op.chmod(0o755)
    env = {"SNOWKIT_AUDIT_KEY_OP_REF": "op://vault/item/key", "PATH": f"{tmp_path}:/usr/bin:/bin"}
    assert load_audit_key(env=env) == b"key-from-1password"
    assert not default_key_file().exists()


def test_the_credential_manager_and_the_trail_use_one_key_file() -> None:
    manager = CredentialManager(env={})
    assert (
        manager.audit_key() == load_audit_key() == default_key_file().read_text().strip().encode()
    )
    os.chmod(default_key_file(), 0o644)
    manager.audit_key()
    assert stat.S_IMODE(default_key_file().stat().st_mode) == 0o600  # loosened: tightened


def test_entries_appended_without_the_key_are_named_when_a_later_writer_seals_them() -> None:
    """They had been sealed by the next run's resume checkpoint, and `verify` said ok."""
    import orjson

    from snowkit import paths
    from snowkit.ops.audit import default_anchor_path, verify_audit
    from snowkit.ops.audit_chain import canonical, entry_hash

    path = paths.audit_path()
    with AuditTrail(path, fsync=False) as trail:
        for n in range(3):
            trail.record("create", "cmdb_ci_netgear", f"sys{n}", after={"name": f"sw{n}"})
    last = orjson.loads(path.read_bytes().splitlines()[-2])  # the last entry
    forged = {
        "seq": last["seq"] + 1, "timestamp": "2026-01-01T00:00:00+00:00", "run_id": "r-evil",
        "correlation_id": None, "actor": "snowkit", "action": "delete",
        "table": "cmdb_ci_netgear", "sys_id": "sys-x", "source_id": None, "before": None,
        "after": None, "outcome": "success", "prev_hash": last["hash"],
    }  # fmt: skip
    forged["hash"] = entry_hash(forged)
    with open(path, "ab") as handle:
        handle.write(canonical(forged) + b"\n")
    AuditTrail(path, recover=True, fsync=False).close()  # the next load opens the trail
    result = verify_audit(path, anchor=default_anchor_path(path))
    assert result.ok  # a crash mid-batch leaves the same shape: not a proof of tampering
    assert any("seq 4..4 were sealed by a later writer" in w for w in result.warnings)


def test_a_key_with_a_line_break_reaches_no_message_in_any_spelling() -> None:
    """A key pasted with its newline: the header error showed it as b'...\\n', which the
    registry (holding the raw value only) did not mask; and it reached the run report."""
    from snowkit.cmdb.writes import describe
    from snowkit.ops.redaction import redact_text

    manager = CredentialManager(env={"SERVICENOW_API_KEY": "snk-apikey-7f3e9a1c2b\n"})
    key = manager.get("api_key")
    assert key is not None and key.get_secret_value() == "snk-apikey-7f3e9a1c2b"
    error = ValueError(f"Invalid header value {b'snk-apikey-7f3e9a1c2b' + bytes([10])!r}")
    assert "snk-apikey" not in redact_text(str(error))
    assert "snk-apikey" not in describe(error)
