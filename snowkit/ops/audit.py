"""Tamper-evident audit trail of every data change: a hash chain, chained HMAC-signed
checkpoints, and an external anchor against truncation.

Why our own: the stdlib (``hashlib``, ``hmac``, ``os.fsync``) is all it takes, and Merkle logs
(Trillian, Tessera) are far more than a loader needs.

Format (JSON lines, canonical: orjson with sorted keys, one line per ``write``):

* entry: ``seq, timestamp, run_id, correlation_id, actor, action, table, sys_id, source_id,
  before, after, outcome, prev_hash, hash`` where ``hash = SHA-256(canonical(entry - hash))``
  and ``prev_hash`` is the previous entry's ``hash`` (``"0" * 64`` for the first ever);
* checkpoint: ``seq`` (the last entry it covers), ``type: "checkpoint"``, ``timestamp``,
  ``covers_hash`` (that entry's hash), ``reason`` (interval|batch|close|rotate|resume|recover|
  manual), ``prev_hmac`` (the previous checkpoint's ``hmac``, ``"0" * 64`` for the first) and
  ``hmac = HMAC-SHA256(key, canonical(checkpoint - hmac))``. Checkpoints written before
  chaining existed have no ``prev_hmac``; they still verify, with a warning.
* anchor (a separate file, :mod:`snowkit.ops.audit_anchor`): after each checkpoint reaches the
  disk, its summary (segment, seq, entries, chain head, checkpoint HMAC, time), signed with the
  same key, replaces ``anchor.json`` atomically.

What :func:`verify_audit` guarantees, given the key:

* any edit, deletion, insertion or reordering of entries *before the last checkpoint* is found
  and the first bad entry named (hash or chain mismatch, seq gap, seq going back);
* a chain recomputed by someone without the key fails at the first checkpoint (bad HMAC);
* deleting, duplicating, reordering or editing a checkpoint line breaks the checkpoint chain
  (``checkpoint_deleted`` / ``checkpoint_mismatch`` / ``bad_signature``), even where no entry
  changed;
* entries after the last checkpoint are reported as ``truncated`` (the file lost its final
  checkpoint: either the tail was cut, or the writer crashed before closing; reopening the
  trail with :class:`AuditTrail` seals such a tail with a ``resume`` checkpoint);
* with the anchor (``verify_audit(..., anchor=path)``; ``snowkit audit verify`` uses the
  default one): a trail whose anchored checkpoint is gone (a cut right after a checkpoint, a
  deleted newest segment, a cut to zero bytes, an older copy put back) is ``truncated``, naming
  the anchored seq; a forged or edited anchor is ``bad_anchor``; an anchor of another trail or
  history is ``anchor_mismatch``. A missing anchor is only a warning (truncation after a
  checkpoint cannot then be ruled out). The trail may be ahead of its anchor (a crash between
  the two writes), never behind it;
* a half-written last line (crash mid-write) is reported as ``incomplete_last_line``.

Not guaranteed: someone holding the key can rewrite everything, anchor included; someone who
can write both the trail and the anchor can put back an older trail together with its older
anchor, or delete the anchor with the cut (a missing anchor is only a warning, unless
``snowkit audit verify --require-anchor``). That is why the anchor's place is configurable
(``anchor_path``, ``$SNOWKIT_AUDIT_ANCHOR``): keep it on storage the loader's host cannot
rewrite, or ship a copy of it elsewhere after each run, and keep the key away from the trail.

Crash recovery choice: :class:`AuditTrail` refuses to append after a half-written last line
(:class:`IncompleteAuditLineError`); ``AuditTrail(..., recover=True)`` (what the loader and
``snowkit audit recover`` use; or :func:`quarantine_incomplete_tail` alone) moves the partial
bytes to a ``.incomplete-<time>`` side file, keeps them as evidence, and continues the chain
after the last complete line. The trail then writes a signed ``recover`` checkpoint naming the
side file (``evidence``, ``evidence_bytes``, ``evidence_sha256``), so the recovery itself is
on the record and :func:`verify_audit` reports it (``recoveries`` and a warning). It also
refuses to append to a trail that is behind its anchor: that would overwrite the anchor and
erase the evidence of the cut.

Rotation (``max_bytes``, a soft limit: one larger entry is still written whole): the current
file is sealed with a ``rotate`` checkpoint and renamed to ``audit.jsonl.<n>`` where *n* grows
with age order (``.1`` is the oldest segment); the next entry in the new file chains to the last
entry of the previous segment, and the next checkpoint to the ``rotate`` checkpoint.

Cost: one anchor write (temp file, fsync, rename; about 0.5 ms on the 2-core development
machine) per checkpoint that reaches the disk, i.e. per batch (or per ``checkpoint_every``
records outside batches), never per record: about +5 µs per audited record at 100 records a
batch. Batches that overlap across workers share one fsync and one anchor write.

Per-record CPU (the loader audits every write, under one GIL with its workers): an entry is
encoded once (:func:`~snowkit.ops.audit_chain.encode_entry`: plain JSON-native entries skip the
redacting copy and the JSON round trip, with byte-identical output), and
:meth:`AuditTrail.record_many` appends a whole chunk under one lock acquisition with one
``write``. About 10 µs per entry with ``record_many`` (12 µs with ``record``) against 21 µs for
the original ``record`` (2-core development machine, plain 4-field records, fsync off, one
batch; a checkpoint and anchor write per 100-entry batch add about 3 µs per entry).

Layout: this module is the writer (and re-exports the rest); the format primitives are in
:mod:`snowkit.ops.audit_chain`, the anchor in :mod:`snowkit.ops.audit_anchor`, the verifier in
:mod:`snowkit.ops.audit_verify`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import orjson
from pydantic import SecretStr

from snowkit import paths
from snowkit.ops.audit_anchor import (
    ANCHOR_ENV,
    AnchorUnavailableError,
    behind_anchor_reason,
    build_anchor,
    default_anchor_path,
    fsync_dir,
    read_anchor,
    write_anchor,
)
from snowkit.ops.audit_chain import (
    GENESIS_HASH,
    KEY_ENV,
    SEGMENT_NAME,
    AuditError,
    IncompleteAuditLineError,
    audit_segments,
    canonical,
    checkpoint_mac,
    default_key_file,
    encode_entry,
    entry_hash,
    key_bytes,
    load_audit_key,
    read_audit,
)
from snowkit.ops.audit_verify import PROBLEMS, AuditVerification, verify_audit
from snowkit.ops.logging import current_correlation_id, current_run_id
from snowkit.ops.redaction import secrets

_TAIL_CHUNK = 64 * 1024
# Room kept for the sealing checkpoint so a rotated segment stays within ``max_bytes``.
_CHECKPOINT_RESERVE = 400
_log = logging.getLogger(__name__)

# ---------------------------------------------------------------------- writer


def quarantine_incomplete_tail(path: str | os.PathLike[str]) -> Path | None:
    """Move a half-written last line to ``<path>.incomplete-<time>`` and cut it from the file.

    Returns the side file, or None when the file ends cleanly. The bytes are kept as evidence.
    """
    target = Path(path)
    if not target.exists():
        return None
    with open(target, "r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return None
        start = _last_newline_before(handle, size)
        if start == size:
            return None
        handle.seek(start)
        partial = handle.read()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        side = target.with_name(f"{target.name}.incomplete-{stamp}")
        side.write_bytes(partial)
        handle.truncate(start)
        handle.flush()
        os.fsync(handle.fileno())
    return side


def _evidence(side: Path) -> dict[str, Any]:
    """What a ``recover`` checkpoint signs about the bytes moved aside."""
    data = side.read_bytes()
    return {
        "evidence": side.name,
        "evidence_bytes": len(data),
        "evidence_sha256": hashlib.sha256(data).hexdigest(),
    }


def _last_newline_before(handle: Any, size: int) -> int:
    """Offset just after the last ``\\n`` in the file (0 if none)."""
    position = size
    while position > 0:
        step = min(_TAIL_CHUNK, position)
        position -= step
        handle.seek(position)
        chunk = handle.read(step)
        index = chunk.rfind(b"\n")
        if index >= 0:
            return position + index + 1
    return 0


def _last_complete_line(path: Path) -> tuple[bytes | None, bool]:
    """(last complete line, whether an incomplete line follows it)."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return None, False
        end = _last_newline_before(handle, size)
        incomplete = end != size
        if end == 0:
            return None, incomplete
        start = _last_newline_before(handle, end - 1)
        handle.seek(start)
        return handle.read(end - 1 - start), incomplete


