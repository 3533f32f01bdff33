"""Fixtures shared by the CLI tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from snowkit.cmdb.schema import ensure_schema
from snowkit.credentials import CredentialManager
from snowkit.sandbox import Sandbox
from snowkit.servicenow import ServiceNowAPIClient


@pytest.fixture
def remote(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Sandbox]]:
    """``remote(faults=None, fields=True)``: a sandbox addressed by URL like a real instance,
    credentials in SERVICENOW_USERNAME / SERVICENOW_PASSWORD, its CA in REQUESTS_CA_BUNDLE,
    the source-id fields in place unless ``fields`` is False."""
    started: list[Sandbox] = []

    def start(faults: Any = None, fields: bool = True) -> Sandbox:
        sb = Sandbox.start()
        started.append(sb)
        if fields:
            creds = CredentialManager.static(basic=("admin", sb.users["admin"]))
            with ServiceNowAPIClient(sb.url, creds, verify=str(sb.ca_path)) as client:
                ensure_schema(client)
        if faults is not None:
            sb.set_faults(faults)
        monkeypatch.setenv("SERVICENOW_USERNAME", "admin")
        monkeypatch.setenv("SERVICENOW_PASSWORD", sb.users["admin"])
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(sb.ca_path))
        return sb

    yield start
    for sb in started:
        sb.stop()
