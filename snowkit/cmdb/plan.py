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

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from snowkit.cmdb.classes import HARDWARE
from snowkit.cmdb.fields import SOURCE_ID_FIELD, as_str
from snowkit.cmdb.questions import any_row
from snowkit.servicenow.query import Query

if TYPE_CHECKING:  # a load never needs pandas: only the frames do (see ``Plan.frame``)
    import pandas as pd

LOCATION_TABLE = "cmn_location"
CI_TABLE = "cmdb_ci"
IDENTIFICATION_ORDER: tuple[str, ...] = ("serial_number", "name", "mac_address")
#: Fields never diffed: the class is noted as a class change instead of updated in place.
_NOT_DIFFED = frozenset({"sys_class_name", "sys_id", SOURCE_ID_FIELD})
#: Values written when an unseen CI is retired (opt-in): Retired / Retired.
RETIRE_VALUES: dict[str, str] = {"operational_status": "6", "install_status": "7"}
#: Values written when a retired CI is listed by the source again: Operational / Installed.
IN_SERVICE_VALUES: dict[str, str] = {"operational_status": "1", "install_status": "1"}

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
    #: every relationship is known to exist (see ``SyncEngine.plan``): none to decide
    links_settled: bool = False

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
        import pandas as pd

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
    present: Collection[str] = (),
    unidentified: int = 0,
) -> Plan:
    """Match every record against the snapshot and diff it.

    ``not_seen_since`` maps source ids to the ISO time they were first missed; with
    ``retire_after_days`` set, CIs missed for longer than that are planned as ``retire``,
    but only those at a site this input holds (a CI at another site belongs to another
    console's or source's load, or to a site this collection missed) and never one in
    ``present`` (source ids the source still lists but the transform quarantined). With
    ``unidentified`` rejected devices or clients (items whose CI cannot be told), nothing is
    retired: each missing CI may be one of them. A CI held as retired that the source lists
    again is set back to installed and operational.
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

    # the locations this input holds: only a CI at one of them can be missing from it
    our_sites = {
        known[r.source_id] for r in records if r.table == LOCATION_TABLE and r.source_id in known
    }
    still_listed = set(present)
    for sid, row in snapshot.rows.items():
        if sid in seen or sid in still_listed:
            continue
        table = row.get("sys_class_name") or CI_TABLE
        missed = (not_seen_since or {}).get(sid)
        ours = as_str(row.get("location")) in our_sites
        if (
            retire_after_days is not None
            and not unidentified
            and missed is not None
            and table != LOCATION_TABLE
            and ours
        ):
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
    if unidentified and retire_after_days is not None:
        notes.append(
            f"retirement held this run: {unidentified} device or client item(s) could not be "
            "read (see quarantine), so a CI missing from the input may still be in the network"
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


def _spellings(fld: str, value: str) -> set[str]:
    """The ways a CMDB may hold ``value``: a MAC with colons or dashes, a MAC or serial in lower
    or upper case, as the candidates' query must name them all (the instance compares as
    written: a MAC held as ``AA-BB-...`` or a serial in lower case had not been found, and the
    CI was created a second time)."""
    if fld == "serial_number":
        return {value, value.upper(), value.lower()}
    if fld != "mac_address":
        return {value}
    plain = _norm(fld, value)
    forms = {plain, plain.replace(":", "-")}
    return forms | {f.upper() for f in forms} | {value}


def _norm(fld: str, value: str | None) -> str:
    value = (value or "").strip()
    if fld == "mac_address":
        return value.lower().replace("-", ":")
    if fld == "serial_number":
        return value.upper()
    return value


def unchanged_plan(
    records: Sequence[Any], rows: Iterable[Mapping[str, str]], relationships: Sequence[Any] = ()
) -> Plan | None:
    """What :func:`build_plan` returns when every record matches its row by source id and
    nothing differs, without comparing a field: for an input known to equal one the rows
    already satisfy (``SyncState.input_digest``). None unless ``rows`` (the sourced rows) and
    the records pair up one to one."""
    known = {row[SOURCE_ID_FIELD]: row["sys_id"] for row in rows}
    if len(known) != len(records):
        return None
    items: list[PlanItem] = []
    for record in records:
        sys_id = known.get(record.source_id)
        if sys_id is None:
            return None  # a duplicate source id in the input, or a record with no row
        items.append(PlanItem(record.source_id, record.table, NO_CHANGE, kind=record.kind,
                              sys_id=sys_id, matched_by=SOURCE_ID_FIELD))  # fmt: skip
    return Plan(
        items=items,
        sys_ids=known,
        relationships=list(relationships),
        records={r.source_id: r for r in records},
    )


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
        matches = [
            r
            for r in index[fld].get(value, ())
            if r["sys_id"] not in adopted and not _conflicts(record, r)
        ]
        if len(matches) == 1:
            return matches[0], fld
        # several CIs share the value: ambiguous, try the next attribute (as the IRE would)
    return None, None


def _conflicts(record: Any, row: Mapping[str, str]) -> bool:
    """The row holds another serial number or MAC than the record: another device, whatever
    else (a name) they share; adopting it had overwritten an unrelated CI."""
    for fld in ("serial_number", "mac_address"):
        mine, theirs = _norm(fld, record.values.get(fld)), _norm(fld, row.get(fld))
        if mine and theirs and mine != theirs:
            return True
    return False


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
    if record.table != LOCATION_TABLE and all(
        as_str(row.get(k)) == v for k, v in RETIRE_VALUES.items()
    ):  # retired once it went missing; the source lists it again: back in service
        for fld, value in IN_SERVICE_VALUES.items():
            changed[fld], before[fld] = value, as_str(row.get(fld))
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


def _in_query(fld: str, values: Iterable[str], *, hardware: bool = False) -> Query | None:
    """``<fld>IN...^u_unifi_source_idISEMPTY``; values with ``,`` or ``^`` cannot be listed.

    ``hardware``: only hardware CIs, which the Hardware rule identifies; a network adapter
    (a CI too, holding the device's MAC, left by Discovery or IRE) had been adoptable."""
    clean = [v for v in values if v and "," not in v and "^" not in v and "\n" not in v]
    if not clean:
        return None
    query = Query().instance_of(HARDWARE) if hardware else Query()
    return query.in_(fld, clean).is_empty(SOURCE_ID_FIELD)


def fields_by_table(records: Sequence[Any]) -> dict[str, set[str]]:
    """The fields (values and references) the records carry, per table."""
    out: dict[str, set[str]] = {}
    for record in records:
        out.setdefault(record.table, set()).update(record.values)
        out[record.table].update(record_references(record))
    return out


def read_fields(records: Sequence[Any]) -> tuple[set[str], set[str]]:
    """What to read of ``cmdb_ci`` and of ``cmn_location`` for these records (with the
    version fields the incremental snapshot compares)."""
    by_table = fields_by_table(records)
    ci_fields = _BASE_FIELDS | set(IDENTIFICATION_ORDER) | {"location"}  # where a CI is
    for table, flds in by_table.items():
        if table != LOCATION_TABLE:
            ci_fields |= flds
    loc_fields = _BASE_FIELDS | by_table.get(LOCATION_TABLE, set()) | {"name"}
    return ci_fields, loc_fields


#: Read with every row: identity, class, source id, retire fields, and the version
#: (``sys_updated_on`` + ``sys_mod_count``) the incremental snapshot compares.
_BASE_FIELDS = frozenset(
    {"sys_id", "sys_class_name", SOURCE_ID_FIELD, *RETIRE_VALUES, "sys_updated_on", "sys_mod_count"}
)


def read_sourced(
    client: QueryClient,
    records: Sequence[Any],
    *,
    missing_tables: Iterable[str] = (),
    sys_ids: Sequence[str] | None = None,
    in_chunk: int = 100,
    page_size: int | None = 1000,
    workers: int = 4,
) -> dict[str, dict[str, str]]:
    """Rows carrying a source id, by sys_id (all of them, or only ``sys_ids``).

    CIs are read through ``cmdb_ci`` with every mapped field; a class table is read as well
    only for fields ``cmdb_ci`` does not have (rows merged by sys_id); missing class tables are
    never read (their records live in ``cmdb_ci``); locations from ``cmn_location``.
    """
    missing = set(missing_tables)
    by_table = fields_by_table(records)
    ci_fields, loc_fields = read_fields(records)
    sourced = f"{SOURCE_ID_FIELD}ISNOTEMPTY"
    if sys_ids is None:
        filters = [sourced]
    else:
        ids = sorted(set(sys_ids))
        filters = [f"{sourced}^sys_idIN{','.join(c)}" for c in _chunks(ids, in_chunk)]
    by_sys_id: dict[str, dict[str, str]] = {}
    returned: set[str] = set()

    def read(table: str, query: Any, wanted: set[str]) -> list[dict[str, str]]:
        rows = client.query(table, query, fields=sorted(wanted), page_size=page_size)
        return [_compact(row, wanted) for row in rows]

    def merge(jobs: list[tuple[str, Any, set[str]]]) -> None:
        for (table, _q, _w), rows in zip(jobs, parallel_map(read, jobs, workers), strict=True):
            for row in rows:
                if table == LOCATION_TABLE:
                    row["sys_class_name"] = LOCATION_TABLE
                elif table == CI_TABLE:
                    returned.update(row)
                held = by_sys_id.get(row["sys_id"])
                if held is None:
                    by_sys_id[row["sys_id"]] = row
                    continue
                # a class table's row keeps the version the first round read: were it edited
                # in between, its newer version would vouch for the older cmdb_ci fields, and
                # no listing would ever show the record as changed
                for name in ("sys_updated_on", "sys_mod_count"):
                    if name in held:
                        row.pop(name, None)
                held.update(row)

    # one round for cmdb_ci and the locations, a second only for class-specific columns
    merge([(CI_TABLE, f, ci_fields) for f in filters]
          + [(LOCATION_TABLE, f, loc_fields) for f in filters])  # fmt: skip
    jobs: list[tuple[str, Any, set[str]]] = []
    if any(row.get("sys_class_name") != LOCATION_TABLE for row in by_sys_id.values()):
        for table, flds in sorted(by_table.items()):
            if table in (CI_TABLE, LOCATION_TABLE) or table in missing:
                continue
            lacking = flds - returned
            if lacking:
                jobs.extend((table, f, _BASE_FIELDS | lacking) for f in filters)
    merge(jobs)
    return by_sys_id


def _compact(row: dict, wanted: set[str]) -> dict[str, str]:
    out = {k: as_str(row.get(k)) for k in wanted if k in row}
    out["sys_id"] = as_str(row.get("sys_id"))
    return out


def is_empty(snapshot: CMDBSnapshot) -> bool:
    """Nothing read: no sourced row, no adoption candidate, no location by name."""
    return not (snapshot.rows or snapshot.candidates or snapshot.locations_by_name)


def snapshot_from_rows(
    by_sys_id: Mapping[str, dict[str, str]], missing_tables: Iterable[str], records: Sequence[Any]
) -> CMDBSnapshot:
    """A snapshot (keyed by source id) from rows keyed by sys_id."""
    tables = {r.table for r in records}
    snapshot = CMDBSnapshot(partial_tables={t for t in missing_tables if t in tables})
    for row in by_sys_id.values():
        sid = row.get(SOURCE_ID_FIELD)
        if sid:
            snapshot.rows[sid] = row
    return snapshot


def read_snapshot(
    client: QueryClient,
    records: Sequence[Any],
    *,
    missing_tables: Iterable[str] = (),
    in_chunk: int = 100,
    page_size: int | None = 1000,
    workers: int = 4,
    unsourced: Mapping[str, bool] | None = None,
    none_sourced: bool = False,
) -> CMDBSnapshot:
    """Read what the CMDB holds for this source, plus adoption candidates (``unsourced``:
    ``any_without_source_id`` per table, when already known; ``none_sourced``: the source-id
    fields did not exist before this run, so only candidates are read).

    - every CI and location carrying a source id (``read_sourced``: one paged query through
      ``cmdb_ci``, plus class tables for fields ``cmdb_ci`` lacks; finds not-seen and
      reclassified CIs too);
    - adoption candidates (``read_candidates``).
    """
    rows = (
        {}
        if none_sourced
        else read_sourced(
            client, records, missing_tables=missing_tables, page_size=page_size, workers=workers
        )
    )
    snapshot = snapshot_from_rows(rows, missing_tables, records)
    read_candidates(client, snapshot, records, in_chunk=in_chunk, page_size=page_size,
                    workers=workers, unsourced=unsourced)  # fmt: skip
    return snapshot


def read_candidates(
    client: QueryClient,
    snapshot: CMDBSnapshot,
    records: Sequence[Any],
    *,
    in_chunk: int = 100,
    page_size: int | None = 1000,
    workers: int = 4,
    unsourced: Mapping[str, bool] | None = None,
) -> None:
    """For records with no source-id match, CIs without a source id that share their serial
    number, name or MAC (batched ``IN`` queries, ``workers`` at a time), skipped entirely when
    the CMDB holds no CI without a source id; locations by name likewise. ``unsourced``
    (table → ``any_without_source_id``) spares those two requests when already asked."""
    known = dict(unsourced or {})

    def without_source_id(table: str) -> bool:
        if table not in known:
            known[table] = any_without_source_id(client, table)
        return known[table]

    def read(table: str, query: Any, wanted: set[str]) -> list[dict[str, str]]:
        rows = client.query(table, query, fields=sorted(wanted), page_size=page_size)
        return [_compact(row, wanted) for row in rows]

    unmatched = [r for r in records if r.source_id not in snapshot.rows]
    if not unmatched:
        return  # every record has its row (a rerun): no candidates to look for
    ci_fields, loc_fields = read_fields(records)
    ci_unmatched = [r for r in unmatched if r.table != LOCATION_TABLE]
    loc_unmatched = [r for r in unmatched if r.table == LOCATION_TABLE]
    jobs: list[tuple[str, Any, set[str]]] = []
    if ci_unmatched and without_source_id(CI_TABLE):
        for fld in IDENTIFICATION_ORDER:
            values = sorted(
                {
                    v
                    for r in ci_unmatched
                    if r.values.get(fld)
                    for v in _spellings(fld, r.values[fld])
                }
            )
            for chunk in _chunks(values, in_chunk):
                query = _in_query(fld, chunk, hardware=True)
                if query is not None:
                    jobs.append((CI_TABLE, query, ci_fields))
    if loc_unmatched and without_source_id(LOCATION_TABLE):
        names = sorted({r.values["name"] for r in loc_unmatched if r.values.get("name")})
        for chunk in _chunks(names, in_chunk):
            query = _in_query("name", chunk)
            if query is not None:
                jobs.append((LOCATION_TABLE, query, loc_fields))
    seen_candidates: set[str] = set()
    for (table, _q, _w), rows in zip(jobs, parallel_map(read, jobs, workers), strict=True):
        for row in rows:
            if table == LOCATION_TABLE:
                snapshot.locations_by_name.setdefault(row.get("name", ""), row)
            elif row["sys_id"] not in seen_candidates:
                seen_candidates.add(row["sys_id"])
                snapshot.candidates.append(row)


def any_without_source_id(client: Any, table: str) -> bool:
    """One cheap request: does ``table`` hold any record without a source id?"""
    return any_row(client, table, f"{SOURCE_ID_FIELD}ISEMPTY")


def parallel_map(fn: Any, jobs: Sequence[tuple], workers: int) -> list[Any]:
    """``fn(*job)`` for every job, ``workers`` at a time; results in job order (reads only:
    the client is thread-safe and each read is independent)."""
    if len(jobs) <= 1 or workers <= 1:
        return [fn(*job) for job in jobs]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="snowkit-read") as pool:
        return list(pool.map(lambda job: fn(*job), jobs))
