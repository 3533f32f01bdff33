"""Site Manager API (api.ui.com ``/v1`` and ``/ea``): hosts, sites and devices grouped per host.

Tolerant of the real quirks: ``reportedState`` and ``userData`` may be null, timestamps may be
``""``, and the layout of ``reportedState`` depends on the host type.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from snowkit.unifi.models.common import OptionalTimestamp, Text, UniFiModel


class HostHardware(UniFiModel):
    name: Text = None
    mac: Text = None
    serialno: Text = None
    shortname: Text = None
    firmwareVersion: Text = None


class HostReportedState(UniFiModel):
    hostname: Text = None
    name: Text = None
    ip: Text = None
    mac: Text = None
    version: Text = None
    hardware: HostHardware | None = None


class Host(UniFiModel):
    id: str
    hardwareId: Text = None
    type: Text = None
    ipAddress: Text = None
    owner: bool | None = None
    isBlocked: bool | None = None
    registrationTime: OptionalTimestamp = None
    lastConnectionStateChange: OptionalTimestamp = None
    latestBackupTime: OptionalTimestamp = None
    userData: dict[str, Any] | None = None
    reportedState: HostReportedState | None = None

    @property
    def display_name(self) -> str | None:
        state = self.reportedState
        if state is None:
            return None
        return state.name or state.hostname


class SiteMeta(UniFiModel):
    desc: Text = None
    name: Text = None
    timezone: Text = None
    gatewayMac: Text = None


class Site(UniFiModel):
    siteId: str
    hostId: Text = None
    meta: SiteMeta | None = None
    statistics: dict[str, Any] | None = None
    permission: Text = None
    isOwner: bool | None = None


class Device(UniFiModel):
    id: Text = None
    mac: Text = None
    name: Text = None
    model: Text = None
    shortname: Text = None
    ip: Text = None
    productLine: Text = None
    status: Text = None
    version: Text = None
    firmwareStatus: Text = None
    updateAvailable: Text = None
    isConsole: bool | None = None
    isManaged: bool | None = None
    startupTime: OptionalTimestamp = None
    adoptionTime: OptionalTimestamp = None
    note: Text = None


class HostDevices(UniFiModel):
    """One item of ``/v1/devices``: the devices of one host."""

    hostId: str
    hostName: Text = None
    devices: list[dict[str, Any]] = Field(default_factory=list)
    updatedAt: OptionalTimestamp = None


class Envelope(UniFiModel):
    """``{data, httpStatusCode, traceId, nextToken?}``; ``data`` is a list or one object."""

    data: list[Any] | dict[str, Any] | None = None
    httpStatusCode: int | None = None
    traceId: Text = None
    nextToken: Text = None

    @property
    def items(self) -> list[Any]:
        if self.data is None:
            return []
        return self.data if isinstance(self.data, list) else [self.data]


class ErrorBody(UniFiModel):
    code: Text = None
    httpStatusCode: int | None = None
    message: Text = None
    traceId: Text = None