def _reverse_lines(path: Path) -> Iterator[bytes]:
    """Complete lines of ``path`` from the last to the first, read in chunks from the end."""
    with open(path, "rb") as handle:
        position = handle.seek(0, os.SEEK_END)
        end = _last_newline_before(handle, position)  # skip a half-written tail
        position = end
        buffer = b""
        while position > 0:
            step = min(_TAIL_CHUNK, position)
            position -= step
            handle.seek(position)
            buffer = handle.read(step) + buffer
            lines = buffer.split(b"\n")
            buffer = lines.pop(0)  # may continue in the previous chunk
            for line in reversed(lines):
                if line:
                    yield line
        if buffer:
            yield buffer


def _last_checkpoint(segments: list[Path]) -> dict[str, Any] | None:
    """The newest checkpoint line of the trail (None if it has none).

    Reads backwards: a checkpoint follows at most ``checkpoint_every`` entries, and a rotated
    segment ends with one, so this touches the end of the trail only.
    """
    for segment in reversed(segments):
        for line in _reverse_lines(segment):
            if b'"checkpoint"' not in line:
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("type") == "checkpoint":
                return record
    return None


def _origin(segments: list[Path]) -> str | None:
    """The hash of entry seq 1: which trail an anchor belongs to."""
    if not segments:
        return None
    with open(segments[0], "rb") as handle:
        first = handle.readline()
    try:
        record = orjson.loads(first)
    except orjson.JSONDecodeError:
        return None
    if isinstance(record, dict) and record.get("seq") == 1 and "hash" in record:
        return str(record["hash"])
    return None


