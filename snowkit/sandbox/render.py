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

``record_renderer`` settles everything that does not depend on the record (mode, selected
names, their definitions, which render as the bare value) once, so rendering a page, or the
answer to each write of a batch, pays only for the per-record part.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
    return record_renderer(
        table,
        schema,
        base_url=base_url,
        display_value=display_value,
        exclude_reference_link=exclude_reference_link,
        fields=fields,
        store=store,
    )(record)


def record_renderer(
    table: str,
    schema: Schema,
    *,
    base_url: str,
    display_value: str = "false",
    exclude_reference_link: bool = False,
    fields: Sequence[str] | None = None,
    store: Store | None = None,
) -> Callable[[Mapping[str, str]], dict[str, Any]]:
    """``render_record`` with these options, as a function of the record.

    Everything that does not depend on the record (the mode, the selected names, their field
    definitions, which of them render as the bare value) is settled here once, so a caller
    rendering many records, or caching the function (the Table API does, per schema version),
    pays only for the per-record part. Valid until the schema changes.
    """
    mode = display_value.lower() if display_value.lower() in DISPLAY_MODES else "false"
    base = base_url.rstrip("/")
    visible = schema.fields(table) if schema.has_table(table) else {}

    def bare(field_def: FieldDef) -> bool:
        """Whether the field renders as its value, whatever the value (see render_value)."""
        return mode == "false" and (field_def.reference is None or exclude_reference_link)

    def full(value: str, field_def: FieldDef) -> Any:
        return render_value(
            value,
            field_def,
            mode=mode,
            exclude_link=exclude_reference_link,
            base_url=base,
            store=store,
        )

    names = _wanted(fields)
    if names is None:  # every key of the record, in the record's order
        plain = frozenset(n for n, f in visible.items() if bare(f))
        unknown_bare = mode == "false"  # a name outside the schema renders as a plain string

        def render_all(record: Mapping[str, str]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for name, value in record.items():
                if name in plain:
                    out[name] = str(value)
                elif "." in name:
                    walked = _walk(record, table, name.split("."), schema, store)
                    if walked is not None:
                        out[name] = full(walked[0], walked[1])
                elif unknown_bare and name not in visible:
                    out[name] = str(value)
                else:
                    out[name] = full(str(value), visible.get(name) or FieldDef(name))
            return out

        return render_all

    steps: list[tuple[str, FieldDef | None, bool]] = []
    for name in names:
        if "." in name:
            steps.append((name, None, False))
        else:
            field_def = visible.get(name) or FieldDef(name)
            steps.append((name, field_def, bare(field_def)))

    def render_selected(record: Mapping[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, field_def, is_bare in steps:
            if field_def is None:
                walked = _walk(record, table, name.split("."), schema, store)
                if walked is not None:
                    out[name] = full(walked[0], walked[1])
            elif name in record:
                value = str(record[name])
                out[name] = value if is_bare else full(value, field_def)
        return out

    return render_selected


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


def _wanted(fields: Sequence[str] | None) -> list[str] | None:
    """The names ``sysparm_fields`` selects, de-duplicated in order; None means every field."""
    if fields is None:
        return None
    names = [f.strip() for f in fields if f and f.strip()]
    if not names:
        return None
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
