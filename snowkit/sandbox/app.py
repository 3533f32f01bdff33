"""WSGI application of the embedded instance: routing, faults, auth and the REST APIs.

We answer the Table, Batch and Identification & Reconciliation APIs and ``/oauth_token.do`` with
the status codes, headers and error envelopes a real instance uses (see
``reference/servicenow-api.md``), because the client and pysnc are tested against this server and
any shortcut here would hide a bug there. Plain WSGI over ``environ`` keeps each request cheap.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import orjson

from snowkit.sandbox import ire
from snowkit.sandbox.auth import AuthService, Identity
from snowkit.sandbox.batch import BatchRequestError, SubResponse, run_batch
from snowkit.sandbox.faults import FaultInjector
from snowkit.sandbox.render import render_record
from snowkit.sandbox.store import Store, TableNotFound, WriteRejected

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_LIMIT = 10000
JSON_TYPE = "application/json;charset=UTF-8"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_TABLE_PATH = re.compile(r"^/api/now/(?:(v1|v2)/)?table/([^/]+)(?:/([^/]*))?/?$")
_BATCH_PATH = re.compile(r"^/api/now/(?:v1/)?batch/?$")
_IRE_PATH = re.compile(r"^/api/now/(?:v1/)?identifyreconcile(/query)?/?$")

_BASE_HEADERS = (
    ("Server", "ServiceNow"),
    ("Pragma", "no-store,no-cache"),
    ("Cache-control", "no-cache,no-store,must-revalidate,max-age=-1"),
    ("Expires", "0"),
    ("X-Content-Type-Options", "nosniff"),
    ("Server-Timing", "sem_wait;dur=0, sesh_wait;dur=0"),
)

HIBERNATION_PAGE = b"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Instance Hibernating page</title></head>
<body><h1>Your instance is hibernating</h1>
<p>Your instance is hibernating. Developer instances hibernate when they are not used for a
while, to save resources.</p>
<p>To wake up your instance, sign in to the Developer Site and wake it up from there; this can
take a few minutes. (snowkit sandbox: clear the <code>hibernating</code> fault to wake it.)</p>
</body></html>
"""


class DropConnection(ConnectionResetError):
    """Raised inside the app to make the server drop the connection without a response."""


@dataclass
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


def _not_authenticated() -> Reply:
    return error_reply(
        401,
        "User Not Authenticated",
        "Required to provide Auth information",
        [("WWW-Authenticate", 'BASIC realm="Service-now"')],
    )


def _acl_denied(action: str) -> Reply:
    return error_reply(
        403, "Operation Failed", f"ACL Exception {action} Failed due to security constraints"
    )


def _not_found() -> Reply:
    return error_reply(
        404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval"
    )


def _bad_json(detail: str = "The payload is not valid JSON.") -> Reply:
    return error_reply(400, "Exception while reading request", detail)


def _invalid_table(table: str) -> Reply:
    return error_reply(400, f"Invalid table {table}", None)


class _BodyTooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


@dataclass
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


