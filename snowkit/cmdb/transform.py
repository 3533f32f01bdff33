"""UniFi inventory → validated CMDB records and the relationships between them.

Decisions (see also :mod:`snowkit.cmdb.classes` and :mod:`snowkit.cmdb.validation`):

- **Sites** become ``cmn_location`` rows. ``cmn_location`` is not a CI, so "device in site" is the
  CI's ``location`` reference, not a ``cmdb_rel_ci`` row; records carry it as
  ``references={"location": <site source_id>}`` for the sync engine to resolve to a sys_id.
- **Relationships** (``cmdb_rel_type`` names from the base system):
  device → its uplink device, client → its uplink AP/switch: ``Connects to::Connected by``
  (parent = the connecting CI, child = the uplink); every switch/AP/other device of a site →
  the site's gateway: ``Depends on::Used by`` (it loses connectivity when the gateway fails).
- **Model**: ``model_id`` references ``cmdb_model`` (a sys_id we do not have), so the model code
  goes to ``model_number`` and the marketing name into ``short_description``.
- **Duplicates** (same normalised MAC, else same serial; across sources or inside one): the
  record with the most filled fields wins, ties broken by source priority
  (network > integration > sitemanager) then source id; empty fields of the winner are filled
  from the others. Every resolution is reported.
- Order: locations, network gear (gateways, switches, APs, other), clients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Any

from snowkit.cmdb.classes import LOCATION, client_class, device_class
from snowkit.cmdb.validation import (
    FieldIssue,
    QuarantinedRecord,
    has_errors,
    sanitize_value,
    validate_record,
)
from snowkit.unifi.models.common import normalize_mac
from snowkit.unifi.models.inventory import (
    Inventory,
    InventoryClient,
    InventoryDevice,
    InventorySite,
    RejectedItem,
    client_source_id,
    device_source_id,
)

CONNECTS_TO = "Connects to::Connected by"
DEPENDS_ON = "Depends on::Used by"
#: every relationship type a transform can produce (read with the plan's first round)
RELATIONSHIP_TYPES = (CONNECTS_TO, DEPENDS_ON)
DISCOVERY_SOURCE = "UniFi"
SOURCE_PRIORITY: tuple[str, ...] = ("network", "integration", "sitemanager")
KIND_ORDER = {"location": 0, "gateway": 1, "switch": 2, "access_point": 3, "other": 4, "client": 5}


@dataclass(slots=True)
class CMDBRecord:
    table: str
    source_id: str
    values: dict[str, str]
    kind: str
    references: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RelationshipSpec:
    parent_source_id: str
    child_source_id: str
    type_name: str


@dataclass(frozen=True, slots=True)
class DuplicateRecord:
    """Several inputs described one thing; ``kept_source`` won, the others filled gaps."""

    key: str  # "mac:aa:bb:..." or "serial:..." or "site:..."
    kind: str
    kept_source_id: str
    kept_source: str
    sources: tuple[str, ...]  # the source API of every input, in input order
    count: int


@dataclass
class TransformResult:
    records: list[CMDBRecord] = field(default_factory=list)
    relationships: list[RelationshipSpec] = field(default_factory=list)
    issues: list[FieldIssue] = field(default_factory=list)
    quarantined: list[QuarantinedRecord] = field(default_factory=list)
    duplicates: list[DuplicateRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # from the inventory (e.g. stale data)
    #: links the inventory implies whose end was quarantined: not made, and reported
    dropped_links: list[RelationshipSpec] = field(default_factory=list)
    #: rejected devices or clients (or groups of them) no CI can be told apart from: some CI
    #: missing from this input may still be in the network, so nothing is retired this run
    unidentified: list[str] = field(default_factory=list)

    def counts_by_table(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.records:
            counts[record.table] = counts.get(record.table, 0) + 1
        return dict(sorted(counts.items()))

    def relationship_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for rel in self.relationships:
            counts[rel.type_name] = counts.get(rel.type_name, 0) + 1
        return dict(sorted(counts.items()))


# -- duplicate resolution ---------------------------------------------------------------------


def _source(item: Any) -> str:
    return item.provenance.source if item.provenance is not None else "unknown"


_GETTERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def _richness(item: Any) -> int:
    """How many fields are filled (attrgetter: this runs for every item of a 100k inventory)."""
    getter = _GETTERS.get(type(item))
    if getter is None:
        getter = _GETTERS[type(item)] = attrgetter(*item.__slots__)
    values = getter(item)
    return len(values) - values.count(None) - values.count("")


def _rank(item: Any) -> tuple[int, int, str]:
    source = _source(item)
    priority = SOURCE_PRIORITY.index(source) if source in SOURCE_PRIORITY else len(SOURCE_PRIORITY)
    return (-_richness(item), priority, str(item.native_id or ""))


def _mac_based(source_id: str, mac: str | None) -> bool:
    """Whether ``source_id`` was built from ``mac`` (``unifi:<kind>:<mac>``) rather than from
    an API's own id. Counting colons had taken ``unifi:device:network:dev:1:2:3:4`` (no MAC)
    for a MAC-based id and crashed the whole transform."""
    return bool(mac) and source_id.split(":", 2)[-1] == mac


def _dedupe_key(item: Any) -> str:
    if _mac_based(item.source_id, item.mac):
        return "mac:" + item.mac
    serial = getattr(item, "serial", None)
    if serial:
        return "serial:" + serial.upper()
    return "id:" + item.source_id


def _not_devices(clients: list[Any], devices: list[Any], result: TransformResult) -> list[Any]:
    """Clients that are not one of the devices: a UniFi device also listed as a client (an
    access point in a mesh, a switch seen by the gateway) had become a second CI. Each one
    dropped is reported as a duplicate of its device."""
    by_mac = {_dedupe_key(d): d for d in devices}
    kept: list[Any] = []
    for client in clients:
        key = _dedupe_key(client)
        device = by_mac.get(key) if key.startswith("mac:") else None
        if device is None:
            kept.append(client)
            continue
        result.duplicates.append(
            DuplicateRecord(
                key,
                "device",
                device.source_id,
                _source(device),
                (_source(device), _source(client)),
                2,
            )
        )
    return kept


def resolve_duplicates(items: Iterable[Any], kind: str) -> tuple[list[Any], list[DuplicateRecord]]:
    """One item per key (see module doc); deterministic whatever the input order."""
    groups: dict[str, list[Any]] = {}
    for item in items:
        key = _dedupe_key(item) if kind != "location" else "site:" + item.source_id
        groups.setdefault(key, []).append(item)
    kept: list[Any] = []
    duplicates: list[DuplicateRecord] = []
    for key, group in groups.items():
        if len(group) == 1:
            kept.append(group[0])
            continue
        ordered = sorted(group, key=_rank)
        winner = replace(ordered[0])  # a copy: the caller's inventory is never modified
        for other in ordered[1:]:  # fill the winner's gaps from the others, best first
            for slot in winner.__slots__:
                if slot != "provenance" and getattr(winner, slot) in (None, ""):
                    value = getattr(other, slot)
                    if value not in (None, ""):
                        setattr(winner, slot, value)
        kept.append(winner)
        duplicates.append(
            DuplicateRecord(
                key,
                kind,
                winner.source_id,
                _source(winner),
                tuple(_source(g) for g in group),
                len(group),
            )
        )
    return kept, duplicates


# -- field mapping ----------------------------------------------------------------------------


def _put(values: dict[str, str], name: str, value: Any) -> None:
    if value.__class__ is str:  # the usual case, without a call to str()
        if value:
            values[name] = value
    elif value is not None and value != "":
        values[name] = str(value)


def site_record(site: InventorySite) -> CMDBRecord:
    values: dict[str, str] = {}
    _put(values, "name", site.name or site.internal_name)
    _put(values, "u_unifi_source_id", site.source_id)
    return CMDBRecord(LOCATION, site.source_id, values, "location")


def device_record(device: InventoryDevice) -> CMDBRecord:
    values: dict[str, str] = {}
    name = device.name
    if not name and _mac_based(device.source_id, device.mac):
        name = device.mac  # ServiceNow's advice: with only a MAC, the MAC is the name
    _put(values, "name", name)
    _put(values, "mac_address", device.mac)
    _put(values, "ip_address", device.ip)
    _put(values, "serial_number", device.serial)
    _put(values, "model_number", device.model)
    label = device.model_name or device.model
    if label:
        code = f" ({device.model})" if device.model and device.model != label else ""
        values["short_description"] = f"UniFi {label}{code}"
    _put(values, "firmware_version", device.firmware)
    _put(values, "manufacturer", device.manufacturer)
    values["u_unifi_source_id"] = device.source_id
    values["discovery_source"] = DISCOVERY_SOURCE
    refs = {"location": device.site_source_id} if device.site_source_id else {}
    return CMDBRecord(device_class(device), device.source_id, values, device.kind, refs)


def client_record(client: InventoryClient) -> CMDBRecord:
    table, _reason = client_class(client)
    values: dict[str, str] = {}
    name = client.name or client.hostname
    if not name and _mac_based(client.source_id, client.mac):
        name = client.mac
    _put(values, "name", name)
    _put(values, "mac_address", client.mac)
    _put(values, "ip_address", client.ip)
    _put(values, "manufacturer", client.vendor)
    if client.hostname:
        link = "" if client.is_wired is None else (" (wired)" if client.is_wired else " (wireless)")
        values["short_description"] = f"UniFi client {client.hostname}{link}"
    values["u_unifi_source_id"] = client.source_id
    values["discovery_source"] = DISCOVERY_SOURCE
    refs = {"location": client.site_source_id} if client.site_source_id else {}
    return CMDBRecord(table, client.source_id, values, "client", refs)


#: rejected kinds that stand for devices or clients, whose CIs retirement could reach
_INVENTORY_KINDS = frozenset({"device", "client", "host_devices"})


def _rejected(item: RejectedItem) -> tuple[QuarantinedRecord, bool]:
    """The quarantined record, and whether its CI is known. A device or client with a readable
    MAC gets the source id it would have had parsed, so its CI counts as still listed; a
    different id had made the plan retire a device that is still in the network."""
    field_name, _, message = item.reason.partition(": ")
    native = item.summary.get("_id") or item.summary.get("id") or "?"
    mac = item.summary.get("mac") or item.summary.get("macAddress")
    mac = mac if isinstance(mac, str) else None
    if item.kind == "device":
        source_id = device_source_id(mac, item.source, native)
    elif item.kind == "client":
        source_id = client_source_id(mac, item.source, native)
    else:
        source_id = f"unifi:{item.kind}:{item.source}:{native}"
    issue = FieldIssue(
        source_id,
        item.kind,
        field_name if message else "item",
        sanitize_value(item.summary),
        "unparseable",
        item.reason,
        "error",
    )
    known = item.kind not in _INVENTORY_KINDS or _mac_based(source_id, normalize_mac(mac))
    return QuarantinedRecord(source_id, item.kind, [issue], dict(item.summary)), known


def _summary(record: CMDBRecord) -> dict[str, Any]:
    keys = ("name", "mac_address", "ip_address", "serial_number", "model_number")
    return {k: sanitize_value(record.values[k]) for k in keys if k in record.values}


# -- the transform ----------------------------------------------------------------------------


def transform(inventory: Inventory) -> TransformResult:
    """Records (validated, deduplicated), relationships, issues, quarantine, duplicates."""
    result = TransformResult(warnings=list(inventory.warnings))
    for rejected in inventory.rejected:
        quarantined, known = _rejected(rejected)
        result.quarantined.append(quarantined)
        if not known:
            result.unidentified.append(quarantined.source_id)
    result.issues.extend(i for q in result.quarantined for i in q.reasons)

    sites, dups = resolve_duplicates(inventory.sites, "location")
    result.duplicates.extend(dups)
    devices: list[InventoryDevice] = []
    for group in (
        inventory.gateways,
        inventory.switches,
        inventory.access_points,
        inventory.other_devices,
    ):
        devices.extend(group)
    devices, dups = resolve_duplicates(devices, "device")
    result.duplicates.extend(dups)
    clients, dups = resolve_duplicates(inventory.clients, "client")
    result.duplicates.extend(dups)
    clients = _not_devices(clients, devices, result)

    valid_ids: set[str] = set()
    records = [site_record(s) for s in sites]
    records += sorted((device_record(d) for d in devices), key=lambda r: KIND_ORDER[r.kind])
    records += [client_record(c) for c in clients]
    for record in records:
        issues = validate_record(record)
        result.issues.extend(issues)
        if has_errors(issues):
            result.quarantined.append(
                QuarantinedRecord(record.source_id, record.kind, issues, _summary(record))
            )
            continue
        location = record.references.get("location")
        if location is not None and location not in valid_ids:  # sites come first
            del record.references["location"]
            result.issues.append(
                FieldIssue(
                    record.source_id,
                    record.kind,
                    "location",
                    sanitize_value(location),
                    "unknown_location",
                    "site not in this inventory (or quarantined); loaded without a location",
                    "warning",
                )
            )
        result.records.append(record)
        valid_ids.add(record.source_id)

    _unshare_serials(result)
    _loaded_elsewhere(result, valid_ids)
    result.relationships = _relationships(devices, clients, valid_ids)
    result.dropped_links = _dropped_links(result, devices, clients, valid_ids)
    return result


def _loaded_elsewhere(result: TransformResult, valid_ids: set[str]) -> None:
    """An item one API's parser rejected but another API reported fine is loaded: keep its
    issues as warnings, not as a quarantine (the report had called a written CI quarantined)."""
    kept: list[QuarantinedRecord] = []
    for held in result.quarantined:
        if held.source_id not in valid_ids:
            kept.append(held)
            continue
        for issue in held.reasons:
            index = result.issues.index(issue)
            result.issues[index] = replace(
                issue, severity="warning", message=f"{issue.message} (loaded from another API)"
            )
    result.quarantined = kept


def _dropped_links(
    result: TransformResult,
    devices: Sequence[InventoryDevice],
    clients: Sequence[InventoryClient],
    valid_ids: set[str],
) -> list[RelationshipSpec]:
    """The links the inventory implies that a quarantined end (parsed or rejected) cost.

    A parent that has its link of a type anyway (a site's second gateway stood in for a
    quarantined first) lost nothing."""
    listed = {item.source_id for item in (*devices, *clients)}
    listed |= {held.source_id for held in result.quarantined}
    if listed <= valid_ids:  # nothing was quarantined: nothing to find
        return []
    kept = set(result.relationships)
    linked = {(spec.parent_source_id, spec.type_name) for spec in kept}
    return [
        spec
        for spec in _relationships(devices, clients, listed)
        if spec not in kept and (spec.parent_source_id, spec.type_name) not in linked
    ]


def _unshare_serials(result: TransformResult) -> None:
    """Devices that report one serial number have no usable serial: it would identify them as
    one CI (IRE's Hardware rule tries the serial first; Table-API adoption matches on it too),
    and in IRE mode one of them was lost and the pair flipped on every run. Their
    ``serial_number`` is left out, with a warning per record; the MAC still tells them apart."""
    holders: dict[str, list[CMDBRecord]] = {}
    for record in result.records:
        serial = record.values.get("serial_number", "").strip().upper()
        if serial:
            holders.setdefault(serial, []).append(record)
    for records in holders.values():
        if len(records) < 2:
            continue
        for record in records:
            shown = record.values.pop("serial_number")
            others = [r.source_id for r in records if r is not record]
            result.issues.append(
                FieldIssue(
                    record.source_id,
                    record.kind,
                    "serial_number",
                    sanitize_value(shown),
                    "duplicate_serial",
                    f"serial number also reported by {len(others)} other device(s) "
                    f"(e.g. {others[0]}); not written, so it cannot merge them",
                    "warning",
                )
            )


def _relationships(
    devices: Sequence[InventoryDevice], clients: Sequence[InventoryClient], valid: set[str]
) -> list[RelationshipSpec]:
    rels: dict[tuple[str, str, str], None] = {}  # ordered set
    gateway_of_site: dict[str, str] = {}
    for device in devices:
        if device.kind == "gateway" and device.source_id in valid and device.site_source_id:
            gateway_of_site.setdefault(device.site_source_id, device.source_id)
    for device in devices:
        if device.source_id not in valid:
            continue
        uplink = device.uplink_source_id
        if uplink and uplink in valid and uplink != device.source_id:
            rels[(device.source_id, uplink, CONNECTS_TO)] = None
        gateway = gateway_of_site.get(device.site_source_id or "")
        if device.kind != "gateway" and gateway and gateway != device.source_id:
            rels[(device.source_id, gateway, DEPENDS_ON)] = None
    for client in clients:
        uplink = client.uplink_source_id
        if client.source_id in valid and uplink and uplink in valid:
            rels[(client.source_id, uplink, CONNECTS_TO)] = None
    return [RelationshipSpec(*key) for key in rels]
