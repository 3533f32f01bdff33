"""A deterministic generator of realistic UniFi inventories at any size.

Sites and network gear are small and built eagerly; clients are built on demand from a seed
derived from ``(seed, site, index)``, so a lab of 100,000 clients costs no memory until a page is
served, any page can be served without generating the ones before it, and the same seed always
gives the same lab. Defects (bad MAC/IP, missing name and MAC, empty serial, absurd values) and
duplicates are part of the entities so every API shows the same flaw.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

from snowkit.unifi.lab import catalog
from snowkit.unifi.lab.catalog import ClientProfile, ModelEntry

DEFECTS = ("bad_mac", "bad_ip", "missing_name_and_mac", "empty_serial", "absurd_value")
CLIENT_DEFECTS = tuple(d for d in DEFECTS if d != "empty_serial")  # clients have no serial
_CLIENT_WEIGHTS = [p.weight for p in catalog.CLIENT_PROFILES]


@dataclass(frozen=True)
class LabConfig:
    sites: int = 3
    devices_per_site: int = 8
    clients_per_site: int = 40
    seed: int = 7
    defect_rate: float = 0.02
    duplicate_rate: float = 0.01

    def __post_init__(self) -> None:
        if self.sites < 1 or self.devices_per_site < 1 or self.clients_per_site < 0:
            raise ValueError("a lab needs at least one site with one device (the gateway)")
        if not (0 <= self.defect_rate <= 1 and 0 <= self.duplicate_rate <= 1):
            raise ValueError("defect_rate and duplicate_rate are fractions between 0 and 1")


@dataclass(slots=True)
class LabSite:
    index: int
    object_id: str  # legacy _id == Site Manager siteId (24 hex)
    uuid: str  # Integration API id
    name: str  # legacy short name ("default", ...) == Integration internalReference
    desc: str
    host_id: str
    timezone: str
    subnet: str  # "10.<n>" prefix of the site's /16


@dataclass(slots=True)
class LabDevice:
    site_index: int
    index: int
    kind: str
    entry: ModelEntry
    mac: str | None
    serial: str
    name: str | None
    ip: str
    firmware: str
    object_id: str
    uuid: str
    uplink_mac: str | None = None
    defect: str | None = None
    duplicate: bool = False


@dataclass(slots=True)
class LabClient:
    site_index: int
    index: int
    profile: ClientProfile
    mac: str | None
    hostname: str | None
    name: str
    ip: str
    is_wired: bool
    uplink_mac: str | None
    object_id: str
    uuid: str
    defect: str | None = None
    duplicate: bool = False


def _mac(rng: random.Random, oui: str) -> str:
    return oui + "".join(f":{rng.randrange(256):02x}" for _ in range(3))


def _randomized_mac(rng: random.Random) -> str:
    first = (rng.randrange(256) & 0xFC) | 0x02  # locally administered, unicast
    return f"{first:02x}" + "".join(f":{rng.randrange(256):02x}" for _ in range(5))


def _object_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(96):024x}"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _apply_defect(rng: random.Random, defect: str, record: dict[str, object]) -> None:
    if defect == "bad_mac":
        record["mac"] = rng.choice(("zz:zz:zz:00:11:22", "12345", "00:11:22:33:44", "ff" * 7))
    elif defect == "bad_ip":
        record["ip"] = rng.choice(("999.1.2.3", "10.0.0", "not-an-ip", "10.1.2.3.4"))
    elif defect == "missing_name_and_mac":
        record["mac"] = None
        record["name"] = None
        record["hostname"] = None
    elif defect == "empty_serial":
        record["serial"] = ""
    elif defect == "absurd_value":
        record["name"] = rng.choice(("X" * 400, "evil\x00name\x07", "tab\tand\nnewline"))


@dataclass
class Lab:
    """A generated UniFi estate: sites, their gear, and (lazily) their clients."""

    config: LabConfig
    sites: list[LabSite] = field(default_factory=list)
    devices: dict[int, list[LabDevice]] = field(default_factory=dict)

    def client_count(self, site_index: int) -> int:
        return self.config.clients_per_site

    @property
    def total_clients(self) -> int:
        return self.config.clients_per_site * len(self.sites)

    def all_devices(self) -> Iterator[LabDevice]:
        for site in self.sites:
            yield from self.devices[site.index]

    @cached_property
    def _uplinks(self) -> dict[int, tuple[list[str], list[str]]]:
        """Per site: (AP MACs, switch-or-gateway MACs) that clients attach to."""
        result = {}
        for site in self.sites:
            gear = [d for d in self.devices[site.index] if d.mac and d.defect is None]
            aps = [d.mac for d in gear if d.kind == "access_point"]
            wired = [d.mac for d in gear if d.kind in ("switch", "gateway")]
            result[site.index] = (aps or wired, wired)  # type: ignore[misc]
        return result

    def client(self, site_index: int, index: int) -> LabClient:
        """The client ``index`` of a site; the same arguments always give the same client."""
        cfg = self.config
        rng = random.Random((cfg.seed << 48) ^ (site_index << 28) ^ (index + 1) ^ 0x5EED)
        profile = rng.choices(catalog.CLIENT_PROFILES, _CLIENT_WEIGHTS)[0]
        tag = f"{rng.getrandbits(24):06X}"
        who = rng.choice(catalog.FIRST_NAMES)
        if rng.random() < profile.randomized_mac_ratio:
            mac: str | None = _randomized_mac(rng)
        else:
            mac = _mac(rng, rng.choice(profile.ouis))
        hostname = rng.choice(profile.hostnames).format(n=tag, who=who)
        if rng.random() < 0.1:
            hostname = None  # some clients never send a DHCP hostname
        is_wired = rng.random() < profile.wired_ratio
        aps, wired = self._uplinks[site_index]
        pool = wired if is_wired else aps
        uplink = pool[index % len(pool)] if pool else None
        host = index + 20
        site = self.sites[site_index]
        record: dict[str, object] = {
            "mac": mac,
            "hostname": hostname,
            "name": f"{who}s Laptop" if rng.random() < 0.05 else "",
            "ip": f"{site.subnet}.{(host // 254) % 254 + 1}.{host % 254 + 1}",
        }
        defect = rng.choice(CLIENT_DEFECTS) if rng.random() < cfg.defect_rate else None
        if defect:
            _apply_defect(rng, defect, record)
        return LabClient(
            site_index,
            index,
            profile,
            record["mac"],
            record["hostname"],  # type: ignore[arg-type]
            record["name"] or "",
            str(record["ip"]),
            is_wired,
            uplink,
            _object_id(rng),  # type: ignore[arg-type]
            _uuid(rng),
            defect,
            rng.random() < cfg.duplicate_rate,
        )

    def clients(
        self, site_index: int, start: int = 0, stop: int | None = None
    ) -> Iterator[LabClient]:
        end = (
            self.client_count(site_index)
            if stop is None
            else min(stop, self.client_count(site_index))
        )
        for i in range(start, end):
            yield self.client(site_index, i)


def _site_name(rng: random.Random, index: int) -> str:
    if index == 0:
        return "default"
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))


def _device_kind(index: int) -> str:
    if index == 0:
        return "gateway"
    if index % 8 == 7:
        return "other"
    if index % 4 == 1:
        return "switch"
    return "access_point"


_POOLS = {
    "gateway": catalog.GATEWAYS,
    "switch": catalog.SWITCHES,
    "access_point": catalog.ACCESS_POINTS,
    "other": catalog.OTHER_GEAR,
}


def generate_lab(config: LabConfig | None = None) -> Lab:
    """Build a lab; deterministic in ``config.seed``."""
    config = config or LabConfig()
    rng = random.Random(config.seed)
    lab = Lab(config)
    names = catalog.SITE_NAMES
    for s in range(config.sites):
        desc = names[s % len(names)] + (f" {s // len(names) + 1}" if s >= len(names) else "")
        gateway_mac_hex = f"{rng.getrandbits(48):012X}"
        host_id = f"{gateway_mac_hex}{rng.getrandbits(160):040X}:{rng.randrange(10**9):09d}"
        site = LabSite(
            s,
            _object_id(rng),
            _uuid(rng),
            _site_name(rng, s),
            desc,
            host_id,
            rng.choice(("Europe/Zurich", "Europe/Berlin", "Asia/Tokyo", "Europe/Lisbon")),
            f"10.{s % 256}",
        )
        lab.sites.append(site)
        devices: list[LabDevice] = []
        for d in range(config.devices_per_site):
            kind = _device_kind(d)
            entry = rng.choice(_POOLS[kind])
            mac = _mac(rng, rng.choice(catalog.UBIQUITI_OUIS))
            stems = catalog.DEVICE_NAME_STEMS[kind]
            record: dict[str, object] = {
                "mac": mac,
                "name": f"{stems[d % len(stems)]} {d}" if d else f"{stems[0]} {desc}",
                "ip": f"{site.subnet}.0.{d + 1}",
                "serial": mac.replace(":", "").upper(),  # observed: serial == MAC hex
            }
            defect = None
            if d > 0 and rng.random() < config.defect_rate:  # keep every site's gateway sound
                defect = rng.choice(DEFECTS)
                _apply_defect(rng, defect, record)
            devices.append(
                LabDevice(
                    s,
                    d,
                    kind,
                    entry,
                    record["mac"],
                    str(record["serial"]),  # type: ignore[arg-type]
                    record["name"],
                    str(record["ip"]),
                    rng.choice(entry.firmware),  # type: ignore[arg-type]
                    _object_id(rng),
                    _uuid(rng),
                    defect=defect,
                    duplicate=rng.random() < config.duplicate_rate,
                )
            )
        gateway = devices[0].mac
        switches = [d.mac for d in devices if d.kind == "switch" and d.mac]
        for dev in devices[1:]:
            if dev.kind == "switch" or not switches:
                dev.uplink_mac = gateway
            else:
                dev.uplink_mac = switches[dev.index % len(switches)]
        lab.devices[s] = devices
    return lab
