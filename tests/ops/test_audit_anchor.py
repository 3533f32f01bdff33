"""Chained checkpoints and the external anchor: the two gaps a plain hash chain leaves.

A lone checkpoint line deleted, checkpoints swapped or duplicated, and a cut made exactly after
a checkpoint line all left a trail that verified before checkpoints were chained and anchored.
"""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snowkit import paths
from snowkit.ops.audit import (
    GENESIS_HASH,
    AuditError,
    AuditTrail,
    audit_segments,
    canonical,
    checkpoint_mac,
    default_anchor_path,
    entry_hash,
    read_audit,
    verify_audit,
)
from snowkit.ops.audit_anchor import ANCHOR_ENV, anchor_mac

KEY = b"anchor-test-key-0123456789abcdef"


def _write(path: Path, n: int = 30, every: int = 10, **kw: Any) -> Path:
    with AuditTrail(path, key=KEY, checkpoint_every=every, fsync=False, **kw) as trail:
        for i in range(1, n + 1):
            trail.record("update", "cmdb_ci", f"{i:032x}", after={"name": f"n-{i}"})
    return path


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _checkpoint_indexes(lines: list[bytes]) -> list[int]:
    return [i for i, raw in enumerate(lines) if orjson.loads(raw).get("type") == "checkpoint"]


def _verify(path: Path, **kw: Any) -> Any:
    return verify_audit(path, KEY, anchor=default_anchor_path(path), **kw)


def _tear_and_recover(path: Path) -> None:
    """A torn last line, recovered: a ``recover`` checkpoint sealing the same seq as ``close``."""
    with open(path, "ab") as handle:
        handle.write(b'{"seq":31,"act')
    with AuditTrail(path, key=KEY, recover=True, fsync=False):
        pass


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    return _write(tmp_path / "audit.jsonl")


# ---------------------------------------------------------------------- checkpoint chain


def test_checkpoints_are_chained_and_anchored(trail: Path) -> None:
    checkpoints = [r for r in read_audit(trail, include_checkpoints=True) if r.get("type")]
    assert [c["seq"] for c in checkpoints] == [10, 20, 30]
    assert checkpoints[0]["prev_hmac"] == GENESIS_HASH
    assert [c["prev_hmac"] for c in checkpoints[1:]] == [c["hmac"] for c in checkpoints[:-1]]
    anchor = orjson.loads(default_anchor_path(trail).read_bytes())
    assert (anchor["seq"], anchor["entries"], anchor["segment"]) == (30, 30, "audit.jsonl")
    assert anchor["checkpoint_hmac"] == checkpoints[-1]["hmac"]
    assert anchor["covers_hash"] == checkpoints[-1]["covers_hash"]
    assert anchor["hmac"] == anchor_mac(anchor, KEY)
    assert KEY.decode() not in default_anchor_path(trail).read_text()
    result = _verify(trail)
    assert result.ok and result.warnings == [], result
    assert result.anchor == {
        "path": str(default_anchor_path(trail)),
        "state": "verified",
        "seq": 30,
        "timestamp": anchor["timestamp"],
        "entries_after": 0,
    }
    assert "anchored at seq 30" in result.message


@pytest.mark.parametrize("which", [0, 1])
def test_a_lone_deleted_checkpoint_is_found(trail: Path, which: int) -> None:
    lines = _lines(trail)
    doomed = _checkpoint_indexes(lines)[which]  # seals seq 10 or 20; later ones remain
    del lines[doomed]
    trail.write_bytes(b"".join(lines))
    for result in (verify_audit(trail, KEY), _verify(trail)):  # the chain alone finds it
        assert (result.ok, result.problem) == (False, "checkpoint_deleted"), result.message
        assert result.first_bad_seq == (which + 2) * 10  # the checkpoint after the gap
        assert result.line_number == _checkpoint_indexes(lines)[which] + 1
        assert f"line {result.line_number}" in result.message


def test_swapped_checkpoints_sealing_the_same_seq_are_found(trail: Path) -> None:
    _tear_and_recover(trail)  # ... close(30), recover(30): same seq, same head
    lines = _lines(trail)
    assert _verify(trail).ok
    lines[-1], lines[-2] = lines[-2], lines[-1]
    trail.write_bytes(b"".join(lines))
    result = verify_audit(trail, KEY)
    assert (result.ok, result.problem) == (False, "checkpoint_mismatch"), result.message
    assert (result.first_bad_seq, result.line_number) == (30, len(lines) - 1)


