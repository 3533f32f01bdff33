"""Shared helpers for the operational-layer tests: fake clocks, a canned HTTP server on
127.0.0.1, the fake 1Password CLI on PATH, and log capture that restores the default setup."""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.clocks import FakeClock
from tests.helpers.http import CannedResponse, CannedServer
from tests.helpers.http import canned_server as running_canned_server

__all__ = ["CannedResponse", "CannedServer", "FakeClock"]

FAKE_OP = Path(__file__).parent / "fake_op" / "op"


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


@pytest.fixture
def canned_server() -> Iterator[CannedServer]:
    with running_canned_server() as server:
        yield server


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
