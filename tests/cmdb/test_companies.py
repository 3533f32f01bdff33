"""``manufacturer`` is a reference to ``core_company``: loads write the company's sys_id, never
the vendor name (``snowkit.cmdb.companies``), against the embedded instance over HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from snowkit.cmdb.apply import SyncEngine
from snowkit.cmdb.companies import CompanyCache
from snowkit.cmdb.rollback import rollback
from snowkit.cmdb.transform import CMDBRecord, TransformResult
from snowkit.ops.audit import AuditTrail, read_audit
from snowkit.sandbox import Sandbox
from snowkit.sandbox.calls import acl_denied
from snowkit.servicenow import ServiceNowAPIClient

from .conftest import make_client, recorded_queries
from .test_incremental import events

SID = "u_unifi_source_id"
UBNT = "Ubiquiti Inc."
APPLE = "Apple, Inc."  # a comma: an IN list would read two names


def estate(vendors: tuple[str, ...] = (UBNT, APPLE)) -> TransformResult:
    """A location and one CI per vendor (``dev:<n>``), plus a CI without a manufacturer."""
    records = [CMDBRecord("cmn_location", "site:0", {"name": "Site 0"}, "location")]
    for n, vendor in enumerate(vendors):
        values = {"name": f"dev{n}", "serial_number": f"SER{n:03d}", "manufacturer": vendor}
        records.append(
            CMDBRecord("cmdb_ci_ip_switch", f"dev:{n}", values, "switch", {"location": "site:0"})
        )
    records.append(CMDBRecord("cmdb_ci_hardware", "cl:0", {"name": "c0"}, "client"))
    return TransformResult(records=records)


def sync(client: ServiceNowAPIClient, result: TransformResult, **kw: Any) -> Any:
    kw.setdefault("batch_size", 5)
    kw.setdefault("workers", 2)
    dry_run = kw.pop("dry_run", False)
    engine = SyncEngine(client, **kw)
    plan, report = engine.sync(result, progress=False, dry_run=dry_run)
    return engine, plan, report


def manufacturers(client: ServiceNowAPIClient) -> dict[str, str]:
    """source id → what ``manufacturer`` holds."""
    rows = client.query("cmdb_ci", f"{SID}ISNOTEMPTY", fields=[SID, "manufacturer"])
    return {r[SID]: r["manufacturer"] for r in rows}


def companies(client: ServiceNowAPIClient) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in client.query("core_company", "", fields=["sys_id", "name", "manufacturer"]):
        out.setdefault(row["name"], []).append(row)
    return out


def company_requests(reads: list[str]) -> list[str]:
    return [r for r in reads if r.startswith("core_company:")]


def test_a_load_writes_core_company_sys_ids_and_a_rerun_asks_nothing(
    client: ServiceNowAPIClient,
) -> None:
    cache = CompanyCache("test-instance")
    with AuditTrail() as audit:
        engine, _plan, report = sync(client, estate(), audit=audit, company_cache=cache)
    assert report.status == "success", report.message
    made = companies(client)
    assert sorted(made) == [APPLE, UBNT]  # a name with a comma is one company
    held = manufacturers(client)
    for n, vendor in enumerate((UBNT, APPLE)):
        (company,) = made[vendor]
        assert company["manufacturer"] == "true"
        assert held[f"dev:{n}"] == company["sys_id"]
    assert held["cl:0"] == ""
    assert report.verification["ok"], report.verification
    audited = [e for e in read_audit(run_id=engine.run_id) if e["table"] == "core_company"]
    assert sorted((e["action"], e["after"]["name"]) for e in audited) == [
        ("create", APPLE),
        ("create", UBNT),
    ]

    with recorded_queries(client) as reads, AuditTrail() as audit:
        written = audit.seq
        _e, plan, again = sync(client, estate(), audit=audit, company_cache=cache)
        assert audit.seq == written  # nothing written
    assert plan.counts()["no_change"] == len(estate().records)
    assert again.applied["batches"] == 0 and company_requests(reads) == []
    assert sorted(companies(client)) == [APPLE, UBNT]

    # --full-read (an untrusted cache) looks the names up again: one request, no duplicate
    untrusted = CompanyCache("test-instance", trusted=False)
    with recorded_queries(client) as reads:
        _e, plan, _r = sync(client, estate(), company_cache=untrusted)
    assert len(company_requests(reads)) == 1
    assert plan.counts()["no_change"] == len(estate().records)
    assert all(len(rows) == 1 for rows in companies(client).values())


def test_an_existing_company_is_reused_and_a_comma_is_not_a_list(
    client: ServiceNowAPIClient,
) -> None:
    ubnt = client.create("core_company", {"name": UBNT, "manufacturer": "true"})["sys_id"]
    # an IN list would split "Apple, Inc." and find this one
    apple = client.create("core_company", {"name": "Apple", "manufacturer": "true"})["sys_id"]
    with recorded_queries(client) as reads:
        _e, _p, report = sync(client, estate())
    assert report.status == "success", report.message
    assert len(company_requests(reads)) == 1  # one lookup for every name
    made = companies(client)
    assert [r["sys_id"] for r in made[UBNT]] == [ubnt]  # reused, not duplicated
    held = manufacturers(client)
    assert held["dev:0"] == ubnt
    assert held["dev:1"] == made[APPLE][0]["sys_id"] != apple


def test_old_raw_names_are_corrected_once(client: ServiceNowAPIClient) -> None:
    """CIs an earlier snowkit loaded hold the vendor name: one update each, then nothing."""
    _e, _p, first = sync(client, estate())
    assert first.status == "success", first.message
    for row in client.query("cmdb_ci", "manufacturerISNOTEMPTY", fields=["sys_id", SID]):
        vendor = UBNT if row[SID] == "dev:0" else APPLE
        client.update("cmdb_ci", row["sys_id"], {"manufacturer": vendor})
    _e, plan, fixed = sync(client, estate())
    assert plan.counts()["update"] == 2
    assert {i.source_id: sorted(i.values) for i in plan.by_action("update")} == {
        "dev:0": ["manufacturer"],
        "dev:1": ["manufacturer"],
    }
    assert fixed.status == "success" and fixed.verification["ok"]
    made = companies(client)
    assert manufacturers(client)["dev:0"] == made[UBNT][0]["sys_id"]
    _e, plan, again = sync(client, estate())
    assert plan.counts()["update"] == 0 and again.applied["batches"] == 0


def answer_company_inserts(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, reply: Callable[[], Any]
) -> Callable[[], None]:
    """The sandbox answers every core_company insert with ``reply()``; returns the undo."""
    tables = sandbox.app._tables
    real = tables._insert

    def insert(call: Any, table: str) -> Any:
        return reply() if table == "core_company" else real(call, table)

    monkeypatch.setattr(tables, "_insert", insert)
    return lambda: monkeypatch.setattr(tables, "_insert", real)


def test_a_refused_create_leaves_the_field_out_with_one_warning(
    sandbox: Sandbox, client: ServiceNowAPIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No right to create core_company (an ACL's 403), and a name no query can carry."""
    answer_company_inserts(sandbox, monkeypatch, lambda: acl_denied("Insert"))
    _e, _p, report = sync(client, estate((UBNT, "Odd^Vendor", UBNT)))
    assert report.status == "success", report.message
    assert companies(client) == {}
    assert set(manufacturers(client).values()) == {""}
    warnings = [w for w in report.warnings if "manufacturer" in w]
    assert len(warnings) == 1
    assert "3 record(s)" in warnings[0] and UBNT in warnings[0] and "Odd^Vendor" in warnings[0]
    assert "403" in warnings[0] and "create rights on core_company" in warnings[0]


