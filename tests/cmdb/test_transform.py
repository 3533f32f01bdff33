"""UniFi inventory → CMDB records, relationships, quarantine, duplicates, quality summary."""

from __future__ import annotations

import random

import structlog

from snowkit.cmdb import (
    CONNECTS_TO,
    DEPENDS_ON,
    emit_quality_events,
    quality_frame,
    transform,
)
from snowkit.unifi.models.inventory import (
    Inventory,
    InventoryClient,
    InventoryDevice,
    InventorySite,
    Provenance,
    RejectedItem,
)

NET = Provenance("network")
SM = Provenance("sitemanager")
INT = Provenance("integration")
SITE = "unifi:site:661de833b6b2463f0c20b319"
GW_MAC, SW_MAC, AP_MAC = "78:8a:20:33:44:55", "fc:ec:da:11:22:33", "80:2a:a8:00:01:02"


def _dev(mac: str, kind: str, prov: Provenance, **kw: object) -> InventoryDevice:
    return InventoryDevice(
        f"unifi:device:{mac}",
        kind,
        kw.pop("name", f"{kind} {mac[-2:]}"),
        mac,  # type: ignore[arg-type]
        site_source_id=SITE,
        provenance=prov,
        **kw,
    )  # type: ignore[arg-type]


def _estate() -> Inventory:
    inv = Inventory(provenance=[NET])
    inv.sites.append(InventorySite(SITE, "Büro Zürich", "default", "661d", None, NET))
    inv.add_device(_dev(GW_MAC, "gateway", NET, model="UDMPRO", ip="10.0.0.1"))
    inv.add_device(
        _dev(SW_MAC, "switch", NET, model="US24P250", uplink_source_id=f"unifi:device:{GW_MAC}")
    )
    inv.add_device(
        _dev(AP_MAC, "access_point", NET, model="U7PG2", uplink_source_id=f"unifi:device:{SW_MAC}")
    )
    inv.clients.append(
        InventoryClient(
            "unifi:client:b8:ca:3a:00:00:01",
            None,
            "b8:ca:3a:00:00:01",
            hostname="LAPTOP-1",
            vendor="Dell Inc.",
            site_source_id=SITE,
            uplink_source_id=f"unifi:device:{AP_MAC}",
            provenance=NET,
        )
    )
    return inv


def test_records_in_order_with_classes_and_mapped_fields() -> None:
    result = transform(_estate())
    assert [r.table for r in result.records] == [
        "cmn_location",
        "cmdb_ci_ip_router",
        "cmdb_ci_ip_switch",
        "cmdb_ci_wap_network",
        "cmdb_ci_computer",
    ]
    gateway = result.records[1]
    assert gateway.values["mac_address"] == GW_MAC
    assert gateway.values["manufacturer"] == "Ubiquiti Inc."
    assert gateway.values["model_number"] == "UDMPRO"
    assert gateway.values["u_unifi_source_id"] == f"unifi:device:{GW_MAC}"
    assert gateway.values["discovery_source"] == "UniFi"
    assert gateway.references == {"location": SITE}
    assert "location" not in gateway.values  # a reference resolved later by the sync engine
    client = result.records[-1]
    assert client.values["name"] == "LAPTOP-1"
    assert all(isinstance(v, str) for r in result.records for v in r.values.values())
    assert result.quarantined == [] and result.issues == []


def test_relationships_use_real_rel_type_names() -> None:
    rels = {
        (r.parent_source_id, r.child_source_id, r.type_name)
        for r in transform(_estate()).relationships
    }
    gw, sw, ap = (f"unifi:device:{m}" for m in (GW_MAC, SW_MAC, AP_MAC))
    assert (sw, gw, CONNECTS_TO) in rels and (ap, sw, CONNECTS_TO) in rels
    assert (sw, gw, DEPENDS_ON) in rels and (ap, gw, DEPENDS_ON) in rels
    assert ("unifi:client:b8:ca:3a:00:00:01", ap, CONNECTS_TO) in rels
    assert CONNECTS_TO == "Connects to::Connected by" and DEPENDS_ON == "Depends on::Used by"


def test_invalid_record_quarantined_with_reasons_and_its_relationships_dropped() -> None:
    inv = _estate()
    inv.access_points[0].name = "bad\x00name"
    result = transform(inv)
    (held,) = result.quarantined
    assert held.source_id == f"unifi:device:{AP_MAC}"
    assert [r.rule for r in held.reasons] == ["control_characters"]
    assert held.reasons[0].value == "bad\\x00name"
    assert all(AP_MAC not in r.parent_source_id + r.child_source_id for r in result.relationships)
    assert len(result.records) == 4  # the others go on
    # and the links it took along are named, not silently gone (the AP's uplink, the client's)
    assert result.dropped_links and all(
        AP_MAC in r.parent_source_id + r.child_source_id for r in result.dropped_links
    )
    assert ("unifi:client:b8:ca:3a:00:00:01", f"unifi:device:{AP_MAC}", CONNECTS_TO) in {
        (r.parent_source_id, r.child_source_id, r.type_name) for r in result.dropped_links
    }


