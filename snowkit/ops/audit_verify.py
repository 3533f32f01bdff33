"""``verify_audit``: one pass over every segment of the trail, naming the first bad entry, then
a comparison with the external anchor.

Separate from the writer (``audit.py``) because it runs in another process (``snowkit audit
verify``, a notebook) and must never share the writer's state, locks or assumptions; both read
the format from :mod:`snowkit.ops.audit_chain` and :mod:`snowkit.ops.audit_anchor`. What it
guarantees is listed in :mod:`snowkit.ops.audit`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr

from snowkit import paths
from snowkit.ops.audit_anchor import AnchorUnavailableError, anchor_signature_ok, read_anchor
from snowkit.ops.audit_chain import (
    GENESIS_HASH,
    AuditError,
    audit_segments,
    checkpoint_mac,
    entry_hash,
    key_bytes,
    load_audit_key,
    split_lines,
)

#: Problem kinds reported by :func:`verify_audit`.
PROBLEMS = (
    "edited",
    "deleted",
    "reordered",
    "truncated",
    "bad_signature",
    "checkpoint_mismatch",
    "incomplete_last_line",
    "missing",
    "checkpoint_deleted",
    "bad_anchor",
    "anchor_mismatch",
)


@dataclass
class AuditVerification:
    """The outcome of :func:`verify_audit`. ``line_number`` is 1-based within ``file``."""

    ok: bool
    entries: int
    first_bad_seq: int | None = None
    line_number: int | None = None
    problem: str | None = None
    message: str = ""
    file: str | None = None
    checkpoints: int = 0
    warnings: list[str] = field(default_factory=list)
    #: one dict per crash recovery sealed in the trail (a signed ``recover`` checkpoint):
    #: ``seq`` (last entry before the torn line), ``file``, ``line_number``, ``evidence`` (the
    #: side file's path), ``evidence_bytes``, ``evidence_sha256``, ``evidence_present``,
    #: ``evidence_matches`` (the side file still holds exactly the bytes the seal names).
    recoveries: list[dict[str, Any]] = field(default_factory=list)
    #: the anchor comparison (None when no anchor was given): ``path``, ``state`` (verified |
    #: missing | unavailable, or the problem found), and for a verified anchor its ``seq``,
    #: ``timestamp`` and how many entries the trail holds beyond it (``entries_after``: the
    #: trail may be ahead of its anchor, never behind)
    anchor: dict[str, Any] | None = None


def verify_audit(
    path: str | os.PathLike[str] | None = None,
    key: bytes | str | SecretStr | None = None,
    *,
    allow_unsealed_tail: bool = False,
    anchor: str | os.PathLike[str] | None = None,
) -> AuditVerification:
    """Check the whole trail (all rotated segments) and name the first bad entry.

    ``allow_unsealed_tail`` turns "entries after the last checkpoint" from a failure into a
    warning (use it only when you know the writer crashed). ``anchor`` is the trail's anchor
    file (:func:`snowkit.ops.audit_anchor.default_anchor_path` gives the default one): a trail
    that lost its anchored checkpoint is ``truncated``; a missing anchor file is a warning.
    Without ``anchor`` a cut made right after a checkpoint line cannot be detected.
    """
    target = Path(path) if path is not None else paths.audit_path()
    secret = key_bytes(key) if key is not None else load_audit_key(create=False)
    segments = audit_segments(target)
    if not segments:
        missing = AuditVerification(
            ok=False,
            entries=0,
            problem="missing",
            message=f"no audit trail at {target}",
            file=str(target),
        )
        return missing if anchor is None else _trail_gone(missing, target, Path(anchor), secret)
    loaded = [(seg, *split_lines(seg.read_bytes())) for seg in segments]
    verifier = _Verifier(secret, loaded, allow_unsealed_tail)
    result = verifier.run()
    _report_unsealed_evidence(target, result)
    if anchor is not None and result.ok:
        result = _AnchorCheck(verifier, Path(anchor)).apply(result)
    return result


def _trail_gone(
    missing: AuditVerification, target: Path, anchor_path: Path, key: bytes
) -> AuditVerification:
    """No trail at all: "missing", unless a valid anchor proves there was one ("truncated")."""
    try:
        anchor = read_anchor(anchor_path)
    except AuditError:
        return missing
    if anchor is None or not anchor_signature_ok(anchor, key):
        return missing
    missing.problem = "truncated"
    missing.first_bad_seq = 1
    missing.message = (
        f"truncated: no audit trail at {target}, but its anchor {anchor_path} records a "
        f"checkpoint at seq {anchor['seq']} ({anchor['timestamp']}): the trail was deleted"
    )
    return missing


def _report_unsealed_evidence(target: Path, result: AuditVerification) -> None:
    """Warn about torn-line side files no signed ``recover`` checkpoint accounts for."""
    sealed = {Path(r["evidence"]).name for r in result.recoveries}
    for side in sorted(target.parent.glob(f"{target.name}.incomplete-*")):
        if side.name not in sealed:
            result.warnings.append(
                f"{side} holds a half-written line moved aside from the trail, but no signed "
                "recover checkpoint names it (moved by hand, or before a trail entry existed)"
            )


class _Verifier:
    """One pass over every line; stops at the first problem."""

    def __init__(
        self,
        key: bytes,
        loaded: list[tuple[Path, list[bytes], bytes | None]],
        allow_unsealed_tail: bool,
    ) -> None:
        self.key = key
        self.loaded = loaded
        self.allow_unsealed_tail = allow_unsealed_tail
        self.entries = 0
        self.checkpoints = 0
        self.warnings: list[str] = []
        self.recoveries: list[dict[str, Any]] = []
        # the checkpoint chain: the newest verified checkpoint's HMAC, and how many came before
        # chaining existed (no ``prev_hmac``)
        self.last_mac: str | None = None
        self.legacy_checkpoints = 0
        self.legacy_until_seq = 0
        self.chained = False
        #: every verified checkpoint by HMAC: (seq, covers_hash, file, line), for the anchor
        self.verified_macs: dict[str, tuple[int, str, Path, int]] = {}
        self.last_checkpoint_seq = 0
        self.last_entry_seq = 0
        self.origin: str | None = None
        self.all_seqs, self.all_macs = self._collect()

    def _collect(self) -> tuple[set[int], set[str]]:
        """Every entry seq and checkpoint HMAC in the trail, to tell a deletion from a move."""
        seqs: set[int] = set()
        macs: set[str] = set()
        for _seg, lines, _partial in self.loaded:
            for raw in lines:
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(record, dict):
                    continue
                if record.get("type") == "checkpoint":
                    if isinstance(record.get("hmac"), str):
                        macs.add(record["hmac"])
                    continue
                seq = record.get("seq")
                if isinstance(seq, int):
                    seqs.add(seq)
        return seqs, macs

    def fail(
        self,
        problem: str,
        message: str,
        seq: int | None,
        segment: Path,
        line_no: int | None,
        subject: str = "entry",
    ) -> AuditVerification:
        where = f"{segment.name} line {line_no}" if line_no else segment.name
        seq_text = f"{subject} seq {seq}" if seq is not None else f"an {subject}"
        return AuditVerification(
            ok=False,
            entries=self.entries,
            first_bad_seq=seq,
            problem=problem,
            message=f"{problem}: {seq_text} ({where}): {message}",
            line_number=line_no,
            file=str(segment),
            checkpoints=self.checkpoints,
            warnings=self.warnings,
            recoveries=self.recoveries,
        )

    def run(self) -> AuditVerification:
        head = GENESIS_HASH
        expected = 1
        sealed_seq = 0
        last_segment, last_line_no = self.loaded[-1][0], 0
        for index, (segment, lines, partial) in enumerate(self.loaded):
            is_last_segment = index == len(self.loaded) - 1
            for line_no, raw in enumerate(lines, start=1):
                last_segment, last_line_no = segment, line_no
                if not raw.strip():
                    return self.fail(
                        "edited", "blank line in the trail", expected, segment, line_no
                    )
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    return self.fail("edited", "line is not valid JSON", expected, segment, line_no)
                if not isinstance(record, dict):
                    return self.fail("edited", "line is not an object", expected, segment, line_no)
                if record.get("type") == "checkpoint":
                    bad = self._check_checkpoint(record, head, expected - 1, segment, line_no)
                    if bad is not None:
                        return bad
                    sealed_seq = expected - 1
                    continue
                bad = self._check_entry(record, head, expected, segment, line_no)
                if bad is not None:
                    return bad
                head = record["hash"]
                if expected == 1:
                    self.origin = head
                self.last_entry_seq = expected
                expected += 1
                self.entries += 1
            if partial is not None:
                if is_last_segment:
                    return AuditVerification(
                        ok=False,
                        entries=self.entries,
                        first_bad_seq=expected,
                        problem="incomplete_last_line",
                        message=(
                            f"incomplete_last_line: {segment.name} line {len(lines) + 1} is "
                            f"half-written ({len(partial)} bytes, no newline): a crash during a "
                            f"write. The {self.entries} entries before it verify."
                        ),
                        line_number=len(lines) + 1,
                        file=str(segment),
                        checkpoints=self.checkpoints,
                        warnings=self.warnings,
                        recoveries=self.recoveries,
                    )
                return self.fail(
                    "edited",
                    "a rotated segment ends without a newline",
                    expected,
                    segment,
                    len(lines) + 1,
                )
        unsealed = (expected - 1) - sealed_seq
        if unsealed > 0:
            message = (
                f"{unsealed} entries (seq {sealed_seq + 1}..{expected - 1}) follow the last "
                "checkpoint: the tail was truncated (its final checkpoint removed) or the writer "
                "crashed before closing"
            )
            if not self.allow_unsealed_tail:
                return self.fail(
                    "truncated", message, sealed_seq + 1, last_segment, last_line_no or None
                )
            self.warnings.append(message)
        self._warn_legacy()
        return AuditVerification(
            ok=True,
            entries=self.entries,
            message=(
                f"ok: {self.entries} entries, {self.checkpoints} checkpoints, "
                f"{len(self.loaded)} file(s); head {head[:16]}"
                + (
                    f"; {len(self.recoveries)} crash recovery(ies) sealed (see warnings)"
                    if self.recoveries
                    else ""
                )
            ),
            file=str(self.loaded[-1][0]),
            checkpoints=self.checkpoints,
            warnings=self.warnings,
            recoveries=self.recoveries,
        )

    def _check_entry(
        self, record: dict[str, Any], head: str, expected: int, segment: Path, line_no: int
    ) -> AuditVerification | None:
        seq = record.get("seq")
        if not isinstance(seq, int) or not isinstance(record.get("hash"), str):
            return self.fail("edited", "entry lacks seq or hash", expected, segment, line_no)
        if entry_hash(record) != record["hash"]:
            return self.fail("edited", "content does not match its hash", seq, segment, line_no)
        if seq != expected:
            if seq > expected:
                missing = [s for s in range(expected, seq) if s in self.all_seqs]
                if missing:
                    return self.fail(
                        "reordered",
                        f"found seq {seq} where seq {expected} was expected "
                        f"(seq {expected} appears later)",
                        expected,
                        segment,
                        line_no,
                    )
                return self.fail(
                    "deleted",
                    f"seq {expected}..{seq - 1} missing before seq {seq}",
                    expected,
                    segment,
                    line_no,
                )
            return self.fail(
                "reordered",
                f"seq {seq} appears again or out of order (expected {expected})",
                seq,
                segment,
                line_no,
            )
        if record.get("prev_hash") != head:
            return self.fail(
                "edited",
                "prev_hash does not match the previous entry (chain broken)",
                seq,
                segment,
                line_no,
            )
        return None

    def _check_checkpoint(
        self, record: dict[str, Any], head: str, covered: int, segment: Path, line_no: int
    ) -> AuditVerification | None:
        mac = record.get("hmac")
        if not isinstance(mac, str) or not hmac.compare_digest(
            checkpoint_mac(record, self.key), mac
        ):
            return self.fail(
                "bad_signature",
                "checkpoint HMAC does not verify with this key (content rewritten without the "
                "key, or the wrong key)",
                record.get("seq") if isinstance(record.get("seq"), int) else covered,
                segment,
                line_no,
                subject="checkpoint covering",
            )
        if record.get("seq") != covered or record.get("covers_hash") != head:
            return self.fail(
                "checkpoint_mismatch",
                f"signed checkpoint covers seq {record.get('seq')} but the chain here ends at "
                f"seq {covered} (entries removed, inserted or moved)",
                covered + 1 if covered < (record.get("seq") or 0) else covered,
                segment,
                line_no,
                subject="checkpoint after",
            )
        bad = self._check_checkpoint_chain(record, segment, line_no)
        if bad is not None:
            return bad
        self.checkpoints += 1
        self.last_mac = mac
        self.last_checkpoint_seq = covered
        self.verified_macs[mac] = (covered, head, segment, line_no)
        if record.get("reason") == "recover":
            self._note_recovery(record, segment, line_no)
        if record.get("adopted_from") is not None:
            first, last = record.get("adopted_from"), record.get("adopted_to")
            self.warnings.append(
                f"entries seq {first}..{last} were sealed by a later writer ({segment.name} "
                f"line {line_no}), not by the process that wrote them: normally a run that "
                "crashed before its checkpoint, but anyone able to append to the file could "
                f"have added them without the key; check them (`snowkit audit show`)"
            )
        return None

    def _check_checkpoint_chain(
        self, record: dict[str, Any], segment: Path, line_no: int
    ) -> AuditVerification | None:
        """Each checkpoint signs its predecessor's HMAC: a deleted, duplicated or moved
        checkpoint line breaks this chain even where no entry changed."""
        seq = record.get("seq")
        prev = record.get("prev_hmac")
        if prev is None:
            if self.chained:
                return self.fail(
                    "checkpoint_mismatch",
                    "this checkpoint has no prev_hmac although earlier checkpoints are chained "
                    "(an older snowkit wrote to a trail a newer one had chained)",
                    seq,
                    segment,
                    line_no,
                    subject="checkpoint covering",
                )
            self.legacy_checkpoints += 1
            self.legacy_until_seq = seq if isinstance(seq, int) else self.legacy_until_seq
            return None
        expected = self.last_mac if self.last_mac is not None else GENESIS_HASH
        if prev == expected:
            self.chained = True
            return None
        if prev == GENESIS_HASH or prev in self.all_macs:
            why = (
                "it claims to be the first checkpoint but others precede it"
                if prev == GENESIS_HASH
                else "it chains to a checkpoint found elsewhere in the trail"
            )
            return self.fail(
                "checkpoint_mismatch",
                f"checkpoints duplicated or out of order: {why}",
                seq,
                segment,
                line_no,
                subject="checkpoint covering",
            )
        why = (
            f"it chains to a checkpoint that is not in the trail (expected between seq "
            f"{self.last_checkpoint_seq} and seq {seq})"
            if self.last_mac is not None
            else "it chains to an earlier checkpoint, but none precedes it in the trail"
        )
        return self.fail(
            "checkpoint_deleted",
            f"{why}: a checkpoint line was deleted",
            seq,
            segment,
            line_no,
            subject="checkpoint covering",
        )

    def _warn_legacy(self) -> None:
        if not self.legacy_checkpoints:
            return
        scope = (
            f"all {self.legacy_checkpoints} checkpoints"
            if self.legacy_checkpoints == self.checkpoints
            else f"the first {self.legacy_checkpoints} checkpoints (up to seq "
            f"{self.legacy_until_seq})"
        )
        self.warnings.append(
            f"{scope} of this trail predate checkpoint chaining (an older snowkit wrote them): "
            "deleting one of them, or cutting the trail right after one, cannot be detected "
            "there. Checkpoints written from now on are chained and anchored."
        )

    def _note_recovery(self, record: dict[str, Any], segment: Path, line_no: int) -> None:
        """A signed crash recovery: say where the torn bytes went and whether they still match."""
        name = str(record.get("evidence") or "")
        side = segment.parent / Path(name).name if name else None
        present = side is not None and side.is_file()
        matches = present and (
            side is not None
            and hashlib.sha256(side.read_bytes()).hexdigest() == record.get("evidence_sha256")
        )
        self.recoveries.append(
            {
                "seq": record.get("seq"),
                "file": str(segment),
                "line_number": line_no,
                "timestamp": record.get("timestamp"),
                "evidence": str(side) if side is not None else None,
                "evidence_bytes": record.get("evidence_bytes"),
                "evidence_sha256": record.get("evidence_sha256"),
                "evidence_present": present,
                "evidence_matches": matches,
            }
        )
        state = (
            "kept unchanged"
            if matches
            else ("CHANGED since the recovery" if present else "MISSING (deleted or moved)")
        )
        self.warnings.append(
            f"recovered from a crash: a half-written line after seq {record.get('seq')} was "
            f"moved to {side} ({record.get('evidence_bytes')} bytes, evidence {state}); the "
            f"chain continues, sealed by the signed recover checkpoint at {segment.name} "
            f"line {line_no}"
        )


class _AnchorCheck:
    """Compare a trail that verified on its own with its external anchor.

    The anchor is written only after the checkpoint it names is durable in the trail, so that
    checkpoint must be there: if it is not and the trail's last checkpoint is not past it, the
    trail lost its end (``truncated``); if the trail is past it, the trail holds another
    history (``anchor_mismatch``).
    """

    def __init__(self, verifier: _Verifier, path: Path) -> None:
        self.verifier = verifier
        self.path = path

    def apply(self, result: AuditVerification) -> AuditVerification:
        v = self.verifier
        try:
            anchor = read_anchor(self.path)
        except AnchorUnavailableError as exc:
            result.anchor = {"path": str(self.path), "state": "unavailable"}
            result.warnings.append(
                f"{exc}: a cut made right after a checkpoint cannot be ruled out"
            )
            return result
        except AuditError as exc:
            return self._fail(result, "bad_anchor", str(exc), None)
        if anchor is None:
            result.anchor = {"path": str(self.path), "state": "missing"}
            if v.checkpoints:
                result.warnings.append(
                    f"no audit anchor at {self.path}: a cut made right after a checkpoint "
                    "cannot be ruled out (the anchor is written after each checkpoint; pass "
                    "its path if it is kept elsewhere)"
                )
            return result
        if not anchor_signature_ok(anchor, v.key):
            return self._fail(
                result,
                "bad_anchor",
                f"the anchor {self.path} does not verify with this key (forged, edited, or "
                "written with another key)",
                None,
            )
        anchored_seq = int(anchor["seq"])
        where = f"the anchor {self.path} (written {anchor['timestamp']})"
        if anchor["origin"] is not None and v.origin is not None and anchor["origin"] != v.origin:
            return self._fail(
                result,
                "anchor_mismatch",
                f"{where} belongs to another trail: its first entry differs (anchor of another "
                "file, or the trail was replaced)",
                1,
            )
        found = v.verified_macs.get(str(anchor["checkpoint_hmac"]))
        if found is None:
            if anchored_seq >= v.last_checkpoint_seq:
                return self._fail(
                    result,
                    "truncated",
                    f"{where} records a checkpoint sealing seq {anchored_seq}, which is not in "
                    f"the trail: its last checkpoint seals seq {v.last_checkpoint_seq} and its "
                    f"last entry is seq {v.last_entry_seq}. The end of the trail was cut off (or "
                    "an older copy put back)",
                    min(v.last_checkpoint_seq + 1, anchored_seq),
                )
            return self._fail(
                result,
                "anchor_mismatch",
                f"{where} records a checkpoint sealing seq {anchored_seq} that the trail does not "
                "hold although it goes further: the history was rewritten (with the key), or "
                "the anchor belongs to another trail",
                anchored_seq,
            )
        seq, covers, segment, line_no = found
        if seq != anchored_seq or anchor["covers_hash"] != covers:
            return self._fail(
                result,
                "anchor_mismatch",
                f"{where} names the checkpoint at {segment.name} line {line_no} with different "
                "contents",
                anchored_seq,
            )
        ahead = v.last_entry_seq - anchored_seq
        result.anchor = {
            "path": str(self.path),
            "state": "verified",
            "seq": anchored_seq,
            "timestamp": anchor["timestamp"],
            "entries_after": ahead,
        }
        result.message += f"; anchored at seq {anchored_seq}" + (
            f" ({ahead} entries since)" if ahead else ""
        )
        return result

    def _fail(
        self, result: AuditVerification, problem: str, message: str, seq: int | None
    ) -> AuditVerification:
        last_segment, lines, _partial = self.verifier.loaded[-1]
        return AuditVerification(
            ok=False,
            entries=result.entries,
            first_bad_seq=seq,
            line_number=len(lines) or None,
            problem=problem,
            message=f"{problem}: {message} ({last_segment.name}, {len(lines)} lines)",
            file=str(last_segment),
            checkpoints=result.checkpoints,
            warnings=result.warnings,
            recoveries=result.recoveries,
            anchor={"path": str(self.path), "state": problem},
        )


__all__ = ["PROBLEMS", "AuditVerification", "verify_audit"]
