"""The embedded instance's records: a thread-safe SQLite store with platform semantics.

Layout (table-per-hierarchy, as on the platform): one SQLite table ``t_<root>`` per hierarchy
root (``t_cmdb_ci`` holds every CI, ``t_task`` every incident and problem), one TEXT column per
field any class of the hierarchy has (``NOT NULL DEFAULT ''``: values are strings, empty is
``""``), and an ``INTEGER PRIMARY KEY`` row number that gives insertion order (a new row gets
one more than the largest present, so it sorts after every row present; ``AUTOINCREMENT``,
which databases created before kept, only adds a ``sqlite_sequence`` write per insert and
never reuses the numbers of deleted last rows, which order does not need). Custom fields
become new columns (``ALTER TABLE ADD COLUMN``, indexed). Wide columns beat a JSON blob here
because every encoded-query condition then compiles to plain SQL over real, indexable columns.

Queries: ``query.parse`` gives the structure; this module compiles it to one SQL WHERE clause
(dot-walks become correlated sub-selects, ``IN`` lists a ``json_each`` parameter, comparisons
with a numeric literal the Python function ``query.compare`` registered in SQLite, so the
numeric-or-string rule is the reference one). Conditions on unknown fields are dropped before
SQL is built, so pysnc's 2,300 ``AAAA=BBBB`` parts cost nothing, and a 50,000-CI table pages in
about a millisecond. Queries with more than ``SQL_CONDITION_LIMIT`` conditions are filtered in
Python with ``query.matches`` instead (SQLite's planner is quadratic in WHERE terms); SQLite
still selects the class subtree and orders. Tests check both paths against ``query.evaluate``.

Ordering: ``ORDERBY`` keys (numeric fields numerically, empty first), then insertion order.
Without ``ORDERBY`` the order is insertion order, so paging while others insert never skips or
repeats a row (new rows land at the end). Generated sys_ids are increasing too (a millisecond
clock and a counter, then random bits), so pysnc's ``ORDERBYsys_id`` pages are just as stable
for records the sandbox creates.

Writes follow the Table API: unknown fields and ``sys_*`` fields are ignored (except ``sys_id``
on insert, kept verbatim, and ``sys_class_name`` on insert into a parent table, which picks the
class when it names a class of the subtree); dictionary defaults are applied (``number``,
``opened_by``, ``active``...); an update that changes nothing writes nothing. Deleting a CI
deletes its ``cmdb_rel_ci`` rows (the platform's cascade rule on ``parent``/``child``).
Inserting into ``sys_dictionary`` with ``name`` + ``element`` creates the field (``add_field``).

Thread safety: one connection (``check_same_thread=False``) behind one lock; SQLite calls are
microseconds, far below the HTTP and JSON cost per request (measured: ~5,000 list calls/s and
~5,000 inserts/s from 8 threads on a file database). File databases use WAL with
``synchronous=NORMAL``; planner statistics are refreshed every ``ANALYZE_EVERY`` writes.

Cost per write: the instance runs in one process, so its CPU per write bounds how fast a
client can load it (a 100-item Batch API request should cost a few ms, not the 55 ms of
latency it is meant to model). Hence: ``transaction()`` lets the Batch API commit once per
request instead of once per item (BEGIN + COMMIT were a third of an insert); each write stays
atomic on its own inside it, a single statement needing nothing and a multi-statement write
(an insert drawing a ``number``, a cascading delete) taking a SAVEPOINT, so one item failing
never undoes another and what was answered as written stays written. Per (table, class) an
``_InsertPlan`` caches what does not depend on the values (writable names, defaults, SQL text,
the ``_get`` SELECT) until the schema version changes (a field added through sys_dictionary);
an INSERT binds only the columns it sets; timestamps are formatted once per second; generated
sys_ids take their random half from a PRNG seeded by ``os.urandom`` rather than a system call
per record. Together these cut the store's CPU per insert by about 3x.

Extensions beyond the contract in docs/architecture.md: ``Store(clock=..., seed=True)``,
``lookup()`` (cached reference reads for rendering; do not mutate what it returns),
``display_value()``, ``count()``, ``WriteRejected`` / ``DuplicateRecord`` (a write the platform
refuses: HTTP should answer 400), ``transaction()``, ``list(fields=...)`` (read only the
columns a ``sysparm_fields`` page shows).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from snowkit.sandbox.query import (
    FIELD_OPERATORS,
    Condition,
    EncodedQuery,
    as_number,
    between_bounds,
    compare,
    matches,
    parse,
)
from snowkit.sandbox.schema import (
    NOW_DEFAULT,
    NUMBER_DEFAULT,
    USER_ID_DEFAULT,
    FieldDef,
    InvalidField,
    Schema,
    TableNotFound,
    WriteRejected,
    dictionary_row,
)

__all__ = [
    "DuplicateRecord",
    "InvalidField",
    "Store",
    "TableNotFound",
    "WriteRejected",
]

DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
CASCADE_DELETE: tuple[tuple[str, str], ...] = (("cmdb_rel_ci", "parent"), ("cmdb_rel_ci", "child"))
"""Reference fields whose records are deleted with the record they point to."""

_INDEXED = (
    "name",
    "number",
    "user_name",
    "serial_number",
    "mac_address",
    "parent",
    "child",
    "element",
)
SQL_CONDITION_LIMIT = 500
"""Above this many conditions a query is filtered in Python: SQLite's planner is quadratic in
the number of WHERE terms (10,000 terms take seconds to prepare), Python's check is linear."""
ANALYZE_EVERY = 2000
"""Refresh the query planner's statistics after this many writes."""
_SAFE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class DuplicateRecord(WriteRejected):
    """An insert with a sys_id that already exists."""


