"""One API call of the embedded instance and its answer, independent of WSGI.

``Call`` is what the Table, Batch and IRE handlers see once transport, auth and faults are
settled (batch items are Calls too); ``Reply`` is what they return, and the error helpers build
the envelopes a real instance sends for the common failures, so every API answers them alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson

from snowkit.sandbox.auth import Identity

JSON_TYPE = "application/json;charset=UTF-8"


@dataclass(slots=True)
class Call:
    """One API call after transport concerns are settled (also used for batch items)."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes
    identity: Identity
    base_url: str
    top_level: bool = True


@dataclass(slots=True)
class Reply:
    """One HTTP answer before it is written: status, extra headers, body."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = JSON_TYPE


def json_reply(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status, orjson.dumps(payload), headers or [])


def error_reply(
    status: int, message: str, detail: str | None, headers: list[tuple[str, str]] | None = None
) -> Reply:
    """The ServiceNow error envelope ``{"error": {"message", "detail"}, "status": "failure"}``."""
    body = {"error": {"message": message, "detail": detail}, "status": "failure"}
    return json_reply(status, body, headers)


def not_authenticated() -> Reply:
    return error_reply(
        401,
        "User Not Authenticated",
        "Required to provide Auth information",
        [("WWW-Authenticate", 'BASIC realm="Service-now"')],
    )


def acl_denied(action: str) -> Reply:
    return error_reply(
        403, "Operation Failed", f"ACL Exception {action} Failed due to security constraints"
    )


def not_found() -> Reply:
    return error_reply(
        404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval"
    )


def bad_json(detail: str = "The payload is not valid JSON.") -> Reply:
    return error_reply(400, "Exception while reading request", detail)


def invalid_table(table: str) -> Reply:
    return error_reply(400, f"Invalid table {table}", None)


def json_object(body: bytes, *, allow_list: bool) -> dict[str, Any] | Reply:
    """Decode a JSON object body, or the error reply a real instance gives for it."""
    if not body.strip():
        return bad_json("The request body is empty; send a JSON object.")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return bad_json()
    if allow_list and isinstance(value, list) and value and isinstance(value[0], dict):
        value = value[0]  # the Table API inserts the first record of an array, ignores the rest
    if not isinstance(value, dict):
        return bad_json("The payload must be a JSON object.")
    return value


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
