"""Schema check and setup through sys_dictionary; a clear stop when the user lacks the rights."""

from __future__ import annotations

import pytest

from snowkit.cmdb.schema import SchemaNotReadyError, check_schema, ensure_schema
from snowkit.credentials import CredentialManager
from snowkit.sandbox import Sandbox
from snowkit.servicenow import ServiceNowAPIClient

from .conftest import recorded_queries


def client_for(sb: Sandbox, user: str) -> ServiceNowAPIClient:
    creds = CredentialManager.static(basic=(user, sb.users[user]))
    return ServiceNowAPIClient(sb.url, creds, verify=str(sb.ca_path), sleep=lambda s: None)


def test_fresh_instance_lacks_fields_and_setup_creates_them(sandbox: Sandbox) -> None:
    with client_for(sandbox, "admin") as client:
        status = check_schema(client)
        assert status.missing == [
            ("cmdb_ci", "u_unifi_source_id"),
            ("cmn_location", "u_unifi_source_id"),
        ]
        created = ensure_schema(client)
        assert created.created == status.missing and created.ok
        again = ensure_schema(client)
        assert again.created == [] and len(again.present) == 2
        # the field now takes values, on a CI subclass too (inherited from cmdb_ci)
        row = client.create("cmdb_ci_ip_switch", {"name": "x", "u_unifi_source_id": "k"})
        assert client.get("cmdb_ci", row["sys_id"])["u_unifi_source_id"] == "k"


def test_without_rights_the_error_lists_what_an_admin_must_add(sandbox: Sandbox) -> None:
    with client_for(sandbox, "readonly") as client, pytest.raises(SchemaNotReadyError) as info:
        ensure_schema(client)
    text = str(info.value)
    assert "403" in text
    assert "table cmdb_ci: column u_unifi_source_id" in text
    assert "table cmn_location: column u_unifi_source_id" in text
    assert sandbox.users["readonly"] not in text
    # the advice fits: not the generic "fix the configuration"
    assert "What to do: run `snowkit setup`" in text and "snowkit config show" not in text


def test_check_only_mode_does_not_create(sandbox: Sandbox) -> None:
    with client_for(sandbox, "admin") as client:
        with pytest.raises(SchemaNotReadyError, match="snowkit setup"):
            ensure_schema(client, create=False)
        assert not check_schema(client).ok


def test_a_load_without_the_fields_stops_before_writing(sandbox: Sandbox) -> None:
    """The schema check runs alongside the plan's first reads, yet nothing is written, and the
    run fails with what an admin must add."""
    from snowkit.cmdb.job import run_load
    from snowkit.unifi import LabConfig

    report = run_load(
        sandbox=sandbox,
        lab=LabConfig(sites=1, devices_per_site=2, clients_per_site=2, seed=1),
        setup_schema=False,
        progress=False,
    )
    assert report.status == "failed"
    assert "snowkit setup" in report.message and "u_unifi_source_id" in report.message
    with client_for(sandbox, "admin") as client:
        assert client.count("cmdb_ci") == 0 and client.count("cmn_location") == 0


