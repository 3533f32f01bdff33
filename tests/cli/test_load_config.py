"""`snowkit load` and the operational configuration (``--config``, ``--environment``).

Black-box over real HTTP: the embedded instance, or a test sandbox addressed by URL with the
credentials in SERVICENOW_* variables. Every client the job builds is recorded and given a
no-op sleep, so no test waits out a back-off (not even when the configuration were ignored).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import snowkit.cmdb.job as job
from snowkit import paths
from snowkit.cli import main
from snowkit.cli.load import EXIT_CONFIG, NO_CONFIG_NOTE
from snowkit.sandbox import Sandbox
from snowkit.unifi import LabConfig

TINY_LAB = LabConfig(sites=1, devices_per_site=2, clients_per_site=2, seed=5)
LAB = ["--lab-sites", "1", "--lab-devices", "2", "--lab-clients", "2", "--batch-size", "5"]
CANARY = "Canary-7f3a9c-NOT-FOR-OUTPUT"
SID = "u_unifi_source_id"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No configuration or ServiceNow settings leak in from the shell running the tests."""
    for name in list(os.environ):
        if name.startswith("SERVICENOW_") or (
            name.startswith("SNOWKIT_") and name not in ("SNOWKIT_HOME", "SNOWKIT_REPORTS")
        ):
            monkeypatch.delenv(name)
    for name in ("BEAST_ENVIRONMENT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The connections ``run_load`` opens (their clients never sleep)."""
    connections: list[Any] = []
    real = job.connect

    def recording(*args: Any, **kw: Any) -> Any:
        kw["client_options"] = {**(kw.get("client_options") or {}), "sleep": lambda s: None}
        connection = real(*args, **kw)
        connections.append(connection)
        return connection

    monkeypatch.setattr(job, "connect", recording)
    return connections


def write_config(tmp_path: Path, text: str, name: str = "snowkit.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["load", "--json", *args, *LAB])
    return code, json.loads(capsys.readouterr().out)


def log_events(report: dict[str, Any], event: str) -> list[dict[str, Any]]:
    lines = Path(report["paths"]["log"]).read_text(encoding="utf-8").splitlines()
    return [e for e in map(json.loads, lines) if e.get("event") == event]


def records_in(sb: Sandbox) -> int:
    return sb.store.count("cmdb_ci", f"{SID}ISNOTEMPTY") + sb.store.count(
        "cmn_location", f"{SID}ISNOTEMPTY"
    )


# -- the configuration reaches the client --------------------------------------------------------


def test_config_file_settings_configure_the_loads_client(
    tmp_path: Path, built: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path,
        "[retry]\nmax_attempts = 4\nbase_delay_seconds = 0\n"
        "[circuit_breaker]\nfailure_threshold = 2\nrecovery_timeout_seconds = 123\n"
        "[servicenow]\nconnect_timeout = 2.5\nread_timeout = 7.5\n",
    )
    code, report = load_json(capsys, "--config", str(config), "--environment", "unknown")
    assert code == 0, report["message"]
    assert report["status"] == "success"
    (connection,) = built
    client = connection.client
    assert client.retry_manager.default_policy.max_attempts == 4
    assert client.circuit_breaker.failure_threshold == 2
    assert client.circuit_breaker.recovery_timeout_seconds == 123
    assert (client.timeouts.connect, client.timeouts.read) == (2.5, 7.5)
    note = f"configuration loaded: environment unknown, file {config}"
    assert report["notes"][0] == note
    on_disk = json.loads(Path(report["paths"]["report"]).read_text(encoding="utf-8"))
    assert on_disk["notes"][0] == note


def test_breaker_threshold_and_environment_retries_are_honoured(
    tmp_path: Path,
    built: list[Any],
    remote: Callable[..., Sandbox],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every request fails: the breaker opens after the file's 2 failures (built-in: 5) and the
    testing environment (BEAST_ENVIRONMENT) sends each request once (built-in: 3 attempts)."""
    sb = remote(faults={"error_rate": 1.0, "seed": 5})
    monkeypatch.setenv("BEAST_ENVIRONMENT", "testing")
    config = write_config(
        tmp_path, "[circuit_breaker]\nfailure_threshold = 2\nrecovery_timeout_seconds = 3600\n"
    )
    code, report = load_json(capsys, "--instance", sb.url, "--config", str(config))
    assert code != 0 and report["status"] in ("failed", "queued")
    opened = [e for e in log_events(report, "breaker_state_change") if e["new"] == "open"]
    assert opened and opened[0]["failure_count"] == 2, opened
    assert report["requests"]["failed"] > 0
    assert report["requests"]["retries"] == 0
    metrics = json.loads(Path(report["paths"]["metrics"]).read_text(encoding="utf-8"))
    assert metrics["system"]["circuit_breaker_states"]["servicenow"] == "open"
    assert report["notes"][0] == f"configuration loaded: environment testing, file {config}"
    assert records_in(sb) == 0


def test_environment_alone_loads_the_configuration(
    built: list[Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BEAST_ENVIRONMENT", "testing")
    monkeypatch.setenv("SNOWKIT_CIRCUIT_BREAKER__FAILURE_THRESHOLD", "9")
    code, report = load_json(capsys)
    assert code == 0, report["message"]
    client = built[0].client
    assert client.retry_manager.default_policy.max_attempts == 1  # the testing defaults
    assert client.circuit_breaker.failure_threshold == 9  # SNOWKIT_* variables apply too
    assert report["notes"][0] == "configuration loaded: environment testing, no file"


# -- invalid configuration -----------------------------------------------------------------------

BAD_CONFIGS = {
    "bad values": (
        f'[retry]\nmax_attempts = "{CANARY}"\n[credentials]\npassword_ref = "{CANARY}"\n',
        ["retry.max_attempts", "credentials.password_ref", "op://"],
    ),
    "a plain secret": (
        f'[credentials]\nusername = "svc"\npassword = "{CANARY}"\n',
        ["credentials.password", "unknown setting"],
    ),
    "broken toml": (f"[retry\nmax_attempts = {CANARY}\n", ["not valid toml"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_invalid_configuration_stops_with_78_and_no_value_echoed(
    case: str, tmp_path: Path, built: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    text, expected = BAD_CONFIGS[case]
    config = write_config(tmp_path, text)
    code = main(["load", "--config", str(config), "--environment", "production", *LAB])
    out, err = capsys.readouterr()
    assert code == EXIT_CONFIG == 78
    assert "load not started" in err and "Traceback" not in err
    for words in expected:
        assert words in err, err
    assert CANARY not in out + err
    assert built == []
    runs = paths.runs_dir()
    assert not runs.exists() or not any(runs.iterdir())  # nothing was started or written


def test_config_file_without_an_environment_stops_with_78(
    tmp_path: Path,
    built: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, "[retry]\nmax_attempts = 2\n")
    assert main(["load", "--config", str(config), *LAB]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "BEAST_ENVIRONMENT" in err and "--environment" in err
    # SNOWKIT_CONFIG asks for the configuration as --config does: a broken one stops the load
    broken = write_config(tmp_path, f'[retry]\nmax_attempts = "{CANARY}"\n', name="env.toml")
    monkeypatch.setenv("SNOWKIT_CONFIG", str(broken))
    assert main(["load", "--environment", "staging", *LAB]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "retry.max_attempts" in err and CANARY not in err
    assert built == []


# -- no configuration: as before, with a note ----------------------------------------------------


def test_without_configuration_defaults_apply_and_the_report_says_so(
    built: list[Any], remote: Callable[..., Sandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = load_json(capsys)
    assert code == 0 and report["status"] == "success", report["message"]
    assert report["notes"][0] == NO_CONFIG_NOTE
    on_disk = json.loads(Path(report["paths"]["report"]).read_text(encoding="utf-8"))
    assert on_disk["notes"][0] == NO_CONFIG_NOTE
    client = built[0].client
    assert client.config is None
    assert client.circuit_breaker.failure_threshold == 5  # the client's built-in default

    sb = remote()  # a URL load without configuration keeps working on the defaults
    assert main(["load", "--instance", sb.url, "--no-progress", *LAB]) == 0
    out = capsys.readouterr().out
    assert "success" in out and NO_CONFIG_NOTE in " ".join(out.split())
    assert records_in(sb) > 0 and built[1].client.config is None


# -- the instance ------------------------------------------------------------------------------


def test_instance_flag_overrides_the_configured_instance(
    tmp_path: Path,
    built: list[Any],
    remote: Callable[..., Sandbox],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sb = remote()
    monkeypatch.setenv("SERVICENOW_API_KEY", CANARY)  # set, but the configured order skips it
    config = write_config(
        tmp_path, f'[servicenow]\ninstance = "{sb.url}"\nauth_order = ["basic"]\n'
    )
    args = ["--config", str(config), "--environment", "development"]

    code, report = load_json(capsys, "--instance", "embedded", *args)
    assert code == 0, report["message"]
    assert report["instance"] != sb.url and records_in(sb) == 0

    code, report = load_json(capsys, *args)  # no --instance: the configured one
    assert code == 0, report["message"]
    assert report["instance"] == sb.url and records_in(sb) > 0
    assert [m.name for m in built[-1].client.credentials.auth_methods()] == ["basic"]


HELP_WORDS = (
    "--config FILE",
    "--environment ENV",
    "BEAST_ENVIRONMENT",
    "SNOWKIT_CONFIG",
    "exit 78",
    "built-in defaults",
    "per HTTP request",
    "--max-attempts",
)


def test_help_explains_the_configuration_and_both_attempt_settings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["load", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in HELP_WORDS:
        assert words in text, words


def test_the_configured_log_level_applies_to_the_run_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``logging.level = "WARNING"``: the run log keeps warnings, drops the per-request lines."""
    from snowkit.cmdb.job import run_load
    from snowkit.config import OperationalConfig

    monkeypatch.delenv("BEAST_ENVIRONMENT", raising=False)
    config = OperationalConfig.model_validate({"logging": {"level": "WARNING"}})
    report = run_load(lab=TINY_LAB, config=config, progress=False)
    assert report.status == "success", report.message
    assert "request" not in logged_events(report.paths["log"])
    default = run_load(lab=TINY_LAB, progress=False)
    assert "request" in logged_events(default.paths["log"])


def logged_events(path: str) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["event"] for line in lines]


def test_a_config_passed_among_the_client_options_still_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """How callers handed a config to the client before ``run_load(config=...)`` existed."""
    from snowkit.cmdb.job import run_load
    from snowkit.config import OperationalConfig

    monkeypatch.delenv("BEAST_ENVIRONMENT", raising=False)
    config = OperationalConfig.model_validate({"logging": {"level": "WARNING"}})
    report = run_load(lab=TINY_LAB, progress=False, client_options={"config": config})
    assert report.status == "success", report.message


def test_the_configured_state_dir_is_where_the_commands_keep_their_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`state_dir` had been shown by `config show` and ignored: the state went to ./.snowkit."""
    configured = tmp_path / "configured-home"
    config = write_config(tmp_path, f'state_dir = "{configured}"\n')
    monkeypatch.delenv("SNOWKIT_HOME")
    monkeypatch.chdir(tmp_path)
    assert main(["outbox", "replay", "--config", str(config), "--environment", "testing"]) == 0
    assert "the outbox is empty" in capsys.readouterr().out
    assert os.environ["SNOWKIT_HOME"] == str(configured)  # also for kernels `snowkit run` starts
    assert (configured / "outbox.sqlite3").is_file()
    assert not (tmp_path / ".snowkit").exists()


def test_snowkit_home_wins_over_the_configured_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, f'state_dir = "{tmp_path / "configured-home"}"\n')
    monkeypatch.setenv("SNOWKIT_CONFIG", str(config))
    monkeypatch.setenv("BEAST_ENVIRONMENT", "testing")
    home = paths.state_dir()
    assert main(["outbox", "replay"]) == 0
    assert paths.state_dir() == home and (home / "outbox.sqlite3").is_file()
    assert not (tmp_path / "configured-home").exists()


def test_a_relative_state_dir_is_taken_from_the_files_folder_and_a_later_command_may_move_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler running in another folder must find the same state; and an in-process
    caller's second command, with another configuration, had kept the first one's home."""
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    first = write_config(first_dir, 'state_dir = "state"\n')
    second = write_config(second_dir, 'state_dir = "state"\n')
    monkeypatch.delenv("SNOWKIT_HOME")
    monkeypatch.chdir(tmp_path)
    for config, folder in ((first, first_dir), (second, second_dir)):
        assert main(["outbox", "replay", "--config", str(config), "--environment", "testing"]) == 0
        assert os.environ["SNOWKIT_HOME"] == str(folder / "state")
        assert (folder / "state" / "outbox.sqlite3").is_file()
