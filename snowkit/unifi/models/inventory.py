"""The normalised inventory every collector returns and the CMDB transform consumes.

Items are slotted dataclasses rather than pydantic models: a lab of 100,000 clients must fit in
a few hundred MB, and the items are built from already-validated API models. One
``Provenance`` object is shared by all items of one collection.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

UBIQUITI = "Ubiquiti Inc."

DeviceKind = Literal["gateway", "switch", "access_point", "other"]

GATEWAY_TYPES = frozenset({"ugw", "udm", "uxg", "ucg"})
# Model codes and marketing-name prefixes of routing consoles (Dream Machine/Router, Cloud and
# Next-gen Gateways, the old USG).
GATEWAY_MODEL_PREFIXES = ("UDM", "UDR", "UCG", "UXG", "UGW", "UDW", "USG", "UX7", "UX")
GATEWAY_NAME_WORDS = ("dream machine", "dream router", "cloud gateway", "gateway", "udm ", "ucg ")
# Smart plugs/strips report type "uap" and PDUs type "usw": they are neither AP nor switch.
PLUG_MODELS = frozenset({"UP1", "UP6", "USP PLUG", "USP STRIP", "USPPLUG", "USPSTRIP"})
PDU_MODEL_PREFIXES = ("USPPDU", "USPRPS", "USP PDU", "USP-PDU", "USP RPS")
SWITCH_MODEL_PREFIXES = ("US", "USW", "USL", "USM", "USF", "USC")
AP_MODEL_PREFIXES = ("U6", "U7", "UAP", "UAL", "UAE", "UAM", "UK", "E7", "U5", "UWB", "UBB")


def is_plug_or_pdu(model: str | None) -> bool:
    code = (model or "").strip().upper()
    return code in PLUG_MODELS or code.startswith(PDU_MODEL_PREFIXES)


def classify_device(
    device_type: str | None = None,
    model: str | None = None,
    features: Iterable[str] = (),
    model_name: str | None = None,
) -> DeviceKind:
    """Gateway, switch, access point or other, from whatever the API told us.

    The legacy ``type`` is the most reliable; model codes come next (plugs say ``uap``, PDUs
    ``usw``, a UDR7 has switching and access-point features but is a router).
    """
    code = (model or "").strip().upper()
    name = (model_name or "").strip().lower()
    kind_type = (device_type or "").strip().lower()
    feats = {f.lower() for f in features}
    if is_plug_or_pdu(code) or is_plug_or_pdu(model_name):
        return "other"
    if kind_type in GATEWAY_TYPES or code.startswith(GATEWAY_MODEL_PREFIXES):
        return "gateway"
    if "gateway" in feats or "routing" in feats:
        return "gateway"
    if kind_type == "usw":
        return "switch"
    if kind_type == "uap":
        return "access_point"
    if kind_type:
        return "other"
    if any(word in f" {name} " for word in GATEWAY_NAME_WORDS):
        return "gateway"
    if "accesspoint" in feats:
        return "access_point"
    if "switching" in feats:
        return "switch"
    if code.startswith(AP_MODEL_PREFIXES):
        return "access_point"
    if code.startswith(SWITCH_MODEL_PREFIXES):
        return "switch"
    return "other"


def device_source_id(mac: str | None, api: str, native_id: Any) -> str:
    """``unifi:device:<mac>``; devices without a readable MAC keep an API-scoped id."""
    from snowkit.unifi.models.common import normalize_mac

    normal = normalize_mac(mac)
    if normal:
        return f"unifi:device:{normal}"
    return f"unifi:device:{api}:{native_id}"


def client_source_id(mac: str | None, api: str, native_id: Any) -> str:
    from snowkit.unifi.models.common import normalize_mac

    normal = normalize_mac(mac)
    if normal:
        return f"unifi:client:{normal}"
    return f"unifi:client:{api}:{native_id}"


def site_source_id(site_id: Any) -> str:
    return f"unifi:site:{site_id}"


@dataclass(slots=True)
class Provenance:
    """Where a collection came from and how old it is."""

    source: str
    fetched_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    stale: bool = False
    age_seconds: float = 0.0

    def as_stale(self, age_seconds: float) -> Provenance:
        return Provenance(self.source, self.fetched_at, True, round(age_seconds, 3))


@dataclass(slots=True)
class InventorySite:
    source_id: str
    name: str | None
    internal_name: str | None = None
    native_id: str | None = None
    host_id: str | None = None
    provenance: Provenance | None = None

    kind: str = "site"


@dataclass(slots=True)
class InventoryDevice:
    source_id: str
    kind: DeviceKind
    name: str | None
    mac: str | None
    ip: str | None = None
    serial: str | None = None
    model: str | None = None
    model_name: str | None = None
    firmware: str | None = None
    device_type: str | None = None
    site_source_id: str | None = None
    uplink_source_id: str | None = None
    native_id: str | None = None
    manufacturer: str = UBIQUITI
    provenance: Provenance | None = None


@dataclass(slots=True)
class InventoryClient:
    source_id: str
    name: str | None
    mac: str | None
    ip: str | None = None
    hostname: str | None = None
    vendor: str | None = None
    is_wired: bool | None = None
    os_name: str | None = None
    device_category: str | None = None
    site_source_id: str | None = None
    uplink_source_id: str | None = None
    native_id: str | None = None
    provenance: Provenance | None = None

    kind: str = "client"


@dataclass(slots=True)
class RejectedItem:
    """An API item that could not even be parsed; the transform quarantines it with the reason."""

    source: str
    kind: str
    reason: str
    summary: dict[str, Any] = field(default_factory=dict)


_DEVICE_LISTS = {
    "gateway": "gateways",
    "switch": "switches",
    "access_point": "access_points",
    "other": "other_devices",
}


@dataclass
class Inventory:
    """Sites, network gear and clients from one or several UniFi sources."""

    sites: list[InventorySite] = field(default_factory=list)
    gateways: list[InventoryDevice] = field(default_factory=list)
    switches: list[InventoryDevice] = field(default_factory=list)
    access_points: list[InventoryDevice] = field(default_factory=list)
    other_devices: list[InventoryDevice] = field(default_factory=list)
    clients: list[InventoryClient] = field(default_factory=list)
    rejected: list[RejectedItem] = field(default_factory=list)
    provenance: list[Provenance] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add_device(self, device: InventoryDevice) -> None:
        getattr(self, _DEVICE_LISTS[device.kind]).append(device)

    def devices(self) -> Iterator[InventoryDevice]:
        yield from self.gateways
        yield from self.switches
        yield from self.access_points
        yield from self.other_devices

    @property
    def stale(self) -> bool:
        return any(p.stale for p in self.provenance)

    def counts(self) -> dict[str, int]:
        return {
            "sites": len(self.sites),
            "gateways": len(self.gateways),
            "switches": len(self.switches),
            "access_points": len(self.access_points),
            "other_devices": len(self.other_devices),
            "clients": len(self.clients),
            "rejected": len(self.rejected),
        }

    def absorb(self, other: Inventory) -> None:
        """Append another part of the *same* collection (not its provenance)."""
        self.sites.extend(other.sites)
        for device in other.devices():
            self.add_device(device)
        self.clients.extend(other.clients)
        self.rejected.extend(other.rejected)
        self.warnings.extend(other.warnings)

    @classmethod
    def merge(cls, *inventories: Inventory) -> Inventory:
        """One inventory from several sources; duplicates are kept for the transform to resolve.

        Integration API sites have UUIDs; when exactly one site of another source has the same
        short name (``internalReference`` = legacy ``name``), the UUID site is folded into it and
        references are rewritten, as the reference recommends.
        """
        merged = cls()
        for inv in inventories:
            merged.sites.extend(inv.sites)
            for device in inv.devices():
                merged.add_device(device)
            merged.clients.extend(inv.clients)
            merged.rejected.extend(inv.rejected)
            merged.provenance.extend(inv.provenance)
            merged.warnings.extend(inv.warnings)
        merged._fold_integration_sites()
        return merged

    def _fold_integration_sites(self) -> None:
        by_name: dict[str, set[str]] = {}
        for site in self.sites:
            if site.provenance is None or site.provenance.source != "integration":
                by_name.setdefault(site.internal_name or "", set()).add(site.source_id)
        alias: dict[str, str] = {}
        kept: list[InventorySite] = []
        for site in self.sites:
            is_integration = site.provenance is not None and site.provenance.source == "integration"
            targets = by_name.get(site.internal_name or "", set()) if is_integration else set()
            if len(targets) == 1:
                alias[site.source_id] = next(iter(targets))
            else:
                kept.append(site)
        if not alias:
            return
        self.sites = kept
        for item in [*self.devices(), *self.clients]:
            if item.site_source_id in alias:
                item.site_source_id = alias[item.site_source_id]

    # -- persistence (last-known-good cache) -------------------------------------------
    def to_jsonable(self) -> dict[str, Any]:
        """Lists of dataclasses, for ``orjson.dumps`` (which serialises them natively and fast)."""
        return {
            "provenance": self.provenance,
            "warnings": self.warnings,
            "sites": self.sites,
            "devices": list(self.devices()),
            "clients": self.clients,
            "rejected": self.rejected,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts (slow for big inventories; the cache uses :meth:`to_jsonable`)."""
        data = self.to_jsonable()
        return {
            key: [asdict(x) for x in value] if key != "warnings" else list(value)
            for key, value in data.items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Inventory:
        provenance = [Provenance(**p) for p in data.get("provenance", [])]
        shared = provenance[0] if provenance else None
        inv = cls(provenance=provenance, warnings=list(data.get("warnings", [])))

        def build(kind: type, raw: dict[str, Any]) -> Any:
            names = {f.name for f in fields(kind)} - {"provenance"}
            return kind(**{k: v for k, v in raw.items() if k in names}, provenance=shared)

        inv.sites = [build(InventorySite, s) for s in data.get("sites", [])]
        for raw in data.get("devices", []):
            inv.add_device(build(InventoryDevice, raw))
        inv.clients = [build(InventoryClient, c) for c in data.get("clients", [])]
        inv.rejected = [RejectedItem(**r) for r in data.get("rejected", [])]
        return inv
