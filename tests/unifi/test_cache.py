"""The last-known-good cache: round trip, staleness, atomic and corrupt files."""

from __future__ import annotations

from pathlib import Path

from snowkit import paths
from snowkit.unifi.cache import LastKnownGoodCache
from snowkit.unifi.models.inventory import (
    Inventory,
    InventoryClient,
    InventoryDevice,
    InventorySite,
    Provenance,
)


def _inventory() -> Inventory:
    prov = Provenance("network", fetched_at="2026-01-01T00:00:00+00:00")
    inv = Inventory(provenance=[prov])
    inv.sites.append(InventorySite("unifi:site:1", "Büro", "default", "1", None, prov))
    inv.add_device(
        InventoryDevice(
            "unifi:device:fc:ec:da:00:00:01",
            "switch",
            "Café Switch",
            "fc:ec:da:00:00:01",
            provenance=prov,
        )
    )
    inv.clients.append(
        InventoryClient(
            "unifi:client:a4:83:e7:00:00:02", "会議室 PC", "a4:83:e7:00:00:02", provenance=prov
        )
    )
    return inv


def test_round_trip_marks_stale_with_age() -> None:
    now = [1000.0]
    cache = LastKnownGoodCache(clock=lambda: now[0])
    path = cache.save("network", _inventory())
    assert path == paths.cache_dir() / "network.json"
    now[0] = 1300.0
    cached = cache.load("network")
    assert cached is not None and cached.age_seconds == 300.0
    inv = cached.inventory
    assert inv.counts()["switches"] == 1 and inv.clients[0].name == "会議室 PC"
    assert inv.stale and inv.provenance[0].age_seconds == 300.0
    assert inv.switches[0].provenance is inv.provenance[0]


def test_missing_or_corrupt_cache_is_none(tmp_path: Path) -> None:
    cache = LastKnownGoodCache(tmp_path)
    assert cache.load("network") is None
    (tmp_path / "network.json").write_text("{not json")
    assert cache.load("network") is None


def test_save_leaves_no_temp_files(tmp_path: Path) -> None:
    cache = LastKnownGoodCache(tmp_path)
    cache.save("integration", _inventory())
    cache.save("integration", _inventory())
    assert [p.name for p in tmp_path.iterdir()] == ["integration.json"]
