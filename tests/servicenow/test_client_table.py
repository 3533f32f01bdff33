"""Table API through the client: CRUD, fields, display values, errors, audit images, URL rules."""

from __future__ import annotations

import pytest
import requests

from snowkit.credentials import CredentialManager
from snowkit.ops.audit import AuditTrail, verify_audit
from snowkit.ops.errors import (
    AuthorizationError,
    InvalidTableError,
    RecordNotFoundError,
)
from snowkit.sandbox import Sandbox
from snowkit.servicenow import InstanceURLError, ServiceNowAPIClient

from .conftest import AUDIT_KEY, audit_entries, requests_sent


def test_crud_round_trip(client: ServiceNowAPIClient) -> None:
    created = client.create("cmdb_ci_ip_switch", {"name": "sw-01", "serial_number": "S1"})
    sys_id = created["sys_id"]
    assert len(sys_id) == 32 and created["name"] == "sw-01"
    assert client.get("cmdb_ci_ip_switch", sys_id, fields=["name"]) == {"name": "sw-01"}
    updated = client.update("cmdb_ci_ip_switch", sys_id, {"name": "sw-01b"})
    assert updated["name"] == "sw-01b"
    client.delete("cmdb_ci_ip_switch", sys_id)
    assert client.get("cmdb_ci_ip_switch", sys_id) is None
    with pytest.raises(RecordNotFoundError):
        client.delete("cmdb_ci_ip_switch", sys_id)


def test_count_reads_x_total_count(client: ServiceNowAPIClient) -> None:
    before = client.count("cmdb_ci_ip_router", "nameSTARTSWITHcnt-")
    for i in range(3):
        client.create("cmdb_ci_ip_router", {"name": f"cnt-{i}"})
    assert client.count("cmdb_ci_ip_router", "nameSTARTSWITHcnt-") == before + 3


def test_plain_values_by_default_and_display_values_on_request(client: ServiceNowAPIClient) -> None:
    created = client.create("incident", {"short_description": "dv", "priority": "1"})
    plain = client.get("incident", created["sys_id"], fields=["priority", "opened_by"])
    assert plain == {"priority": "1", "opened_by": plain["opened_by"]}
    assert isinstance(plain["opened_by"], str)  # no {link, value}: exclude_reference_link
    both = client.get("incident", created["sys_id"], fields=["priority"], display_value="all")
    assert both["priority"]["value"] == "1"


def test_invalid_table_raises_invalid_table_error(sb: Sandbox, client: ServiceNowAPIClient) -> None:
    sb.set_faults({"missing_tables": ["cmdb_ci_wap_network"]})
    with pytest.raises(InvalidTableError) as info:
        client.create("cmdb_ci_wap_network", {"name": "ap"}, source_id="ap-1")
    assert info.value.context.http_status == 400
    assert "table" in str(info.value).lower()


def test_readonly_user_gets_authorization_error_naming_a_role(sb: Sandbox) -> None:
    creds = CredentialManager.static(basic=("readonly", sb.users["readonly"]))
    with ServiceNowAPIClient(sb.url, creds, verify=str(sb.ca_path)) as ro:
        assert ro.count("incident") >= 0  # reads work
        with pytest.raises(AuthorizationError) as info:
            ro.create("incident", {"short_description": "nope"})
    assert info.value.context.http_status == 403
    assert "role" in info.value.guidance


def test_names_are_validated_before_anything_is_sent(client: ServiceNowAPIClient) -> None:
    with pytest.raises(ValueError, match="invalid table name"):
        client.get("incident/../sys_user", "x" * 32)
    with pytest.raises(ValueError, match="invalid sys_id"):
        client.get("incident", "../../sys_user")


def test_every_write_is_audited_with_before_and_after_images(
    make_client, trail: AuditTrail, audit_path
) -> None:
    with make_client(audit=trail) as c:
        rec = c.create("cmdb_ci_ip_switch", {"name": "aud-1"}, source_id="unifi:aa:bb")
        c.update("cmdb_ci_ip_switch", rec["sys_id"], {"name": "aud-2"})
        c.delete("cmdb_ci_ip_switch", rec["sys_id"])
    trail.close()
    entries = audit_entries(audit_path)
    assert [e["action"] for e in entries] == ["create", "update", "delete"]
    create, update, delete = entries
    assert create["source_id"] == "unifi:aa:bb" and create["before"] is None
    assert create["after"]["name"] == "aud-1"
    assert update["before"]["name"] == "aud-1" and update["after"]["name"] == "aud-2"
    assert delete["before"]["name"] == "aud-2" and delete["after"] is None
    assert all(e["outcome"] == "success" and e["correlation_id"] for e in entries)
    assert verify_audit(audit_path, AUDIT_KEY).ok


