"""The embedded ServiceNow-compatible instance: lifecycle, threads, sockets, TLS.

werkzeug's threaded server does the HTTP parsing, but its handler closes every connection after
one response; clients (requests.Session, pysnc) reuse connections, and a new TLS handshake per
request would make the sandbox the bottleneck. So the handler here keeps HTTP/1.1 connections
alive, does the TLS handshake in the worker thread (a silent client cannot block ``accept``),
and can drop a connection on purpose for the reset, ambiguous-write and outage faults.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler
from werkzeug.wsgi import LimitedStream

from snowkit import paths
from snowkit.sandbox.app import DropConnection, SandboxApp, WSGIApp
from snowkit.sandbox.auth import (
    ADMIN,
    DEFAULT_TOKEN_LIFETIME_SECONDS,
    AuthService,
    OAuthClient,
    default_users,
    new_api_key,
    new_oauth_client,
)
from snowkit.sandbox.faults import FaultInjector, FaultProfile
from snowkit.sandbox.store import Store
from snowkit.sandbox.tls import ensure_tls_material

log = logging.getLogger(__name__)

REQUEST_QUEUE_SIZE = 128
IDLE_TIMEOUT_SECONDS = 30.0
HANDSHAKE_TIMEOUT_SECONDS = 10.0
OUTAGE_POLL_SECONDS = 0.05
MAX_CONNECTIONS = 512  # one thread each; beyond this new connections are closed at once


class _Handler(WSGIRequestHandler):
    """HTTP/1.1 keep-alive WSGI handler with buffered responses and deliberate drops."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_SECONDS
    server: _Server

    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").lower().strip() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        environ = self.make_environ()
        stream: LimitedStream | None = None
        if not environ.get("wsgi.input_terminated"):
            try:
                length = max(int(environ.get("CONTENT_LENGTH") or 0), 0)
            except ValueError:
                length = 0
            stream = LimitedStream(self.rfile, length)
            environ["wsgi.input"] = stream
        started: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            started[:] = [status, headers]
            return chunks.append

        chunks: list[bytes] = []
        try:
            result = self.server.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close:
                    close()
        except DropConnection:
            self._drop()
            return
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            return
        except Exception:
            log.exception("unhandled error in a mounted WSGI app")
            started[:] = ["500 Internal Server Error", [("Content-Type", "text/plain")]]
            chunks = [b"Internal Server Error"]
        status, headers = started or ["500 Internal Server Error", []]
        body = b"".join(chunks)
        code, _, message = status.partition(" ")
        self.send_response(int(code), message)
        content_length: str | None = None
        for key, value in headers:
            lower = key.lower()
            if lower == "content-length":
                content_length = value
                continue
            if lower in ("transfer-encoding", "connection", "server", "date"):
                if lower == "connection" and value.lower() == "close":
                    self.close_connection = True
                continue
            self.send_header(key, value)
        if self.command == "HEAD":
            self.send_header("Content-Length", content_length or str(len(body)))
            body = b""
        elif int(code) not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        if stream is None or not stream.is_exhausted:
            self.close_connection = True  # unread request body: do not parse it as a request
        if self.close_connection:
            self.send_header("Connection", "close")
        if self.request_version == "HTTP/0.9" or not hasattr(self, "_headers_buffer"):
            self.end_headers()
            self.wfile.write(body)
        else:  # headers and body in one write: one TLS record, one syscall
            self._headers_buffer.append(b"\r\n")
            self._headers_buffer.append(body)
            self.flush_headers()
        self.wfile.flush()

    def _drop(self) -> None:
        """Abort the connection with a TCP reset and no response."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def version_string(self) -> str:
        """The ``Server`` header a real instance sends."""
        return "ServiceNow"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Access logging off: it costs more than the request itself."""

    def log_error(self, format: str, *args: Any) -> None:
        log.debug("sandbox http: " + format, *args)


