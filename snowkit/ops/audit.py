"""Tamper-evident audit trail of every data change: a hash chain with HMAC-signed checkpoints.

Why our own: the stdlib (``hashlib``, ``hmac``, ``os.fsync``) is all it takes, and Merkle logs
(Trillian, Tessera) are far more than a loader needs.

Format (JSON lines, canonical: orjson with sorted keys, one line per ``write``):

* entry: ``seq, timestamp, run_id, correlation_id, actor, action, table, sys_id, source_id,
  before, after, outcome, prev_hash, hash`` where ``hash = SHA-256(canonical(entry - hash))``
  and ``prev_hash`` is the previous entry's ``hash`` (``"0" * 64`` for the first ever);
* checkpoint: ``seq`` (the last entry it covers), ``type: "checkpoint"``, ``timestamp``,
  ``covers_hash`` (that entry's hash), ``reason`` (interval|batch|close|rotate|resume) and
  ``hmac = HMAC-SHA256(key, canonical(checkpoint - hmac))``.

What :func:`verify_audit` guarantees, given the key:

* any edit, deletion, insertion or reordering of entries *before the last checkpoint* is found
  and the first bad entry named (hash or chain mismatch, seq gap, seq going back);
* a chain recomputed by someone without the key fails at the first checkpoint (bad HMAC);
* entries after the last checkpoint are reported as ``truncated`` (the file lost its final
  checkpoint: either the tail was cut, or the writer crashed before closing; reopening the
  trail with :class:`AuditTrail` seals such a tail with a ``resume`` checkpoint);
* a half-written last line (crash mid-write) is reported as ``incomplete_last_line``.

Not detectable from the file alone: cutting the file exactly after a checkpoint, or replacing
the whole trail with an older copy. Copy the latest checkpoint somewhere the loader cannot
rewrite (an external anchor) if that matters.

Crash recovery choice: :class:`AuditTrail` refuses to append after a half-written last line
(:class:`IncompleteAuditLineError`); ``AuditTrail(..., recover=True)`` (or
:func:`quarantine_incomplete_tail`) moves the partial bytes to a ``.incomplete-<time>`` side
file, keeps them as evidence, and continues the chain after the last complete line.

Rotation (``max_bytes``, a soft limit: one larger entry is still written whole): the current
file is sealed with a ``rotate`` checkpoint and renamed to ``audit.jsonl.<n>`` where *n* grows
with age order (``.1`` is the oldest segment); the next entry in the new file chains to the last
entry of the previous segment.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import orjson
from pydantic import SecretStr

from snowkit import paths
from snowkit.ops.redaction import redact, secrets

GENESIS_HASH = "0" * 64
KEY_ENV = "SNOWKIT_AUDIT_KEY"
_TAIL_CHUNK = 64 * 1024
# Room kept for the sealing checkpoint so a rotated segment stays within ``max_bytes``.
_CHECKPOINT_RESERVE = 320
_SEGMENT = re.compile(r"^(?P<base>.+)\.(?P<n>\d+)$")

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


class AuditError(Exception):
    """Base class for audit trail problems a person has to act on."""


class IncompleteAuditLineError(AuditError):
    """The trail ends with a half-written line; appending after it would bury the damage."""


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


# ---------------------------------------------------------------------- canonical form


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The exact bytes hashed and written: orjson, sorted keys, no whitespace."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 over the canonical entry without its ``hash`` field."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def checkpoint_mac(checkpoint: Mapping[str, Any], key: bytes) -> str:
    """HMAC-SHA256 over the canonical checkpoint without its ``hmac`` field."""
    body = {k: v for k, v in checkpoint.items() if k != "hmac"}
    return hmac.new(key, canonical(body), hashlib.sha256).hexdigest()


def _key_bytes(key: bytes | str | SecretStr) -> bytes:
    if isinstance(key, SecretStr):
        key = key.get_secret_value()
    raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if not raw:
        raise ValueError("the audit key is empty; set SNOWKIT_AUDIT_KEY or use a key file")
    return raw


def default_key_file() -> Path:
    return paths.state_dir() / "audit" / "audit.key"


def load_audit_key(
    key_file: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    create: bool = True,
) -> bytes:
    """The HMAC key: ``$SNOWKIT_AUDIT_KEY``, else the key file (generated 0600 if ``create``)."""
    environ = os.environ if env is None else env
    value = environ.get(KEY_ENV)
    if value:
        secrets.register(value)
        return value.encode("utf-8")
    path = Path(key_file) if key_file else default_key_file()
    if not path.exists():
        if not create:
            raise AuditError(
                f"no audit key: set {KEY_ENV} or pass --key-file (looked for {path}). "
                "Use the same key that wrote the trail."
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(os.urandom(32).hex())
    text = path.read_text().strip()
    secrets.register(text)
    return text.encode("utf-8")


# ---------------------------------------------------------------------- segments


def audit_segments(path: str | os.PathLike[str]) -> list[Path]:
    """The trail's files oldest first: ``audit.jsonl.1``, ``.2``, ... then ``audit.jsonl``."""
    current = Path(path)
    numbered: list[tuple[int, Path]] = []
    if current.parent.exists():
        for candidate in current.parent.iterdir():
            match = _SEGMENT.match(candidate.name)
            if match and match.group("base") == current.name:
                numbered.append((int(match.group("n")), candidate))
    ordered = [p for _, p in sorted(numbered)]
    if current.exists():
        ordered.append(current)
    return ordered


