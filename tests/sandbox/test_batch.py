"""Batch API: base64 items, outer identity, serviced/unserviced, X-Total-Count in sub-responses."""

from __future__ import annotations

import base64
import json
import uuid

import requests

from snowkit.sandbox import Sandbox


def _b64(value: object) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def _headers(item: dict) -> dict[str, str]:
    return {h["name"]: h["value"] for h in item["headers"]}


def _batch(session: requests.Session, sb: Sandbox, items: list[dict], batch_id=1) -> dict:
    response = session.post(
        f"{sb.url}/api/now/v1/batch",
        json={"batch_request_id": batch_id, "rest_requests": items},
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_mixed_batch_runs_every_item(sandbox: Sandbox, admin: requests.Session):
    tag = uuid.uuid4().hex
    created = admin.post(
        f"{sandbox.url}/api/now/table/incident", json={"short_description": tag}
    ).json()["result"]
    items = [
        {
            "id": "1",
            "method": "GET",
            "url": f"/api/now/table/incident?sysparm_query=short_description={tag}"
            "&sysparm_suppress_pagination_header=true",
        },
        {
            "id": "2",
            "method": "POST",
            "url": "/api/now/table/incident",
            "headers": [{"name": "Content-Type", "value": "application/json"}],
            "body": _b64({"short_description": tag + "-new"}),
        },
        {
            "id": "3",
            "method": "PATCH",
            "url": f"/api/now/table/incident/{created['sys_id']}?sysparm_display_value=all",
            "body": _b64({"short_description": tag + "-changed"}),
        },
        {"id": "4", "method": "DELETE", "url": f"/api/now/table/incident/{created['sys_id']}"},
        {
            "id": "5",
            "method": "GET",
            "url": "/api/now/table/nope",
            "exclude_response_headers": True,
        },
    ]
    result = _batch(admin, sandbox, items, batch_id=7)
    assert result["batch_request_id"] == "7"  # echoed as a string
    assert result["unserviced_requests"] == []
    by_id = {item["id"]: item for item in result["serviced_requests"]}
    assert [by_id[i]["status_code"] for i in "12345"] == [200, 201, 200, 204, 400]
    assert by_id["1"]["status_text"] == "OK"
    assert _headers(by_id["1"])["X-Total-Count"] == "1"
    listed = json.loads(base64.b64decode(by_id["1"]["body"]))["result"]
    assert listed[0]["sys_id"] == created["sys_id"]
    patched = json.loads(base64.b64decode(by_id["3"]["body"]))["result"]
    assert patched["short_description"]["value"] == tag + "-changed"
    assert by_id["4"]["body"] == ""
    assert by_id["5"]["headers"] == []
    assert all(isinstance(item["execution_time"], int) for item in by_id.values())


def test_sub_requests_run_with_the_outer_identity(sandbox: Sandbox, readonly: requests.Session):
    result = _batch(
        readonly,
        sandbox,
        [
            {"id": "a", "method": "GET", "url": "/api/now/table/sys_user?sysparm_limit=1"},
            {"id": "b", "method": "POST", "url": "/api/now/table/incident", "body": _b64({})},
        ],
    )
    codes = {item["id"]: item["status_code"] for item in result["serviced_requests"]}
    assert codes == {"a": 200, "b": 403}


def test_unserviced_items_by_fault(sandbox: Sandbox, admin: requests.Session):
    sandbox.set_faults({"batch_unserviced_rate": 1.0})
    try:
        result = _batch(
            admin,
            sandbox,
            [{"id": str(i), "method": "GET", "url": "/api/now/table/incident"} for i in range(3)],
        )
    finally:
        sandbox.set_faults(None)
    assert result["serviced_requests"] == []
    assert result["unserviced_requests"] == ["0", "1", "2"]


def test_bad_items_and_bad_envelopes(sandbox: Sandbox, admin: requests.Session):
    result = _batch(
        admin,
        sandbox,
        [
            {"id": "x", "method": "GET", "url": "no-leading-slash"},
            {"id": "y", "method": "POST", "url": "/api/now/v1/batch", "body": _b64({})},
            {"id": "z", "method": "POST", "url": "/api/now/table/incident", "body": "!!!"},
        ],
    )
    codes = {item["id"]: item["status_code"] for item in result["serviced_requests"]}
    assert codes == {"x": 400, "y": 400, "z": 400}
    bad = admin.post(f"{sandbox.url}/api/now/v1/batch", json={"rest_requests": "nope"})
    assert bad.status_code == 400
    assert bad.json()["status"] == "failure"
    assert admin.get(f"{sandbox.url}/api/now/v1/batch").status_code == 405
