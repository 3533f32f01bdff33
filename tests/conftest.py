"""Fixtures shared by every test: an isolated state directory, never the user's .snowkit/."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def snowkit_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point SNOWKIT_HOME (logs, audit, outbox, cache, sandbox CA) at a per-test temp dir."""
    home = tmp_path / "snowkit-home"
    monkeypatch.setenv("SNOWKIT_HOME", str(home))
    monkeypatch.setenv("SNOWKIT_REPORTS", str(tmp_path / "reports"))
    return home


@pytest.fixture(autouse=True)
def snowkit_logging_configured() -> None:
    """snowkit configures structlog on its first ``get_logger``; were that first call made
    inside ``structlog.testing.capture_logs()``, it would replace the capture and the test
    would see no events (a failure that came and went with the order tests ran in)."""
    from snowkit.ops.logging import get_logger

    get_logger("snowkit.tests")


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--run-drills``: run the long reliability drills in tests/drills (``make drill``)."""
    parser.addoption(
        "--run-drills",
        action="store_true",
        default=False,
        help="run the long reliability drills (make drill)",
    )
