"""Configuration: explicit environment, file + environment overrides, errors without input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from snowkit.cli import main as cli_main
from snowkit.config import ConfigurationManager, Environment, OperationalConfig
from snowkit.ops.errors import ConfigurationError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if (
            name.startswith("SNOWKIT_") and name not in {"SNOWKIT_HOME", "SNOWKIT_REPORTS"}
        ) or name in {"BEAST_ENVIRONMENT", "SERVICENOW_INSTANCE"}:
            monkeypatch.delenv(name)


def load(**kwargs) -> OperationalConfig:
    return ConfigurationManager().load_configuration(**kwargs)


@pytest.mark.parametrize(
    ("env", "level", "attempts"),
    [
        (Environment.DEVELOPMENT, "DEBUG", 2),
        (Environment.TESTING, "WARNING", 1),
        (Environment.PRODUCTION, "INFO", 5),
        (Environment.STAGING, "INFO", 3),
        (Environment.UNKNOWN, "INFO", 3),
    ],
)
def test_per_environment_defaults(env, level, attempts) -> None:
    config = load(environment=env)
    assert config.environment is env
    assert config.logging.level == level and config.retry.max_attempts == attempts
    assert config.servicenow.instance == "embedded" and config.servicenow.workers == 8
    assert config.servicenow.auth_order == ["api_key", "oauth", "basic"]


def test_environment_from_beast_environment(monkeypatch) -> None:
    monkeypatch.setenv("BEAST_ENVIRONMENT", "Production")
    assert load().environment is Environment.PRODUCTION


def test_missing_environment_fails_fast_listing_values() -> None:
    with pytest.raises(ConfigurationError) as info:
        load()
    message = str(info.value)
    assert "BEAST_ENVIRONMENT" in message
    for env in Environment:
        assert env.value in message


def test_invalid_environment(monkeypatch, canary) -> None:
    monkeypatch.setenv("BEAST_ENVIRONMENT", canary)
    with pytest.raises(ConfigurationError) as info:
        load()
    assert canary not in str(info.value) and "production" in str(info.value)


def test_toml_file_with_environment_section(tmp_path: Path) -> None:
    path = tmp_path / "snowkit.toml"
    path.write_text(
        """
