"""`snowkit load | setup | outbox | rollback` end to end on the embedded instance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snowkit.cli import main
from snowkit.cmdb.job import connect
from snowkit.cmdb.outbox import OP_CREATE, Outbox

LAB = ["--lab-sites", "1", "--lab-devices", "3", "--lab-clients", "4", "--batch-size", "5"]


def test_load_json_then_rerun_then_rollback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["load", "--json", *LAB]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "success"
    assert report["run_id"]
    assert report["totals"]["create"] > 0
    assert report["applied"]["created"] == report["totals"]["create"]
    assert Path(report["paths"]["audit"]).exists()
    assert Path(report["paths"]["log"]).exists()
    assert Path(report["paths"]["report"]).exists()

    assert main(["load", "--no-progress", *LAB]) == 0
    out = capsys.readouterr().out
    assert "success" in out and f"no_change {report['totals']['create']}" in out

    assert main(["rollback", report["run_id"], "--json"]) == 0
    undone = json.loads(capsys.readouterr().out)
    assert undone["ok"] and undone["deleted"] == (
        report["applied"]["created"] + report["relationships"]["created"]
    )
    assert main(["load", "--json", *LAB]) == 0  # the CMDB was emptied: everything again
    assert json.loads(capsys.readouterr().out)["totals"]["create"] == report["totals"]["create"]


def test_dry_run_json_and_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["load", "--dry-run", "--json", *LAB]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "dry_run"
    assert Path(report["paths"]["plan"]).exists()


def test_setup_and_outbox_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["setup", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["ok"] and sorted(status["created"] + status["present"]) == [
        "cmdb_ci.u_unifi_source_id",
        "cmn_location.u_unifi_source_id",
    ]
    with Outbox() as box:
        box.enqueue("r1", OP_CREATE, "cmn_location", source_id="site:x", values={"name": "X"})
    assert main(["outbox", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["summary"] == {"pending": 1}
    assert shown["entries"][0]["source_id"] == "site:x"
    assert main(["outbox", "replay", "--json"]) == 0
    replayed = json.loads(capsys.readouterr().out)
    assert replayed["created"] == 1 and replayed["remaining"] == 0
    assert main(["outbox", "replay"]) == 0
    assert "empty" in capsys.readouterr().out


def test_errors_are_clear(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rollback", "20990101T000000Z-000000"]) == 1
    assert "no writes for run" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["load", "--batch-size", "0"])
    assert info.value.code == 2


def test_full_read_rereads_the_cmdb_and_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    def events(report: dict) -> set[str]:
        lines = Path(report["paths"]["log"]).read_text().splitlines()
        return {json.loads(line).get("event") for line in lines}

    assert main(["load", "--json", *LAB]) == 0
    capsys.readouterr()
    assert main(["load", "--json", *LAB]) == 0
    quick = json.loads(capsys.readouterr().out)
    assert "incremental_snapshot" in events(quick)
    assert main(["load", "--json", "--full-read", *LAB]) == 0
    full = json.loads(capsys.readouterr().out)
    assert "incremental_snapshot" not in events(full)
    assert full["totals"]["no_change"] == quick["totals"]["no_change"] > 0
    assert full["applied"]["batches"] == 0


def test_outbox_replay_reconciles_interrupted_writes(capsys: pytest.CaptureFixture[str]) -> None:
    """A write noted in the intent journal by a run that died is audited by the replay command,
    even with nothing queued in the outbox."""
    from snowkit.cmdb.intents import IntentJournal
    from snowkit.ops.audit import read_audit

    assert main(["load", "--json", *LAB]) == 0
    capsys.readouterr()
    location = next(e for e in read_audit() if e["table"] == "cmn_location")
    with IntentJournal() as journal:
        journal.intend(
            "run-dead",
            [{"action": "create", "table": "cmn_location", "source_id": location["source_id"],
              "after": {"name": location["after"]["name"]}}],
        )  # fmt: skip
    assert main(["outbox", "replay", "--json"]) == 0
    captured = capsys.readouterr()
    replayed = json.loads(captured.out)
    assert replayed["intents"]["recovered"] == 1 and "run-dead" in captured.err
    (entry,) = read_audit(run_id="run-dead")
    assert (entry["action"], entry["outcome"], entry["sys_id"]) == (
        "create",
        "recovered",
        location["sys_id"],
    )
    assert main(["outbox", "replay"]) == 0
    assert "empty" in capsys.readouterr().out


def test_max_attempts_reaches_the_engine_and_is_documented(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import snowkit.cmdb.job as job
    from snowkit.cmdb.apply import DEFAULT_MAX_ATTEMPTS, SyncEngine

    seen: list[int] = []

    class Recording(SyncEngine):
        def __init__(self, *args: object, **kw: object) -> None:
            super().__init__(*args, **kw)  # type: ignore[arg-type]
            seen.append(self.runner.max_attempts)

    monkeypatch.setattr(job, "SyncEngine", Recording)
    assert main(["load", "--dry-run", "--json", "--max-attempts", "7", *LAB]) == 0
    assert main(["load", "--dry-run", "--json", *LAB]) == 0
    assert seen == [7, DEFAULT_MAX_ATTEMPTS]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["load", "--max-attempts", "0"])
    assert "at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["load", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-attempts" in text and f"default {DEFAULT_MAX_ATTEMPTS}" in text
    assert "lower --workers" in text


def test_outbox_show_explains_what_the_entries_are(capsys: pytest.CaptureFixture[str]) -> None:
    link = {"parent_source_id": "d1", "child_source_id": "d2", "type_name": "Connects to"}
    with Outbox() as box:
        for run in ("r1", "r2"):  # a load tried twice during an outage
            box.enqueue(run, OP_CREATE, "cmn_location", source_id="s1", values={"name": "X"})
            box.enqueue(run, OP_CREATE, "cmdb_ci_ip_switch", source_id="d1", values={})
            box.enqueue(run, "relate", "cmdb_rel_ci", extra=link)
            box.enqueue(run, "relate", "cmdb_rel_ci", extra={**link, "type_name": "Depends on"})
    assert main(["outbox", "show"]) == 0
    out = capsys.readouterr().out
    assert "pending 4: one entry per record write and one per relationship" in out
    assert "create 2: cmdb_ci_ip_switch 1, cmn_location 1" in out
    assert "relate 2: cmdb_rel_ci 2" in out
    assert main(["outbox", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["pending_by_op"] == {
        "create": {"cmdb_ci_ip_switch": 1, "cmn_location": 1},
        "relate": {"cmdb_rel_ci": 2},
    }


def test_a_rollback_leaves_the_remembered_state_unsealed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A rollback writes with our account outside a load: the next load must not trust its
    narrowed listing, so the state is marked unsealed until a load saves it again."""
    from snowkit.cmdb.job import embedded_db_path
    from snowkit.cmdb.state import StateStore

    key = f"embedded:{embedded_db_path()}"
    assert main(["load", "--json", *LAB]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    with StateStore() as store:
        head = store.load_head(key)
        assert head is not None and head.sealed
    assert main(["rollback", run_id, "--json"]) == 0
    capsys.readouterr()
    with StateStore() as store:
        head = store.load_head(key)
        assert head is not None and not head.sealed
    assert main(["load", "--json", *LAB]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["applied"]["created"] > 0  # everything rolled back is written again
    with StateStore() as store:
        assert store.load_head(key).sealed


def test_maintenance_commands_read_the_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """setup, outbox replay and rollback follow load's rule: an invalid configuration stops
    them with exit 78, naming the problem and never the value."""
    bad = tmp_path / "snowkit.toml"
    bad.write_text('[retry]\nmax_attempts = "many-canary-9f2"\n', encoding="utf-8")
    for command in (["setup"], ["rollback", "20990101T000000Z-000000"]):
        code = main([*command, "--config", str(bad), "--environment", "production"])
        err = capsys.readouterr().err
        assert code == 78, (command, err)
        assert "not started" in err and "max_attempts" in err
        assert "many-canary-9f2" not in err


def test_rollback_of_a_run_whose_records_changed_since_says_what_to_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["load", "--json", *LAB]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    connection = connect("embedded")  # someone renames a switch the run created
    try:
        client = connection.client
        switch = next(iter(client.query("cmdb_ci_ip_switch", "u_unifi_source_idISNOTEMPTY")))
        client.update("cmdb_ci_ip_switch", switch["sys_id"], {"name": "renamed-by-hand"})
    finally:
        connection.close()

    assert main(["rollback", run_id]) == 3  # nothing undone
    captured = capsys.readouterr()
    assert f"cmdb_ci_ip_switch/{switch['sys_id']}" in captured.out and ": name" in captured.out
    assert "roll back the later runs first" in captured.err and "--force" in captured.err
    assert main(["rollback", run_id, "--force", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"]
    connection = connect("embedded")
    try:
        assert list(connection.client.query("cmdb_ci", "u_unifi_source_idISNOTEMPTY")) == []
    finally:
        connection.close()
