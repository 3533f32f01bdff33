"""Plans made without the field-by-field diff, and when they may stand in for it.

- A run that left the CMDB exactly as its input wants it remembers the input's digest; the
  same input against an unchanged CMDB is then planned without a field compared or a link
  decided.
- A first run plans for an empty CMDB while its first round is out; that plan stands only if
  the reads find nothing at all.

Black-box against the embedded instance (the whole job, and the engine with a state store),
plus properties of the digest and of the quick plan itself.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snowkit.cmdb import incremental
from snowkit.cmdb import plan as planning
from snowkit.cmdb.apply import SyncEngine
from snowkit.cmdb.state import StateStore
from snowkit.cmdb.transform import (
    RELATIONSHIP_TYPES,
    CMDBRecord,
    RelationshipSpec,
    TransformResult,
)
from snowkit.sandbox import Sandbox
from snowkit.servicenow import ServiceNowAPIClient

from .test_apply import SID, estate
from .test_incremental import events, remembered_state, requests_to, writes_sent


@pytest.fixture
def diffs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per ``build_plan`` call (the field-by-field diff)."""
    calls: list[int] = []
    real = planning.build_plan

    def counting(*a: Any, **kw: Any) -> Any:
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(planning, "build_plan", counting)
    return calls


def test_the_same_input_again_is_planned_without_a_diff(
    sandbox: Sandbox, load_lab: Any, diffs: list[int]
) -> None:
    first = load_lab(sandbox)
    assert first.status == "success" and remembered_state().input_digest
    diffs.clear()
    again = load_lab(sandbox)
    assert diffs == []
    (event,) = events(again.run_id, "plan_built_ahead")
    assert event["same_input"] is True
    assert again.action_totals()["no_change"] == first.action_totals()["create"]
    rel = again.relationships
    assert rel.existing == rel.wanted == first.relationships.created and rel.created == 0
    assert writes_sent(again.run_id) == 0
    assert remembered_state().input_digest  # kept for the next run


def test_a_changed_cmdb_is_diffed_even_with_the_same_input(
    sandbox: Sandbox, load_lab: Any, client: ServiceNowAPIClient, diffs: list[int]
) -> None:
    load_lab(sandbox)
    (ci,) = list(client.query("cmdb_ci", f"{SID}ISNOTEMPTY", fields=["sys_id", "sys_class_name"],
                              limit=1))  # fmt: skip
    client.update(ci["sys_class_name"], ci["sys_id"], {"name": "renamed by hand"})
    diffs.clear()
    again = load_lab(sandbox)
    assert diffs and again.applied["updated"] == 1


def test_a_first_load_into_an_empty_cmdb_uses_the_plan_made_during_its_first_round(
    sandbox: Sandbox, load_lab: Any
) -> None:
    sandbox.set_faults({"latency_ms": 200})  # the first round is surely still out
    first = load_lab(sandbox)
    sandbox.set_faults(None)
    (event,) = events(first.run_id, "plan_built_ahead")
    assert event["empty_cmdb"] is True
    assert first.status == "success" and first.applied["created"] == first.action_totals()["create"]


def test_a_first_load_reads_the_relationship_types_in_its_first_round(
    sandbox: Sandbox, load_lab: Any
) -> None:
    """Read later, the types took two GETs that held slots the first writes wanted."""
    first = load_lab(sandbox)
    assert first.status == "success" and first.relationships.created > 0
    assert requests_to(first.run_id, "cmdb_rel_type") == 0
    assert sorted(remembered_state().rel_type_ids) == sorted(RELATIONSHIP_TYPES)


def test_without_a_remembered_state_a_cmdb_that_holds_records_is_read_not_assumed_empty(
    sandbox: Sandbox, load_lab: Any
) -> None:
    first = load_lab(sandbox)
    with StateStore() as store:  # as on another machine: no state, the CMDB full
        for (key,) in store._conn.execute("SELECT DISTINCT instance FROM meta").fetchall():
            store.forget(key)
    sandbox.set_faults({"latency_ms": 200})
    again = load_lab(sandbox)
    sandbox.set_faults(None)
    assert not events(again.run_id, "plan_built_ahead")
    assert again.action_totals()["create"] == 0
    assert again.action_totals()["no_change"] == first.action_totals()["create"]
    assert again.applied["batches"] == 0


def test_a_relationship_type_made_again_under_another_id_is_not_taken_as_there(
    sandbox: Sandbox, load_lab: Any, client: ServiceNowAPIClient
) -> None:
    """The links made with the old type are not the links this input wants: with the same
    input and no link changed, the rerun must still decide the links and make them again."""
    first = load_lab(sandbox)
    name = "Connects to::Connected by"
    (old,) = list(client.query("cmdb_rel_type", f"name={name}", fields=["sys_id"]))
    uses = len(list(client.query("cmdb_rel_ci", f"type={old['sys_id']}", fields=["sys_id"])))
    client.delete("cmdb_rel_type", old["sys_id"])
    client.create("cmdb_rel_type", {"name": name, "parent_descriptor": "Connects to",
                                    "child_descriptor": "Connected by"})  # fmt: skip
    again = load_lab(sandbox)
    assert uses > 0 and again.relationships.created == uses
    assert again.relationships.wanted == first.relationships.created


