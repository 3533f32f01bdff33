"""SyncEngine against the embedded instance: exactly-once loads under faults.

Every test starts its own sandbox on an ephemeral loopback port; client sleeps are no-ops so no
test waits out a back-off.
"""

from __future__ import annotations

from typing import Any

import pytest

from snowkit.cmdb.apply import CrashSimulation, SyncEngine
from snowkit.cmdb.ledger import partial_message
from snowkit.cmdb.outbox import Outbox
from snowkit.cmdb.report import ItemFailure
from snowkit.cmdb.transform import CMDBRecord, RelationshipSpec, TransformResult
from snowkit.ops.audit import AuditTrail, read_audit
from snowkit.sandbox import Sandbox
from snowkit.servicenow import ServiceNowAPIClient

CONNECTS = "Connects to::Connected by"
SID = "u_unifi_source_id"


def estate(sites: int = 2, devices: int = 4, clients: int = 6) -> TransformResult:
    """A small synthetic estate: a location per site, a switch uplink, APs, clients."""
    records: list[CMDBRecord] = []
    rels: list[RelationshipSpec] = []
    for s in range(sites):
        site = f"site:{s}"
        records.append(CMDBRecord("cmn_location", site, {"name": f"Site {s}"}, "location"))
        uplink = f"dev:{s}:0"
        for d in range(devices):
            sid = f"dev:{s}:{d}"
            table = "cmdb_ci_ip_switch" if d == 0 else "cmdb_ci_wap_network"
            values = {
                "name": f"s{s}-dev{d}",
                "serial_number": f"SER{s}{d:03d}",
                "mac_address": f"aa:bb:cc:{s:02x}:00:{d:02x}",
                "ip_address": f"10.{s}.0.{d + 1}",
            }
            kind = "switch" if d == 0 else "access_point"
            records.append(CMDBRecord(table, sid, values, kind, {"location": site}))
            if d:
                rels.append(RelationshipSpec(sid, uplink, CONNECTS))
        for c in range(clients):
            sid = f"cl:{s}:{c}"
            values = {"name": f"client-{s}-{c}", "mac_address": f"dd:ee:ff:{s:02x}:01:{c:02x}"}
            records.append(
                CMDBRecord("cmdb_ci_hardware", sid, values, "client", {"location": site})
            )
            rels.append(RelationshipSpec(sid, f"dev:{s}:{1 + c % max(1, devices - 1)}", CONNECTS))
    return TransformResult(records=records, relationships=rels)


def engine(client: ServiceNowAPIClient, **kw: Any) -> SyncEngine:
    kw.setdefault("batch_size", 5)
    kw.setdefault("workers", 3)
    return SyncEngine(client, **kw)


def by_source(client: ServiceNowAPIClient, table: str = "cmdb_ci") -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in client.query(table, f"{SID}ISNOTEMPTY"):
        out.setdefault(row[SID], []).append(row)
    return out


def load(client: ServiceNowAPIClient, result: TransformResult, **kw: Any):
    eng = engine(client, **kw)
    plan, report = eng.sync(result, progress=False)
    return eng, plan, report


def test_initial_load_resolves_references_and_links(client: ServiceNowAPIClient) -> None:
    result = estate()
    _eng, _plan, report = load(client, result)
    assert report.status == "success", report.message
    assert report.applied["created"] == len(result.records)
    cis = by_source(client)
    locations = by_source(client, "cmn_location")
    assert all(len(rows) == 1 for rows in cis.values())
    assert len(cis) + len(locations) == len(result.records)
    ap = cis["dev:1:2"][0]
    assert ap["sys_class_name"] == "cmdb_ci_wap_network"
    assert ap["location"] == locations["site:1"][0]["sys_id"]
    # relationships: exactly the wanted links, pointing at the right CIs
    assert report.relationships.created == len(result.relationships)
    assert report.relationships.rate == 1.0
    links = {
        (r["parent"], r["child"])
        for r in client.query("cmdb_rel_ci", "", fields=["parent", "child"])
    }
    want = {
        (cis[s.parent_source_id][0]["sys_id"], cis[s.child_source_id][0]["sys_id"])
        for s in result.relationships
    }
    assert links == want
    assert report.verification["ok"] and report.verification["matched"] == len(result.records)


