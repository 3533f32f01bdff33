"""Fixtures for the UniFi tests: a generated lab served over HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from snowkit.ops.retry import RetryManager, RetryPolicy
from snowkit.unifi.lab import LabApp, LabConfig, generate_lab, lab_app
from tests.helpers.http import serve_wsgi

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "reference" / "unifi-samples"
API_KEY = "test-api-key-9f8e7d"
USERNAME = "lab-admin"
PASSWORD = "S3cret-lab-Passw0rd!"


@dataclass
class LabServer:
    app: LabApp
    url: str

    @property
    def network(self) -> str:
        return self.url + "/network"

    @property
    def sitemanager(self) -> str:
        return self.url + "/sitemanager"


@contextmanager
def serve(app: Any) -> Iterator[LabServer]:
    """Serve a WSGI app on an ephemeral 127.0.0.1 port for the duration of the block."""
    with serve_wsgi(app) as url:
        yield LabServer(app, url)


@pytest.fixture
def small_lab_config() -> LabConfig:
    return LabConfig(sites=2, devices_per_site=8, clients_per_site=30, seed=11)


@pytest.fixture
def lab_server(small_lab_config: LabConfig) -> Iterator[LabServer]:
    app = lab_app(
        generate_lab(small_lab_config), api_key=API_KEY, username=USERNAME, password=PASSWORD
    )
    with serve(app) as server:
        yield server


@dataclass
class Sleeps:
    calls: list[float]

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps([])


@pytest.fixture
def retry_manager(sleeps: Sleeps) -> RetryManager:
    """Retries without waiting: every back-off goes to ``sleeps``."""
    policy = RetryPolicy(
        max_attempts=3, base_delay_seconds=0.01, max_delay_seconds=0.05, jitter=False
    )
    return RetryManager(policy, sleep=sleeps)
