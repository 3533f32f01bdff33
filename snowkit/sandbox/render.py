"""Record → Table API JSON, per ``sysparm_display_value`` × ``sysparm_exclude_reference_link``.

The shapes (reference §2.4), for a plain field and for a reference to table T:

=============  ==============================  =========================================
display_value  exclude_reference_link=false    exclude_reference_link=true
=============  ==============================  =========================================
false          ``"2"`` / ``{link, value}``     ``"2"`` / ``"<sys_id>"``
true           ``"In Progress"`` /             ``"In Progress"`` / ``"Fred Luddy"``
               ``{display_value, link}``
all            ``{display_value, value}`` /    ``{display_value, value}`` (both kinds)
               ``{display_value, link, value}``
=============  ==============================  =========================================

``link`` is ``{base_url}/api/now/table/T/<sys_id>`` where T is the table the field references.
An empty reference is ``""`` in false/true modes and ``{"display_value": "", "value": ""}`` in
all mode. Display values: choice label for choice fields, the target's display field (``name``,
``number``…) for references, the value itself otherwise (dates stay UTC: the sandbox's users
live in UTC).

``sysparm_fields`` picks and orders the keys; unknown names are ignored; a dot-walked name
(``opened_by.email``) is resolved through the store and returned under its full dotted name as
a flat key, which is where pysnc looks for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from snowkit.sandbox.schema import FieldDef, Schema

if TYPE_CHECKING:
    from snowkit.sandbox.store import Store

DISPLAY_MODES = ("false", "true", "all")


def render_record(
    record: Mapping[str, str],
    table: str,
    schema: Schema,
    *,
    base_url: str,
    display_value: str = "false",
    exclude_reference_link: bool = False,
    fields: Sequence[str] | None = None,
    store: Store | None = None,
) -> dict[str, Any]:
    """One record as the Table API returns it. ``store`` is needed for reference display
    values and dot-walked fields; without it those display as ``""`` / are left out."""
    mode = display_value.lower() if display_value.lower() in DISPLAY_MODES else "false"
    base = base_url.rstrip("/")
    visible = schema.fields(table) if schema.has_table(table) else {}
    out: dict[str, Any] = {}
    for name in _selected(record, fields):
        if "." in name:
            walked = _walk(record, table, name.split("."), schema, store)
            if walked is None:
                continue
            value, field_def = walked
        elif name in record:
            value, field_def = str(record[name]), visible.get(name) or FieldDef(name)
        else:
            continue
        out[name] = render_value(
            value,
            field_def,
            mode=mode,
            exclude_link=exclude_reference_link,
            base_url=base,
            store=store,
        )
    return out


def render_records(
    records: Sequence[Mapping[str, str]], table: str, schema: Schema, **options: Any
) -> list[dict[str, Any]]:
    """``render_record`` over a page of records (same keyword options)."""
    return [render_record(r, table, schema, **options) for r in records]


def render_value(
    value: str,
    field_def: FieldDef,
    *,
    mode: str,
    exclude_link: bool,
    base_url: str,
    store: Store | None,
) -> Any:
    """One field's JSON value (see the module docstring for the shapes)."""
    target = field_def.reference
    if target is None:
        if mode == "false":
            return value
        display = field_def.choices.get(value, value)
        return display if mode == "true" else {"display_value": display, "value": value}
    if value == "":
        return {"display_value": "", "value": ""} if mode == "all" else ""
    link = f"{base_url}/api/now/table/{target}/{value}"
    if mode == "false":
        return value if exclude_link else {"link": link, "value": value}
    display = store.display_value(target, value) if store is not None else ""
    if mode == "true":
        return display if exclude_link else {"display_value": display, "link": link}
    if exclude_link:
        return {"display_value": display, "value": value}
    return {"display_value": display, "link": link, "value": value}


def _selected(record: Mapping[str, str], fields: Sequence[str] | None) -> list[str]:
    if fields is None:
        return list(record)
    names = [f.strip() for f in fields if f and f.strip()]
    if not names:
        return list(record)
    return list(dict.fromkeys(names))


def _walk(
    record: Mapping[str, str],
    table: str,
    path: Sequence[str],
    schema: Schema,
    store: Store | None,
) -> tuple[str, FieldDef] | None:
    """Follow references along ``path``: (final value, final field), or None for a bad path.
    An empty or dangling reference on the way gives ``""``."""
    if store is None or not schema.has_table(table):
        return None
    current: Mapping[str, str] | None = record
    for step in path[:-1]:
        field_def = schema.field(table, step)
        if (
            field_def is None
            or not field_def.reference
            or not schema.has_table(field_def.reference)
        ):
            return None
        sys_id = current.get(step, "") if current is not None else ""
        table = field_def.reference
        current = store.lookup(table, sys_id) if sys_id else None
    last = schema.field(table, path[-1])
    if last is None:
        return None
    return (str(current.get(path[-1], "")) if current is not None else ""), last
