"""Write-ahead intents: a write committed just before a crash is still audited and undoable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from snowkit.cmdb.apply import CrashSimulation, SyncEngine
from snowkit.cmdb.intents import IntentJournal, reconcile_intents
from snowkit.cmdb.outbox import Outbox
from snowkit.cmdb.rollback import rollback
from snowkit.cmdb.transform import CMDBRecord, RelationshipSpec, TransformResult
from snowkit.ops.audit import AuditTrail, read_audit, verify_audit
from snowkit.ops.errors import AmbiguousWriteError, NetworkError
from snowkit.servicenow import ServiceNowAPIClient

SID = "u_unifi_source_id"


def estate(ip: str = "10.0.0.") -> TransformResult:
    records = [CMDBRecord("cmn_location", "site:0", {"name": "HQ"}, "location")]
    for d in range(4):
        values = {"name": f"sw-{d}", "serial_number": f"S{d}", "ip_address": f"{ip}{d}"}
        records.append(
            CMDBRecord("cmdb_ci_ip_switch", f"dev:{d}", values, "switch", {"location": "site:0"})
        )
    rels = [RelationshipSpec(f"dev:{d}", "dev:0", "Connects to::Connected by") for d in (1, 2, 3)]
    return TransformResult(records=records, relationships=rels)


def sync(
    client: ServiceNowAPIClient, result: TransformResult, run_id: str, **kw: Any
) -> tuple[Any, Any]:
    with AuditTrail() as audit, IntentJournal() as intents:
        engine = SyncEngine(
            client, audit=audit, intents=intents, run_id=run_id, batch_size=2, workers=1, **kw
        )
        return engine.sync(result, progress=False)


def crash_on_audit(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """The process dies after a batch committed, before its first audit line; returns what
    brings the audit trail back."""
    saved = {name: getattr(AuditTrail, name) for name in ("record", "record_many")}

    def die(self: AuditTrail, *args: Any, **kw: Any) -> Any:
        raise CrashSimulation("killed between the commit and the audit line")

    for name in saved:
        monkeypatch.setattr(AuditTrail, name, die)

    def restore() -> None:
        for name, method in saved.items():
            monkeypatch.setattr(AuditTrail, name, method)

    return restore


def held(client: ServiceNowAPIClient) -> dict[str, dict[str, str]]:
    rows = [*client.query("cmdb_ci", f"{SID}ISNOTEMPTY"), *client.query("cmn_location", "")]
    return {r[SID]: r for r in rows if r.get(SID)}


def test_a_create_committed_before_the_crash_is_audited_and_rolled_back(
    client: ServiceNowAPIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    restore = crash_on_audit(monkeypatch)
    with pytest.raises(CrashSimulation):
        sync(client, estate(), "run-crashed")
    restore()
    landed = held(client)
    assert landed, "the first batch committed"
    assert list(read_audit(run_id="run-crashed")) == []  # the gap this closes
    with IntentJournal() as journal:
        assert journal.count() > 0

    _, report = sync(client, estate(), "run-next")
    assert report.status == "success", report.message
    assert any("recovered" in w and "run-crashed" in w for w in report.warnings)
    assert report.outbox["intents"]["recovered"] == len(landed)
    recovered = list(read_audit(run_id="run-crashed"))
    assert {e["sys_id"] for e in recovered} == {r["sys_id"] for r in landed.values()}
    assert {(e["action"], e["outcome"]) for e in recovered} == {("create", "recovered")}
    assert all(e["after"] and e["after"].get("name") for e in recovered)
    with IntentJournal() as journal:
        assert journal.count() == 0 and journal.count("recovered") == len(landed)
    check = verify_audit()
    assert check.ok, check.message

    with AuditTrail() as audit:
        undone = rollback(client, "run-crashed", audit=audit)
    assert undone.ok and undone.deleted == len(landed)
    assert not set(held(client)) & set(landed)


def test_an_update_committed_before_the_crash_keeps_its_before_image(
    client: ServiceNowAPIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, first = sync(client, estate(), "run-1")
    assert first.status == "success", first.message
    before = {sid: row["ip_address"] for sid, row in held(client).items() if sid != "site:0"}
    restore = crash_on_audit(monkeypatch)
    with pytest.raises(CrashSimulation):
        sync(client, estate(ip="10.9.9."), "run-2")
    restore()
    changed = {
        sid
        for sid, row in held(client).items()
        if sid in before and row["ip_address"] != before[sid]
    }
    assert changed, "the first update batch committed"

    _, report = sync(client, estate(ip="10.9.9."), "run-3")
    assert report.status == "success", report.message
    recovered = list(read_audit(run_id="run-2"))
    assert {(e["action"], e["outcome"]) for e in recovered} == {("update", "recovered")}
    assert {e["source_id"] for e in recovered} == changed
    for entry in recovered:
        assert entry["before"]["ip_address"] == before[entry["source_id"]]
        assert entry["after"]["ip_address"].startswith("10.9.9.")

    with AuditTrail() as audit:
        undone = rollback(client, "run-2", audit=audit)
    assert undone.ok and undone.restored == len(changed)
    now = held(client)
    assert {sid: now[sid]["ip_address"] for sid in changed} == {sid: before[sid] for sid in changed}


def test_a_crash_after_the_audit_line_is_not_audited_twice(
    client: ServiceNowAPIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def die(self: IntentJournal, token: int | None) -> None:
        raise CrashSimulation("killed after the audit fsync, before the intents were dropped")

    real_done = IntentJournal.done
    monkeypatch.setattr(IntentJournal, "done", die)
    with pytest.raises(CrashSimulation):
        sync(client, estate(), "run-crashed")
    monkeypatch.setattr(IntentJournal, "done", real_done)
    audited = list(read_audit(run_id="run-crashed"))
    assert audited

    _, report = sync(client, estate(), "run-next")
    assert report.status == "success", report.message
    assert report.outbox["intents"]["already_audited"] == len(audited)
    assert report.outbox["intents"]["recovered"] == 0
    assert list(read_audit(run_id="run-crashed")) == audited
    creates = [e["source_id"] for e in read_audit() if e["action"] == "create" and e["source_id"]]
    assert len(creates) == len(set(creates))


def test_an_intent_that_never_landed_is_marked_not_applied(client: ServiceNowAPIClient) -> None:
    with IntentJournal() as journal, AuditTrail() as audit:
        journal.intend(
            "run-dead",
            [
                {"action": "create", "table": "cmdb_ci_ip_switch", "source_id": "dev:never",
                 "after": {"name": "never"}},
                {"action": "relate", "table": "cmdb_rel_ci",
                 "after": {"parent": "a" * 32, "child": "b" * 32, "type": "c" * 32}},
            ],
        )  # fmt: skip
        found = reconcile_intents(client, journal, audit)
        assert (found.not_applied, found.recovered, found.runs) == (2, 0, ["run-dead"])
        assert journal.count() == 0 and journal.count("not_applied") == 2
        assert reconcile_intents(client, journal, audit).total == 0  # nothing left to do
    assert list(read_audit(run_id="run-dead")) == []


def test_of_two_records_with_the_source_id_the_one_under_the_chosen_sys_id_is_recovered(
    client: ServiceNowAPIClient,
) -> None:
    """A dead run's create chose its sys_id; someone else's record with the same source id
    must not be claimed as ours (``snowkit rollback`` of that run would delete it). Ours
    sorts first, as keyset paging by sys_id lists it."""
    ours = "0" * 32
    client.create("cmdb_ci_ip_switch", {"name": "ours", "u_unifi_source_id": "dev:1",
                                        "sys_id": ours})  # fmt: skip
    client.create("cmdb_ci_ip_switch", {"name": "theirs", "u_unifi_source_id": "dev:1"})
    with IntentJournal() as journal, AuditTrail() as audit:
        journal.intend("run-dead", [{
            "action": "create", "table": "cmdb_ci_ip_switch", "source_id": "dev:1",
            "after": {"name": "ours", "u_unifi_source_id": "dev:1", "sys_id": ours},
        }])  # fmt: skip
        assert reconcile_intents(client, journal, audit).recovered == 1
    (entry,) = read_audit(run_id="run-dead")
    assert entry["sys_id"] == ours


def test_one_durable_intent_per_batch_and_nothing_left_after_a_clean_run(
    client: ServiceNowAPIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_intend = IntentJournal.intend

    def spy(self: IntentJournal, run_id: str, writes: Any) -> int | None:
        writes = list(writes)
        calls.append(len(writes))
        return real_intend(self, run_id, writes)

    monkeypatch.setattr(IntentJournal, "intend", spy)
    _, report = sync(client, estate(), "run-clean")
    assert report.status == "success", report.message
    assert max(calls) == 2  # one journal transaction (one fsync) per batch of 2, not per record
    assert sum(calls) == report.applied["created"] + report.relationships.created
    with IntentJournal() as journal:
        assert journal.count() == 0


class Killed(BaseException):
    """A kill -9 stand-in that no ``except Exception`` in the replay can swallow."""


def test_a_replay_killed_between_a_create_and_its_audit_line_is_reconciled(
    client: ServiceNowAPIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snowkit.cmdb.outbox import OP_CREATE, Outbox

    with Outbox() as box:
        box.enqueue("run-q", OP_CREATE, "cmn_location", source_id="site:q", values={"name": "Q"})
    real_record = AuditTrail.record

    def die(self: AuditTrail, *args: Any, **kw: Any) -> Any:
        raise Killed

    monkeypatch.setattr(AuditTrail, "record", die)
    with (
        Outbox() as box,
        AuditTrail() as audit,
        IntentJournal() as intents,
        pytest.raises(Killed),
    ):
        box.replay(client, audit=audit, intents=intents)
    monkeypatch.setattr(AuditTrail, "record", real_record)
    (row,) = client.query("cmn_location", f"{SID}=site:q")
    with AuditTrail() as audit, IntentJournal() as intents:
        found = reconcile_intents(client, intents, audit)
    assert (found.recovered, found.runs) == (1, ["run-q"])
    (entry,) = read_audit(run_id="run-q")
    assert (entry["sys_id"], entry["outcome"]) == (row["sys_id"], "recovered")


def test_concurrent_writers_share_commits_and_lose_nothing(tmp_path) -> None:
    # Eight writer threads journal batches at once (as the engine's workers do): every batch
    # gets its own token, every row is durable when intend() returns, and finished batches
    # are forgotten.
    import sqlite3
    import threading

    journal = IntentJournal(tmp_path / "intents.sqlite3")
    commits = 0
    real_lead = journal._lead_flush

    def counting_lead() -> None:
        nonlocal commits
        commits += 1
        real_lead()

    journal._lead_flush = counting_lead  # type: ignore[method-assign]
    tokens: list[int] = []
    barrier = threading.Barrier(8)

    def writer(n: int) -> None:
        barrier.wait()
        for b in range(25):
            write = {"action": "create", "table": "cmdb_ci", "source_id": f"s{n}-{b}"}
            token = journal.intend(f"run-{n}", [write, {**write, "source_id": f"t{n}-{b}"}])
            assert token is not None
            # durable already: a separate connection sees the rows
            with sqlite3.connect(journal.path) as other:
                (seen,) = other.execute(
                    "SELECT COUNT(*) FROM intents WHERE batch=?", (token,)
                ).fetchone()
            assert seen == 2
            tokens.append(token)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(tokens) == len(set(tokens)) == 200
    assert journal.count() == 400
    assert 1 <= commits <= 200  # one commit may carry several writers' batches
    for token in tokens:
        journal.done(token)
    assert journal.count() == 0
    journal.close()


def test_a_batch_is_journaled_in_one_transaction_all_or_none(tmp_path) -> None:
    # The journal's connection is in autocommit mode: without an explicit transaction every
    # row would be its own commit (and fsync), and a failure mid-batch would leave half of it.
    journal = IntentJournal(tmp_path / "intents.sqlite3")
    good = [{"action": "create", "table": "cmdb_ci", "source_id": f"s{i}"} for i in range(50)]
    bad = {"action": None, "table": "cmdb_ci", "source_id": "broken"}  # NOT NULL violated
    with pytest.raises(Exception, match="NOT NULL"):
        journal.intend("run-1", [*good, bad])
    assert journal.count() == 0
    token = journal.intend("run-2", good)
    assert token is not None and journal.count() == 50
    journal.close()


def test_a_batch_whose_answer_was_lost_before_the_instance_went_away_is_audited_later(
    client: ServiceNowAPIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Committed, answer lost, the lookup before a retry finds the instance gone: the writes
    are queued. Their intents must stay (they had been dropped), or the replay finds the
    records already there, audits nothing, and no rollback can undo them."""
    real_batch, real_query = client.batch, client.query
    down = False

    def commit_then_lose_the_answer(requests: Any, *args: Any, **kw: Any) -> Any:
        nonlocal down
        answers = real_batch(requests, *args, **kw)
        if not any(r.method in ("POST", "PATCH") for r in requests):
            return answers
        down = True
        raise AmbiguousWriteError("the answer was lost (connection reset)")

    def query(*args: Any, **kw: Any) -> Any:
        if down:
            raise NetworkError("connection refused")
        return real_query(*args, **kw)

    monkeypatch.setattr(client, "batch", commit_then_lose_the_answer)
    monkeypatch.setattr(client, "query", query)
    records = TransformResult(records=estate().records[1:3])  # two switches, one batch
    with AuditTrail() as audit, IntentJournal() as intents, Outbox() as box:
        engine = SyncEngine(client, audit=audit, intents=intents, outbox=box, run_id="lost",
                            batch_size=10, workers=1)  # fmt: skip
        _, report = engine.sync(records, progress=False)
    monkeypatch.setattr(client, "batch", real_batch)
    monkeypatch.setattr(client, "query", real_query)
    assert report.status == "queued" and sorted(held(client)) == ["dev:0", "dev:1"]

    with AuditTrail() as audit, IntentJournal() as intents, Outbox() as box:
        engine = SyncEngine(client, audit=audit, intents=intents, outbox=box, run_id="next")
        _, report = engine.sync(records, progress=False)
    assert report.status == "success"
    assert report.outbox["intents"]["recovered"] == 2  # kept beside the replay's figures
    assert report.outbox["replayed"]["resolved_existing"] == 2
    assert [(e["action"], e["outcome"]) for e in read_audit(run_id="lost")] == [
        ("create", "recovered"),
        ("create", "recovered"),
    ]
    with AuditTrail() as audit:
        assert rollback(client, "lost", audit=audit).deleted == 2
    assert held(client) == {}


