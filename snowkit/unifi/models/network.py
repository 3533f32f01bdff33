"""The local Network application ("private" API): ``self/sites``, ``stat/device``, ``stat/sta``.

Also reads the v2 ``clients/history`` item (bare array, ``last_ip``/``last_uplink_mac``), which
people save next to ``stat/sta``. Envelope ``{"meta":{"rc":"ok"},"data":[...]}``; ``rc`` is
compared case-insensitively because fixtures use ``"OK"`` too.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from snowkit.unifi.models.common import Text, UniFiModel


class Meta(UniFiModel):
    rc: Text = None
    msg: Text = None

    @property
    def ok(self) -> bool:
        return (self.rc or "").lower() == "ok"


class Envelope(UniFiModel):
    meta: Meta = Field(default_factory=Meta)
    data: list[Any] = Field(default_factory=list)


class NetworkSite(UniFiModel):
    id: str = Field(alias="_id")
    name: Text = None
    desc: Text = None
    role: Text = None


class NetworkDevice(UniFiModel):
    id: Text = Field(default=None, alias="_id")
    mac: Text = None
    serial: Text = None
    model: Text = None
    type: Text = None
    name: Text = None
    ip: Text = None
    lan_ip: Text = None
    connect_request_ip: Text = None
    version: Text = None
    adopted: bool | None = None
    state: int | None = None
    site_id: Text = None
    uplink: dict[str, Any] | None = None
    port_table: list[Any] | None = None

    @property
    def uplink_mac(self) -> Any:
        return (self.uplink or {}).get("uplink_mac")


class NetworkClient(UniFiModel):
    """A ``stat/sta`` item, or a v2 ``clients/history`` item (``last_*`` fields)."""

    id: Text = Field(default=None, alias="_id")
    mac: Text = None
    hostname: Text = None
    name: Text = None
    display_name: Text = None
    ip: Text = None
    last_ip: Text = None
    oui: Text = None
    is_wired: bool | None = None
    is_guest: bool | None = None
    site_id: Text = None
    ap_mac: Text = None
    sw_mac: Text = None
    gw_mac: Text = None
    last_uplink_mac: Text = None
    os_name: Text = None
    dev_cat: Text = None
    dev_family: Text = None

    @property
    def uplink_mac(self) -> Any:
        return self.ap_mac or self.sw_mac or self.last_uplink_mac or None
