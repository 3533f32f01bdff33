"""Batch API: size-aware chunking, per-item results and errors, unserviced items resent."""

from __future__ import annotations

import base64

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snowkit.ops.audit import AuditTrail, read_audit, verify_audit
from snowkit.sandbox import Sandbox
from snowkit.servicenow import BatchRequest, ServiceNowAPIClient
from snowkit.servicenow.batch import (
    MAX_ITEM_BYTES,
    BatchItemTooLargeError,
    assign_ids,
    chunk,
    decode_response,
    encode_item,
    envelope,
    is_idempotent,
)

from .conftest import AUDIT_KEY, audit_entries, requests_sent


def post(i: int, size: int = 10) -> BatchRequest:
    return BatchRequest(
        "POST", "/api/now/table/incident", {"short_description": "x" * size, "i": i}
    )


def test_items_are_base64_json_with_headers_and_string_batch_ids() -> None:
    (item,) = assign_ids([post(1)])
    body = envelope([item])
    assert isinstance(body["batch_request_id"], str)
    sub = body["rest_requests"][0]
    assert sub["method"] == "POST" and sub["id"] == "1"
    assert orjson.loads(base64.b64decode(sub["body"]))["i"] == 1
    assert {"name": "Content-Type", "value": "application/json"} in sub["headers"]


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 5000), min_size=1, max_size=40),
    max_bytes=st.integers(6000, 40000),
    max_items=st.integers(1, 12),
)
def test_chunks_respect_size_and_count_and_keep_order(
    sizes: list[int], max_bytes: int, max_items: int
) -> None:
    items = assign_ids([post(i, s) for i, s in enumerate(sizes)])
    chunks = list(chunk(items, max_bytes=max_bytes, max_items=max_items))
    assert [i.id for c in chunks for i in c] == [i.id for i in items]
    for c in chunks:
        assert len(c) <= max_items
        assert len(c) == 1 or len(orjson.dumps(envelope(c))) <= max_bytes


def test_an_item_over_the_per_item_cap_is_refused_with_advice() -> None:
    with pytest.raises(BatchItemTooLargeError, match="send it with the Table API"):
        assign_ids([post(1, MAX_ITEM_BYTES)])


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        assign_ids([BatchRequest("GET", "/x", id="a"), BatchRequest("GET", "/y", id="a")])


def test_decode_marks_listed_and_missing_items_pending() -> None:
    items = assign_ids([post(1), post(2), post(3)])
    ok = base64.b64encode(b'{"result": {"sys_id": "s1"}}').decode()
    bad = base64.b64encode(
        b'{"error": {"message": "Invalid table x", "detail": null}, "status": "failure"}'
    ).decode()
    results, pending = decode_response(
        {
            "serviced_requests": [
                {"id": "1", "status_code": 201, "body": ok, "headers": []},
                {"id": "2", "status_code": 400, "body": bad, "headers": []},
                {"id": "999", "status_code": 200, "body": ok},  # not ours: ignored
            ],
            "unserviced_requests": [],
        },
        items,
    )
    assert [r.id for r in results] == ["1", "2"]
    assert results[0].ok and results[0].result == {"sys_id": "s1"}
    assert not results[1].ok and results[1].error_message == "Invalid table x"
    assert [i.id for i in pending] == ["3"]  # neither serviced nor listed: resend too


def test_only_all_idempotent_batches_may_be_resent_blindly() -> None:
    assert is_idempotent(assign_ids([BatchRequest("GET", "/a"), BatchRequest("DELETE", "/b")]))
    assert not is_idempotent(assign_ids([BatchRequest("GET", "/a"), post(1)]))


def batch_posts(client: ServiceNowAPIClient) -> int:
    return requests_sent(client, "POST", "batch")