[servicenow]
instance = "acme"
workers = 4
[retry]
max_attempts = 7
[environments.production.servicenow]
workers = 12
"""
    )
    dev = load(config_file=path, environment="development")
    assert dev.servicenow.instance == "https://acme.service-now.com"
    assert dev.servicenow.workers == 4 and dev.retry.max_attempts == 7  # file beats env defaults
    assert dev.logging.level == "DEBUG"
    prod = load(config_file=path, environment="production")
    assert prod.servicenow.workers == 12


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_json_and_yaml_files(tmp_path: Path, suffix: str) -> None:
    data = {"circuit_breaker": {"failure_threshold": 9}, "servicenow": {"page_size": 100}}
    path = tmp_path / f"c{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        import yaml

        path.write_text(yaml.safe_dump(data))
    config = load(config_file=path, environment="staging")
    assert config.circuit_breaker.failure_threshold == 9 and config.servicenow.page_size == 100


def test_environment_variables_override_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[retry]\nmax_attempts = 7\nbase_delay_seconds = 2.0\n")
    monkeypatch.setenv("SNOWKIT_RETRY__MAX_ATTEMPTS", "9")
    monkeypatch.setenv("SNOWKIT_SERVICENOW__AUTH_ORDER", '["basic"]')
    config = load(config_file=path, environment="production")
    assert config.retry.max_attempts == 9 and config.retry.base_delay_seconds == 2.0
    assert config.servicenow.auth_order == ["basic"]


def test_servicenow_instance_variable_is_honoured(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SERVICENOW_INSTANCE", "dev12345")
    config = load(environment="testing")
    assert config.servicenow.instance == "https://dev12345.service-now.com"
    path = tmp_path / "c.toml"
    path.write_text('[servicenow]\ninstance = "embedded"\n')
    assert load(config_file=path, environment="testing").servicenow.instance == "embedded"
    monkeypatch.setenv("SNOWKIT_SERVICENOW__INSTANCE", "https://other.example.com")
    assert load(environment="testing").servicenow.instance == "https://other.example.com"


def test_config_file_from_variable(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text("health_check_interval_seconds = 42\n")
    monkeypatch.setenv("SNOWKIT_CONFIG", str(path))
    assert load(environment="testing").health_check_interval_seconds == 42


def test_all_problems_listed_without_input(tmp_path: Path, monkeypatch, canary) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        f"""
[retry]
max_attempts = 0
[servicenow]
instance = "https://admin:{canary}@acme.service-now.com"
workers = "{canary}"
[credentials]
password_ref = "{canary}"
unknown_thing = "{canary}"
"""
    )
    monkeypatch.setenv("SNOWKIT_LOGGING__LEVEL", canary)
    with pytest.raises(ConfigurationError) as info:
        load(config_file=path, environment="production")
    err = info.value
    text = str(err) + repr(err) + json.dumps(err.context.to_dict())
    assert canary not in text
    problems = err.problems
    assert len(problems) == 6
    joined = "\n".join(problems)
    for where in (
        "retry.max_attempts (SNOWKIT_RETRY__MAX_ATTEMPTS)",
        "servicenow.instance (SNOWKIT_SERVICENOW__INSTANCE)",
        "servicenow.workers (SNOWKIT_SERVICENOW__WORKERS)",
        "credentials.password_ref (SNOWKIT_CREDENTIALS__PASSWORD_REF)",
        "credentials.unknown_thing",
        "logging.level (SNOWKIT_LOGGING__LEVEL)",
    ):
        assert where in joined
    assert "6 problems" in str(err)


def test_unparseable_file_and_env(tmp_path: Path, monkeypatch, canary) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[retry\nsecret = "{canary}"\n')
    with pytest.raises(ConfigurationError) as info:
        load(config_file=bad, environment="testing")
    assert canary not in str(info.value) and "not valid toml" in str(info.value)
    with pytest.raises(ConfigurationError, match="not found"):
        load(config_file=tmp_path / "missing.toml", environment="testing")
    monkeypatch.setenv("SNOWKIT_SERVICENOW", "{" + canary)
    with pytest.raises(ConfigurationError) as info:
        load(environment="testing")
    assert canary not in str(info.value) and "SNOWKIT_SERVICENOW" in str(info.value)


def test_masked_dict_hides_proxy_credentials(canary) -> None:
    config = OperationalConfig(servicenow={"proxies": {"https": f"http://u:{canary}@proxy:3128"}})
    shown = json.dumps(config.masked_dict())
    assert canary not in shown and "***@proxy:3128" in shown


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=6, max_size=30).filter(lambda s: s.strip() and "\x00" not in s))
def test_no_invalid_value_is_echoed(value: str) -> None:
    from snowkit.config import _problems_from

    def problems(v: str) -> tuple[list[str], str]:
        bad = {
            "retry": {"max_attempts": v},
            "servicenow": {"instance": v + " x", "auth_order": [v]},
            "credentials": {"api_key_ref": "x" + v},
        }
        with pytest.raises(Exception) as info:
            OperationalConfig(**bad)
        return _problems_from(info.value), str(info.value)

    # a value that spells part of the messages' own wording (a field name such as
    # "auth_order", "Input should be") cannot be told from an echo: draw another
    boilerplate = " ".join([*problems("\u2603" * 6)[0], problems("\u2603" * 6)[1]])
    assume(value not in boilerplate)
    found, text = problems(value)
    assert all(value not in p for p in found)
    assert value not in text


def test_cli_config_show(capsys, monkeypatch) -> None:
    monkeypatch.setenv("SNOWKIT_SERVICENOW__INSTANCE", "https://acme.service-now.com")
    assert cli_main(["config", "show", "--environment", "production", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["servicenow"]["instance"] == "https://acme.service-now.com"
    assert data["environment"] == "production"
    assert cli_main(["config", "show", "--environment", "testing"]) == 0
    out = capsys.readouterr().out
    assert "retry.max_attempts = 1" in out


def test_cli_config_show_invalid_exits_78(capsys, monkeypatch, canary) -> None:
    monkeypatch.setenv("SNOWKIT_RETRY__MAX_ATTEMPTS", canary)
    monkeypatch.setenv("SNOWKIT_SERVICENOW__WORKERS", "0")
    assert cli_main(["config", "show", "--environment", "production"]) == 78
    captured = capsys.readouterr()
    assert (
        "SNOWKIT_RETRY__MAX_ATTEMPTS" in captured.err
        and "SNOWKIT_SERVICENOW__WORKERS" in captured.err
    )
    assert canary not in captured.err + captured.out
    assert cli_main(["config", "show"]) == 78  # no environment given
    assert "BEAST_ENVIRONMENT" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("variable", "listed"),
    [("SNOWKIT_RETRY_MAX_ATTEMPTS", "no such setting"),
     ("SNOWKIT_RETRY__MAX_ATTEMPT", "no such setting"),
     ("SNOWKIT_SERVICE_NOW__WORKERS", "no such setting")],
)  # fmt: skip
def test_a_misspelled_variable_stops_the_load(monkeypatch, variable: str, listed: str) -> None:
    """One underscore short, the setting had been ignored and the default used (exit 0)."""
    monkeypatch.setenv(variable, "9")
    with pytest.raises(ConfigurationError) as info:
        load(environment="testing")
    assert variable in str(info.value) and listed in str(info.value)
    assert "9" not in str(info.value).replace(variable, "")


def test_variables_that_are_no_settings_are_left_alone(monkeypatch, tmp_path: Path) -> None:
    for name in ("SNOWKIT_HOME", "SNOWKIT_REPORTS", "SNOWKIT_RUN_DIR", "SNOWKIT_AUDIT_KEY"):
        monkeypatch.setenv(name, str(tmp_path))
    monkeypatch.setenv("SNOWKIT_CIRCUIT_BREAKER__FAILURE_THRESHOLD", "4")
    monkeypatch.setenv("SNOWKIT_SERVICENOW__PROXIES__HTTPS", "http://proxy.corp:3128")
    config = load(environment="testing")
    assert config.circuit_breaker.failure_threshold == 4
    assert config.servicenow.proxies == {"https": "http://proxy.corp:3128"}  # a dict's key


def test_a_misspelled_variable_in_lower_case_stops_the_load_too(monkeypatch) -> None:
    monkeypatch.setenv("snowkit_retry_max_attempts", "9")
    with pytest.raises(ConfigurationError, match="snowkit_retry_max_attempts"):
        load(environment="testing")


def test_an_environment_section_must_name_an_environment(tmp_path: Path) -> None:
    """[environments.prod] had been ignored: production ran on its defaults."""
    path = tmp_path / "c.toml"
    path.write_text('[environments.prod.retry]\nmax_attempts = 9\n[environments]\ntesting = "x"\n')
    with pytest.raises(ConfigurationError) as info:
        load(config_file=path, environment="production")
    text = str(info.value)
    assert "environments.prod: unknown environment" in text
    assert "environments.testing: must be a table" in text


def test_a_bad_servicenow_instance_names_the_variable_the_user_set(monkeypatch) -> None:
    monkeypatch.setenv("SERVICENOW_INSTANCE", "http://acme.example.com")
    with pytest.raises(ConfigurationError) as info:
        load(environment="testing")
    assert "(SERVICENOW_INSTANCE)" in str(info.value)
    assert "SNOWKIT_SERVICENOW__INSTANCE" not in str(info.value)
