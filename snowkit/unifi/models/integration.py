"""The official local Integration API (``/proxy/network/integration/v1``): sites, devices, clients.

Envelope ``{offset, limit, count, totalCount, data}``. Site ids are UUIDs joined to the local
app through ``internalReference`` (the legacy site name). Devices carry no serial number.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from snowkit.unifi.models.common import OptionalTimestamp, Text, UniFiModel


class Page(UniFiModel):
    offset: int = 0
    limit: int | None = None
    count: int | None = None
    totalCount: int | None = None
    data: list[Any] = Field(default_factory=list)


class IntegrationSite(UniFiModel):
    id: str
    internalReference: Text = None
    name: Text = None


class IntegrationDevice(UniFiModel):
    id: Text = None
    name: Text = None
    model: Text = None
    macAddress: Text = None
    ipAddress: Text = None
    state: Text = None
    features: list[str] | dict[str, Any] | None = None
    interfaces: list[str] | dict[str, Any] | None = None
    firmwareVersion: Text = None
    uplink: dict[str, Any] | None = None
    provisionedAt: OptionalTimestamp = None

    @property
    def feature_names(self) -> set[str]:
        if isinstance(self.features, dict):
            return set(self.features)
        return set(self.features or ())


class IntegrationClient(UniFiModel):
    id: Text = None
    type: Text = None
    name: Text = None
    connectedAt: OptionalTimestamp = None
    ipAddress: Text = None
    macAddress: Text = None
    uplinkDeviceId: Text = None
    access: dict[str, Any] | None = None


class ErrorBody(UniFiModel):
    statusCode: int | None = None
    statusName: Text = None
    code: Text = None
    message: Text = None
