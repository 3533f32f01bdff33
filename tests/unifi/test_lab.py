"""The lab generator: deterministic, realistic, scalable, with the configured flaws."""

from __future__ import annotations

import time

import pytest

from snowkit.unifi.lab import LabConfig, catalog, generate_lab
from snowkit.unifi.models.common import is_randomized_mac, normalize_mac

KNOWN_CODES = {
    m.code
    for group in (catalog.GATEWAYS, catalog.SWITCHES, catalog.ACCESS_POINTS, catalog.OTHER_GEAR)
    for m in group
}


def test_same_seed_same_lab_and_different_seed_differs() -> None:
    a = generate_lab(LabConfig(seed=3))
    b = generate_lab(LabConfig(seed=3))
    c = generate_lab(LabConfig(seed=4))
    assert a.sites == b.sites and a.devices == b.devices
    assert [a.client(1, i) for i in range(40)] == [b.client(1, i) for i in range(40)]
    assert a.sites != c.sites


def test_devices_are_realistic() -> None:
    lab = generate_lab(LabConfig(sites=4, devices_per_site=10, defect_rate=0.0))
    for site in lab.sites:
        devices = lab.devices[site.index]
        assert devices[0].kind == "gateway"
        for dev in devices:
            assert dev.entry.code in KNOWN_CODES
            assert dev.mac and dev.mac[:8] in catalog.UBIQUITI_OUIS
            assert dev.serial == dev.mac.replace(":", "").upper()
            assert dev.ip.startswith(site.subnet + ".")
        assert len(site.object_id) == 24 and len(site.uuid) == 36
    assert lab.sites[0].name == "default"
    names = " ".join(d.name or "" for d in lab.all_devices()) + " ".join(s.desc for s in lab.sites)
    assert any(ord(ch) > 127 for ch in names)  # unicode names are part of the lab


def test_clients_have_vendors_uplinks_and_some_randomized_macs() -> None:
    lab = generate_lab(LabConfig(sites=1, clients_per_site=400, defect_rate=0.0))
    clients = list(lab.clients(0))
    assert len(clients) == 400
    assert any(is_randomized_mac(c.mac) for c in clients)
    assert all(normalize_mac(c.mac) == c.mac for c in clients)
    device_macs = {d.mac for d in lab.devices[0]}
    assert all(c.uplink_mac in device_macs for c in clients)
    assert {c.profile.category for c in clients} >= {"laptop", "phone", "printer", "iot"}


def test_defect_and_duplicate_rates_are_honoured() -> None:
    lab = generate_lab(
        LabConfig(sites=2, clients_per_site=2000, defect_rate=0.1, duplicate_rate=0.05)
    )
    clients = [c for s in lab.sites for c in lab.clients(s.index)]
    defects = sum(1 for c in clients if c.defect)
    duplicates = sum(1 for c in clients if c.duplicate)
    assert 0.07 * len(clients) < defects < 0.13 * len(clients)
    assert 0.03 * len(clients) < duplicates < 0.07 * len(clients)
    assert {c.defect for c in clients if c.defect} == {
        "bad_mac",
        "bad_ip",
        "missing_name_and_mac",
        "absurd_value",
    }


def test_no_defects_at_rate_zero() -> None:
    lab = generate_lab(LabConfig(sites=2, clients_per_site=300, defect_rate=0, duplicate_rate=0))
    assert not any(c.defect or c.duplicate for s in lab.sites for c in lab.clients(s.index))


def test_large_lab_is_lazy_and_fast() -> None:
    started = time.perf_counter()
    lab = generate_lab(LabConfig(sites=10, clients_per_site=10_000))
    assert time.perf_counter() - started < 1.0  # clients are not generated up front
    assert lab.total_clients == 100_000
    assert lab.client(9, 9_999) == lab.client(9, 9_999)  # random access, no prefix generated


@pytest.mark.parametrize("bad", [{"sites": 0}, {"defect_rate": 1.5}, {"duplicate_rate": -0.1}])
def test_invalid_config_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LabConfig(**bad)  # type: ignore[arg-type]
