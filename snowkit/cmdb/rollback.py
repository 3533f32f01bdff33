"""Undo a load from the audit trail's before-images.

Every write the sync engine makes is audited with what the record looked like before. Rolling
a run back walks that run's entries newest first: what it created is deleted, fields it changed
are put back to their before values, records it deleted are recreated (with their sys_id, so
references to them hold again). Each chunk first reads the current state and skips what is
already as it should be, so a rollback can be rerun safely (after a crash, or twice by mistake).
Rollback writes are themselves audited (``rollback_delete``, ``rollback_update``,
``rollback_create``) under the rolled-back run's id.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snowkit.cmdb.fields import as_str
from snowkit.cmdb.outbox import is_unreachable_error
from snowkit.ops.audit import read_audit
from snowkit.servicenow.batch import BatchRequest
from snowkit.servicenow.query import Query

UNDOABLE = frozenset({"create", "update", "delete"})
#: Outcomes of writes that landed: ``recovered`` is a write a crashed run committed and the
#: next run found and audited (``snowkit.cmdb.intents``).
LANDED = frozenset({"success", "recovered"})


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
        if e.get("action") in UNDOABLE and e.get("outcome", "success") in LANDED
    ]


def rollback(
    client: Any,
    run_id: str,
    *,
    audit: Any = None,
    audit_path: Path | str | None = None,
    entries: Iterable[dict[str, Any]] | None = None,
    chunk_size: int = 100,
) -> RollbackResult:
    """Put the CMDB back as it was before ``run_id``; see the module docstring.

    Entries are undone newest first, in chunks: one ``sys_idIN`` read per table and chunk tells
    what still needs undoing, and the deletes, restores and recreations go through the Batch
    API, so undoing a 5,000-CI load takes a few hundred requests rather than tens of thousands.
    """
    todo = list(entries) if entries is not None else run_entries(run_id, audit_path)
    if not todo:
        raise NothingToRollBackError(
            f"the audit trail has no writes for run {run_id}; check the id with "
            "`snowkit audit` or look under .snowkit/runs/"
        )
    result = RollbackResult(run_id=run_id, entries=len(todo))
    newest_first = sorted(todo, key=lambda e: e.get("seq", 0), reverse=True)
    for chunk in _chunks(newest_first, chunk_size):
        try:
            _undo_chunk(client, chunk, result, audit, run_id)
        except Exception as exc:
            if is_unreachable_error(exc):
                raise
            for entry in chunk:
                _failed(result, entry, f"{type(exc).__name__}: {exc}")
    return result


def _chunks(entries: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """Runs of one action, at most ``size`` long, never touching one record twice (so a batch
    never holds two restores of the same record whose order would matter)."""
    chunk: list[dict[str, Any]] = []
    seen: set[str] = set()
    for entry in entries:
        key = f"{entry.get('table')}/{entry.get('sys_id')}"
        if chunk and (len(chunk) >= size or key in seen or entry["action"] != chunk[0]["action"]):
            yield chunk
            chunk, seen = [], set()
        chunk.append(entry)
        seen.add(key)
    if chunk:
        yield chunk


def _undo_chunk(
    client: Any, chunk: list[dict[str, Any]], result: RollbackResult, audit: Any, run_id: str
) -> None:
    action = chunk[0]["action"]
    todo = [e for e in chunk if e.get("sys_id") and (action != "update" or e.get("before"))]
    result.skipped += len(chunk) - len(todo)
    current = _current(client, todo, action)
    requests, planned = [], []
    for entry in todo:
        row = current.get((entry["table"], entry["sys_id"]))
        if action == "delete":
            if row is not None:
                result.skipped += 1  # already back
                continue
            values = _recreated_values(entry)
            url = f"/api/now/table/{entry['table']}?sysparm_fields=sys_id"
            requests.append(
                BatchRequest(
                    "POST",
                    url,
                    body=values,
                    id=str(len(requests) + 1),
                    table=entry["table"],
                    source_id=entry.get("source_id"),
                )
            )
            planned.append((entry, None, values))
            continue
        if action == "create":
            if row is None:
                result.skipped += 1
                continue
            url = f"/api/now/table/{entry['table']}/{entry['sys_id']}"
            requests.append(BatchRequest("DELETE", url, id=str(len(requests) + 1)))
            planned.append((entry, _plain(row), None))
            continue
        before = {k: as_str(v) for k, v in entry["before"].items()}
        if row is None:
            _failed(result, entry, "the record no longer exists; cannot restore its fields")
            continue
        now = {k: as_str(row.get(k)) for k in before}
        if now == before:
            result.skipped += 1
            continue
        url = f"/api/now/table/{entry['table']}/{entry['sys_id']}?sysparm_fields=sys_id"
        requests.append(BatchRequest("PATCH", url, body=before, id=str(len(requests) + 1)))
        planned.append((entry, now, before))
    if not requests:
        return
    outcomes = client.batch(requests)
    for (entry, was, now), outcome in zip(planned, outcomes, strict=True):
        if action == "create" and outcome.status_code == 404:
            result.skipped += 1  # gone meanwhile: nothing to undo
        elif not outcome.ok:
            _failed(result, entry, outcome.error_message or f"HTTP {outcome.status_code}")
        elif action == "delete":
            result.recreated += 1
            _record(audit, "rollback_create", entry["table"], entry["sys_id"], entry, None, now,
                    run_id)  # fmt: skip
        elif action == "create":
            result.deleted += 1
            _record(audit, "rollback_delete", entry["table"], entry["sys_id"], entry, was, None,
                    run_id)  # fmt: skip
        else:
            result.restored += 1
            _record(audit, "rollback_update", entry["table"], entry["sys_id"], entry, was, now,
                    run_id)  # fmt: skip


def _current(
    client: Any, entries: list[dict[str, Any]], action: str
) -> dict[tuple[str, str], dict[str, Any]]:
    """The records the entries touch, as they are now (one query per table; only sys_id when
    all that matters is whether they exist)."""
    by_table: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_table.setdefault(entry["table"], []).append(entry)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for table, group in by_table.items():
        ids = sorted({e["sys_id"] for e in group})
        fields = ["sys_id"] if action == "delete" else None
        if action == "update":
            fields = sorted({"sys_id", *(k for e in group for k in e["before"])})
        query = Query().in_("sys_id", ids)
        for row in client.query(table, query, fields=fields, page_size=len(ids) + 1):
            out[(table, as_str(row.get("sys_id")))] = row
    return out


def _recreated_values(entry: dict[str, Any]) -> dict[str, str]:
    """The before-image of a deleted record, with its sys_id (so references to it hold again)
    and without the system fields the instance sets itself."""
    before = entry.get("before") or {}
    values = {k: as_str(v) for k, v in before.items() if not k.startswith("sys_")}
    values["sys_id"] = entry["sys_id"]
    return values


def _failed(result: RollbackResult, entry: dict[str, Any], error: str) -> None:
    result.failed.append(
        {
            "seq": entry.get("seq"),
            "action": entry.get("action"),
            "table": entry.get("table"),
            "sys_id": entry.get("sys_id"),
            "error": error,
        }
    )


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
    return {k: as_str(v) for k, v in record.items()}