def test_batch_against_the_instance_with_per_item_errors(
    sb: Sandbox, client: ServiceNowAPIClient
) -> None:
    sb.set_faults({"missing_tables": ["cmdb_ci_wap_network"]})
    results = client.batch(
        [
            BatchRequest("POST", "/api/now/table/incident", {"short_description": "b1"}),
            BatchRequest("POST", "/api/now/table/cmdb_ci_wap_network", {"name": "ap"}),
            BatchRequest("GET", "/api/now/table/incident?sysparm_limit=1"),
        ]
    )
    assert [r.status_code for r in results] == [201, 400, 200]
    assert results[0].result["short_description"] == "b1"
    assert results[1].error.category.value == "invalid_table"
    assert "Invalid table" in results[1].error_message
    assert results[2].headers.get("X-Total-Count")


def test_unserviced_items_are_resent_until_serviced(
    sb: Sandbox, client: ServiceNowAPIClient
) -> None:
    sb.set_faults({"batch_unserviced_rate": 0.5, "seed": 3})
    reqs = [post(i) for i in range(30)]
    results = client.batch(reqs, max_rounds=12)
    assert all(r.ok for r in results), [r.error_message for r in results if not r.ok]
    assert [r.request for r in results] == reqs  # in order
    assert batch_posts(client) > 1  # some had to be resent
    sb.set_faults(None)
    assert client.count("incident", "short_description=xxxxxxxxxx") >= 30


def test_items_never_serviced_are_reported_after_bounded_rounds(
    sb: Sandbox, client: ServiceNowAPIClient
) -> None:
    sb.set_faults({"batch_unserviced_rate": 1.0})
    results = client.batch([post(1), post(2)], max_rounds=3)
    assert batch_posts(client) == 3
    assert all(not r.serviced and not r.ok for r in results)
    assert "not serviced after 3 batch rounds" in results[0].error_message


def test_large_loads_are_chunked(client: ServiceNowAPIClient) -> None:
    reqs = [post(i, 2000) for i in range(40)]
    results = client.batch(reqs, max_batch_bytes=30_000, max_items=25)
    assert all(r.ok for r in results)
    assert batch_posts(client) >= 3  # 40 items x ~2.7 kB under a 30 kB cap


def test_batch_writes_are_audited_in_one_checkpointed_block(
    make_client, trail: AuditTrail, audit_path
) -> None:
    with make_client(audit=trail) as c:
        rec = c.create("incident", {"short_description": "to-patch"})
        results = c.batch(
            [
                BatchRequest(
                    "POST",
                    "/api/now/table/incident",
                    {"short_description": "b-new"},
                    source_id="s-1",
                ),
                BatchRequest(
                    "PATCH",
                    f"/api/now/table/incident/{rec['sys_id']}",
                    {"short_description": "patched"},
                    before=rec,
                ),
                BatchRequest("GET", "/api/now/table/incident?sysparm_limit=1"),  # not audited
            ]
        )
    trail.close()
    assert all(r.ok for r in results)
    entries = audit_entries(audit_path)
    assert [e["action"] for e in entries] == ["create", "create", "update"]
    created, patched = entries[1], entries[2]
    assert created["source_id"] == "s-1" and created["sys_id"] == results[0].result["sys_id"]
    assert patched["before"]["short_description"] == "to-patch"
    assert patched["after"]["short_description"] == "patched"
    assert verify_audit(audit_path, AUDIT_KEY).ok


def test_a_lost_batch_answer_marks_its_writes_ambiguous_and_does_not_raise(
    sb: Sandbox, make_client, fake_sleep, trail: AuditTrail, audit_path
) -> None:
    with make_client(audit=trail, sleep=fake_sleep) as c:
        sb.set_faults({"ambiguous_write_rate": 1.0})
        results = c.batch([post(1), post(2)])
        sb.set_faults(None)
        assert all(r.ambiguous and not r.ok for r in results)
        assert results[0].error.category.value == "ambiguous_write"
        assert batch_posts(c) == 1 and fake_sleep.calls == []  # not resent
    trail.close()
    outcomes = [e["outcome"] for e in read_audit(audit_path) if "outcome" in e]
    assert outcomes == ["ambiguous", "ambiguous"]