def _split_lines(data: bytes) -> tuple[list[bytes], bytes | None]:
    """Complete lines, and the trailing bytes without a newline (None if the file ends cleanly)."""
    if not data:
        return [], None
    parts = data.split(b"\n")
    tail = parts.pop()
    return parts, (tail if tail else None)


def read_audit(
    path: str | os.PathLike[str] | None = None,
    run_id: str | None = None,
    *,
    include_checkpoints: bool = False,
) -> Iterator[dict[str, Any]]:
    """Entries across rotated files, oldest first; skips a half-written last line.

    For display and analysis; it does not verify anything (use :func:`verify_audit`).
    """
    for segment in audit_segments(path or paths.audit_path()):
        lines, _partial = _split_lines(segment.read_bytes())
        for raw in lines:
            if not raw.strip():
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(record, dict):
                continue
            if record.get("type") == "checkpoint":
                if include_checkpoints:
                    yield record
                continue
            if run_id is None or record.get("run_id") == run_id:
                yield record


# ---------------------------------------------------------------------- writer


def _current_correlation_id() -> str | None:
    try:
        from snowkit.ops.logging import current_correlation_id
    except ImportError:  # logging not available: no ambient correlation id
        return None
    return current_correlation_id()


def _current_run_id() -> str | None:
    try:
        from snowkit.ops.logging import current_run_id
    except ImportError:  # logging not available: no ambient run id
        return None
    return current_run_id()


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


