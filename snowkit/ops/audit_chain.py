"""The audit trail's on-disk format, shared by the writer and the verifier.

Canonical bytes, the entry hash, the entry encoder, the checkpoint HMAC, the key, the rotated
segments and a tolerant reader live here, so ``audit.py`` (append) and ``audit_verify.py``
(check) cannot drift apart on what a valid line is. The format itself is described in
:mod:`snowkit.ops.audit`.

:func:`encode_entry` runs once per audited write, so it has a fast path for plain entries; it
must produce the very bytes of the reference algorithm (redact, JSON round trip, hash, encode),
which ``tests/ops/test_audit_fast.py`` keeps a verbatim copy of and compares against.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr

from snowkit import paths
from snowkit.ops.redaction import plain_json, redact, secrets

_JSON_SCALARS = frozenset({str, int, bool, type(None)})

GENESIS_HASH = "0" * 64
KEY_ENV = "SNOWKIT_AUDIT_KEY"
SEGMENT_NAME = re.compile(r"^(?P<base>.+)\.(?P<n>\d+)$")


class AuditError(Exception):
    """Base class for audit trail problems a person has to act on."""


class IncompleteAuditLineError(AuditError):
    """The trail ends with a half-written line; appending after it would bury the damage."""


# ---------------------------------------------------------------------- canonical form


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The exact bytes hashed and written: orjson, sorted keys, no whitespace."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 over the canonical entry without its ``hash`` field."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def encode_entry(
    seq: int,
    timestamp: str,
    run_id: Any,
    correlation_id: Any,
    actor: Any,
    action: Any,
    table: Any,
    sys_id: Any,
    source_id: Any,
    before: Any,
    after: Any,
    outcome: Any,
    prev_hash: str,
) -> tuple[dict[str, Any], bytes]:
    """One entry, redacted and hashed: (the entry as a reader parses it back, its line).

    The line is ``canonical(entry)`` and ``entry["hash"] = entry_hash(entry)``, where the
    entry is ``redact(fields)`` round-tripped through JSON, plus ``prev_hash``. That reference
    algorithm (:func:`_encode_entry_reference`) costs a redacting deep copy, a regex per
    string, an encode/decode round trip and three encodings; it remains the path for anything
    unusual. The usual entry (JSON-native values, no secret-like key, no registered secret in
    it) takes a fast path with the same bytes: the round trip is then the identity and
    redaction a no-op, so the fields are encoded as they are, once. The sorted top-level keys
    split around ``hash`` (``action``..``correlation_id`` < ``hash`` < ``outcome``..
    ``timestamp``), so the hashed bytes and the line are joined from two encoded halves.
    """
    low = {
        "action": action,
        "actor": actor,
        "after": after,
        "before": before,
        "correlation_id": correlation_id,
    }
    high = {
        "outcome": outcome,
        "prev_hash": prev_hash,
        "run_id": run_id,
        "seq": seq,
        "source_id": source_id,
        "sys_id": sys_id,
        "table": table,
        "timestamp": timestamp,
    }
    scalars = (action, actor, correlation_id, outcome, prev_hash, run_id, seq, source_id)
    if (
        _JSON_SCALARS.issuperset(map(type, scalars))
        and type(sys_id) in _JSON_SCALARS
        and type(table) in _JSON_SCALARS
        and type(timestamp) in _JSON_SCALARS
        and plain_json(after)
        and plain_json(before)
    ):
        head = canonical(low)[:-1]
        tail = canonical(high)[1:]
        hashed = head + b"," + tail
        if not secrets.occurs_in_json(hashed):
            digest = hashlib.sha256(hashed).hexdigest()
            line = b"".join((head, b',"hash":"', digest.encode("ascii"), b'",', tail, b"\n"))
            low.update(high)
            low["hash"] = digest
            return low, line
    return _encode_entry_reference(low, high)


def _encode_entry_reference(
    low: dict[str, Any], high: dict[str, Any]
) -> tuple[dict[str, Any], bytes]:
    """The reference algorithm: redact, round-trip, chain, hash, encode."""
    prev_hash = high.pop("prev_hash")
    body = redact({**low, **high})
    # Round-trip once so the hash covers exactly what a reader will parse back.
    body = orjson.loads(canonical(body))
    body["prev_hash"] = prev_hash
    body["hash"] = entry_hash(body)
    return body, canonical(body) + b"\n"


def checkpoint_mac(checkpoint: Mapping[str, Any], key: bytes) -> str:
    """HMAC-SHA256 over the canonical checkpoint without its ``hmac`` field."""
    body = {k: v for k, v in checkpoint.items() if k != "hmac"}
    return hmac.new(key, canonical(body), hashlib.sha256).hexdigest()


def key_bytes(key: bytes | str | SecretStr) -> bytes:
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
    """The HMAC key: ``$SNOWKIT_AUDIT_KEY``, else the 1Password reference in
    ``$SNOWKIT_AUDIT_KEY_OP_REF`` (read with ``op``: a key kept away from the trail's host, as
    the docs advise; it had been ignored), else the key file (generated 0600 if ``create``)."""
    environ = os.environ if env is None else env
    value = environ.get(KEY_ENV)
    if value:
        secrets.register(value)
        return value.encode("utf-8")
    reference = environ.get(KEY_ENV + "_OP_REF")
    if reference:
        from snowkit.credentials import CredentialManager  # the one `op` reader

        secret = CredentialManager(env=environ).read_op(reference)
        return key_bytes(secret)
    path = Path(key_file) if key_file else default_key_file()
    if not path.exists():
        if not create:
            raise AuditError(
                f"no audit key: set {KEY_ENV} or pass --key-file (looked for {path}). "
                "Use the same key that wrote the trail."
            )
        _create_key_file(path)
    text = path.read_text().strip()
    if not text:  # signing with an empty key would let anyone forge every checkpoint
        raise AuditError(
            f"the audit key file {path} is empty: restore the key from a backup (a trail it "
            "signed cannot be verified without it), or, if no trail was written with it yet, "
            f"delete the file and a new key is made (or set {KEY_ENV})"
        )
    secrets.register(text)
    return text.encode("utf-8")


def _create_key_file(path: Path) -> None:
    """A new random key, 0600, that appears whole or not at all: written to a temp file and
    linked into place (a crash between creating the file and writing it had left it empty).
    Two processes racing: the one that links second reads the first one's key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(os.urandom(32).hex())
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


# ---------------------------------------------------------------------- segments


def audit_segments(path: str | os.PathLike[str]) -> list[Path]:
    """The trail's files oldest first: ``audit.jsonl.1``, ``.2``, ... then ``audit.jsonl``."""
    current = Path(path)
    numbered: list[tuple[int, Path]] = []
    if current.parent.exists():
        for candidate in current.parent.iterdir():
            match = SEGMENT_NAME.match(candidate.name)
            if match and match.group("base") == current.name:
                numbered.append((int(match.group("n")), candidate))
    ordered = [p for _, p in sorted(numbered)]
    if current.exists():
        ordered.append(current)
    return ordered


def split_lines(data: bytes) -> tuple[list[bytes], bytes | None]:
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
        lines, _partial = split_lines(segment.read_bytes())
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


__all__ = [
    "GENESIS_HASH",
    "KEY_ENV",
    "SEGMENT_NAME",
    "AuditError",
    "IncompleteAuditLineError",
    "audit_segments",
    "canonical",
    "checkpoint_mac",
    "default_key_file",
    "encode_entry",
    "entry_hash",
    "key_bytes",
    "load_audit_key",
    "read_audit",
    "split_lines",
]
