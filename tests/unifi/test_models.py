"""API models and normalisation, against the real sample payloads when they are present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snowkit.cli.inventory import build_inventory, detect, read_files
from snowkit.unifi.models import sitemanager as sm
from snowkit.unifi.models.common import is_randomized_mac, normalize_mac
from snowkit.unifi.models.inventory import Provenance, classify_device
from snowkit.unifi.models.network import Envelope, NetworkClient
from snowkit.unifi.models.normalize import from_integration, from_network, from_sitemanager

from .conftest import SAMPLES

SAMPLE_FILES = sorted(SAMPLES.glob("*.json")) if SAMPLES.is_dir() else []
needs_samples = pytest.mark.skipif(not SAMPLE_FILES, reason="../shared reference samples absent")


@needs_samples
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_every_sample_file_parses_without_rejects(path: Path) -> None:
    kind, items = detect(json.loads(path.read_text()))
    saved = read_files([path])
    inventory = build_inventory(saved)
    assert items, f"{path.name} detected as {kind} but no items"
    assert inventory.rejected == []
    api = kind.split(".")[0]
    assert {p.source for p in inventory.provenance} == {api}


@needs_samples
def test_all_samples_together_give_expected_inventory() -> None:
    inventory = build_inventory(read_files(SAMPLE_FILES))
    counts = inventory.counts()
    assert counts["rejected"] == 0
    assert counts["gateways"] >= 3 and counts["switches"] >= 4 and counts["clients"] >= 4
    macs = [d.mac for d in inventory.devices()]
    assert all(m == normalize_mac(m) for m in macs)


@needs_samples
def test_sitemanager_quirks_null_reported_state_and_empty_timestamps() -> None:
    ucore = json.loads((SAMPLES / "sitemanager_v1_hosts_ucore.json").read_text())["data"][0]
    host = sm.Host.model_validate(ucore)
    assert host.reportedState is None and host.display_name is None
    assert host.registrationTime is None  # absent
    console = sm.Host.model_validate({**ucore, "registrationTime": "", "latestBackupTime": ""})
    assert console.registrationTime is None and console.latestBackupTime is None


def test_site_manager_devices_map_to_site_of_their_host_and_serial_from_host() -> None:
    hosts = [
        {
            "id": "H1",
            "reportedState": {"hardware": {"mac": "F4E2C6C23F13", "serialno": "f4e2c6c23f13"}},
        }
    ]
    sites = [
        {
            "siteId": "661de833b6b2463f0c20b319",
            "hostId": "H1",
            "meta": {"name": "default", "desc": "Büro"},
        }
    ]
    devices = [
        {
            "hostId": "H1",
            "devices": [
                {
                    "id": "F4E2C6C23F13",
                    "mac": "F4E2C6C23F13",
                    "model": "UDM SE",
                    "shortname": "UDMPROSE",
                },
                {
                    "id": "AABBCCDDEEF0",
                    "mac": "AABBCCDDEEF0",
                    "model": "USW Flex Mini",
                    "shortname": "USMINI",
                },
            ],
        }
    ]
    inv = from_sitemanager(hosts, sites, devices, Provenance("sitemanager"))
    gateway, switch = inv.gateways[0], inv.switches[0]
    assert gateway.source_id == "unifi:device:f4:e2:c6:c2:3f:13"
    assert gateway.serial == "F4E2C6C23F13"
    assert switch.site_source_id == gateway.site_source_id == "unifi:site:661de833b6b2463f0c20b319"
    assert inv.sites[0].name == "Büro"


def test_site_manager_places_no_device_on_a_guessed_site_and_loads_network_gear_only() -> None:
    """/v1/devices names no site: every device of a two-site console had gone to its default
    site; a Protect camera listed there had become Network Gear."""
    sites = [
        {"siteId": "S1", "hostId": "H1", "meta": {"name": "default", "desc": "HQ"}},
        {"siteId": "S2", "hostId": "H1", "meta": {"name": "branch", "desc": "Branch"}},
    ]
    devices = [
        {
            "hostId": "H1",
            "devices": [
                {"id": "F4E2C6C23F13", "mac": "F4E2C6C23F13", "shortname": "USMINI",
                 "productLine": "network"},
                {"id": "AABBCCDDEEF0", "mac": "AABBCCDDEEF0", "model": "G4 Doorbell Pro",
                 "shortname": "UVCG4DBPRO", "productLine": "protect"},
            ],
        }
    ]  # fmt: skip
    inv = from_sitemanager([{"id": "H1"}], sites, devices, Provenance("sitemanager"))
    [switch] = list(inv.devices())
    assert switch.site_source_id is None
    assert any("has 2 sites" in w for w in inv.warnings)
    assert any("1 protect device(s)" in w for w in inv.warnings)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("F4E2C6C23F13", "f4:e2:c6:c2:3f:13"),
        ("f4:e2:c6:c2:3f:13", "f4:e2:c6:c2:3f:13"),
        ("F4-E2-C6-C2-3F-13", "f4:e2:c6:c2:3f:13"),
        ("f4e2.c6c2.3f13", "f4:e2:c6:c2:3f:13"),
        ("zz:zz:zz:00:11:22", None),
        ("12345", None),
        (None, None),
        (123, None),
    ],
)
def test_normalize_mac(raw: object, expected: str | None) -> None:
    assert normalize_mac(raw) == expected


def test_randomized_mac_detection() -> None:
    assert is_randomized_mac("4a:29:ca:c4:41:aa")
    assert is_randomized_mac("2e:83:d8:77:fe:3f")
    assert not is_randomized_mac("fc:ec:da:11:22:33")


@pytest.mark.parametrize(
    ("device_type", "model", "features", "name", "kind"),
    [
        ("uap", "UP1", (), None, "other"),  # plug reports uap
        ("usw", "USPPDUP", (), None, "other"),  # PDU reports usw
        ("udm", "UDMPRO", (), None, "gateway"),
        ("ugw", "UGW3", (), None, "gateway"),
        ("usw", "US24P250", (), None, "switch"),
        ("uap", "U7PG2", (), None, "access_point"),
        (None, "UDR7", ("switching", "accessPoint"), "UDR7", "gateway"),
        (None, "USW Flex Mini", ("switching",), "USW Flex Mini", "switch"),
        (None, "U6 Pro", ("accessPoint",), "U6 Pro", "access_point"),
        (None, "USMINI", (), "USW Flex Mini", "switch"),
        (None, "UDMPROSE", (), "UDM SE", "gateway"),
    ],
)
def test_classify_device(device_type, model, features, name, kind) -> None:  # type: ignore[no-untyped-def]
    assert classify_device(device_type, model, features, name) == kind


def test_network_envelope_rc_case_insensitive_and_error() -> None:
    assert Envelope.model_validate({"meta": {"rc": "OK"}, "data": []}).meta.ok
    err = Envelope.model_validate({"meta": {"rc": "error", "msg": "api.err.LoginRequired"}})
    assert not err.meta.ok and err.meta.msg == "api.err.LoginRequired"


def test_stat_sta_object_id_is_not_taken_for_a_mac() -> None:
    client = {"_id": "5a32b0c9e4b047ede36a85cd", "hostname": "x"}
    inv = from_network([], [], [client], Provenance("network"))
    assert inv.clients[0].mac is None
    assert NetworkClient.model_validate({"id": "4a:29:ca:c4:41:aa"}).id == "4a:29:ca:c4:41:aa"


def test_bad_items_are_rejected_with_reason_and_others_kept() -> None:
    devices = [
        {"_id": "a", "mac": "fc:ec:da:11:22:33", "type": "usw", "model": "US8"},
        "not an object",
        {"_id": "b", "mac": "fc:ec:da:11:22:34", "uplink": "bad"},
    ]
    inv = from_network([], devices, [], Provenance("network"))
    assert len(inv.switches) == 1
    reasons = [r.reason for r in inv.rejected]
    assert reasons[0] == "not a JSON object" and reasons[1].startswith("uplink")


def test_integration_uplinks_resolve_device_uuid_to_mac() -> None:
    devices = [
        {
            "id": "dev-1",
            "macAddress": "AA:BB:CC:00:00:01",
            "model": "U6 Pro",
            "features": ["accessPoint"],
        }
    ]
    clients = [
        {
            "id": "c1",
            "macAddress": "a4:83:e7:00:00:02",
            "uplinkDeviceId": "dev-1",
            "type": "WIRELESS",
        }
    ]
    inv = from_integration(
        [{"id": "s1", "internalReference": "default", "name": "Default"}],
        {"s1": devices},
        {"s1": clients},
        Provenance("integration"),
    )
    assert inv.clients[0].uplink_source_id == "unifi:device:aa:bb:cc:00:00:01"
    assert inv.clients[0].is_wired is False
    assert inv.access_points[0].site_source_id == "unifi:site:s1"
    # a marketing name is no model code: described, not put in model_number
    ap = inv.access_points[0]
    assert (ap.model, ap.model_name) == (None, "U6 Pro")
