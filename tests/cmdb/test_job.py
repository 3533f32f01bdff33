"""run_load: the whole job against the embedded instance, and the files it leaves behind."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

from snowkit import paths
from snowkit.cmdb.apply import CrashSimulation
from snowkit.cmdb.job import Connection, collect_inventory
from snowkit.cmdb.outbox import Outbox
from snowkit.ops.audit import read_audit
from snowkit.sandbox import Sandbox
from snowkit.unifi import LabConfig


def test_load_writes_report_metrics_log_and_rerun_writes_nothing(
    sandbox: Sandbox, load_lab
) -> None:
    first = load_lab(sandbox)
    assert first.status == "success", first.message
    run_dir = paths.runs_dir() / first.run_id
    report = json.loads((run_dir / "report.json").read_text())
    assert report["run_id"] == first.run_id
    assert report["totals"]["create"] == first.applied["created"] > 0
    links = report["relationships"]  # every wanted link made; the lab's quarantined
    assert links["created"] + links["existing"] == links["wanted"]  # records cost theirs
    assert links["rate"] == round(links["wanted"] / (links["wanted"] + links["dropped"]), 4)
    assert report["paths"]["audit"] == str(paths.audit_path())
    assert report["timings"]["plan"] >= 0 and "apply_records" in report["timings"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["operations"]
    log_lines = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    assert any(
        x.get("event") == "load_complete" and x.get("run_id") == first.run_id for x in log_lines
    )
    entries = list(read_audit(run_id=first.run_id))
    companies = [e for e in entries if e["table"] == "core_company"]  # the lab's vendors
    assert companies and all(e["action"] == "create" for e in companies)
    written = len(entries) - len(companies)
    assert written == first.applied["created"] + first.relationships.created

    frames = first.frames()
    assert set(frames) == {"counts", "failures", "timings", "mismatches"}
    assert frames["counts"]["count"].sum() == sum(first.action_totals().values())
    assert frames["failures"].empty

    second = load_lab(sandbox)
    assert second.status == "success"
    assert second.action_totals()["no_change"] == first.action_totals()["create"]
    assert second.applied["batches"] == 0
    assert list(read_audit(run_id=second.run_id)) == []


def test_dry_run_writes_nothing(sandbox: Sandbox, load_lab) -> None:
    report = load_lab(sandbox, dry_run=True)
    assert report.status == "dry_run"
    assert report.action_totals()["create"] > 0
    assert (paths.runs_dir() / report.run_id / "plan.csv").exists()
    assert not paths.audit_path().exists() or list(read_audit(run_id=report.run_id)) == []
    real = load_lab(sandbox)  # nothing was written, so everything is still a create
    assert real.action_totals()["create"] == report.action_totals()["create"]


def test_crash_mid_run_then_next_run_converges(sandbox: Sandbox, load_lab) -> None:
    def crash(done: int) -> None:
        if done == 2:
            raise CrashSimulation("power cut")

    # small batches: the chunks in hand when the crash comes (the writer pool is wider than
    # the one send at a time) hold only part of the records
    crashed = load_lab(sandbox, on_batch=crash, workers=1, batch_size=3)
    assert crashed.status == "failed" and "power cut" in crashed.message
    again = load_lab(sandbox)
    assert again.status == "success"
    totals = again.action_totals()
    assert totals["no_change"] > 0 and totals["create"] > 0
    third = load_lab(sandbox)
    assert third.action_totals()["create"] == 0 and third.applied["batches"] == 0


def test_outage_ends_queued_then_next_run_replays(sandbox: Sandbox, load_lab, heal) -> None:
    load_lab(
        sandbox
    )  # the CMDB holds the estate; now a bigger lab arrives while the instance is down
    bigger = LabConfig(sites=3, devices_per_site=3, clients_per_site=6, seed=3)
    inventory = collect_inventory(
        "lab", lab=bigger, connection=Connection(None, sandbox, str(sandbox.ca_path))
    )
    sandbox.set_faults({"outage": {"after_seconds": 0, "duration_seconds": 3600}})
    queued = load_lab(sandbox, inventory=inventory)
    assert queued.status == "queued", queued.message
    assert "snowkit outbox replay" in queued.message
    with Outbox() as box:
        assert box.count() == queued.outbox["pending"] > 0
    heal(sandbox)
    after = load_lab(sandbox, inventory=inventory)
    assert after.status == "success", (after.message, after.warnings)
    assert after.outbox["replayed"]["remaining"] == 0
    assert after.outbox["pending"] == 0
    final = load_lab(sandbox, inventory=inventory)
    assert final.action_totals()["create"] == 0
    assert final.applied["batches"] == 0


def test_progress_bars_only_where_someone_can_see_them() -> None:
    from snowkit.cmdb.progress import bar, progress_enabled

    assert progress_enabled(False) is False
    assert progress_enabled(None) is False  # pytest captures stderr: not a TTY, not a notebook
    with bar(10, "load", enabled=True) as b:
        b.update(3)
    assert type(b).__name__ == "_NullBar" and b.n == 3


def test_not_seen_ledger_keeps_the_first_miss_and_forgets_returning_cis() -> None:
    from snowkit.cmdb.job import NotSeenLedger
    from snowkit.cmdb.plan import Plan, PlanItem

    ledger = NotSeenLedger()
    assert ledger.load() == {}
    gone = PlanItem("dev:gone", "cmdb_ci_netgear", "not_seen", sys_id="G")
    ledger.update(Plan(items=[gone]))
    first = ledger.load()["dev:gone"]
    ledger.update(Plan(items=[gone]))
    assert ledger.load() == {"dev:gone": first}  # the grace period counts from the first miss
    back = PlanItem("dev:gone", "cmdb_ci_netgear", "no_change", sys_id="G")
    ledger.update(Plan(items=[back]))
    assert ledger.load() == {}


def test_each_instance_has_its_own_not_seen_dates() -> None:
    """One ledger for all: a load of one instance reset (or started) another's grace period."""
    from snowkit.cmdb.job import NotSeenLedger
    from snowkit.cmdb.plan import Plan, PlanItem

    gone = PlanItem("dev:gone", "cmdb_ci_netgear", "not_seen", sys_id="G")
    first = NotSeenLedger(instance="https://a.service-now.com")
    first.update(Plan(items=[gone]))
    second = NotSeenLedger(instance="https://b.service-now.com")
    second.update(Plan(items=[]))
    assert second.load() == {}
    assert list(first.load()) == ["dev:gone"]


