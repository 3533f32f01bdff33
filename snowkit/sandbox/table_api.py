"""The Table API of the embedded instance: list, get, insert, update, delete, add a column.

Separate from the WSGI pipeline (``app.py``) because this is where ServiceNow's observable
behaviour lives (``sysparm_*`` options, ``X-Total-Count`` and ``Link`` paging headers, v1's 404
on an empty list, ``X-no-response-body``), and the client's paging and write tests depend on it.

Renderers are built once per (table, display options, ``sysparm_fields``, schema version) and
cached: a Batch API request renders a hundred writes with the same options. A list with
``sysparm_fields`` reads only those columns from the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from snowkit.sandbox.calls import (
    Call,
    Reply,
    acl_denied,
    error_reply,
    invalid_table,
    json_object,
    json_reply,
    not_found,
)
from snowkit.sandbox.render import record_renderer
from snowkit.sandbox.store import Store, TableNotFound, WriteRejected

DEFAULT_LIMIT = 10000


class TableAPI:
    """Table API handlers over one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._schema = store.schema()  # the same object for the store's whole life
        self._renderers: dict[tuple[Any, ...], Callable[[dict[str, str]], dict[str, Any]]] = {}

    def handle(self, call: Call, version: str | None, table: str, sys_id: str | None) -> Reply:
        """Answer ``/api/now[/v1|v2]/table/<table>[/<sys_id>]`` for any method."""
        method = call.method
        if method == "POST" and table == "sys_dictionary" and sys_id is None:
            return self._add_field(call)
        try:
            if not self.store.table_exists(table):
                return invalid_table(table)
            if method in ("GET", "HEAD"):
                if sys_id is None:
                    return self._list(call, version, table)
                return self._get(call, table, sys_id)
            if method == "POST" and sys_id is None:
                return self._insert(call, table)
            if method in ("PUT", "PATCH") and sys_id is not None:
                return self._update(call, table, sys_id)
            if method == "DELETE" and sys_id is not None:
                return self._delete(call, table, sys_id)
        except TableNotFound:
            return invalid_table(table)
        except WriteRejected as exc:
            return error_reply(400, "Operation Failed", str(exc))
        return error_reply(405, "Method not Supported", f"{method} is not supported on this path")

    def _renderer(self, call: Call, table: str) -> Callable[[dict[str, str]], dict[str, Any]]:
        """A function rendering records of ``table`` as the call's sysparm_* options ask.

        Cached per (table, options, base url, schema version): a Batch API request asks the
        same options for each of its items, and building the function is most of the cost of
        rendering one record.
        """
        params = call.params
        schema = self._schema
        key = (
            table,
            schema.version,
            call.base_url,
            params.get("sysparm_display_value"),
            params.get("sysparm_exclude_reference_link"),
            params.get("sysparm_fields"),
        )
        render = self._renderers.get(key)
        if render is None:
            display = (params.get("sysparm_display_value") or "false").lower()
            if display not in ("true", "false", "all"):
                display = "false"
            exclude = (params.get("sysparm_exclude_reference_link") or "").lower() == "true"
            render = record_renderer(
                table,
                schema,
                base_url=call.base_url,
                display_value=display,
                exclude_reference_link=exclude,
                fields=_fields(params),
                store=self.store,
            )
            if len(self._renderers) >= 512:
                self._renderers.clear()
            self._renderers[key] = render
        return render

    def _render(self, call: Call, record: dict[str, str], table: str) -> dict[str, Any]:
        return self._renderer(call, table)(record)

    def _list(self, call: Call, version: str | None, table: str) -> Reply:
        params = call.params
        limit = _int_param(params.get("sysparm_limit"), DEFAULT_LIMIT, minimum=0)
        offset = _int_param(params.get("sysparm_offset"), 0, minimum=0)
        filters = {
            k: v
            for k, v in params.items()
            if not k.startswith("sysparm_") and v != "" and k != "x-sn-apikey"
        }
        rows, total = self.store.list(
            table,
            params.get("sysparm_query") or "",
            limit=limit,
            offset=offset,
            filters=filters or None,
            fields=_fields(params),  # None (every column) when sysparm_fields is not given
        )
        headers = [("X-Total-Count", str(total))]
        suppress = (params.get("sysparm_suppress_pagination_header") or "").lower() == "true"
        if not suppress and limit > 0:
            headers.append(("Link", _link_header(call, limit, offset, total)))
        if version == "v1" and not rows:
            reply = not_found()
            reply.headers.extend(headers)
            return reply
        render = self._renderer(call, table)
        result = [render(row) for row in rows]
        return json_reply(200, {"result": result}, headers)

    def _get(self, call: Call, table: str, sys_id: str) -> Reply:
        record = self.store.get(table, sys_id)
        if record is None:
            return not_found()
        return json_reply(200, {"result": self._render(call, record, table)})

    def _insert(self, call: Call, table: str) -> Reply:
        if not call.identity.can_write:
            return acl_denied("Insert")
        values = json_object(call.body, allow_list=True)
        if isinstance(values, Reply):
            return values
        record = self.store.insert(table, values, user=call.identity.user)
        location = f"{call.base_url}/api/now/table/{table}/{record.get('sys_id', '')}"
        return self._write_reply(call, 201, record, table, [("Location", location)])

    def _update(self, call: Call, table: str, sys_id: str) -> Reply:
        if not call.identity.can_write:
            return acl_denied("Update")
        values = json_object(call.body, allow_list=False)
        if isinstance(values, Reply):
            return values
        record = self.store.update(table, sys_id, values, user=call.identity.user)
        if record is None:
            return not_found()
        return self._write_reply(call, 200, record, table, [])

    def _delete(self, call: Call, table: str, sys_id: str) -> Reply:
        if not call.identity.can_write:
            return acl_denied("Delete")
        if not self.store.delete(table, sys_id):
            return not_found()
        return Reply(204)

    def _write_reply(
        self,
        call: Call,
        status: int,
        record: dict[str, str],
        table: str,
        headers: list[tuple[str, str]],
    ) -> Reply:
        if call.headers.get("x-no-response-body", "").lower() == "true":
            return Reply(status, b"", headers)
        return json_reply(status, {"result": self._renderer(call, table)(record)}, headers)

    def _add_field(self, call: Call) -> Reply:
        """``POST /table/sys_dictionary``: an admin creates a column, as on a real instance."""
        if not call.identity.can_write:
            return acl_denied("Insert")
        values = json_object(call.body, allow_list=False)
        if isinstance(values, Reply):
            return values
        table, element = values.get("name", ""), values.get("element", "")
        if not table or not element:
            return error_reply(
                400,
                "Operation Failed",
                "A sys_dictionary entry needs 'name' (the table) and 'element' (the column)",
            )
        try:
            max_length = int(values.get("max_length") or 255)
            record = self.store.add_field(
                table,
                element,
                internal_type=values.get("internal_type") or "string",
                max_length=max_length,
            )
        except TableNotFound:
            return invalid_table(table)
        except ValueError as exc:
            return error_reply(400, "Operation Failed", str(exc))
        try:
            rendered: Any = self._render(call, record, "sys_dictionary")
        except TableNotFound:
            rendered = record
        sys_id = record.get("sys_id", "")
        location = f"{call.base_url}/api/now/table/sys_dictionary/{sys_id}"
        return json_reply(201, {"result": rendered}, [("Location", location)])


def _fields(params: dict[str, str]) -> list[str] | None:
    raw = params.get("sysparm_fields") or ""
    names = [name.strip() for name in raw.split(",") if name.strip()]
    return names or None


def _int_param(value: str | None, default: int, *, minimum: int) -> int:
    if value is None or not value.strip():
        return default
    try:
        return max(int(value), minimum)
    except ValueError:
        return default


def _link_header(call: Call, limit: int, offset: int, total: int) -> str:
    """RFC 5988 ``Link`` as a real instance writes it (``prev`` even on the first page)."""
    kept = [(k, v) for k, v in call.params.items() if k not in ("sysparm_limit", "sysparm_offset")]
    prefix = f"{call.base_url}{call.path}?"
    common = "".join(f"{quote(k, safe='')}={quote(v, safe='')}&" for k, v in kept)

    def url(at: int) -> str:
        return f"<{prefix}{common}sysparm_limit={limit}&sysparm_offset={at}>"

    last = max(total - 1, 0) // limit * limit
    links = [f'{url(0)};rel="first"', f'{url(offset - limit)};rel="prev"']
    if offset + limit < total:
        links.append(f'{url(offset + limit)};rel="next"')
    links.append(f'{url(last)};rel="last"')
    return ",".join(links)
