"""AuditTrail and verify_audit: chain, checkpoints, tampering, rotation, resume, crash recovery."""

from __future__ import annotations

import gc
import itertools
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from snowkit import paths
from snowkit.ops.audit import (
    GENESIS_HASH,
    AuditError,
    AuditTrail,
    IncompleteAuditLineError,
    audit_segments,
    canonical,
    checkpoint_mac,
    entry_hash,
    load_audit_key,
    read_audit,
    verify_audit,
)

KEY = b"test-audit-key-0123456789abcdef"


def _write_trail(path: Path, n: int = 30, checkpoint_every: int = 10, **kw: object) -> Path:
    with AuditTrail(path, key=KEY, checkpoint_every=checkpoint_every, fsync=False, **kw) as t:
        for i in range(1, n + 1):
            t.record(
                "update",
                "cmdb_ci_netgear",
                f"{i:032x}",
                source_id=f"unifi:{i}",
                before={"name": f"old-{i}"},
                after={"name": f"new-{i}"},
                run_id="20261129T000000Z-abc123",
            )
    return path


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _index_of_seq(lines: list[bytes], seq: int) -> int:
    for i, raw in enumerate(lines):
        record = orjson.loads(raw)
        if record.get("type") != "checkpoint" and record["seq"] == seq:
            return i
    raise AssertionError(seq)


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    return _write_trail(tmp_path / "audit.jsonl")


def test_intact_trail_verifies(trail: Path) -> None:
    result = verify_audit(trail, KEY)
    assert result.ok, result.message
    assert result.entries == 30 and result.checkpoints == 3
    assert result.problem is None


def test_entry_format_and_chain(trail: Path) -> None:
    entries = list(read_audit(trail))
    assert [e["seq"] for e in entries] == list(range(1, 31))
    first = entries[0]
    assert set(first) == {
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
        "prev_hash",
        "hash",
    }
    assert first["prev_hash"] == GENESIS_HASH
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(entries))
    assert all(entry_hash(e) == e["hash"] for e in entries)
    raw = _lines(trail)[0]
    assert raw == canonical(orjson.loads(raw)) + b"\n"  # canonical bytes on disk
    checkpoints = [r for r in read_audit(trail, include_checkpoints=True) if r.get("type")]
    assert [c["reason"] for c in checkpoints] == ["interval", "interval", "interval"]
    assert all(checkpoint_mac(c, KEY) == c["hmac"] for c in checkpoints)


def test_byte_flip_is_found(trail: Path) -> None:
    lines = _lines(trail)
    i = _index_of_seq(lines, 15)
    lines[i] = lines[i].replace(b"new-15", b"new-16")
    trail.write_bytes(b"".join(lines))
    result = verify_audit(trail, KEY)
    assert not result.ok
    assert (result.problem, result.first_bad_seq, result.line_number) == ("edited", 15, i + 1)
    assert "seq 15" in result.message and f"line {i + 1}" in result.message


def test_corrupt_json_is_found(trail: Path) -> None:
    lines = _lines(trail)
    i = _index_of_seq(lines, 4)
    lines[i] = lines[i][:20] + b"\x00" + lines[i][21:]
    trail.write_bytes(b"".join(lines))
    result = verify_audit(trail, KEY)
    assert (result.ok, result.problem, result.line_number) == (False, "edited", i + 1)


def test_deleted_line_is_found(trail: Path) -> None:
    lines = _lines(trail)
    i = _index_of_seq(lines, 15)
    del lines[i]
    trail.write_bytes(b"".join(lines))
    result = verify_audit(trail, KEY)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "deleted", 15)
    assert result.line_number == i + 1


def test_swapped_lines_are_found(trail: Path) -> None:
    lines = _lines(trail)
    i, j = _index_of_seq(lines, 15), _index_of_seq(lines, 16)
    lines[i], lines[j] = lines[j], lines[i]
    trail.write_bytes(b"".join(lines))
    result = verify_audit(trail, KEY)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "reordered", 15)


def test_duplicated_line_is_found(trail: Path) -> None:
    lines = _lines(trail)
    i = _index_of_seq(lines, 7)
    lines.insert(i + 1, lines[i])
    trail.write_bytes(b"".join(lines))
    result = verify_audit(trail, KEY)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "reordered", 7)


