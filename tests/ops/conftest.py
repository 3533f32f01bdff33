"""Shared helpers for the operational-layer tests: fake clocks, a canned HTTP server on
127.0.0.1, the fake 1Password CLI on PATH, and log capture that restores the default setup."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

FAKE_OP = Path(__file__).parent / "fake_op" / "op"


class FakeClock:
    """A controllable clock; ``sleep`` advances it and records the requested delays."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def wall_clock() -> FakeClock:
    """A fake wall clock (UNIX seconds) for HTTP-date and X-RateLimit-Reset arithmetic."""
    return FakeClock(start=1_767_225_600.0)  # 2026-01-01T00:00:00Z


@pytest.fixture
def clean_secrets() -> Iterator[Any]:
    """The process-wide secret registry, emptied before and after the test."""
    from snowkit.ops.redaction import secrets

    secrets.clear()
    yield secrets
    secrets.clear()


@pytest.fixture
def canary(clean_secrets: Any) -> str:
    """A unique secret value; tests assert it never appears in any sink."""
    import uuid

    return f"canary-{uuid.uuid4().hex}"


@dataclass
class LogCapture:
    stream: io.StringIO
    file: Path

    def console_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line]

    def file_lines(self) -> list[dict[str, Any]]:
        if not self.file.exists():
            return []
        return [json.loads(line) for line in self.file.read_text().splitlines() if line]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.file_lines() if line.get("event") == name]

    def all_text(self) -> str:
        text = self.stream.getvalue()
        for path in self.file.parent.glob(self.file.name + "*"):
            text += path.read_text()
        return text


@pytest.fixture
def log_capture(tmp_path: Path) -> Iterator[LogCapture]:
    """snowkit logging to a StringIO console and a JSON-lines file, DEBUG level."""
    from snowkit.ops.logging import configure_logging

    capture = LogCapture(io.StringIO(), tmp_path / "logs" / "snowkit.jsonl")
    configure_logging(level="DEBUG", file_path=capture.file, stream=capture.stream)
    yield capture
    configure_logging()  # back to the default: console only, stderr, INFO


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


@pytest.fixture
def canned_server() -> Iterator[CannedServer]:
    state = CannedServer(url="", routes={}, received=[])
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@dataclass
class FakeOp:
    """The fake ``op`` installed on a private PATH, configured through ``env``."""

    bin_dir: Path
    argv_log: Path
    env: dict[str, str]

    def set_secrets(self, mapping: dict[str, str]) -> None:
        self.env["FAKE_OP_SECRETS"] = json.dumps(mapping)

    def invocations(self) -> list[list[str]]:
        if not self.argv_log.exists():
            return []
        return [json.loads(line)["argv"] for line in self.argv_log.read_text().splitlines()]


@pytest.fixture
def fake_op(tmp_path: Path) -> Iterator[FakeOp]:
    from snowkit.credentials import clear_op_cache

    clear_op_cache()  # values are cached per process; each test has its own fake vault
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    target = bin_dir / "op"
    shutil.copy(FAKE_OP, target)
    target.chmod(0o755)
    argv_log = tmp_path / "op-argv.jsonl"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "FAKE_OP_ARGV_LOG": str(argv_log),
        "FAKE_OP_SECRETS": "{}",
    }
    yield FakeOp(bin_dir=bin_dir, argv_log=argv_log, env=env)
    clear_op_cache()
