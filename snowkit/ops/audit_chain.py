"""The audit trail's on-disk format, shared by the writer and the verifier.

Canonical bytes, the entry hash, the checkpoint HMAC, the key, the rotated segments and a
tolerant reader live here, so ``audit.py`` (append) and ``audit_verify.py`` (check) cannot drift
apart on what a valid line is. The format itself is described in :mod:`snowkit.ops.audit`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr

from snowkit import paths
from snowkit.ops.redaction import secrets

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
    "entry_hash",
    "key_bytes",
    "load_audit_key",
    "read_audit",
    "split_lines",
]
