"""Table API over real HTTPS: status codes, envelopes, headers, paging, rendering, ACLs."""

from __future__ import annotations

import re
import uuid

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snowkit.sandbox import Sandbox

SYS_ID = re.compile(r"^[0-9a-f]{32}$")


def _url(sb: Sandbox, path: str) -> str:
    return f"{sb.url}{path}"


def _create(admin: requests.Session, sb: Sandbox, **values: str) -> dict:
    response = admin.post(_url(sb, "/api/now/table/incident"), json=values)
    assert response.status_code == 201, response.text
    return response.json()["result"]


def test_crud_round_trip_uses_the_real_status_codes(sandbox: Sandbox, admin: requests.Session):
    created = admin.post(
        _url(sandbox, "/api/now/table/incident"),
        json={"short_description": "disk full", "bunk_field": "ignored"},
    )
    assert created.status_code == 201
    record = created.json()["result"]
    assert SYS_ID.match(record["sys_id"])
    assert record["short_description"] == "disk full"
    assert "bunk_field" not in record
    assert record["sys_mod_count"] == "0"
    assert created.headers["Location"] == _url(
        sandbox, f"/api/now/table/incident/{record['sys_id']}"
    )
    assert created.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert re.match(r"^[0-9a-f]{12}$", created.headers["X-Transaction-ID"])
    assert created.headers["Server"].startswith("ServiceNow")

    path = f"/api/now/table/incident/{record['sys_id']}"
    assert admin.get(_url(sandbox, path)).json()["result"]["short_description"] == "disk full"

    patched = admin.patch(_url(sandbox, path), json={"short_description": "disk emptied"})
    assert patched.status_code == 200
    assert patched.json()["result"]["sys_mod_count"] == "1"
    put = admin.put(_url(sandbox, path), json={"short_description": "via put"})
    assert put.status_code == 200
    assert put.json()["result"]["short_description"] == "via put"

    deleted = admin.delete(_url(sandbox, path))
    assert deleted.status_code == 204
    assert deleted.content == b""
    missing = admin.get(_url(sandbox, path))
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {
            "message": "No Record found",
            "detail": "Record doesn't exist or ACL restricts the record retrieval",
        },
        "status": "failure",
    }
    assert admin.patch(_url(sandbox, path), json={"x": "y"}).status_code == 404
    assert admin.delete(_url(sandbox, path)).status_code == 404


def test_client_supplied_sys_id_is_kept(sandbox: Sandbox, admin: requests.Session):
    sys_id = uuid.uuid4().hex
    record = _create(admin, sandbox, sys_id=sys_id, short_description="mine")
    assert record["sys_id"] == sys_id


def test_list_paging_headers_and_link(sandbox: Sandbox, admin: requests.Session):
    tag = uuid.uuid4().hex[:8]
    for i in range(5):
        _create(admin, sandbox, short_description=f"{tag}-{i}")
    params = {"sysparm_query": f"short_descriptionSTARTSWITH{tag}", "sysparm_limit": "2"}
    first = admin.get(_url(sandbox, "/api/now/table/incident"), params=params)
    assert first.status_code == 200
    assert first.headers["X-Total-Count"] == "5"
    assert len(first.json()["result"]) == 2
    links = dict(
        (rel, url) for url, rel in re.findall(r'<([^>]+)>;rel="(\w+)"', first.headers["Link"])
    )
    assert set(links) == {"first", "prev", "next", "last"}
    assert links["prev"].endswith("sysparm_limit=2&sysparm_offset=-2")
    assert links["next"].endswith("sysparm_offset=2")
    assert links["last"].endswith("sysparm_offset=4")
    assert ", " not in first.headers["Link"]

    seen = []
    offset = 0
    while offset < 5:
        page = admin.get(
            _url(sandbox, "/api/now/table/incident"),
            params={**params, "sysparm_offset": str(offset)},
        )
        seen += [r["short_description"] for r in page.json()["result"]]
        offset += 2
    assert sorted(seen) == [f"{tag}-{i}" for i in range(5)]

    last = admin.get(
        _url(sandbox, "/api/now/table/incident"), params={**params, "sysparm_offset": "4"}
    )
    assert 'rel="next"' not in last.headers["Link"]

    suppressed = admin.get(
        _url(sandbox, "/api/now/table/incident"),
        params={**params, "sysparm_suppress_pagination_header": "true"},
    )
    assert "Link" not in suppressed.headers
    assert suppressed.headers["X-Total-Count"] == "5"


def test_versioned_paths_and_empty_lists(sandbox: Sandbox, admin: requests.Session):
    query = {"sysparm_query": "short_description=no-such-thing-" + uuid.uuid4().hex}
    for prefix in ("/api/now/table", "/api/now/v2/table"):
        response = admin.get(_url(sandbox, f"{prefix}/incident"), params=query)
        assert response.status_code == 200
        assert response.json() == {"result": []}
        assert response.headers["X-Total-Count"] == "0"
    v1 = admin.get(_url(sandbox, "/api/now/v1/table/incident"), params=query)
    assert v1.status_code == 404  # v1 answers an empty list with 404 (reference §1)
    assert v1.json()["status"] == "failure"


def test_shorthand_filters_fields_and_empty_params(sandbox: Sandbox, admin: requests.Session):
    tag = uuid.uuid4().hex
    _create(admin, sandbox, short_description=tag)
    response = admin.get(
        _url(sandbox, "/api/now/table/incident"),
        params={
            "short_description": tag,
            "sysparm_fields": "short_description,number",
            "sysparm_view": "",
            "sysparm_limit": "",
            "sysparm_display_value": "False",
        },
    )
    result = response.json()["result"]
    assert len(result) == 1
    assert set(result[0]) == {"short_description", "number"}


