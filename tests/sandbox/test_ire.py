"""IRE with the Hardware rule: insert, update, no change, matching order, relations, errors."""

from __future__ import annotations

import uuid

import requests

from snowkit.sandbox import Sandbox


def _ire(session: requests.Session, sb: Sandbox, payload: dict, dry_run: bool = False) -> dict:
    path = "/api/now/identifyreconcile" + ("/query" if dry_run else "")
    response = session.post(
        f"{sb.url}{path}", params={"sysparm_data_source": "ServiceNow"}, json=payload
    )
    assert response.status_code == 200, response.text
    return response.json()["result"]


def _switch(name: str, serial: str = "", **extra: str) -> dict:
    values = {"name": name, **extra}
    if serial:
        values["serial_number"] = serial
    return {"className": "cmdb_ci_ip_switch", "values": values}


def test_insert_then_no_change_then_update(sandbox: Sandbox, admin: requests.Session):
    serial = uuid.uuid4().hex
    first = _ire(admin, sandbox, {"items": [_switch("sw-a", serial, ip_address="10.0.0.1")]})
    item = first["items"][0]
    assert item["operation"] == "INSERT"
    stored = admin.get(f"{sandbox.url}/api/now/table/cmdb_ci_ip_switch/{item['sysId']}")
    assert stored.json()["result"]["serial_number"] == serial

    again = _ire(admin, sandbox, {"items": [_switch("sw-a", serial, ip_address="10.0.0.1")]})
    assert again["items"][0]["operation"] == "NO_CHANGE"
    assert again["items"][0]["sysId"] == item["sysId"]
    assert again["items"][0]["identificationAttempts"][0]["attemptResult"] == "MATCHED"

    changed = _ire(admin, sandbox, {"items": [_switch("sw-a", serial, ip_address="10.0.0.2")]})
    assert changed["items"][0]["operation"] == "UPDATE"
    record = admin.get(f"{sandbox.url}/api/now/table/cmdb_ci/{item['sysId']}").json()["result"]
    assert record["ip_address"] == "10.0.0.2"


def test_match_falls_back_to_name_then_the_network_adapter(
    sandbox: Sandbox, admin: requests.Session
):
    name = "sw-" + uuid.uuid4().hex[:10]
    mac = "aa:bb:cc:" + ":".join(uuid.uuid4().hex[i : i + 2] for i in (0, 2, 4))
    adapter = {"className": "cmdb_ci_network_adapter", "values": {"name": mac, "mac_address": mac}}
    inserted = _ire(admin, sandbox, {"items": [{**_switch(name, mac_address=mac),
                                                "lookup": [adapter]}]})["items"][0]  # fmt: skip
    by_name = _ire(admin, sandbox, {"items": [_switch(name, mac_address=mac)]})["items"][0]
    assert by_name["sysId"] == inserted["sysId"]
    attempts = [a["attemptResult"] for a in by_name["identificationAttempts"]]
    assert attempts == ["SKIPPED", "MATCHED", "SKIPPED"]
    only_mac = {"className": "cmdb_ci_ip_switch", "values": {"mac_address": mac}}
    by_adapter = _ire(admin, sandbox, {"items": [{**only_mac, "lookup": [adapter]}]})["items"][0]
    assert by_adapter["sysId"] == inserted["sysId"]
    assert by_adapter["identificationAttempts"][-1]["searchOnTable"] == "cmdb_ci_network_adapter"


def test_a_mac_without_an_adapter_name_identifies_nothing(
    sandbox: Sandbox, admin: requests.Session
):
    """As the real Hardware rule: its MAC entry is mac_address + name of a network adapter."""
    mac = "aa:bb:cc:" + ":".join(uuid.uuid4().hex[i : i + 2] for i in (0, 2, 4))
    only_mac = {"className": "cmdb_ci_ip_switch", "values": {"mac_address": mac}}
    half = {"className": "cmdb_ci_network_adapter", "values": {"mac_address": mac}}
    for item in (only_mac, {**only_mac, "lookup": [half]}):
        (result,) = _ire(admin, sandbox, {"items": [item]})["items"]
        assert result["sysId"] == "Unknown"
        assert result["errors"][0]["error"] == "MISSING_MATCHING_ATTRIBUTES"


def test_relations_by_index_create_cmdb_rel_ci(sandbox: Sandbox, admin: requests.Session):
    tag = uuid.uuid4().hex
    payload = {
        "items": [
            {"className": "cmdb_ci_ip_router", "values": {"name": "gw", "serial_number": tag}},
            _switch("sw", tag + "-sw"),
        ],
        "relations": [{"parent": 0, "child": 1, "type": "Connects to::Connected by"}],
    }
    result = _ire(admin, sandbox, payload)
    assert result["relations"][0]["operation"] == "INSERT"
    parent, child = (item["sysId"] for item in result["items"])
    rels = admin.get(
        f"{sandbox.url}/api/now/table/cmdb_rel_ci",
        params={"parent": parent, "child": child},
    ).json()["result"]
    assert len(rels) == 1
    assert rels[0]["type"]["value"] == "5599a965c0a8010e00da3b58b113d70e"
    assert _ire(admin, sandbox, payload)["relations"][0]["operation"] == "NO_CHANGE"