def test_a_duplicated_checkpoint_line_is_found(trail: Path) -> None:
    lines = _lines(trail)
    trail.write_bytes(b"".join([*lines, lines[-1]]))  # close(30) twice: no entry changed
    result = verify_audit(trail, KEY)
    assert (result.ok, result.problem, result.line_number) == (
        False,
        "checkpoint_mismatch",
        len(lines) + 1,
    )


def test_a_copy_of_the_first_checkpoint_further_on_is_found(tmp_path: Path) -> None:
    path = _write(tmp_path / "audit.jsonl", n=10, every=10)  # one checkpoint, sealing seq 10
    _tear_and_recover(path)  # a second one sealing seq 10 again
    lines = _lines(path)
    path.write_bytes(b"".join([*lines, lines[-2]]))  # the first one again: same seq, same head
    result = verify_audit(path, KEY)
    assert (result.ok, result.problem) == (False, "checkpoint_mismatch"), result.message
    assert "claims to be the first" in result.message


def test_an_edited_checkpoint_chain_field_fails_its_signature(trail: Path) -> None:
    lines = _lines(trail)
    i = _checkpoint_indexes(lines)[1]
    record = orjson.loads(lines[i])
    record["prev_hmac"] = GENESIS_HASH
    lines[i] = canonical(record) + b"\n"
    trail.write_bytes(b"".join(lines))
    assert verify_audit(trail, KEY).problem == "bad_signature"


# ---------------------------------------------------------------------- anchor: truncation


@pytest.mark.parametrize("keep", [1, 2])
def test_a_cut_exactly_after_a_checkpoint_is_found_by_the_anchor(trail: Path, keep: int) -> None:
    lines = _lines(trail)
    cut = _checkpoint_indexes(lines)[keep - 1] + 1  # keep the checkpoint sealing seq 10*keep
    trail.write_bytes(b"".join(lines[:cut]))
    assert verify_audit(trail, KEY).ok  # the trail alone looks whole: the documented limit
    result = _verify(trail)
    assert (result.ok, result.problem) == (False, "truncated"), result.message
    assert result.first_bad_seq == keep * 10 + 1
    assert "seq 30" in result.message and f"seals seq {keep * 10}" in result.message
    assert result.file == str(trail)


def test_a_cut_to_zero_bytes_and_a_deleted_trail_are_found(trail: Path) -> None:
    trail.write_bytes(b"")
    result = _verify(trail)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "truncated", 1)
    trail.unlink()
    result = _verify(trail)
    assert (result.ok, result.problem) == (False, "truncated")
    assert "deleted" in result.message
    assert verify_audit(trail, KEY).problem == "missing"  # without the anchor: nothing to go on


def test_the_final_checkpoint_removed_with_allow_unsealed_is_still_truncated(trail: Path) -> None:
    trail.write_bytes(b"".join(_lines(trail)[:-1]))  # entries 21..30 kept, their seal gone
    assert verify_audit(trail, KEY, allow_unsealed_tail=True).ok
    result = _verify(trail, allow_unsealed_tail=True)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "truncated", 21)


def test_removing_a_same_seq_last_checkpoint_is_found(trail: Path) -> None:
    _tear_and_recover(trail)  # the recover checkpoint seals seq 30 again
    trail.write_bytes(b"".join(_lines(trail)[:-1]))
    result = _verify(trail)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "truncated", 30)


# ---------------------------------------------------------------------- anchor: forgery


def test_a_forged_anchor_is_found(trail: Path) -> None:
    anchor_path = default_anchor_path(trail)
    lines = _lines(trail)
    trail.write_bytes(b"".join(lines[: _checkpoint_indexes(lines)[1] + 1]))  # cut after seq 20
    forged = orjson.loads(anchor_path.read_bytes())
    forged["seq"] = forged["entries"] = 20  # make the anchor agree with the cut, without the key
    anchor_path.write_bytes(canonical(forged) + b"\n")
    result = _verify(trail)
    assert (result.ok, result.problem) == (False, "bad_anchor")
    assert "does not verify with this key" in result.message
    forged["hmac"] = anchor_mac(forged, b"a guessed key")
    anchor_path.write_bytes(canonical(forged) + b"\n")
    assert _verify(trail).problem == "bad_anchor"


