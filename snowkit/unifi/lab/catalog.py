"""Real UniFi model codes, marketing names, device types and vendor OUIs for the lab.

Codes are the ones the local app reports in ``stat/device`` ``model`` (UDMPRO, US24P250, U7PG2,
...); ``model_name`` is what Site Manager and the Integration API call them. Client profiles use
real vendor OUIs so the CMDB class heuristics see realistic input.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelEntry:
    code: str  # stat/device "model" (Site Manager "shortname")
    model_name: str  # Site Manager "model", Integration "model"
    device_type: str  # stat/device "type"
    firmware: tuple[str, ...]
    ports: int = 0


GATEWAYS: tuple[ModelEntry, ...] = (
    ModelEntry("UDMPRO", "UDM Pro", "udm", ("4.0.21", "4.1.13", "4.3.6"), 11),
    ModelEntry("UDMPROSE", "UDM SE", "udm", ("4.1.13", "4.3.6"), 11),
    ModelEntry("UDR7", "UDR7", "udm", ("4.3.9", "4.4.6"), 5),
    ModelEntry("UCGULTRA", "UCG Ultra", "ucg", ("4.0.6", "4.1.13"), 5),
    ModelEntry("UGW3", "USG", "ugw", ("4.4.57.5578372",), 3),
    ModelEntry("UXGPRO", "UXG Pro", "uxg", ("4.0.6", "4.1.13"), 4),
)

SWITCHES: tuple[ModelEntry, ...] = (
    ModelEntry("US24P250", "USW 24 PoE", "usw", ("6.6.61.15220", "7.0.50.15613"), 26),
    ModelEntry("USMINI", "USW Flex Mini", "usw", ("2.1.6", "2.0.0.169"), 5),
    ModelEntry("US16P150", "US 16 PoE 150W", "usw", ("6.6.61.15220",), 18),
    ModelEntry("US8", "US 8", "usw", ("6.5.59.14777",), 8),
    ModelEntry("USL24P", "USW Lite 24 PoE", "usw", ("7.0.50.15613",), 24),
    ModelEntry("USL8LP", "USW Lite 8 PoE", "usw", ("7.0.50.15613",), 8),
)

ACCESS_POINTS: tuple[ModelEntry, ...] = (
    ModelEntry("UAP6MP", "U6 Pro", "uap", ("6.6.77.15402", "6.7.10.15524")),
    ModelEntry("U7PRO", "U7 Pro", "uap", ("7.0.66.16100", "7.1.10.16276")),
    ModelEntry("U7PG2", "UAP AC Pro", "uap", ("6.5.62.14801", "6.6.55.15189")),
    ModelEntry("UAL6", "U6 Lite", "uap", ("6.6.77.15402",)),
    ModelEntry("UALR6v2", "U6 LR", "uap", ("6.6.77.15402",)),
)

OTHER_GEAR: tuple[ModelEntry, ...] = (
    ModelEntry("UP1", "USP Plug", "uap", ("5.76.10",)),  # smart plug reports type "uap"
    ModelEntry("UP6", "USP Strip", "uap", ("5.76.10",)),
    ModelEntry("USPPDUP", "USP PDU Pro", "usw", ("6.6.25.15091",)),  # PDU reports type "usw"
    ModelEntry("UCKG2", "UCK G2", "uck", ("3.1.16",)),
)

UBIQUITI_OUIS: tuple[str, ...] = (
    "24:5a:4c",
    "74:ac:b9",
    "78:8a:20",
    "80:2a:a8",
    "fc:ec:da",
    "f0:9f:c2",
    "68:d7:9a",
    "b4:fb:e4",
    "e0:63:da",
    "18:e8:29",
    "70:a7:41",
    "d8:b3:70",
    "9c:05:d6",
    "ac:8b:a9",
)

SITE_NAMES: tuple[str, ...] = (
    "Zentrale Zürich",
    "Büro München",
    "東京オフィス",
    "Café Lisboa",
    "Oficina Málaga",
    "Filiale Köln",
    "Biuro Kraków",
    "Kontor Århus",
    "Bureau Genève",
    "Sede São Paulo",
)

DEVICE_NAME_STEMS: dict[str, tuple[str, ...]] = {
    "gateway": ("Gateway", "Router", "Dream Machine"),
    "switch": ("Café Switch", "Core Switch", "Switch Lager", "スイッチ 2F", "Switch Empfang"),
    "access_point": ("Büro-AP", "会議室 AP", "AP Küche", "AP Flur", "AP Lobby", "AP Étage 2"),
    "other": ("Serverschrank PDU", "Plug Kaffee", "Cloud Key"),
}


@dataclass(frozen=True, slots=True)
class ClientProfile:
    """One kind of client: vendor OUIs, hostname patterns, fingerprint ids, how it connects."""

    category: str
    vendor: str
    ouis: tuple[str, ...]
    hostnames: tuple[str, ...]  # "{n}" = a short hex tag, "{who}" = a first name
    wired_ratio: float
    randomized_mac_ratio: float
    os_name: int | None
    dev_cat: int | None
    weight: int


CLIENT_PROFILES: tuple[ClientProfile, ...] = (
    ClientProfile(
        "laptop",
        "Dell Inc.",
        ("b8:ca:3a", "d4:81:d7", "f8:bc:12"),
        ("LAPTOP-{n}", "DESKTOP-{n}"),
        0.3,
        0.0,
        1,
        1,
        14,
    ),
    ClientProfile(
        "laptop",
        "LCFC(HeFei) Electronics Technology co., ltd",
        ("54:ee:75", "e8:6a:64"),
        ("ThinkPad-{who}", "LAPTOP-{n}"),
        0.2,
        0.0,
        1,
        1,
        10,
    ),
    ClientProfile(
        "laptop",
        "Apple, Inc.",
        ("a4:83:e7", "f0:18:98", "3c:22:fb"),
        ("MacBook-Pro-von-{who}", "{who}s-MacBook-Air", "iMac-{who}"),
        0.1,
        0.1,
        24,
        1,
        10,
    ),
    ClientProfile(
        "phone",
        "Apple, Inc.",
        ("a4:83:e7", "f0:18:98"),
        ("{who}s-iPhone", "iPhone-{who}", "iPad-{who}"),
        0.0,
        0.6,
        25,
        6,
        18,
    ),
    ClientProfile(
        "phone",
        "Samsung Electronics Co.,Ltd",
        ("8c:f5:a3", "5c:e8:eb"),
        ("Galaxy-S23-{who}", "Galaxy-A54", "android-{n}"),
        0.0,
        0.6,
        56,
        6,
        14,
    ),
    ClientProfile(
        "printer", "HP Inc.", ("3c:d9:2b", "a0:d3:c1"), ("HP{n}", "NPI{n}"), 0.8, 0.0, 33, 9, 4
    ),
    ClientProfile(
        "printer", "Brother Industries, LTD.", ("30:05:5c",), ("BRN30055C{n}",), 0.7, 0.0, 33, 9, 2
    ),
    ClientProfile(
        "iot",
        "Espressif Inc.",
        ("24:0a:c4", "a4:cf:12", "84:f3:eb"),
        ("ESP_{n}", "shelly1-{n}", "tasmota-{n}"),
        0.0,
        0.0,
        None,
        51,
        10,
    ),
    ClientProfile("iot", "Signify B.V.", ("00:17:88",), ("Philips-hue",), 1.0, 0.0, None, 51, 3),
    ClientProfile(
        "iot", "Sonos, Inc.", ("5c:aa:fd", "b8:e9:37"), ("Sonos-{n}",), 0.3, 0.0, None, 8, 4
    ),
    ClientProfile(
        "server",
        "Super Micro Computer, Inc.",
        ("ac:1f:6b",),
        ("nas-{n}", "srv-{n}"),
        1.0,
        0.0,
        3,
        1,
        2,
    ),
    ClientProfile(
        "camera",
        "Hangzhou Hikvision Digital Technology Co.,Ltd.",
        ("c0:56:e3",),
        ("camera-{n}",),
        1.0,
        0.0,
        None,
        7,
        3,
    ),
)

FIRST_NAMES: tuple[str, ...] = (
    "Anna",
    "Jörg",
    "Zoë",
    "Kenji",
    "Chloé",
    "Łukasz",
    "Sören",
    "Ines",
    "Mateo",
    "Yuki",
)
