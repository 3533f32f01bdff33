"""Fixtures for the embedded-instance tests: one shared sandbox per module, and sessions on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from snowkit.sandbox import Sandbox


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A healthy HTTPS sandbox with an in-memory store, shared by the tests of one module."""
    with Sandbox.start(state_dir=tmp_path_factory.mktemp("sandbox-state")) as sb:
        yield sb


def session_for(sb: Sandbox, user: str = "admin") -> requests.Session:
    """A requests session that trusts the sandbox CA and logs in as ``user`` (basic auth)."""
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE silently overrides session.verify
    session.auth = (user, sb.users[user])
    session.verify = str(sb.ca_path) if sb.ca_path else True
    session.headers["Accept"] = "application/json"
    return session


@pytest.fixture
def admin(sandbox: Sandbox) -> Iterator[requests.Session]:
    with session_for(sandbox, "admin") as session:
        yield session


@pytest.fixture
def readonly(sandbox: Sandbox) -> Iterator[requests.Session]:
    with session_for(sandbox, "readonly") as session:
        yield session
