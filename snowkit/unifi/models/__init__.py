"""Pydantic models of the three UniFi APIs and the normalised inventory."""

from snowkit.unifi.models.common import is_randomized_mac, normalize_mac
from snowkit.unifi.models.inventory import (
    UBIQUITI,
    Inventory,
    InventoryClient,
    InventoryDevice,
    InventorySite,
    Provenance,
    RejectedItem,
    classify_device,
)

__all__ = [
    "UBIQUITI",
    "Inventory",
    "InventoryClient",
    "InventoryDevice",
    "InventorySite",
    "Provenance",
    "RejectedItem",
    "classify_device",
    "is_randomized_mac",
    "normalize_mac",
]