def test_rollback_leaves_the_companies_it_created(client: ServiceNowAPIClient) -> None:
    with AuditTrail() as audit:
        engine, _p, report = sync(client, estate(), audit=audit)
        assert report.status == "success", report.message
        result = rollback(client, engine.run_id, audit=audit)
    assert result.ok, result.failed
    assert manufacturers(client) == {}  # the CIs are gone
    assert sorted(companies(client)) == [APPLE, UBNT]  # the companies stay
    assert sorted(k["name"] for k in result.kept) == [APPLE, UBNT]
    assert any("left in place" in n and APPLE in n for n in result.notes)
    assert result.to_dict()["kept"] and result.to_dict()["notes"]


def test_a_dry_run_only_looks_up_and_names_what_it_would_create(
    client: ServiceNowAPIClient,
) -> None:
    ubnt = client.create("core_company", {"name": UBNT, "manufacturer": "true"})["sys_id"]
    _e, plan, report = sync(client, estate(), dry_run=True)
    assert report.status == "dry_run"
    assert sorted(companies(client)) == [UBNT]  # nothing created
    assert any("would be created" in n and APPLE in n for n in report.notes), report.notes
    creates = {i.source_id: i.values for i in plan.by_action("create")}
    assert creates["dev:0"]["manufacturer"] == ubnt
    assert "manufacturer" not in creates["dev:1"]


def test_ire_mode_sends_the_sys_id(client: ServiceNowAPIClient) -> None:
    payloads: list[Any] = []
    real = client.identify_reconcile

    def recording(payload: Any, *a: Any, **kw: Any) -> Any:
        payloads.append(json.loads(json.dumps(payload)))
        return real(payload, *a, **kw)

    client.identify_reconcile = recording  # type: ignore[method-assign]
    _e, _p, report = sync(client, estate(), ire=True)
    assert report.status == "success", report.message
    made = companies(client)
    sent = {
        item["values"].get("manufacturer")
        for payload in payloads
        for item in payload["items"]
        if "manufacturer" in item["values"]
    }
    assert sent == {made[UBNT][0]["sys_id"], made[APPLE][0]["sys_id"]}
    assert manufacturers(client)["dev:1"] == made[APPLE][0]["sys_id"]


