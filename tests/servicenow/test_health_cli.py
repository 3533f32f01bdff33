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


def _rows(out: str) -> dict[str, str]:
    """CHECK -> STATUS from the table."""
    rows = {}
    for line in out.splitlines()[1:]:
        if not line.strip():
            break  # the blank line before "overall: ..."
        parts = line.split()
        if len(parts) >= 2 and parts[1] in {"pass", "warn", "fail"}:
            rows[parts[0]] = parts[1]
    return rows


def test_embedded_passes_with_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["health", "--instance", "embedded"])
    out = capsys.readouterr().out
    rows = _rows(out)
    assert rows["servicenow"] == "pass" and rows["credentials"] == "pass"
    # this busy test process may push its own CPU reading over the threshold: only "system"
    # may warn, and the exit code follows the overall status
    assert {name for name, status in rows.items() if status != "pass"} <= {"system"}
    assert code == {"pass": 0, "warn": 1}[out.strip().splitlines()[-1].split()[-1]]


def test_with_nothing_configured_the_embedded_instance_is_checked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A new user runs `snowkit health` before configuring anything: the kit's default target.
    for name in ("BEAST_ENVIRONMENT", "SERVICENOW_INSTANCE", "SNOWKIT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    code = main(["health"])
    rows = _rows(capsys.readouterr().out)
    assert rows["servicenow"] == "pass" and "configuration" not in rows
    assert code in (0, 1)


def test_json_is_a_health_document(sb: Sandbox, env_for, capsys) -> None:
    env_for()
    code = main(["health", "--instance", sb.url, "--json"])
    document = json.loads(capsys.readouterr().out)
    (check,) = document["checks"]["servicenow:responseTime"]
    assert check["status"] == "pass" and check["componentId"] == "127.0.0.1"
    assert code == {"pass": 0, "warn": 1, "fail": 2}[document["status"]]


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
    from snowkit.ops.health import HealthCheck, HealthStatus

    checks = {
        "servicenow": HealthCheck("servicenow", HealthStatus.HEALTHY, "ok", response_time_ms=3),
        "system": HealthCheck("system", HealthStatus.DEGRADED, "memory high\nclose notebooks"),
    }
    assert _report(checks, False) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("system") and lines[2].endswith("memory high")
    assert lines[3].strip() == "close notebooks" and lines[3].index("close") == lines[2].index(
        "memory"
    )
    assert lines[-1] == "overall: warn"


def test_unusable_instance_url_fails_cleanly(env_for, capsys) -> None:
    env_for()
    with pytest.raises(SystemExit) as info:  # a usage error, before anything is checked
        main(["health", "--instance", "http://example.com"])
    assert info.value.code == 2
    assert "refusing plain http" in capsys.readouterr().err


def test_an_instance_url_is_checked_on_the_defaults_without_an_environment(
    sb: Sandbox, env_for, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As `snowkit load` runs on the built-in defaults; health had demanded an environment."""
    env_for()
    monkeypatch.delenv("BEAST_ENVIRONMENT")
    code = main(["health", "--instance", sb.url])
    rows = _rows(capsys.readouterr().out)
    assert rows["servicenow"] == "pass" and "configuration" not in rows
    assert code in (0, 1)


def test_the_instance_in_servicenow_instance_is_the_one_checked(
    sb: Sandbox, env_for, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env_for()
    monkeypatch.delenv("BEAST_ENVIRONMENT")
    monkeypatch.setenv("SERVICENOW_INSTANCE", sb.url)
    sb.set_faults({"hibernating": True})  # only the named instance answers so
    assert main(["health", "--json"]) == 2
    (check,) = json.loads(capsys.readouterr().out)["checks"]["servicenow:responseTime"]
    assert check["status"] == "fail" and "developer.servicenow.com" in check["output"]


def test_a_config_file_without_an_environment_is_reported_not_crashed(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.delenv("BEAST_ENVIRONMENT", raising=False)
    config = tmp_path / "snowkit.toml"
    config.write_text('[servicenow]\ninstance = "https://acme.service-now.com"\n')
    assert main(["health", "--config", str(config)]) == 2
    assert "BEAST_ENVIRONMENT" in capsys.readouterr().out


def test_an_instance_url_with_credentials_is_refused_without_echoing_them(env_for, capsys) -> None:
    env_for()
    with pytest.raises(SystemExit) as info:
        main(["health", "--instance", "https://admin:canary-health-19@acme.service-now.com"])
    captured = capsys.readouterr()
    assert info.value.code == 2 and "user name or password" in captured.err
    assert "canary-health-19" not in captured.err + captured.out
