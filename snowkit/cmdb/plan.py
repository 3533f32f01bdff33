"""The plan: what a load would change in the CMDB, computed before anything is written.

Matching and diffing are pure functions over the transformed records and a snapshot of what
the CMDB holds (``CMDBSnapshot``), so a dry run, a test and a real run all see the same plan.
Reading the snapshot (``read_snapshot``) is the only part that talks to the instance.

Matching order for a record: its ``u_unifi_source_id``; then, for CIs without one, the
hardware identification order serial number → name → MAC address against CIs that carry no
source id yet (an existing CI is adopted rather than duplicated). Locations match by source id,
then by name. Plan rows keep only what is needed to write (a few short strings and the changed
values) so 50,000 CIs stay small.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pandas as pd

from snowkit.servicenow.query import Query

SOURCE_ID_FIELD = "u_unifi_source_id"
LOCATION_TABLE = "cmn_location"
CI_TABLE = "cmdb_ci"
IDENTIFICATION_ORDER: tuple[str, ...] = ("serial_number", "name", "mac_address")
#: Fields never diffed: the class is noted as a class change instead of updated in place.
_NOT_DIFFED = frozenset({"sys_class_name", "sys_id", SOURCE_ID_FIELD})
#: Values written when an unseen CI is retired (opt-in): Retired / Retired.
RETIRE_VALUES: dict[str, str] = {"operational_status": "6", "install_status": "7"}

CREATE = "create"
UPDATE = "update"
NO_CHANGE = "no_change"
NOT_SEEN = "not_seen"
RETIRE = "retire"
ACTIONS: tuple[str, ...] = (CREATE, UPDATE, NO_CHANGE, NOT_SEEN, RETIRE)


class RecordLike(Protocol):
    """What the planner needs of ``snowkit.cmdb.transform.CMDBRecord``."""

    table: str
    source_id: str
    values: dict[str, str]
    kind: str


class QueryClient(Protocol):
    def query(
        self, table: str, query: Any = "", fields: Any = None, **kw: Any
    ) -> Iterator[dict]: ...


def record_references(record: Any) -> dict[str, str]:
    """A record's reference fields (field → target source id); empty if it has none."""
    refs = getattr(record, "references", None)
    return dict(refs) if refs else {}


@dataclass(slots=True)
class PlanItem:
    """One record's fate. ``values`` is what to send: every field for a create, only the changed
    fields for an update. ``references`` (field → target source id) are resolved to sys_ids
    when the targets exist (at plan time if they already do, otherwise during apply)."""

    source_id: str
    table: str
    action: str
    kind: str = ""
    sys_id: str | None = None
    values: dict[str, str] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    before: dict[str, str] | None = None
    matched_by: str | None = None
    class_change: str | None = None  # the class the CMDB holds, when it differs

    @property
    def changed_fields(self) -> list[str]:
        return (
            sorted(set(self.values) | set(self.references))
            if self.action
            in (
                CREATE,
                UPDATE,
                RETIRE,
            )
            else []
        )


@dataclass(slots=True)
class CMDBSnapshot:
    """What the CMDB holds that may match this load.

    ``rows`` holds rows carrying a source id (keyed by it); ``candidates`` holds CIs without a
    source id that could be adopted (matched by identification fields); ``partial_tables``
    are class tables read through ``cmdb_ci`` (missing table), whose absent fields are not diffed.
    """

    rows: dict[str, dict[str, str]] = field(default_factory=dict)
    candidates: list[dict[str, str]] = field(default_factory=list)
    locations_by_name: dict[str, dict[str, str]] = field(default_factory=dict)
    partial_tables: set[str] = field(default_factory=set)