def test_a_lab_load_through_run_load_resolves_and_its_rerun_asks_nothing(
    sandbox: Sandbox, load_lab: Any
) -> None:
    sandbox.set_faults({"latency_ms": 100})  # the companies are asked while the round is out
    first = load_lab(sandbox)
    sandbox.set_faults(None)
    assert first.status == "success", first.message
    # planned for an empty CMDB with the names meanwhile, sys_ids swapped in after
    (event,) = events(first.run_id, "plan_built_ahead")
    assert event["empty_cmdb"] is True
    assert first.verification["ok"], first.verification
    with make_client(sandbox) as admin:
        made = {r["sys_id"]: r for r in admin.query("core_company", "")}
        held = [r["manufacturer"] for r in admin.query("cmdb_ci", "manufacturerISNOTEMPTY")]
    assert held and all(m in made and made[m]["manufacturer"] == "true" for m in held)
    assert UBNT in {r["name"] for r in made.values()}
    again = load_lab(sandbox)
    assert again.status == "success" and again.applied["batches"] == 0
    samples = json.loads(Path(again.paths["metrics"]).read_text())["samples"]
    assert samples and not [s for s in samples if s.get("table") == "core_company"]


def test_a_plan_for_an_empty_cmdb_made_with_names_swaps_to_the_resolved_plan() -> None:
    """What a first run plans while the companies are asked equals planning after."""
    from snowkit.cmdb import plan as planning
    from snowkit.cmdb.companies import Resolution, _swap, swap_in_plan

    raw = estate((UBNT, APPLE, "Unknown^Co")).records
    known = {UBNT: "a" * 32, APPLE: "b" * 32}
    resolved, left_out = _swap(raw, known)
    assert left_out == 1 and raw[1].values["manufacturer"] == UBNT  # the input is untouched
    early = planning.build_plan(raw, planning.CMDBSnapshot())
    swapped = swap_in_plan(early, Resolution(resolved, known=known))
    after = planning.build_plan(resolved, planning.CMDBSnapshot())
    assert [(i.source_id, i.action, i.values) for i in swapped.items] == [
        (i.source_id, i.action, i.values) for i in after.items
    ]
    assert {k: r.values for k, r in swapped.records.items()} == {
        k: r.values for k, r in after.records.items()
    }


def test_a_cached_company_deleted_since_is_found_in_the_first_round_and_made_again(
    client: ServiceNowAPIClient,
) -> None:
    """The cache is checked by a read riding in the plan's first round, not trusted blindly."""
    cache = CompanyCache("test-instance")
    _e, _p, first = sync(client, estate(), company_cache=cache)
    assert first.status == "success", first.message
    gone = companies(client)[UBNT][0]["sys_id"]
    client.delete("core_company", gone)
    _e, plan, again = sync(client, estate(), company_cache=cache)
    assert again.status == "success", again.message
    made = companies(client)
    # made again under the same id (each vendor's is fixed), so the CIs' references hold again
    assert [r["sys_id"] for r in made[UBNT]] == [gone]
    assert plan.counts()["update"] == 0
    assert manufacturers(client)["dev:0"] == gone and cache.load()[UBNT] == gone


def test_a_cache_from_another_instance_under_the_same_key_is_not_written(
    client: ServiceNowAPIClient,
) -> None:
    """An embedded instance on a port another one had: the cached ids name nothing here."""
    cache = CompanyCache("https://127.0.0.1:1")
    with Sandbox.start() as other, make_client(other) as there:
        from snowkit.cmdb.schema import ensure_schema

        ensure_schema(there)
        _e, _p, report = sync(there, estate(), company_cache=cache)
        assert report.status == "success", report.message
    _e, _p, report = sync(client, estate(), company_cache=cache)
    assert report.status == "success", report.message
    made = companies(client)
    held = manufacturers(client)
    assert held["dev:0"] == made[UBNT][0]["sys_id"] and held["dev:1"] == made[APPLE][0]["sys_id"]