def _engine(client: ServiceNowAPIClient, store: StateStore) -> SyncEngine:
    return SyncEngine(client, batch_size=5, workers=2, state_store=store, instance_key="k")


def test_a_run_that_left_something_undone_keeps_no_digest(
    client: ServiceNowAPIClient, diffs: list[int]
) -> None:
    """An orphan link (its end is nowhere) would be reported again by the next run: the
    quick plan, which reports every link as there, must not stand in for it."""
    result = estate(sites=1, devices=2, clients=2)
    orphan = RelationshipSpec("dev:0:0", "dev:nowhere", "Connects to::Connected by")
    result = TransformResult(result.records, [*result.relationships, orphan])
    with StateStore() as store:
        _plan, first = _engine(client, store).sync(result, progress=False)
        assert first.relationships.orphans == 1
        assert store.load("k") is not None and store.load("k").input_digest == ""  # type: ignore[union-attr]
        diffs.clear()
        _plan, again = _engine(client, store).sync(result, progress=False)
    assert diffs  # planned field by field, as always
    assert again.relationships.orphans == 1


def test_a_different_input_is_diffed(client: ServiceNowAPIClient, diffs: list[int]) -> None:
    result = estate(sites=1, devices=2, clients=2)
    with StateStore() as store:
        _engine(client, store).sync(result, progress=False)
        assert store.load("k").input_digest  # type: ignore[union-attr]
        changed = [replace(r, values={**r.values, "ip_address": "10.9.9.9"})
                   if r.source_id == "dev:0:1" else r for r in result.records]  # fmt: skip
        diffs.clear()
        plan, report = _engine(client, store).sync(
            TransformResult(changed, result.relationships), progress=False
        )
    assert diffs and plan.counts()["update"] == 1 and report.applied["updated"] == 1


# -- the digest and the quick plan ------------------------------------------------------------

_TEXT = st.text(alphabet="abc:.-1", max_size=6)


def _record(table: str, sid: str, values: dict[str, str], kind: str, refs: dict[str, str]) -> Any:
    return CMDBRecord(table, sid, values, kind, refs)


_RECORDS = st.lists(
    st.builds(
        _record,
        st.sampled_from(["cmdb_ci_ip_switch", "cmn_location", "cmdb_ci_computer"]),
        _TEXT,
        st.dictionaries(st.sampled_from(["name", "ip_address", "serial_number"]), _TEXT),
        st.sampled_from(["switch", "client", "location"]),
        st.dictionaries(st.just("location"), _TEXT),
    ),
    max_size=4,
)
_LINKS = st.lists(st.builds(RelationshipSpec, _TEXT, _TEXT, _TEXT), max_size=3)


@given(a=_RECORDS, b=_RECORDS, la=_LINKS, lb=_LINKS)
def test_the_digest_tells_inputs_apart(
    a: list[Any], b: list[Any], la: list[Any], lb: list[Any]
) -> None:
    same = [(r.table, r.source_id, r.kind, r.values, r.references) for r in a] == [
        (r.table, r.source_id, r.kind, r.values, r.references) for r in b
    ] and la == lb
    assert (incremental.input_digest(a, la) == incremental.input_digest(b, lb)) == same


def test_the_digest_ignores_the_order_values_were_set_in() -> None:
    one = [CMDBRecord("cmdb_ci", "a", {"name": "x", "ip_address": "1"}, "client")]
    two = [CMDBRecord("cmdb_ci", "a", {"ip_address": "1", "name": "x"}, "client")]
    assert incremental.input_digest(one, []) == incremental.input_digest(two, [])


def test_the_quick_plan_is_what_the_diff_plans_for_an_input_the_rows_satisfy() -> None:
    result = estate(sites=2, devices=3, clients=3)
    ids = {r.source_id: f"{n:032x}" for n, r in enumerate(result.records)}
    rows = [
        {**r.values, SID: r.source_id, "sys_id": ids[r.source_id], "sys_class_name": r.table,
         **{f: ids[t] for f, t in r.references.items()}}
        for r in result.records
    ]  # fmt: skip
    snapshot = planning.snapshot_from_rows({row["sys_id"]: row for row in rows}, (), result.records)
    diffed = planning.build_plan(result.records, snapshot, relationships=result.relationships)
    quick = planning.unchanged_plan(result.records, rows, result.relationships)
    assert quick is not None
    assert quick.items == diffed.items
    assert quick.sys_ids == diffed.sys_ids and quick.notes == diffed.notes == []
    # a row short, or one too many (a CI not seen): no quick plan
    assert planning.unchanged_plan(result.records, rows[1:], result.relationships) is None
    extra = {**rows[0], SID: "dev:gone", "sys_id": "f" * 32}
    assert planning.unchanged_plan(result.records, [*rows, extra], result.relationships) is None