class AuditTrail:
    """Append-only, hash-chained audit trail with HMAC-signed checkpoints.

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
    ) -> None:
        self.path = Path(path) if path is not None else paths.audit_path()
        self._key = _key_bytes(key) if key is not None else load_audit_key()
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
        self._writer_lock = _WriterLock.acquire(self.path)
        try:
            self._seq, self._head, unsealed = self._resume(recover)
            handle = open(self.path, "ab", buffering=0)  # noqa: SIM115 - lives with the trail
        except BaseException:
            self._writer_lock.release()
            raise
        self._files = _OpenFile(handle)
        self._finalizer = weakref.finalize(self, _abandon, self._files, self._writer_lock)
        self._size = self._handle.seek(0, os.SEEK_END)
        if unsealed:
            self._since_checkpoint = 1
            self._write_checkpoint("resume")
            self._sync()

    # ------------------------------------------------------------------ public API

    @property
    def seq(self) -> int:
        """The seq of the last entry written (0 for an empty trail)."""
        return self._seq

    @property
    def head_hash(self) -> str:
        return self._head

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
            body = redact(
                {
                    "seq": self._seq + 1,
                    "timestamp": datetime.now(UTC).isoformat(),
                    "run_id": run_id if run_id is not None else _current_run_id(),
                    "correlation_id": (
                        correlation_id if correlation_id is not None else _current_correlation_id()
                    ),
                    "actor": self.actor,
                    "action": action,
                    "table": table,
                    "sys_id": sys_id,
                    "source_id": source_id,
                    "before": dict(before) if before is not None else None,
                    "after": dict(after) if after is not None else None,
                    "outcome": outcome,
                }
            )
            # Round-trip once so the hash covers exactly what a reader will parse back.
            body = orjson.loads(canonical(body))
            body["prev_hash"] = self._head
            body["hash"] = entry_hash(body)
            line = canonical(body) + b"\n"
            self._rotate_if_needed(len(line))
            self._write(line)
            self._seq = body["seq"]
            self._head = body["hash"]
            self._since_checkpoint += 1
            if self._since_checkpoint >= self.checkpoint_every:
                self._write_checkpoint("interval")
            if self._batch_depth == 0:
                self._sync()
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
        written = self._handle.write(line)
        if written != len(line):  # raw FileIO may write short; never leave half a line
            self._handle.write(line[written:])
        self._size += len(line)
        self._dirty = True

    def _sync(self, force: bool = False) -> None:
        if self._dirty or force:
            self._handle.flush()
            if self.fsync:
                os.fsync(self._handle.fileno())
            self._dirty = False

    def _write_checkpoint(self, reason: str) -> dict[str, Any] | None:
        if self._since_checkpoint == 0 or self._seq == 0:
            return None
        body: dict[str, Any] = {
            "seq": self._seq,
            "type": "checkpoint",
            "timestamp": datetime.now(UTC).isoformat(),
            "covers_hash": self._head,
            "reason": reason,
        }
        body["hmac"] = checkpoint_mac(body, self._key)
        self._write(canonical(body) + b"\n")
        self._since_checkpoint = 0
        return body

    def _rotate_if_needed(self, incoming: int) -> None:
        if self.max_bytes is None or self._size == 0:
            return
        if self._size + incoming + _CHECKPOINT_RESERVE <= self.max_bytes:
            return
        self._write_checkpoint("rotate")
        self._sync(force=True)
        self._handle.close()
        numbers = [_SEGMENT.match(p.name) for p in audit_segments(self.path)]
        existing = [int(m.group("n")) for m in numbers if m]
        target = self.path.with_name(f"{self.path.name}.{max(existing, default=0) + 1}")
        os.replace(self.path, target)
        self._handle = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self._size = 0
        _fsync_dir(self.path.parent)

    def _resume(self, recover: bool) -> tuple[int, str, bool]:
        """(last seq, head hash, whether entries follow the last checkpoint) from the files."""
        for segment in reversed(audit_segments(self.path)):
            line, incomplete = _last_complete_line(segment)
            if incomplete:
                if segment != self.path or not recover:
                    raise IncompleteAuditLineError(
                        f"audit trail {segment} ends with a half-written line (a crash during "
                        "a write?). Nothing was appended after it. Inspect it with "
                        f"`snowkit audit verify {self.path}`, then open the trail with "
                        "AuditTrail(..., recover=True) to move the partial line to a side "
                        "file and continue."
                    )
                quarantine_incomplete_tail(segment)
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
                return int(last["seq"]), str(last["covers_hash"]), False
            return int(last["seq"]), str(last["hash"]), True
        return 0, GENESIS_HASH, False


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


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); silently skipped where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- verifier


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
    key_bytes = _key_bytes(key) if key is not None else load_audit_key(create=False)
    segments = audit_segments(target)
    if not segments:
        return AuditVerification(
            ok=False,
            entries=0,
            problem="missing",
            message=f"no audit trail at {target}",
            file=str(target),
        )
    loaded = [(seg, *_split_lines(seg.read_bytes())) for seg in segments]
    return _Verifier(key_bytes, loaded, allow_unsealed_tail).run()


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
            ),
            file=str(self.loaded[-1][0]),
            checkpoints=self.checkpoints,
            warnings=self.warnings,
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
        return None


__all__ = [
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
    "default_key_file",
    "entry_hash",
    "load_audit_key",
    "quarantine_incomplete_tail",
    "read_audit",
    "verify_audit",
]