def test_no_change_rerun_makes_zero_writes(client: ServiceNowAPIClient) -> None:
    result = estate()
    with AuditTrail() as audit:
        load(client, result, audit=audit)
        written = audit.seq
        before = client.metrics.get_operation_metrics("batch")
        _, plan, report = load(client, result, audit=audit)
        assert audit.seq == written  # no new audit entry: nothing was written
    assert plan.counts()["no_change"] == len(result.records)
    assert report.applied["batches"] == 0
    assert client.metrics.get_operation_metrics("batch").total_requests == before.total_requests
    assert report.relationships.existing == len(result.relationships)
    assert report.relationships.created == 0


def test_only_changed_fields_are_sent(client: ServiceNowAPIClient) -> None:
    result = estate(sites=1, devices=3, clients=2)
    load(client, result)
    changed = result.records[2]
    changed.values["ip_address"] = "10.9.9.9"
    with AuditTrail() as audit:
        eng, plan, _report = load(client, result, audit=audit)
    updates = plan.by_action("update")
    assert [(u.source_id, u.values) for u in updates] == [
        (changed.source_id, {"ip_address": "10.9.9.9"})
    ]
    entries = [e for e in read_audit(run_id=eng.run_id)]
    assert [(e["action"], e["after"], e["before"]) for e in entries] == [
        ("update", {"ip_address": "10.9.9.9"}, {"ip_address": "10.0.0.2"})
    ]
    row = by_source(client)[changed.source_id][0]
    assert row["ip_address"] == "10.9.9.9"
    assert row["name"] == changed.values["name"]


def test_existing_ci_without_source_id_is_adopted_not_duplicated(
    client: ServiceNowAPIClient,
) -> None:
    result = estate(sites=1, devices=2, clients=0)
    target = result.records[2]  # dev:0:1, serial SER0001
    pre = client.create(
        "cmdb_ci_wap_network", {"name": "discovered-ap", "serial_number": "SER0001"}
    )
    _, plan, _report = load(client, result)
    item = next(i for i in plan.items if i.source_id == target.source_id)
    assert (item.action, item.matched_by, item.sys_id) == ("update", "serial_number", pre["sys_id"])
    rows = list(client.query("cmdb_ci", "serial_number=SER0001"))
    assert len(rows) == 1 and rows[0][SID] == target.source_id and rows[0]["name"] == "s0-dev1"


def test_orphan_relationships_are_reported_not_written(client: ServiceNowAPIClient) -> None:
    result = estate(sites=1, devices=2, clients=0)
    result.relationships.append(RelationshipSpec("dev:0:1", "dev:nowhere", CONNECTS))
    result.relationships.append(RelationshipSpec("dev:0:1", "dev:0:0", "No such::Type"))
    _, _, report = load(client, result)
    rel = report.relationships
    assert (rel.wanted, rel.created, rel.orphans, rel.failed) == (3, 1, 1, 1)
    assert rel.orphan_examples == [f"dev:0:1 -> dev:nowhere ({CONNECTS})"]
    assert report.status == "partial"
    assert any("No such::Type" in w for w in report.warnings)


def test_missing_class_table_falls_back_to_cmdb_ci(sandbox: Sandbox, client) -> None:
    sandbox.set_faults({"missing_tables": ["cmdb_ci_wap_network"]})
    result = estate(sites=1, devices=3, clients=1)
    _, _plan, report = load(client, result)
    assert report.status == "success", report.message
    assert report.fallbacks == {"cmdb_ci_wap_network": "cmdb_ci"}
    assert any("cmdb_ci_wap_network is missing" in w for w in report.warnings)
    aps = [r for r in result.records if r.table == "cmdb_ci_wap_network"]
    cis = by_source(client)
    assert all(len(cis[r.source_id]) == 1 for r in aps)
    # a rerun neither duplicates nor rewrites the fallback records forever
    _, plan2, report2 = load(client, result)
    assert plan2.counts()["create"] == 0
    assert report2.applied["created"] == 0 and report2.applied["updated"] == 0