@pytest.mark.parametrize("cut", [1, 2, 5])
def test_truncated_tail_is_found(trail: Path, cut: int) -> None:
    lines = _lines(trail)
    trail.write_bytes(b"".join(lines[:-cut]))
    result = verify_audit(trail, KEY)
    assert (result.ok, result.problem) == (False, "truncated")
    assert result.first_bad_seq == 21  # the first entry after the last surviving checkpoint
    relaxed = verify_audit(trail, KEY, allow_unsealed_tail=True)
    assert relaxed.ok and relaxed.warnings


def test_chain_recomputed_without_the_key_fails_the_checkpoint(trail: Path) -> None:
    records = [orjson.loads(raw) for raw in _lines(trail)]
    head = GENESIS_HASH
    for record in records:
        if record.get("type") == "checkpoint":
            record["covers_hash"] = head
            record["hmac"] = checkpoint_mac(record, b"attacker-guess")
            continue
        if record["seq"] == 15:
            record["after"] = {"name": "forged"}
        record["prev_hash"] = head
        record["hash"] = entry_hash(record)
        head = record["hash"]
    trail.write_bytes(b"".join(canonical(r) + b"\n" for r in records))
    result = verify_audit(trail, KEY)
    assert (result.ok, result.problem) == (False, "bad_signature")
    # The chain alone is consistent: the very first checkpoint is where it fails.
    assert result.first_bad_seq == 10


def test_chain_recomputed_keeping_old_checkpoints_is_found(trail: Path) -> None:
    records = [orjson.loads(raw) for raw in _lines(trail)]
    head = GENESIS_HASH
    for record in records:
        if record.get("type") == "checkpoint":
            continue
        if record["seq"] == 15:
            record["outcome"] = "failure"
        record["prev_hash"] = head
        record["hash"] = entry_hash(record)
        head = record["hash"]
    trail.write_bytes(b"".join(canonical(r) + b"\n" for r in records))
    result = verify_audit(trail, KEY)
    assert (result.ok, result.problem) == (False, "checkpoint_mismatch")


def test_half_written_last_line_is_reported_as_such(trail: Path) -> None:
    with open(trail, "ab") as handle:
        handle.write(b'{"action":"create","after":{"na')
    result = verify_audit(trail, KEY)
    assert (result.ok, result.problem) == (False, "incomplete_last_line")
    assert result.entries == 30
    assert result.line_number == len(_lines(trail))


def test_wrong_key_fails(trail: Path) -> None:
    result = verify_audit(trail, b"another key entirely")
    assert (result.ok, result.problem) == (False, "bad_signature")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_single_byte_change_fails(tmp_path: Path, data: st.DataObject) -> None:
    path = tmp_path / "prop" / "audit.jsonl"
    if not path.exists():
        _write_trail(path, n=6, checkpoint_every=3)
    original = path.read_bytes()
    position = data.draw(st.integers(0, len(original) - 1))
    replacement = data.draw(st.integers(0, 255).filter(lambda b: b != original[position]))
    mutated = bytearray(original)
    mutated[position] = replacement
    path.write_bytes(bytes(mutated))
    try:
        assert not verify_audit(path, KEY).ok
    finally:
        path.write_bytes(original)


def test_rotation_keeps_the_chain(tmp_path: Path) -> None:
    path = _write_trail(tmp_path / "audit.jsonl", n=40, checkpoint_every=50, max_bytes=2_000)
    segments = audit_segments(path)
    assert len(segments) >= 3
    assert [p.name for p in segments[:2]] == ["audit.jsonl.1", "audit.jsonl.2"]
    result = verify_audit(path, KEY)
    assert result.ok, result.message
    assert result.entries == 40
    first_of_second = orjson.loads(_lines(segments[1])[0])
    last_entry_of_first = [orjson.loads(r) for r in _lines(segments[0])][-2]  # before its seal
    assert first_of_second["prev_hash"] == last_entry_of_first["hash"]
    assert [e["seq"] for e in read_audit(path)] == list(range(1, 41))
    for segment in segments[:-1]:
        assert segment.stat().st_size <= 2_000


def test_deleting_a_rotated_segment_is_found(tmp_path: Path) -> None:
    path = _write_trail(tmp_path / "audit.jsonl", n=40, checkpoint_every=50, max_bytes=2_000)
    audit_segments(path)[1].unlink()
    result = verify_audit(path, KEY)
    assert (result.ok, result.problem) == (False, "deleted")
    audit_segments(path)[0].unlink()
    assert verify_audit(path, KEY).problem == "deleted"


