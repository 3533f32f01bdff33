"""Which CMDB class (table) each UniFi object goes to, and why.

Devices: gateway → IP Router, switch → IP Switch, access point → Wireless Access Point, anything
else (plugs, PDUs, Cloud Keys) → Network Gear. Smart plugs/strips report ``type: uap`` and PDUs
``type: usw``, so the model code overrides the type.

Clients become ``cmdb_ci_computer`` only when they are clearly a computer, otherwise
``cmdb_ci_hardware``. "Clearly" means one of (first match wins, see :func:`client_class`):

1. the hostname looks like a phone, tablet, printer, camera or IoT gadget → hardware;
2. the hostname looks like a computer (``LAPTOP-…``, ``DESKTOP-…``, ``MacBook…``, ``iMac…``,
   ``ThinkPad…``, ``…-PC``, ``nas-``/``srv-``/``server``) → computer;
3. the OUI vendor only makes computers (Dell, Lenovo/LCFC, Super Micro, ...) → computer;
4. otherwise → hardware (a phone with a randomised MAC must not become a computer).

Apple, Samsung and HP are deliberately not in rule 3: they sell phones and printers too.
"""

from __future__ import annotations

import re

from snowkit.unifi.models.inventory import InventoryClient, InventoryDevice, is_plug_or_pdu

LOCATION = "cmn_location"
ROUTER = "cmdb_ci_ip_router"
SWITCH = "cmdb_ci_ip_switch"
ACCESS_POINT = "cmdb_ci_wap_network"
NETGEAR = "cmdb_ci_netgear"
COMPUTER = "cmdb_ci_computer"
HARDWARE = "cmdb_ci_hardware"

DEVICE_TABLES = {
    "gateway": ROUTER,
    "switch": SWITCH,
    "access_point": ACCESS_POINT,
    "other": NETGEAR,
}
#: Every CI class table the transform can produce (probed before the inventory is in).
ALL_CLASS_TABLES = frozenset({*DEVICE_TABLES.values(), COMPUTER, HARDWARE})

_NOT_COMPUTER_HOST = re.compile(
    r"iphone|ipad|galaxy|android|phone|watch|printer|^hp[0-9a-f]{6}|^npi|^brn|^brw|camera"
    r"|^esp[_-]|shelly|tasmota|sonos|chromecast",
    re.IGNORECASE,
)
#: Short names of phones and gadgets, matched only as whole words of a host name: as
#: substrings they made computers of "DESKTOP-7TVQ2K1", "srv-echo01", "Google-Pixelbook".
_NOT_COMPUTER_WORDS = frozenset({"tv", "hue", "echo", "pixel"})
#: A host name's words: runs of letters split at case changes ("LivingRoomTV" → Living, Room,
#: TV), apart from digits and punctuation.
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")
#: Names Windows and admins give computers: they win over any word in them.
_COMPUTER_PREFIX = re.compile(r"^(laptop|desktop|win|pc|ws|srv|nas)-", re.IGNORECASE)
_COMPUTER_HOST = re.compile(
    r"macbook|imac|mac-?mini|mac-?studio|thinkpad|latitude|"
    r"elitebook|-pc$|server|workstation|ubuntu|debian|fedora",
    re.IGNORECASE,
)
COMPUTER_ONLY_VENDORS = (
    "dell",
    "lcfc",
    "lenovo",
    "super micro",
    "asustek",
    "micro-star",
    "framework",
    "synology",
    "qnap",
    "intel corporate",
)


def device_class(device: InventoryDevice) -> str:
    if is_plug_or_pdu(device.model) or is_plug_or_pdu(device.model_name):
        return NETGEAR
    return DEVICE_TABLES.get(device.kind, NETGEAR)


def client_class(client: InventoryClient) -> tuple[str, str]:
    """``(table, reason)``; the reason is kept for the plan/report."""
    host = client.hostname or client.name or ""
    if host and _COMPUTER_PREFIX.search(host):
        return COMPUTER, "hostname suggests a computer"
    if host and (
        _NOT_COMPUTER_HOST.search(host)
        or _NOT_COMPUTER_WORDS.intersection(w.lower() for w in _WORDS.findall(host))
    ):
        return HARDWARE, "hostname suggests a phone/printer/IoT device"
    if host and _COMPUTER_HOST.search(host):
        return COMPUTER, "hostname suggests a computer"
    vendor = (client.vendor or "").lower()
    if vendor and any(word in vendor for word in COMPUTER_ONLY_VENDORS):
        return COMPUTER, "vendor only makes computers"
    return HARDWARE, "not clearly a computer"
