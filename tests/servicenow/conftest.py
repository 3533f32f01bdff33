"""Fixtures for the ServiceNow client tests: one embedded instance per module, fake sleeps.

Credentials: snowkit.credentials.CredentialManager.static, or (to combine arbitrary real
AuthMethod objects, e.g. an OAuth password grant) the tiny ``StaticCredentials`` holder below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from snowkit.credentials import CredentialManager
from snowkit.ops.audit import AuditTrail, read_audit
from snowkit.ops.logging import configure_logging
from snowkit.sandbox import Sandbox
from snowkit.servicenow import ServiceNowAPIClient

AUDIT_KEY = b"k" * 32


@dataclass
class StaticCredentials:
    methods: list[Any] = field(default_factory=list)

    def auth_methods(self, instance_url: str | None = None) -> list[Any]:
        return list(self.methods)

    def availability(self) -> dict[str, bool]:
        return {m.name: True for m in self.methods}

    def instance_url(self) -> str | None:
        return None


class FakeSleep:
    """Records every requested sleep; optionally runs a hook (e.g. heal the server) on each."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.hook: Any = None
        self.clock: FakeClock | None = None

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.clock is not None:
            self.clock.now += seconds
        if self.hook is not None:
            self.hook(len(self.calls))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def default_logging() -> None:
    """JSON log lines on stderr (some tests read them), whatever an earlier test configured."""
    configure_logging()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    state = tmp_path_factory.mktemp("sandbox-state")
    with Sandbox.start(state_dir=state) as sb:
        yield sb


@pytest.fixture
def sb(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The module's sandbox with faults cleared before and after each test."""
    sandbox.set_faults(None)
    yield sandbox
    sandbox.set_faults(None)


@pytest.fixture
def admin(sb: Sandbox) -> CredentialManager:
    return CredentialManager.static(basic=("admin", sb.users["admin"]))


@pytest.fixture
def fake_sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(
    sb: Sandbox, admin: StaticCredentials, fake_sleep: FakeSleep
) -> Iterator[ServiceNowAPIClient]:
    with ServiceNowAPIClient(sb.url, admin, verify=str(sb.ca_path), sleep=fake_sleep) as c:
        yield c


@pytest.fixture
def make_client(sb: Sandbox, admin: CredentialManager) -> Callable[..., ServiceNowAPIClient]:
    """An admin client on the module's sandbox, with whatever else the test injects."""

    def make(**kwargs: Any) -> ServiceNowAPIClient:
        return ServiceNowAPIClient(sb.url, admin, verify=str(sb.ca_path), **kwargs)

    return make


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def trail(audit_path: Path) -> Iterator[AuditTrail]:
    """An audit trail without fsync; close it before reading (closing twice is safe)."""
    audit = AuditTrail(audit_path, key=AUDIT_KEY, fsync=False)
    yield audit
    audit.close()


def audit_entries(path: Path) -> list[dict[str, Any]]:
    """The entries of an audit file, without its checkpoints."""
    return [e for e in read_audit(path) if e.get("type") != "checkpoint"]


def requests_sent(client: ServiceNowAPIClient, method: str, operation: str) -> int:
    """How many HTTP requests ``client`` sent for ``operation`` (from its metric samples)."""
    frame = client.metrics.samples_frame()
    if frame.empty:
        return 0
    return int(((frame["method"] == method) & (frame["operation"] == operation)).sum())