def test_a_torn_audit_tail_is_recovered_by_the_next_load(sandbox: Sandbox, load_lab) -> None:
    from snowkit.ops.audit import verify_audit

    first = load_lab(sandbox)
    assert first.status == "success", first.message
    with open(paths.audit_path(), "ab") as handle:
        handle.write(b'{"seq":99999,"action":"crea')  # a power cut mid-line
    again = load_lab(sandbox)
    assert again.status == "success", again.message
    (evidence,) = paths.audit_path().parent.glob("audit.jsonl.incomplete-*")
    assert evidence.read_bytes() == b'{"seq":99999,"action":"crea'
    assert any(str(evidence) in w for w in again.warnings)
    check = verify_audit(paths.audit_path())
    assert check.ok, check.message
    assert [r["evidence"] for r in check.recoveries] == [str(evidence)]


def test_loads_retried_during_an_outage_queue_each_write_once_and_converge(
    sandbox: Sandbox, load_lab, heal
) -> None:
    """The chaos drill's outage phase: the CMDB cannot be read, so every record is queued as
    an upsert plus every relationship (records + links entries, no more), however many loads
    are tried during the outage; after the replay the next load writes nothing, including for
    a device the source now puts in another class than the CMDB holds. Records of a vendor
    first seen during the outage go without a manufacturer (no core_company sys_id could be
    had): the healed load fills it in, one update each."""
    from snowkit.cmdb.companies import names_of
    from snowkit.cmdb.transform import transform

    before, after = (LabConfig(2, 4 + i, 8 + 2 * i, seed=7) for i in (0, 2))
    load_lab(sandbox, lab=before, batch_size=100)
    scratch = Connection(None)
    try:
        inventory = collect_inventory("lab", lab=after, connection=scratch)
        known = names_of(
            transform(collect_inventory("lab", lab=before, connection=scratch)).records
        )
    finally:
        scratch.lab_server.shutdown()
    expected = transform(inventory)
    new_vendor = [
        r for r in expected.records if r.values.get("manufacturer", "") not in {"", *known}
    ]
    wanted = len(expected.records) + len(expected.relationships)
    sandbox.set_faults({"outage": {"after_seconds": 0, "duration_seconds": 3600}})
    for _attempt in range(2):
        queued = load_lab(sandbox, inventory=inventory)
        assert queued.status == "queued", queued.message
        assert queued.outbox["pending"] == wanted
    with Outbox() as box:
        assert box.breakdown() == {
            "create": dict(collections.Counter(r.table for r in expected.records)),
            "relate": {"cmdb_rel_ci": len(expected.relationships)},
        }
    heal(sandbox)
    healed = load_lab(sandbox, inventory=inventory)
    assert healed.status == "success", (healed.message, healed.warnings)
    replayed = healed.outbox["replayed"]
    assert (replayed["sent"], replayed["failed"]) == (wanted, [])
    totals = healed.action_totals()
    assert (totals["create"], totals["update"]) == (0, len(new_vendor)), healed.counts
    assert healed.applied["batches"] == (1 if new_vendor else 0)
    again = load_lab(sandbox, inventory=inventory)
    assert again.applied["batches"] == 0 and again.action_totals()["update"] == 0


