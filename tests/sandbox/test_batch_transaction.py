"""One SQLite transaction per Batch API request: each item still succeeds or fails on its own.

The sandbox runs a batch in one transaction (one commit per request, not per item) and caches
insert plans and renderers per schema version; these tests pin what must not change with that:
per-item failure isolation (a failed insert leaves no trace, not even a consumed number),
earlier items surviving a batch that fails part way, fields added inside a batch, concurrent
batches and IRE calls, and column-trimmed ``sysparm_fields`` lists.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import UTC, datetime

import pytest
import requests

from snowkit.sandbox import Sandbox
from snowkit.sandbox.store import DuplicateRecord, Store
from tests.sandbox.conftest import session_for


def _b64(value: object) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def _post(table: str, body: dict, item_id: str, query: str = "") -> dict:
    return {
        "id": item_id,
        "method": "POST",
        "url": f"/api/now/table/{table}{query}",
        "headers": [{"name": "Content-Type", "value": "application/json"}],
        "body": _b64(body),
    }


def _run(session: requests.Session, sb: Sandbox, items: list[dict]) -> dict[str, dict]:
    response = session.post(f"{sb.url}/api/now/v1/batch", json={"rest_requests": items})
    assert response.status_code == 200, response.text
    return {item["id"]: item for item in response.json()["serviced_requests"]}


def _body(item: dict) -> dict:
    return json.loads(base64.b64decode(item["body"]))


def test_a_failed_item_is_isolated_and_consumes_no_number(
    sandbox: Sandbox, admin: requests.Session
):
    tag = uuid.uuid4().hex
    existing = admin.post(
        f"{sandbox.url}/api/now/table/incident", json={"short_description": tag}
    ).json()["result"]
    by_id = _run(
        admin,
        sandbox,
        [
            _post("incident", {"short_description": tag + "-a"}, "a"),
            # a duplicate sys_id: the number default was drawn before the INSERT failed
            _post(
                "incident", {"short_description": tag + "-dup", "sys_id": existing["sys_id"]}, "d"
            ),
            _post("incident", {"short_description": tag + "-b"}, "b"),
        ],
    )
    assert [by_id[i]["status_code"] for i in "adb"] == [201, 400, 201]
    assert "already exists" in _body(by_id["d"])["error"]["detail"]
    first, second = _body(by_id["a"])["result"], _body(by_id["b"])["result"]
    assert int(second["number"][3:]) == int(first["number"][3:]) + 1  # rolled back, not skipped
    listed = admin.get(
        f"{sandbox.url}/api/now/table/incident",
        params={"sysparm_query": f"short_descriptionSTARTSWITH{tag}", "sysparm_fields": "sys_id"},
    ).json()["result"]
    assert len(listed) == 3  # the existing one, a and b: committed; the duplicate left nothing


def test_items_before_a_broken_entry_stay_written(sandbox: Sandbox, admin: requests.Session):
    tag = uuid.uuid4().hex
    response = admin.post(
        f"{sandbox.url}/api/now/v1/batch",
        json={"rest_requests": [_post("incident", {"short_description": tag}, "1"), "broken"]},
    )
    assert response.status_code == 400  # the envelope is unusable from the second entry on
    listed = admin.get(
        f"{sandbox.url}/api/now/table/incident",
        params={"sysparm_query": f"short_description={tag}"},
    ).json()["result"]
    assert len(listed) == 1  # as when every item committed by itself


def test_a_field_added_in_a_batch_is_writable_and_rendered_in_the_same_batch(
    sandbox: Sandbox, admin: requests.Session
):
    field = "u_batch_" + uuid.uuid4().hex[:8]
    query = f"?sysparm_fields=sys_id,name,{field}"
    before = _run(admin, sandbox, [_post("cmdb_ci_computer", {"name": "before"}, "0", query)])
    assert field not in _body(before["0"])["result"]  # renderer and plan cached without it
    by_id = _run(
        admin,
        sandbox,
        [
            _post("sys_dictionary", {"name": "cmdb_ci", "element": field}, "1"),
            _post("cmdb_ci_computer", {"name": "pc", field: "yes"}, "2", query),
        ],
    )
    assert by_id["1"]["status_code"] == 201
    assert _body(by_id["2"])["result"][field] == "yes"
    sys_id = _body(by_id["2"])["result"]["sys_id"]
    stored = admin.get(f"{sandbox.url}/api/now/table/cmdb_ci/{sys_id}").json()["result"]
    assert stored[field] == "yes"


def test_concurrent_batches_single_calls_and_ire_neither_deadlock_nor_lose_writes(
    sandbox: Sandbox,
):
    tag = uuid.uuid4().hex
    errors: list[BaseException] = []

    def ire_payload(n: int) -> dict:
        name = f"{tag}-ire-{n}"
        return {"items": [{"className": "cmdb_ci_ip_switch", "values": {"name": name}}]}

    def worker(n: int) -> None:
        try:
            with session_for(sandbox) as session:
                for round_ in range(3):
                    ire_item = {
                        "id": "ire",
                        "method": "POST",
                        "url": "/api/now/identifyreconcile",
                        "body": _b64(ire_payload(n * 10 + round_)),
                    }
                    items = [
                        _post("cmdb_ci_computer", {"name": f"{tag}-{n}-{round_}-{i}"}, str(i))
                        for i in range(5)
                    ]
                    by_id = _run(session, sandbox, [*items, ire_item])
                    assert all(item["status_code"] in (200, 201) for item in by_id.values())
                    single = session.post(
                        f"{sandbox.url}/api/now/table/cmdb_ci_computer",
                        json={"name": f"{tag}-{n}-{round_}-single"},
                    )
                    assert single.status_code == 201
                    top = session.post(
                        f"{sandbox.url}/api/now/identifyreconcile",
                        json=ire_payload(1000 + n * 10 + round_),
                    )
                    assert top.status_code == 200
        except BaseException as exc:  # reported below, with the thread's own assertion
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "deadlock"
    assert not errors, errors
    total = sandbox.store.count("cmdb_ci_computer", f"nameSTARTSWITH{tag}")
    assert total == 6 * 3 * 6
    assert sandbox.store.count("cmdb_ci_ip_switch", f"nameSTARTSWITH{tag}-ire") == 6 * 3 * 2


def test_store_transaction_commits_what_completed_and_nests():
    store = Store(":memory:")
    with pytest.raises(RuntimeError), store.transaction():
        kept = store.insert("cmdb_ci_computer", {"name": "kept"}, user="admin")
        with store.transaction():  # joins the outer transaction
            store.insert("cmdb_ci_computer", {"name": "inner"}, user="admin")
        with pytest.raises(DuplicateRecord):
            store.insert("cmdb_ci_computer", {"sys_id": kept["sys_id"]}, user="admin")
        raise RuntimeError("the caller fails after its writes")
    names = {r["name"] for r in store.list("cmdb_ci_computer", "nameINkept,inner")[0]}
    assert names == {"kept", "inner"}
    # the connection is usable on its own again
    assert store.insert("cmdb_ci_computer", {"name": "after"}, user="admin")["name"] == "after"


def test_insert_answers_the_stored_record():
    clock = datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)
    store = Store(":memory:", clock=lambda: clock)
    made = store.insert(
        "cmdb_ci_hardware",
        {"name": "sw", "sys_class_name": "cmdb_ci_ip_switch", "serial_number": 7, "x": "ignored"},
        user="admin",
    )
    assert made == store.get("cmdb_ci_hardware", made["sys_id"])
    assert list(made) == list(store.schema().fields("cmdb_ci_hardware"))
    assert made["sys_class_name"] == "cmdb_ci_ip_switch"
    assert made["serial_number"] == "7"
    assert made["sys_created_on"] == made["sys_updated_on"] == "2031-02-03 04:05:06"
    assert made["sys_mod_count"] == "0"
    full = store.get("cmdb_ci_ip_switch", made["sys_id"])
    assert full is not None and full["sys_tags"] == ""


def test_list_with_fields_reads_only_those_columns():
    store = Store(":memory:")
    loc = store.insert("cmn_location", {"name": "HQ"}, user="admin")
    store.insert("cmdb_ci_computer", {"name": "pc", "location": loc["sys_id"]}, user="admin")
    rows, total = store.list(
        "cmdb_ci_computer", "name=pc", fields=["name", "location.name", "nope"]
    )
    assert total == 1
    assert rows == [{"name": "pc", "location": loc["sys_id"]}]
    rows, _ = store.list("cmdb_ci_computer", "name=pc", fields=["nope"])
    assert len(rows) == 1
    everything, _ = store.list("cmdb_ci_computer", "name=pc")
    assert everything[0]["name"] == "pc" and "sys_created_on" in everything[0]


def test_sysparm_fields_pages_render_as_before(sandbox: Sandbox, admin: requests.Session):
    tag = uuid.uuid4().hex
    loc = admin.post(f"{sandbox.url}/api/now/table/cmn_location", json={"name": tag}).json()
    admin.post(
        f"{sandbox.url}/api/now/table/cmdb_ci_computer",
        json={"name": tag, "location": loc["result"]["sys_id"]},
    )
    params = {"sysparm_query": f"name={tag}"}
    full = admin.get(f"{sandbox.url}/api/now/table/cmdb_ci_computer", params=params).json()
    picked = admin.get(
        f"{sandbox.url}/api/now/table/cmdb_ci_computer",
        params={**params, "sysparm_fields": "location.name,name,location,bogus,name"},
    ).json()
    record = full["result"][0]
    assert picked["result"] == [{"location.name": tag, "name": tag, "location": record["location"]}]