def test_partial_batch_failure_is_reported_item_by_item(client: ServiceNowAPIClient) -> None:
    result = estate(sites=1, devices=4, clients=4)
    load(client, result)
    for rec in result.records[1:]:
        rec.values["ip_address"] = "10.1.1.1"
    eng = engine(client)
    plan = eng.plan(result)
    victim = plan.by_action("update")[2]
    client.delete(victim.table, victim.sys_id)  # gone between plan and apply
    report = eng.apply(plan, progress=False)
    assert report.status == "partial"
    assert report.applied["updated"] == len(plan.by_action("update")) - 1
    assert [(f.source_id, f.status_code) for f in report.failures] == [(victim.source_id, 404)]
    assert "404" in report.failures[0].error


def test_outage_queues_writes_then_replay_converges(
    sandbox: Sandbox, client, heal, new_client
) -> None:
    result = estate(sites=2, devices=3, clients=3)
    outbox = Outbox()
    eng = engine(client, outbox=outbox)
    plan = eng.plan(result)
    sandbox.set_faults({"outage": {"after_seconds": 0, "duration_seconds": 3600}})
    report = eng.apply(plan, progress=False)
    assert report.status == "queued"
    assert "outbox" in report.message and "snowkit outbox replay" in report.message
    queued = report.applied["queued"] + report.relationships.queued
    assert queued >= 1
    assert outbox.count() == queued
    heal(sandbox)
    with new_client(sandbox) as fresh:  # the next run: a new client, its breaker closed
        replay = outbox.replay(fresh)
        assert replay.complete, replay.to_dict()
        assert replay.failed == []
        cis = by_source(fresh)
        assert all(len(rows) == 1 for rows in cis.values())
        _, plan2, report2 = load(fresh, result)
        assert plan2.counts()["create"] == 0 and plan2.counts()["update"] == 0
        assert report2.relationships.created == 0
        assert report2.relationships.existing == len(result.relationships)


def test_next_run_replays_the_outbox_first(sandbox: Sandbox, client, heal, new_client) -> None:
    result = estate(sites=1, devices=2, clients=2)
    outbox = Outbox()
    eng = engine(client, outbox=outbox)
    plan = eng.plan(result)
    sandbox.set_faults({"outage": {"after_seconds": 0, "duration_seconds": 3600}})
    assert eng.apply(plan, progress=False).status == "queued"
    heal(sandbox)
    with new_client(sandbox) as fresh:
        _, plan2, report = load(fresh, result, outbox=outbox)
        assert report.outbox["replayed"]["remaining"] == 0
        assert report.status == "success"
        assert plan2.counts()["create"] == 0
        assert outbox.count() == 0


def test_crash_mid_run_then_rerun_converges(client: ServiceNowAPIClient) -> None:
    result = estate(sites=2, devices=3, clients=4)

    def crash(done: int) -> None:
        if done >= 2:
            raise CrashSimulation("killed after 2 batches")

    eng = engine(client, workers=1, on_batch=crash)
    with pytest.raises(CrashSimulation):
        eng.sync(result, progress=False)
    landed = len(by_source(client)) + len(by_source(client, "cmn_location"))
    assert 0 < landed < len(result.records)
    _, plan, report = load(client, result)
    assert plan.counts()["no_change"] == landed
    assert plan.counts()["create"] == len(result.records) - landed
    assert report.status == "success"
    cis = by_source(client)
    assert all(len(rows) == 1 for rows in cis.values())
    assert len(cis) + len(by_source(client, "cmn_location")) == len(result.records)


