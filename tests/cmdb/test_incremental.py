"""The incremental snapshot: a rerun reads only what changed, yet misses no change by others."""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snowkit import paths
from snowkit.cmdb import incremental
from snowkit.cmdb.schema import ensure_schema
from snowkit.cmdb.state import StateStore, SyncState
from snowkit.credentials import CredentialManager
from snowkit.ops.audit import read_audit
from snowkit.sandbox import Sandbox
from snowkit.servicenow import ServiceNowAPIClient

from .conftest import make_client, recorded_queries


@pytest.fixture
def load(load_lab):
    """The job on the small lab, which must succeed."""

    def run(sb: Sandbox, **kw: Any):
        report = load_lab(sb, **kw)
        assert report.status == "success", (report.message, report.warnings)
        return report

    return run


def events(run_id: str, name: str) -> list[dict]:
    lines = (paths.runs_dir() / run_id / "log.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("event") == name]


def requests_made(run_id: str) -> list[tuple[str, str | None]]:
    """(method, operation) of every request the run made, in order."""
    metrics = json.loads((paths.runs_dir() / run_id / "metrics.json").read_text())
    return [(s["method"], s.get("operation")) for s in metrics["samples"]]


def writes_sent(run_id: str) -> int:
    """Write requests (a Batch API request of reads only is ``batch_read``: not a write)."""
    metrics = json.loads((paths.runs_dir() / run_id / "metrics.json").read_text())
    return sum(
        1
        for s in metrics["samples"]
        if s["method"] in ("POST", "PATCH", "DELETE") and s.get("operation") != "batch_read"
    )


def requests_to(run_id: str, table: str) -> int:
    metrics = json.loads((paths.runs_dir() / run_id / "metrics.json").read_text())
    return sum(1 for s in metrics["samples"] if s["table"] == table)


def a_client_ci(client: ServiceNowAPIClient) -> dict:
    rows = client.query(
        "cmdb_ci",
        "u_unifi_source_idSTARTSWITHunifi:client",
        fields=["sys_id", "name", "u_unifi_source_id", "sys_class_name"],
    )
    return next(iter(rows))


def test_no_change_rerun_is_incremental_and_writes_nothing(sandbox: Sandbox, load) -> None:
    first = load(sandbox)
    assert not events(first.run_id, "incremental_snapshot")  # nothing remembered yet
    assert requests_to(first.run_id, "sys_dictionary") > 0
    second = load(sandbox)
    assert events(second.run_id, "incremental_snapshot")
    assert second.action_totals()["no_change"] == first.action_totals()["create"]
    assert second.relationships.existing == first.relationships.created
    assert second.applied["batches"] == 0 and second.relationships.created == 0
    assert list(read_audit(run_id=second.run_id)) == []
    assert writes_sent(second.run_id) == 0
    assert requests_to(second.run_id, "sys_dictionary") == 0  # the schema passed recently


def test_field_edited_by_someone_else_is_repaired_alone(sandbox: Sandbox, client, load) -> None:
    load(sandbox)
    ci = a_client_ci(client)
    client.update(ci["sys_class_name"], ci["sys_id"], {"name": "renamed by hand"})
    again = load(sandbox)
    assert events(again.run_id, "incremental_snapshot")
    assert again.applied["updated"] == 1 and again.applied["created"] == 0
    (entry,) = read_audit(run_id=again.run_id)
    assert entry["sys_id"] == ci["sys_id"] and entry["before"] == {"name": "renamed by hand"}
    assert set(entry["after"]) == {"name"}
    assert client.get("cmdb_ci", ci["sys_id"], fields=["name"])["name"] == ci["name"]
    quiet = load(sandbox)
    assert quiet.applied["batches"] == 0 and writes_sent(quiet.run_id) == 0


def test_ci_deleted_by_someone_else_is_recreated(sandbox: Sandbox, client, load) -> None:
    load(sandbox)
    ci = a_client_ci(client)
    client.delete(ci["sys_class_name"], ci["sys_id"])
    again = load(sandbox)
    assert again.applied["created"] == 1, again.applied
    assert again.relationships.created >= 1  # its link went with it: relinked
    found = list(
        client.query("cmdb_ci", f"u_unifi_source_id={ci['u_unifi_source_id']}", fields=["sys_id"])
    )
    assert len(found) == 1
    assert load(sandbox).applied["batches"] == 0


def test_link_deleted_by_someone_else_is_recreated(sandbox: Sandbox, client, load) -> None:
    first = load(sandbox)
    link = next(iter(client.query("cmdb_rel_ci", "", fields=["sys_id"])))
    client.delete("cmdb_rel_ci", link["sys_id"])
    again = load(sandbox)
    assert again.relationships.created == 1
    assert again.relationships.existing == first.relationships.created - 1
    assert client.count("cmdb_rel_ci") == first.relationships.created


def test_a_link_added_by_someone_else_is_not_duplicated(sandbox: Sandbox, client, load) -> None:
    first = load(sandbox)
    link = next(iter(client.query("cmdb_rel_ci", "", fields=["parent", "child", "type"])))
    body = {k: (v["value"] if isinstance(v, dict) else v) for k, v in link.items()}
    client.delete("cmdb_rel_ci", next(iter(client.query("cmdb_rel_ci", "")))["sys_id"])
    client.create("cmdb_rel_ci", body)  # the same link, put back by hand
    again = load(sandbox)
    assert again.relationships.created == 0
    assert client.count("cmdb_rel_ci") == first.relationships.created


def test_unsourcing_a_ci_falls_back_to_a_full_read(sandbox: Sandbox, client, load) -> None:
    load(sandbox)
    ci = a_client_ci(client)
    client.update(ci["sys_class_name"], ci["sys_id"], {"u_unifi_source_id": ""})
    again = load(sandbox)
    assert not events(again.run_id, "incremental_snapshot")
    assert events(again.run_id, "incremental_snapshot_skipped")
    assert again.applied["created"] == 0  # adopted back by identification, not duplicated


def test_without_incremental_every_run_reads_everything(sandbox: Sandbox, load) -> None:
    load(sandbox, incremental=False)
    again = load(sandbox, incremental=False)
    assert not events(again.run_id, "incremental_snapshot")
    assert again.applied["batches"] == 0


# -- the pieces, against a scripted client ---------------------------------------------------


class ScriptedClient:
    """Answers listings and counts from fixed rows; records every query it is asked."""

    def __init__(self, rows: dict[str, list[dict]], counts: dict[str, int]) -> None:
        self.rows, self.counts, self.queries = rows, counts, []

    def query(self, table: str, query: Any = "", fields: Any = None, **kw: Any):
        self.queries.append((table, str(query)))
        return iter(self.rows.get(table, []))

    def count(self, table: str, query: Any = "") -> int:
        return self.counts[table]


def remembered(**versions: str) -> SyncState:
    """A state remembering CIs (id → version); the watermark is the newest stamp."""
    state = SyncState()
    for sys_id, version in versions.items():
        state.rows["ci"][sys_id] = {"sys_id": sys_id, "u_unifi_source_id": sys_id.lower()}
        state.versions["ci"][sys_id] = version
    state.watermarks["ci"] = incremental.newest_stamp(versions.values()) or ""
    return state


def ci_row(sys_id: str, stamp: str, mods: int, **values: str) -> dict:
    return {"sys_id": sys_id, "sys_updated_on": stamp, "sys_mod_count": str(mods),
            "u_unifi_source_id": sys_id.lower(), **values}  # fmt: skip


def refresh(state: SyncState, rows: list[dict], count: int) -> str | None:
    client = ScriptedClient({"cmdb_ci": rows}, {"cmdb_ci": count, "cmn_location": 0})
    listings, _ = incremental.list_changes(client, state, workers=1, kinds=("ci", "loc"))
    return incremental.refresh_records(client, state, listings, [], set(), workers=1)


def test_watermarks_come_from_the_server_with_an_overlap() -> None:
    state = remembered(A="2001-01-01 10:00:00|2")
    client = ScriptedClient(
        {"cmdb_ci": [ci_row("A", "2001-01-01 10:00:05", 3)]},
        {"cmdb_ci": 1, "cmn_location": 0, "cmdb_rel_ci": 0},
    )
    listings, _ = incremental.list_changes(client, state, workers=1)
    assert ("cmdb_ci", "u_unifi_source_idISNOTEMPTY^sys_updated_on>=2001-01-01 09:59:58") in (
        client.queries
    )
    assert listings["ci"].changed == {"A": "2001-01-01 10:00:05|3"}
    assert listings["ci"].newest == "2001-01-01 10:00:05"
    assert incremental.cut("not a time") is None


def test_same_second_edits_are_told_apart_by_mod_count() -> None:
    state = remembered(A="2001-01-01 10:00:05|3")
    assert refresh(state, [ci_row("A", "2001-01-01 10:00:05", 4, name="new")], 1) is None
    assert state.rows["ci"]["A"]["name"] == "new"
    assert state.versions["ci"]["A"] == "2001-01-01 10:00:05|4"


def test_a_listing_that_skips_recent_records_is_not_trusted() -> None:
    """If the instance read the cut in another time zone, the newest record would be missing."""
    versions = {"A": "2001-01-01 10:00:05|0", "B": "2001-01-01 08:00:00|0"}
    why = refresh(remembered(**versions), [], 2)
    assert why is not None and "not listed" in why
    assert refresh(remembered(**versions), [ci_row("A", "2001-01-01 10:00:05", 0)], 2) is None


def test_a_deletion_is_seen_by_the_count() -> None:
    state = remembered(A="2001-01-01 10:00:05|0", B="2001-01-01 08:00:00|0")
    why = refresh(state, [ci_row("A", "2001-01-01 10:00:05", 0)], 1)
    assert why is not None and "deleted" in why


def test_state_store_round_trip_and_forget() -> None:
    store = StateStore()
    state = SyncState(signature="s", watermarks={"ci": "2001-01-01 10:00:00"}, has_links=True)
    state.rows["ci"]["A"] = {"sys_id": "A", "name": "x"}
    state.versions["ci"]["A"] = "v"
    state.covered_parents = {"A"}
    store.save("https://i", state)
    back = store.load("https://i")
    assert back is not None and back.rows["ci"] == state.rows["ci"]
    assert back.versions["ci"] == {"A": "v"} and back.covered_parents == {"A"}
    back.watermarks["ci"] = "2001-01-01 11:00:00"
    store.save("https://i", back, rows=False)  # head only: rows kept
    again = store.load("https://i")
    assert again is not None and again.rows["ci"] == state.rows["ci"]
    assert again.watermarks["ci"] == "2001-01-01 11:00:00"
    assert store.load("https://other") is None
    store.forget("https://i")
    assert store.load("https://i") is None
    store.close()


def test_saving_a_state_exactly_as_stored_writes_nothing_unless_it_was_marked_or_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A no-change rerun's save would write the same head back (and sync the file): it is
    skipped, but never when this store marked the state unsealed or forgot it since."""
    store = StateStore()
    state = SyncState(signature="s", watermarks={"ci": "2001-01-01 10:00:00"})
    store.save("k", state)
    commits: list[str] = []
    real = store._put
    monkeypatch.setattr(store, "_put", lambda *a: (commits.append(a[1]), real(*a)))

    loaded = store.load("k")
    assert loaded is not None
    store.save("k", loaded, rows=False)
    assert commits == []  # the same head: nothing written
    loaded.counts["ci"] = 1
    store.save("k", loaded, rows=False)
    assert commits == ["state"]  # a different head is written

    again = store.load("k")
    assert again is not None
    store.mark_writing("k")  # writes were about to start, and none came
    store.save("k", again, rows=False)
    assert commits[-1] == "state" and len(commits) == 3  # the mark, then the save clearing it
    head = store.load_head("k")
    assert head is not None and head.sealed

    gone = store.load("k")
    assert gone is not None
    store.forget("k")
    store.save("k", gone, rows=False)
    assert store.load("k") is not None  # saved again, not skipped
    store.close()


def test_schema_check_is_trusted_for_its_ttl_only() -> None:
    now = [1000.0]
    store = StateStore(wall_clock=lambda: now[0])
    assert not store.schema_checked_recently("https://i", 60)
    store.schema_passed("https://i")
    now[0] += 59
    assert store.schema_checked_recently("https://i", 60)
    now[0] += 2
    assert not store.schema_checked_recently("https://i", 60)
    store.close()


def test_fields_a_table_does_not_hold_make_the_next_run_read_everything(client) -> None:
    from snowkit.cmdb.apply import SyncEngine
    from snowkit.cmdb.transform import CMDBRecord, TransformResult

    values = {"name": "sw", "serial_number": "S1", "u_no_such_column": "x"}
    result = TransformResult(records=[CMDBRecord("cmdb_ci_ip_switch", "d1", values, "switch")])
    store = StateStore()

    def sync():
        engine = SyncEngine(client, state_store=store, instance_key="k", workers=1)
        return engine.sync(result, progress=False)

    _plan, first = sync()
    assert first.applied["created"] == 1
    assert first.verification["unstored_fields"] == {"cmdb_ci_ip_switch": ["u_no_such_column"]}
    assert store.load("k") is None  # what was sent is not what is held: not remembered
    plan, second = sync()
    assert second.applied["batches"] == 0 and plan.counts()["no_change"] == 1
    assert any("u_no_such_column" in note for note in plan.notes)  # from the full read
    assert store.load("k") is not None
    plan, third = sync()  # incremental now, and still no write and the same note
    assert third.applied["batches"] == 0
    assert any("u_no_such_column" in note for note in plan.notes)
    store.close()


def test_estates_above_the_limit_keep_no_state(client) -> None:
    from snowkit.cmdb.apply import SyncEngine
    from snowkit.cmdb.transform import CMDBRecord, TransformResult

    records = [
        CMDBRecord("cmdb_ci_ip_switch", f"d{n}", {"name": f"sw{n}"}, "switch") for n in range(3)
    ]
    store = StateStore()

    def sync(limit: int):
        engine = SyncEngine(client, state_store=store, instance_key="k", max_remembered=limit)
        return engine.sync(TransformResult(records=records), progress=False)[1]

    assert sync(limit=100).applied["created"] == 3
    assert store.load("k") is not None
    assert sync(limit=2).applied["batches"] == 0  # read in full, still nothing to write
    assert store.load("k") is None  # and what was remembered is dropped, not left to age
    store.close()


# -- narrowed listings: our own untouched creates are left out --------------------------------

OTHER_USER, OTHER_PASSWORD = "jdoe", "another-account-pw"
SID_FIELD = "u_unifi_source_id"


@pytest.fixture
def shared_sandbox() -> Iterator[Sandbox]:
    """A sandbox where a second account (someone else) edits the CMDB too."""
    with Sandbox.start(users={OTHER_USER: OTHER_PASSWORD}) as sb:
        yield sb


def someone_else(sb: Sandbox) -> ServiceNowAPIClient:
    creds = CredentialManager.static(basic=(OTHER_USER, OTHER_PASSWORD))
    return ServiceNowAPIClient(sb.url, creds, verify=str(sb.ca_path), sleep=lambda s: None)


def remembered_state() -> SyncState:
    store = StateStore()
    try:
        keys = [k for (k,) in store._conn.execute("SELECT DISTINCT instance FROM meta")]
        (state,) = [s for s in map(store.load, keys) if s is not None]
        return state
    finally:
        store.close()


def test_the_narrowed_listing_query() -> None:
    since = "2001-01-01 10:00:00"
    plain = "u_unifi_source_idISNOTEMPTY^sys_updated_on>=2001-01-01 10:00:00"
    assert incremental.listing_query("ci", since) == plain
    assert incremental.listing_query("ci", None) == "u_unifi_source_idISNOTEMPTY"
    narrowed = incremental.listing_query("ci", since, "svc.snowkit", "abc")
    assert narrowed.split("^NQ") == [
        plain + "^sys_updated_by!=svc.snowkit",
        plain + "^sys_updated_by=svc.snowkit^sys_mod_count>0",
        plain + "^sys_id=abc",
    ]
    assert incremental.listing_query("rel", since, "svc") == (
        "sys_updated_on>=2001-01-01 10:00:00^sys_updated_by!=svc"
        "^NQsys_updated_on>=2001-01-01 10:00:00^sys_updated_by=svc^sys_mod_count>0"
    )


@given(st.text(max_size=30))
def test_any_account_name_gives_a_safe_listing(me: str) -> None:
    """A name the encoded query cannot carry lists everything instead of breaking the query."""
    since = "2001-01-01 10:00:00"
    query = incremental.listing_query("ci", since, me)
    plain = incremental.listing_query("ci", since)
    assert query == plain or query.startswith(f"{plain}^sys_updated_by!={me}^NQ")


def test_a_narrowed_listing_needs_its_canary() -> None:
    state = remembered(A="2001-01-01 10:00:05|0", B="2001-01-01 08:00:00|0")
    state.updater = "svc"
    assert refresh(state, [], 2) is not None  # the canary (A) did not come back
    client = ScriptedClient({"cmdb_ci": [ci_row("A", "2001-01-01 10:00:05", 0)]},
                            {"cmdb_ci": 2, "cmn_location": 0})  # fmt: skip
    listings, _ = incremental.list_changes(client, state, workers=1, kinds=("ci", "loc"))
    assert "sys_id=A" in client.queries[0][1] and "sys_updated_by!=svc" in client.queries[0][1]
    assert incremental.refresh_records(client, state, listings, [], set(), workers=1) is None


def test_a_back_to_back_rerun_lists_none_of_its_own_writes(shared_sandbox: Sandbox, load) -> None:
    load(shared_sandbox)
    state = remembered_state()
    assert state.updater == "admin"
    since = incremental.cut(state.watermarks["ci"])
    canary = incremental.canary_for(state.versions["ci"], since)
    query = incremental.listing_query("ci", since, state.updater, canary)
    with make_client(shared_sandbox) as client:
        listed = [r["sys_id"] for r in client.query("cmdb_ci", query, fields=["sys_id"])]
    assert listed == [canary]  # every CI was stamped in the window; only the canary comes back
    again = load(shared_sandbox)
    assert events(again.run_id, "incremental_snapshot")
    assert writes_sent(again.run_id) == 0


def test_the_first_seal_on_a_fresh_instance_lists_none_of_its_own_creates(
    sandbox: Sandbox, load, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing carried a source id before the first run (no stamp to list from): its seal
    lists from the plan's first read, without the records it created, not every record
    there is."""
    listed: list[tuple[str, bool, int]] = []
    compare = incremental._compare

    def spy(read: Any, rows: Any, known: Any, recent_before: Any) -> Any:
        rows = list(rows)
        listed.append((read.kind, read.narrowed, len(rows)))
        return compare(read, rows, known, recent_before)

    monkeypatch.setattr(incremental, "_compare", spy)
    load(sandbox)
    assert sorted(kind for kind, narrowed, _ in listed if narrowed) == ["ci", "loc", "rel"]
    assert all(n <= 1 for _, _, n in listed), listed  # at most the canary
    again = load(sandbox)
    assert events(again.run_id, "incremental_snapshot")
    assert writes_sent(again.run_id) == 0


def test_a_first_seal_sees_a_record_made_by_someone_else_after_the_plan_read_it(
    shared_sandbox: Sandbox, load, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the plan's first read (nothing sourced yet) and our first write, someone else
    adds a sourced record; during the writes, someone deletes one of ours. The counts cancel
    out; the seal must still see the other's record (it lists from the read, not from our
    first write), so the state is not kept and the next run recreates the deleted CI."""
    transform_module = importlib.import_module("snowkit.cmdb.transform")

    real = transform_module.transform

    def slow_transform(inventory: Any) -> Any:
        result = real(inventory)
        time.sleep(0.5)  # the first round is done: it found nothing sourced
        with someone_else(shared_sandbox) as other:
            other.create("cmdb_ci_hardware", {"name": "theirs", SID_FIELD: "foreign:1"})
        time.sleep(incremental.OVERLAP_SECONDS + 1.5)  # well before our first write
        return result

    deleted: list[str] = []

    def delete_one_of_ours(done: int) -> None:
        if deleted:
            return
        with someone_else(shared_sandbox) as other:
            for row in other.query(
                "cmdb_ci", f"{SID_FIELD}STARTSWITHunifi:", fields=["sys_id", SID_FIELD]
            ):
                other.delete("cmdb_ci", row["sys_id"])
                deleted.append(row[SID_FIELD])
                return

    monkeypatch.setattr(transform_module, "transform", slow_transform)
    load(shared_sandbox, on_batch=delete_one_of_ours)
    monkeypatch.setattr(transform_module, "transform", real)
    assert deleted
    again = load(shared_sandbox)
    assert again.applied["created"] == 1  # the deleted CI is back
    with make_client(shared_sandbox) as client:
        assert list(client.query("cmdb_ci", f"{SID_FIELD}={deleted[0]}", fields=["sys_id"]))


def test_an_edit_by_someone_else_in_the_window_is_seen(shared_sandbox: Sandbox, load) -> None:
    load(shared_sandbox)
    with someone_else(shared_sandbox) as other:
        ci = a_client_ci(other)
        other.update(ci["sys_class_name"], ci["sys_id"], {"name": "edited by jdoe"})
    again = load(shared_sandbox)
    assert events(again.run_id, "incremental_snapshot")
    assert again.applied["updated"] == 1
    (entry,) = read_audit(run_id=again.run_id)
    assert entry["sys_id"] == ci["sys_id"] and entry["before"] == {"name": "edited by jdoe"}


def test_a_record_created_with_our_account_outside_a_run_forces_a_full_read(
    shared_sandbox: Sandbox, load
) -> None:
    """A create by our own account elsewhere is left out of the listing, but not of the count."""
    first = load(shared_sandbox)
    with make_client(shared_sandbox) as client:
        client.create("cmdb_ci_hardware", {"name": "by hand", "u_unifi_source_id": "unifi:x"})
    again = load(shared_sandbox)
    assert not events(again.run_id, "incremental_snapshot")
    (skipped,) = events(again.run_id, "incremental_snapshot_skipped")
    assert "deleted or unsourced" in skipped["reason"]
    assert again.action_totals()["not_seen"] == 1
    assert again.applied["created"] == 0
    assert again.action_totals()["no_change"] == first.action_totals()["create"]


# -- the round as one Batch API request -----------------------------------------------------


def operations(run_id: str) -> list[str]:
    metrics = json.loads((paths.runs_dir() / run_id / "metrics.json").read_text())
    return [s["operation"] for s in metrics["samples"]]


def test_a_rerun_reads_its_listings_and_counts_in_one_request(sandbox: Sandbox, load) -> None:
    load(sandbox)
    again = load(sandbox)
    assert events(again.run_id, "incremental_snapshot")
    ops = operations(again.run_id)
    assert ops.count("batch_read") == 1
    assert "count" not in ops  # the counts rode along in the batch


class BatchLess:
    """The real client, but every Batch API request comes back failed (or is refused)."""

    def __init__(self, client: ServiceNowAPIClient, *, raise_: bool = False) -> None:
        self._client, self._raise = client, raise_

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def batch(self, requests: list[Any]) -> list[Any]:
        if self._raise:
            raise RuntimeError("no Batch API here")
        results = self._client.batch(requests)
        for result in results:
            result.status_code = 500
        return results


def listings_of(client: Any, state: SyncState) -> dict[str, tuple[int, dict[str, str], int]]:
    """Per kind: the count, what changed, and how many remembered records were listed."""
    found, _ = incremental.list_changes(client, state, workers=2)
    return {k: (v.count, v.changed, v.known_recent) for k, v in found.items()}


@pytest.mark.parametrize("raise_", [False, True])
def test_without_a_usable_batch_answer_the_reads_go_one_by_one(
    sandbox: Sandbox, load, raise_: bool
) -> None:
    load(sandbox)
    state = remembered_state()
    with make_client(sandbox) as client:
        edited = a_client_ci(client)
        client.update(edited["sys_class_name"], edited["sys_id"], {"name": "edited"})
        batched = listings_of(client, state)
        one_by_one = listings_of(BatchLess(client, raise_=raise_), state)
    assert batched == one_by_one
    assert edited["sys_id"] in batched["ci"][1]


def test_a_listing_that_fills_a_page_is_read_again_with_paging(
    sandbox: Sandbox, load, monkeypatch: pytest.MonkeyPatch
) -> None:
    load(sandbox)
    state = remembered_state()
    state.updater = ""  # list everything in the window: more rows than the page below
    with make_client(sandbox) as client:
        whole = listings_of(client, state)
        monkeypatch.setattr(incremental, "LISTING_PAGE", 3)
        paged = listings_of(client, state)
    assert paged == whole and whole["ci"][2] > 3  # every listed row, not the first page


def test_a_plan_built_during_the_round_is_used_only_when_nothing_changed(
    shared_sandbox: Sandbox, load
) -> None:
    """The rerun builds its plan on the remembered rows while the round is on the wire; an
    edit by someone else found by the round makes it plan again from what was read."""
    load(shared_sandbox)
    shared_sandbox.set_faults({"latency_ms": 300})  # the round is surely still out
    quiet = load(shared_sandbox)
    assert events(quiet.run_id, "plan_built_ahead")
    shared_sandbox.set_faults(None)
    with someone_else(shared_sandbox) as other:
        ci = a_client_ci(other)
        other.update(ci["sys_class_name"], ci["sys_id"], {"name": "edited meanwhile"})
    shared_sandbox.set_faults({"latency_ms": 300})
    edited = load(shared_sandbox)
    shared_sandbox.set_faults(None)
    assert not events(edited.run_id, "plan_built_ahead")
    assert edited.applied["updated"] == 1  # repaired from the read, not from the old rows
    assert quiet.action_totals()["no_change"] == edited.action_totals()["no_change"] + 1
    assert quiet.applied["batches"] == 0


def test_a_write_outside_a_sealed_run_cannot_hide_behind_a_deletion(
    shared_sandbox: Sandbox,
) -> None:
    """A run that crashed created record N (our account, untouched since) and never saved the
    state; meanwhile someone else deleted remembered record X. The counts balance, so a
    listing that left our own creates out would plan N again (a duplicate) and miss X. The
    crashed run marked the state unsealed: the next run lists everything and sees both."""
    from snowkit.cmdb.apply import SyncEngine
    from snowkit.cmdb.transform import CMDBRecord, TransformResult

    from .test_apply import estate

    base = estate(sites=1, devices=2, clients=3)
    new = CMDBRecord("cmdb_ci_hardware", "cl:new", {"name": "new client"}, "client")
    grown = TransformResult(records=[*base.records, new], relationships=base.relationships)
    store = StateStore()
    with make_client(shared_sandbox) as client:
        ensure_schema(client)

        def sync(result: TransformResult) -> Any:
            engine = SyncEngine(client, state_store=store, instance_key="k", workers=2)
            return engine.sync(result, progress=False)[1]

        assert sync(base).status == "success"
        assert store.load_head("k") is not None and store.load_head("k").sealed
        # the crashed run: marked, created N, died before saving the state
        store.mark_writing("k")
        client.create("cmdb_ci_hardware", {"name": "new client", SID_FIELD: "cl:new"})
        with someone_else(shared_sandbox) as other:
            (gone,) = other.query("cmdb_ci", f"{SID_FIELD}=cl:0:2", fields=["sys_id"])
            other.delete("cmdb_ci", gone["sys_id"])
        assert not store.load_head("k").sealed
        report = sync(grown)
        assert report.status == "success", report.message
        assert report.applied["created"] == 1  # X again; N was found, not created twice
        held = [r[SID_FIELD] for r in client.query("cmdb_ci", f"{SID_FIELD}ISNOTEMPTY",
                                                     fields=[SID_FIELD])]  # fmt: skip
        assert held.count("cl:new") == 1 and held.count("cl:0:2") == 1
        assert store.load_head("k").sealed  # saved again after the seal
    store.close()


def test_many_links_made_by_others_do_not_turn_the_incremental_read_off(
    shared_sandbox: Sandbox,
) -> None:
    """The remembered link count is the whole table's: only our records may exceed
    ``max_remembered``, or a CMDB with many foreign links would be read in full every run."""
    from snowkit.cmdb.apply import SyncEngine

    from .test_apply import estate

    result = estate(sites=1, devices=2, clients=3)  # 6 records, 4 links
    store = StateStore()
    with make_client(shared_sandbox) as client:
        ensure_schema(client)

        def sync() -> list[str]:
            engine = SyncEngine(client, state_store=store, instance_key="k", workers=2,
                                max_remembered=15)  # fmt: skip
            with recorded_queries(client) as reads:
                engine.prefetch()
                assert engine.sync(result, progress=False)[1].status == "success"
            return reads

        sync()
        with someone_else(shared_sandbox) as other:  # another part of the CMDB, not ours
            cis = [other.create("cmdb_ci_hardware", {"name": f"theirs {n}"})["sys_id"]
                   for n in range(4)]  # fmt: skip
            for n in range(12):  # 12 foreign links: the table now holds 16 > 15
                other.create("cmdb_rel_ci", {"parent": cis[n % 4],
                                             "child": cis[(n + 1) % 4]})  # fmt: skip
        sync()  # takes the new link count in
        reads = sync()
        assert not [q for q in reads if q.startswith("cmdb_ci:u_unifi_source_idISNOTEMPTY")]
    store.close()


class AclHidesOne:
    """The real client, but a Batch API listing comes back one row short with its count
    unchanged: a real instance cuts the page before its ACLs hide rows."""

    def __init__(self, client: ServiceNowAPIClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def batch(self, requests: list[Any]) -> list[Any]:
        results = self._client.batch(requests)
        for result in results:
            listing = f"sysparm_limit={incremental.LISTING_PAGE}" in result.request.url
            if listing and isinstance(result.result, list) and result.result:
                del result.body["result"][0]
        return results


def test_a_batch_listing_cut_short_by_an_acl_is_read_again_with_paging(
    sandbox: Sandbox, load
) -> None:
    load(sandbox)
    state = remembered_state()
    state.updater = ""  # list everything in the window: a listing with rows in it
    with make_client(sandbox) as client:
        whole = listings_of(client, state)
        short = listings_of(AclHidesOne(client), state)
    assert whole["ci"][2] > 0 and short == whole
