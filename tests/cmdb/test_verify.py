"""Read-back verification: mismatches, missing records, columns the table does not have."""

from __future__ import annotations

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