def test_resume_after_reopen_continues_the_chain(tmp_path: Path) -> None:
    path = _write_trail(tmp_path / "audit.jsonl", n=5)
    with AuditTrail(path, key=KEY, fsync=False) as again:
        assert again.seq == 5
        entry = again.record("create", "cmdb_ci", "x" * 32)
        assert entry["seq"] == 6
    result = verify_audit(path, KEY)
    assert result.ok and result.entries == 6


def test_crash_without_close_is_sealed_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    crash = (
        "import os, sys\n"
        "from snowkit.ops.audit import AuditTrail\n"
        "t = AuditTrail(sys.argv[1], key=sys.argv[2].encode())\n"
        "for i in range(3):\n"
        "    t.record('create', 'cmdb_ci', f'{i:032x}')\n"
        "os._exit(0)  # die without close(): no final checkpoint\n"
    )
    subprocess.run([sys.executable, "-c", crash, str(path), KEY.decode()], check=True)
    assert verify_audit(path, KEY).problem == "truncated"
    with AuditTrail(path, key=KEY, fsync=False) as resumed:
        resumed.record("delete", "cmdb_ci", "0" * 32)
    checkpoints = [r for r in read_audit(path, include_checkpoints=True) if r.get("type")]
    assert [c["reason"] for c in checkpoints] == ["resume", "close"]
    assert verify_audit(path, KEY).ok


def test_half_written_line_blocks_append_until_recovered(tmp_path: Path) -> None:
    path = _write_trail(tmp_path / "audit.jsonl", n=4)
    with open(path, "ab") as handle:
        handle.write(b'{"seq":5,"act')
    with pytest.raises(IncompleteAuditLineError, match="half-written"):
        AuditTrail(path, key=KEY)
    assert verify_audit(path, KEY).problem == "incomplete_last_line"  # nothing appended
    with AuditTrail(path, key=KEY, recover=True, fsync=False) as recovered:
        assert recovered.record("create", "cmdb_ci", "y" * 32)["seq"] == 5
    side_files = list(tmp_path.glob("audit.jsonl.incomplete-*"))
    assert len(side_files) == 1 and side_files[0].read_bytes() == b'{"seq":5,"act'
    assert verify_audit(path, KEY).ok


def test_batch_fsyncs_once_and_checkpoints_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    anchor = tmp_path / "anchor.json"
    synced: list[int] = []  # inode of each fsynced file (directories included)
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    trail = AuditTrail(path, key=KEY, checkpoint_every=1_000, fsync=True, anchor_path=anchor)

    def count(target: Path) -> int:
        return synced.count(target.stat().st_ino)

    with trail.batch():
        for i in range(50):
            trail.record("create", "cmdb_ci", f"{i:032x}")
    assert count(path) == 1  # one fsync of the trail for the whole batch
    assert count(anchor) == 1  # and one anchor write
    checkpoints = [r for r in read_audit(path, include_checkpoints=True) if r.get("type")]
    assert [c["reason"] for c in checkpoints] == ["batch"]
    trail.record("update", "cmdb_ci", "z" * 32)  # outside a batch: fsync each record
    assert count(path) == 2
    assert count(anchor) == 1  # no checkpoint, no anchor write
    trail.close()
    assert verify_audit(path, KEY, anchor=anchor).ok


def test_concurrent_appends_keep_a_valid_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail(path, key=KEY, checkpoint_every=25, fsync=False)

    def work(worker: int) -> None:
        for i in range(50):
            trail.record("create", "cmdb_ci", f"{worker:016x}{i:016x}")

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trail.close()
    result = verify_audit(path, KEY)
    assert result.ok and result.entries == 400


def test_read_audit_filters_by_run_and_takes_ambient_ids(tmp_path: Path) -> None:
    from snowkit.ops.logging import bind_run_id, correlation_scope

    path = tmp_path / "audit.jsonl"
    with AuditTrail(path, key=KEY, fsync=False) as trail:
        trail.record("create", "cmdb_ci", "a" * 32, run_id="run-a")
        with correlation_scope("c" * 32):
            bind_run_id("run-b")
            entry = trail.record("create", "cmdb_ci", "b" * 32)
    assert entry["correlation_id"] == "c" * 32 and entry["run_id"] == "run-b"
    assert [e["sys_id"] for e in read_audit(path, run_id="run-a")] == ["a" * 32]