def test_before_image_is_not_fetched_when_given_or_not_audited(
    sb: Sandbox, client: ServiceNowAPIClient
) -> None:
    rec = client.create("incident", {"short_description": "b"})
    gets_before = requests_sent(client, "GET", "get")
    client.update("incident", rec["sys_id"], {"short_description": "c"})
    assert requests_sent(client, "GET", "get") == gets_before  # no audit trail: no extra GET


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://acme.service-now.com/", "https://acme.service-now.com"),
        ("acme", "https://acme.service-now.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:1", "http://localhost:1"),
        ("http://[::1]:9", "http://[::1]:9"),
    ],
)
def test_instance_urls(url: str, expected: str, admin: CredentialManager) -> None:
    with ServiceNowAPIClient(url, admin) as c:
        assert c.instance_url == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://acme.service-now.com", "refusing plain http"),
        ("ftp://x", "scheme must be https"),
        ("acme.service-now.com", "no scheme"),
        ("", "no ServiceNow instance URL"),
    ],
)
def test_bad_instance_urls_say_what_to_do(url: str, message: str, admin: CredentialManager) -> None:
    with pytest.raises(InstanceURLError, match=message):
        ServiceNowAPIClient(url, admin)


@pytest.mark.parametrize(
    "url",
    [
        "https://admin:canary-pw-31@acme.service-now.com",
        "admin:canary-pw-31@acme.service-now.com",
        "acme.service-now.com/?api_key=canary-pw-31",
    ],
)
def test_bad_instance_urls_never_echo_credentials(url: str, admin: CredentialManager) -> None:
    with pytest.raises(InstanceURLError) as info:
        ServiceNowAPIClient(url, admin)
    assert "canary-pw-31" not in str(info.value)
    assert "acme.service-now.com" in str(info.value)


def test_session_is_pooled_to_workers_with_no_transport_retries(admin: CredentialManager) -> None:
    class Cfg:
        class servicenow:
            workers = 12
            connect_timeout = 2.0
            read_timeout = 4.0

    with ServiceNowAPIClient("https://acme.service-now.com", admin, Cfg()) as c:
        adapter = c._session.get_adapter("https://acme.service-now.com")
        assert adapter.max_retries.total == 0
        assert adapter._pool_maxsize == 12
        assert c.timeouts.for_attempt(1) == (2.0, 4.0)
        assert c.timeouts.for_attempt(3) == (4.5, 9.0)  # x1.5 per retry


def test_ca_bundle_from_environment(monkeypatch, sb: Sandbox, admin: CredentialManager) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(sb.ca_path))
    with ServiceNowAPIClient(sb.url, admin) as c:
        assert c.verify == str(sb.ca_path)
        assert c.ping() > 0
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
    with pytest.raises(InstanceURLError, match="CA bundle from REQUESTS_CA_BUNDLE not found"):
        ServiceNowAPIClient(sb.url, admin)


def test_from_config_uses_the_configured_instance(sb: Sandbox, admin: CredentialManager) -> None:
    from snowkit.config import OperationalConfig

    config = OperationalConfig.model_validate({"servicenow": {"instance": sb.url, "workers": 3}})
    with ServiceNowAPIClient.from_config(config, admin, verify=str(sb.ca_path)) as c:
        assert c.instance_url == sb.url and c.workers == 3
        assert c.ping() > 0


def test_identify_reconcile_inserts_then_matches(client: ServiceNowAPIClient) -> None:
    payload = {
        "items": [
            {
                "className": "cmdb_ci_ip_switch",
                "values": {"name": "ire-sw", "serial_number": "IRE-SN-1"},
            }
        ]
    }
    dry = client.identify_reconcile(payload, dry_run=True)
    assert dry["items"][0]["operation"] == "INSERT"
    assert client.count("cmdb_ci_ip_switch", "serial_number=IRE-SN-1") == 0  # nothing committed
    first = client.identify_reconcile(payload)
    again = client.identify_reconcile(payload)  # resending is safe: it matches, not duplicates
    assert first["items"][0]["operation"] == "INSERT"
    assert again["items"][0]["sysId"] == first["items"][0]["sysId"]
    assert client.count("cmdb_ci_ip_switch", "serial_number=IRE-SN-1") == 1


def test_proxies_explicit_from_environment_and_never_for_loopback(monkeypatch) -> None:
    from snowkit.servicenow.transport import resolve_proxies

    explicit = {"https": "http://proxy.corp:3128"}
    assert resolve_proxies("https://acme.service-now.com", explicit) == explicit
    assert resolve_proxies("https://127.0.0.1:8443", explicit) == {}
    monkeypatch.setenv("HTTPS_PROXY", "http://envproxy:8080")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    assert resolve_proxies("https://acme.service-now.com")["https"] == "http://envproxy:8080"
    assert "https" not in resolve_proxies("https://x.internal.example")


def _wrapped(inner: BaseException) -> requests.exceptions.ConnectionError:
    from urllib3.exceptions import MaxRetryError, ProtocolError

    if isinstance(inner, ConnectionResetError):
        inner = ProtocolError("Connection aborted.", inner)
    return requests.exceptions.ConnectionError(MaxRetryError(None, "/x", inner))


@pytest.mark.parametrize(
    ("exc", "sent"),
    [
        (requests.exceptions.ConnectTimeout(), False),
        (requests.exceptions.ReadTimeout(), True),
        (_wrapped(ConnectionRefusedError(111, "refused")), False),
        (_wrapped(ConnectionResetError(104, "reset by peer")), True),
        (requests.exceptions.ConnectionError("something else"), True),  # unknown: assume sent
    ],
)
def test_request_was_sent_decides_ambiguity(exc: BaseException, sent: bool) -> None:
    from snowkit.ops.classify import request_was_sent

    assert request_was_sent(exc) is sent
