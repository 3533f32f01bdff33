"""Fixtures the sync-engine tests share: a sandbox per test, an admin client on it, a way to
wait for the sandbox to heal after an outage, and the small lab ``run_load`` tests load.

Every sandbox starts on an ephemeral loopback port; client sleeps are no-ops so no test waits
out a back-off.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from snowkit.cmdb.job import run_load
from snowkit.cmdb.report import RunReport
from snowkit.cmdb.schema import ensure_schema
from snowkit.credentials import CredentialManager
from snowkit.sandbox import Sandbox
from snowkit.sandbox.server import OUTAGE_POLL_SECONDS
from snowkit.servicenow import ServiceNowAPIClient
from snowkit.unifi import LabConfig

#: The lab ``run_load`` tests load: 2 sites, 3 devices and 6 clients per site.
LAB = LabConfig(sites=2, devices_per_site=3, clients_per_site=6, seed=3)
#: Client options that make back-offs instant.
FAST: dict[str, Any] = {"sleep": lambda s: None}


def make_client(sb: Sandbox, **kw: Any) -> ServiceNowAPIClient:
    """An admin client on ``sb`` that never sleeps."""
    creds = CredentialManager.static(basic=("admin", sb.users["admin"]))
    return ServiceNowAPIClient(sb.url, creds, verify=str(sb.ca_path), sleep=lambda s: None, **kw)


def heal_sandbox(sb: Sandbox) -> None:
    """End the faults; wait (bounded) until the socket has stayed open for a few supervisor
    ticks, so a tick that began during the outage cannot close it again under the next run."""
    sb.set_faults(None)
    steady = 0
    for _ in range(500):
        steady = steady + 1 if sb.accepting else 0
        if steady >= 3 * int(OUTAGE_POLL_SECONDS / 0.02 + 1):
            return
        time.sleep(0.02)
    raise AssertionError("the sandbox did not reopen its socket")


@contextlib.contextmanager
def recorded_queries(client: ServiceNowAPIClient) -> Iterator[list[str]]:
    """Every ``client.query`` made inside the block, as ``"table:query"``."""
    reads: list[str] = []
    real = client.query

    def recording(table: str, query: object = "", *a: object, **kw: object) -> object:
        reads.append(f"{table}:{query}")
        return real(table, query, *a, **kw)

    client.query = recording  # type: ignore[method-assign]
    try:
        yield reads
    finally:
        client.query = real  # type: ignore[method-assign]


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start() as sb:
        yield sb


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[ServiceNowAPIClient]:
    """An admin client on the test's sandbox, with the source-id fields in place."""
    with make_client(sandbox) as c:
        ensure_schema(c)
        yield c


@pytest.fixture
def heal() -> Callable[[Sandbox], None]:
    return heal_sandbox


@pytest.fixture
def load_lab() -> Callable[..., RunReport]:
    """``load(sandbox, **run_load kwargs)``: the whole job on the small lab, quietly."""

    def run(sb: Sandbox, **kw: Any) -> RunReport:
        kw.setdefault("lab", LAB)
        kw.setdefault("progress", False)
        kw.setdefault("batch_size", 7)
        kw.setdefault("client_options", FAST)
        return run_load(sandbox=sb, **kw)

    return run


@pytest.fixture
def new_client() -> Callable[..., ServiceNowAPIClient]:
    """``new_client(sandbox, **client options)``: another admin client (e.g. the next run's)."""
    return make_client