class SandboxApp:
    """The WSGI callable. ``store``, ``auth`` and ``faults`` are shared with :class:`Sandbox`."""

    def __init__(self, store: Store, auth: AuthService, faults: FaultInjector) -> None:
        self.store = store
        self.auth = auth
        self.faults = faults
        self._mounts: list[tuple[str, WSGIApp]] = []
        self._ire_lock = threading.Lock()

    def mount(self, prefix: str, app: WSGIApp) -> None:
        """Serve ``prefix`` and everything under it with another WSGI app (no faults, no auth)."""
        prefix = "/" + prefix.strip("/")
        self._mounts = sorted([*self._mounts, (prefix, app)], key=lambda m: -len(m[0]))

    # -- WSGI entry --------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "") or "/"
        for prefix, app in self._mounts:
            if path == prefix or path.startswith(prefix + "/"):
                environ = dict(environ)
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[len(prefix) :]
                return app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET").upper()
        try:
            reply = self._handle(environ, method, path)
        except DropConnection:
            raise
        except Exception:
            log.exception("sandbox request failed: %s %s", method, path)
            reply = error_reply(
                500,
                "Internal Server Error",
                "The embedded instance could not process this request; its log has the details.",
            )
        return self._respond(reply, method, environ, start_response)

    def _respond(
        self,
        reply: Reply,
        method: str,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
    ) -> list[bytes]:
        body = reply.body
        headers = [
            ("Content-Type", reply.content_type),
            ("X-Transaction-ID", os.urandom(6).hex()),
            *_BASE_HEADERS,
            *reply.headers,
        ]
        if environ.get("wsgi.url_scheme") == "https":
            headers.append(("Strict-Transport-Security", "max-age=63072000; includeSubDomains"))
        if reply.status != 401:
            headers.append(("X-Is-Logged-In", "true"))
        if reply.status in (204, 304):
            body = b""
        else:
            headers.append(("Content-Length", str(len(body))))
        if method == "HEAD":
            body = b""
        start_response(f"{reply.status} {_phrase(reply.status)}", headers)
        return [body]

    # -- request pipeline --------------------------------------------------------------------

    def _handle(self, environ: dict[str, Any], method: str, path: str) -> Reply:
        try:
            body = _read_body(environ)
        except _BodyTooLarge as exc:
            return error_reply(
                413,
                "Exception while reading request",
                f"Rejected large REST payload with content-length = {exc.size} bytes. "
                f"Max allowed: {MAX_BODY_BYTES} bytes.",
                [("Connection", "close")],
            )
        override = environ.get("HTTP_X_HTTP_METHOD_OVERRIDE")
        if override:
            method = override.strip().upper()
        if path == "/oauth_token.do":
            return self._token(method, body, environ.get("HTTP_AUTHORIZATION"))

        faults = self.faults
        if faults.in_outage():
            raise DropConnection("outage window")
        if faults.profile.hibernating:
            return Reply(200, HIBERNATION_PAGE, content_type="text/html;charset=UTF-8")
        params = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        api_key = environ.get("HTTP_X_SN_APIKEY") or params.pop("x-sn-apikey", None)
        identity = self.auth.authenticate(environ.get("HTTP_AUTHORIZATION"), api_key)
        if identity is None:
            return _not_authenticated()

        decision = faults.check_rate_limit(identity.user)
        if not decision.allowed:
            return error_reply(
                429,
                "Rate limit exceeded",
                f"Rate limit of {decision.limit} requests per window for Table API exceeded",
                [*decision.headers, ("Retry-After", str(decision.retry_after))],
            )
        slot = faults.acquire_slot()
        if slot is False:
            return error_reply(
                429,
                "Too many concurrent requests",
                "The API_INT semaphore queue is full; retry later.",
                [*decision.headers, ("Retry-After", "1")],
            )
        try:
            faults.delay()
            if faults.should_reset():
                raise DropConnection("injected connection reset")
            status = faults.error_status()
            if status is not None:
                return error_reply(
                    status, _phrase(status), "Injected by the sandbox fault profile (error_rate)."
                )
            call = Call(
                method=method,
                path=path,
                params=params,
                headers=_request_headers(environ),
                body=body,
                identity=identity,
                base_url=_base_url(environ),
            )
            reply = self.dispatch(call)
        finally:
            if slot:
                slot.release()
        if method in WRITE_METHODS and reply.status < 400 and faults.should_drop_after_commit():
            raise DropConnection("injected drop after commit (ambiguous write)")
        reply.headers.extend(decision.headers)
        return reply

    def _token(self, method: str, body: bytes, authorization: str | None) -> Reply:
        if method != "POST":
            return error_reply(405, "Method not Supported", "Use POST for /oauth_token.do")
        status, payload = self.auth.token_endpoint(body, authorization)
        return json_reply(status, payload)

    # -- routing -----------------------------------------------------------------------------

    def dispatch(self, call: Call) -> Reply:
        """Route an authenticated call to the API that serves its path."""
        match = _TABLE_PATH.match(call.path)
        if match:
            return self._table(call, match.group(1), match.group(2), match.group(3) or None)
        if _BATCH_PATH.match(call.path):
            if call.method != "POST":
                return error_reply(405, "Method not Supported", "The Batch API accepts POST only")
            if not call.top_level:
                return error_reply(400, "Nested batch requests are not supported", None)
            return self._batch(call)
        match = _IRE_PATH.match(call.path)
        if match:
            if call.method != "POST":
                return error_reply(405, "Method not Supported", "The IRE API accepts POST only")
            return self._identify_reconcile(call, dry_run=bool(match.group(1)))
        return error_reply(400, "Requested URI does not represent any resource", None)

    # -- Table API ---------------------------------------------------------------------------

    def _table(self, call: Call, version: str | None, table: str, sys_id: str | None) -> Reply:
        method = call.method
        if method == "POST" and table == "sys_dictionary" and sys_id is None:
            return self._add_field(call)
        try:
            if not self.store.table_exists(table):
                return _invalid_table(table)
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
            return _invalid_table(table)
        except WriteRejected as exc:
            return error_reply(400, "Operation Failed", str(exc))
        return error_reply(405, "Method not Supported", f"{method} is not supported on this path")

    def _renderer(self, call: Call, table: str) -> Callable[[dict[str, str]], dict[str, Any]]:
        """A function rendering records of ``table`` as the call's sysparm_* options ask."""
        params = call.params
        display = (params.get("sysparm_display_value") or "false").lower()
        if display not in ("true", "false", "all"):
            display = "false"
        exclude = (params.get("sysparm_exclude_reference_link") or "").lower() == "true"
        schema, fields, store, base_url = (
            self.store.schema(),
            _fields(params),
            self.store,
            call.base_url,
        )

        def render(record: dict[str, str]) -> dict[str, Any]:
            return render_record(
                record,
                table,
                schema,
                base_url=base_url,
                display_value=display,
                exclude_reference_link=exclude,
                fields=fields,
                store=store,
            )

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
        )
        headers = [("X-Total-Count", str(total))]
        suppress = (params.get("sysparm_suppress_pagination_header") or "").lower() == "true"
        if not suppress and limit > 0:
            headers.append(("Link", _link_header(call, limit, offset, total)))
        if version == "v1" and not rows:
            reply = _not_found()
            reply.headers.extend(headers)
            return reply
        render = self._renderer(call, table)
        result = [render(row) for row in rows]
        return json_reply(200, {"result": result}, headers)

    def _get(self, call: Call, table: str, sys_id: str) -> Reply:
        record = self.store.get(table, sys_id)
        if record is None:
            return _not_found()
        return json_reply(200, {"result": self._render(call, record, table)})

    def _insert(self, call: Call, table: str) -> Reply:
        if not call.identity.can_write:
            return _acl_denied("Insert")
        values = _json_object(call.body, allow_list=True)
        if isinstance(values, Reply):
            return values
        record = self.store.insert(table, values, user=call.identity.user)
        location = f"{call.base_url}/api/now/table/{table}/{record.get('sys_id', '')}"
        return self._write_reply(call, 201, record, table, [("Location", location)])

    def _update(self, call: Call, table: str, sys_id: str) -> Reply:
        if not call.identity.can_write:
            return _acl_denied("Update")
        values = _json_object(call.body, allow_list=False)
        if isinstance(values, Reply):
            return values
        record = self.store.update(table, sys_id, values, user=call.identity.user)
        if record is None:
            return _not_found()
        return self._write_reply(call, 200, record, table, [])

    def _delete(self, call: Call, table: str, sys_id: str) -> Reply:
        if not call.identity.can_write:
            return _acl_denied("Delete")
        if not self.store.delete(table, sys_id):
            return _not_found()
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
        return json_reply(status, {"result": self._render(call, record, table)}, headers)

    def _add_field(self, call: Call) -> Reply:
        """``POST /table/sys_dictionary``: an admin creates a column, as on a real instance."""
        if not call.identity.can_write:
            return _acl_denied("Insert")
        values = _json_object(call.body, allow_list=False)
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
            return _invalid_table(table)
        except ValueError as exc:
            return error_reply(400, "Operation Failed", str(exc))
        try:
            rendered: Any = self._render(call, record, "sys_dictionary")
        except TableNotFound:
            rendered = record
        sys_id = record.get("sys_id", "")
        location = f"{call.base_url}/api/now/table/sys_dictionary/{sys_id}"
        return json_reply(201, {"result": rendered}, [("Location", location)])

    # -- Batch API ---------------------------------------------------------------------------

    def _batch(self, call: Call) -> Reply:
        payload = _json_object(call.body, allow_list=False)
        if isinstance(payload, Reply):
            return payload

        def run_item(method: str, url: str, headers: dict[str, str], body: bytes) -> SubResponse:
            parts = urlsplit(url)
            sub = Call(
                method=headers.get("x-http-method-override", method).upper(),
                path=parts.path,
                params=dict(parse_qsl(parts.query, keep_blank_values=True)),
                headers=headers,
                body=body,
                identity=call.identity,
                base_url=call.base_url,
                top_level=False,
            )
            try:
                reply = self.dispatch(sub)
            except Exception:
                log.exception("batch item failed: %s %s", method, parts.path)
                reply = error_reply(500, "Internal Server Error", "The batch item failed.")
            headers_out = [("Content-Type", reply.content_type), *reply.headers]
            return SubResponse(reply.status, headers_out, reply.body)

        try:
            result = run_batch(
                payload, run_item, leave_unserviced=self.faults.should_leave_unserviced
            )
        except BatchRequestError as exc:
            return _bad_json(str(exc))
        return json_reply(200, result)

    # -- IRE ---------------------------------------------------------------------------------

    def _identify_reconcile(self, call: Call, *, dry_run: bool) -> Reply:
        if not dry_run and not call.identity.can_write:
            return _acl_denied("Insert")
        payload = _json_object(call.body, allow_list=False)
        if isinstance(payload, Reply):
            return payload
        try:
            with self._ire_lock:
                result = ire.identify_reconcile(
                    self.store, payload, commit=not dry_run, user=call.identity.user
                )
        except ire.IREInputError as exc:
            return error_reply(400, "Invalid input", str(exc))
        return json_reply(200, {"result": result})