@pytest.mark.parametrize(
    "content", [b"", b"not json", b"[1, 2]", b'{"type": "anchor"}', b'{"seq": 3}']
)
def test_a_damaged_anchor_is_reported(trail: Path, content: bytes) -> None:
    default_anchor_path(trail).write_bytes(content)
    result = _verify(trail)
    assert (result.ok, result.problem) == (False, "bad_anchor"), result.message


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_single_byte_change_to_the_anchor_fails(tmp_path: Path, data: st.DataObject) -> None:
    path = tmp_path / "prop" / "audit.jsonl"
    if not path.exists():
        _write(path, n=6, every=3)
    anchor_path = default_anchor_path(path)
    original = anchor_path.read_bytes()
    position = data.draw(st.integers(0, len(original) - 1))
    replacement = data.draw(st.integers(0, 255).filter(lambda b: b != original[position]))
    mutated = bytearray(original)
    mutated[position] = replacement
    anchor_path.write_bytes(bytes(mutated))
    try:
        assert not _verify(path).ok
    finally:
        anchor_path.write_bytes(original)


def test_an_anchor_of_another_trail_is_a_mismatch(tmp_path: Path) -> None:
    first = _write(tmp_path / "a" / "audit.jsonl")
    second = _write(tmp_path / "b" / "audit.jsonl", n=40)
    result = verify_audit(first, KEY, anchor=default_anchor_path(second))
    assert (result.ok, result.problem) == (False, "anchor_mismatch")
    assert "another trail" in result.message


def test_a_history_rewritten_with_the_key_but_not_its_anchor_is_a_mismatch(trail: Path) -> None:
    """Someone with the key re-signs everything from seq 15 on and appends, but cannot reach
    the anchor: the anchored checkpoint is gone although the trail goes further."""
    records = [orjson.loads(raw) for raw in _lines(trail)]
    head, prev_mac = GENESIS_HASH, GENESIS_HASH
    for record in records:
        if record.get("type") == "checkpoint":
            record["covers_hash"], record["prev_hmac"] = head, prev_mac
            record["hmac"] = prev_mac = checkpoint_mac(record, KEY)
            continue
        if record["seq"] == 15:
            record["outcome"] = "failure"
        record["prev_hash"] = head
        record["hash"] = head = entry_hash(record)
    trail.write_bytes(b"".join(canonical(r) + b"\n" for r in records))
    _append_with_the_key(trail, records, head, prev_mac)
    assert verify_audit(trail, KEY).ok  # with the key, the file alone cannot tell
    result = _verify(trail)
    assert (result.ok, result.problem) == (False, "anchor_mismatch"), result.message


def _append_with_the_key(trail: Path, records: list[dict[str, Any]], head: str, mac: str) -> None:
    entry = {**records[0], "seq": 31, "prev_hash": head}
    entry["hash"] = entry_hash(entry)
    seal = {**records[-1], "seq": 31, "covers_hash": entry["hash"], "prev_hmac": mac}
    seal["hmac"] = checkpoint_mac(seal, KEY)
    with open(trail, "ab") as handle:
        handle.write(canonical(entry) + b"\n" + canonical(seal) + b"\n")


# ---------------------------------------------------------------------- anchor: absent, behind


def test_no_anchor_is_a_warning_not_a_failure(trail: Path) -> None:
    default_anchor_path(trail).unlink()
    result = _verify(trail)
    assert result.ok, result.message
    assert result.anchor == {"path": str(default_anchor_path(trail)), "state": "missing"}
    assert any("cannot be ruled out" in w for w in result.warnings)
    assert verify_audit(trail, KEY).anchor is None  # not asked: not checked, no warning