def test_the_check_runs_once_whoever_asks_first() -> None:
    import threading

    from snowkit.cmdb.apply import Once

    calls: list[int] = []
    ok = Once(lambda: calls.append(1))
    threads = [threading.Thread(target=ok) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok()
    assert calls == [1]

    def refuse() -> None:
        calls.append(2)
        raise SchemaNotReadyError("missing", details={})

    failing = Once(refuse)
    for _ in range(3):
        with pytest.raises(SchemaNotReadyError):
            failing()
    assert calls == [1, 2]
    Once(None)()  # nothing to check


def test_right_after_creating_the_fields_no_sourced_record_is_read(sandbox: Sandbox) -> None:
    """A field created just now holds no values: the plan skips that read (one round less on
    a fresh instance's first load); once the fields exist, it reads them if the first round
    found a record carrying a source id."""
    from snowkit.cmdb.apply import SyncEngine
    from snowkit.cmdb.transform import CMDBRecord, TransformResult

    result = TransformResult(
        records=[CMDBRecord("cmdb_ci_ip_switch", "d1", {"name": "sw"}, "switch")]
    )
    with client_for(sandbox, "admin") as client, recorded_queries(client) as reads:
        sourced = "u_unifi_source_idISNOTEMPTY"
        fresh = SyncEngine(client, workers=2).plan(result, preflight=lambda: ensure_schema(client))
        assert fresh.counts()["create"] == 1
        assert not [q for q in reads if sourced in q], reads
        again = SyncEngine(client, workers=2).plan(result, preflight=lambda: ensure_schema(client))
        assert again.counts()["create"] == 1
        assert not [q for q in reads if sourced in q], "nothing carries a source id yet"
        client.create("cmdb_ci_ip_switch", {"name": "other", "u_unifi_source_id": "d0"})
        third = SyncEngine(client, workers=2).plan(result, preflight=lambda: ensure_schema(client))
        assert third.counts()["create"] == 1
        assert [q for q in reads if sourced in q]


def test_fields_created_during_the_first_round_do_not_hide_adoption_candidates() -> None:
    """The adoption check asked ``u_unifi_source_idISEMPTY`` while the field did not exist
    yet; an instance may answer that with no rows. Once the preflight created the field, the
    plan asks whether any record exists instead: every one of them lacks a source id."""
    from snowkit.cmdb.apply import SyncEngine
    from snowkit.cmdb.schema import REQUIRED_FIELDS, SchemaStatus

    class Instance:  # answers like an instance that returns no rows for unknown fields
        def query(self, table: str, query: object = "", *a: object, **kw: object) -> object:
            return iter([] if "u_unifi_source_id" in str(query) else [{"sys_id": "x" * 32}])

    created = SchemaStatus(created=list(REQUIRED_FIELDS))
    engine = SyncEngine(Instance(), workers=2)
    engine._preflight = type(engine._preflight)(lambda: created)
    first = engine._first_round([])
    assert first.unsourced == {"cmdb_ci": True, "cmn_location": True}
    assert not first.sourced  # nothing can carry a field created just now
    engine._preflight = type(engine._preflight)(lambda: SchemaStatus(present=list(REQUIRED_FIELDS)))
    first = engine._first_round([])
    assert first.unsourced == {"cmdb_ci": False, "cmn_location": False}


def test_a_field_created_for_one_table_only_leaves_the_other_tables_answers_as_they_are() -> None:
    """``cmdb_ci`` had its field (with sourced CIs); ``cmn_location``'s was created in this
    round, so its ISEMPTY question met no field: any location there is a candidate to adopt,
    while the CIs' answers stand as asked (before, every answer of that round was taken
    as asked, and a location made by hand was created again instead of adopted)."""
    from snowkit.cmdb.apply import SyncEngine
    from snowkit.cmdb.schema import SOURCE_ID_FIELD, SchemaStatus

    class Instance:
        def query(self, table: str, query: object = "", *a: object, **kw: object) -> object:
            q = str(query)
            if table == "cmn_location" and SOURCE_ID_FIELD in q:
                return iter([])  # no such field (yet): no rows
            if q == f"{SOURCE_ID_FIELD}ISEMPTY":
                return iter([])  # every CI carries a source id
            return iter([{"sys_id": "x" * 32}])

    status = SchemaStatus(
        present=[("cmdb_ci", SOURCE_ID_FIELD)], created=[("cmn_location", SOURCE_ID_FIELD)]
    )
    engine = SyncEngine(Instance(), workers=2)
    engine._preflight = type(engine._preflight)(lambda: status)
    first = engine._first_round([])
    assert first.unsourced == {"cmdb_ci": False, "cmn_location": True}
    assert first.sourced  # the CIs' field was there, with values


def test_fields_made_before_the_round_leave_every_answer_as_asked() -> None:
    """Checked before an outbox replay, the fields existed when the questions were asked,
    and the replay may have filled them: the round's answers stand (before, "created just
    now" ignored the sourced records the replay wrote, and they were created again)."""
    from snowkit.cmdb.apply import SyncEngine
    from snowkit.cmdb.schema import REQUIRED_FIELDS, SchemaStatus

    class Instance:  # after the replay: every record carries a source id
        def query(self, table: str, query: object = "", *a: object, **kw: object) -> object:
            return iter([] if str(query).endswith("ISEMPTY") else [{"sys_id": "x" * 32}])

    engine = SyncEngine(Instance(), workers=2)
    engine._preflight = type(engine._preflight)(lambda: SchemaStatus(created=list(REQUIRED_FIELDS)))
    engine._preflight()  # as ``sync`` does before replaying the outbox
    first = engine._first_round([])
    assert first.sourced
    assert first.unsourced == {"cmdb_ci": False, "cmn_location": False}
