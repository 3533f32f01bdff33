"""Rollback from the audit trail: exact restoration, idempotent, itself audited."""

from __future__ import annotations

import pytest

from snowkit.cmdb.apply import CrashSimulation, SyncEngine
from snowkit.cmdb.intents import IntentJournal
from snowkit.cmdb.rollback import NothingToRollBackError, rollback
from snowkit.cmdb.transform import CMDBRecord, RelationshipSpec, TransformResult
from snowkit.ops.audit import AuditTrail, read_audit
from snowkit.servicenow import ServiceNowAPIClient

VOLATILE = {"sys_updated_on", "sys_updated_by", "sys_mod_count"}


def state(client: ServiceNowAPIClient) -> dict[str, dict[str, dict[str, str]]]:
    """Every CI, location and link, without the fields every write bumps."""
    out = {}
    for table in ("cmdb_ci", "cmn_location", "cmdb_rel_ci"):
        out[table] = {
            r["sys_id"]: {k: v for k, v in r.items() if k not in VOLATILE}
            for r in client.query(table, "")
        }
    return out


def estate(ip: str = "10.0.0.1") -> TransformResult:
    records = [CMDBRecord("cmn_location", "site:0", {"name": "HQ"}, "location")]
    for d in range(4):
        values = {"name": f"sw-{d}", "serial_number": f"S{d}", "ip_address": f"{ip}{d}"}
        records.append(
            CMDBRecord("cmdb_ci_ip_switch", f"dev:{d}", values, "switch", {"location": "site:0"})
        )
    rels = [RelationshipSpec(f"dev:{d}", "dev:0", "Connects to::Connected by") for d in (1, 2, 3)]
    return TransformResult(records=records, relationships=rels)


def sync(client: ServiceNowAPIClient, result: TransformResult, audit: AuditTrail) -> str:
    engine = SyncEngine(client, audit=audit, batch_size=2, workers=2)
    _, report = engine.sync(result, progress=False)
    assert report.status == "success", report.message
    return engine.run_id


def test_rollback_restores_exactly_and_is_idempotent(client: ServiceNowAPIClient) -> None:
    # a CI someone else created: the first run adopts it (by serial) and renames it
    client.create("cmdb_ci_ip_switch", {"name": "legacy-name", "serial_number": "S2"})
    with AuditTrail() as audit:
        pristine = state(client)
        first = sync(client, estate(), audit)
        after_first = state(client)
        second = sync(client, estate(ip="10.9.9."), audit)
        assert state(client) != after_first

        result = rollback(client, second, audit=audit)
        assert result.ok, result.failed
        assert result.restored == 4 and result.deleted == 0
        assert state(client) == after_first

        result = rollback(client, first, audit=audit)
        assert result.ok, result.failed
        assert result.deleted == 1 + 3 + 3  # the location, three new switches, three links
        assert result.restored == 1  # the adopted CI gets its name and empty source id back
        assert state(client) == pristine

        again = rollback(client, first, audit=audit)
        assert again.ok and again.deleted == again.restored == 0
        assert again.skipped == again.entries
    actions = [e["action"] for e in read_audit(run_id=first)]
    assert "rollback_delete" in actions and "rollback_update" in actions


def test_rollback_recreates_deleted_records(client: ServiceNowAPIClient) -> None:
    record = client.create("cmdb_ci_ip_switch", {"name": "old", "serial_number": "X"})
    full = {k: v for k, v in client.get("cmdb_ci_ip_switch", record["sys_id"]).items()}
    client.delete("cmdb_ci_ip_switch", record["sys_id"])
    entry = {
        "seq": 1,
        "action": "delete",
        "table": "cmdb_ci_ip_switch",
        "sys_id": record["sys_id"],
        "before": full,
        "outcome": "success",
    }
    result = rollback(client, "r", entries=[entry])
    assert result.recreated == 1
    back = client.get("cmdb_ci_ip_switch", record["sys_id"])
    assert back is not None and back["name"] == "old" and back["serial_number"] == "X"


def test_unknown_run_says_what_to_check(client: ServiceNowAPIClient) -> None:
    with pytest.raises(NothingToRollBackError, match="no writes for run nope"):
        rollback(client, "nope")


