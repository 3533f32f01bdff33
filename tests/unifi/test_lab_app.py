"""The lab WSGI app speaks the real envelopes, paging and auth errors of the three APIs."""

from __future__ import annotations

import pytest
from werkzeug.test import Client

from snowkit.unifi.lab import LabConfig, generate_lab, lab_app

KEY = "k-123"


@pytest.fixture
def client() -> Client:
    lab = generate_lab(LabConfig(sites=3, clients_per_site=12))
    return Client(lab_app(lab, api_key=KEY, username="u", password="p"))


def test_sitemanager_envelope_and_next_token(client: Client) -> None:
    first = client.get("/sitemanager/v1/sites?pageSize=2", headers={"X-API-Key": KEY}).json
    assert first["httpStatusCode"] == 200 and first["traceId"] and len(first["data"]) == 2
    last = client.get(
        f"/sitemanager/v1/sites?pageSize=2&nextToken={first['nextToken']}",
        headers={"X-API-Key": KEY},
    ).json
    assert len(last["data"]) == 1 and last["nextToken"] == ""
    devices = client.get("/sitemanager/ea/devices", headers={"x-api-key": KEY}).json["data"]
    assert {"hostId", "devices", "updatedAt"} <= set(devices[0])
    assert devices[0]["devices"][0]["mac"].isupper()  # Site Manager: upper-case, no colons


def test_sitemanager_auth_and_bad_parameters(client: Client) -> None:
    denied = client.get("/sitemanager/v1/hosts")
    assert denied.status_code == 401 and denied.json["code"] == "unauthorized"
    bad = client.get("/sitemanager/v1/hosts?pageSize=x", headers={"X-API-Key": KEY})
    assert bad.status_code == 400 and bad.json["code"] == "parameter_invalid"


def test_integration_envelope_and_auth(client: Client) -> None:
    denied = client.get("/network/proxy/network/integration/v1/sites")
    assert denied.status_code == 401
    assert denied.json["code"] == "api.authentication.missing-credentials"
    sites = client.get(
        "/network/proxy/network/integration/v1/sites", headers={"X-API-KEY": KEY}
    ).json
    assert (sites["offset"], sites["count"], sites["totalCount"]) == (0, 3, 3)
    site = sites["data"][0]["id"]
    page = client.get(
        f"/network/proxy/network/integration/v1/sites/{site}/clients?offset=10&limit=5",
        headers={"X-API-KEY": KEY},
    ).json
    assert (page["offset"], page["limit"], page["count"], page["totalCount"]) == (10, 5, 2, 12)


def test_network_login_csrf_and_envelope(client: Client) -> None:
    assert client.get("/network/proxy/network/api/self/sites").status_code == 401
    bad = client.post("/network/api/auth/login", json={"username": "u", "password": "x"})
    assert bad.status_code == 403
    login = client.post("/network/api/auth/login", json={"username": "u", "password": "p"})
    csrf = login.headers["X-CSRF-Token"]
    assert login.status_code == 200 and "meta" not in login.json  # UniFi OS: bare user object
    no_csrf = client.get("/network/proxy/network/api/self/sites")
    assert no_csrf.status_code == 403
    sites = client.get("/network/proxy/network/api/self/sites", headers={"X-CSRF-Token": csrf}).json
    assert sites["meta"] == {"rc": "ok"} and sites["data"][0]["name"] == "default"
    wrong = client.get(
        "/network/proxy/network/api/s/Default/stat/device", headers={"X-CSRF-Token": csrf}
    )
    assert wrong.json["meta"]["msg"] == "api.err.NoSiteContext"


def test_injected_faults_are_served_once(client: Client) -> None:
    app = client.application
    app.inject(429, retry_after=3, path_contains="/sitemanager/")  # type: ignore[attr-defined]
    limited = client.get("/sitemanager/v1/hosts", headers={"X-API-Key": KEY})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    assert limited.json["code"] == "rate_limit"
    assert client.get("/sitemanager/v1/hosts", headers={"X-API-Key": KEY}).status_code == 200