def _quote(name: str) -> str:
    if not _SAFE_NAME.match(name):  # schema names are validated; this is a second fence
        raise ValueError(f"unsafe SQL identifier {name!r}")
    return f'"{name}"'


def _as_text(value: Any) -> str:
    """Table API input → stored string: None → "", booleans → "true"/"false", {"value": v} → v."""
    if value.__class__ is str:
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict) and "value" in value:
        return _as_text(value["value"])
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _balanced(parts: Sequence[str], op: str) -> str:
    """``a op b op c …`` parenthesised as a balanced tree (depth log n, not n)."""
    if len(parts) == 1:
        return parts[0]
    mid = len(parts) // 2
    return f"({_balanced(parts[:mid], op)} {op} {_balanced(parts[mid:], op)})"


def _classes(schema: Schema, table: str) -> str:
    """``('cmdb_ci_netgear', 'cmdb_ci_ip_router', …)``: a class subtree as an SQL literal list
    (class names are validated identifiers, so inlining them is safe and keeps expressions
    free of parameters)."""
    names = schema.descendants(table)
    for name in names:
        _quote(name)
    return "(" + ", ".join(f"'{n}'" for n in names) + ")"


def _sql_compare(left: str | None, op: str, right: str | None) -> int:
    return int(compare(left or "", op, right or ""))


def _sql_number(value: str | None) -> float | None:
    return as_number(value or "")


class _Compiled:
    """A WHERE clause, its parameters, and an ORDER BY list for one (table, query) pair."""

    __slots__ = ("order", "params", "where")

    def __init__(self, where: str, params: list[Any], order: str) -> None:
        self.where, self.params, self.order = where, params, order


class _InsertPlan:
    """What an insert into ``table`` creating a ``cls`` record needs, computed once per
    (table, class, schema version): the writable names, the literal and computed defaults, a
    blank record over every column of ``cls``, and INSERT statements.

    An INSERT names only the columns it sets (the given fields, the defaults they leave, the
    system fields); the others keep the column default ``''``, and constants are SQL literals.
    Every bound value costs SQLite a copy: binding the ~25 empty columns of a wide hierarchy
    was a third of its cost per insert. Statements are cached per tuple of given names (a
    client sends the same names again and again), so their SQL text is built once and
    SQLite's statement cache hits.
    """

    __slots__ = (
        "blank",
        "computed",
        "get_sql",
        "hierarchy",
        "literal",
        "out",
        "root",
        "statements",
        "subtree",
        "visible",
        "writable",
    )

    def __init__(self, schema: Schema, table: str, cls: str, root: str) -> None:
        fields = schema.fields(cls)
        self.writable = frozenset(f for f in schema.fields(table) if not f.startswith("sys_"))
        self.literal = {n: f.default for n, f in fields.items() if f.default and not _computed(f)}
        self.computed = [(n, f) for n, f in fields.items() if f.default and _computed(f)]
        self.hierarchy = schema.in_hierarchy(cls)
        # A new record before its given values, computed defaults and system values: every
        # column of cls in field order, "" unless a literal default or a constant fills it.
        self.blank = dict.fromkeys(fields, "")
        self.blank.update(self.literal)
        self.blank["sys_mod_count"] = "0"
        if self.hierarchy:
            self.blank["sys_class_name"] = cls
        self.out = None if table == cls else tuple(schema.fields(table))
        self.root = _quote("t_" + root)
        self.statements: dict[tuple[str, ...], _Statement] = {}
        # Reading one record of ``table`` (``Store._get``), built here once rather than per read.
        self.visible = tuple(schema.fields(table))
        self.get_sql = (
            f"SELECT {', '.join(_quote(c) for c in self.visible)} FROM {self.root} "
            'WHERE "sys_id" = ?'
        )
        self.subtree = None if table == root else frozenset(schema.descendants(table))

    def statement(self, given: tuple[str, ...]) -> _Statement:
        """The INSERT for a record whose given (writable) names are ``given``, in that order.

        Parameters, in order: the given values, the computed defaults, sys_id, now, user.
        Constants (literal defaults, ``sys_mod_count``, the class) are SQL literals and ``now``
        and ``user`` are bound once for both of their columns: every bound value costs SQLite
        a copy.
        """
        found = self.statements.get(given)
        if found is None:
            computed = [(n, f) for n, f in self.computed if n not in given]
            columns = [*given, *(n for n, _ in computed), "sys_id"]
            values = [f"?{i}" for i in range(1, len(columns) + 1)]
            now, user = f"?{len(columns) + 1}", f"?{len(columns) + 2}"
            columns += ["sys_created_on", "sys_created_by", "sys_updated_on", "sys_updated_by"]
            values += [now, user, now, user]
            columns.append("sys_mod_count")
            values.append("'0'")
            for name, value in self.literal.items():
                if name not in given:
                    columns.append(name)
                    values.append(_literal(value))
            if self.hierarchy:
                columns.append("sys_class_name")
                values.append(_literal(self.blank["sys_class_name"]))
            if len(self.statements) >= 64:  # clients sending ever new name sets: stay bounded
                self.statements.clear()
            found = self.statements[given] = _Statement(
                f"INSERT INTO {self.root} ({', '.join(_quote(c) for c in columns)}) "
                f"VALUES ({', '.join(values)})",
                computed,
            )
        return found


