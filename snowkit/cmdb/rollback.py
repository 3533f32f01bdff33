"""Undo a load from the audit trail's before-images.

Every write the sync engine makes is audited with what the record looked like before. Rolling
a run back walks that run's entries newest first: what it created is deleted, fields it changed
are put back to their before values, records it deleted are recreated (with their sys_id, so
references to them hold again). Each step first reads the current state and skips what is
already as it should be, so a rollback can be rerun safely (after a crash, or twice by mistake).
Rollback writes are themselves audited (``rollback_delete``, ``rollback_update``,
``rollback_create``) under the rolled-back run's id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snowkit.cmdb.outbox import is_unreachable_error
from snowkit.ops.audit import read_audit

UNDOABLE = frozenset({"create", "update", "delete"})


@dataclass
class RollbackResult:
    """What a rollback did; ``failed`` lists entries it could not undo (with why)."""

    run_id: str
    entries: int = 0
    deleted: int = 0
    restored: int = 0
    recreated: int = 0
    skipped: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "entries": self.entries,
            "deleted": self.deleted,
            "restored": self.restored,
            "recreated": self.recreated,
            "skipped": self.skipped,
            "failed": list(self.failed),
            "ok": self.ok,
        }


class NothingToRollBackError(LookupError):
    """The audit trail holds no write for that run id."""


def run_entries(run_id: str, audit_path: Path | str | None = None) -> list[dict[str, Any]]:
    """The run's successful writes, in the order they were made."""
    return [
        e
        for e in read_audit(audit_path, run_id=run_id)
        if e.get("action") in UNDOABLE and e.get("outcome", "success") == "success"
    ]


def rollback(
    client: Any,
    run_id: str,
    *,
    audit: Any = None,
    audit_path: Path | str | None = None,
    entries: Iterable[dict[str, Any]] | None = None,
) -> RollbackResult:
    """Put the CMDB back as it was before ``run_id``; see the module docstring."""
    todo = list(entries) if entries is not None else run_entries(run_id, audit_path)
    if not todo:
        raise NothingToRollBackError(
            f"the audit trail has no writes for run {run_id}; check the id with "
            "`snowkit audit` or look under .snowkit/runs/"
        )
    result = RollbackResult(run_id=run_id, entries=len(todo))
    for entry in sorted(todo, key=lambda e: e.get("seq", 0), reverse=True):
        try:
            _undo(client, entry, result, audit, run_id)
        except Exception as exc:
            if is_unreachable_error(exc):
                raise
            result.failed.append(
                {
                    "seq": entry.get("seq"),
                    "action": entry.get("action"),
                    "table": entry.get("table"),
                    "sys_id": entry.get("sys_id"),
                    "error": f"{type(exc).__name__}: {exc}",
                }
            )
    return result


def _undo(client: Any, entry: dict[str, Any], result: RollbackResult, audit: Any, run_id: str):
    action, table, sys_id = entry["action"], entry["table"], entry.get("sys_id")
    before = entry.get("before") or {}
    if not sys_id:
        result.skipped += 1
        return
    if action == "create":
        current = client.get(table, sys_id)
        if current is None:
            result.skipped += 1
            return
        client.delete(table, sys_id, before=_plain(current))
        result.deleted += 1
        _record(audit, "rollback_delete", table, sys_id, entry, _plain(current), None, run_id)
    elif action == "update":
        if not before:
            result.skipped += 1
            return
        current = client.get(table, sys_id, fields=["sys_id", *before])
        if current is None:
            raise LookupError(f"{table}/{sys_id} no longer exists; cannot restore its fields")
        now = {k: _str(current.get(k)) for k in before}
        if now == {k: _str(v) for k, v in before.items()}:
            result.skipped += 1
            return
        client.update(table, sys_id, dict(before), before=now)
        result.restored += 1
        _record(audit, "rollback_update", table, sys_id, entry, now, dict(before), run_id)
    elif action == "delete":
        if client.get(table, sys_id) is not None:
            result.skipped += 1
            return
        values = {k: v for k, v in before.items() if not k.startswith("sys_") or k == "sys_id"}
        values["sys_id"] = sys_id
        client.create(table, values, source_id=entry.get("source_id"))
        result.recreated += 1
        _record(audit, "rollback_create", table, sys_id, entry, None, values, run_id)


def _record(
    audit: Any,
    action: str,
    table: str,
    sys_id: str,
    entry: dict[str, Any],
    before: dict | None,
    after: dict | None,
    run_id: str,
) -> None:
    if audit is not None:
        audit.record(
            action,
            table,
            sys_id,
            source_id=entry.get("source_id"),
            before=before,
            after=after,
            run_id=run_id,
        )


def _plain(record: dict[str, Any]) -> dict[str, str]:
    return {k: _str(v) for k, v in record.items()}


def _str(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("value", "")
    return "" if value is None else str(value)