def test_ambiguous_writes_are_resolved_without_duplicates(sandbox: Sandbox, client) -> None:
    result = estate(sites=2, devices=3, clients=5)
    sandbox.set_faults({"ambiguous_write_rate": 0.5, "seed": 11})
    _, _, report = load(client, result, max_attempts=6)
    sandbox.set_faults(None)
    assert report.applied["ambiguous"] > 0
    assert report.applied["resolved_by_lookup"] > 0
    assert report.status in ("success", "partial")
    cis = by_source(client)
    locations = by_source(client, "cmn_location")
    assert all(len(rows) == 1 for rows in cis.values())
    assert all(len(rows) == 1 for rows in locations.values())
    links = [(r["parent"], r["child"]) for r in client.query("cmdb_rel_ci", "")]
    assert len(links) == len(set(links))
    assert len(cis) + len(locations) == len(result.records) - report.applied["failed"]


def test_ire_mode_loads_through_identify_reconcile(client: ServiceNowAPIClient) -> None:
    result = estate(sites=1, devices=3, clients=2)
    _, _, report = load(client, result, ire=True, batch_size=50)
    assert report.status == "success", (report.message, report.failures)
    assert report.ire is True
    assert report.ire_operations.get("INSERT") == len(result.records) - 1
    # links between CIs of one payload go by index through IRE; the rest by the Table API
    assert report.ire_operations.get("relation_INSERT", 0) >= 1
    rel = report.relationships
    assert rel.created + rel.existing == rel.wanted == len(result.relationships)
    cis = by_source(client)
    assert all(len(rows) == 1 for rows in cis.values())
    assert len(cis) == len(result.records) - 1
    # a second IRE run plans no writes at all
    _, plan, report2 = load(client, result, ire=True)
    assert plan.counts()["create"] == 0 and report2.applied["created"] == 0


def same_name_estate() -> TransformResult:
    """Two sites, each with a "Core Switch" (serials differ) and three clients all called
    "Philips-hue" (no serial, MACs differ): names are labels, not identities."""
    records: list[CMDBRecord] = []
    for s in range(2):
        site = f"site:{s}"
        records.append(CMDBRecord("cmn_location", site, {"name": f"Site {s}"}, "location"))
        switch = {
            "name": "Core Switch",
            "serial_number": f"SER{s}",
            "mac_address": f"aa:bb:cc:{s:02x}:00:01",
        }
        records.append(
            CMDBRecord("cmdb_ci_ip_switch", f"dev:{s}", switch, "switch", {"location": site})
        )
        for c in range(3):
            values = {"name": "Philips-hue", "mac_address": f"dd:ee:ff:{s:02x}:01:{c:02x}"}
            records.append(
                CMDBRecord("cmdb_ci_hardware", f"cl:{s}:{c}", values, "client", {"location": site})
            )
    return TransformResult(records=records, relationships=[])


def test_ire_mode_keeps_records_sharing_a_name_apart(client: ServiceNowAPIClient) -> None:
    result = same_name_estate()
    _, _, report = load(client, result, ire=True, batch_size=50)
    assert report.status == "success", (report.message, report.failures)
    cis = by_source(client)
    assert set(cis) == {r.source_id for r in result.records if r.table != "cmn_location"}
    assert all(len(rows) == 1 for rows in cis.values())
    for record in result.records:
        if record.table != "cmn_location":
            (row,) = cis[record.source_id]
            assert row["name"] == record.values["name"]  # the withheld name was set after
            assert row["mac_address"] == record.values["mac_address"]
    sources = list(client.query("sys_object_source", "name=UniFi"))
    assert {s["id"] for s in sources} == set(cis)
    # a rerun identifies every CI by its source key: nothing to write, nothing flips
    _, plan, again = load(client, result, ire=True, batch_size=50)
    assert again.status == "success" and again.applied["updated"] == 0
    assert plan.counts()["create"] == 0 and plan.counts().get("update", 0) == 0
    assert {k: [r["sys_id"] for r in v] for k, v in by_source(client).items()} == {
        k: [r["sys_id"] for r in v] for k, v in cis.items()
    }