def test_two_updates_of_one_record_unwind_to_the_first_before(
    client: ServiceNowAPIClient,
) -> None:
    row = client.create("cmdb_ci_ip_switch", {"name": "c"})
    sys_id = row["sys_id"]

    def entry(seq: int, before: str, after: str) -> dict:
        return {
            "seq": seq,
            "action": "update",
            "table": "cmdb_ci_ip_switch",
            "sys_id": sys_id,
            "before": {"name": before},
            "after": {"name": after},
            "outcome": "success",
        }

    result = rollback(client, "r", entries=[entry(1, "a", "b"), entry(2, "b", "c")])
    assert result.ok and result.restored == 2
    assert client.get("cmdb_ci_ip_switch", sys_id)["name"] == "a"


class CountingClient:
    """The real client, counting the calls rollback makes."""

    def __init__(self, client: ServiceNowAPIClient) -> None:
        self._client = client
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def counted(*args, **kw):
            self.calls[name] = self.calls.get(name, 0) + 1
            return attr(*args, **kw)

        return counted


def test_recreations_are_batched_checked_first_and_audited(client: ServiceNowAPIClient) -> None:
    entries = []
    for n in range(5):
        record = client.create("cmdb_ci_ip_switch", {"name": f"sw{n}", "serial_number": f"S{n}"})
        entries.append(
            {
                "seq": n + 1,
                "action": "delete",
                "table": "cmdb_ci_ip_switch",
                "sys_id": record["sys_id"],
                "source_id": f"src{n}",
                "before": client.get("cmdb_ci_ip_switch", record["sys_id"]),
                "outcome": "success",
            }
        )
    for entry in entries[1:]:  # the first one is still there: nothing to recreate
        client.delete("cmdb_ci_ip_switch", entry["sys_id"])
    counting = CountingClient(client)
    with AuditTrail() as audit:
        result = rollback(counting, "r", entries=entries, audit=audit)
    assert result.ok and result.recreated == 4 and result.skipped == 1
    assert counting.calls == {"query": 1, "batch": 1}  # one existence read, one batch
    for n, entry in enumerate(entries):
        back = client.get("cmdb_ci_ip_switch", entry["sys_id"])
        assert back is not None and back["name"] == f"sw{n}" and back["serial_number"] == f"S{n}"
    audited = [e for e in read_audit(run_id="r") if e["action"] == "rollback_create"]
    assert sorted(e["sys_id"] for e in audited) == sorted(e["sys_id"] for e in entries[1:])
    again = rollback(client, "r", entries=entries)
    assert again.ok and again.recreated == 0 and again.skipped == 5


def switch(source_id: str, name: str) -> TransformResult:
    values = {"name": name, "serial_number": f"S-{source_id}"}
    return TransformResult(records=[CMDBRecord("cmdb_ci_ip_switch", source_id, values, "switch")])


def test_a_record_changed_since_the_run_is_left_and_listed_unless_forced(
    client: ServiceNowAPIClient,
) -> None:
    row = client.create("cmdb_ci_ip_switch", {"name": "before", "serial_number": "S-dev:1"})
    with AuditTrail() as audit:
        sync(client, switch("dev:1", "by-run"), audit)
        created = sync(client, switch("dev:2", "new"), audit)
        run = sync(client, switch("dev:1", "by-run-2"), audit)
        client.update("cmdb_ci_ip_switch", row["sys_id"], {"name": "operator-fix"})
        by_source = {r["u_unifi_source_id"]: r["sys_id"] for r in client.query("cmdb_ci", "")}
        client.update("cmdb_ci_ip_switch", by_source["dev:2"], {"name": "edited"})

        result = rollback(client, run, audit=audit)
        assert not result.ok and result.restored == 0
        assert result.conflicts == [
            {"table": "cmdb_ci_ip_switch", "sys_id": row["sys_id"], "source_id": "dev:1",
             "fields": ["name"]},
        ]  # fmt: skip
        assert client.get("cmdb_ci_ip_switch", row["sys_id"])["name"] == "operator-fix"
        # a record the run created and someone edited since is not deleted either
        result = rollback(client, created, audit=audit)
        assert result.deleted == 0 and [c["source_id"] for c in result.conflicts] == ["dev:2"]

        forced = rollback(client, run, audit=audit, force=True)
        assert forced.ok and forced.restored == 1 and not forced.conflicts
        assert client.get("cmdb_ci_ip_switch", row["sys_id"])["name"] == "by-run"
        assert rollback(client, created, audit=audit, force=True).deleted == 1