def test_rejected_items_become_quarantined_with_a_reason() -> None:
    inv = Inventory()
    inv.rejected.append(
        RejectedItem(
            "network",
            "device",
            "uplink: Input should be a valid dictionary",
            {"_id": "abc", "mac": "fc:ec:da:00:00:09"},
        )
    )
    (held,) = transform(inv).quarantined
    assert held.reasons[0].rule == "unparseable" and "uplink" in held.reasons[0].message


def test_a_rejected_device_keeps_its_cis_source_id_and_an_unknown_one_is_named() -> None:
    """A rejected item had an id of its own (``unifi:device:sitemanager:<id>``): the plan took
    its CI for gone and, with retirement on, retired a device still in the network."""
    inv = Inventory()
    inv.rejected += [
        RejectedItem("sitemanager", "device", "isConsole: bad", {"mac": "AABBCCDDEEFF"}),
        RejectedItem("integration", "client", "type: bad", {"macAddress": "AA-BB-CC-00-00-09"}),
        RejectedItem("network", "device", "mac: bad", {"_id": "d9", "mac": "not-a-mac"}),
        RejectedItem("sitemanager", "host_devices", "devices: bad", {"hostId": "h1"}),
        RejectedItem("network", "site", "name: bad", {"_id": "s1"}),
    ]  # fmt: skip
    result = transform(inv)
    assert [q.source_id for q in result.quarantined][:2] == [
        "unifi:device:aa:bb:cc:dd:ee:ff",
        "unifi:client:aa:bb:cc:00:00:09",
    ]
    assert result.unidentified == ["unifi:device:network:d9", "unifi:host_devices:sitemanager:?"]


def test_an_api_id_full_of_colons_is_not_taken_for_a_mac() -> None:
    """``unifi:device:network:dev:1:2:3:4`` (no MAC) had crashed the whole transform."""
    inv = _estate()
    odd = InventoryDevice("unifi:device:network:dev:1:2:3:4", "switch", "odd", None, None,
                          "SER-1", site_source_id=SITE, provenance=NET)  # fmt: skip
    inv.add_device(odd)
    result = transform(inv)  # the others load; this one is held for its missing MAC
    assert len(result.records) == 5
    (held,) = result.quarantined
    assert held.source_id == odd.source_id and held.reasons[0].field == "mac_address"


def test_devices_sharing_a_serial_keep_their_macs_and_lose_the_serial() -> None:
    """In IRE mode the serial made them one CI: one was lost and the pair flipped each run."""
    inv = _estate()
    inv.switches[0].serial = "xxxyyyzzz"
    inv.access_points[0].serial = "XXXYYYZZZ"
    result = transform(inv)
    held = {r.source_id: r.values for r in result.records}
    for device in (inv.switches[0], inv.access_points[0]):
        assert "serial_number" not in held[device.source_id]
        assert held[device.source_id]["mac_address"] == device.mac
    issues = [i for i in result.issues if i.rule == "duplicate_serial"]
    assert len(issues) == 2 and all(i.severity == "warning" for i in issues)
    assert not result.quarantined


def test_a_link_to_a_device_the_parser_rejected_is_counted_as_dropped() -> None:
    inv = _estate()
    inv.access_points.clear()
    inv.rejected.append(RejectedItem("network", "device", "uplink: bad", {"mac": AP_MAC}))
    result = transform(inv)
    ap = f"unifi:device:{AP_MAC}"
    assert [(s.parent_source_id, s.type_name) for s in result.dropped_links] == [
        ("unifi:client:b8:ca:3a:00:00:01", CONNECTS_TO)
    ] and result.dropped_links[0].child_source_id == ap


def test_a_second_gateway_standing_in_for_a_quarantined_one_costs_no_link() -> None:
    inv = _estate()
    inv.gateways.insert(0, _dev("78:8a:20:33:44:00", "gateway", NET, name="bad\x00name"))
    result = transform(inv)
    assert len(result.quarantined) == 1 and result.dropped_links == []


def test_a_device_one_api_rejected_and_another_parsed_is_loaded_not_quarantined() -> None:
    inv = _estate()
    inv.rejected.append(RejectedItem("sitemanager", "device", "isConsole: bad", {"mac": SW_MAC}))
    result = transform(inv)
    switch = f"unifi:device:{SW_MAC}"
    assert switch in {r.source_id for r in result.records} and result.quarantined == []
    (issue,) = [i for i in result.issues if i.source_id == switch and i.rule == "unparseable"]
    assert issue.severity == "warning" and "loaded from another API" in issue.message