# -- helpers ---------------------------------------------------------------------------------


def _read_body(environ: dict[str, Any]) -> bytes:
    """Read at most MAX_BODY_BYTES of the request body; a larger one raises _BodyTooLarge."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    length_header = environ.get("CONTENT_LENGTH") or ""
    if length_header.strip():
        try:
            length = int(length_header)
        except ValueError:
            raise _BodyTooLarge(0) from None
        if length > MAX_BODY_BYTES:
            raise _BodyTooLarge(length)
        return stream.read(length) if length > 0 else b""
    if not environ.get("wsgi.input_terminated"):
        return b""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BodyTooLarge(size)
        chunks.append(chunk)


def _json_object(body: bytes, *, allow_list: bool) -> dict[str, Any] | Reply:
    """Decode a JSON object body, or the error reply a real instance gives for it."""
    if not body.strip():
        return _bad_json("The request body is empty; send a JSON object.")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _bad_json()
    if allow_list and isinstance(value, list) and value and isinstance(value[0], dict):
        value = value[0]  # the Table API inserts the first record of an array, ignores the rest
    if not isinstance(value, dict):
        return _bad_json("The payload must be a JSON object.")
    return value


def _request_headers(environ: dict[str, Any]) -> dict[str, str]:
    return {
        key[5:].lower().replace("_", "-"): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }


def _base_url(environ: dict[str, Any]) -> str:
    host = environ.get("HTTP_HOST") or (
        f"{environ.get('SERVER_NAME', '127.0.0.1')}:{environ.get('SERVER_PORT', '')}"
    )
    return f"{environ.get('wsgi.url_scheme', 'http')}://{host}"


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


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