def test_a_clean_partial_batch_leaves_no_intent_behind(client: ServiceNowAPIClient) -> None:
    """A write refused outright is no doubt: its batch's intents go like any other's."""
    sync(client, estate(), "first")
    changed = estate(ip="10.9.9.")
    with AuditTrail() as audit, IntentJournal() as intents:
        engine = SyncEngine(client, audit=audit, intents=intents, run_id="partial",
                            batch_size=10, workers=1)  # fmt: skip
        plan = engine.plan(changed)
        victim = plan.by_action("update")[0]
        client.delete(victim.table, victim.sys_id)  # gone between the plan and the write
        report = engine.apply(plan, progress=False)
        assert [f.status_code for f in report.failures] == [404]
        assert intents.count() == 0


def test_an_ire_call_committed_then_lost_is_audited_as_created_and_undone(
    client: ServiceNowAPIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IRE counts as idempotent: a lost answer is retried and may end in a network error
    after the first attempt landed. The chunk is queued; its intents must stay."""
    real = client.identify_reconcile

    def commit_then_fail(payload: Any, *args: Any, **kw: Any) -> Any:
        real(payload, *args, **kw)
        raise NetworkError("connection reset; retries exhausted: connection refused")

    records = TransformResult(records=estate().records[1:3])

    def run(run_id: str) -> Any:
        with AuditTrail() as audit, IntentJournal() as intents, Outbox() as box:
            engine = SyncEngine(client, audit=audit, intents=intents, outbox=box,
                                run_id=run_id, batch_size=10, workers=1, ire=True)  # fmt: skip
            return engine.sync(records, progress=False)[1]

    monkeypatch.setattr(client, "identify_reconcile", commit_then_fail)
    assert run("lost").status == "queued"
    monkeypatch.setattr(client, "identify_reconcile", real)
    assert run("next").status == "success"
    assert [e["action"] for e in read_audit(run_id="lost")].count("create") == 2
    with AuditTrail() as audit:
        assert rollback(client, "lost", audit=audit).deleted == 2
    assert held(client) == {}


def test_a_record_the_dead_create_cannot_have_made_is_not_claimed(
    client: ServiceNowAPIClient,
) -> None:
    """Claimed, it was audited as the dead run's create and its rollback deleted it."""
    theirs = client.create("cmdb_ci_ip_switch", {"name": "theirs", SID: "dev:1"})
    with IntentJournal() as journal, AuditTrail() as audit:
        journal.intend(
            "run-dead",
            [  # chose a sys_id that never landed; someone else's record has the source id
                {"action": "create", "table": "cmdb_ci_ip_switch", "source_id": "dev:1",
                 "after": {"name": "ours", "sys_id": "f" * 32}},
                # a replayed create (no chosen id): only a record made since it counts
                {"action": "create", "table": "cmdb_ci_ip_switch", "source_id": "dev:3",
                 "after": {"name": "replayed"}},
            ],
        )  # fmt: skip
        made = client.create("cmdb_ci_ip_switch", {"name": "replayed", SID: "dev:3"})
        found = reconcile_intents(client, journal, audit)
        assert (found.recovered, found.not_applied) == (1, 1)
    assert [e["sys_id"] for e in read_audit(run_id="run-dead")] == [made["sys_id"]]
    with AuditTrail() as audit:
        assert rollback(client, "run-dead", audit=audit).deleted == 1
    assert client.get("cmdb_ci_ip_switch", theirs["sys_id"]) is not None


def test_a_record_older_than_a_replayed_create_is_not_claimed(tmp_path: Any) -> None:
    class Instance:  # holds one record with the source id, made long before the intent
        def query(self, table: str, query: Any, **kw: Any) -> Any:
            return iter(
                [{"sys_id": "y" * 32, SID: "dev:2", "sys_created_on": "2020-01-01 00:00:00"}]
            )

    with IntentJournal(tmp_path / "intents.sqlite3") as journal:
        journal.intend("run-dead", [{"action": "create", "table": "cmdb_ci_ip_switch",
                                     "source_id": "dev:2", "after": {"name": "x"}}])  # fmt: skip
        found = reconcile_intents(Instance(), journal, None)
    assert (found.recovered, found.not_applied) == (0, 1)
