"""The plan's yes/no questions: one Batch API request, answers in order, and a fallback to
one request per question when that answer cannot be used."""

from __future__ import annotations

from typing import Any

from snowkit.cmdb.questions import MISSING, Question, Rider, ask, ask_together
from snowkit.cmdb.relationships import RelTypeCache
from snowkit.servicenow import ServiceNowAPIClient
from snowkit.servicenow.batch import BatchRequest, BatchResult

SID = "u_unifi_source_id"


def _batch_sizes(client: ServiceNowAPIClient) -> list[int]:
    """The number of sub-requests of each Batch API request ``client`` sends from now on."""
    sizes: list[int] = []
    real = client.batch

    def counting(requests: Any, **kw: Any) -> Any:
        sizes.append(len(requests))
        return real(requests, **kw)

    client.batch = counting  # type: ignore[method-assign]
    return sizes


def test_questions_go_as_one_batch_request_with_answers_in_order(
    client: ServiceNowAPIClient,
) -> None:
    client.create("cmdb_ci_ip_switch", {"name": "sw", SID: "dev:1"})
    client.create("cmdb_ci_ip_switch", {"name": "bare"})
    batches = _batch_sizes(client)
    questions = [
        Question("cmdb_ci_ip_switch"),
        Question("cmdb_ci_ip_switch", f"{SID}ISEMPTY"),
        Question("cmn_location", f"{SID}ISNOTEMPTY"),
        Question("u_not_installed"),
        Question("cmdb_ci", f"{SID}=dev:1"),
    ]
    assert ask(client, questions, width=4) == [True, True, False, MISSING, True]
    assert batches == [5]


class _Answers:
    """A client whose Batch API answers every item with ``status`` (or fails as a whole)."""

    def __init__(self, status: int | None, message: str = "", rows: Any = None) -> None:
        self.status, self.message, self.rows = status, message, rows
        self.queries: list[str] = []

    def batch(self, requests: list[BatchRequest]) -> list[BatchResult]:
        if self.status is None:
            raise ConnectionError("the batch request failed")
        body = {"result": self.rows} if self.status == 200 else {"error": {}}
        return [
            BatchResult(str(n), r, self.status, body=body, error_message=self.message)
            for n, r in enumerate(requests)
        ]

    def query(self, table: str, query: Any = "", **kw: Any) -> Any:
        self.queries.append(table)
        return iter([{"sys_id": "1" * 32}])


def test_an_answer_that_is_not_one_means_asking_one_by_one() -> None:
    questions = [Question("cmdb_ci"), Question("cmn_location")]
    for client in (
        _Answers(None),  # the request failed as a whole
        _Answers(403, "Insufficient rights to query records"),  # an ACL, not an answer
        _Answers(200, rows={"not": "a list"}),
        _Answers(404, "No Record found"),
    ):
        assert ask_together(client, questions) is None
        assert ask(client, questions, width=2) == [True, True]
        assert sorted(client.queries) == ["cmdb_ci", "cmn_location"]


def test_invalid_table_is_an_answer() -> None:
    client = _Answers(400, "Invalid table u_gone")
    assert ask_together(client, [Question("u_gone")]) == [MISSING]
    assert client.queries == []


def test_a_rider_goes_in_the_same_request_and_gets_its_answer(
    client: ServiceNowAPIClient,
) -> None:
    client.create("cmdb_rel_type", {"name": "Feeds::Fed by"})
    batches = _batch_sizes(client)
    types = RelTypeCache(client)
    rider = types.rider(["Feeds::Fed by", "Never::Made"])
    assert rider is not None
    assert ask(client, [Question("cmdb_ci")], width=2, riders=[rider]) == [False]
    assert batches == [2]
    known = types.known(["Feeds::Fed by", "Never::Made"])
    assert list(known) == ["Feeds::Fed by"] and len(known["Feeds::Fed by"]) == 32
    assert types.rider(["Feeds::Fed by", "Never::Made"]) is None  # both answered, one missing


def test_riders_go_unanswered_when_the_questions_are_asked_one_by_one() -> None:
    taken: list[Any] = []
    rider = Rider(BatchRequest("GET", "/api/now/table/cmdb_rel_type"), taken.append)
    client = _Answers(None)
    assert ask(client, [Question("cmdb_ci")], width=2, riders=[rider]) == [True]
    assert taken == []


def test_a_row_hidden_by_acls_does_not_answer_no() -> None:
    """A real instance cuts the one-row page before its ACLs: an empty page with rows matching
    had answered "none", and the plan skipped adoption (a duplicate CI)."""
    hidden = BatchResult("1", BatchRequest("GET", "/api/now/table/cmdb_ci"), 200,
                         body={"result": []}, headers={"X-Total-Count": "3"})  # fmt: skip
    none = BatchResult("2", BatchRequest("GET", "/api/now/table/cmdb_ci"), 200,
                       body={"result": []}, headers={"x-total-count": "0"})  # fmt: skip

    class Client:
        def batch(self, requests: Any, **kw: Any) -> list[BatchResult]:
            return [hidden, none]

    assert ask_together(Client(), [Question("cmdb_ci"), Question("cmn_location")]) == [True, False]


def test_one_question_alone_is_asked_as_a_count(client: ServiceNowAPIClient) -> None:
    from snowkit.cmdb.questions import any_row

    client.create("cmdb_ci_ip_switch", {"name": "bare"})
    counted: list[str] = []
    real = client.count

    def counting(table: str, query: Any = "") -> int:
        counted.append(table)
        return real(table, query)

    client.count = counting  # type: ignore[method-assign]
    assert any_row(client, "cmdb_ci", f"{SID}ISEMPTY") is True
    assert any_row(client, "cmn_location") is False
    assert counted == ["cmdb_ci", "cmn_location"]
