"""Table API request parts and answers: paths, read parameters, the ``result`` envelope.

Table names and sys_ids are validated *before* anything is sent, so a hostile name
(``incident/../sys_user``) can never address another resource; reads always ask for plain
values without reference links unless the caller wants display values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import orjson
import requests

from snowkit.ops.errors import OperationalError
from snowkit.servicenow.paging import KEY_FIELD
from snowkit.servicenow.query import Query

TABLE_NAME = re.compile(r"^[a-z0-9_]{1,80}$")
SYS_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DISPLAY = {True: "true", False: "false"}
#: Every write asks for plain reference values (``{link, value}`` objects are never useful here).
WRITE_PARAMS: Mapping[str, str] = MappingProxyType({"sysparm_exclude_reference_link": "true"})


def check_table(table: str) -> str:
    if not isinstance(table, str) or not TABLE_NAME.match(table):
        raise ValueError(
            f"invalid table name {table!r}: "
            "ServiceNow table names are lower-case letters, digits and '_'"
        )
    return table


def table_path(table: str, sys_id: str | None = None) -> str:
    """``/api/now/table/<table>[/<sys_id>]``, both validated."""
    path = f"/api/now/table/{check_table(table)}"
    if sys_id is not None:
        if not isinstance(sys_id, str) or not SYS_ID.match(sys_id):
            raise ValueError(
                f"invalid sys_id {sys_id!r}: expected a record's sys_id (32 hexadecimal "
                "characters), as returned in the 'sys_id' field"
            )
        path += "/" + quote(sys_id, safe="")
    return path


def display_param(value: bool | str) -> str:
    """``sysparm_display_value``: ``True``/``False``/``"all"`` (case-insensitive strings)."""
    if isinstance(value, bool):
        return _DISPLAY[value]
    text = str(value).lower()
    if text not in {"true", "false", "all"}:
        raise ValueError("display_value must be True, False or 'all'")
    return text


def read_params(fields: Sequence[str] | None, display_value: bool | str) -> dict[str, Any]:
    """The parameters every read sends (a fresh dict: callers add to it)."""
    params: dict[str, Any] = {
        "sysparm_display_value": display_param(display_value),
        "sysparm_exclude_reference_link": "true",
    }
    if fields:
        params["sysparm_fields"] = ",".join(fields)
    return params


def fields_for(fields: Sequence[str] | None, query: str | Query) -> list[str] | None:
    """The fields to ask for: the caller's, plus sys_id (keyset paging) and exact-filter fields."""
    if not fields:
        return None
    wanted = [KEY_FIELD, *[f for f in fields if f != KEY_FIELD]]
    if isinstance(query, Query):
        for exact in query.exact_filters:
            if exact.field not in wanted:
                wanted.append(exact.field)
    return wanted


_PARSED = "_snowkit_json"  #: where a response keeps its parsed body (see json_body)


def json_body(response: requests.Response) -> Any:
    """The response's JSON body, parsed once: the pipeline checks it before any caller reads it,
    and a page can be megabytes. Raises ``orjson.JSONDecodeError`` for a body that is not JSON."""
    if _PARSED not in response.__dict__:
        response.__dict__[_PARSED] = orjson.loads(response.content)
    return response.__dict__[_PARSED]


def carries(response: requests.Response, member: str) -> bool:
    """The answer is a JSON object with ``member`` (``result``): a 2xx without it (HTTP 202 from
    a queue, an empty body, ``{}``) says nothing about the request and must not read as an empty
    result. A body that is not JSON counts as carrying it: :func:`parse_result` says what is
    wrong with that one."""
    if not response.content:
        return False
    try:
        body = json_body(response)
    except orjson.JSONDecodeError:
        return True
    return isinstance(body, dict) and member in body


def parse_result(response: requests.Response) -> Any:
    """The ``result`` member of a JSON answer (None for 204 / an empty body)."""
    if response.status_code == 204 or not response.content:
        return None
    try:
        body = json_body(response)
    except orjson.JSONDecodeError as exc:
        text = response.content[:200].decode("utf-8", "replace")
        raise OperationalError(
            f"ServiceNow sent a body that is not JSON (HTTP {response.status_code}): {text!r}",
            operation="parse_response",
            guidance=(
                "A cut-off answer usually means the transaction was cancelled (maximum execution "
                "time exceeded): use a smaller page_size or fewer fields."
            ),
        ) from exc
    return body.get("result") if isinstance(body, dict) else None


def total_count(response: requests.Response) -> int | None:
    """``X-Total-Count`` as a whole number; None when absent or not one (a proxy's garbage
    must not decide where a scan ends, nor crash it)."""
    text = (response.headers.get("X-Total-Count") or "").strip()
    return int(text) if text.isascii() and text.isdigit() else None