def test_a_failed_create_makes_the_run_partial_and_the_rerun_fills_the_field_in(
    sandbox: Sandbox, client: ServiceNowAPIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A passing failure (a 500 on every try), unlike a refusal: rerun, and it is resolved."""
    from snowkit.sandbox.calls import error_reply

    busy = lambda: error_reply(500, "Operation Failed", "the database is busy")  # noqa: E731
    heal = answer_company_inserts(sandbox, monkeypatch, busy)
    _e, _p, report = sync(client, estate())
    assert report.status == "partial" and "rerun the load" in report.message
    assert sum("manufacturer left out of 2 record(s)" in w for w in report.warnings) == 1
    assert set(manufacturers(client).values()) == {""}
    heal()
    _e, plan, again = sync(client, estate())
    assert again.status == "success", again.message
    assert plan.counts()["update"] == 2
    made = companies(client)
    assert manufacturers(client)["dev:1"] == made[APPLE][0]["sys_id"]


def test_names_looked_up_as_the_inventory_came_in_are_not_asked_again(
    client: ServiceNowAPIClient,
) -> None:
    """The plan of a first load had waited for a lookup and then the creates, one after the
    other; the lookup now runs beside the transform and the plan's first round."""
    from snowkit.cmdb import companies as resolution

    ubnt = client.create("core_company", {"name": UBNT, "manufacturer": "true"})["sys_id"]
    ahead = resolution.look_up_ahead(client, {UBNT, APPLE, "Odd^Name"}, None)
    assert ahead.asked == {UBNT, APPLE} and dict(ahead.found) == {UBNT: ubnt}
    with recorded_queries(client) as reads:
        out = resolution.resolve(client, estate().records, looked_up=ahead)
    assert company_requests(reads) == []  # no lookup of its own: only the create batch
    assert out.known[UBNT] == ubnt and APPLE in out.created
    assert manufacturers(client) == {}  # resolving writes companies, never CIs


def test_a_lab_load_looks_its_vendors_up_once(sandbox: Sandbox, load_lab: Any) -> None:
    report = load_lab(sandbox)
    assert report.status == "success", report.message
    samples = json.loads(Path(report.paths["metrics"]).read_text())["samples"]
    lookups = [
        s for s in samples if s.get("table") == "core_company" and s.get("operation") == "query"
    ]
    assert len(lookups) == 1


def test_spellings_of_one_vendor_make_one_company(client: ServiceNowAPIClient) -> None:
    """Each case or spacing variant had become a company of its own."""
    variants = ("Ubiquiti Inc.", "UBIQUITI INC.", "Ubiquiti Inc. ", " Ubiquiti  Inc.")
    _e, _p, report = sync(client, estate(variants))
    assert report.status == "success", report.message
    made = companies(client)
    assert list(made) == [UBNT] and len(made[UBNT]) == 1
    held = {sid: m for sid, m in manufacturers(client).items() if sid.startswith("dev:")}
    assert set(held.values()) == {made[UBNT][0]["sys_id"]} and len(held) == 4


def test_two_runs_at_once_make_each_company_once(sandbox: Sandbox) -> None:
    """Chosen at random, each run's ids had made every new vendor twice."""
    import threading

    sandbox.set_faults({"latency_ms": 30})
    reports: list[Any] = []

    def run() -> None:
        with make_client(sandbox) as client:
            reports.append(sync(client, estate())[2])

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sandbox.set_faults(None)
    with make_client(sandbox) as client:
        made = companies(client)
    assert sorted(made) == sorted([UBNT, APPLE])
    assert all(len(rows) == 1 for rows in made.values()), made


def test_a_dry_run_leaves_the_cache_alone(client: ServiceNowAPIClient) -> None:
    client.create("core_company", {"name": UBNT, "manufacturer": "true"})  # a name it finds
    cache = CompanyCache("test-instance")
    _e, _p, report = sync(client, estate(), company_cache=cache, dry_run=True)
    assert report.status == "dry_run" and not cache.path.exists()


def test_a_run_the_schema_check_stops_creates_no_company(sandbox: Sandbox) -> None:
    """The companies had been created and audited before the check stopped the run."""
    from snowkit.cmdb.job import run_load

    from .conftest import FAST, LAB

    report = run_load(sandbox=sandbox, lab=LAB, progress=False, batch_size=7,
                      client_options=FAST, setup_schema=False)  # fmt: skip
    assert report.status == "failed" and "SchemaNotReadyError" in report.message
    with make_client(sandbox) as client:
        assert companies(client) == {}
    assert list(read_audit(run_id=report.run_id)) == []


def test_the_cache_keeps_this_runs_names_and_stays_under_its_limit(tmp_path: Path) -> None:
    """It had only grown: past 1,000 ids its check no longer rode in the first round."""
    from snowkit.cmdb.companies import CACHE_LIMIT

    cache = CompanyCache("i", tmp_path / "companies.json")
    cache.save({f"old {n:04d}": f"{n:032x}" for n in range(CACHE_LIMIT + 300)})
    assert len(cache.load()) == CACHE_LIMIT + 300  # one run's own names are all kept
    cache.save({UBNT: "a" * 32})
    held = cache.load()
    assert len(held) == CACHE_LIMIT and held[UBNT] == "a" * 32
