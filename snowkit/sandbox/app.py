"""WSGI application of the embedded instance: routing, faults, auth, Batch and IRE.

We answer the Table, Batch and Identification & Reconciliation APIs and ``/oauth_token.do`` with
the status codes, headers and error envelopes a real instance uses (see
``reference/servicenow-api.md``), because the client and pysnc are tested against this server and
any shortcut here would hide a bug there. Plain WSGI over ``environ`` keeps each request cheap.
The Table API handlers live in ``table_api.py``; ``Call``/``Reply`` and the shared error
envelopes in ``calls.py``.

A Batch API request runs in one store transaction (``Store.transaction``): one commit per
request instead of one per item, which with the store's other per-write savings cuts the
instance's CPU per batched write about 3x, so a bulk load is bounded by the injected latency
rather than by this process's GIL. Items stay isolated (each write is atomic on its own) and
earlier items stay written if the request fails part way, as when each committed alone. An IRE
call takes the store's transaction before the IRE lock, the order a batch reaching an IRE item
takes them in.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from snowkit.sandbox import ire
from snowkit.sandbox.auth import AuthService
from snowkit.sandbox.batch import BatchRequestError, SubResponse, run_batch
from snowkit.sandbox.calls import (
    Call,
    Reply,
    acl_denied,
    bad_json,
    error_reply,
    json_object,
    json_reply,
    not_authenticated,
    phrase,
)
from snowkit.sandbox.faults import FaultInjector
from snowkit.sandbox.store import Store
from snowkit.sandbox.table_api import TableAPI

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

MAX_BODY_BYTES = 10 * 1024 * 1024
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


class _BodyTooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class SandboxApp:
    """The WSGI callable. ``store``, ``auth`` and ``faults`` are shared with :class:`Sandbox`."""

    def __init__(self, store: Store, auth: AuthService, faults: FaultInjector) -> None:
        self.store = store
        self.auth = auth
        self.faults = faults
        self._mounts: list[tuple[str, WSGIApp]] = []
        self._mounts_lock = threading.Lock()
        self._tables = TableAPI(store)
        self._ire_lock = threading.Lock()
        self._urls: dict[str, tuple[str, dict[str, str], re.Match[str] | None]] = {}

    def mount(self, prefix: str, app: WSGIApp) -> None:
        """Serve ``prefix`` and everything under it with another WSGI app (no faults, no auth).

        A later mount at the same prefix replaces the earlier app (e.g. a second, different
        UniFi lab in the same kernel). Requests read ``_mounts`` without the lock: the list is
        rebuilt and swapped in whole, so a reader sees either the old or the new table.
        """
        prefix = "/" + prefix.strip("/")
        with self._mounts_lock:
            kept = [(p, a) for p, a in self._mounts if p != prefix]
            self._mounts = sorted([*kept, (prefix, app)], key=lambda m: -len(m[0]))

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
        start_response(f"{reply.status} {phrase(reply.status)}", headers)
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
            return not_authenticated()

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
                    status, phrase(status), "Injected by the sandbox fault profile (error_rate)."
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

    def dispatch(self, call: Call, table_match: re.Match[str] | None = None) -> Reply:
        """Route an authenticated call to the API that serves its path (``table_match``: the
        Table API route of ``call.path`` when the caller already has it)."""
        match = table_match or _TABLE_PATH.match(call.path)
        if match:
            return self._tables.handle(call, match.group(1), match.group(2), match.group(3) or None)
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

    # -- Batch API ---------------------------------------------------------------------------

    def _batch(self, call: Call) -> Reply:
        payload = json_object(call.body, allow_list=False)
        if isinstance(payload, Reply):
            return payload

        def run_item(method: str, url: str, headers: dict[str, str], body: bytes) -> SubResponse:
            path, params, route = self._split_url(url)
            sub = Call(
                method=headers.get("x-http-method-override", method).upper(),
                path=path,
                params=params,
                headers=headers,
                body=body,
                identity=call.identity,
                base_url=call.base_url,
                top_level=False,
            )
            try:
                reply = self.dispatch(sub, route)
            except Exception:
                log.exception("batch item failed: %s %s", method, path)
                reply = error_reply(500, "Internal Server Error", "The batch item failed.")
            headers_out = [("Content-Type", reply.content_type), *reply.headers]
            return SubResponse(reply.status, headers_out, reply.body)

        try:
            with self.store.transaction():  # one commit per batch, not per item
                result = run_batch(
                    payload, run_item, leave_unserviced=self.faults.should_leave_unserviced
                )
        except BatchRequestError as exc:
            return bad_json(str(exc))
        return json_reply(200, result)

    def _split_url(self, url: str) -> tuple[str, dict[str, str], re.Match[str] | None]:
        """A batch item's url → (path, query parameters, Table API route or None); a batch
        repeats a few urls many times, so this is cached (each caller gets its own copy of
        the parameters)."""
        cached = self._urls.get(url)
        if cached is None:
            parts = urlsplit(url)
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            cached = (parts.path, params, _TABLE_PATH.match(parts.path))
            if len(self._urls) >= 1024:
                self._urls.clear()
            self._urls[url] = cached
        return cached[0], dict(cached[1]), cached[2]

    # -- IRE ---------------------------------------------------------------------------------

    def _identify_reconcile(self, call: Call, *, dry_run: bool) -> Reply:
        if not dry_run and not call.identity.can_write:
            return acl_denied("Insert")
        payload = json_object(call.body, allow_list=False)
        if isinstance(payload, Reply):
            return payload
        try:
            # The store's lock before ours, in the same order as a batch that holds the store's
            # transaction and reaches an IRE item: the opposite order could deadlock.
            with self.store.transaction(), self._ire_lock:
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
