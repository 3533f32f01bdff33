"""Schema check and setup through sys_dictionary; a clear stop when the user lacks the rights."""

from __future__ import annotations

import pytest

from snowkit.cmdb.schema import SchemaNotReadyError, check_schema, ensure_schema
from snowkit.credentials import CredentialManager
from snowkit.sandbox import Sandbox
from snowkit.servicenow import ServiceNowAPIClient


def client_for(sb: Sandbox, user: str) -> ServiceNowAPIClient:
    creds = CredentialManager.static(basic=(user, sb.users[user]))
    return ServiceNowAPIClient(sb.url, creds, verify=str(sb.ca_path), sleep=lambda s: None)


def test_fresh_instance_lacks_fields_and_setup_creates_them(sandbox: Sandbox) -> None:
    with client_for(sandbox, "admin") as client:
        status = check_schema(client)
        assert status.missing == [
            ("cmdb_ci", "u_unifi_source_id"),
            ("cmn_location", "u_unifi_source_id"),
        ]
        created = ensure_schema(client)
        assert created.created == status.missing and created.ok
        again = ensure_schema(client)
        assert again.created == [] and len(again.present) == 2
        # the field now takes values, on a CI subclass too (inherited from cmdb_ci)
        row = client.create("cmdb_ci_ip_switch", {"name": "x", "u_unifi_source_id": "k"})
        assert client.get("cmdb_ci", row["sys_id"])["u_unifi_source_id"] == "k"


def test_without_rights_the_error_lists_what_an_admin_must_add(sandbox: Sandbox) -> None:
    with client_for(sandbox, "readonly") as client, pytest.raises(SchemaNotReadyError) as info:
        ensure_schema(client)
    text = str(info.value)
    assert "403" in text
    assert "table cmdb_ci: column u_unifi_source_id" in text
    assert "table cmn_location: column u_unifi_source_id" in text
    assert sandbox.users["readonly"] not in text


def test_check_only_mode_does_not_create(sandbox: Sandbox) -> None:
    with client_for(sandbox, "admin") as client:
        with pytest.raises(SchemaNotReadyError, match="snowkit setup"):
            ensure_schema(client, create=False)
        assert not check_schema(client).ok