def test_ire_mode_renames_through_the_source_key(client: ServiceNowAPIClient) -> None:
    result = same_name_estate()
    load(client, result, ire=True, batch_size=50)
    before = {k: v[0]["sys_id"] for k, v in by_source(client).items()}
    renamed = [
        CMDBRecord(r.table, r.source_id, {**r.values, "name": "Hue Kitchen"}, r.kind, r.references)
        if r.source_id == "cl:1:2"
        else r
        for r in result.records
    ]
    _, _, report = load(client, TransformResult(records=renamed, relationships=[]), ire=True)
    assert report.status == "success", (report.message, report.failures)
    after = by_source(client)
    assert {k: v[0]["sys_id"] for k, v in after.items()} == before
    assert after["cl:1:2"][0]["name"] == "Hue Kitchen"
    assert sum(rows[0]["name"] == "Philips-hue" for rows in after.values()) == 5


def test_outage_replay_then_next_run_writes_nothing_after_a_class_change(
    sandbox: Sandbox, client, heal, new_client
) -> None:
    """Outage → everything queued → replay → the next run makes zero writes, even for a CI the
    source now puts in another class (the replay must address it through cmdb_ci)."""
    load(client, estate(sites=1, devices=3, clients=2))
    changed = estate(sites=1, devices=3, clients=2)
    ap = next(r for r in changed.records if r.source_id == "dev:0:1")
    changed.records[changed.records.index(ap)] = CMDBRecord(
        "cmdb_ci_ip_switch", ap.source_id, {**ap.values, "ip_address": "10.9.9.9"}, "switch",
        dict(ap.references),
    )  # fmt: skip
    outbox = Outbox()
    sandbox.set_faults({"outage": {"after_seconds": 0, "duration_seconds": 3600}})
    _, _, queued = load(client, changed, outbox=outbox)
    assert queued.status == "queued"
    assert outbox.count() == len(changed.records) + len(changed.relationships)
    heal(sandbox)
    with new_client(sandbox) as fresh:
        replay = outbox.replay(fresh)
        assert replay.complete and replay.failed == [], replay.to_dict()
        [held] = by_source(fresh)["dev:0:1"]
        assert held["ip_address"] == "10.9.9.9"
        _, plan, report = load(fresh, changed, outbox=outbox)
        assert plan.counts()["create"] == 0 and plan.counts()["update"] == 0
        assert [i.class_change for i in plan.class_changes] == ["cmdb_ci_wap_network"]
        assert report.applied["batches"] == 0 and report.relationships.created == 0


def test_a_partial_run_says_how_to_finish(client: ServiceNowAPIClient) -> None:
    result = estate(sites=1, devices=3, clients=2)
    load(client, result)
    for rec in result.records[1:]:
        rec.values["ip_address"] = "10.1.1.1"
    eng = engine(client, max_attempts=2)
    plan = eng.plan(result)
    victim = plan.by_action("update")[0]
    client.delete(victim.table, victim.sys_id)
    report = eng.apply(plan, progress=False)
    assert report.status == "partial"
    assert "rerun the load" in report.message
    assert "1 failure(s) were refused by the instance" in report.message
    assert "--max-attempts" not in report.message  # a 404 is not transient


def fails(*codes: int | None) -> list[ItemFailure]:
    return [ItemFailure(f"s{n}", "cmdb_ci", "create", "boom", code) for n, code in enumerate(codes)]


