"""`snowkit health`: table and health+json output, exit codes, guidance for what went wrong."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from snowkit.cli import main
from snowkit.ops.logging import configure_logging
from snowkit.sandbox import Sandbox


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    yield
    configure_logging()  # the command sends logs to the file only; give later tests stderr back


@pytest.fixture
def env_for(monkeypatch: pytest.MonkeyPatch, sb: Sandbox):
    def configure(user: str = "admin", password: str | None = None) -> None:
        monkeypatch.setenv("BEAST_ENVIRONMENT", "testing")
        monkeypatch.setenv("SERVICENOW_USERNAME", user)
        monkeypatch.setenv("SERVICENOW_PASSWORD", password or sb.users[user])
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(sb.ca_path))
        for name in ("SERVICENOW_API_KEY", "SERVICENOW_OAUTH_TOKEN", "SERVICENOW_INSTANCE"):
            monkeypatch.delenv(name, raising=False)

    return configure


def test_embedded_passes_with_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "--instance", "embedded"]) == 0
    out = capsys.readouterr().out
    assert "servicenow" in out and "overall: pass" in out


def test_json_is_a_health_document(sb: Sandbox, env_for, capsys) -> None:
    env_for()
    assert main(["health", "--instance", sb.url, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["status"] == "pass"
    assert document["checks"]["servicenow:responseTime"][0]["componentId"] == "127.0.0.1"


def test_rejected_credentials_fail_with_what_to_do(sb: Sandbox, env_for, capsys) -> None:
    env_for(password="wrong-canary-password-77")
    assert main(["health", "--instance", sb.url]) == 2
    out = capsys.readouterr().out
    assert "rejected" in out and "SERVICENOW_PASSWORD" in out
    assert "wrong-canary-password-77" not in out


def test_hibernating_instance_fails_with_how_to_wake_it(sb: Sandbox, env_for, capsys) -> None:
    env_for()
    sb.set_faults({"hibernating": True})
    assert main(["health", "--instance", sb.url, "--json"]) == 2
    document = json.loads(capsys.readouterr().out)
    (check,) = document["checks"]["servicenow:responseTime"]
    assert check["status"] == "fail" and "developer.servicenow.com" in check["output"]


def test_a_warning_exits_1_and_multi_line_messages_stay_in_their_column(capsys) -> None:
    from snowkit.cli.health import _report
    from snowkit.ops.health import HealthCheck, HealthStatus, to_health_json

    checks = {
        "servicenow": HealthCheck("servicenow", HealthStatus.HEALTHY, "ok", response_time_ms=3),
        "system": HealthCheck("system", HealthStatus.DEGRADED, "memory high\nclose notebooks"),
    }
    assert _report(checks, False, to_health_json) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("system") and lines[2].endswith("memory high")
    assert lines[3].strip() == "close notebooks" and lines[3].index("close") == lines[2].index(
        "memory"
    )
    assert lines[-1] == "overall: warn"


def test_unusable_instance_url_fails_cleanly(env_for, capsys) -> None:
    env_for()
    assert main(["health", "--instance", "http://example.com"]) == 2
    assert "refusing plain http" in capsys.readouterr().out


def test_missing_environment_is_reported_not_crashed(monkeypatch, capsys) -> None:
    monkeypatch.delenv("BEAST_ENVIRONMENT", raising=False)
    assert main(["health", "--instance", "https://acme.service-now.com"]) == 2
    assert "BEAST_ENVIRONMENT" in capsys.readouterr().out
