"""A WSGI app serving a generated :class:`Lab` through the three UniFi APIs.

Paths (under whatever prefix the app is mounted at):

- Site Manager: ``/sitemanager/v1/hosts|sites|devices`` (and ``/sitemanager/ea/...``),
  ``X-API-Key``, ``pageSize`` + ``nextToken``.
- Network app, UniFi OS: ``/network/api/auth/login`` (cookie + ``X-CSRF-Token`` header), then
  ``/network/proxy/network/api/self/sites`` and ``.../api/s/<site>/stat/device|stat/sta``.
  Classic (``unifi_os=False``): ``/network/api/login`` and ``/network/api/s/<site>/...``.
- Integration: ``/network/proxy/network/integration/v1/sites``, ``.../sites/<id>/devices|clients``,
  ``.../sites/<id>/devices/<id>`` (the detail view: firmware, uplink),
  ``X-API-KEY``, ``offset`` + ``limit``.

Envelopes and error bodies follow the real ones. Knobs for tests: :meth:`LabApp.inject`
(queue 429/5xx answers), ``down`` (every call 503), :meth:`LabApp.expire_sessions`.
We wrote it ourselves because no library emulates these APIs; it is a test and demo fixture.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from werkzeug.wrappers import Request, Response

from snowkit.unifi.lab.generator import Lab, LabClient, LabDevice, LabSite

SM_MAX_PAGE = 200
INT_DEFAULT_LIMIT = 25
INT_MAX_LIMIT = 200
_NOW = "2026-01-01T00:00:00Z"


@dataclass
class Fault:
    status: int
    retry_after: float | None = None
    path_contains: str = ""


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status=status, headers=headers, mimetype="application/json")


def _trace() -> str:
    return secrets.token_hex(16)


# -- renderers: one lab entity in one API's shape ---------------------------------------------


def _sm_mac(mac: str | None) -> str | None:
    return mac.replace(":", "").upper() if mac else mac


def network_device(dev: LabDevice, site: LabSite) -> dict[str, Any]:
    entry = dev.entry
    body: dict[str, Any] = {
        "_id": dev.object_id,
        "mac": dev.mac,
        "serial": dev.serial,
        "model": entry.code,
        "type": entry.device_type,
        "name": dev.name,
        "ip": dev.ip,
        "version": dev.firmware,
        "displayable_version": dev.firmware,
        "adopted": True,
        "state": 1,
        "uptime": 86400 + dev.index,
        "site_id": site.object_id,
        "last_seen": 1767225600,
        "board_rev": 3,
        "uplink": {"uplink_mac": dev.uplink_mac, "type": "wire"} if dev.uplink_mac else {},
    }
    if dev.kind == "gateway":
        body["lan_ip"] = dev.ip
        body["connect_request_ip"] = dev.ip
        body["ip"] = f"203.0.113.{dev.site_index % 250 + 1}"  # the WAN side, as real gateways
    if dev.defect == "absurd_value":
        body["uptime"] = -1
    if entry.ports:
        body["port_table"] = [{"port_idx": i + 1} for i in range(entry.ports)]
    return body


def network_client(c: LabClient, site: LabSite) -> dict[str, Any]:
    body: dict[str, Any] = {
        "_id": c.object_id,
        "mac": c.mac,
        "ip": c.ip,
        "oui": c.profile.vendor,
        "is_wired": c.is_wired,
        "is_guest": False,
        "site_id": site.object_id,
        "first_seen": 1764547200,
        "last_seen": 1767225600,
        "network": "Default",
    }
    if c.hostname is not None:
        body["hostname"] = c.hostname
    if c.name:
        body["name"] = c.name
    if c.profile.os_name is not None:
        body["os_name"] = c.profile.os_name
    if c.profile.dev_cat is not None:
        body["dev_cat"] = c.profile.dev_cat
    if c.uplink_mac:
        body["sw_mac" if c.is_wired else "ap_mac"] = c.uplink_mac
    return body


def integration_device(dev: LabDevice) -> dict[str, Any]:
    features = {
        "gateway": ["gateway", "switching"],
        "switch": ["switching"],
        "access_point": ["accessPoint"],
        "other": [],
    }[dev.kind]
    return {
        "id": dev.uuid,
        "name": dev.name,
        "model": dev.entry.model_name,
        "macAddress": dev.mac,
        "ipAddress": dev.ip,
        "state": "ONLINE",
        "features": features,
        "interfaces": ["ports"] if dev.entry.ports else ["radios"],
    }


def integration_client(c: LabClient, uplink_uuid: str | None) -> dict[str, Any]:
    return {
        "id": c.uuid,
        "type": "WIRED" if c.is_wired else "WIRELESS",
        "name": c.name or c.hostname or c.mac,
        "connectedAt": _NOW,
        "ipAddress": c.ip,
        "macAddress": c.mac,
        "uplinkDeviceId": uplink_uuid,
        "access": {"type": "DEFAULT"},
    }


def sitemanager_device(dev: LabDevice) -> dict[str, Any]:
    return {
        "id": _sm_mac(dev.mac),
        "mac": _sm_mac(dev.mac),
        "name": dev.name,
        "model": dev.entry.model_name,
        "shortname": dev.entry.code,
        "ip": dev.ip,
        "productLine": "network",
        "status": "online",
        "version": dev.firmware,
        "firmwareStatus": "upToDate",
        "updateAvailable": None,
        "isConsole": dev.index == 0,
        "isManaged": True,
        "startupTime": _NOW,
        "adoptionTime": None,
        "note": None,
    }


def sitemanager_host(site: LabSite, gateway: LabDevice) -> dict[str, Any]:
    return {
        "id": site.host_id,
        "hardwareId": site.uuid,
        "type": "console",
        "ipAddress": gateway.ip,
        "owner": True,
        "isBlocked": False,
        "registrationTime": _NOW,
        "lastConnectionStateChange": _NOW,
        "latestBackupTime": "",
        "userData": None,
        "reportedState": {
            "hostname": f"console-{site.name}",
            "name": gateway.name,
            "version": "4.1.13",
            "hardware": {
                "name": gateway.entry.model_name,
                "mac": _sm_mac(gateway.mac),
                "serialno": (gateway.mac or "").replace(":", ""),
                "shortname": gateway.entry.code,
                "firmwareVersion": gateway.firmware,
            },
        },
    }


def sitemanager_site(site: LabSite, gateway: LabDevice) -> dict[str, Any]:
    return {
        "siteId": site.object_id,
        "hostId": site.host_id,
        "meta": {
            "desc": site.desc,
            "name": site.name,
            "timezone": site.timezone,
            "gatewayMac": gateway.mac,
        },
        "statistics": {"counts": {"totalDevice": 0}, "gateway": {"shortname": gateway.entry.code}},
        "permission": "admin",
        "isOwner": True,
    }


class LabApp:
    """The WSGI callable; hold on to it to turn the test knobs."""

    def __init__(
        self,
        lab: Lab,
        api_key: str = "lab-api-key",
        username: str = "admin",
        password: str = "lab-password",
        unifi_os: bool = True,
        sitemanager_key: str | None = None,
    ) -> None:
        self.lab = lab
        self.api_key = api_key
        self.sitemanager_key = sitemanager_key or api_key
        self.username = username
        self.password = password
        self.unifi_os = unifi_os
        self.down = False
        self.requests: list[str] = []  # "METHOD path", for tests that count calls
        self.logins = 0
        self._faults: deque[Fault] = deque()
        self._sessions: dict[str, str] = {}  # cookie token -> csrf token
        self._lock = threading.Lock()
        self._site_by_name = {s.name: s for s in lab.sites}
        self._site_by_uuid = {s.uuid: s for s in lab.sites}
        self._uuid_by_mac = {d.mac: d.uuid for d in lab.all_devices() if d.mac}

    # -- knobs ---------------------------------------------------------------------------
    def inject(
        self, status: int, count: int = 1, retry_after: float | None = None, path_contains: str = ""
    ) -> None:
        """Answer the next ``count`` matching requests with ``status`` (429 adds Retry-After)."""
        with self._lock:
            self._faults.extend(Fault(status, retry_after, path_contains) for _ in range(count))

    def expire_sessions(self) -> None:
        with self._lock:
            self._sessions.clear()

    # -- WSGI ----------------------------------------------------------------------------
    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = Request(environ)
        return self.dispatch(request)(environ, start_response)

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.path_contains in path:
                    del self._faults[i]
                    return fault
        return None

    def dispatch(self, request: Request) -> Response:
        path = request.path
        with self._lock:
            self.requests.append(f"{request.method} {path}")
        if self.down:
            return _json({"code": "SERVER_ERROR", "message": "service unavailable"}, 503)
        fault = self._take_fault(path)
        if fault is not None:
            headers = (
                {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
            )
            body = {
                "code": "rate_limit",
                "httpStatusCode": 429,
                "message": "rate limit exceeded",
                "traceId": _trace(),
            }
            if fault.status != 429:
                body = {
                    "code": "SERVER_ERROR",
                    "httpStatusCode": fault.status,
                    "message": "injected failure",
                    "traceId": _trace(),
                }
            return _json(body, fault.status, headers)
        if path.startswith("/sitemanager/"):
            return self._sitemanager(request, path.removeprefix("/sitemanager"))
        if path.startswith("/network/proxy/network/integration/"):
            return self._integration(
                request, path.removeprefix("/network/proxy/network/integration")
            )
        if path.startswith("/network/"):
            return self._network(request, path.removeprefix("/network"))
        return _json({"error": "not found"}, 404)

    # -- Site Manager --------------------------------------------------------------------
    def _sitemanager(self, request: Request, path: str) -> Response:
        key = request.headers.get("X-API-Key", "")
        if not hmac.compare_digest(key.encode(), self.sitemanager_key.encode()):
            return _json(
                {
                    "code": "unauthorized",
                    "httpStatusCode": 401,
                    "message": "unauthorized",
                    "traceId": _trace(),
                },
                401,
            )
        version, _, resource = path.strip("/").partition("/")
        if version not in ("v1", "ea"):
            return _json({"code": "NOT_FOUND", "httpStatusCode": 404, "message": "not found"}, 404)
        gateways = {s.index: self.lab.devices[s.index][0] for s in self.lab.sites}
        items: list[Any]
        if resource == "hosts":
            items = [sitemanager_host(s, gateways[s.index]) for s in self.lab.sites]
        elif resource == "sites":
            items = [sitemanager_site(s, gateways[s.index]) for s in self.lab.sites]
        elif resource == "devices":
            items = [
                {
                    "hostId": s.host_id,
                    "hostName": f"console-{s.name}",
                    "devices": [sitemanager_device(d) for d in self.lab.devices[s.index]],
                    "updatedAt": _NOW,
                }
                for s in self.lab.sites
            ]
        else:
            return _json(
                {
                    "code": "NOT_FOUND",
                    "httpStatusCode": 404,
                    "message": f"thing not found: {resource}",
                    "traceId": _trace(),
                },
                404,
            )
        try:
            size = min(int(request.args.get("pageSize", "25")), SM_MAX_PAGE)
            start = int(request.args.get("nextToken") or "0", 16)
            if size < 1 or start < 0:
                raise ValueError
        except ValueError:
            return _json(
                {
                    "code": "parameter_invalid",
                    "httpStatusCode": 400,
                    "message": "invalid pageSize or nextToken",
                    "traceId": _trace(),
                },
                400,
            )
        page = items[start : start + size]
        next_token = f"{start + size:x}" if start + size < len(items) else ""
        return _json(
            {"data": page, "httpStatusCode": 200, "traceId": _trace(), "nextToken": next_token}
        )

    # -- local Network app ---------------------------------------------------------------
    def _network(self, request: Request, path: str) -> Response:
        login_path = "/api/auth/login" if self.unifi_os else "/api/login"
        if path in ("/api/auth/login", "/api/login"):
            if path != login_path or request.method != "POST":
                return Response("Not Found", 404)
            return self._login(request)
        prefix = "/proxy/network/api/" if self.unifi_os else "/api/"
        if not path.startswith(prefix):
            return Response("Not Found", 404)
        token = request.cookies.get("TOKEN" if self.unifi_os else "unifises", "")
        with self._lock:
            csrf = self._sessions.get(token)
        if csrf is None:
            return _json({"meta": {"rc": "error", "msg": "api.err.LoginRequired"}, "data": []}, 401)
        if self.unifi_os and request.headers.get("X-CSRF-Token") != csrf:
            return _json({"meta": {"rc": "error", "msg": "api.err.InvalidCSRF"}, "data": []}, 403)
        rest = path.removeprefix(prefix)
        if rest == "self/sites":
            data = [
                {
                    "_id": s.object_id,
                    "name": s.name,
                    "desc": s.desc,
                    "role": "admin",
                    "attr_hidden_id": s.name,
                    "attr_no_delete": s.index == 0,
                }
                for s in self.lab.sites
            ]
            return _json({"meta": {"rc": "ok"}, "data": data})
        parts = rest.split("/")
        if len(parts) == 4 and parts[0] == "s" and parts[2] == "stat":
            site = self._site_by_name.get(parts[1])
            if site is None:
                return _json(
                    {"meta": {"rc": "error", "msg": "api.err.NoSiteContext"}, "data": []}, 400
                )
            if parts[3] == "device":
                return _json({"meta": {"rc": "ok"}, "data": list(self._devices_json(site))})
            if parts[3] == "sta":
                return _json({"meta": {"rc": "ok"}, "data": list(self._clients_json(site))})
        return Response("Not Found", 404)

    def _login(self, request: Request) -> Response:
        try:
            body = orjson.loads(request.get_data())
        except orjson.JSONDecodeError:
            body = {}
        ok = (
            isinstance(body, dict)
            and hmac.compare_digest(str(body.get("username", "")).encode(), self.username.encode())
            and hmac.compare_digest(str(body.get("password", "")).encode(), self.password.encode())
        )
        if not ok:
            if self.unifi_os:  # UniFi OS answers wrong credentials with 403 (see the reference)
                return _json(
                    {
                        "code": "AUTHENTICATION_FAILED_INVALID_CREDENTIALS",
                        "message": "Invalid username or password",
                    },
                    403,
                )
            return _json({"meta": {"rc": "error", "msg": "api.err.Invalid"}, "data": []}, 400)
        token, csrf = secrets.token_hex(16), secrets.token_hex(16)
        with self._lock:
            self._sessions[token] = csrf
            self.logins += 1
        if self.unifi_os:
            response = _json(
                {
                    "unique_id": "lab-admin",
                    "username": self.username,
                    "roles": [{"name": "Super Administrator"}],
                },
                headers={"X-CSRF-Token": csrf},
            )
            response.set_cookie("TOKEN", token, httponly=True, samesite="Strict")
        else:
            response = _json({"meta": {"rc": "ok"}, "data": []})
            response.set_cookie("unifises", token, httponly=True)
            response.set_cookie("csrf_token", csrf)
        return response

    def _devices_json(self, site: LabSite) -> Iterator[dict[str, Any]]:
        for dev in self.lab.devices[site.index]:
            body = network_device(dev, site)
            yield body
            if dev.duplicate:
                yield {**body, "_id": body["_id"][::-1], "name": body["name"]}

    def _clients_json(self, site: LabSite) -> Iterator[dict[str, Any]]:
        for client in self.lab.clients(site.index):
            body = network_client(client, site)
            yield body
            if client.duplicate:
                yield {**body, "_id": body["_id"][::-1]}

    # -- Integration API -----------------------------------------------------------------
    def _integration(self, request: Request, path: str) -> Response:
        if not hmac.compare_digest(
            request.headers.get("X-API-KEY", "").encode(), self.api_key.encode()
        ):
            status = 401
            return _json(
                {
                    "statusCode": status,
                    "statusName": "UNAUTHORIZED",
                    "code": "api.authentication.missing-credentials",
                    "message": "Missing credentials",
                    "timestamp": datetime.now(UTC).isoformat(),
                    "requestPath": "/integration" + path,
                    "requestId": _trace(),
                },
                status,
            )
        try:
            offset = int(request.args.get("offset", "0"))
            limit = min(int(request.args.get("limit", str(INT_DEFAULT_LIMIT))), INT_MAX_LIMIT)
            if offset < 0 or limit < 1:
                raise ValueError
        except ValueError:
            return _json(
                {
                    "statusCode": 400,
                    "statusName": "BAD_REQUEST",
                    "code": "api.request.argument-type-mismatch",
                    "message": "offset and limit must be non-negative integers",
                },
                400,
            )
        parts = path.strip("/").split("/")
        if parts == ["v1", "sites"]:
            sites = self.lab.sites
            rows = [
                {"id": s.uuid, "internalReference": s.name, "name": s.desc}
                for s in sites[offset : offset + limit]
            ]
            return self._page(offset, limit, rows, len(sites))
        if len(parts) == 5 and parts[:2] == ["v1", "sites"] and parts[3] == "devices":
            site = self._site_by_uuid.get(parts[2])
            found = [d for d in self.lab.devices[site.index] if d.uuid == parts[4]] if site else []
            if not found:
                return _json(
                    {"statusCode": 404, "statusName": "NOT_FOUND",
                     "code": "api.device.not-found", "message": "Device not found"},
                    404,
                )  # fmt: skip
            return _json(self._integration_detail(found[0]), 200)
        if len(parts) == 4 and parts[:2] == ["v1", "sites"] and parts[3] in ("devices", "clients"):
            site = self._site_by_uuid.get(parts[2])
            if site is None:
                return _json(
                    {
                        "statusCode": 404,
                        "statusName": "NOT_FOUND",
                        "code": "api.site.not-found",
                        "message": "Site not found",
                    },
                    404,
                )
            if parts[3] == "devices":
                devices = self.lab.devices[site.index]
                rows = [integration_device(d) for d in devices[offset : offset + limit]]
                return self._page(offset, limit, rows, len(devices))
            total = self.lab.client_count(site.index)
            rows = [
                integration_client(c, self._uuid_by_mac.get(c.uplink_mac))
                for c in self.lab.clients(site.index, offset, offset + limit)
            ]
            return self._page(offset, limit, rows, total)
        return _json(
            {
                "statusCode": 404,
                "statusName": "NOT_FOUND",
                "code": "api.not-found",
                "message": "Not found",
            },
            404,
        )

    def _integration_detail(self, dev: LabDevice) -> dict[str, Any]:
        """A device's detail view: firmware and uplink live only here, not in the list."""
        body = integration_device(dev)
        body["firmwareVersion"] = dev.firmware
        body["firmwareUpdatable"] = False
        uplink = self._uuid_by_mac.get(dev.uplink_mac) if dev.uplink_mac else None
        if uplink:
            body["uplink"] = {"deviceId": uplink}
        return body

    @staticmethod
    def _page(offset: int, limit: int, rows: list[dict[str, Any]], total: int) -> Response:
        return _json(
            {
                "offset": offset,
                "limit": limit,
                "count": len(rows),
                "totalCount": total,
                "data": rows,
            }
        )


def lab_app(
    lab: Lab,
    api_key: str = "lab-api-key",
    username: str = "admin",
    password: str = "lab-password",
    **options: Any,
) -> LabApp:
    """The WSGI app for ``lab``; ``options`` go to :class:`LabApp` (``unifi_os``, ...)."""
    return LabApp(lab, api_key=api_key, username=username, password=password, **options)
