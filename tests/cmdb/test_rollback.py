"""Rollback from the audit trail: exact restoration, idempotent, itself audited."""

from __future__ import annotations

import pytest

from snowkit.cmdb.apply import SyncEngine
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