@dataclass
class _Tail:
    """What a writer needs to know about the trail it continues."""

    seq: int = 0
    head: str = GENESIS_HASH
    unsealed: bool = False
    recovered: Path | None = None


class AuditTrail:
    """Append-only, hash-chained audit trail with chained HMAC-signed checkpoints and an anchor.

    Thread-safe: one lock serializes appends (the chain is sequential by nature). Each
    :meth:`record` outside a :meth:`batch` is flushed and, with ``fsync=True``, fsynced.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        key: bytes | str | SecretStr | None = None,
        actor: str = "snowkit",
        checkpoint_every: int = 100,
        fsync: bool = True,
        max_bytes: int | None = None,
        *,
        recover: bool = False,
        anchor_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else paths.audit_path()
        #: where the latest checkpoint is anchored (see :mod:`snowkit.ops.audit_anchor`)
        self.anchor_path = (
            Path(anchor_path) if anchor_path is not None else default_anchor_path(self.path)
        )
        #: why the last anchor write failed (None: the anchor is current); retried next sync
        self.anchor_error: str | None = None
        self._key = key_bytes(key) if key is not None else load_audit_key()
        secrets.register(self._key.decode("utf-8", "ignore"))
        self.actor = actor
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.fsync = fsync
        self.max_bytes = max_bytes
        self._lock = threading.RLock()
        self._batch_depth = 0
        self._since_checkpoint = 0
        self._dirty = False
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pending_anchor: dict[str, Any] | None = None
        #: lines waiting for one write (only inside record_many), and the state before them
        self._buffer: list[bytes] | None = None
        self._buffer_base: tuple[Any, ...] = ()
        self._writer_lock = _WriterLock.acquire(self.path)
        try:
            segments = audit_segments(self.path)
            last_checkpoint = _last_checkpoint(segments)
            self._origin = _origin(segments)
            self._check_anchor(last_checkpoint)  # before recovery moves any bytes
            tail = self._resume(recover)
            handle = open(self.path, "ab", buffering=0)  # noqa: SIM115 - lives with the trail
        except BaseException:
            self._writer_lock.release()
            raise
        self._seq, self._head, self.recovered = tail.seq, tail.head, tail.recovered
        unsealed = tail.unsealed
        self._prev_mac = str(last_checkpoint.get("hmac")) if last_checkpoint else GENESIS_HASH
        self._files = _OpenFile(handle)
        self._finalizer = weakref.finalize(self, _abandon, self._files, self._writer_lock)
        self._size = self._handle.seek(0, os.SEEK_END)
        # Entries after the last checkpoint were written by a process that did not sign them
        # (a crash mid-batch, or anyone able to append to the file without the key): the
        # checkpoint that seals them now says which, so `verify` names them instead of
        # vouching for them silently.
        adopted = (
            {"adopted_from": int(last_checkpoint["seq"]) + 1 if last_checkpoint else 1,
             "adopted_to": tail.seq}
            if unsealed else {}
        )  # fmt: skip
        if self.recovered is not None:
            # Sign the recovery into the chain: which bytes were moved aside, and where.
            self._since_checkpoint = 1
            self._write_checkpoint("recover", {**_evidence(self.recovered), **adopted})
            self._sync()
        elif unsealed:
            self._since_checkpoint = 1
            self._write_checkpoint("resume", adopted)
            self._sync()

    # ------------------------------------------------------------------ public API

    @property
    def seq(self) -> int:
        """The seq of the last entry written (0 for an empty trail)."""
        return self._seq

    @property
    def head_hash(self) -> str:
        return self._head

    @property
    def last_checkpoint_hmac(self) -> str:
        """The newest checkpoint's HMAC (what the next checkpoint chains to)."""
        return self._prev_mac

    def record(
        self,
        action: str,
        table: str,
        sys_id: str | None,
        source_id: str | None = None,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        outcome: str = "success",
        run_id: str | None = None,
        correlation_id: str | None = None,
    ) -> dict[str, Any]:
        """Append one entry (redacted) and return it as written."""
        with self._lock:
            self._ensure_open()
            body = self._append(
                None,
                action,
                table,
                sys_id,
                source_id,
                before,
                after,
                outcome,
                run_id,
                correlation_id,
            )
            if self._batch_depth == 0:
                self._sync()
            return body

    def record_many(self, entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Append many entries at once; the file ends up exactly as after one :meth:`record`
        per entry, in order (same lines, chain, ``interval`` checkpoints and rotation).

        Each entry is a mapping of :meth:`record`'s keyword arguments: ``action``, ``table``,
        ``sys_id`` (required), ``source_id``, ``before``, ``after``, ``outcome``, ``run_id``,
        ``correlation_id`` (optional, same defaults: ``run_id``/``correlation_id`` come from the
        calling thread's context). Returns the entries as written, in order.

        Cheaper than a loop of :meth:`record`: one lock acquisition and one ``write`` for all
        (a rotation in the middle flushes what precedes it into the old segment). Inside a
        :meth:`batch` nothing is fsynced here; outside one, the entries are flushed and fsynced
        once at the end (a loop of :meth:`record` would fsync each). No checkpoint is added
        beyond the ``interval`` ones a loop of :meth:`record` would write.

        Errors: an entry that cannot be encoded (bad arguments, a value orjson cannot encode)
        raises after the entries before it have been written, as a loop of :meth:`record`
        would. If the write itself fails, none of the not-yet-written entries count: the chain
        continues from the last entry on disk.
        """
        with self._lock:
            self._ensure_open()
            written: list[dict[str, Any]] = []
            # The context defaults, read once (they cost a context copy each): same thread,
            # same context as a loop of record() would see.
            context = (current_run_id(), current_correlation_id())
            self._start_buffer()
            try:
                for entry in entries:
                    written.append(self._append(context, **entry))
            finally:
                self._flush_buffer(stop=True)
                if self._batch_depth == 0:
                    self._sync()
            return written

    def _append(
        self,
        context: tuple[str | None, str | None] | None,
        action: str,
        table: str,
        sys_id: str | None,
        source_id: str | None = None,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        outcome: str = "success",
        run_id: str | None = None,
        correlation_id: str | None = None,
    ) -> dict[str, Any]:
        """Encode, write (or buffer) and chain one entry; checkpoint at the interval.

        ``context``: the caller's (run id, correlation id) if already read, else None.
        """
        if run_id is None:
            run_id = context[0] if context is not None else current_run_id()
        if correlation_id is None:
            correlation_id = context[1] if context is not None else current_correlation_id()
        body, line = encode_entry(
            self._seq + 1,
            datetime.now(UTC).isoformat(),
            run_id,
            correlation_id,
            self.actor,
            action,
            table,
            sys_id,
            source_id,
            dict(before) if before is not None else None,
            dict(after) if after is not None else None,
            outcome,
            self._head,
        )
        self._rotate_if_needed(len(line))
        self._write(line)
        self._seq = body["seq"]
        self._head = body["hash"]
        if self._origin is None:
            self._origin = self._head  # entry seq 1 names the trail in its anchor
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.checkpoint_every:
            self._write_checkpoint("interval")
        return body

    @contextlib.contextmanager
    def batch(self) -> Iterator[AuditTrail]:
        """Many records, one fsync and one checkpoint at the end (also on error).

        The batch belongs to the trail, not the thread: records other threads append while it
        is open are fsynced with it at the end.
        """
        with self._lock:
            self._batch_depth += 1
        try:
            yield self
        finally:
            with self._lock:
                self._batch_depth -= 1
                if self._batch_depth == 0 and not self._closed:
                    self._write_checkpoint("batch")
                    self._sync()

    def checkpoint(self) -> dict[str, Any] | None:
        """Seal the entries written so far with a signed checkpoint (None if nothing new)."""
        with self._lock:
            self._ensure_open()
            written = self._write_checkpoint("manual")
            self._sync()
            return written

    def close(self) -> None:
        """Seal with a final checkpoint, fsync and close. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._write_checkpoint("close")
            self._sync(force=True)
            self._handle.close()
            self._closed = True
            self._finalizer.detach()
            self._writer_lock.release()

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _handle(self) -> Any:
        return self._files.handle

    @_handle.setter
    def _handle(self, handle: Any) -> None:
        self._files.handle = handle

    def __repr__(self) -> str:  # never show the key
        return f"AuditTrail(path={str(self.path)!r}, seq={self._seq})"

    # ------------------------------------------------------------------ internals

    def _ensure_open(self) -> None:
        if self._closed:
            raise AuditError(f"audit trail {self.path} is closed; open a new AuditTrail")

    def _write(self, line: bytes) -> None:
        buffer = self._buffer
        if buffer is not None:  # record_many: written as one at the end
            if not buffer:  # the state these lines build on, in case their write fails
                self._buffer_base = (
                    self._seq,
                    self._head,
                    self._since_checkpoint,
                    self._prev_mac,
                    self._pending_anchor,
                    self._size,
                    self._origin,
                )
            buffer.append(line)
            self._size += len(line)
            return
        self._write_now(line)
        self._size += len(line)

    def _write_now(self, data: bytes) -> None:
        written = self._handle.write(data)
        if written != len(data):  # raw FileIO may write short; never leave half a line
            self._handle.write(data[written:])
        self._dirty = True

    def _start_buffer(self) -> None:
        """Buffer lines from here on (:meth:`_write` keeps the state they build on: if their
        write fails, the chain continues from what is on disk, as after a failed
        :meth:`record`)."""
        self._buffer = []

    def _flush_buffer(self, *, stop: bool = False) -> None:
        """Write the buffered lines with one ``write`` (and keep buffering unless ``stop``)."""
        lines = self._buffer
        if lines is None:
            return
        self._buffer = None
        if lines:
            try:
                self._write_now(b"".join(lines))
            except BaseException:
                (
                    self._seq,
                    self._head,
                    self._since_checkpoint,
                    self._prev_mac,
                    self._pending_anchor,
                    self._size,
                    self._origin,
                ) = self._buffer_base
                raise
        if not stop:
            self._start_buffer()

    def _sync(self, force: bool = False, *, anchor: bool = True) -> None:
        self._flush_buffer()  # buffered lines reach the file before any flush or fsync
        if self._dirty or force:
            self._handle.flush()
            if self.fsync:
                os.fsync(self._handle.fileno())
            self._dirty = False
        if anchor and self._pending_anchor is not None:
            self._write_anchor(self.path.name)

    def _write_anchor(self, segment: str) -> None:
        """Anchor the newest checkpoint, which the caller has made durable in the trail.

        A failure (the anchor's storage is gone) must not stop a load whose trail is intact: it
        is logged and kept in ``anchor_error``, and the next sync tries again. The trail is
        then merely ahead of its anchor, which verification accepts.
        """
        checkpoint = self._pending_anchor
        if checkpoint is None:
            return
        document = build_anchor(
            checkpoint, trail=self.path, segment=segment, origin=self._origin, key=self._key
        )
        try:
            write_anchor(self.anchor_path, document, fsync=self.fsync)
        except OSError as exc:
            self.anchor_error = f"{self.anchor_path}: {exc.strerror or exc}"
            _log.warning(
                "could not write the audit anchor %s (%s); the trail is intact, its anchor now "
                "lags behind. Check the anchor's storage or %s.",
                self.anchor_path,
                exc.strerror or exc,
                ANCHOR_ENV,
            )
            return
        self._pending_anchor = None
        self.anchor_error = None

    def _write_checkpoint(
        self, reason: str, extra: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        if self._since_checkpoint == 0 or self._seq == 0:
            return None
        body: dict[str, Any] = {
            "seq": self._seq,
            "type": "checkpoint",
            "timestamp": datetime.now(UTC).isoformat(),
            "covers_hash": self._head,
            "reason": reason,
            "prev_hmac": self._prev_mac,
            **(extra or {}),
        }
        body["hmac"] = checkpoint_mac(body, self._key)
        self._write(canonical(body) + b"\n")
        self._since_checkpoint = 0
        self._prev_mac = body["hmac"]
        self._pending_anchor = body  # anchored once it is durable (the next sync)
        return body

    def _rotate_if_needed(self, incoming: int) -> None:
        if self.max_bytes is None or self._size == 0:
            return
        if self._size + incoming + _CHECKPOINT_RESERVE <= self.max_bytes:
            return
        self._write_checkpoint("rotate")
        self._sync(force=True, anchor=False)
        self._handle.close()
        numbers = [SEGMENT_NAME.match(p.name) for p in audit_segments(self.path)]
        existing = [int(m.group("n")) for m in numbers if m]
        target = self.path.with_name(f"{self.path.name}.{max(existing, default=0) + 1}")
        os.replace(self.path, target)
        self._handle = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self._size = 0
        fsync_dir(self.path.parent)
        self._write_anchor(target.name)  # the rotate checkpoint now lives in the renamed file

    def _resume(self, recover: bool) -> _Tail:
        """Where the chain stands: last seq, head hash, whether entries follow the last
        checkpoint, and the evidence file a half-written last line was moved to
        (``recover=True``)."""
        recovered: Path | None = None
        for segment in reversed(audit_segments(self.path)):
            line, incomplete = _last_complete_line(segment)
            if incomplete:
                if segment != self.path:
                    raise IncompleteAuditLineError(
                        f"rotated audit segment {segment} ends with a half-written line: it "
                        "was sealed and renamed whole, so this is not a crash of the writer. "
                        f"Run `snowkit audit verify {self.path}` and investigate."
                    )
                if not recover:
                    raise IncompleteAuditLineError(
                        f"audit trail {segment} ends with a half-written line (a crash during "
                        "a write?). Nothing was appended after it. Inspect it with "
                        f"`snowkit audit verify {self.path}`, then run "
                        f"`snowkit audit recover {self.path}` to move the partial line to a "
                        "side file (kept as evidence) and continue the chain."
                    )
                recovered = quarantine_incomplete_tail(segment)
                line, _ = _last_complete_line(segment)
            if line is None:
                continue
            try:
                last = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise AuditError(
                    f"the last line of {segment} is not valid JSON; run "
                    f"`snowkit audit verify {self.path}` before writing to this trail"
                ) from exc
            if last.get("type") == "checkpoint":
                return _Tail(int(last["seq"]), str(last["covers_hash"]), False, recovered)
            return _Tail(int(last["seq"]), str(last["hash"]), True, recovered)
        return _Tail(recovered=recovered)

    def _check_anchor(self, last_checkpoint: dict[str, Any] | None) -> None:
        """Refuse to continue a trail that is behind its anchor (cut, or an older copy).

        Appending would replace the anchor and so erase the only evidence of the cut.
        """
        try:
            anchor = read_anchor(self.anchor_path)
        except AnchorUnavailableError as exc:
            # No evidence either way; the anchor writes will say so again (anchor_error).
            self.anchor_error = str(exc)
            _log.warning("%s; appending without checking the trail against it", exc)
            return
        except AuditError as exc:
            raise AuditError(
                f"{exc}. Nothing was appended to {self.path}. Run `snowkit audit verify "
                f"{self.path}`; if the anchor is damaged, move it aside (keep it as evidence)."
            ) from None
        if anchor is None:
            return
        reason = behind_anchor_reason(anchor, self._key, last_checkpoint, self._origin)
        if reason is not None:
            raise AuditError(
                f"audit trail {self.path} does not match its anchor {self.anchor_path}: "
                f"{reason}. Nothing was appended (that would overwrite the anchor and erase "
                f"the evidence). Run `snowkit audit verify {self.path}`; if the trail was "
                "restored or replaced on purpose, move the anchor aside (keep it as evidence) "
                "and try again."
            )


class _WriterLock:
    """One writer per trail: in this process (a registry) and across processes (``flock``).

    Two writers with their own idea of the chain head would fork the chain, so a second
    :class:`AuditTrail` on the same file fails fast instead of corrupting it. Readers
    (:func:`verify_audit`, :func:`read_audit`) never lock.
    """

    _held: ClassVar[set[Path]] = set()
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, key: Path, fd: int | None) -> None:
        self._key = key
        self._fd = fd
        self._released = False

    @classmethod
    def acquire(cls, path: Path) -> _WriterLock:
        key = path.resolve()
        with cls._registry_lock:
            if key in cls._held:
                raise AuditError(
                    f"audit trail {path} is already open for writing in this process; share "
                    "that AuditTrail instance (or close it first)"
                )
            fd = _flock(path.with_name(path.name + ".lock"))
            cls._held.add(key)
        return cls(key, fd)

    def release(self) -> None:
        with self._registry_lock:
            if self._released:
                return
            self._released = True
            self._held.discard(self._key)
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)  # closing the descriptor drops the flock


def writer_active(path: str | os.PathLike[str]) -> bool:
    """Is a writer holding the trail at ``path`` right now (this process or another)? A
    verification run meanwhile can see a moment of the write (an open batch, a rotation)."""
    target = Path(path)
    if target.resolve() in _WriterLock._held:
        return True
    try:
        fd = _flock(target.with_name(target.name + ".lock"))
    except AuditError:
        return True
    except OSError:
        return False
    if fd is not None:
        os.close(fd)
    return False


def _flock(lock_path: Path) -> int | None:
    """Take an exclusive non-blocking lock on ``lock_path``; None where flock is unavailable."""
    try:
        import fcntl
    except ImportError:  # not POSIX: in-process protection only
        return None
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AuditError(
            f"another process is writing the audit trail next to {lock_path}; only one writer "
            "may append at a time (wait for it to finish)"
        ) from None
    return fd


@dataclass
class _OpenFile:
    """The current segment's handle, shared with the finalizer (rotation swaps it)."""

    handle: Any


def _abandon(files: _OpenFile, lock: _WriterLock) -> None:
    """An AuditTrail was dropped without close(): free the file and the lock, write nothing.

    The unsealed tail it leaves is sealed by the next writer (a ``resume`` checkpoint).
    """
    with contextlib.suppress(OSError, ValueError):
        files.handle.close()
    lock.release()


__all__ = [
    "ANCHOR_ENV",
    "GENESIS_HASH",
    "KEY_ENV",
    "PROBLEMS",
    "AuditError",
    "AuditTrail",
    "AuditVerification",
    "IncompleteAuditLineError",
    "audit_segments",
    "canonical",
    "checkpoint_mac",
    "default_anchor_path",
    "default_key_file",
    "entry_hash",
    "load_audit_key",
    "quarantine_incomplete_tail",
    "read_audit",
    "verify_audit",
]