def test_a_crash_between_checkpoint_and_anchor_leaves_the_trail_ahead(tmp_path: Path) -> None:
    """The anchor is written after the checkpoint is durable: a crash in between leaves the
    anchor one checkpoint behind, which verifies; the next writer carries on."""
    path = tmp_path / "audit.jsonl"
    script = (
        "import os, sys\n"
        "import snowkit.ops.audit as audit\n"
        "t = audit.AuditTrail(sys.argv[1], key=sys.argv[2].encode(), checkpoint_every=5)\n"
        "for i in range(5):\n"
        "    t.record('create', 'cmdb_ci', f'{i:032x}')\n"
        "def die(*_a, **_k):\n"
        "    os._exit(0)  # killed after the checkpoint is on disk, before the anchor is\n"
        "audit.write_anchor = die\n"
        "with t.batch():\n"
        "    for i in range(5, 8):\n"
        "        t.record('create', 'cmdb_ci', f'{i:032x}')\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path), KEY.decode()], check=True)
    anchor = orjson.loads(default_anchor_path(path).read_bytes())
    assert anchor["seq"] == 5
    last = [r for r in read_audit(path, include_checkpoints=True) if r.get("type")][-1]
    assert (last["seq"], last["reason"]) == (8, "batch")  # the trail is one checkpoint ahead
    result = _verify(path)
    assert result.ok, result.message
    assert result.anchor is not None and result.anchor["entries_after"] == 3
    with AuditTrail(path, key=KEY, fsync=False) as again:  # accepted: ahead, not behind
        again.record("create", "cmdb_ci", "9" * 32)
    assert orjson.loads(default_anchor_path(path).read_bytes())["seq"] == 9
    assert _verify(path).ok


def test_a_failing_anchor_store_does_not_stop_the_trail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the anchor's directory should be")
    path = tmp_path / "audit.jsonl"
    with AuditTrail(path, key=KEY, fsync=False, anchor_path=blocked / "anchor.json") as trail:
        trail.record("create", "cmdb_ci", "a" * 32)
        trail.checkpoint()
        assert trail.anchor_error is not None and "anchor.json" in trail.anchor_error
    assert "could not write the audit anchor" in caplog.text
    assert verify_audit(path, KEY).ok  # the trail itself is intact


def test_a_writer_refuses_to_continue_a_trail_behind_its_anchor(trail: Path) -> None:
    anchor_path = default_anchor_path(trail)
    lines = _lines(trail)
    trail.write_bytes(b"".join(lines[: _checkpoint_indexes(lines)[1] + 1]))
    evidence = anchor_path.read_bytes()
    with pytest.raises(AuditError, match=r"does not match its anchor.*seq 30.*move the anchor"):
        AuditTrail(trail, key=KEY, fsync=False)
    assert anchor_path.read_bytes() == evidence  # the evidence of the cut survives
    with pytest.raises(AuditError, match="does not match its anchor"):
        AuditTrail(trail, key=KEY, fsync=False, recover=True)
    assert _verify(trail).problem == "truncated"
    anchor_path.rename(anchor_path.with_name("anchor.json.evidence"))  # the operator's choice
    with AuditTrail(trail, key=KEY, fsync=False) as again:
        again.record("create", "cmdb_ci", "b" * 32)
    assert _verify(trail).ok


def test_a_writer_refuses_a_forged_anchor(trail: Path) -> None:
    anchor_path = default_anchor_path(trail)
    with pytest.raises(AuditError, match="does not verify with this key"):
        AuditTrail(trail, key=b"another key")
    anchor_path.write_bytes(b"{}")
    with pytest.raises(AuditError, match="not an audit anchor"):
        AuditTrail(trail, key=KEY)


# ---------------------------------------------------------------------- old trails, rotation


def _downgrade(path: Path) -> None:
    """Rewrite checkpoints as an older snowkit wrote them: no prev_hmac, no anchor."""
    out = []
    for raw in _lines(path):
        record = orjson.loads(raw)
        if record.get("type") == "checkpoint":
            del record["prev_hmac"]
            record["hmac"] = checkpoint_mac(record, KEY)
        out.append(canonical(record) + b"\n")
    path.write_bytes(b"".join(out))
    default_anchor_path(path).unlink()


def test_an_old_format_trail_verifies_with_a_warning_and_upgrades(trail: Path) -> None:
    _downgrade(trail)
    result = _verify(trail)
    assert result.ok, result.message
    assert any(
        "all 3 checkpoints" in w and "predate checkpoint chaining" in w for w in result.warnings
    )
    with AuditTrail(trail, key=KEY, checkpoint_every=10, fsync=False) as upgraded:
        for i in range(10):
            upgraded.record("create", "cmdb_ci", f"{i:032x}")
    result = _verify(trail)
    assert result.ok and result.anchor is not None and result.anchor["seq"] == 40
    assert any("first 3 checkpoints (up to seq 30)" in w for w in result.warnings)
    checkpoints = [r for r in read_audit(trail, include_checkpoints=True) if r.get("type")]
    assert checkpoints[3]["prev_hmac"] == checkpoints[2]["hmac"]  # chained to the old one
    lines = _lines(trail)
    del lines[_checkpoint_indexes(lines)[2]]  # the last old-format checkpoint
    trail.write_bytes(b"".join(lines))
    assert verify_audit(trail, KEY).problem == "checkpoint_deleted"


def test_an_unchained_checkpoint_after_chained_ones_is_refused(trail: Path) -> None:
    lines = _lines(trail)
    last = orjson.loads(lines[-1])
    del last["prev_hmac"]
    last["hmac"] = checkpoint_mac(last, KEY)
    lines[-1] = canonical(last) + b"\n"
    trail.write_bytes(b"".join(lines))
    assert verify_audit(trail, KEY).problem == "checkpoint_mismatch"


def test_rotation_keeps_both_chains_and_the_anchor(tmp_path: Path) -> None:
    path = _write(tmp_path / "audit.jsonl", n=40, every=7, max_bytes=2_500)
    segments = audit_segments(path)
    assert len(segments) >= 3
    result = _verify(path)
    assert result.ok and result.entries == 40, result.message
    checkpoints = [r for r in read_audit(path, include_checkpoints=True) if r.get("type")]
    assert "rotate" in {c["reason"] for c in checkpoints}
    assert [c["prev_hmac"] for c in checkpoints[1:]] == [c["hmac"] for c in checkpoints[:-1]]
    for segment in segments[:-1]:
        assert segment.stat().st_size <= 2_500
        assert orjson.loads(_lines(segment)[-1])["type"] == "checkpoint"  # sealed
    path.unlink()  # the newest segment deleted: the rest ends with a valid rotate checkpoint
    assert verify_audit(path, KEY).ok
    result = _verify(path)
    assert (result.ok, result.problem) == (False, "truncated"), result.message


def test_the_anchor_of_a_rotate_checkpoint_names_the_renamed_segment(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditTrail(path, key=KEY, checkpoint_every=1_000, fsync=False, max_bytes=1_500) as t:
        while len(audit_segments(path)) < 2:
            t.record("create", "cmdb_ci", "c" * 32)
        anchor = orjson.loads(default_anchor_path(path).read_bytes())
        assert (anchor["reason"], anchor["segment"]) == ("rotate", "audit.jsonl.1")
    assert _verify(path).ok


# ---------------------------------------------------------------------- where the anchor lives


def test_anchor_location_defaults_and_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ANCHOR_ENV, raising=False)
    assert default_anchor_path() == paths.state_dir() / "audit" / "anchor.json"
    assert default_anchor_path(paths.audit_path()) == paths.state_dir() / "audit" / "anchor.json"
    other = tmp_path / "x" / "trail.jsonl"
    assert default_anchor_path(other) == tmp_path / "x" / "trail.jsonl.anchor.json"
    elsewhere = tmp_path / "other-disk" / "anchor.json"
    monkeypatch.setenv(ANCHOR_ENV, str(elsewhere))
    assert default_anchor_path(other) == elsewhere
    _write(other, n=3)
    assert elsewhere.exists() and not (tmp_path / "x" / "trail.jsonl.anchor.json").exists()
    explicit = tmp_path / "explicit.json"
    with AuditTrail(other, key=KEY, fsync=False, anchor_path=explicit) as trail:
        assert trail.anchor_path == explicit
        trail.record("create", "cmdb_ci", "d" * 32)
    assert orjson.loads(explicit.read_bytes())["seq"] == 4
    assert verify_audit(other, KEY, anchor=explicit).ok


def test_default_trail_anchor_in_the_state_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ANCHOR_ENV, raising=False)
    with AuditTrail(key=KEY, fsync=False) as trail:
        trail.record("create", "cmdb_ci", "e" * 32)
    anchor = paths.state_dir() / "audit" / "anchor.json"
    assert orjson.loads(anchor.read_bytes())["trail"] == str(paths.audit_path())
    assert verify_audit(key=KEY, anchor=anchor).ok


def test_a_long_unsealed_tail_resumes_chained_to_the_last_checkpoint(tmp_path: Path) -> None:
    """The writer finds the last checkpoint by reading backwards in chunks: a tail of entries
    far longer than one chunk must not lose the checkpoint chain."""
    path = _write(tmp_path / "audit.jsonl", n=3, every=3)
    sealed = [r for r in read_audit(path, include_checkpoints=True) if r.get("type")][-1]
    dropped = AuditTrail(path, key=KEY, checkpoint_every=10_000, fsync=False)
    for i in range(120):  # about 300 kB after the last checkpoint, several read chunks
        dropped.record("update", "cmdb_ci", f"{i:032x}", after={"blob": "é" * 1_200})
    del dropped  # dropped without close(): no sealing checkpoint
    gc.collect()
    with AuditTrail(path, key=KEY, fsync=False) as resumed:
        assert resumed.last_checkpoint_hmac != sealed["hmac"]  # it sealed the tail on open
    resume = [r for r in read_audit(path, include_checkpoints=True) if r.get("type")][-1]
    assert (resume["reason"], resume["seq"], resume["prev_hmac"]) == ("resume", 123, sealed["hmac"])
    assert _verify(path).ok
