"""Map parsed API payloads to the normalised :class:`Inventory`, one function per API.

Every item is parsed on its own: an item that does not fit the model becomes a
:class:`RejectedItem` with the reason, and the rest of the collection goes on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from snowkit.unifi.models import integration as im
from snowkit.unifi.models import network as nm
from snowkit.unifi.models import sitemanager as sm
from snowkit.unifi.models.common import mac_or_raw, normalize_mac
from snowkit.unifi.models.inventory import (
    Inventory,
    InventoryClient,
    InventoryDevice,
    InventorySite,
    Provenance,
    RejectedItem,
    classify_device,
    client_source_id,
    device_source_id,
    site_source_id,
)

M = TypeVar("M", bound=BaseModel)

_SUMMARY_KEYS = ("id", "_id", "mac", "macAddress", "name", "siteId", "hostId", "model", "type")


def summarize(raw: Any) -> dict[str, Any]:
    """A few identifying fields of a raw item, for quarantine reports (never the whole item)."""
    if not isinstance(raw, dict):
        return {"value": repr(raw)[:80]}
    return {
        k: repr(raw[k])[:80] if not isinstance(raw[k], str) else raw[k][:80]
        for k in _SUMMARY_KEYS
        if k in raw
    }


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "item"
    return f"{where}: {err.get('msg', 'invalid')}"


def parse_items(
    model: type[M], items: Iterable[Any], source: str, kind: str, inv: Inventory
) -> list[M]:
    """Parse each item; unparseable ones go to ``inv.rejected`` with a reason."""
    parsed: list[M] = []
    for raw in items:
        if not isinstance(raw, dict):
            inv.rejected.append(RejectedItem(source, kind, "not a JSON object", summarize(raw)))
            continue
        try:
            parsed.append(model.model_validate(raw))
        except ValidationError as exc:
            inv.rejected.append(RejectedItem(source, kind, _first_error(exc), summarize(raw)))
    return parsed


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None


# -- Site Manager -----------------------------------------------------------------------------


def from_sitemanager(
    hosts: Iterable[Any],
    sites: Iterable[Any],
    host_devices: Iterable[Any],
    provenance: Provenance,
) -> Inventory:
    """Sites by ``siteId``; devices mapped to the site of their host; console serials from hosts.

    Hosts themselves are not inventory items: a console also appears in ``/v1/devices``
    (``isConsole``) and a ``network-server`` host is software without hardware identity.
    """
    inv = Inventory(provenance=[provenance])
    source = provenance.source
    serial_by_mac: dict[str, str] = {}
    for host in parse_items(sm.Host, hosts, source, "host", inv):
        hw = host.reportedState.hardware if host.reportedState else None
        mac = normalize_mac(hw.mac) if hw else None
        if hw and mac and hw.serialno:
            serial_by_mac[mac] = hw.serialno.upper()
    sites_of_host: dict[str, list[str]] = {}
    for site in parse_items(sm.Site, sites, source, "site", inv):
        meta = site.meta or sm.SiteMeta()
        sid = site_source_id(site.siteId)
        inv.sites.append(
            InventorySite(
                sid,
                _text(meta.desc) or _text(meta.name),
                meta.name,
                site.siteId,
                site.hostId,
                provenance,
            )
        )
        if site.hostId:
            sites_of_host.setdefault(site.hostId, []).append(sid)
    other_lines: dict[str, int] = {}
    for group in parse_items(sm.HostDevices, host_devices, source, "host_devices", inv):
        # /v1/devices names no site: a console's only site, else none (not a guess at its
        # "default" site, which had placed every device of a multi-site console there)
        on_host = sites_of_host.get(group.hostId or "", [])
        site_id = on_host[0] if len(on_host) == 1 else None
        if len(on_host) > 1 and group.devices:
            inv.warnings.append(
                f"Site Manager: console {group.hostId} has {len(on_host)} sites and does not "
                "say which one a device is at: its devices are loaded without a location "
                "(collect that console with the Network application API to place them)"
            )
        for device in parse_items(sm.Device, group.devices, source, "device", inv):
            line = (device.productLine or "network").lower()
            if line != "network":  # Protect, Access, Talk...: not network gear
                other_lines[line] = other_lines.get(line, 0) + 1
                continue
            mac = normalize_mac(device.mac or device.id)
            kind = classify_device(None, device.shortname, (), device.model)
            inv.add_device(
                InventoryDevice(
                    source_id=device_source_id(mac, "sitemanager", device.id),
                    kind=kind,
                    name=_text(device.name),
                    mac=mac or mac_or_raw(device.mac),
                    ip=_text(device.ip),
                    serial=serial_by_mac.get(mac or ""),
                    model=_text(device.shortname),
                    model_name=_text(device.model),
                    firmware=_text(device.version),
                    site_source_id=site_id,
                    native_id=device.id,
                    provenance=provenance,
                )
            )
    if other_lines:
        listed = ", ".join(f"{n} {line}" for line, n in sorted(other_lines.items()))
        inv.warnings.append(
            f"Site Manager: {listed} device(s) of other UniFi product lines than network are "
            "not network gear and were not loaded"
        )
    return inv


# -- local Network application ----------------------------------------------------------------


def from_network(
    sites: Iterable[Any],
    devices: Iterable[Any],
    clients: Iterable[Any],
    provenance: Provenance,
    site_id_by_name: dict[str, str] | None = None,
) -> Inventory:
    """``self/sites`` + ``stat/device`` + ``stat/sta`` (or v2 client history) of one console.

    ``site_id_by_name`` supplies the site ``_id`` for items that lack ``site_id`` (the collector
    knows which site it asked about).
    """
    inv = Inventory(provenance=[provenance])
    source = provenance.source
    for site in parse_items(nm.NetworkSite, sites, source, "site", inv):
        inv.sites.append(
            InventorySite(
                site_source_id(site.id),
                _text(site.desc) or _text(site.name),
                site.name,
                site.id,
                None,
                provenance,
            )
        )
    fallback_site = None
    if site_id_by_name and len(site_id_by_name) == 1:
        fallback_site = next(iter(site_id_by_name.values()))
    for device in parse_items(nm.NetworkDevice, devices, source, "device", inv):
        mac = normalize_mac(device.mac)
        kind = classify_device(device.type, device.model)
        ip = device.ip
        if kind == "gateway":  # `ip` is the WAN side; the LAN side is what the CMDB knows
            ip = device.lan_ip or device.connect_request_ip or device.ip
        uplink = normalize_mac(device.uplink_mac)
        site = device.site_id or fallback_site
        inv.add_device(
            InventoryDevice(
                source_id=device_source_id(mac, "network", device.id),
                kind=kind,
                name=_text(device.name),
                mac=mac or mac_or_raw(device.mac),
                ip=_text(ip),
                serial=_text(device.serial),
                model=_text(device.model),
                firmware=_text(device.version),
                device_type=device.type,
                site_source_id=site_source_id(site) if site else None,
                uplink_source_id=f"unifi:device:{uplink}" if uplink else None,
                native_id=device.id,
                provenance=provenance,
            )
        )
    for client in parse_items(nm.NetworkClient, clients, source, "client", inv):
        raw_mac = client.mac or (client.id if normalize_mac(client.id) else None)
        mac = normalize_mac(raw_mac)
        uplink = normalize_mac(client.uplink_mac)
        site = client.site_id or fallback_site
        inv.clients.append(
            InventoryClient(
                source_id=client_source_id(mac, "network", client.id),
                name=_text(client.name) or _text(client.display_name),
                mac=mac or mac_or_raw(raw_mac),
                ip=_text(client.ip) or _text(client.last_ip),
                hostname=_text(client.hostname),
                vendor=_text(client.oui),
                is_wired=client.is_wired,
                os_name=_text(client.os_name),
                device_category=_text(client.dev_cat),
                site_source_id=site_source_id(site) if site else None,
                uplink_source_id=f"unifi:device:{uplink}" if uplink else None,
                native_id=client.id,
                provenance=provenance,
            )
        )
    return inv


# -- Integration API --------------------------------------------------------------------------


def from_integration(
    sites: Iterable[Any],
    devices_by_site: dict[str | None, list[Any]],
    clients_by_site: dict[str | None, list[Any]],
    provenance: Provenance,
) -> Inventory:
    """Sites by UUID (folded into legacy sites by ``Inventory.merge``); uplinks via device UUIDs.

    A ``None`` site key holds items whose site is unknown (e.g. a saved page read by the CLI).
    """
    inv = Inventory(provenance=[provenance])
    source = provenance.source
    for site in parse_items(im.IntegrationSite, sites, source, "site", inv):
        inv.sites.append(
            InventorySite(
                site_source_id(site.id),
                _text(site.name),
                site.internalReference,
                site.id,
                None,
                provenance,
            )
        )
    mac_by_device_id: dict[str, str] = {}
    for site_id, raw_devices in devices_by_site.items():
        for device in parse_items(im.IntegrationDevice, raw_devices, source, "device", inv):
            mac = normalize_mac(device.macAddress)
            if mac and device.id:
                mac_by_device_id[device.id] = mac
            uplink_id = (device.uplink or {}).get("deviceId")
            inv.add_device(
                InventoryDevice(
                    source_id=device_source_id(mac, "integration", device.id),
                    kind=classify_device(None, device.model, device.feature_names, device.model),
                    name=_text(device.name),
                    mac=mac or mac_or_raw(device.macAddress),
                    ip=_text(device.ipAddress),
                    # the Integration API names the model ("USW Flex Mini"), never its code
                    # ("USMINI"): the name goes to the description, model_number stays for a
                    # code (it had held the name, then flipped once another API gave the code)
                    model=None,
                    model_name=_text(device.model),
                    firmware=_text(device.firmwareVersion),
                    site_source_id=site_source_id(site_id) if site_id else None,
                    uplink_source_id=str(uplink_id) if uplink_id else None,
                    native_id=device.id,
                    provenance=provenance,
                )
            )
    for device in inv.devices():  # uplinks were device UUIDs; now that all are known, resolve
        if device.uplink_source_id and not device.uplink_source_id.startswith("unifi:"):
            mac = mac_by_device_id.get(device.uplink_source_id)
            device.uplink_source_id = f"unifi:device:{mac}" if mac else None
    for site_id, raw_clients in clients_by_site.items():
        for client in parse_items(im.IntegrationClient, raw_clients, source, "client", inv):
            mac = normalize_mac(client.macAddress)
            uplink_mac = mac_by_device_id.get(client.uplinkDeviceId or "")
            inv.clients.append(
                InventoryClient(
                    source_id=client_source_id(mac, "integration", client.id),
                    name=_text(client.name),
                    mac=mac or mac_or_raw(client.macAddress),
                    ip=_text(client.ipAddress),
                    is_wired=None if client.type is None else client.type.upper() == "WIRED",
                    site_source_id=site_source_id(site_id) if site_id else None,
                    uplink_source_id=f"unifi:device:{uplink_mac}" if uplink_mac else None,
                    native_id=client.id,
                    provenance=provenance,
                )
            )
    return inv
