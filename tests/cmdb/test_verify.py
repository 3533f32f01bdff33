"""Read-back verification: mismatches, missing records, columns the table does not have."""

from __future__ import annotations

from typing import Any

from snowkit.cmdb.verify import Expectation, verify
from snowkit.servicenow import ServiceNowAPIClient


def test_verify_reports_each_difference(client: ServiceNowAPIClient) -> None:
    for n in range(3):
        client.create(
            "cmdb_ci_ip_switch",
            {"name": f"sw-{n}", "ip_address": f"10.0.0.{n}", "u_unifi_source_id": f"d{n}"},
        )
    expectations = [
        Expectation("cmdb_ci_ip_switch", "d0", {"name": "sw-0", "ip_address": "10.0.0.0"}),
        Expectation("cmdb_ci_ip_switch", "d1", {"name": "changed-by-a-rule"}),
        Expectation("cmdb_ci_ip_switch", "d2", {"name": "sw-2", "u_not_a_column": "x"}),
        Expectation("cmdb_ci_ip_switch", "d9", {"name": "never-landed"}),
    ]
    result = verify(client, expectations)
    assert (result.checked, result.matched) == (4, 2)
    assert result.missing == ["d9"]
    assert [(m.source_id, m.field, m.expected, m.actual) for m in result.mismatches] == [
        ("d1", "name", "changed-by-a-rule", "sw-1")
    ]
    assert result.unstored_fields == {"cmdb_ci_ip_switch": ["u_not_a_column"]}
    assert not result.ok
    assert result.to_dict()["mismatches"] == 1


def test_many_records_are_read_in_batched_queries(client: ServiceNowAPIClient) -> None:
    rows = [{"name": f"n{n}", "u_unifi_source_id": f"s{n}"} for n in range(25)]
    for row in rows:
        client.create("cmdb_ci_hardware", row)
    before = client.metrics.get_operation_metrics("query").total_requests
    result = verify(
        client,
        [
            Expectation("cmdb_ci_hardware", r["u_unifi_source_id"], {"name": r["name"]})
            for r in rows
        ],
        in_chunk=10,
    )
    assert result.ok and result.matched == 25
    assert client.metrics.get_operation_metrics("query").total_requests - before == 3


def _estate() -> Any:
    from snowkit.cmdb.transform import CMDBRecord, TransformResult

    records = [CMDBRecord("cmn_location", "site:0", {"name": "HQ"}, "location")]
    for d in range(4):
        values = {"name": f"sw-{d}", "serial_number": f"S{d}", "ip_address": f"10.0.0.{d}"}
        records.append(
            CMDBRecord("cmdb_ci_ip_switch", f"dev:{d}", values, "switch", {"location": "site:0"})
        )
    return TransformResult(records=records, relationships=[])


def _queries(client: ServiceNowAPIClient) -> int:
    return client.metrics.get_operation_metrics("query").total_requests


def test_writes_whose_answers_show_the_stored_record_are_not_read_back(
    client: ServiceNowAPIClient,
) -> None:
    from snowkit.cmdb.apply import SyncEngine

    engine = SyncEngine(client, batch_size=2, workers=2)
    result = _estate()
    _, report = engine.sync(result, progress=False, verify=False)
    assert report.status == "success"
    before = _queries(client)
    outcome = engine.verify()
    assert _queries(client) == before  # every record was shown by its write's answer
    assert outcome.ok and outcome.checked == outcome.matched == len(result.records)
    assert outcome.proven_by_answer == len(result.records)
    assert outcome.to_dict()["proven_by_answer"] == len(result.records)


def test_an_answer_that_does_not_show_what_was_sent_is_read_back_and_compared(
    client: ServiceNowAPIClient, monkeypatch: Any
) -> None:
    # dev:1's answer shows another name (as a business rule would); the CMDB is then changed
    # behind our back: the read-back must find and report the difference field by field.
    from snowkit.cmdb.apply import SyncEngine

    real_batch = client.batch

    def tampered(requests: Any, *a: Any, **kw: Any) -> Any:
        results = real_batch(requests, *a, **kw)
        for res in results:
            shown = res.result
            if isinstance(shown, dict) and shown.get("u_unifi_source_id") == "dev:1":
                shown["name"] = "renamed-by-a-rule"
        return results

    monkeypatch.setattr(client, "batch", tampered)
    engine = SyncEngine(client, batch_size=2, workers=2)
    result = _estate()
    _, report = engine.sync(result, progress=False, verify=False)
    assert report.status == "success"
    row = next(iter(client.query("cmdb_ci", "u_unifi_source_id=dev:1", fields=["sys_id"])))
    client.update("cmdb_ci_ip_switch", row["sys_id"], {"ip_address": "10.9.9.9"})
    before = _queries(client)
    outcome = engine.verify()
    assert _queries(client) - before == 1  # dev:1 alone is read back
    assert outcome.proven_by_answer == len(result.records) - 1
    assert outcome.checked == len(result.records)
    assert [(m.source_id, m.field, m.expected, m.actual) for m in outcome.mismatches] == [
        ("dev:1", "ip_address", "10.0.0.1", "10.9.9.9")
    ]
