"""Fidelity proof: ServiceNow's own client, pysnc, used unchanged against the sandbox."""

from __future__ import annotations

import uuid

import pytest
from pysnc import ServiceNowClient
from pysnc.auth import ServiceNowClientCredentialsFlow, ServiceNowPasswordGrantFlow
from pysnc.exceptions import RoleException

from snowkit.sandbox import Sandbox


@pytest.fixture(autouse=True)
def _trust_only_the_sandbox_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests lets REQUESTS_CA_BUNDLE override ``session.verify``, which pysnc sets."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def client(sandbox: Sandbox) -> ServiceNowClient:
    return ServiceNowClient(
        sandbox.url, ("admin", sandbox.users["admin"]), verify=str(sandbox.ca_path)
    )


def _insert(client: ServiceNowClient, tag: str, count: int) -> list[str]:
    ids = []
    for i in range(count):
        gr = client.GlideRecord("incident")
        gr.initialize()
        gr.short_description = f"{tag} {i}"
        gr.priority = str(i % 3 + 1)
        ids.append(str(gr.insert()))
    return ids


def test_query_with_encoded_query_pages_over_several_batches(client: ServiceNowClient):
    tag = uuid.uuid4().hex
    ids = _insert(client, tag, 8)
    gr = client.GlideRecord("incident", batch_size=3)
    gr.add_query("short_description", "STARTSWITH", tag)
    gr.add_query("priority", "IN", "1,2,3")
    gr.query()
    assert len(gr) == 8
    seen = [gr.sys_id for _ in iter(gr.next, False)]
    assert sorted(seen) == sorted(ids)  # three pages (3 + 3 + 2), no gaps or repeats

    encoded = client.GlideRecord("incident", batch_size=2)
    encoded.add_encoded_query(f"short_descriptionSTARTSWITH{tag}^priority=1^ORpriority=2")
    encoded.query()
    assert len(encoded) == 6


def test_get_by_sys_id_and_by_field_then_update_and_delete(client: ServiceNowClient):
    tag = uuid.uuid4().hex
    (sys_id,) = _insert(client, tag, 1)
    gr = client.GlideRecord("incident")
    assert gr.get(sys_id)
    assert gr.short_description == f"{tag} 0"
    assert gr.get_display_value("opened_by")
    number = gr.number.get_value()

    by_field = client.GlideRecord("incident")
    assert by_field.get("number", number)
    assert by_field.sys_id == sys_id

    by_field.short_description = f"{tag} changed"
    assert by_field.update() == sys_id
    again = client.GlideRecord("incident")
    assert again.get(sys_id)
    assert again.short_description == f"{tag} changed"
    assert again.sys_mod_count == "1"

    assert again.delete()
    assert client.GlideRecord("incident").get(sys_id) is False


def test_update_multiple_and_delete_multiple_use_the_batch_api(client: ServiceNowClient):
    tag = uuid.uuid4().hex
    _insert(client, tag, 4)
    gr = client.GlideRecord("incident", batch_size=2)
    gr.add_query("short_description", "STARTSWITH", tag)
    gr.query()
    for record in gr:
        record.state = "2"
    assert gr.update_multiple()

    check = client.GlideRecord("incident")
    check.add_encoded_query(f"short_descriptionSTARTSWITH{tag}^state=2")
    check.query()
    assert len(check) == 4

    doomed = client.GlideRecord("incident")
    doomed.add_query("short_description", "STARTSWITH", tag)
    assert doomed.delete_multiple()
    gone = client.GlideRecord("incident")
    gone.add_query("short_description", "STARTSWITH", tag)
    gone.query()
    assert len(gone) == 0


def test_insert_keeps_a_new_guid_value(client: ServiceNowClient):
    sys_id = uuid.uuid4().hex
    gr = client.GlideRecord("problem")
    gr.initialize()
    gr.set_new_guid_value(sys_id)
    gr.short_description = "guid"
    assert gr.insert() == sys_id
    assert client.GlideRecord("problem").get(sys_id)


def test_oauth_password_grant_flow(sandbox: Sandbox):
    flow = ServiceNowPasswordGrantFlow(
        "admin",
        sandbox.users["admin"],
        sandbox.oauth_client.client_id,
        sandbox.oauth_client.client_secret,
    )
    client = ServiceNowClient(sandbox.url, flow, verify=str(sandbox.ca_path))
    gr = client.GlideRecord("sys_user")
    assert gr.get("user_name", "admin")
    assert gr.sys_id == "6816f79cc0a8016401c5a33be04be441"


def test_readonly_user_gets_a_role_exception_on_delete(sandbox: Sandbox, client):
    (sys_id,) = _insert(client, uuid.uuid4().hex, 1)
    reader = ServiceNowClient(
        sandbox.url, ("readonly", sandbox.users["readonly"]), verify=str(sandbox.ca_path)
    )
    gr = reader.GlideRecord("incident")
    assert gr.get(sys_id)
    with pytest.raises(RoleException):
        reader.table_api.delete(gr)


def test_very_long_query_goes_through_the_batch_api(client: ServiceNowClient):
    (sys_id,) = _insert(client, uuid.uuid4().hex, 1)
    gr = client.GlideRecord("incident")
    # > 10,000 characters: pysnc sends it as a GET inside a batch; unknown fields are ignored
    gr.add_encoded_query("^".join(["AAAA=BBBB"] * 1200) + f"^sys_id={sys_id}")
    gr.query()
    assert len(gr) == 1
    assert gr.next() and gr.sys_id == sys_id


def test_oauth_client_credentials_flow(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch):
    # pysnc fetches this token with a bare requests.post: only REQUESTS_CA_BUNDLE reaches it
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(sandbox.ca_path))
    flow = ServiceNowClientCredentialsFlow(
        sandbox.oauth_client.client_id, sandbox.oauth_client.client_secret
    )
    client = ServiceNowClient(sandbox.url, flow, verify=str(sandbox.ca_path))
    gr = client.GlideRecord("sys_user")
    assert gr.get("user_name", "admin")