class _Statement:
    """One INSERT of an ``_InsertPlan``: its SQL and the computed defaults it fills in."""

    __slots__ = ("computed", "sql")

    def __init__(self, sql: str, computed: list[tuple[str, FieldDef]]) -> None:
        self.sql, self.computed = sql, computed


def _literal(value: str) -> str:
    """A string as an SQL literal (for schema constants: defaults and class names)."""
    return "'" + value.replace("'", "''") + "'"


def _computed(field_def: FieldDef) -> bool:
    return field_def.default in (USER_ID_DEFAULT, NOW_DEFAULT, NUMBER_DEFAULT)


class Store:
    """Records of every table, with the Table API's semantics (see module docstring)."""

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        missing_tables: Iterable[str] = (),
        clock: Callable[[], datetime] | None = None,
        seed: bool = True,
    ) -> None:
        self._schema = Schema()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._wall_clock = clock is None  # then _now reads time.time(), a cheaper call
        self._lock = threading.RLock()
        self._missing: frozenset[str] = frozenset(missing_tables)
        self._lookup_cache: dict[tuple[str, str], dict[str, str] | None] = {}
        self._compiled: dict[tuple[Any, ...], _Compiled] = {}
        self._id_seq = 0
        self._id_random = random.Random(os.urandom(16))
        self._now_key: Any = None
        self._now_text = ""
        self._plans: dict[tuple[str, str], _InsertPlan] = {}
        self._plans_version = -1
        self._writes = 0
        self._conn = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, cached_statements=256
        )
        self._conn.create_function("snk_cmp", 3, _sql_compare, deterministic=True)
        self._conn.create_function("snk_num", 1, _sql_number, deterministic=True)
        if str(path) != ":memory:":
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        with self._lock:
            # one transaction: a second process opening the same new file waits, instead of
            # adding the columns this one is adding ("duplicate column name", two notebooks)
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._create_layout()
                self._load_custom_fields()
                if seed and not self._meta("seeded"):
                    self._seed()
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    # -- public API ---------------------------------------------------------------------------

    def schema(self) -> Schema:
        return self._schema

    def set_missing_tables(self, tables: Iterable[str]) -> None:
        """Fault injection: these tables behave as if their plugin were not installed."""
        self._missing = frozenset(tables)

    def table_exists(self, table: str) -> bool:
        return table not in self._missing and self._schema.has_table(table)

    def list(
        self,
        table: str,
        query: str = "",
        *,
        limit: int = 10000,
        offset: int = 0,
        filters: Mapping[str, str] | None = None,
        fields: Iterable[str] | None = None,
    ) -> tuple[list[dict[str, str]], int]:
        """(rows of one page, number of rows matching ignoring limit/offset).

        ``fields`` (optional) names the columns the caller will read: rows then carry only
        those of ``table``'s columns (a dotted name needs its first part), not all of them,
        which makes a 10,000-row ``sysparm_fields`` page about twice as cheap.
        """
        self._check(table)
        if len(parse(query).conditions()) + len(filters or {}) > SQL_CONDITION_LIMIT:
            return self._list_in_python(table, query, limit, offset, filters or {})
        compiled = self._compile(table, query, filters)
        columns = list(self._schema.fields(table))
        if fields is not None:
            wanted = {name.split(".", 1)[0] for name in fields}
            columns = [c for c in columns if c in wanted] or ["sys_id"]
        root = _quote("t_" + self._schema.root(table))
        select = ", ".join(f"r.{_quote(c)}" for c in columns)
        sql = (
            f"SELECT {select} FROM {root} AS r WHERE {compiled.where} "
            f"ORDER BY {compiled.order} LIMIT ? OFFSET ?"
        )
        page = [*compiled.params, limit if limit >= 0 else -1, max(offset, 0)]
        with self._lock:
            rows = self._conn.execute(sql, page).fetchall() if limit != 0 else []
            if rows and limit > 0 and len(rows) < limit:
                total = max(offset, 0) + len(rows)  # the last page: no second scan to count
            else:
                total = self._conn.execute(
                    f"SELECT COUNT(*) FROM {root} AS r WHERE {compiled.where}", compiled.params
                ).fetchone()[0]
        return [dict(zip(columns, row, strict=True)) for row in rows], total

    def _list_in_python(
        self, table: str, query: str, limit: int, offset: int, filters: Mapping[str, str]
    ) -> tuple[list[dict[str, str]], int]:
        """``list`` for huge queries: SQLite selects the class and orders, Python filters."""
        schema = self._schema
        parsed = parse(query)
        extra = tuple((Condition(k, "=", str(v)),) for k, v in filters.items())
        combined = EncodedQuery(
            tuple(g + extra for g in parsed.groups) or ((extra,) if extra else ()),
            parsed.order_by,
        )

        def known(cond: Condition) -> bool:
            if self._walk_target(table, cond.field) is None:
                return False
            return cond.operator not in FIELD_OPERATORS or (
                self._walk_target(table, cond.value) is not None
            )

        effective = combined.filter(known)
        frame = _Compiler(schema, table).compile(EncodedQuery((), parsed.order_by), {})
        columns = list(schema.fields(table))
        root = _quote("t_" + schema.root(table))
        select = ", ".join(f"r.{_quote(c)}" for c in columns)
        cache: dict[tuple[str, str], dict[str, str] | None] = {}
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {select} FROM {root} AS r WHERE {frame.where} ORDER BY {frame.order}",
                frame.params,
            ).fetchall()
            hits = []
            for row in rows:
                record = dict(zip(columns, row, strict=True))

                def read(name: str, record: dict[str, str] = record) -> str:
                    return self._read_path(table, record, name, cache)

                if matches(effective, read, is_instance=schema.is_instance_of):
                    hits.append(record)
        end = None if limit < 0 else max(offset, 0) + limit
        return hits[max(offset, 0) : end], len(hits)

    def _walk_target(self, table: str, path: str) -> FieldDef | None:
        """The field a (dotted) name reaches from ``table``, or None when the path is invalid."""
        names = path.split(".")
        for name in names[:-1]:
            ref = self._schema.field(table, name)
            if ref is None or not ref.reference or not self._schema.has_table(ref.reference):
                return None
            table = ref.reference
        return self._schema.field(table, names[-1])

    def _read_path(
        self,
        table: str,
        record: Mapping[str, str],
        path: str,
        cache: dict[tuple[str, str], dict[str, str] | None],
    ) -> str:
        """A (dotted) field's value; an empty or dangling reference on the way reads ``""``."""
        names = path.split(".")
        current: Mapping[str, str] | None = record
        for name in names[:-1]:
            target = self._schema.field(table, name).reference  # type: ignore[union-attr]
            sys_id = current.get(name, "") if current is not None else ""
            table = target or table
            key = (table, sys_id)
            if key not in cache:
                cache[key] = self._get(table, sys_id) if sys_id else None
            current = cache[key]
        return current.get(names[-1], "") if current is not None else ""

    def count(self, table: str, query: str = "") -> int:
        return self.list(table, query, limit=0)[1]

    def get(self, table: str, sys_id: str) -> dict[str, str] | None:
        """The record if its class is ``table`` or below it, with ``table``'s columns; else None."""
        self._check(table)
        with self._lock:
            return self._get(table, sys_id)

    def lookup(self, table: str, sys_id: str) -> dict[str, str] | None:
        """``get`` through a cache emptied by every write; for rendering references."""
        if not sys_id or not self.table_exists(table):
            return None
        key = (table, sys_id)
        with self._lock:
            if key not in self._lookup_cache:
                if len(self._lookup_cache) > 10_000:
                    self._lookup_cache.clear()
                self._lookup_cache[key] = self._get(table, sys_id)
            return self._lookup_cache[key]

    def display_value(self, table: str, sys_id: str) -> str:
        """What a reference to ``table``/``sys_id`` displays: the target's display field."""
        record = self.lookup(table, sys_id)
        if record is None:
            return ""
        return record.get(self._schema.display_field(table), "")

    def insert(self, table: str, values: Mapping[str, Any], *, user: str) -> dict[str, str]:
        """Create a record; returns it with ``table``'s columns. Raises DuplicateRecord."""
        if table in self._missing or not self._schema.has_table(table):
            raise TableNotFound(table)
        if (
            table == "sys_dictionary"
            and self._schema.has_table(_as_text(values.get("name")))
            and _as_text(values.get("element"))
        ):
            return self.add_field(
                _as_text(values["name"]),
                _as_text(values["element"]),
                _as_text(values.get("internal_type")) or "string",
                int(as_number(_as_text(values.get("max_length"))) or 255),
            )
        with self._lock:
            cls = self._insert_class(table, values) if "sys_class_name" in values else table
            plan = self._plans.get((table, cls))
            if plan is None or self._plans_version != self._schema.version:
                plan = self._plan(table, cls)
            if not plan.computed:  # one INSERT: atomic on its own
                return self._insert_planned(plan, cls, values, user)
            with self._atomic():  # a number default writes _counters too
                return self._insert_planned(plan, cls, values, user)

    def update(
        self, table: str, sys_id: str, values: Mapping[str, Any], *, user: str
    ) -> dict[str, str] | None:
        """Change writable fields of ``table``; None when no such record (in that subtree)."""
        self._check(table)
        with self._lock:
            writable = self._writable(table)
            changes = {k: _as_text(v) for k, v in values.items() if k in writable}
            current = self._get(table, sys_id)
            if current is None:
                return None
            changes = {k: v for k, v in changes.items() if current.get(k) != v}
            if not changes:
                return current
            changes["sys_updated_on"] = self._now()
            changes["sys_updated_by"] = user
            changes["sys_mod_count"] = str(int(as_number(current["sys_mod_count"]) or 0) + 1)
            assignments = ", ".join(f"{_quote(k)} = ?" for k in changes)
            root = _quote("t_" + self._schema.root(table))
            self._conn.execute(
                f'UPDATE {root} SET {assignments} WHERE "sys_id" = ?', [*changes.values(), sys_id]
            )
            self._written()
            current.update(changes)
            return current

    def delete(self, table: str, sys_id: str) -> bool:
        """Delete the record (and, for a CI, its relationships); False when there is none."""
        self._check(table)
        with self._lock:
            if self._get(table, sys_id) is None:
                return False
            with self._atomic():
                self._delete(table, sys_id)
            self._written()
            return True

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Run a sequence of calls (a Batch API request) in one SQLite transaction.

        Holds the store's lock throughout, so no other thread's statement lands inside it.
        Every write inside stays atomic on its own (a single statement, or a SAVEPOINT), so the
        transaction is committed however the block ends: what a caller saw succeed stays
        written, as if each call had committed by itself. Nested use joins the outer one.
        """
        with self._lock:
            if self._conn.in_transaction:
                yield
                return
            self._conn.execute("BEGIN")
            try:
                yield
            finally:
                try:
                    self._conn.execute("COMMIT")
                except sqlite3.Error:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise

    def add_field(
        self, table: str, element: str, internal_type: str = "string", max_length: int = 255
    ) -> dict[str, str]:
        """Create a column the way a sys_dictionary POST does; returns the sys_dictionary record.

        Idempotent: an existing field returns its dictionary record. Subclasses inherit the new
        column at once. Raises TableNotFound or InvalidField (a ValueError).
        """
        self._check(table)
        with self._lock:
            field_def, created = self._schema.add_field(table, element, internal_type, max_length)
            owner = self._schema.defined_on(table, element) or table
            if created:
                self._ensure_columns(self._schema.root(table))
                row = self._get("sys_dictionary", dictionary_row(owner, field_def)["sys_id"])
                if row is None:
                    return self._insert("sys_dictionary", dictionary_row(owner, field_def), "admin")
                return row
            rows, _ = self.list("sys_dictionary", f"name={owner}^element={element}", limit=1)
            if rows:
                return rows[0]
            return self._insert("sys_dictionary", dictionary_row(owner, field_def), "admin")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- layout -------------------------------------------------------------------------------

    def _roots(self) -> list[str]:
        return [t for t in self._schema.table_names() if self._schema.table(t).parent is None]

    def _create_layout(self) -> None:
        self._conn.execute("CREATE TABLE IF NOT EXISTS _meta (key TEXT PRIMARY KEY, value TEXT)")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS _counters (prefix TEXT PRIMARY KEY, next INTEGER)"
        )
        for root in self._roots():
            name = _quote("t_" + root)
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} (_row INTEGER PRIMARY KEY, "
                f'"sys_id" TEXT NOT NULL UNIQUE)'
            )
            self._ensure_columns(root)

    def _ensure_columns(self, root: str) -> None:
        name = _quote("t_" + root)
        present = {r[1] for r in self._conn.execute(f"PRAGMA table_info({name})")}
        for col in self._schema.hierarchy_columns(root):
            if col not in present:
                self._conn.execute(
                    f"ALTER TABLE {name} ADD COLUMN {_quote(col)} TEXT NOT NULL DEFAULT ''"
                )
            if col == "sys_class_name" or col in _INDEXED or col.startswith("u_"):
                index = _quote(f"i_{root}_{col}")
                self._conn.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {name} ({_quote(col)})")
        self._compiled.clear()

    def _load_custom_fields(self) -> None:
        """Re-create fields added in an earlier session (sys_dictionary is the source of truth)."""
        rows = self._conn.execute(
            'SELECT "name", "element", "internal_type", "max_length" FROM "t_sys_dictionary"'
        ).fetchall()
        for table, element, internal_type, max_length in rows:
            if self._schema.has_table(table) and self._schema.field(table, element) is None:
                try:
                    self._schema.add_field(table, element, internal_type, int(max_length or 255))
                except (InvalidField, ValueError):
                    continue
                self._ensure_columns(self._schema.root(table))

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM _meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _seed(self) -> None:  # inside the opening transaction
        for table, values in self._schema.seed_rows():
            self._insert(table, values, "admin")
        self._conn.execute("INSERT OR REPLACE INTO _meta VALUES ('seeded', '1')")

    # -- internals ----------------------------------------------------------------------------

    def _check(self, table: str) -> None:
        if table in self._missing or not self._schema.has_table(table):
            raise TableNotFound(table)

    def _now(self) -> str:
        """The current time as the platform writes it; formatted once per second, not once
        per record (formatting was ~5% of an insert)."""
        if self._wall_clock:
            second: Any = int(time.time())
            if second != self._now_key:
                self._now_text = time.strftime(DATE_FORMAT, time.gmtime(second))
                self._now_key = second
            return self._now_text
        moment = self._clock()
        second = moment.replace(microsecond=0)
        if second != self._now_key:
            self._now_text = moment.astimezone(UTC).strftime(DATE_FORMAT)
            self._now_key = second
        return self._now_text

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        """Make several statements one write: a transaction, or a SAVEPOINT inside one."""
        conn = self._conn
        if not conn.in_transaction:
            conn.execute("BEGIN")
            try:
                yield
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return
        conn.execute("SAVEPOINT snk_write")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO snk_write")
            conn.execute("RELEASE snk_write")
            raise
        conn.execute("RELEASE snk_write")

    def _written(self) -> None:
        self._lookup_cache.clear()
        self._writes += 1
        if self._writes % ANALYZE_EVERY == 0:
            # Fresh statistics let SQLite pick the sys_id index for ORDERBYsys_id pages of a
            # subclass instead of sorting the whole class (10 ms → 0.4 ms on 50,000 CIs).
            self._conn.execute("ANALYZE")

    def _new_sys_id(self) -> str:
        """32 lowercase hex, increasing: 12 hex of milliseconds, 4 of counter, 16 random."""
        seq = self._id_seq + 1
        clock = int(time.time() * 1000) << 16
        self._id_seq = seq = clock if clock > seq else seq
        # The counter makes ids unique; the random half (a PRNG seeded from os.urandom, not a
        # system call per record) only keeps other processes' ids apart.
        return "%032x" % (seq << 64 | self._id_random.getrandbits(64))

    def _plan(self, table: str, cls: str) -> _InsertPlan:
        """The cached insert plan; every cached plan is dropped when the schema changes."""
        if self._plans_version != self._schema.version:
            self._plans.clear()
            self._plans_version = self._schema.version
        plan = self._plans.get((table, cls))
        if plan is None:
            plan = _InsertPlan(self._schema, table, cls, self._schema.root(table))
            self._plans[(table, cls)] = plan
        return plan

    def _writable(self, table: str) -> frozenset[str]:
        return self._plan(table, table).writable

    def _get(self, table: str, sys_id: str) -> dict[str, str] | None:
        plan = self._plan(table, table)
        row = self._conn.execute(plan.get_sql, (sys_id,)).fetchone()
        if row is None:
            return None
        record = dict(zip(plan.visible, row, strict=True))
        if plan.subtree is not None and record["sys_class_name"] not in plan.subtree:
            return None
        return record

    def _next_number(self, prefix: str) -> str:
        row = self._conn.execute(
            "SELECT next FROM _counters WHERE prefix = ?", (prefix,)
        ).fetchone()
        number = row[0] if row else 10001
        self._conn.execute(
            "INSERT OR REPLACE INTO _counters (prefix, next) VALUES (?, ?)", (prefix, number + 1)
        )
        return f"{prefix}{number:07d}"

    def _user_sys_id(self, user: str) -> str:
        row = self._conn.execute(
            'SELECT "sys_id" FROM "t_sys_user" WHERE "user_name" = ?', (user,)
        ).fetchone()
        return row[0] if row else ""

    def _default(self, cls: str, field_def: FieldDef, user: str, now: str) -> str:
        default = field_def.default
        if default == USER_ID_DEFAULT:
            return self._user_sys_id(user)
        if default == NOW_DEFAULT:
            return now
        if default == NUMBER_DEFAULT:
            prefix = self._schema.number_prefix(cls)
            return self._next_number(prefix) if prefix else ""
        return default

    def _insert_class(self, table: str, values: Mapping[str, Any]) -> str:
        """The class a record inserted into ``table`` gets (``sys_class_name`` may pick one)."""
        schema = self._schema
        if "sys_class_name" in values and schema.in_hierarchy(table):
            requested = _as_text(values.get("sys_class_name"))
            if requested in schema.descendants(table) and requested not in self._missing:
                return requested
        return table

    def _insert(self, table: str, values: Mapping[str, Any], user: str) -> dict[str, str]:
        cls = self._insert_class(table, values)
        return self._insert_planned(self._plan(table, cls), cls, values, user)

    def _insert_planned(
        self, plan: _InsertPlan, cls: str, values: Mapping[str, Any], user: str
    ) -> dict[str, str]:
        writable = plan.writable
        given = {
            k: v if v.__class__ is str else _as_text(v) for k, v in values.items() if k in writable
        }
        names = tuple(given)
        statement = plan.statements.get(names) or plan.statement(names)
        now = self._now()
        sys_id = values.get("sys_id")
        sys_id = (sys_id if sys_id.__class__ is str else _as_text(sys_id)) or self._new_sys_id()
        computed = (
            [self._default(cls, f, user, now) for _, f in statement.computed]
            if statement.computed
            else ()
        )
        try:
            self._conn.execute(statement.sql, (*given.values(), *computed, sys_id, now, user))
        except sqlite3.IntegrityError:
            raise DuplicateRecord(
                f"A record with sys_id {sys_id} already exists; "
                "update it instead, or omit sys_id to get a new one"
            ) from None
        self._written()
        record = plan.blank.copy()
        record.update(given)
        if computed:
            for (name, _), value in zip(statement.computed, computed, strict=True):
                record[name] = value
        record["sys_id"] = sys_id
        record["sys_created_on"] = record["sys_updated_on"] = now
        record["sys_created_by"] = record["sys_updated_by"] = user
        if plan.out is None:
            return record
        return {name: record[name] for name in plan.out}

    def _delete(self, table: str, sys_id: str) -> None:
        root = self._schema.root(table)
        self._conn.execute(f'DELETE FROM {_quote("t_" + root)} WHERE "sys_id" = ?', (sys_id,))
        for rel_table, field_name in CASCADE_DELETE:
            target = self._schema.field(rel_table, field_name)
            if (
                target is not None
                and target.reference
                and self._schema.root(target.reference) == root
            ):
                dependants = self._conn.execute(
                    f'SELECT "sys_id" FROM {_quote("t_" + self._schema.root(rel_table))} '
                    f"WHERE {_quote(field_name)} = ?",
                    (sys_id,),
                ).fetchall()
                for (dep,) in dependants:
                    self._delete(rel_table, dep)

    # -- query compilation --------------------------------------------------------------------

    def _compile(self, table: str, query: str, filters: Mapping[str, str] | None) -> _Compiled:
        key = (table, query, tuple(sorted((filters or {}).items())), self._schema.version)
        compiled = self._compiled.get(key)
        if compiled is not None:
            return compiled
        compiled = _Compiler(self._schema, table).compile(parse(query), filters or {})
        if len(self._compiled) > 1024:
            self._compiled.clear()
        self._compiled[key] = compiled
        return compiled


class _Compiler:
    """Encoded query → SQL over ``t_<root> AS r`` (see the module docstring)."""

    def __init__(self, schema: Schema, table: str) -> None:
        self.schema, self.table = schema, table
        self.params: list[Any] = []
        self._aliases = 0

    def compile(self, query: EncodedQuery, filters: Mapping[str, str]) -> _Compiled:
        clauses: list[str] = []
        root = self.schema.root(self.table)
        if self.table != root:
            clauses.append(f'r."sys_class_name" IN {_classes(self.schema, self.table)}')
        for name, value in filters.items():
            sql = self._condition(Condition(name, "=", str(value)))
            if sql is not None:
                clauses.append(sql)
        groups = []
        for group in query.groups:
            terms = []
            for term in group:
                alternatives = [s for s in (self._condition(c) for c in term) if s is not None]
                if alternatives:
                    terms.append(_balanced(alternatives, "OR"))
            if terms:
                groups.append(_balanced(terms, "AND"))
        if groups:
            clauses.append(_balanced(groups, "OR"))
        where = _balanced(clauses, "AND") if clauses else "1"
        order = []
        for key in query.order_by:
            resolved = self._expr(key.field.split("."), self.table, "r")
            if resolved is None:
                continue
            expr, field_def = resolved
            if field_def.is_numeric:
                expr = f"snk_num({expr})"
            order.append(f"{expr} {'DESC' if key.descending else 'ASC'}")
        order.append("r._row ASC")
        return _Compiled(where, self.params, ", ".join(order))

    def _expr(self, path: Sequence[str], table: str, alias: str) -> tuple[str, FieldDef] | None:
        """SQL expression reading ``a.b.c`` from ``alias`` (a row of ``table``), or None."""
        field_def = self.schema.field(table, path[0])
        if field_def is None:
            return None
        column = f"{alias}.{_quote(path[0])}"
        if len(path) == 1:
            return column, field_def
        target = field_def.reference
        if not target or not self.schema.has_table(target):
            return None
        self._aliases += 1
        sub = f"d{self._aliases}"
        inner = self._expr(path[1:], target, sub)
        if inner is None:
            return None
        target_root = self.schema.root(target)
        class_filter = ""
        if target != target_root:
            class_filter = f' AND {sub}."sys_class_name" IN {_classes(self.schema, target)}'
        sql = (
            f"COALESCE((SELECT {inner[0]} FROM {_quote('t_' + target_root)} AS {sub} "
            f"WHERE {sub}.\"sys_id\" = {column}{class_filter}), '')"
        )
        return sql, inner[1]

    def _condition(self, cond: Condition) -> str | None:
        """SQL for one condition (field expressions carry no parameters), None to drop it."""
        resolved = self._expr(cond.path, self.table, "r")
        if resolved is None:
            return None
        expr = resolved[0]
        op, value = cond.operator, cond.value
        if op in FIELD_OPERATORS:
            other = self._expr(value.split("."), self.table, "r")
            if other is None:
                return None
            return f"snk_cmp({expr}, '{FIELD_OPERATORS[op]}', {other[0]})"
        if op in ("=", "!="):
            self.params.append(value)
            return f"{expr} {op} ?"
        if op in ("<", "<=", ">", ">="):
            if as_number(value) is None:  # no number on one side: plain string order, natively
                self.params.append(value)
                return f"{expr} {op} ?"
            if value.isascii() and value.isdigit() and len(value) < 16:
                # a count against a column of plain digits (sys_mod_count > 0: a rerun's
                # listing) compares natively; any other value goes through compare()
                self.params.extend([int(value), value])
                return (
                    f"(CASE WHEN {expr} != '' AND {expr} NOT GLOB '*[^0-9]*' "
                    f"AND length({expr}) < 16 THEN CAST({expr} AS INTEGER) {op} ? "
                    f"ELSE snk_cmp({expr}, '{op}', ?) END)"
                )
            self.params.append(value)
            return f"snk_cmp({expr}, '{op}', ?)"
        if op in ("LIKE", "NOT LIKE"):
            self.params.append(value)
            return f"instr({expr}, ?) {'>' if op == 'LIKE' else '='} 0"
        if op == "STARTSWITH":
            self.params.extend([len(value), value])
            return f"substr({expr}, 1, ?) = ?"
        if op == "ENDSWITH":
            if not value:
                return "1"
            self.params.extend([-len(value), value])
            return f"substr({expr}, ?) = ?"
        if op in ("IN", "NOT IN"):
            self.params.append(json.dumps(value.split(",")))
            return f"{expr} {op} (SELECT value FROM json_each(?))"
        if op in ("ISEMPTY", "EMPTYSTRING"):
            return f"{expr} = ''"
        if op == "ISNOTEMPTY":
            return f"{expr} != ''"
        if op == "ANYTHING":
            return "1"
        if op == "BETWEEN":
            low, high = between_bounds(value)
            self.params.extend([low, high])
            return f"(snk_cmp({expr}, '>=', ?) AND snk_cmp({expr}, '<=', ?))"
        if op == "INSTANCEOF":
            if not self.schema.has_table(value):
                return "0"
            return f"{expr} IN {_classes(self.schema, value)}"
        return None