@pytest.mark.parametrize(
    ("codes", "says", "not_says"),
    [
        ((429, 429, 503), "lower --workers (now 8)", "--max-attempts"),
        ((503, 504, None, 429), "raise --max-attempts (now 3)", "--workers"),
        ((503, 400), "1 failure(s) were refused", "--workers"),
    ],
)
def test_partial_message_points_at_the_right_knob(
    codes: tuple[int | None, ...], says: str, not_says: str
) -> None:
    message = partial_message(
        fails(*codes), records=len(codes), relationships=0, max_attempts=3, workers=8
    )
    assert message.startswith(f"{len(codes)} record write(s) and 0 relationship(s) failed")
    assert "rerun the load" in message
    assert says in message and not_says not in message


def test_the_limiter_hears_429s_the_client_retried_and_lets_go_after() -> None:
    # The client retries a 429 after Retry-After, so every batch ends in success; the limiter
    # must still cut, and the engine must not leave its listener on a client that outlives it.
    # The instance's clock moves only when the client "sleeps": no real waiting.
    from snowkit.cmdb.schema import ensure_schema
    from snowkit.credentials import CredentialManager
    from snowkit.servicenow import AdaptiveLimiter

    now = [1_000.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with Sandbox.start(clock=lambda: now[0]) as sb:
        creds = CredentialManager.static(basic=("admin", sb.users["admin"]))
        with ServiceNowAPIClient(sb.url, creds, verify=str(sb.ca_path), sleep=sleep) as c:
            ensure_schema(c)
            result = estate(sites=2, devices=3, clients=5)
            sb.set_faults({"rate_limit": {"requests": 6, "window_seconds": 5}})
            limiter = AdaptiveLimiter(initial=4, minimum=1, maximum=4, latency_factor=1000.0)
            _, _, report = load(c, result, limiter=limiter, workers=4, batch_size=3)
            sb.set_faults(None)
            assert report.status == "success", report.message
            assert limiter.cuts >= 1
            assert c._pipeline.throttle_listeners == []


def missing_for_a_month(full: TransformResult, gone: str) -> tuple[TransformResult, dict[str, str]]:
    """``full`` without record ``gone`` and its links, and the ledger's date of its first miss."""
    from datetime import UTC, datetime, timedelta

    ends = lambda s: (s.parent_source_id, s.child_source_id)  # noqa: E731
    without = TransformResult(
        records=[r for r in full.records if r.source_id != gone],
        relationships=[s for s in full.relationships if gone not in ends(s)],
    )
    return without, {gone: (datetime.now(UTC) - timedelta(days=30)).isoformat()}


def missing_a_month_later(
    client: ServiceNowAPIClient, gone: str, *, unidentified: tuple[str, ...] = ()
) -> tuple[TransformResult, Any, Any]:
    """A small estate loaded, then ``gone`` missing from the input for a month, with
    retirement after 7 days: the estate, and that sync's plan and report."""
    full = estate(sites=1, devices=3, clients=0)
    load(client, full)
    without, long_ago = missing_for_a_month(full, gone)
    without.unidentified.extend(unidentified)
    plan, report = engine(client, retire_after_days=7).sync(
        without, progress=False, not_seen_since=long_ago
    )
    return full, plan, report


def test_a_retired_ci_the_source_lists_again_is_back_in_service(
    client: ServiceNowAPIClient,
) -> None:
    """It had stayed Retired for good: nothing the transform writes names the status."""
    gone = "dev:0:2"
    full, _, report = missing_a_month_later(client, gone)
    assert report.applied["retired"] == 1
    assert by_source(client)[gone][0]["install_status"] == "7"
    _, plan, report = load(client, full)
    assert [i.action for i in plan.items if i.source_id == gone] == ["update"]
    row = by_source(client)[gone][0]
    assert (row["install_status"], row["operational_status"]) == ("1", "1")
    _, plan, _ = load(client, full)  # and then it is simply in sync
    assert not [i for i in plan.items if i.action == "update"]


def test_nothing_is_retired_while_a_rejected_item_may_be_the_missing_ci(
    client: ServiceNowAPIClient,
) -> None:
    gone = "dev:0:2"
    # a rejected item whose MAC could not be read: it could be dev:0:2
    _, plan, report = missing_a_month_later(client, gone, unidentified=("unifi:device:network:d9",))
    assert report.applied["retired"] == 0
    assert [i.action for i in plan.items if i.source_id == gone] == ["not_seen"]
    assert any("retirement held this run: 1" in note for note in plan.notes)
    assert by_source(client)[gone][0]["install_status"] != "7"


def test_adoption_takes_no_ci_of_another_device_and_finds_a_mac_however_written(
    client: ServiceNowAPIClient,
) -> None:
    """A CI with the same name but another serial had been adopted and overwritten; a MAC
    held as AA-BB-... or in upper case had not been found, and the CI was made twice."""
    other = client.create(
        "cmdb_ci_ip_switch",
        {"name": "Core Switch", "serial_number": "OTHER-1", "mac_address": "00:11:22:33:44:55"},
    )
    dashed = client.create("cmdb_ci_hardware", {"name": "tv", "mac_address": "aa-bb-cc-00-00-02"})
    upper = client.create("cmdb_ci_hardware", {"name": "pr", "mac_address": "AA:BB:CC:00:00:01"})
    records = [
        CMDBRecord("cmdb_ci_ip_switch", "dev:1", {"name": "Core Switch", "serial_number": "MINE-9",
                   "mac_address": "aa:bb:cc:dd:ee:01"}, "switch"),
        CMDBRecord("cmdb_ci_hardware", "cl:1", {"name": "HP", "mac_address": "aa:bb:cc:00:00:01"},
                   "client"),
        CMDBRecord("cmdb_ci_hardware", "cl:2", {"name": "LG", "mac_address": "aa:bb:cc:00:00:02"},
                   "client"),
    ]  # fmt: skip
    _, plan, report = load(client, TransformResult(records=records))
    assert report.status == "success", report.message
    matched = {i.source_id: (i.action, i.sys_id) for i in plan.items}
    assert matched["dev:1"][0] == "create"
    assert client.get("cmdb_ci", other["sys_id"])["serial_number"] == "OTHER-1"
    assert matched["cl:1"] == ("update", upper["sys_id"])
    assert matched["cl:2"] == ("update", dashed["sys_id"])


def test_links_lost_to_a_quarantined_end_count_against_the_linking_rate(
    client: ServiceNowAPIClient,
) -> None:
    """They had vanished with the rate at 100 % and no word in the report."""
    full = estate(sites=1, devices=2, clients=0)
    full.dropped_links = [RelationshipSpec("cl:x", "dev:0:0", "Connects to::Connected by")]
    _, _, report = load(client, full)
    rel = report.relationships
    assert rel.dropped == 1 and rel.dropped_examples == [
        "cl:x -> dev:0:0 (Connects to::Connected by)"
    ]
    assert rel.rate == rel.wanted / (rel.wanted + 1)
    assert any("1 relationship(s) not made: an end was quarantined" in w for w in report.warnings)
    assert report.to_dict()["relationships"]["dropped"] == 1


def test_a_ci_holding_the_serial_in_another_case_is_adopted(client: ServiceNowAPIClient) -> None:
    """Only the record's spelling had been asked for: a duplicate CI was created."""
    held = client.create("cmdb_ci_ip_switch", {"name": "core-sw", "serial_number": "fcecda1122"})
    record = CMDBRecord("cmdb_ci_ip_switch", "dev:1", {"name": "Switch 16",
                        "serial_number": "FCECDA1122"}, "switch")  # fmt: skip
    _, plan, report = load(client, TransformResult(records=[record]))
    assert report.status == "success", report.message
    (item,) = plan.items
    assert (item.action, item.sys_id, item.matched_by) == (
        "update",
        held["sys_id"],
        "serial_number",
    )


def test_a_network_adapter_holding_the_mac_is_not_adopted(client: ServiceNowAPIClient) -> None:
    """Candidates were any CI: Discovery's adapter for the device's MAC had become its CI."""
    adapter = client.create(
        "cmdb_ci_network_adapter", {"name": "eth0", "mac_address": "aa:bb:cc:00:00:07"}
    )
    record = CMDBRecord("cmdb_ci_hardware", "cl:7", {"name": "printer",
                        "mac_address": "aa:bb:cc:00:00:07"}, "client")  # fmt: skip
    _, plan, report = load(client, TransformResult(records=[record]))
    assert report.status == "success", report.message
    (item,) = plan.items
    assert item.action == "create" and item.sys_id != adapter["sys_id"]
    assert client.get("cmdb_ci_network_adapter", adapter["sys_id"])["name"] == "eth0"


def test_ire_mode_loads_a_ci_whose_class_table_is_missing_and_retires_by_table_api(
    sandbox: Sandbox, client: ServiceNowAPIClient
) -> None:
    """IRE had been sent the missing class (the instance failed the chunk after writing part
    of it, every run); a retire went through IRE, which cannot identify a CI from two status
    fields, and one that landed was counted as an update."""
    sandbox.set_faults({"missing_tables": ["cmdb_ci_wap_network"]})
    full = estate(sites=1, devices=3, clients=0)
    _, _, report = load(client, full, ire=True, batch_size=50)
    assert report.status == "success", report.message
    assert {r["sys_class_name"] for r in client.query("cmdb_ci", f"{SID}ISNOTEMPTY")} == {
        "cmdb_ci_ip_switch",
        "cmdb_ci_hardware",
    }  # the access points: the nearest class IRE identifies
    _, plan, report = load(client, full, ire=True, batch_size=50)
    assert report.status == "success" and not [i for i in plan.items if i.action != "no_change"]
    gone = "dev:0:2"
    without, long_ago = missing_for_a_month(full, gone)
    _, report = engine(client, ire=True, retire_after_days=7).sync(
        without, progress=False, not_seen_since=long_ago
    )
    assert report.status == "success", report.message
    assert (report.applied["retired"], report.applied["updated"]) == (1, 0)
    assert by_source(client)[gone][0]["install_status"] == "7"


def test_ire_matching_another_ci_than_the_remembered_one_is_said(
    client: ServiceNowAPIClient,
) -> None:
    """IRE took an older duplicate (same serial) for the CI carrying our source id: both then
    carried it, and the run said success without a word."""
    client.create("cmdb_ci_ip_switch", {"name": "old-dup-1", "serial_number": "DUP"})
    client.create("cmdb_ci_ip_switch", {"name": "old-dup-2", "serial_number": "DUP"})
    values = {"name": "core", "serial_number": "DUP", "mac_address": "aa:00:00:00:04:01"}
    record = CMDBRecord("cmdb_ci_ip_switch", "dev:x", {**values, "ip_address": "10.0.0.1"}, "sw")
    load(client, TransformResult(records=[record]))  # the serial is ambiguous: its own CI
    changed = CMDBRecord("cmdb_ci_ip_switch", "dev:x", {**values, "ip_address": "10.0.0.2"}, "sw")
    _, _, report = load(client, TransformResult(records=[changed]), ire=True)
    assert any("IRE matched 1 record(s) to another CI" in w for w in report.warnings)


def test_a_read_back_the_instance_refuses_leaves_the_writes_counted(
    client: ServiceNowAPIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A verification the instance refused (a spent rate-limit window) had failed the run
    as a whole: status failed, nothing counted, though every write had landed."""
    from snowkit.ops.errors import RateLimitError

    sync = engine(client)

    def refused() -> None:
        raise RateLimitError("rate limited until the next hour", operation="query")

    monkeypatch.setattr(sync, "verify", refused)
    _, report = sync.sync(estate(sites=1, devices=2, clients=2), progress=False)
    assert report.status == "partial" and report.applied["created"] == 5
    assert "could not be read back" in report.message and "run the load again" in report.message
    assert any("verification could not run (RateLimitError" in w for w in report.warnings)
