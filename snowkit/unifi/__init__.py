"""UniFi side of snowkit: API models, collectors, the last-known-good cache and the lab."""

from snowkit.unifi.cache import LastKnownGoodCache
from snowkit.unifi.collectors import (
    IntegrationCollector,
    NetworkAppCollector,
    SiteManagerCollector,
    SourceUnavailableError,
)
from snowkit.unifi.lab import Lab, LabConfig, generate_lab, lab_app
from snowkit.unifi.models import (
    Inventory,
    InventoryClient,
    InventoryDevice,
    InventorySite,
    Provenance,
    normalize_mac,
)

__all__ = [
    "IntegrationCollector",
    "Inventory",
    "InventoryClient",
    "InventoryDevice",
    "InventorySite",
    "Lab",
    "LabConfig",
    "LastKnownGoodCache",
    "NetworkAppCollector",
    "Provenance",
    "SiteManagerCollector",
    "SourceUnavailableError",
    "generate_lab",
    "lab_app",
    "normalize_mac",
]
