"""Real HTTP servers on 127.0.0.1 (ephemeral ports) for tests: a canned-response server and a
WSGI app server. Every test that talks HTTP uses one of these, so none touches the network."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server

_POLL_SECONDS = 0.05  # how fast shutdown() is noticed


@dataclass
class CannedResponse:
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    body: bytes | str | dict | list = b"{}"
    delay: float = 0.0
    drop: bool = False  # close the connection after reading the request, without answering


@dataclass
class CannedServer:
    """A real HTTP server on 127.0.0.1 answering each path with a canned response."""

    url: str
    routes: dict[str, CannedResponse | Callable[[dict[str, Any]], CannedResponse]]
    received: list[dict[str, Any]]

    def route(self, path: str, response: CannedResponse | Callable[..., CannedResponse]) -> str:
        self.routes[path] = response
        return self.url + path


def _make_handler(server_state: CannedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            request = {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers.items()),
                "body": body.decode("utf-8", "replace"),
            }
            server_state.received.append(request)
            spec = server_state.routes.get(path, CannedResponse(status=404, body={"error": "x"}))
            if callable(spec):
                spec = spec(request)
            if spec.delay:
                time.sleep(spec.delay)
            if spec.drop:
                self.close_connection = True
                with_shutdown = getattr(self.connection, "shutdown", None)
                if with_shutdown:
                    with_shutdown(socket.SHUT_RDWR)
                return
            payload = spec.body
            if isinstance(payload, dict | list):
                payload = json.dumps(payload).encode()
            elif isinstance(payload, str):
                payload = payload.encode()
            self.send_response(spec.status)
            for name, value in spec.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client may have given up (timeouts)
                self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

    return Handler


@contextlib.contextmanager
def canned_server() -> Iterator[CannedServer]:
    """A :class:`CannedServer` running for the duration of the block."""
    state = CannedServer(url="", routes={}, received=[])
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": _POLL_SECONDS}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: object, **kwargs: object) -> None:
        pass


@contextlib.contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    """Serve a WSGI app on an ephemeral 127.0.0.1 port; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, args=(_POLL_SECONDS,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