def test_an_unwritable_audit_anchor_is_a_warning_in_the_report(
    sandbox: Sandbox, load_lab, tmp_path, monkeypatch
) -> None:
    # The load goes on (the trail itself is intact), but the operator must learn that
    # truncation of the trail is not guarded until the anchor can be written.
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the anchor's folder should be")
    monkeypatch.setenv("SNOWKIT_AUDIT_ANCHOR", str(blocked / "anchor.json"))
    report = load_lab(sandbox)
    assert report.status == "success", report.message
    assert any("audit anchor not written" in w for w in report.warnings), report.warnings


def test_a_store_that_cannot_open_fails_the_run_and_closes_the_others(
    sandbox: Sandbox, load_lab, monkeypatch
) -> None:
    """The local stores open side by side; one that fails must not leave the others open."""
    from snowkit.cmdb import job

    closed: list[str] = []

    def tracked(cls: type, name: str) -> type:
        class Tracked(cls):  # type: ignore[misc, valid-type]
            def close(self) -> None:
                closed.append(name)
                super().close()

        return Tracked

    class BrokenOutbox:
        def __init__(self, **_scope: str) -> None:
            raise PermissionError("outbox.sqlite3: permission denied")

    monkeypatch.setattr(job, "StateStore", tracked(job.StateStore, "state"))
    monkeypatch.setattr(job, "IntentJournal", tracked(job.IntentJournal, "intents"))
    monkeypatch.setattr(job, "Outbox", BrokenOutbox)
    report = load_lab(sandbox)
    assert report.status == "failed" and "permission denied" in report.message
    assert sorted(closed) == ["intents", "state"]


def test_a_load_never_imports_pandas(tmp_path: Path) -> None:
    """pandas is for the frames (plan, report, quality, notebooks): importing it costs a load
    ~45 MB of memory and the CLI ~0.2 s of start-up."""
    script = (
        "import sys\n"
        "from snowkit.cmdb.job import run_load\n"
        "from snowkit.unifi import LabConfig\n"
        "import snowkit.cli\n"
        "lab = LabConfig(sites=1, devices_per_site=2, clients_per_site=2, seed=1)\n"
        "report = run_load(instance='embedded', lab=lab, progress=False)\n"
        "print(report.status, 'pandas' in sys.modules)\n"
    )
    env = {**os.environ, "SNOWKIT_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["success", "False"], out.stdout[-500:]


def test_one_instance_has_one_remembered_state_whatever_its_spelling() -> None:
    """Three keys for one instance let a run under one spelling create records while the
    state under another stayed sealed (its next listing then left those creates out)."""
    from snowkit.cmdb.job import instance_key
    from snowkit.credentials import CredentialManager
    from snowkit.servicenow import ServiceNowAPIClient

    creds = CredentialManager.static(basic=("u", "p"))
    keys = set()
    for spelling in (
        "dev12345",
        "https://dev12345.service-now.com/",
        "HTTPS://DEV12345.service-now.com",
    ):
        client = ServiceNowAPIClient(spelling, creds)
        try:
            keys.add(instance_key(spelling, Connection(client)))
        finally:
            client.close()
    assert keys == {"https://dev12345.service-now.com"}