def test_a_later_run_is_rolled_back_first_then_the_earlier_one_goes_cleanly(
    client: ServiceNowAPIClient,
) -> None:
    with AuditTrail() as audit:
        pristine = state(client)
        first = sync(client, estate(), audit)
        second = sync(client, estate(ip="10.9.9."), audit)
        after_second = state(client)
        early = rollback(client, first, audit=audit)  # the second run changed its switches
        assert not early.ok and len(early.conflicts) == 4
        # nothing undone: not the links, not the location the kept switches still name
        assert early.deleted == early.restored == 0 and state(client) == after_second
        assert rollback(client, second, audit=audit).ok
        assert rollback(client, first, audit=audit).ok
        assert state(client) == pristine


def test_what_the_audit_trail_cannot_put_back_is_listed_not_skipped(
    client: ServiceNowAPIClient,
) -> None:
    row = client.create("cmdb_ci_ip_switch", {"name": "corp-core", "serial_number": "A"})
    other = client.create("cmdb_ci_ip_switch", {"name": "x", "serial_number": "B"})
    client.update("cmdb_ci_ip_switch", row["sys_id"], {"name": "new", "serial_number": "A2"})
    client.update("cmdb_ci_ip_switch", other["sys_id"], {"name": "y"})
    entries = [
        {  # a before value masked in the trail (it contained a secret): not written back
            "seq": 1, "action": "update", "table": "cmdb_ci_ip_switch", "sys_id": row["sys_id"],
            "before": {"name": "***-core", "serial_number": "A"},
            "after": {"name": "new", "serial_number": "A2"}, "outcome": "success",
        },
        {  # an update audited without a before-image (an adopted record)
            "seq": 2, "action": "update", "table": "cmdb_ci_ip_switch", "sys_id": other["sys_id"],
            "source_id": "dev:9", "before": None, "after": {"name": "y"}, "outcome": "success",
        },
    ]  # fmt: skip
    result = rollback(client, "r", entries=entries)
    assert not result.ok and result.restored == 1 and result.skipped == 0
    assert [(u["sys_id"], u["why"]) for u in result.unrestorable] == [
        (other["sys_id"], "the audit trail holds no before-image"),
        (row["sys_id"], "masked in the audit trail (the value contained a secret): name"),
    ]
    restored = client.get("cmdb_ci_ip_switch", row["sys_id"])
    assert (restored["name"], restored["serial_number"]) == ("new", "A")


def test_rolling_back_a_crashed_run_audits_its_last_batch_first(
    client: ServiceNowAPIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch in flight when the run died landed but is only in the intent journal."""
    records = [
        CMDBRecord("cmdb_ci_ip_switch", f"dev:{d}", {"name": f"sw-{d}", "serial_number": f"{d}"},
                   "switch")
        for d in range(4)
    ]  # fmt: skip
    real = AuditTrail.record_many
    calls = []

    def die_at_the_second_batch(self: AuditTrail, entries: list) -> list:
        calls.append(len(entries))
        if len(calls) == 2:
            raise CrashSimulation("killed between the commit and the audit lines")
        return real(self, entries)

    monkeypatch.setattr(AuditTrail, "record_many", die_at_the_second_batch)
    with AuditTrail() as audit, IntentJournal() as intents:
        engine = SyncEngine(client, audit=audit, intents=intents, batch_size=2, workers=1)
        with pytest.raises(CrashSimulation):
            engine.sync(TransformResult(records=records), progress=False)
    monkeypatch.setattr(AuditTrail, "record_many", real)
    assert len(list(client.query("cmdb_ci", "u_unifi_source_idISNOTEMPTY"))) == 4

    with AuditTrail() as audit, IntentJournal() as intents:
        result = SyncEngine(client, audit=audit, intents=intents).rollback(engine.run_id)
    assert result.ok and result.deleted == 4
    assert list(client.query("cmdb_ci", "u_unifi_source_idISNOTEMPTY")) == []
