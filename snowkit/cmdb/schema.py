"""The source-id fields the sync relies on: check them, create them where allowed.

``u_unifi_source_id`` on ``cmdb_ci`` (inherited by every CI class) and ``cmn_location`` is how a
rerun finds what an earlier run wrote. On a real instance the field exists only if an admin
created it, and the Table API silently ignores unknown fields on insert, so a load without it
would duplicate everything on the next run. We therefore check ``sys_dictionary`` before any
write, create the fields when the user may (``snowkit setup``), and otherwise stop with the
exact list of what an admin must add.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from snowkit.cmdb.fields import SOURCE_ID_FIELD, as_str
from snowkit.ops.errors import ErrorCategory, ErrorSeverity, OperationalError
from snowkit.servicenow.query import Query

REQUIRED_FIELDS: tuple[tuple[str, str], ...] = (
    ("cmdb_ci", SOURCE_ID_FIELD),
    ("cmn_location", SOURCE_ID_FIELD),
)
FIELD_DEFINITION = {"internal_type": "string", "max_length": "255"}


class SchemaNotReadyError(OperationalError):
    """A field the sync needs is missing and could not be created with these credentials."""

    default_category = ErrorCategory.CONFIGURATION
    default_severity = ErrorSeverity.CRITICAL


@dataclass
class SchemaStatus:
    """Which required fields exist, which this call created, which are still missing."""

    present: list[tuple[str, str]] = field(default_factory=list)
    created: list[tuple[str, str]] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    denied: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    def admin_instructions(self) -> str:
        """What an admin must add, field by field."""
        lines = [
            f"  - table {table}: column {element} (type String, max length 255, "
            f"label 'UniFi source id')"
            for table, element in self.missing
        ]
        return (
            "an admin must add these dictionary entries (System Definition > Dictionary > New, "
            "or run `snowkit setup` with an admin account):\n" + "\n".join(lines)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "present": [".".join(p) for p in self.present],
            "created": [".".join(p) for p in self.created],
            "missing": [".".join(p) for p in self.missing],
        }


def field_exists(client: Any, table: str, element: str) -> bool:
    """Whether ``sys_dictionary`` has ``element`` on ``table``."""
    query = Query().eq("name", table).eq("element", element)
    return any(True for _ in client.query("sys_dictionary", query, fields=["sys_id"]))


def check_schema(client: Any) -> SchemaStatus:
    """Read-only check of every required field (one ``sys_dictionary`` query)."""
    tables = sorted({table for table, _ in REQUIRED_FIELDS})
    elements = sorted({element for _, element in REQUIRED_FIELDS})
    query = Query().in_("name", tables).in_("element", elements)
    found = {
        (as_str(row.get("name")), as_str(row.get("element")))
        for row in client.query("sys_dictionary", query, fields=["sys_id", "name", "element"])
    }
    status = SchemaStatus()
    for wanted in REQUIRED_FIELDS:
        (status.present if wanted in found else status.missing).append(wanted)
    return status


def ensure_schema(client: Any, *, create: bool = True) -> SchemaStatus:
    """Check the fields and, with ``create``, add the missing ones.

    Raises ``SchemaNotReadyError`` (listing exactly what an admin must add) when a field is
    still missing: because creating was not asked for, or the user lacks the rights (403).
    """
    status = check_schema(client)
    if status.missing and create:

        def add(table: str, element: str) -> bool:
            """Create one field; False when the account may not (403)."""
            body = {
                "name": table,
                "element": element,
                "column_label": "UniFi source id",
                **FIELD_DEFINITION,
            }
            try:
                client.create("sys_dictionary", body)
            except Exception as exc:
                if _is_forbidden(exc):
                    return False
                raise
            return True

        wanted = list(status.missing)
        with ThreadPoolExecutor(
            max_workers=len(wanted), thread_name_prefix="snowkit-setup"
        ) as pool:
            outcomes = list(pool.map(lambda m: add(*m), wanted))
        for field_name, created in zip(wanted, outcomes, strict=True):
            (status.created if created else status.denied).append(field_name)
        status.missing = [m for m, created in zip(wanted, outcomes, strict=True) if not created]
    if status.missing:
        why = (
            "your account may not create dictionary entries (403)"
            if status.denied
            else "run `snowkit setup` to create them"
        )
        raise SchemaNotReadyError(
            "the CMDB is missing the field(s) the sync needs to stay idempotent "
            f"({', '.join('.'.join(m) for m in status.missing)}); {why}. "
            + status.admin_instructions(),
            details=status.to_dict(),
            guidance="run `snowkit setup` with an account that may add dictionary entries "
            "(admin), or have an admin add the fields listed above; then run again.",
        )
    return status


def _is_forbidden(exc: BaseException) -> bool:
    if type(exc).__name__ == "AuthorizationError":
        return True
    context = getattr(exc, "context", None)
    return getattr(context, "http_status", None) == 403