@dataclass
class Plan:
    """The ordered list of writes a load would make, plus what it noticed on the way."""

    items: list[PlanItem]
    notes: list[str] = field(default_factory=list)
    sys_ids: dict[str, str] = field(default_factory=dict)  # source id → sys_id already known
    relationships: list[Any] = field(default_factory=list)
    fallbacks: dict[str, str] = field(default_factory=dict)  # missing class table → table used
    records: dict[str, Any] = field(default_factory=dict, repr=False)  # source id → record
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def by_action(self, action: str) -> list[PlanItem]:
        return [i for i in self.items if i.action == action]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(ACTIONS, 0)
        for item in self.items:
            out[item.action] += 1
        return out

    def counts_by_table(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for item in self.items:
            row = out.setdefault(item.table, dict.fromkeys(ACTIONS, 0))
            row[item.action] += 1
        return out

    @property
    def writes(self) -> list[PlanItem]:
        return [i for i in self.items if i.action in (CREATE, UPDATE, RETIRE)]

    @property
    def class_changes(self) -> list[PlanItem]:
        return [i for i in self.items if i.class_change]

    @property
    def frame(self) -> pd.DataFrame:
        """One row per record: source_id, table, action, changed_fields, sys_id (+ matched_by,
        class_change)."""
        return pd.DataFrame(
            {
                "source_id": [i.source_id for i in self.items],
                "table": [i.table for i in self.items],
                "action": [i.action for i in self.items],
                "changed_fields": [",".join(i.changed_fields) for i in self.items],
                "sys_id": [i.sys_id for i in self.items],
                "matched_by": [i.matched_by for i in self.items],
                "class_change": [i.class_change for i in self.items],
            },
            columns=[
                "source_id",
                "table",
                "action",
                "changed_fields",
                "sys_id",
                "matched_by",
                "class_change",
            ],
        )


# --------------------------------------------------------------------------------------------
# Pure planning
# --------------------------------------------------------------------------------------------


def build_plan(
    records: Sequence[Any],
    snapshot: CMDBSnapshot,
    *,
    relationships: Sequence[Any] = (),
    retire_after_days: float | None = None,
    not_seen_since: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> Plan:
    """Match every record against the snapshot and diff it.

    ``not_seen_since`` maps source ids to the ISO time they were first missed; with
    ``retire_after_days`` set, CIs missed for longer than that are planned as ``retire``.
    """
    now = now or datetime.now(UTC)
    notes: list[str] = []
    items: list[PlanItem] = []
    known: dict[str, str] = {sid: row["sys_id"] for sid, row in snapshot.rows.items()}
    seen: set[str] = set()
    adopted: set[str] = set()
    candidate_index = _index_candidates(snapshot.candidates)
    unstored: dict[str, set[str]] = {}

    for record in records:
        sid = record.source_id
        if sid in seen:
            notes.append(f"duplicate source id {sid} in the input: kept the first")
            continue
        seen.add(sid)
        row = snapshot.rows.get(sid)
        matched_by = SOURCE_ID_FIELD if row is not None else None
        if row is None:
            row, matched_by = _identify(record, snapshot, candidate_index, adopted)
            if row is not None:
                adopted.add(row["sys_id"])
                known[sid] = row["sys_id"]
        items.append(_diff(record, row, matched_by, unstored, snapshot.partial_tables))

    # references whose target is known now: compare against the CMDB's value
    for item in items:
        _settle_references(item, known, snapshot.rows)

    for sid, row in snapshot.rows.items():
        if sid in seen:
            continue
        table = row.get("sys_class_name") or CI_TABLE
        missed = (not_seen_since or {}).get(sid)
        if retire_after_days is not None and missed is not None and table != LOCATION_TABLE:
            missed_at = datetime.fromisoformat(missed)
            if now - missed_at >= timedelta(days=retire_after_days) and any(
                row.get(k) != v for k, v in RETIRE_VALUES.items()
            ):
                items.append(
                    PlanItem(
                        sid,
                        table,
                        RETIRE,
                        sys_id=row["sys_id"],
                        values=dict(RETIRE_VALUES),
                        before={k: row.get(k, "") for k in RETIRE_VALUES},
                    )
                )
                continue
        items.append(PlanItem(sid, table, NOT_SEEN, sys_id=row["sys_id"]))

    for table, flds in sorted(unstored.items()):
        notes.append(
            f"{table} does not hold field(s) {', '.join(sorted(flds))} on this instance: "
            "their values are not stored (ask an admin to add them if they matter)"
        )
    class_changes = [i for i in items if i.class_change]
    if class_changes:
        notes.append(
            f"{len(class_changes)} CI(s) are held under another class than the transform chose "
            "(noted, not reclassified)"
        )
    return Plan(
        items=items,
        notes=notes,
        sys_ids=known,
        relationships=list(relationships),
        records={r.source_id: r for r in records},
    )


def _index_candidates(
    candidates: Iterable[dict[str, str]],
) -> dict[str, dict[str, list[dict[str, str]]]]:
    index: dict[str, dict[str, list[dict[str, str]]]] = {f: {} for f in IDENTIFICATION_ORDER}
    for row in candidates:
        for fld in IDENTIFICATION_ORDER:
            value = _norm(fld, row.get(fld, ""))
            if value:
                index[fld].setdefault(value, []).append(row)
    return index


def _norm(fld: str, value: str | None) -> str:
    value = (value or "").strip()
    if fld == "mac_address":
        return value.lower().replace("-", ":")
    if fld == "serial_number":
        return value.upper()
    return value


def _identify(
    record: Any,
    snapshot: CMDBSnapshot,
    index: dict[str, dict[str, list[dict[str, str]]]],
    adopted: set[str],
) -> tuple[dict[str, str] | None, str | None]:
    """Hardware identification for a record with no source-id match."""
    if record.table == LOCATION_TABLE:
        row = snapshot.locations_by_name.get(record.values.get("name", ""))
        if row is not None and row["sys_id"] not in adopted:
            return row, "name"
        return None, None
    for fld in IDENTIFICATION_ORDER:
        value = _norm(fld, record.values.get(fld))
        if not value:
            continue
        matches = [r for r in index[fld].get(value, ()) if r["sys_id"] not in adopted]
        if len(matches) == 1:
            return matches[0], fld
        # several CIs share the value: ambiguous, try the next attribute (as the IRE would)
    return None, None


def _diff(
    record: Any,
    row: dict[str, str] | None,
    matched_by: str | None,
    unstored: dict[str, set[str]],
    fallback_tables: set[str],
) -> PlanItem:
    refs = record_references(record)
    if row is None:
        return PlanItem(
            record.source_id,
            record.table,
            CREATE,
            kind=getattr(record, "kind", ""),
            values=dict(record.values),
            references=refs,
        )
    changed: dict[str, str] = {}
    before: dict[str, str] = {}
    for fld, value in record.values.items():
        if fld in _NOT_DIFFED or fld in refs:
            continue
        if fld not in row:
            # the instance did not return a field we asked for: the table has no such column
            # (a custom field nobody created, or a fallback table); don't rewrite it forever
            unstored.setdefault(record.table, set()).add(fld)
            continue
        current = row[fld] or ""
        if current != (value or ""):
            changed[fld] = value
            before[fld] = current
    if matched_by != SOURCE_ID_FIELD:
        changed[SOURCE_ID_FIELD] = record.source_id
        before[SOURCE_ID_FIELD] = row.get(SOURCE_ID_FIELD, "")
    held_class = row.get("sys_class_name")
    class_change = (
        held_class
        if held_class
        and record.table != LOCATION_TABLE
        and held_class != record.table
        and not (record.table in fallback_tables and held_class == CI_TABLE)
        else None
    )
    return PlanItem(
        record.source_id,
        record.table,
        UPDATE if changed else NO_CHANGE,
        kind=getattr(record, "kind", ""),
        sys_id=row["sys_id"],
        values=changed,
        references=refs,
        before=before or None,
        matched_by=matched_by,
        class_change=class_change,
    )


def _settle_references(
    item: PlanItem, known: dict[str, str], rows: dict[str, dict[str, str]]
) -> None:
    """Drop references that already point at the right record; keep those needing a write."""
    if not item.references or item.action not in (CREATE, UPDATE, NO_CHANGE):
        return
    if item.action == CREATE:
        return  # resolved at apply time
    row = rows.get(item.source_id) or {}
    pending: dict[str, str] = {}
    for fld, target in item.references.items():
        target_sys_id = known.get(target)
        if target_sys_id is not None and row.get(fld) == target_sys_id:
            continue
        if fld not in row and item.source_id in rows:
            continue  # the table has no such column (see _diff)
        pending[fld] = target
        if item.before is None:
            item.before = {}
        item.before[fld] = row.get(fld, "")
    item.references = pending
    if pending and item.action == NO_CHANGE:
        item.action = UPDATE


# --------------------------------------------------------------------------------------------
# Reading the snapshot
# --------------------------------------------------------------------------------------------


def _chunks(values: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _in_query(fld: str, values: Iterable[str]) -> Query | None:
    """``<fld>IN...^u_unifi_source_idISEMPTY``; values with ``,`` or ``^`` cannot be listed."""
    clean = [v for v in values if v and "," not in v and "^" not in v and "\n" not in v]
    if not clean:
        return None
    return Query().in_(fld, clean).is_empty(SOURCE_ID_FIELD)


def read_snapshot(
    client: QueryClient,
    records: Sequence[Any],
    *,
    missing_tables: Iterable[str] = (),
    in_chunk: int = 100,
    page_size: int | None = None,
) -> CMDBSnapshot:
    """Read what the CMDB holds for this source, plus adoption candidates.

    One query per target table (``u_unifi_source_idISNOTEMPTY`` with only the mapped fields),
    rows merged by sys_id; a table in ``missing_tables`` is read through ``cmdb_ci`` with its
    ``sys_class_name`` instead. Records with no source-id match are then looked up by
    serial number, name and MAC (batched ``IN`` queries) among CIs with no source id.
    """
    missing = set(missing_tables)
    fields_by_table: dict[str, set[str]] = {}
    for record in records:
        fields_by_table.setdefault(record.table, set()).update(record.values)
        fields_by_table[record.table].update(record_references(record))
    base = {"sys_id", "sys_class_name", SOURCE_ID_FIELD, *RETIRE_VALUES}
    snapshot = CMDBSnapshot(partial_tables={t for t in missing if t in fields_by_table})
    by_sys_id: dict[str, dict[str, str]] = {}

    def absorb(rows: Iterable[dict], wanted: set[str], table: str) -> None:
        for row in rows:
            compact = {k: _as_str(row.get(k)) for k in wanted if k in row}
            compact["sys_id"] = _as_str(row.get("sys_id"))
            if table == LOCATION_TABLE:
                compact["sys_class_name"] = LOCATION_TABLE
            merged = by_sys_id.setdefault(compact["sys_id"], {})
            merged.update(compact)

    # every CI of this source, whatever its class (finds not-seen CIs and reclassified ones);
    # records of missing class tables live in cmdb_ci, so their fields are read here too
    ci_fields = base | set(IDENTIFICATION_ORDER)
    for table in missing:
        ci_fields |= fields_by_table.get(table, set())
    absorb(
        client.query(
            CI_TABLE,
            f"{SOURCE_ID_FIELD}ISNOTEMPTY",
            fields=sorted(ci_fields),
            page_size=page_size,
        ),
        ci_fields,
        CI_TABLE,
    )
    for table, flds in sorted(fields_by_table.items()):
        if table == CI_TABLE:
            continue
        wanted = base | flds
        if table in missing:
            continue  # read with cmdb_ci above (the instance may not keep the class name)
        query, read_table = f"{SOURCE_ID_FIELD}ISNOTEMPTY", table
        absorb(
            client.query(read_table, query, fields=sorted(wanted), page_size=page_size),
            wanted,
            read_table,
        )
    for row in by_sys_id.values():
        sid = row.get(SOURCE_ID_FIELD)
        if sid:
            snapshot.rows[sid] = row
    # adoption candidates: CIs and locations not yet carrying a source id
    unmatched = [r for r in records if r.source_id not in snapshot.rows]
    ci_unmatched = [r for r in unmatched if r.table != LOCATION_TABLE]
    loc_unmatched = [r for r in unmatched if r.table == LOCATION_TABLE]
    seen_candidates: set[str] = set()
    for fld in IDENTIFICATION_ORDER:
        wanted_values = sorted({r.values[fld] for r in ci_unmatched if r.values.get(fld)})
        for chunk in _chunks(wanted_values, in_chunk):
            query = _in_query(fld, chunk)
            if query is None:
                continue
            for row in client.query(
                CI_TABLE, query, fields=sorted(ci_fields | {"name"}), page_size=page_size
            ):
                compact = {k: _as_str(row.get(k)) for k in ci_fields | {"name"} if k in row}
                if compact["sys_id"] not in seen_candidates:
                    seen_candidates.add(compact["sys_id"])
                    snapshot.candidates.append(compact)
    names = sorted({r.values["name"] for r in loc_unmatched if r.values.get("name")})
    loc_fields = base | fields_by_table.get(LOCATION_TABLE, set()) | {"name"}
    for chunk in _chunks(names, in_chunk):
        query = _in_query("name", chunk)
        if query is None:
            continue
        for row in client.query(
            LOCATION_TABLE, query, fields=sorted(loc_fields), page_size=page_size
        ):
            compact = {k: _as_str(row.get(k)) for k in loc_fields if k in row}
            snapshot.locations_by_name.setdefault(compact.get("name", ""), compact)
    return snapshot


def _as_str(value: Any) -> str:
    """Field values may come back as plain strings or ``{"value", "display_value"}`` pairs."""
    if isinstance(value, dict):
        value = value.get("value", "")
    return "" if value is None else str(value)