def test_read_only_batches_are_retried_when_the_answer_is_lost(
    sb: Sandbox, client: ServiceNowAPIClient, fake_sleep
) -> None:
    sb.set_faults({"reset_rate": 1.0})
    fake_sleep.hook = lambda n: sb.set_faults(None)
    results = client.batch([BatchRequest("GET", "/api/now/table/incident?sysparm_limit=1")])
    assert results[0].ok and len(fake_sleep.calls) == 1


def test_an_unreadable_batch_answer_leaves_writes_ambiguous_not_an_exception() -> None:
    # A transaction cancelled at its time limit can cut the answer short after the writes
    # happened: batch() must not raise, and must not claim the writes failed cleanly.
    from snowkit.credentials import CredentialManager
    from tests.helpers.http import CannedResponse, canned_server

    with canned_server() as server:
        server.route(
            "/api/now/v1/batch",
            CannedResponse(200, body=b'{"batch_request_id": "1", "serviced_requ'),
        )
        creds = CredentialManager.static(basic=("admin", "pw-for-a-canned-server"))
        with ServiceNowAPIClient(server.url, creds) as client:
            results = client.batch([post(1), post(2)])
    assert [r.ok for r in results] == [False, False]
    assert all(r.ambiguous for r in results)
    assert "look the records up" in results[0].error.guidance.lower()


def _reference_encode(request: BatchRequest, item_id: str) -> tuple[dict, int]:
    """``encode_item`` before it stopped encoding each item twice, verbatim."""
    method = request.method.upper()
    headers = {"Accept": "application/json", **request.headers}
    payload: dict = {"id": item_id, "method": method, "url": request.url}
    if request.body is not None:
        raw = orjson.dumps(request.body)
        headers.setdefault("Content-Type", "application/json")
        payload["body"] = base64.b64encode(raw).decode("ascii")
    payload["headers"] = [{"name": k, "value": v} for k, v in headers.items()]
    return payload, len(orjson.dumps(payload)) + 1


@pytest.mark.parametrize(
    "request_",
    [
        BatchRequest("POST", "/api/now/table/x", body={"name": "a", "n": 1}),
        BatchRequest("PATCH", '/api/now/table/x/abc?q="é"', body={"u": "snow ❄\n\t\\"}),
        BatchRequest("DELETE", "/api/now/table/x/abc"),
        BatchRequest("GET", "/api/now/table/x", headers={"X-Custom": 'q"uote'}),
        BatchRequest("POST", "/api/now/table/x", body=[1, 2], headers={"Accept": "text/xml"}),
        BatchRequest("POST", "/api/now/table/x", body={}, headers={"Content-Type": "a/b"}),
        BatchRequest("post", "/api/now/table/x", body="x" * 1000, id="ï"),
    ],
)
def test_encode_item_matches_the_reference(request_: BatchRequest) -> None:
    """The size is computed without encoding the whole item: it must still be exact, and the
    payload (key order included) what it was."""
    item = encode_item(request_, request_.id or "7")
    payload, size = _reference_encode(request_, request_.id or "7")
    assert orjson.dumps(item.payload) == orjson.dumps(payload)
    assert item.size == size == len(orjson.dumps(item.payload)) + 1


def test_a_resent_batch_of_deletes_whose_first_send_ran_reports_them_done(
    sb: Sandbox, make_client, fake_sleep
) -> None:
    with make_client(sleep=fake_sleep) as client:
        ids = [client.create("cmdb_ci", {"name": f"gone-{i}"})["sys_id"] for i in range(3)]
        sb.set_faults({"ambiguous_write_rate": 1.0})  # deleted, then the answer is lost
        fake_sleep.hook = lambda n: sb.set_faults(None)
        deletes = [BatchRequest("DELETE", f"/api/now/table/cmdb_ci/{s}") for s in ids]
        results = client.batch(deletes)
        assert [client.get("cmdb_ci", s) for s in ids] == [None, None, None]
        assert all(r.ok and r.gone_on_retry and not r.error_message for r in results)
        assert requests_sent(client, "POST", "batch") == 2
        never = client.batch([BatchRequest("DELETE", f"/api/now/table/cmdb_ci/{ids[0]}")])
    assert not never[0].ok and never[0].status_code == 404  # one send: really not there
