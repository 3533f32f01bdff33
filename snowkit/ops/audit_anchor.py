"""The external anchor: the latest signed checkpoint, copied out of the trail after each one.

A hash chain with signed checkpoints proves that what is in the file was not altered, but not
that nothing was cut off its end: a trail cut right after a checkpoint line is a shorter trail
that verifies. The anchor is a small JSON document (``anchor.json``), replaced atomically after
every checkpoint reaches the disk, naming that checkpoint (segment, seq, entry count, chain head,
checkpoint HMAC, time) and signed with the same key. A trail whose anchored checkpoint is gone is
truncated. It lives apart from the trail so it can sit on other storage, or be shipped elsewhere
(a ticket, an object store with retention), out of reach of whoever can rewrite the trail.

The invariant both sides rely on: the anchor is written only after the checkpoint it names is
durable in the trail, so the trail may be *ahead* of its anchor (a crash between the two writes,
or an anchor write that failed) but never *behind* it.

Why our own: it is one signed JSON object and an ``os.replace``; no library is needed.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from snowkit import paths
from snowkit.files import write_atomic
from snowkit.ops.audit_chain import AuditError, canonical, checkpoint_mac

ANCHOR_ENV = "SNOWKIT_AUDIT_ANCHOR"
ANCHOR_VERSION = 1
#: Fields every anchor carries (besides ``hmac``); a document lacking one is not an anchor.
ANCHOR_FIELDS = (
    "type",
    "version",
    "trail",
    "origin",
    "segment",
    "seq",
    "entries",
    "covers_hash",
    "checkpoint_hmac",
    "checkpoint_timestamp",
    "reason",
    "timestamp",
)


class AnchorUnavailableError(AuditError):
    """The anchor's storage cannot be read (unmounted, no permission): no evidence either way."""


def default_anchor_path(
    trail: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> Path:
    """Where a trail's anchor lives unless told otherwise.

    ``$SNOWKIT_AUDIT_ANCHOR`` if set (one anchor per trail: point it at other storage); else
    ``<state dir>/audit/anchor.json`` for the default trail, and ``<trail>.anchor.json`` next to
    any other trail, so two trails never overwrite each other's anchor.
    """
    environ = os.environ if env is None else env
    configured = environ.get(ANCHOR_ENV)
    if configured:
        return Path(configured).expanduser()
    default_trail = paths.audit_path()
    target = Path(trail) if trail is not None else default_trail
    if target.resolve() == default_trail.resolve():
        return default_trail.with_name("anchor.json")
    return target.with_name(f"{target.name}.anchor.json")


def anchor_mac(anchor: Mapping[str, Any], key: bytes) -> str:
    """HMAC-SHA256 over the canonical anchor without its ``hmac`` (``type`` keeps it apart from
    a checkpoint's MAC)."""
    return checkpoint_mac(anchor, key)


def build_anchor(
    checkpoint: Mapping[str, Any],
    *,
    trail: Path,
    segment: str,
    origin: str | None,
    key: bytes,
) -> dict[str, Any]:
    """The signed anchor document for a checkpoint just made durable in ``segment``."""
    body: dict[str, Any] = {
        "type": "anchor",
        "version": ANCHOR_VERSION,
        "trail": str(trail),
        "origin": origin,
        "segment": segment,
        "seq": checkpoint["seq"],
        "entries": checkpoint["seq"],
        "covers_hash": checkpoint["covers_hash"],
        "checkpoint_hmac": checkpoint["hmac"],
        "checkpoint_timestamp": checkpoint["timestamp"],
        "reason": checkpoint["reason"],
        "timestamp": datetime.now(UTC).isoformat(),
    }
    body["hmac"] = anchor_mac(body, key)
    return body


def write_anchor(path: Path, anchor: Mapping[str, Any], *, fsync: bool) -> None:
    """Replace the anchor file in one step (readers see the old or the new one, never half).

    The bytes are fsynced before the rename (a power cut must not leave an empty anchor, which
    would read as forged), but the directory is not: if the rename is lost, the old anchor
    stays, one checkpoint behind the trail, which verification accepts. That saves about a
    third of the cost of each anchor write.
    """
    write_atomic(path, canonical(anchor) + b"\n", fsync=fsync)


def read_anchor(path: Path) -> dict[str, Any] | None:
    """The anchor document, or None when there is none.

    Raises :class:`AnchorUnavailableError` when its storage cannot be read, and
    :class:`AuditError` when the file is not an anchor (it is written atomically, so a crash
    cannot explain that).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AnchorUnavailableError(
            f"cannot read the audit anchor {path}: {exc.strerror or exc}"
        ) from None
    try:
        anchor = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise AuditError(f"the audit anchor {path} is not valid JSON") from None
    if not isinstance(anchor, dict) or anchor.get("type") != "anchor":
        raise AuditError(f'{path} is not an audit anchor (no "type": "anchor")')
    missing = [name for name in (*ANCHOR_FIELDS, "hmac") if name not in anchor]
    if missing:
        raise AuditError(f"the audit anchor {path} lacks {', '.join(missing)}")
    if not isinstance(anchor["seq"], int) or not isinstance(anchor["hmac"], str):
        raise AuditError(f"the audit anchor {path} has a malformed seq or hmac")
    return anchor


def anchor_signature_ok(anchor: Mapping[str, Any], key: bytes) -> bool:
    return hmac.compare_digest(anchor_mac(anchor, key), str(anchor.get("hmac")))


def behind_anchor_reason(
    anchor: Mapping[str, Any],
    key: bytes,
    last_checkpoint: Mapping[str, Any] | None,
    origin: str | None,
) -> str | None:
    """Why a writer must not append (None: it may).

    Cheap, from the trail's last checkpoint only (the verifier checks fully). Appending after a
    trail that is behind its anchor would overwrite the anchor and erase the evidence of the
    cut, so the writer refuses instead.
    """
    if not anchor_signature_ok(anchor, key):
        return "the anchor does not verify with this key (forged, edited, or another key)"
    if origin is not None and anchor.get("origin") not in (None, origin):
        return "the anchor belongs to another trail (its first entry differs)"
    anchored_seq = int(anchor["seq"])
    if last_checkpoint is None:
        return f"the anchor records a checkpoint at seq {anchored_seq} but the trail has none"
    last_seq = int(last_checkpoint.get("seq", 0))
    if anchored_seq > last_seq:
        return (
            f"the anchor records a checkpoint at seq {anchored_seq} but the trail's last "
            f"checkpoint seals seq {last_seq} (the trail was cut)"
        )
    if anchored_seq == last_seq and anchor.get("checkpoint_hmac") not in (
        last_checkpoint.get("hmac"),
        last_checkpoint.get("prev_hmac"),
    ):
        return (
            f"the anchored checkpoint at seq {anchored_seq} is neither the trail's last "
            "checkpoint nor the one before it (a later checkpoint was cut, or the trail replaced)"
        )
    return None


def fsync_dir(directory: Path) -> None:
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


__all__ = [
    "ANCHOR_ENV",
    "ANCHOR_FIELDS",
    "ANCHOR_VERSION",
    "AnchorUnavailableError",
    "anchor_mac",
    "anchor_signature_ok",
    "behind_anchor_reason",
    "build_anchor",
    "default_anchor_path",
    "read_anchor",
    "write_anchor",
]