class _Server(ThreadedWSGIServer):
    """Threaded server that wraps TLS per connection and tracks open connections."""

    request_queue_size = REQUEST_QUEUE_SIZE
    daemon_threads = True

    def __init__(self, host: str, port: int, app: WSGIApp, tls_context: Any | None) -> None:
        super().__init__(host, port, app, handler=_Handler)
        self.ssl_context = tls_context  # werkzeug derives wsgi.url_scheme from this
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Refuse new connections beyond MAX_CONNECTIONS so a flood cannot exhaust threads."""
        with self._connections_lock:
            full = len(self._connections) >= MAX_CONNECTIONS
        if full:
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:  # type: ignore[override]
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = request
        try:
            if self.ssl_context is not None:
                request.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
                conn = self.ssl_context.wrap_socket(request, server_side=True)
            with self._connections_lock:
                self._connections.add(conn)
            self.RequestHandlerClass(conn, client_address, self)
        except OSError:  # handshake failure, client gone, reset
            pass
        finally:
            with self._connections_lock:
                self._connections.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("sandbox connection error from %s", client_address, exc_info=True)

    def close_connections(self) -> None:
        """Shut down every open client connection (used on stop)."""
        with self._connections_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class Sandbox:
    """A running embedded instance. Create it with :meth:`Sandbox.start`; stop with :meth:`stop`."""

    def __init__(
        self,
        *,
        store: Store,
        app: SandboxApp,
        faults: FaultInjector,
        host: str,
        port: int,
        tls_context: Any | None,
        ca_path: Path | None,
        users: dict[str, str],
        oauth_client: OAuthClient,
        api_key: str,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.app = app
        self._faults = faults
        self.host = host
        self.port = port
        self._tls_context = tls_context
        self.ca_path = ca_path
        self.users = users
        self.oauth_client = oauth_client
        self.api_key = api_key
        self._clock = clock
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        scheme = "https" if tls_context is not None else "http"
        shown_host = f"[{host}]" if ":" in host else host
        if host in ("0.0.0.0", "::"):
            shown_host = "127.0.0.1"
        self.url = f"{scheme}://{shown_host}:{port}"

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        port: int = 0,
        db: str | Path = ":memory:",
        https: bool = True,
        faults: FaultProfile | Mapping[str, Any] | str | Path | None = None,
        state_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        users: Mapping[str, str] | None = None,
        *,
        oauth_client: OAuthClient | None = None,
        api_key: str | None = None,
        token_lifetime_seconds: float = DEFAULT_TOKEN_LIFETIME_SECONDS,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Sandbox:
        """Start serving in background threads; returns once the port accepts connections."""
        profile = FaultProfile.load(faults)
        directory = Path(state_dir) if state_dir is not None else paths.sandbox_dir()
        if str(db) != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        store = Store(db, missing_tables=profile.missing_tables)
        all_users = default_users(users)
        client = oauth_client or new_oauth_client()
        key = api_key or new_api_key()
        auth = AuthService(
            all_users,
            client,
            {key: ADMIN},
            token_lifetime_seconds=token_lifetime_seconds,
            clock=clock,
        )
        injector = FaultInjector(profile, clock=clock, sleep=sleep)
        app = SandboxApp(store, auth, injector)
        tls_context, ca_path = None, None
        if https:
            material = ensure_tls_material(directory)
            tls_context, ca_path = material.server_context(), material.ca_path
        try:
            server = _Server(host, port, app, tls_context)
        except SystemExit:  # werkzeug exits when it cannot bind; a library must raise instead
            store.close()
            raise OSError(
                f"cannot listen on {host}:{port}; the port is in use or not allowed. "
                "Choose another port, or 0 for a free one."
            ) from None
        sandbox = cls(
            store=store,
            app=app,
            faults=injector,
            host=host,
            port=server.port,
            tls_context=tls_context,
            ca_path=ca_path,
            users=all_users,
            oauth_client=client,
            api_key=key,
            clock=clock,
        )
        sandbox._serve(server)
        sandbox._supervisor = threading.Thread(
            target=sandbox._supervise, name="sandbox-outage", daemon=True
        )
        sandbox._supervisor.start()
        return sandbox

    # -- faults ------------------------------------------------------------------------------

    @property
    def faults(self) -> FaultProfile:
        """The fault profile in force."""
        return self._faults.profile

    def set_faults(self, profile: FaultProfile | Mapping[str, Any] | str | Path | None) -> None:
        """Replace the fault profile (``None`` or ``{}`` heals the instance)."""
        loaded = FaultProfile.load(profile)
        self.store.set_missing_tables(loaded.missing_tables)
        self._faults.set_profile(loaded)

    def mount(self, prefix: str, wsgi_app: WSGIApp) -> None:
        """Serve ``prefix`` (e.g. ``/unifi``) with another WSGI app; prefix goes to SCRIPT_NAME.

        Mounting again at the same prefix replaces the earlier app (thread-safe).
        """
        self.app.mount(prefix, wsgi_app)

    # -- lifecycle ---------------------------------------------------------------------------

    def _serve(self, server: _Server) -> None:
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"sandbox-{self.port}",
            daemon=True,
        )
        self._server, self._serve_thread = server, thread
        thread.start()

    def _unserve(self) -> None:
        server, thread = self._server, self._serve_thread
        if server is not None:
            server.shutdown()
            server.server_close()
            server.close_connections()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._serve_thread = None

    def _supervise(self) -> None:
        """Close the listening socket during an outage window and reopen it afterwards."""
        while not self._stopping.wait(OUTAGE_POLL_SECONDS):
            in_outage = self._faults.in_outage()
            with self._lock:
                if self._stopping.is_set():
                    return
                if in_outage and self._server is not None:
                    log.info("sandbox outage window: refusing connections")
                    self._unserve()
                elif not in_outage and self._server is None:
                    try:
                        server = _Server(self.host, self.port, self.app, self._tls_context)
                    except (OSError, SystemExit):
                        continue  # port still busy; retry on the next tick
                    self._serve(server)
                    log.info("sandbox outage over: accepting connections again")

    @property
    def accepting(self) -> bool:
        """True while the listening socket is open (False during an outage window)."""
        return self._server is not None

    def stop(self) -> None:
        """Stop serving, drop open connections and close the store. Safe to call twice."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with self._lock:
            self._unserve()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        self.store.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def info(self) -> dict[str, Any]:
        """What a client needs to connect (holds the local test passwords: show it locally only)."""
        return {
            "url": self.url,
            "ca_path": str(self.ca_path) if self.ca_path else None,
            "users": dict(self.users),
            "oauth_client": {
                "client_id": self.oauth_client.client_id,
                "client_secret": self.oauth_client.client_secret,
            },
            "api_key": self.api_key,
        }

    def __repr__(self) -> str:  # never show secrets
        return f"Sandbox(url={self.url!r})"


def info_json(sandbox: Sandbox) -> str:
    return json.dumps(sandbox.info(), sort_keys=True)


__all__ = ["Sandbox", "info_json"]
