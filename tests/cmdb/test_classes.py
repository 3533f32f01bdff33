"""CMDB class selection for UniFi gear and clients."""

from __future__ import annotations

import pytest

from snowkit.cmdb.classes import (
    ACCESS_POINT,
    COMPUTER,
    HARDWARE,
    NETGEAR,
    ROUTER,
    SWITCH,
    client_class,
    device_class,
)
from snowkit.unifi.models.inventory import InventoryClient, InventoryDevice, classify_device


def _device(device_type: str | None, model: str) -> InventoryDevice:
    kind = classify_device(device_type, model)
    return InventoryDevice(f"unifi:device:{model}", kind, "x", "fc:ec:da:00:00:01", model=model)


@pytest.mark.parametrize(
    ("device_type", "model", "table"),
    [
        ("udm", "UDMPRO", ROUTER),
        ("ugw", "UGW3", ROUTER),
        ("ucg", "UCGULTRA", ROUTER),
        ("usw", "US24P250", SWITCH),
        ("usw", "USMINI", SWITCH),
        ("usw", "USPPDUP", NETGEAR),  # PDU reports usw
        ("uap", "UAP6MP", ACCESS_POINT),
        ("uap", "U7PG2", ACCESS_POINT),
        ("uap", "UP1", NETGEAR),  # plug reports uap
        ("uap", "UP6", NETGEAR),
        ("uck", "UCKG2", NETGEAR),
    ],
)
def test_device_class(device_type: str, model: str, table: str) -> None:
    assert device_class(_device(device_type, model)) == table


def test_pdu_forced_into_switch_kind_still_goes_to_netgear() -> None:
    pdu = InventoryDevice("unifi:device:x", "switch", "PDU", None, model="USPPDUP")
    assert device_class(pdu) == NETGEAR


@pytest.mark.parametrize(
    ("hostname", "vendor", "table"),
    [
        ("LAPTOP-7F3K2Q", None, COMPUTER),
        ("DESKTOP-AB12CD", "Dell Inc.", COMPUTER),
        ("MacBook-Pro-von-Anna", "Apple, Inc.", COMPUTER),
        ("nas-01", None, COMPUTER),
        (None, "Dell Inc.", COMPUTER),  # vendor that only makes computers
        ("Annas-iPhone", "Apple, Inc.", HARDWARE),
        ("Galaxy-S23-Yuki", "Samsung Electronics Co.,Ltd", HARDWARE),
        ("HP4F2A1C", "HP Inc.", HARDWARE),
        ("ESP_3A1B2C", "Espressif Inc.", HARDWARE),
        (None, "Apple, Inc.", HARDWARE),  # Apple also sells phones: not clearly a computer
        (None, None, HARDWARE),
        ("camera-acccde123456", "Manu", HARDWARE),  # the real aiounifi sample client
        # short gadget names count as whole words only (they had been matched anywhere)
        ("DESKTOP-7TVQ2K1", None, COMPUTER),
        ("LAPTOP-HUE4K9Z", None, COMPUTER),
        ("srv-echo01", None, COMPUTER),
        ("ubuntu-tvheadend", None, COMPUTER),
        ("LivingRoomTV", None, HARDWARE),
        ("Philips-hue", None, HARDWARE),
        ("Pixel-7", None, HARDWARE),
        ("Kitchen-Echo", None, HARDWARE),
    ],
)
def test_client_class(hostname: str | None, vendor: str | None, table: str) -> None:
    client = InventoryClient(
        "unifi:client:x", None, "a4:83:e7:00:00:01", hostname=hostname, vendor=vendor
    )
    assert client_class(client)[0] == table
