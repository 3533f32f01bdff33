"""Undo a load from the audit trail's before-images.

Every write the sync engine makes is audited with what the record looked like before. Rolling
a run back walks that run's entries newest first: what it created is deleted, fields it changed
are put back to their before values, records it deleted are recreated (with their sys_id, so
references to them hold again). Each chunk first reads the current state and skips what is
already as it should be, so a rollback can be rerun safely (after a crash, or twice by mistake).
Rollback writes are themselves audited (``rollback_delete``, ``rollback_update``,
``rollback_create``) under the rolled-back run's id.

What it will not do silently:

- **Overwrite a later change.** A record whose fields the run wrote now hold a value the run
  never left there (someone edited it, or a later load changed it) is a *conflict*. All
  records are checked before anything is undone, and with a conflict nothing is: the
  conflicts are listed (a half-undone run, its CIs kept and their location deleted, would be
  worse than either state). Roll the later runs back first (newest first), or ``force`` it.
  A record the run created and nobody touched since (``sys_mod_count`` 0) is never one.
- **Write what it does not know.** An update audited without a before-image (a queued create
  that found its record on replay before that was recorded, a create IRE matched to an
  existing CI) and a before value the audit trail masked (it contained a secret) cannot be
  restored: listed as *unrestorable*, the rest of the record is restored.

Either makes the result not ``ok``: the CMDB is not exactly as before the run.

What it leaves on purpose: the ``core_company`` records a load created for vendor names
(``snowkit.cmdb.companies``). Records outside the run (other loads, other sources, people) may
point at them by then, and a company is harmless where nothing does; they are listed in
``kept`` and said so in ``notes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from snowkit.cmdb.companies import COMPANY_TABLE
from snowkit.cmdb.fields import as_str
from snowkit.cmdb.outbox import is_unreachable_error
from snowkit.ops.audit import read_audit
from snowkit.ops.redaction import MASK
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
    #: records changed since the run (left alone unless forced): table, sys_id, fields
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    #: what the audit trail does not hold well enough to put back: table, sys_id, why
    unrestorable: list[dict[str, Any]] = field(default_factory=list)
    #: records the run created that are left in place on purpose (companies): table, sys_id
    kept: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.conflicts or self.unrestorable)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "entries": self.entries,
            "deleted": self.deleted,
            "restored": self.restored,
            "recreated": self.recreated,
            "skipped": self.skipped,
            "failed": list(self.failed),
            "conflicts": list(self.conflicts),
            "unrestorable": list(self.unrestorable),
            "kept": list(self.kept),
            "notes": list(self.notes),
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
    force: bool = False,
) -> RollbackResult:
    """Put the CMDB back as it was before ``run_id``; see the module docstring.

    Entries are undone newest first, in chunks: one ``sys_idIN`` read per table and chunk tells
    what still needs undoing, and the deletes, restores and recreations go through the Batch
    API, so undoing a 5,000-CI load takes a few hundred requests rather than tens of thousands.
    ``force``: undo records changed since the run as well (their later changes are lost).
    """
    todo = list(entries) if entries is not None else run_entries(run_id, audit_path)
    if not todo:
        raise NothingToRollBackError(
            f"the audit trail has no writes for run {run_id}; check the id with "
            "`snowkit audit` or look under .snowkit/runs/"
        )
    result = RollbackResult(run_id=run_id, entries=len(todo))
    todo = _leave_companies(todo, result)
    undo = _Undo(client, result, audit, todo)
    newest_first = sorted(todo, key=lambda e: e.get("seq", 0), reverse=True)
    if not force and undo.find_conflicts(newest_first, chunk_size):
        return undo.result  # nothing undone: see the module docstring
    for chunk in _chunks(newest_first, chunk_size):
        try:
            undo.chunk(chunk)
        except Exception as exc:
            if is_unreachable_error(exc):
                raise
            for entry in chunk:
                _failed(undo.result, entry, f"{type(exc).__name__}: {exc}")
    return undo.result


def _leave_companies(entries: list[dict[str, Any]], result: RollbackResult) -> list[dict[str, Any]]:
    """The entries to undo: all but the companies created for vendor names (kept, noted)."""
    rest = []
    for entry in entries:
        if entry.get("table") == COMPANY_TABLE and entry.get("action") == "create":
            result.kept.append({"table": COMPANY_TABLE, "sys_id": entry.get("sys_id"),
                                "name": (entry.get("after") or {}).get("name")})  # fmt: skip
        else:
            rest.append(entry)
    if result.kept:
        names = ", ".join(sorted(str(k["name"]) for k in result.kept))
        result.notes.append(
            f"{len(result.kept)} {COMPANY_TABLE} record(s) the run created as manufacturers are "
            f"left in place ({names}): other records may point at them; delete them by hand "
            "if nothing does"
        )
    return rest


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


_Key = tuple[str, str]


class _Undo:
    """One rollback, and what the run left in each record it touched (to tell a record
    changed since the run from one still as the run, or a half-done rollback, left it)."""

    def __init__(
        self, client: Any, result: RollbackResult, audit: Any, entries: list[dict[str, Any]]
    ) -> None:
        self.client = client
        self.result = result
        self.audit = audit
        #: per record and field, every value the run's writes left or found there: anything
        #: else in it now was written by someone after the run
        self.known: dict[_Key, dict[str, set[str]]] = {}
        self.created: set[_Key] = set()
        for entry in entries:
            key = (entry.get("table") or "", entry.get("sys_id") or "")
            values = self.known.setdefault(key, {})
            for image in (entry.get("before"), entry.get("after")):
                for fld, value in (image or {}).items():
                    if not fld.startswith("sys_"):
                        values.setdefault(fld, set()).add(as_str(value))
            if entry["action"] == "create":
                self.created.add(key)
        #: records read by :meth:`find_conflicts` and not undone since (None: not there)
        self._read: dict[_Key, dict[str, Any] | None] = {}

    def find_conflicts(self, newest_first: list[dict[str, Any]], chunk_size: int) -> bool:
        """Read every record the run touched; list those changed since (see
        :meth:`_changed_fields`). True when there is any."""
        newest: dict[_Key, dict[str, Any]] = {}
        for entry in newest_first:
            if entry.get("sys_id"):
                newest.setdefault((entry["table"], entry["sys_id"]), entry)
        entries = list(newest.values())
        for start in range(0, len(entries), chunk_size):
            chunk = entries[start : start + chunk_size]
            current = self._current(chunk)
            for entry in chunk:
                key = (entry["table"], entry["sys_id"])
                row = self._read[key] = current.get(key)
                changed = self._changed_fields(key, row) if row is not None else []
                if changed:
                    self.result.conflicts.append(
                        {
                            "table": entry["table"],
                            "sys_id": entry["sys_id"],
                            "source_id": entry.get("source_id"),
                            "fields": changed,
                        }
                    )
        return bool(self.result.conflicts)

    def _changed_fields(self, key: _Key, row: dict[str, Any]) -> list[str]:
        """The fields of ``row`` holding a value none of the run's writes left or found there
        (a record the run created that nobody touched since has none)."""
        if key in self.created and as_str(row.get("sys_mod_count")) == "0":
            return []
        return sorted(
            fld
            for fld, values in self.known[key].items()
            if fld in row and as_str(row[fld]) not in values
        )

    def chunk(self, chunk: list[dict[str, Any]]) -> None:
        action = chunk[0]["action"]
        result = self.result
        todo = []
        for entry in chunk:
            key = (entry.get("table") or "", entry.get("sys_id") or "")
            if not entry.get("sys_id"):
                result.skipped += 1
                continue
            if action == "update" and not entry.get("before"):
                if key not in self.created:  # else deleting the created record undoes it
                    _unrestorable(result, entry, "the audit trail holds no before-image")
                else:
                    result.skipped += 1
                continue
            todo.append(entry)
        current = self._current(todo)
        requests, planned = [], []
        for entry in todo:
            key = (entry["table"], entry["sys_id"])
            request, was, now = self._request(action, entry, current.get(key))
            if request is None:
                continue
            requests.append(replace(request, id=str(len(requests) + 1)))
            planned.append((entry, was, now))
        if requests:
            self._send(action, requests, planned)

    def _request(
        self, action: str, entry: dict[str, Any], row: dict[str, Any] | None
    ) -> tuple[BatchRequest | None, dict[str, str] | None, dict[str, str] | None]:
        """The request undoing ``entry`` (None: nothing to do), the record as it is, and
        the values it gets back."""
        result, table, sys_id = self.result, entry["table"], entry["sys_id"]
        if action == "delete":
            if row is not None:
                result.skipped += 1  # already back
                return None, None, None
            values = self._restorable(entry, _recreated_values(entry))
            url = f"/api/now/table/{table}?sysparm_fields=sys_id"
            return BatchRequest("POST", url, body=values, table=table,
                                source_id=entry.get("source_id")), None, values  # fmt: skip
        if action == "create":
            if row is None:
                result.skipped += 1
                return None, None, None
            url = f"/api/now/table/{table}/{sys_id}"
            return BatchRequest("DELETE", url), _plain(row), None
        if row is None:
            _failed(result, entry, "the record no longer exists; cannot restore its fields")
            return None, None, None
        before = self._restorable(entry, {k: as_str(v) for k, v in entry["before"].items()})
        now = {k: as_str(row.get(k)) for k in before}
        if now == before:
            result.skipped += 1
            return None, None, None
        url = f"/api/now/table/{table}/{sys_id}?sysparm_fields=sys_id"
        return BatchRequest("PATCH", url, body=before), now, before

    def _restorable(self, entry: dict[str, Any], values: dict[str, str]) -> dict[str, str]:
        """``values`` without those the audit trail masked (writing ``***`` back would
        corrupt the record); those are listed as unrestorable."""
        masked = sorted(k for k, v in values.items() if MASK in v)
        if masked:
            _unrestorable(
                self.result,
                entry,
                "masked in the audit trail (the value contained a secret): " + ", ".join(masked),
            )
        return {k: v for k, v in values.items() if k not in masked}

    def _send(
        self,
        action: str,
        requests: list[BatchRequest],
        planned: list[tuple[dict[str, Any], dict[str, str] | None, dict[str, str] | None]],
    ) -> None:
        result, run_id = self.result, self.result.run_id
        outcomes = self.client.batch(requests)
        for (entry, was, now), outcome in zip(planned, outcomes, strict=True):
            table, sys_id = entry["table"], entry["sys_id"]
            if action == "create" and outcome.status_code == 404:
                result.skipped += 1  # gone meanwhile: nothing to undo
            elif not outcome.ok:
                _failed(result, entry, outcome.error_message or f"HTTP {outcome.status_code}")
            elif action == "delete":
                result.recreated += 1
                _record(self.audit, "rollback_create", table, sys_id, entry, None, now, run_id)
            elif action == "create":
                result.deleted += 1
                _record(self.audit, "rollback_delete", table, sys_id, entry, was, None, run_id)
            else:
                result.restored += 1
                _record(self.audit, "rollback_update", table, sys_id, entry, was, now, run_id)

    def _current(self, entries: list[dict[str, Any]]) -> dict[_Key, dict[str, Any]]:
        """The records the entries touch, as they are now (one query per table): the fields
        the run wrote or found, and ``sys_mod_count``. A record the conflict check read and
        nothing undid since is taken from that read."""
        by_table: dict[str, set[str]] = {}
        out: dict[_Key, dict[str, Any]] = {}
        for entry in entries:
            key = (entry["table"], entry["sys_id"])
            if key in self._read:
                row = self._read.pop(key)
                if row is not None:
                    out[key] = row
                continue
            by_table.setdefault(entry["table"], set()).add(entry["sys_id"])
        for table, ids in by_table.items():
            fields = {"sys_id", "sys_mod_count"}
            for sys_id in ids:
                fields.update(self.known.get((table, sys_id), {}))
            query = Query().in_("sys_id", sorted(ids))
            rows = self.client.query(table, query, fields=sorted(fields), page_size=len(ids) + 1)
            for row in rows:
                out[(table, as_str(row.get("sys_id")))] = row
        return out


def _recreated_values(entry: dict[str, Any]) -> dict[str, str]:
    """The before-image of a deleted record, with its sys_id (so references to it hold again)
    and without the system fields the instance sets itself."""
    before = entry.get("before") or {}
    values = {k: as_str(v) for k, v in before.items() if not k.startswith("sys_")}
    values["sys_id"] = entry["sys_id"]
    return values


def _unrestorable(result: RollbackResult, entry: dict[str, Any], why: str) -> None:
    result.unrestorable.append(
        {
            "seq": entry.get("seq"),
            "action": entry.get("action"),
            "table": entry.get("table"),
            "sys_id": entry.get("sys_id"),
            "source_id": entry.get("source_id"),
            "why": why,
        }
    )


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
