"""Table definitions of the embedded instance: fields, types, references, class hierarchy, seeds.

The platform's dictionary (``sys_db_object`` + ``sys_dictionary``) is what makes a table exist
and a field writable; this module is our small, static copy of the parts snowkit and pysnc touch,
plus the one dynamic part: custom ``u_*`` fields added at run time (``Schema.add_field``), which
subclasses inherit at once, exactly as on a real instance.

Hierarchies (table-per-hierarchy, as on the platform): ``task`` → ``incident`` / ``problem``;
``cmdb_ci`` → ``cmdb_ci_hardware`` → ``cmdb_ci_netgear`` → ``cmdb_ci_ip_router`` /
``cmdb_ci_ip_switch`` / ``cmdb_ci_wap_network``, ``cmdb_ci_hardware`` → ``cmdb_ci_computer``,
and ``cmdb_ci`` → ``cmdb_ci_network_adapter`` (an adapter is a CI too, holding a MAC).
Every table of a hierarchy (a table with a parent or with children) carries ``sys_class_name``.

Dictionary defaults use the platform's own notation where the value is computed at insert time:
``javascript:gs.getUserID()`` (the inserting user's sys_id), ``javascript:gs.nowDateTime()``
(now, UTC) and ``javascript:getNextObjNumberPadded()`` (``<prefix><7 digits>``, e.g. INC0010001);
the store evaluates these three and nothing else.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

SYSTEM_FIELDS: tuple[str, ...] = (
    "sys_id",
    "sys_created_on",
    "sys_created_by",
    "sys_updated_on",
    "sys_updated_by",
    "sys_mod_count",
    "sys_tags",
)
"""Fields every record carries; ``sys_class_name`` is added on tables of a hierarchy."""

NUMERIC_TYPES = frozenset({"integer", "decimal", "float", "longint"})

_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")

USER_ID_DEFAULT = "javascript:gs.getUserID()"
NOW_DEFAULT = "javascript:gs.nowDateTime()"
NUMBER_DEFAULT = "javascript:getNextObjNumberPadded()"


class TableNotFound(Exception):
    """The table does not exist (or is "not installed"); the Table API answers 400."""

    def __init__(self, table: str) -> None:
        super().__init__(f"Invalid table {table}")
        self.table = table


class WriteRejected(ValueError):
    """A write the platform refuses (the Table API answers 400 with this message as detail)."""


class InvalidField(WriteRejected):
    """A field definition that cannot be created (bad name, or clashes with a subclass field)."""


@dataclass(frozen=True)
class FieldDef:
    """One column: its dictionary type, reference target, default and choice labels."""

    name: str
    internal_type: str = "string"
    reference: str | None = None
    max_length: int = 255
    default: str = ""
    choices: Mapping[str, str] = field(default_factory=dict)
    label: str = ""

    @property
    def column_label(self) -> str:
        return self.label or self.name.removeprefix("u_").replace("_", " ").title()

    @property
    def is_numeric(self) -> bool:
        return self.internal_type in NUMERIC_TYPES


@dataclass
class TableDef:
    """One table: its own fields (not inherited ones), its parent and its display field."""

    name: str
    label: str
    parent: str | None = None
    fields: dict[str, FieldDef] = field(default_factory=dict)
    display_field: str = ""
    number_prefix: str = ""


def _f(name: str, internal_type: str = "string", **kw: object) -> FieldDef:
    return FieldDef(name, internal_type, **kw)  # type: ignore[arg-type]


def _ref(name: str, target: str, default: str = "") -> FieldDef:
    return FieldDef(name, "reference", reference=target, max_length=32, default=default)


_SYSTEM_DEFS: dict[str, FieldDef] = {
    "sys_id": _f("sys_id", "GUID", max_length=32, label="Sys ID"),
    "sys_created_on": _f("sys_created_on", "glide_date_time", label="Created"),
    "sys_created_by": _f("sys_created_by", max_length=40, label="Created by"),
    "sys_updated_on": _f("sys_updated_on", "glide_date_time", label="Updated"),
    "sys_updated_by": _f("sys_updated_by", max_length=40, label="Updated by"),
    "sys_mod_count": _f("sys_mod_count", "integer", label="Updates"),
    "sys_tags": _f("sys_tags", max_length=4000, label="Tags"),
}

_PRIORITY = {
    "1": "1 - Critical",
    "2": "2 - High",
    "3": "3 - Moderate",
    "4": "4 - Low",
    "5": "5 - Planning",
}
_IMPACT = {"1": "1 - High", "2": "2 - Medium", "3": "3 - Low"}
_INCIDENT_STATE = {
    "1": "New",
    "2": "In Progress",
    "3": "On Hold",
    "6": "Resolved",
    "7": "Closed",
    "8": "Canceled",
}
_PROBLEM_STATE = {
    "101": "New",
    "102": "Assess",
    "103": "Root Cause Analysis",
    "104": "Fix in Progress",
    "106": "Resolved",
    "107": "Closed",
}
_OPERATIONAL_STATUS = {
    "1": "Operational",
    "2": "Non-Operational",
    "3": "Repair in Progress",
    "4": "DR Standby",
    "5": "Ready",
    "6": "Retired",
}
_INSTALL_STATUS = {
    "1": "Installed",
    "2": "On Order",
    "3": "In Maintenance",
    "4": "Pending Install",
    "5": "Pending Repair",
    "6": "In Stock",
    "7": "Retired",
    "8": "Stolen",
    "100": "Absent",
}


def _table(
    name: str,
    label: str,
    fields: Iterable[FieldDef],
    *,
    parent: str | None = None,
    display: str = "",
    prefix: str = "",
) -> TableDef:
    return TableDef(name, label, parent, {f.name: f for f in fields}, display, prefix)


def _base_tables() -> list[TableDef]:
    task_fields = [
        _f("number", max_length=40, default=NUMBER_DEFAULT),
        _f("short_description", max_length=160),
        _f("description", max_length=4000),
        _f("active", "boolean", default="true"),
        _f("priority", "integer", default="5", choices=_PRIORITY),
        _f("impact", "integer", default="3", choices=_IMPACT),
        _f("urgency", "integer", default="3", choices=_IMPACT),
        _ref("opened_by", "sys_user", USER_ID_DEFAULT),
        _f("opened_at", "glide_date_time", default=NOW_DEFAULT),
        _ref("assigned_to", "sys_user"),
        _ref("assignment_group", "sys_user_group"),
        _ref("cmdb_ci", "cmdb_ci"),
        _ref("company", "core_company"),
        _ref("location", "cmn_location"),
        _f("closed_at", "glide_date_time"),
        _f("close_notes", max_length=4000),
        _f("work_notes", "journal_input", max_length=4000),
        _f("comments", "journal_input", max_length=4000),
        _f("reassignment_count", "integer", default="0"),
        _ref("sys_domain", "sys_user_group", "global"),
        _f("sys_domain_path", default="/"),
    ]
    ci_fields = [
        _f("name"),
        _f("serial_number"),
        _f("asset_tag"),
        _f("ip_address", max_length=255),
        _f("mac_address", max_length=18),
        _ref("manufacturer", "core_company"),
        _ref("model_id", "cmdb_model"),
        _f("model_number"),
        _f("firmware_version"),
        _ref("location", "cmn_location"),
        _f("operational_status", "integer", default="1", choices=_OPERATIONAL_STATUS),
        _f("install_status", "integer", default="1", choices=_INSTALL_STATUS),
        _f("discovery_source", max_length=40),
        _f("short_description", max_length=1000),
        _ref("company", "core_company"),
        _ref("support_group", "sys_user_group"),
        _ref("assigned_to", "sys_user"),
        _f("first_discovered", "glide_date_time"),
        _f("last_discovered", "glide_date_time"),
    ]
    return [
        _table(
            "sys_user",
            "User",
            [
                _f("user_name", max_length=40),
                _f("first_name", max_length=50),
                _f("last_name", max_length=50),
                _f("name", max_length=151),
                _f("email", max_length=100),
                _f("title", max_length=60),
                _f("active", "boolean", default="true"),
                _f("locked_out", "boolean", default="false"),
                _f("time_zone", max_length=40),
                _ref("department", "cmn_department"),
                _ref("company", "core_company"),
                _ref("location", "cmn_location"),
                _ref("manager", "sys_user"),
            ],
            display="name",
        ),
        _table(
            "sys_user_group",
            "Group",
            [
                _f("name", max_length=80),
                _f("description", max_length=1000),
                _f("active", "boolean", default="true"),
                _ref("manager", "sys_user"),
                _f("email", max_length=100),
            ],
            display="name",
        ),
        _table(
            "sys_user_role",
            "Role",
            [_f("name", max_length=100), _f("description", max_length=1000)],
            display="name",
        ),
        _table(
            "sys_user_has_role",
            "User Role",
            [
                _ref("user", "sys_user"),
                _ref("role", "sys_user_role"),
                _f("state", default="active"),
            ],
        ),
        _table("cmn_department", "Department", [_f("name", max_length=100)], display="name"),
        _table(
            "core_company",
            "Company",
            [
                _f("name", max_length=80),
                _f("manufacturer", "boolean", default="false"),
                _f("vendor", "boolean", default="false"),
                _f("stock_symbol", max_length=10),
            ],
            display="name",
        ),
        _table(
            "cmdb_model",
            "Product Model",
            [_f("name"), _ref("manufacturer", "core_company"), _f("model_number")],
            display="name",
        ),
        _table(
            "cmn_location",
            "Location",
            [
                _f("name"),
                _f("full_name"),
                _f("street"),
                _f("city", max_length=100),
                _f("state", max_length=100),
                _f("zip", max_length=40),
                _f("country", max_length=40),
                _f("latitude", "float", max_length=40),
                _f("longitude", "float", max_length=40),
                _f("time_zone", max_length=40),
                _ref("parent", "cmn_location"),
                _ref("company", "core_company"),
            ],
            display="full_name",
        ),
        _table("task", "Task", task_fields, display="number", prefix="TASK"),
        _table(
            "incident",
            "Incident",
            [
                _f("state", "integer", default="1", choices=_INCIDENT_STATE),
                _ref("caller_id", "sys_user"),
                _f("category", max_length=40, default="inquiry"),
                _f("subcategory", max_length=40),
                _f("close_code", max_length=40),
                _f("resolved_at", "glide_date_time"),
                _ref("resolved_by", "sys_user"),
                _ref("problem_id", "problem"),
            ],
            parent="task",
            display="number",
            prefix="INC",
        ),
        _table(
            "problem",
            "Problem",
            [
                _f("state", "integer", default="101", choices=_PROBLEM_STATE),
                _f("problem_state", "integer", default="1"),
                _f("known_error", "boolean", default="false"),
                _f("cause_notes", max_length=4000),
                _f("fix_notes", max_length=4000),
            ],
            parent="task",
            display="number",
            prefix="PRB",
        ),
        _table("cmdb_ci", "Configuration Item", ci_fields, display="name"),
        _table(
            "cmdb_ci_hardware",
            "Hardware",
            [_f("hardware_status", default="installed"), _f("cpu_count", "integer")],
            parent="cmdb_ci",
            display="name",
        ),
        _table(
            "cmdb_ci_computer",
            "Computer",
            [_f("os", max_length=40), _f("os_version", max_length=40), _f("ram", "integer")],
            parent="cmdb_ci_hardware",
            display="name",
        ),
        _table(
            "cmdb_ci_netgear",
            "Network Gear",
            [_f("ports", "integer"), _f("can_switch", "boolean", default="false")],
            parent="cmdb_ci_hardware",
            display="name",
        ),
        _table(
            "cmdb_ci_ip_router",
            "IP Router",
            [_f("can_route", "boolean", default="true")],
            parent="cmdb_ci_netgear",
            display="name",
        ),
        _table(
            "cmdb_ci_ip_switch",
            "IP Switch",
            [_f("can_partitionvlans", "boolean", default="false")],
            parent="cmdb_ci_netgear",
            display="name",
        ),
        _table(
            "cmdb_ci_wap_network",
            "Wireless Access Point",
            [_f("channel", "integer"), _f("radio_count", "integer")],
            parent="cmdb_ci_netgear",
            display="name",
        ),
        _table(  # the Hardware rule's MAC entry searches it (name + mac_address, IRE lookup)
            "cmdb_ci_network_adapter",
            "Network Adapter",
            [_ref("cmdb_ci", "cmdb_ci"), _f("netmask", max_length=40)],
            parent="cmdb_ci",
            display="name",
        ),
        _table(
            "cmdb_rel_type",
            "CI Relationship Type",
            [_f("name", max_length=100), _f("parent_descriptor"), _f("child_descriptor")],
            display="name",
        ),
        _table(
            "cmdb_rel_ci",
            "CI Relationship",
            [
                _ref("parent", "cmdb_ci"),
                _ref("child", "cmdb_ci"),
                _ref("type", "cmdb_rel_type"),
                _f("connection_strength", default="always"),
                _f("port", max_length=40),
                _f("percent_outage", "integer"),
            ],
        ),
        _table(  # IRE's source cross-reference (source_name/source_native_key -> CI)
            "sys_object_source",
            "Source",
            [
                _f("name", max_length=100),  # the payload's source_name
                _f("id", max_length=255),  # the payload's source_native_key
                _f("target_sys_id", max_length=32),
                _f("target_table", "table_name", max_length=80),
                _f("last_scan", "glide_date_time"),
            ],
            display="name",
        ),
        _table(
            "sys_db_object",
            "Table",
            [
                _f("name", max_length=80),
                _f("label", max_length=80),
                _ref("super_class", "sys_db_object"),
                _f("is_extendable", "boolean", default="false"),
            ],
            display="label",
        ),
        _table(
            "sys_dictionary",
            "Dictionary Entry",
            [
                _f("name", "table_name", max_length=80),
                _f("element", max_length=80),
                _f("column_label", max_length=80),
                _f("internal_type", max_length=40, default="string"),
                _f("max_length", "integer", default="255"),
                _f("reference", "table_name", max_length=80),
                _f("default_value", max_length=512),
                _f("active", "boolean", default="true"),
                _f("mandatory", "boolean", default="false"),
                _f("read_only", "boolean", default="false"),
            ],
            display="column_label",
        ),
        _table(
            "syslog",
            "System Log",
            [_f("level", "integer", default="0"), _f("message", max_length=4000), _f("source")],
        ),
    ]


REL_TYPES: tuple[tuple[str, str], ...] = (
    ("Connects to::Connected by", "5599a965c0a8010e00da3b58b113d70e"),
    ("Contains::Contained by", "55c95bf6c0a8010e0118ec7056ebc54d"),
    ("Depends on::Used by", "1a9cb166f1571100a92eb60da2bce5c5"),
    ("Runs on::Runs", "60bc4e22c0a8010e01f074cbe6bd73c3"),
    ("Hosted on::Hosts", "5f985e0ec0a8010e00a9714f2a172815"),
    ("Uses::Used by", "cb5592603751200032ff8c00dfbe5d17"),
    ("Owns::Owned by", "25242fb2377a9200738d021a54990e88"),
    ("Cluster of::Cluster", "a99d39118f10310091769012cbbe4429"),
    ("Managed by::Manages", ""),
    ("Located in::Houses", ""),
    ("IP Connection::IP Connection", ""),
    ("Controller for::Controlled by", ""),
    ("Members::Member of", ""),
    ("Virtualized by::Virtualizes", ""),
    ("Provides::Provided by", ""),
    ("Powered by::Powers", ""),
    ("Impacts::Impacted by", ""),
)
"""Base-system relationship types; the sys_ids of the first eight are the real ones (reference
§2.7); the others get a stable made-up id (``stable_sys_id``)."""

ADMIN_SYS_ID = "6816f79cc0a8016401c5a33be04be441"
PROBLEM_ADMIN_SYS_ID = "26fbff173b331300ad3cc9bb34efc4bd"


def stable_sys_id(*parts: str) -> str:
    """A deterministic 32-hex sys_id for seed rows, so every fresh instance has the same ids."""
    return hashlib.md5("|".join(parts).encode(), usedforsecurity=False).hexdigest()


READONLY_SYS_ID = stable_sys_id("sys_user", "readonly")


class Schema:
    """The dictionary: which tables exist, their fields (own + inherited + system) and classes.

    Reads are lock-free (dict lookups); ``add_field`` replaces the per-table caches under a lock,
    and bumps ``version`` so compiled-query caches keyed on it are invalidated.
    """

    def __init__(self, tables: Iterable[TableDef] | None = None) -> None:
        self._tables: dict[str, TableDef] = {t.name: t for t in (tables or _base_tables())}
        self._lock = threading.RLock()
        self.version = 0
        self._fields_cache: dict[str, dict[str, FieldDef]] = {}
        self._children: dict[str, list[str]] = {}
        # sys_class_name displays the class label ("IP Switch"), as on the platform.
        self._class_def = FieldDef(
            "sys_class_name",
            "sys_class_name",
            max_length=80,
            label="Class",
            choices={t.name: t.label for t in self._tables.values()},
        )
        for t in self._tables.values():
            if t.parent:
                self._children.setdefault(t.parent, []).append(t.name)

    # -- tables and classes ---------------------------------------------------------------
    def table_names(self) -> list[str]:
        return list(self._tables)

    def has_table(self, table: str) -> bool:
        return table in self._tables

    def table(self, table: str) -> TableDef:
        try:
            return self._tables[table]
        except KeyError:
            raise TableNotFound(table) from None

    def ancestors(self, table: str) -> list[str]:
        """``table`` and its parents, nearest first (``cmdb_ci_ip_switch`` … ``cmdb_ci``)."""
        chain = []
        current: str | None = table
        while current:
            chain.append(current)
            current = self.table(current).parent
        return chain

    def root(self, table: str) -> str:
        return self.ancestors(table)[-1]

    def descendants(self, table: str) -> list[str]:
        """``table`` and every class below it (its subtree), parent before children."""
        out = [table]
        for child in self._children.get(table, ()):
            out.extend(self.descendants(child))
        return out

    def in_hierarchy(self, table: str) -> bool:
        """Whether records of this table carry ``sys_class_name``."""
        root = self.root(table)
        return bool(self._children.get(root))

    def is_instance_of(self, cls: str, table: str) -> bool:
        return cls in self._tables and table in self.ancestors(cls)

    # -- fields ---------------------------------------------------------------------------
    def fields(self, table: str) -> dict[str, FieldDef]:
        """Every column visible on ``table``: system fields, inherited fields, its own."""
        cached = self._fields_cache.get(table)
        if cached is not None:
            return cached
        version = self.version
        out: dict[str, FieldDef] = dict(_SYSTEM_DEFS)
        if self.in_hierarchy(table):
            out["sys_class_name"] = self._class_def
        for name in reversed(self.ancestors(table)):
            out.update(self._tables[name].fields)
        with self._lock:  # never cache a view computed while add_field was changing the tables
            if version == self.version:
                self._fields_cache[table] = out
        return out

    def field(self, table: str, name: str) -> FieldDef | None:
        return self.fields(table).get(name)

    def hierarchy_columns(self, root: str) -> list[str]:
        """Every column any class of the hierarchy has: the storage layout of ``root``."""
        cols: dict[str, None] = {}
        for t in self.descendants(root):
            cols.update(dict.fromkeys(self.fields(t)))
        return list(cols)

    def display_field(self, table: str) -> str:
        for name in self.ancestors(table):
            if self._tables[name].display_field:
                return self._tables[name].display_field
        fields = self.fields(table)
        for candidate in ("name", "number"):
            if candidate in fields:
                return candidate
        return ""

    def number_prefix(self, table: str) -> str:
        for name in self.ancestors(table):
            if self._tables[name].number_prefix:
                return self._tables[name].number_prefix
        return ""

    def defined_on(self, table: str, name: str) -> str | None:
        """The table (``table`` or an ancestor) whose own fields include ``name``."""
        for t in self.ancestors(table):
            if name in self._tables[t].fields:
                return t
        return None

    def add_field(
        self, table: str, element: str, internal_type: str = "string", max_length: int = 255
    ) -> tuple[FieldDef, bool]:
        """Define ``element`` on ``table``; returns (field, created). Existing names are kept."""
        if not _IDENT.match(element) or element.startswith("sys_"):
            raise InvalidField(
                f"Invalid column name {element!r}: use lowercase letters, digits and '_', "
                "starting with a letter (custom fields conventionally start with 'u_')"
            )
        with self._lock:
            existing = self.fields(table).get(element)
            if existing is not None:
                return existing, False
            clash = [d for d in self.descendants(table) if element in self._tables[d].fields]
            if clash:
                raise InvalidField(f"Column {element} already exists on subclass {clash[0]}")
            new = FieldDef(element, internal_type or "string", max_length=int(max_length or 255))
            self._tables[table].fields = {**self._tables[table].fields, element: new}
            self._fields_cache.clear()
            self.version += 1  # last: a reader that saw the old version will not cache
            return new, True

    # -- seeds ----------------------------------------------------------------------------
    def seed_rows(self) -> Iterator[tuple[str, dict[str, str]]]:
        """(table, values) for every seed record, in insertion order."""
        yield from _seed_people()
        for name, sys_id in REL_TYPES:
            parent_d, child_d = name.split("::")
            yield (
                "cmdb_rel_type",
                {
                    "sys_id": sys_id or stable_sys_id("cmdb_rel_type", name),
                    "name": name,
                    "parent_descriptor": parent_d,
                    "child_descriptor": child_d,
                },
            )
        for t in self._tables.values():
            yield (
                "sys_db_object",
                {
                    "sys_id": stable_sys_id("sys_db_object", t.name),
                    "name": t.name,
                    "label": t.label,
                    "super_class": stable_sys_id("sys_db_object", t.parent) if t.parent else "",
                    "is_extendable": "true" if self._children.get(t.name) else "false",
                },
            )
        for t in self._tables.values():
            own = dict(t.fields)
            if t.parent is None:
                own = {**_SYSTEM_DEFS, **own}
                if self._children.get(t.name):
                    own["sys_class_name"] = self._class_def
            for f in own.values():
                yield ("sys_dictionary", dictionary_row(t.name, f))
        yield from _seed_tasks()


def dictionary_row(table: str, f: FieldDef) -> dict[str, str]:
    """The ``sys_dictionary`` record describing field ``f`` of ``table``."""
    return {
        "sys_id": stable_sys_id("sys_dictionary", table, f.name),
        "name": table,
        "element": f.name,
        "column_label": f.column_label,
        "internal_type": f.internal_type,
        "max_length": str(f.max_length),
        "reference": f.reference or "",
        "default_value": f.default,
        "active": "true",
    }


def _seed_people() -> Iterator[tuple[str, dict[str, str]]]:
    users = [
        (ADMIN_SYS_ID, "admin", "System", "Administrator", "admin@example.com"),
        (READONLY_SYS_ID, "readonly", "Read", "Only", "readonly@example.com"),
        (
            PROBLEM_ADMIN_SYS_ID,
            "problem.admin",
            "Problem",
            "Administrator",
            "problem.admin@example.com",
        ),
    ]
    for sys_id, user_name, first, last, email in users:
        yield (
            "sys_user",
            {
                "sys_id": sys_id,
                "user_name": user_name,
                "first_name": first,
                "last_name": last,
                "name": f"{first} {last}",
                "email": email,
                "time_zone": "UTC",
            },
        )
    roles = {"admin": stable_sys_id("sys_user_role", "admin")}
    roles["snc_read_only"] = stable_sys_id("sys_user_role", "snc_read_only")
    roles["itil"] = stable_sys_id("sys_user_role", "itil")
    for name, sys_id in roles.items():
        yield ("sys_user_role", {"sys_id": sys_id, "name": name})
    for user_id, role in (
        (ADMIN_SYS_ID, "admin"),
        (READONLY_SYS_ID, "snc_read_only"),
        (PROBLEM_ADMIN_SYS_ID, "itil"),
    ):
        yield (
            "sys_user_has_role",
            {
                "sys_id": stable_sys_id("sys_user_has_role", user_id, role),
                "user": user_id,
                "role": roles[role],
            },
        )
    # Task records' sys_domain references the "global" domain by this literal id.
    yield ("sys_user_group", {"sys_id": "global", "name": "global"})
    yield (
        "sys_user_group",
        {
            "sys_id": stable_sys_id("sys_user_group", "Network"),
            "name": "Network",
            "manager": ADMIN_SYS_ID,
        },
    )


def _seed_tasks() -> Iterator[tuple[str, dict[str, str]]]:
    incidents = [
        ("INC0000001", "Unable to connect to VPN", "1", "2"),
        ("INC0000002", "Switch in rack 3 is flapping", "2", "1"),
        ("INC0000003", "Printer on floor 2 offline", "7", "4"),
    ]
    for number, text, state, priority in incidents:
        yield (
            "incident",
            {
                "sys_id": stable_sys_id("incident", number),
                "number": number,
                "short_description": text,
                "state": state,
                "priority": priority,
                "active": "false" if state == "7" else "true",
                "caller_id": ADMIN_SYS_ID,
            },
        )
    for number, text in (("PRB0000001", "Recurring VPN drops"), ("PRB0000002", "Flapping uplinks")):
        yield (
            "problem",
            {
                "sys_id": stable_sys_id("problem", number),
                "number": number,
                "short_description": text,
                "opened_by": PROBLEM_ADMIN_SYS_ID,
            },
        )