def test_errors_are_reported_per_item(sandbox: Sandbox, admin: requests.Session):
    payload = {
        "items": [
            {"className": "cmdb_ci_ip_switch", "values": {"ip_address": "10.9.9.9"}},
            {"className": "cmn_location", "values": {"name": "HQ"}},
            {"className": "no_such_class", "values": {"name": "x"}},
            _switch("ok-" + uuid.uuid4().hex),
        ],
        "relations": [
            {"parent": 3, "child": 9, "type": "Contains::Contained by"},
            {"parent": 3, "child": 3, "type": "Nope::Nope"},
        ],
    }
    result = _ire(admin, sandbox, payload)
    codes = [[e["error"] for e in item["errors"]] for item in result["items"]]
    assert codes == [
        ["MISSING_MATCHING_ATTRIBUTES"],
        ["IDENTIFICATION_RULE_MISSING"],
        ["INVALID_INPUT_DATA"],
        [],
    ]
    assert result["items"][0]["sysId"] == "Unknown"
    assert [r["errors"][0]["error"] for r in result["relations"]] == [
        "INVALID_INPUT_DATA",
        "INVALID_INPUT_DATA",
    ]


def test_query_endpoint_is_a_dry_run(sandbox: Sandbox, admin: requests.Session):
    serial = uuid.uuid4().hex
    result = _ire(admin, sandbox, {"items": [_switch("dry", serial)]}, dry_run=True)
    assert result["items"][0]["operation"] == "INSERT"
    found = admin.get(
        f"{sandbox.url}/api/now/table/cmdb_ci", params={"serial_number": serial}
    ).json()["result"]
    assert found == []


def test_readonly_and_bad_payloads(
    sandbox: Sandbox, admin: requests.Session, readonly: requests.Session
):
    denied = readonly.post(
        f"{sandbox.url}/api/now/identifyreconcile", json={"items": [_switch("x", "y")]}
    )
    assert denied.status_code == 403
    for body in ({}, {"items": []}, {"items": "x"}):
        response = admin.post(f"{sandbox.url}/api/now/identifyreconcile", json=body)
        assert response.status_code == 400
        assert response.json()["status"] == "failure"


def _sourced(name: str, key: str, **values: str) -> dict:
    item = _switch(name, **values)
    item["sys_object_source_info"] = {"source_name": "UniFi", "source_native_key": key}
    return item


def test_source_native_key_identifies_before_the_rules(sandbox: Sandbox, admin: requests.Session):
    """Two CIs share a name; each source key keeps finding its own CI, not the name match."""
    name = "hue-" + uuid.uuid4().hex[:8]
    key_a, key_b = uuid.uuid4().hex, uuid.uuid4().hex
    first = _ire(admin, sandbox, {"items": [_sourced(name, key_a, ip_address="10.0.0.1")]})
    a = first["items"][0]
    assert a["operation"] == "INSERT"
    assert a["identificationAttempts"][0]["identifierName"] == "sys_object_source"
    assert a["identificationAttempts"][0]["attemptResult"] == "NO_MATCH"
    sources = admin.get(
        f"{sandbox.url}/api/now/table/sys_object_source",
        params={"sysparm_query": f"name=UniFi^id={key_a}"},
    ).json()["result"]
    assert [(s["target_sys_id"], s["target_table"]) for s in sources] == [
        (a["sysId"], "cmdb_ci_ip_switch")
    ]
    # a second CI with the same name, created outside this source
    other = admin.post(
        f"{sandbox.url}/api/now/table/cmdb_ci_ip_switch", json={"name": name}
    ).json()["result"]
    # key_a is matched through sys_object_source, whatever its name now matches
    again = _ire(admin, sandbox, {"items": [_sourced(name, key_a, ip_address="10.0.0.2")]})
    item = again["items"][0]
    assert (item["operation"], item["sysId"]) == ("UPDATE", a["sysId"])
    assert [x["attemptResult"] for x in item["identificationAttempts"]] == ["MATCHED"]
    # a key the source has not reported yet falls back to the Hardware rule (name: oldest)
    b = _ire(admin, sandbox, {"items": [_sourced(name, key_b)]})["items"][0]
    assert b["sysId"] == a["sysId"] and b["sysId"] != other["sys_id"]
    assert [x["attemptResult"] for x in b["identificationAttempts"]][:3] == [
        "NO_MATCH",
        "SKIPPED",
        "MULTI_MATCH",
    ]


def test_a_source_row_pointing_at_a_deleted_ci_falls_back_and_is_repointed(
    sandbox: Sandbox, admin: requests.Session
):
    key, serial = uuid.uuid4().hex, uuid.uuid4().hex
    first = _ire(admin, sandbox, {"items": [_sourced("sw-x", key, serial_number=serial)]})
    gone = first["items"][0]["sysId"]
    assert admin.delete(f"{sandbox.url}/api/now/table/cmdb_ci/{gone}").status_code == 204
    again = _ire(admin, sandbox, {"items": [_sourced("sw-x", key, serial_number=serial)]})
    item = again["items"][0]
    assert item["operation"] == "INSERT" and item["sysId"] != gone
    rows = admin.get(
        f"{sandbox.url}/api/now/table/sys_object_source",
        params={"sysparm_query": f"id={key}"},
    ).json()["result"]
    assert [r["target_sys_id"] for r in rows] == [item["sysId"]]


def test_the_dry_run_endpoint_records_no_source(sandbox: Sandbox, admin: requests.Session):
    key = uuid.uuid4().hex
    _ire(admin, sandbox, {"items": [_sourced("sw-q", key, serial_number=key)]}, dry_run=True)
    rows = admin.get(
        f"{sandbox.url}/api/now/table/sys_object_source",
        params={"sysparm_query": f"id={key}"},
    ).json()["result"]
    assert rows == []