def test_duplicates_across_sources_resolved_to_richest_and_reported() -> None:
    a = Inventory(provenance=[SM])
    a.add_device(
        _dev(SW_MAC, "switch", SM, name="Core Switch", model="US24P250", model_name="USW 24 PoE")
    )
    b = Inventory(provenance=[NET])
    b.add_device(
        _dev(
            SW_MAC,
            "switch",
            NET,
            name="Core Switch",
            model="US24P250",
            serial="FCECDA112233",
            firmware="7.0.50",
            ip="10.0.0.2",
        )
    )
    c = Inventory(provenance=[INT])
    c.add_device(_dev(SW_MAC, "switch", INT, name="Core Switch (int)", model="USW 24 PoE"))
    result = transform(Inventory.merge(a, b, c))
    (record,) = result.records
    assert record.values["serial_number"] == "FCECDA112233"  # from the richest (network)
    assert record.values["name"] == "Core Switch"
    assert "USW 24 PoE" in record.values["short_description"]  # gap filled from Site Manager
    (dup,) = result.duplicates
    assert dup.kept_source == "network" and dup.count == 3 and dup.key == f"mac:{SW_MAC}"
    assert sorted(dup.sources) == ["integration", "network", "sitemanager"]


def test_duplicate_resolution_is_independent_of_input_order() -> None:
    def build(order: list[int]) -> Inventory:
        parts = []
        for i in order:
            prov = [NET, SM, INT][i]
            inv = Inventory(provenance=[prov])
            inv.add_device(_dev(SW_MAC, "switch", prov, name=f"name-{prov.source}", model="US8"))
            parts.append(inv)
        return Inventory.merge(*parts)

    outcomes = set()
    for _ in range(6):
        order = [0, 1, 2]
        random.shuffle(order)
        result = transform(build(order))
        outcomes.add((result.records[0].values["name"], result.duplicates[0].kept_source))
    assert outcomes == {("name-network", "network")}  # tie on richness → source priority


def test_stale_warning_travels_into_the_result() -> None:
    inv = _estate()
    inv.warnings.append("stale data: network unavailable")
    assert transform(inv).warnings == ["stale data: network unavailable"]


def test_quality_frame_and_events() -> None:
    inv = _estate()
    inv.clients.append(
        InventoryClient(
            "unifi:client:4a:29:ca:c4:41:aa", "phone", "4a:29:ca:c4:41:aa", provenance=NET
        )
    )
    inv.clients.append(InventoryClient("unifi:client:network:x", None, "zz", provenance=NET))
    result = transform(inv)
    frame = quality_frame(result)
    assert set(frame["rule"]) == {"randomized_mac", "required", "mac_format"}
    assert frame.loc[frame["rule"] == "randomized_mac", "quarantined"].tolist() == [False]
    assert frame.loc[frame["rule"] == "mac_format", "quarantined"].tolist() == [True]
    with structlog.testing.capture_logs() as logs:
        summary = emit_quality_events(result)
    issues = [e for e in logs if e["event"] == "data_quality_issue"]
    assert {e["issue_type"] for e in issues} == {"randomized_mac", "required", "mac_format"}
    assert summary["quarantined"] == 1 and any(e["event"] == "data_quality_summary" for e in logs)


def test_unknown_site_reference_is_dropped_with_a_warning() -> None:
    inv = _estate()
    inv.sites.clear()
    result = transform(inv)
    assert all("location" not in r.references for r in result.records)
    assert {i.rule for i in result.issues} == {"unknown_location"}
    assert result.quarantined == []


def test_transform_does_not_modify_the_inventory() -> None:
    a = Inventory(provenance=[SM])
    a.add_device(_dev(SW_MAC, "switch", SM, model="US8", model_name="US 8"))
    b = Inventory(provenance=[NET])
    b.add_device(_dev(SW_MAC, "switch", NET, model="US8", serial="FCECDA112233", ip="10.0.0.2"))
    merged = Inventory.merge(a, b)
    transform(merged)
    assert merged.switches[1].model_name is None  # the winner was filled on a copy


def test_a_device_also_listed_as_a_client_is_one_ci() -> None:
    """An access point a gateway also lists as a client (mesh uplink) had become two CIs."""
    inv = _estate()
    inv.clients.append(
        InventoryClient(f"unifi:client:{AP_MAC}", "AP as a client", AP_MAC, provenance=NET)
    )
    result = transform(inv)
    assert [r.source_id for r in result.records].count(f"unifi:device:{AP_MAC}") == 1
    assert f"unifi:client:{AP_MAC}" not in {r.source_id for r in result.records}
    (dup,) = result.duplicates
    assert dup.key == f"mac:{AP_MAC}" and dup.kept_source_id == f"unifi:device:{AP_MAC}"
