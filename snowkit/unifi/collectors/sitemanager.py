"""Site Manager API collector (api.ui.com): hosts, sites and devices, ``nextToken`` paging."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import SecretStr, ValidationError

from snowkit.unifi.collectors.base import BaseCollector, UnexpectedResponseError, secret
from snowkit.unifi.models import sitemanager as sm
from snowkit.unifi.models.inventory import Inventory, Provenance
from snowkit.unifi.models.normalize import from_sitemanager

DEFAULT_BASE_URL = "https://api.ui.com"


class SiteManagerCollector(BaseCollector):
    source = "sitemanager"
    auth_guidance = (
        "Create or check the Site Manager API key at unifi.ui.com → API (a key made on a console "
        "is not accepted here)."
    )

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | SecretStr = "",
        *,
        page_size: int = 100,
        api_version: str = "v1",
        **options: Any,
    ) -> None:
        super().__init__(base_url, **options)
        self._api_key = secret(api_key)
        self.page_size = page_size
        self.api_version = api_version
        self.session.headers["Accept"] = "application/json"

    def _headers(self) -> dict[str, str]:
        return {"X-API-Key": self._api_key.get_secret_value()}

    def pages(self, resource: str) -> Iterator[list[Any]]:
        """Each page's ``data`` until ``nextToken`` is missing, null or empty (bounded)."""
        token: str | None = None
        seen: set[str] = set()
        for _ in range(self.max_pages):
            params: dict[str, Any] = {"pageSize": str(self.page_size)}
            if token:
                params["nextToken"] = token
            body = self.get_json(
                f"/{self.api_version}/{resource}", params=params, headers=self._headers()
            )
            try:
                envelope = sm.Envelope.model_validate(body)
            except ValidationError as exc:
                raise UnexpectedResponseError(
                    f"Site Manager /{resource} did not answer with its envelope",
                    operation=f"unifi.sitemanager.{resource}",
                ) from exc
            yield envelope.items
            token = envelope.nextToken or None
            if token is None:
                return
            if token in seen:
                raise UnexpectedResponseError(
                    f"Site Manager /{resource} repeated a nextToken; stopping to avoid a loop",
                    operation=f"unifi.sitemanager.{resource}",
                )
            seen.add(token)
        raise UnexpectedResponseError(
            f"Site Manager /{resource} returned more than {self.max_pages} pages",
            operation=f"unifi.sitemanager.{resource}",
            guidance="Raise page_size or max_pages if the account really has that much data.",
        )

    def fetch(self, resource: str) -> list[Any]:
        return [item for page in self.pages(resource) for item in page]

    def _collect(self, provenance: Provenance) -> Inventory:
        hosts = self.fetch("hosts")
        sites = self.fetch("sites")
        devices = self.fetch("devices")
        return from_sitemanager(hosts, sites, devices, provenance)
