"""Local Network application collector (the "private" API of a UniFi OS console or a classic
controller): one login per collector (cookie + CSRF token reused, never a login per request),
``self/sites``, ``stat/device`` and ``stat/sta`` per site.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson
import requests
from pydantic import SecretStr

from snowkit.ops.errors import AuthenticationError, ConfigurationError, OperationalError
from snowkit.unifi.collectors.base import BaseCollector, UnexpectedResponseError, secret
from snowkit.unifi.models.inventory import Inventory, Provenance
from snowkit.unifi.models.network import Envelope
from snowkit.unifi.models.normalize import from_network

UNIFI_OS_LOGIN = "/api/auth/login"
CLASSIC_LOGIN = "/api/login"
LOGIN_OPERATION = "unifi.network.login"


# (body marker, error, message, what to do; None: the collector's auth guidance), first match wins.
_API_ERRORS_400: tuple[tuple[bytes, type[OperationalError], str, str | None], ...] = (
    (
        b"api.err.NoSiteContext",
        ConfigurationError,
        "the console does not know that site",
        "Use the site's short name (e.g. 'default'), not its description.",
    ),
    (
        b"api.err.Ubic2faTokenRequired",
        AuthenticationError,
        "the console asks for a 2FA token",
        "Use a dedicated local read-only admin without MFA for snowkit.",
    ),
    (
        b"api.err.Invalid",
        AuthenticationError,
        "the console rejected the username or password",
        None,
    ),
)


class NetworkAppCollector(BaseCollector):
    """``base_url`` is the console root; ``unifi_os=None`` detects UniFi OS vs classic at login."""

    source = "network"
    auth_guidance = (
        "Check the local admin username/password of the console (use a dedicated read-only local "
        "account without MFA); after repeated failures the console rate-limits logins."
    )

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str | SecretStr,
        *,
        sites: list[str] | None = None,
        unifi_os: bool | None = None,
        **options: Any,
    ) -> None:
        super().__init__(base_url, **options)
        self.username = username
        self._password = secret(password)
        self.site_names = sites
        self.unifi_os = unifi_os
        self._csrf: str | None = None
        self._logged_in = False
        self.logins = 0

    # -- session -----------------------------------------------------------------------------
    @property
    def api_prefix(self) -> str:
        return "/proxy/network/api" if self.unifi_os else "/api"

    def login(self) -> None:
        body = {
            "username": self.username,
            "password": self._password.get_secret_value(),
            "rememberMe": True,
        }
        order = {None: (True, False), True: (True,), False: (False,)}[self.unifi_os]
        for unifi_os in order:
            path = UNIFI_OS_LOGIN if unifi_os else CLASSIC_LOGIN
            response = self.request(
                "POST", path, json=body, operation=LOGIN_OPERATION, allow_status=(404,)
            )
            if response.status_code == 404:
                continue  # not UniFi OS: try the classic path
            self.unifi_os = unifi_os
            self._csrf = response.headers.get("X-CSRF-Token") or self.session.cookies.get(
                "csrf_token"
            )
            self._logged_in = True
            self.logins += 1
            self.log.info("unifi_login", source=self.source, unifi_os=unifi_os)
            return
        raise UnexpectedResponseError(
            f"no login endpoint at {self.base_url} (tried {UNIFI_OS_LOGIN} and {CLASSIC_LOGIN})",
            operation=LOGIN_OPERATION,
            guidance="Point base_url at the console root (https://<console>, or :8443 for a "
            "classic controller).",
        )

    def raise_for_status(self, response: requests.Response, operation: str) -> None:
        """The classic controller answers 400 with an ``api.err.*`` code for several problems
        that need different actions; name each one before the generic handling. A login
        refused with 429 is UniFi OS locking logins after failures: not a busy source to
        retry (each retry is one more failed login) or answer from the cache (the cause, the
        credentials, would go unseen)."""
        if response.status_code == 429 and operation == LOGIN_OPERATION:
            raise AuthenticationError(
                f"{self.source} at {self.base_url} refused the login with 429: UniFi OS locks "
                "logins for a while after repeated failures",
                operation=operation,
                http_status=429,
                guidance="Check UNIFI_USERNAME / UNIFI_PASSWORD (a local account, not a UI.com "
                "SSO one), wait a few minutes for the lock to lift, then collect again.",
            )
        if response.status_code == 400:
            for marker, error_class, message, guidance in _API_ERRORS_400:
                if marker in response.content:
                    raise error_class(
                        message,
                        operation=operation,
                        http_status=400,
                        guidance=guidance or self.auth_guidance,
                    )
        super().raise_for_status(response, operation)

    def _headers(self) -> dict[str, str]:
        return {"X-CSRF-Token": self._csrf} if self._csrf else {}

    def api(self, path: str) -> list[Any]:
        """GET ``<prefix>/<path>`` → ``data``; logs in again once if the session expired."""
        if not self._logged_in:
            self.login()
        for attempt in (1, 2):
            try:
                response = self.request(
                    "GET",
                    f"{self.api_prefix}/{path}",
                    headers=self._headers(),
                    operation=f"unifi.network.{path.rsplit('/', 1)[-1]}",
                )
                updated = response.headers.get("X-Updated-CSRF-Token")
                if updated:
                    self._csrf = updated
                return self._data(response, path)
            except AuthenticationError:
                if attempt == 2:
                    raise
                self._logged_in = False
                self.login()
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _data(response: requests.Response, path: str) -> list[Any]:
        try:
            envelope = Envelope.model_validate(orjson.loads(response.content))
        except (orjson.JSONDecodeError, ValueError) as exc:
            raise UnexpectedResponseError(
                f"Network app /{path} did not answer with its envelope", operation="unifi.network"
            ) from exc
        if not envelope.meta.ok:
            msg = envelope.meta.msg or "unknown error"
            if msg == "api.err.NoSiteContext":
                raise ConfigurationError(
                    f"unknown site in /{path}",
                    operation="unifi.network",
                    guidance="Use the site's short name (e.g. 'default'), not its description.",
                )
            if msg == "api.err.LoginRequired":
                raise AuthenticationError(
                    f"Network app /{path}: session expired", operation="unifi.network"
                )
            raise UnexpectedResponseError(f"Network app /{path}: {msg}", operation="unifi.network")
        return envelope.data

    # -- collection --------------------------------------------------------------------------
    def _collect(self, provenance: Provenance) -> Inventory:
        """Normalised site by site, so only one site's raw payload is in memory at a time."""
        sites = self.api("self/sites")
        inventory = from_network(sites, [], [], provenance)
        id_by_name = {s.get("name"): s.get("_id") for s in sites if isinstance(s, dict)}
        names = self.site_names or list(id_by_name)
        for name in names:
            if not isinstance(name, str) or not name:
                continue
            site = quote(name, safe="")
            devices = self.api(f"s/{site}/stat/device")
            clients = self.api(f"s/{site}/stat/sta")
            known = {name: id_by_name[name]} if id_by_name.get(name) else None
            inventory.absorb(from_network([], devices, clients, provenance, known))
        return inventory
