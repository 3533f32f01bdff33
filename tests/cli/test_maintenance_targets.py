"""Which instance a command changes: the one the user named, never another one by default.

A review found loads, replays and rollbacks acting on the embedded instance (or whatever the
next command targeted) while the user meant a URL, each reporting success.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from snowkit import paths
from snowkit.cli import main
from snowkit.cmdb.job import embedded_db_path
from snowkit.cmdb.outbox import OP_CREATE, Outbox
from snowkit.sandbox import Sandbox

LAB = ["--lab-sites", "1", "--lab-devices", "2", "--lab-clients", "2", "--batch-size", "5"]
SID = "u_unifi_source_id"


def sourced(sb: Sandbox) -> int:
    return sb.store.count("cmdb_ci", f"{SID}ISNOTEMPTY")


def test_servicenow_instance_is_the_default_without_a_configuration(
    remote: Callable[..., Sandbox],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sb = remote()
    monkeypatch.setenv("SERVICENOW_INSTANCE", sb.url)
    assert main(["load", "--json", *LAB]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["instance"] == sb.url and sourced(sb) > 0


def test_a_replay_sends_only_what_was_queued_for_its_instance(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with Outbox(instance="https://dev12345.service-now.com") as queued:  # down when queued
        queued.enqueue("r1", OP_CREATE, "cmn_location", source_id="site:x", values={"name": "X"})
    assert main(["load", "--json", *LAB]) == 0  # the embedded instance: not that one's queue
    report = json.loads(capsys.readouterr().out)
    assert "replayed" not in report["outbox"]
    assert main(["outbox", "replay"]) == 0
    captured = capsys.readouterr()
    assert "sent 0" in captured.out
    assert "1 write(s) queued for https://dev12345.service-now.com stay queued" in captured.err
    with Outbox() as everything:
        [entry] = everything.pending()
    assert entry.instance == "https://dev12345.service-now.com"
    assert main(["outbox", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [e["instance"] for e in shown["entries"]] == ["https://dev12345.service-now.com"]
    with Outbox(instance=f"embedded:{embedded_db_path()}") as mine:
        assert mine.count() == 0


def test_a_replay_on_an_instance_without_the_source_id_field_does_not_start(
    remote: Callable[..., Sandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the field the instance ignores the lookup's condition: every queued create
    had become an update of one and the same CI."""
    sb = remote(fields=False)
    with Outbox(instance=sb.url) as box:
        for n in range(3):
            box.enqueue("r1", OP_CREATE, "cmdb_ci_ip_switch", source_id=f"dev:{n}",
                        values={"name": f"sw-{n}"})  # fmt: skip
    sb.store.insert("cmdb_ci_ip_switch", {"name": "someone's switch"}, user="admin")
    assert main(["outbox", "replay", "--instance", sb.url]) == 1
    err = capsys.readouterr().err
    assert "replay not started" in err and "u_unifi_source_id" in err
    assert sb.store.count("cmdb_ci") == 1  # nothing written: only someone's switch
    with Outbox(instance=sb.url) as box:
        assert box.count() == 3


def test_a_rollback_refuses_an_instance_the_run_did_not_load(
    remote: Callable[..., Sandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    sb = remote()
    assert main(["load", "--json", "--instance", sb.url, *LAB]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    before = sourced(sb)
    assert main(["rollback", run_id]) == 1  # the embedded instance: not the one loaded
    err = capsys.readouterr().err
    assert f"run {run_id} loaded {sb.url}" in err and f"--instance {sb.url}" in err
    assert sourced(sb) == before
    assert main(["rollback", run_id, "--instance", sb.url]) == 0
    assert sourced(sb) == 0


def test_a_state_directory_that_cannot_be_written_is_named_without_a_traceback(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("SNOWKIT_HOME", str(home))
    real = os.mkdir

    def read_only(path: Any, *args: Any, **kw: Any) -> None:
        if str(path).startswith(str(home)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        real(path, *args, **kw)

    monkeypatch.setattr(os, "mkdir", read_only)
    for command in (["load", *LAB], ["outbox", "show"], ["health"]):
        assert main(command) == 1, command
        err = capsys.readouterr().err
        assert err.startswith(f"error: snowkit cannot write its state under {home}"), err
        assert "SNOWKIT_HOME" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "command", [["load", *LAB], ["setup"], ["rollback", "r1"], ["outbox", "replay"], ["health"]]
)
@pytest.mark.parametrize(
    "instance, said",
    [
        ("ftp://x", "scheme must be https"),
        ("http://example.invalid", "refusing plain http"),
        ("https://user:pw@example.invalid", "carries a user name or password"),
    ],
)
def test_a_bad_instance_is_a_usage_error_before_anything_is_written(
    command: list[str], instance: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--instance", instance])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "pw" not in err
    assert not paths.runs_dir().exists()


def test_a_configuration_with_plain_http_off_loopback_is_refused(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "snowkit.toml"
    config.write_text('[servicenow]\ninstance = "http://example.invalid"\n', encoding="utf-8")
    code = main(["config", "show", "--config", str(config), "--environment", "development"])
    assert code == 78
    assert "servicenow.instance" in capsys.readouterr().err
