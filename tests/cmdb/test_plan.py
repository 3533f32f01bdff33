"""The planner: matching by source id, hardware identification, diffs, not-seen and retire."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from snowkit.cmdb.apply import dependency_phases
from snowkit.cmdb.plan import (
    CREATE,
    NO_CHANGE,
    NOT_SEEN,
    RETIRE,
    SOURCE_ID_FIELD,
    UPDATE,
    CMDBSnapshot,
    build_plan,
)


@dataclass
class Rec:
    table: str
    source_id: str
    values: dict[str, str]
    kind: str = "device"
    references: dict[str, str] = field(default_factory=dict)


def row(sys_id: str, source_id: str = "", **values: str) -> dict[str, str]:
    out = {"sys_id": sys_id, **values}
    if source_id:
        out[SOURCE_ID_FIELD] = source_id
    return out


SWITCH = Rec(
    "cmdb_ci_ip_switch",
    "dev:aa",
    {"name": "sw-1", "serial_number": "S1", "mac_address": "aa:bb:cc:00:00:01"},
    references={"location": "site:1"},
)
SITE = Rec("cmn_location", "site:1", {"name": "HQ"}, kind="site")


def test_empty_cmdb_plans_creates_with_all_fields() -> None:
    plan = build_plan([SITE, SWITCH], CMDBSnapshot())
    assert [i.action for i in plan.items] == [CREATE, CREATE]
    switch = plan.items[1]
    assert switch.values == SWITCH.values
    assert switch.references == {"location": "site:1"}
    frame = plan.frame
    assert list(frame.columns)[:5] == ["source_id", "table", "action", "changed_fields", "sys_id"]
    assert frame.loc[1, "changed_fields"] == "location,mac_address,name,serial_number"


def test_source_id_match_with_same_values_is_no_change() -> None:
    snap = CMDBSnapshot(
        rows={
            "site:1": row("L1", "site:1", name="HQ", sys_class_name="cmn_location"),
            "dev:aa": row(
                "C1",
                "dev:aa",
                name="sw-1",
                serial_number="S1",
                mac_address="aa:bb:cc:00:00:01",
                location="L1",
                sys_class_name="cmdb_ci_ip_switch",
            ),
        }
    )
    plan = build_plan([SITE, SWITCH], snap)
    assert plan.counts()[NO_CHANGE] == 2
    assert plan.writes == []


def test_update_carries_only_changed_fields_and_before_image() -> None:
    snap = CMDBSnapshot(
        rows={
            "dev:aa": row(
                "C1",
                "dev:aa",
                name="old-name",
                serial_number="S1",
                mac_address="aa:bb:cc:00:00:01",
                location="L1",
            ),
            "site:1": row("L1", "site:1", name="HQ"),
        }
    )
    plan = build_plan([SITE, SWITCH], snap)
    item = next(i for i in plan.items if i.source_id == "dev:aa")
    assert item.action == UPDATE
    assert item.values == {"name": "sw-1"}
    assert item.before == {"name": "old-name"}
    assert item.references == {}  # location already points at L1


def test_reference_pointing_elsewhere_is_an_update() -> None:
    snap = CMDBSnapshot(
        rows={
            "dev:aa": row("C1", "dev:aa", location="OTHER", **dict(SWITCH.values)),
            "site:1": row("L1", "site:1", name="HQ"),
        }
    )
    plan = build_plan([SITE, SWITCH], snap)
    item = next(i for i in plan.items if i.source_id == "dev:aa")
    assert item.action == UPDATE
    assert item.references == {"location": "site:1"}
    assert item.before == {"location": "OTHER"}


def test_hardware_identification_order_adopts_existing_ci() -> None:
    # a CI discovered by someone else: same serial, no source id → adopt, don't duplicate
    candidates = [
        row("X1", name="other", serial_number="S1"),
        row("X2", name="sw-1", serial_number="ZZZ"),
    ]
    plan = build_plan([SWITCH], CMDBSnapshot(candidates=candidates))
    item = plan.items[0]
    assert item.action == UPDATE
    assert item.sys_id == "X1"
    assert item.matched_by == "serial_number"
    assert item.values[SOURCE_ID_FIELD] == "dev:aa"
    assert item.values["name"] == "sw-1"


def test_ambiguous_serial_falls_through_to_name_then_mac() -> None:
    candidates = [
        row("X1", serial_number="S1"),
        row("X2", serial_number="S1"),
        row("X3", mac_address="AA-BB-CC-00-00-01"),
    ]
    plan = build_plan([SWITCH], CMDBSnapshot(candidates=candidates))
    assert plan.items[0].sys_id == "X3"
    assert plan.items[0].matched_by == "mac_address"


def test_a_candidate_is_adopted_only_once() -> None:
    twin = Rec("cmdb_ci_ip_switch", "dev:bb", {"name": "sw-1"})
    plan = build_plan([SWITCH, twin], CMDBSnapshot(candidates=[row("X2", name="sw-1")]))
    assert [i.action for i in plan.items] == [UPDATE, CREATE]


def test_location_adopted_by_name() -> None:
    snap = CMDBSnapshot(locations_by_name={"HQ": row("L9", name="HQ")})
    plan = build_plan([SITE], snap)
    assert plan.items[0].action == UPDATE
    assert plan.items[0].sys_id == "L9"
    assert plan.items[0].values == {SOURCE_ID_FIELD: "site:1"}


SITE = Rec("cmn_location", "site:1", {"name": "HQ"})


def gone(source_id: str, location: str = "L1", **values: str) -> dict[str, str]:
    """A CI the CMDB holds at ``location`` (a sys_id) that the input no longer lists."""
    return row("G" + source_id, source_id, sys_class_name="cmdb_ci_netgear", location=location,
               **values)  # fmt: skip


def retiring(snap: CMDBSnapshot, records: list, **kw: object) -> dict[str, str]:
    now = datetime(2026, 1, 10, tzinfo=UTC)
    missed = {sid: (now - timedelta(days=8)).isoformat() for sid in snap.rows}
    plan = build_plan(records, snap, retire_after_days=7, not_seen_since=missed, now=now, **kw)
    return {i.source_id: i.action for i in plan.items if i.source_id != "site:1"}


def test_not_seen_reported_and_retired_only_after_grace_period() -> None:
    site = row("L1", "site:1", sys_class_name="cmn_location", name="HQ")
    snap = CMDBSnapshot(rows={"site:1": site, "dev:gone": gone("dev:gone")})
    now = datetime(2026, 1, 10, tzinfo=UTC)
    plan = build_plan([SITE], snap, now=now)
    assert plan.items[-1].action == NOT_SEEN
    recent = {"dev:gone": (now - timedelta(days=1)).isoformat()}
    plan = build_plan([SITE], snap, retire_after_days=7, not_seen_since=recent, now=now)
    assert plan.items[-1].action == NOT_SEEN
    old = {"dev:gone": (now - timedelta(days=8)).isoformat()}
    plan = build_plan([SITE], snap, retire_after_days=7, not_seen_since=old, now=now)
    assert plan.items[-1].action == RETIRE
    assert plan.items[-1].values == {"operational_status": "6", "install_status": "7"}


def test_only_a_ci_at_a_site_of_this_input_is_retired_and_never_one_still_listed() -> None:
    """Another console's CIs (another site) had been retired by this console's load, and a
    CI the source still lists but the transform quarantined had been retired as unseen."""
    site = row("L1", "site:1", sys_class_name="cmn_location", name="HQ")
    snap = CMDBSnapshot(rows={
        "site:1": site, "dev:here": gone("dev:here"), "dev:elsewhere": gone("dev:elsewhere", "L9"),
        "dev:nowhere": gone("dev:nowhere", ""), "dev:bad": gone("dev:bad"),
    })  # fmt: skip
    actions = retiring(snap, [SITE], present={"dev:bad"})
    assert actions == {"dev:here": RETIRE, "dev:elsewhere": NOT_SEEN, "dev:nowhere": NOT_SEEN}


def test_a_retired_ci_listed_again_is_back_in_service() -> None:
    rec = Rec("cmdb_ci_ip_switch", "dev:aa", dict(SWITCH.values))
    held = row("C1", "dev:aa", sys_class_name="cmdb_ci_ip_switch", operational_status="6",
               install_status="7", **SWITCH.values)  # fmt: skip
    [item] = build_plan([rec], CMDBSnapshot(rows={"dev:aa": held})).items
    assert item.action == UPDATE
    assert item.values == {"operational_status": "1", "install_status": "1"}
    assert item.before == {"operational_status": "6", "install_status": "7"}


def test_class_change_is_noted_not_written() -> None:
    snap = CMDBSnapshot(
        rows={"dev:aa": row("C1", "dev:aa", sys_class_name="cmdb_ci_netgear", **SWITCH.values)}
    )
    rec = Rec("cmdb_ci_ip_switch", "dev:aa", dict(SWITCH.values))
    plan = build_plan([rec], snap)
    assert plan.items[0].action == NO_CHANGE
    assert plan.items[0].class_change == "cmdb_ci_netgear"
    assert any("another class" in n for n in plan.notes)


def test_fields_the_instance_does_not_return_are_not_diffed_but_noted() -> None:
    rec = Rec("cmdb_ci_wap_network", "dev:ap", {"name": "ap", "channel": "6"})
    snap = CMDBSnapshot(
        rows={"dev:ap": row("A1", "dev:ap", name="ap", sys_class_name="cmdb_ci")},
        partial_tables={"cmdb_ci_wap_network"},
    )
    plan = build_plan([rec], snap)
    assert plan.items[0].action == NO_CHANGE
    assert any("channel" in n for n in plan.notes)


def test_dependency_phases_put_locations_then_gear_then_clients() -> None:
    client = Rec("cmdb_ci_computer", "cl:1", {"name": "c"}, kind="client")
    ap = Rec("cmdb_ci_wap_network", "dev:ap", {"name": "ap"}, references={"location": "site:1"})
    # a client referencing the AP comes after it even if listed first
    client.references = {"u_connected_to": "dev:ap"}
    plan = build_plan([client, ap, SITE], CMDBSnapshot())
    phases = dependency_phases(plan.writes)
    assert [[i.source_id for i in p] for p in phases] == [["site:1"], ["dev:ap"], ["cl:1"]]


@given(
    st.dictionaries(
        st.sampled_from(["name", "serial_number", "ip_address", "model_number"]),
        st.text(max_size=5),
    ),
    st.dictionaries(
        st.sampled_from(["name", "serial_number", "ip_address", "model_number"]),
        st.text(max_size=5),
    ),
)
def test_update_values_are_exactly_the_differing_fields(
    wanted: dict[str, str], held: dict[str, str]
) -> None:
    rec = Rec("cmdb_ci_netgear", "d", wanted)
    # the instance returns every requested column that exists, empty or not
    full = {f: held.get(f, "") for f in ("name", "serial_number", "ip_address", "model_number")}
    snap = CMDBSnapshot(rows={"d": row("S", "d", **full)})
    item = build_plan([rec], snap).items[0]
    expected = {k: v for k, v in wanted.items() if held.get(k, "") != v}
    assert item.values == expected
    assert item.action == (UPDATE if expected else NO_CHANGE)