def test_images_are_redacted(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditTrail(path, key=SecretStr(KEY.decode()), fsync=False) as trail:
        trail.record("update", "sys_user", "a" * 32, before={"password": "old-pass-1"})
    assert b"old-pass-1" not in path.read_bytes()
    assert verify_audit(path, KEY).ok


def test_default_key_file_is_generated_private(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SNOWKIT_AUDIT_KEY", raising=False)
    key = load_audit_key()
    key_file = paths.state_dir() / "audit" / "audit.key"
    assert key_file.exists() and key == key_file.read_text().strip().encode()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_audit_key() == key  # stable
    monkeypatch.setenv("SNOWKIT_AUDIT_KEY", "from-the-environment")
    assert load_audit_key() == b"from-the-environment"


def test_default_path_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SNOWKIT_AUDIT_KEY", raising=False)
    with AuditTrail() as trail:
        trail.record("create", "cmdb_ci", "a" * 32)
    assert paths.audit_path().exists()
    assert verify_audit().ok
    assert "key" not in repr(trail).lower() or "audit.key" not in repr(trail)


def test_one_writer_per_trail(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = AuditTrail(path, key=KEY, fsync=False)
    with pytest.raises(AuditError, match="already open"):
        AuditTrail(path, key=KEY)
    holder = (
        "import sys\n"
        "from snowkit.ops.audit import AuditError, AuditTrail\n"
        "try:\n"
        "    AuditTrail(sys.argv[1], key=b'k')\n"
        "except AuditError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", holder, str(path)], capture_output=True, text=True, check=False
    )
    assert other.returncode == 3 and "another process" in other.stdout
    first.record("create", "cmdb_ci", "a" * 32)
    first.close()
    with AuditTrail(path, key=KEY, fsync=False) as second:  # free again after close()
        second.record("create", "cmdb_ci", "b" * 32)
    dropped = AuditTrail(path, key=KEY, fsync=False)
    dropped.record("create", "cmdb_ci", "c" * 32)
    del dropped  # dropped without close(): the lock is released, the tail left unsealed
    gc.collect()
    with AuditTrail(path, key=KEY, fsync=False):
        pass
    assert verify_audit(path, KEY).ok


def test_recovery_is_sealed_and_reported_by_verify(tmp_path: Path) -> None:
    path = _write_trail(tmp_path / "audit.jsonl", n=4)
    with open(path, "ab") as handle:
        handle.write(b'{"seq":5,"act')
    with pytest.raises(IncompleteAuditLineError, match=r"snowkit audit recover") as caught:
        AuditTrail(path, key=KEY)
    assert "AuditTrail(" not in str(caught.value)
    with AuditTrail(path, key=KEY, recover=True, fsync=False) as trail:
        assert trail.recovered is not None and trail.recovered.exists()
        evidence = trail.recovered
    seal = [r for r in read_audit(path, include_checkpoints=True) if r.get("reason") == "recover"]
    assert len(seal) == 1 and seal[0]["evidence"] == evidence.name and seal[0]["seq"] == 4
    result = verify_audit(path, KEY)
    assert result.ok, result.message
    assert "crash recovery" in result.message
    (recovery,) = result.recoveries
    assert recovery["evidence"] == str(evidence) and recovery["evidence_matches"] is True
    assert any(str(evidence) in w and "recover checkpoint" in w for w in result.warnings)
    evidence.write_bytes(b"something else")  # the kept bytes changed: say so, the seal still holds
    changed = verify_audit(path, KEY)
    assert changed.ok and changed.recoveries[0]["evidence_matches"] is False
    assert any("CHANGED" in w for w in changed.warnings)


def test_a_clean_trail_opened_with_recover_writes_no_recover_seal(tmp_path: Path) -> None:
    path = _write_trail(tmp_path / "audit.jsonl", n=3)
    with AuditTrail(path, key=KEY, recover=True, fsync=False) as trail:
        assert trail.recovered is None
    assert not [
        r for r in read_audit(path, include_checkpoints=True) if r.get("reason") == "recover"
    ]
    assert verify_audit(path, KEY).recoveries == []


def test_side_file_without_a_seal_is_warned_about(tmp_path: Path) -> None:
    path = _write_trail(tmp_path / "audit.jsonl", n=3)
    stray = tmp_path / "audit.jsonl.incomplete-20260101T000000000000Z"
    stray.write_bytes(b'{"seq":4')
    result = verify_audit(path, KEY)
    assert result.ok and any(str(stray) in w for w in result.warnings)