def test_display_value_modes(sandbox: Sandbox, admin: requests.Session):
    record = _create(admin, sandbox, short_description="render me")
    path = _url(sandbox, f"/api/now/table/incident/{record['sys_id']}")
    all_mode = admin.get(path, params={"sysparm_display_value": "ALL"}).json()["result"]
    assert all_mode["short_description"] == {
        "display_value": "render me",
        "value": "render me",
    }
    opened_by = all_mode["opened_by"]
    assert opened_by["value"] == "6816f79cc0a8016401c5a33be04be441"
    assert opened_by["link"].endswith("/api/now/table/sys_user/6816f79cc0a8016401c5a33be04be441")
    no_link = admin.get(
        path,
        params={"sysparm_display_value": "all", "sysparm_exclude_reference_link": "true"},
    ).json()["result"]
    assert "link" not in no_link["opened_by"]
    raw = admin.get(path, params={"sysparm_exclude_reference_link": "true"}).json()["result"]
    assert raw["opened_by"] == "6816f79cc0a8016401c5a33be04be441"


def test_head_returns_headers_without_body(sandbox: Sandbox, admin: requests.Session):
    response = admin.head(_url(sandbox, "/api/now/table/incident"), params={"sysparm_limit": 1})
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["X-Total-Count"]) >= 0


def test_no_response_body_header(sandbox: Sandbox, admin: requests.Session):
    response = admin.post(
        _url(sandbox, "/api/now/table/incident"),
        json={"short_description": "quiet"},
        headers={"X-no-response-body": "true"},
    )
    assert response.status_code == 201
    assert response.content == b""
    assert "/api/now/table/incident/" in response.headers["Location"]


def test_invalid_table_and_unknown_path(sandbox: Sandbox, admin: requests.Session):
    response = admin.get(_url(sandbox, "/api/now/table/no_such_table"))
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Invalid table no_such_table"
    assert response.json()["status"] == "failure"
    assert admin.get(_url(sandbox, "/api/now/nothing/here")).status_code == 400


def test_malformed_json_is_a_400_envelope(sandbox: Sandbox, admin: requests.Session):
    for body in (b"{not json", b"[1, 2]", b'"text"', b""):
        response = admin.post(
            _url(sandbox, "/api/now/table/incident"),
            data=body,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 400, body
        assert response.json()["error"]["message"] == "Exception while reading request"


def test_custom_field_exists_only_after_sys_dictionary_post(
    sandbox: Sandbox, admin: requests.Session
):
    before = _create(admin, sandbox, short_description="x", u_site_code="S1")
    assert "u_site_code" not in before
    created = admin.post(
        _url(sandbox, "/api/now/table/sys_dictionary"),
        json={"name": "incident", "element": "u_site_code", "internal_type": "string"},
    )
    assert created.status_code == 201, created.text
    after = _create(admin, sandbox, short_description="y", u_site_code="S2")
    assert after["u_site_code"] == "S2"
    missing = admin.post(_url(sandbox, "/api/now/table/sys_dictionary"), json={"name": "incident"})
    assert missing.status_code == 400


def test_readonly_user_reads_but_gets_acl_errors_on_writes(
    sandbox: Sandbox, admin: requests.Session, readonly: requests.Session
):
    record = _create(admin, sandbox, short_description="protected")
    path = _url(sandbox, f"/api/now/table/incident/{record['sys_id']}")
    assert readonly.get(path).status_code == 200
    cases = [
        ("Insert", readonly.post(_url(sandbox, "/api/now/table/incident"), json={"a": "b"})),
        ("Update", readonly.patch(path, json={"short_description": "no"})),
        ("Delete", readonly.delete(path)),
    ]
    for action, response in cases:
        assert response.status_code == 403
        assert response.json() == {
            "error": {
                "message": "Operation Failed",
                "detail": f"ACL Exception {action} Failed due to security constraints",
            },
            "status": "failure",
        }


def test_cmdb_parent_table_returns_subclasses(sandbox: Sandbox, admin: requests.Session):
    serial = uuid.uuid4().hex
    created = admin.post(
        _url(sandbox, "/api/now/table/cmdb_ci_ip_switch"),
        json={"name": "sw-" + serial[:6], "serial_number": serial},
    ).json()["result"]
    rows = admin.get(
        _url(sandbox, "/api/now/table/cmdb_ci"), params={"serial_number": serial}
    ).json()["result"]
    assert [r["sys_id"] for r in rows] == [created["sys_id"]]
    assert rows[0]["sys_class_name"] == "cmdb_ci_ip_switch"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(max_size=200),
    query=st.text(alphabet=st.characters(codec="utf-8"), max_size=60),
)
def test_arbitrary_input_never_yields_a_server_error(
    sandbox: Sandbox, admin: requests.Session, body: bytes, query: str
):
    posted = admin.post(
        _url(sandbox, "/api/now/table/incident"),
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert posted.status_code in (201, 400)
    assert "Traceback" not in posted.text
    listed = admin.get(
        _url(sandbox, "/api/now/table/incident"),
        params={"sysparm_query": query, "sysparm_limit": "1"},
    )
    assert listed.status_code == 200
    assert "X-Total-Count" in listed.headers
