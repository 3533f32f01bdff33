"""Network Integration API collector (``/proxy/network/integration/v1``): offset/limit paging."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import SecretStr, ValidationError

from snowkit.unifi.collectors.base import BaseCollector, UnexpectedResponseError, secret
from snowkit.unifi.models.integration import Page
from snowkit.unifi.models.inventory import Inventory, Provenance
from snowkit.unifi.models.normalize import from_integration

PREFIX = "/proxy/network/integration/v1"


class IntegrationCollector(BaseCollector):
    """``base_url`` is the console root (``https://<console>``)."""

    source = "integration"
    auth_guidance = (
        "Create or check the console API key under UniFi Network → Settings → Control Plane → "
        "Integrations (a Site Manager key is not accepted by the console)."
    )

    def __init__(
        self,
        base_url: str,
        api_key: str | SecretStr,
        *,
        page_size: int = 200,
        **options: Any,
    ) -> None:
        super().__init__(base_url, **options)
        self._api_key = secret(api_key)
        self.page_size = page_size

    def _headers(self) -> dict[str, str]:
        return {"X-API-KEY": self._api_key.get_secret_value(), "Accept": "application/json"}

    def pages(self, path: str) -> Iterator[list[Any]]:
        """Pages until ``offset + count >= totalCount``; checks ``count == len(data)``."""
        offset = 0
        operation = f"unifi.integration{path}"
        for _ in range(self.max_pages):
            body = self.get_json(
                PREFIX + path,
                params={"offset": offset, "limit": self.page_size},
                headers=self._headers(),
                operation=operation,
            )
            try:
                page = Page.model_validate(body)
            except ValidationError as exc:
                raise UnexpectedResponseError(
                    f"Integration API {path} did not answer with its paging envelope",
                    operation=operation,
                ) from exc
            count = len(page.data) if page.count is None else page.count
            if count != len(page.data):
                raise UnexpectedResponseError(
                    f"Integration API {path}: count {count} != {len(page.data)} items in data",
                    operation=operation,
                )
            yield page.data
            offset += count
            total = page.totalCount if page.totalCount is not None else offset
            if count == 0 or offset >= total:
                return
        raise UnexpectedResponseError(
            f"Integration API {path} returned more than {self.max_pages} pages",
            operation=operation,
            guidance="Raise page_size or max_pages if the console really has that many items.",
        )

    def fetch(self, path: str) -> list[Any]:
        return [item for page in self.pages(path) for item in page]

    def _with_detail(self, site_id: str, device: Any) -> Any:
        """The list item completed from the device's detail view: ``firmwareVersion`` and
        ``uplink`` are only there (without it every device came without firmware, and no
        uplink relationship was made). A device gone meanwhile (404) keeps its list item."""
        device_id = device.get("id") if isinstance(device, dict) else None
        if not isinstance(device_id, str) or not device_id or "/" in device_id:
            return device
        path = f"{PREFIX}/sites/{site_id}/devices/{device_id}"
        response = self.request(
            "GET", path, headers=self._headers(), operation="unifi.integration/device",
            allow_status=(404,),
        )  # fmt: skip
        if response.status_code == 404:
            return device
        try:
            detail = response.json()
        except ValueError as exc:
            raise UnexpectedResponseError(
                f"Integration API device {device_id}: the detail is not JSON",
                operation="unifi.integration/device",
            ) from exc
        return {**device, **detail} if isinstance(detail, dict) else device

    def _collect(self, provenance: Provenance) -> Inventory:
        """Normalised site by site, so only one site's raw payload is in memory at a time."""
        sites = self.fetch("/sites")
        inventory = from_integration(sites, {}, {}, provenance)
        for site in sites:
            site_id = site.get("id") if isinstance(site, dict) else None
            if not isinstance(site_id, str) or not site_id:
                continue  # from_integration rejected it with a reason
            devices = [
                self._with_detail(site_id, d) for d in self.fetch(f"/sites/{site_id}/devices")
            ]
            clients = self.fetch(f"/sites/{site_id}/clients")
            inventory.absorb(
                from_integration([], {site_id: devices}, {site_id: clients}, provenance)
            )
        return inventory
