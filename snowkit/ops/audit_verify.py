"""``verify_audit``: one pass over every segment of the trail, naming the first bad entry.

Separate from the writer (``audit.py``) because it runs in another process (``snowkit audit
verify``, a notebook) and must never share the writer's state, locks or assumptions; both read
the format from :mod:`snowkit.ops.audit_chain`. What it guarantees is listed in
:mod:`snowkit.ops.audit`.
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
from snowkit.ops.audit_chain import (
    GENESIS_HASH,
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


def verify_audit(
    path: str | os.PathLike[str] | None = None,
    key: bytes | str | SecretStr | None = None,
    *,
    allow_unsealed_tail: bool = False,
) -> AuditVerification:
    """Check the whole trail (all rotated segments) and name the first bad entry.

    ``allow_unsealed_tail`` turns "entries after the last checkpoint" from a failure into a
    warning (use it only when you know the writer crashed).
    """
    target = Path(path) if path is not None else paths.audit_path()
    secret = key_bytes(key) if key is not None else load_audit_key(create=False)
    segments = audit_segments(target)
    if not segments:
        return AuditVerification(
            ok=False,
            entries=0,
            problem="missing",
            message=f"no audit trail at {target}",
            file=str(target),
        )
    loaded = [(seg, *split_lines(seg.read_bytes())) for seg in segments]
    result = _Verifier(secret, loaded, allow_unsealed_tail).run()
    _report_unsealed_evidence(target, result)
    return result


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
        self.all_seqs = self._collect_seqs()

    def _collect_seqs(self) -> set[int]:
        seqs: set[int] = set()
        for _seg, lines, _partial in self.loaded:
            for raw in lines:
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(record, dict) and record.get("type") != "checkpoint":
                    seq = record.get("seq")
                    if isinstance(seq, int):
                        seqs.add(seq)
        return seqs

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
        self.checkpoints += 1
        if record.get("reason") == "recover":
            self._note_recovery(record, segment, line_no)
        return None

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


__all__ = ["PROBLEMS", "AuditVerification", "verify_audit"]
