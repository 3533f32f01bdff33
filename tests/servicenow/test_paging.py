"""Paging: the page planner on its own, and keyset paging against a table others write to."""

from __future__ import annotations

import threading
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snowkit.sandbox import Sandbox
from snowkit.servicenow import BatchRequest, PagingMode, Query, ServiceNowAPIClient
from snowkit.servicenow.paging import Pager, keyset_query, offset_query

from .conftest import requests_sent


def test_keyset_query_adds_the_cursor_to_every_or_group_and_orders_by_sys_id() -> None:
    assert keyset_query("", None) == "ORDERBYsys_id"
    assert keyset_query("active=true", "abc") == "active=true^sys_id>abc^ORDERBYsys_id"
    assert keyset_query("a=1^ORb=2^NQc=3^ORDERBYname", "x") == (
        "a=1^ORb=2^sys_id>x^NQc=3^sys_id>x^ORDERBYsys_id"
    )


def test_offset_query_keeps_the_callers_order_and_adds_a_unique_tiebreaker() -> None:
    assert offset_query("a=1", "name") == "a=1^ORDERBYname^ORDERBYsys_id"
    assert offset_query("a=1^ORDERBYDESCu", "sys_id") == "a=1^ORDERBYDESCu^ORDERBYsys_id"
    assert offset_query("", "name", descending=True) == "ORDERBYDESCname^ORDERBYsys_id"


@settings(max_examples=200, deadline=None)
@given(
    ids=st.lists(st.from_regex(r"[0-9a-f]{32}", fullmatch=True), unique=True, max_size=60),
    page_size=st.integers(1, 15),
    limit=st.one_of(st.none(), st.integers(0, 70)),
)
def test_pager_walks_a_static_table_exactly_once(
    ids: list[str], page_size: int, limit: int | None
) -> None:
    table = sorted(ids)
    pager = Pager("", page_size, limit=limit)
    seen: list[str] = []
    requests = 0
    while (req := pager.next_request()) is not None:
        requests += 1
        assert requests <= len(table) + 2  # bounded loop
        after = req.query.split("sys_id>")[1].split("^")[0] if "sys_id>" in req.query else ""
        rows = [{"sys_id": s} for s in table if s > after][: req.limit]
        pager.advance(req, rows)
        for row in rows:
            if pager.done and pager.limit is not None and pager.returned >= pager.limit:
                break
            pager.count_returned(1)
            seen.append(row["sys_id"])
    expected = table if limit is None else table[:limit]
    assert seen == expected


def _seed(client: ServiceNowAPIClient, table: str, n: int, tag: str) -> set[str]:
    created: set[str] = set()
    requests = [
        BatchRequest("POST", f"/api/now/table/{table}", {"short_description": f"{tag}-{i}"})
        for i in range(n)
    ]
    for result in client.batch(requests):
        assert result.ok, result.error_message
        created.add(result.result["sys_id"])
    return created


def _random_insert(client: ServiceNowAPIClient, tag: str) -> str:
    """Insert with a random client-supplied sys_id (real sys_ids are not monotonic either)."""
    return client.create("problem", {"sys_id": uuid.uuid4().hex, "short_description": tag})[
        "sys_id"
    ]


def test_keyset_paging_has_no_duplicates_or_misses_while_another_thread_inserts(
    sb: Sandbox, client: ServiceNowAPIClient
) -> None:
    existing = _seed(client, "problem", 2500, "pre")
    stop = threading.Event()
    tick = threading.Event()
    inserted: list[str] = []

    def writer() -> None:
        with ServiceNowAPIClient(sb.url, client.credentials, verify=str(sb.ca_path)) as other:
            while not stop.is_set() and len(inserted) < 2000:
                inserted.append(_random_insert(other, "new-x"))
                tick.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen: list[str] = []
    try:
        query = (
            Query()
            .starts_with("short_description", "pre-")
            .or_()
            .starts_with("short_description", "new-")
        )
        started_with = len(inserted)
        rows = client.query("problem", query, fields=["short_description"], page_size=100)
        for i, row in enumerate(rows):
            seen.append(row["sys_id"])
            if i % 100 == 99:  # at each page boundary, let the writer land an insert
                tick.clear()
                tick.wait(5)
        during_scan = len(inserted) - started_with
    finally:
        stop.set()
        thread.join(30)
    assert len(seen) == len(set(seen)), "a record came back twice"
    assert existing <= set(seen), f"{len(existing - set(seen))} pre-existing records missed"
    assert during_scan >= 20, "the writer thread made too few inserts during the scan"
    assert seen == sorted(seen)


@pytest.mark.parametrize("mode", [PagingMode.KEYSET, PagingMode.OFFSET])
def test_inserts_between_pages_break_offset_paging_but_not_keyset(
    client: ServiceNowAPIClient, mode: PagingMode
) -> None:
    tag = f"mix{mode.value}"
    existing = _seed(client, "problem", 300, tag)
    seen: list[str] = []
    for i, row in enumerate(
        client.query(
            "problem",
            Query().starts_with("short_description", tag),
            fields=["short_description"],
            page_size=50,
            paging=mode,
        )
    ):
        seen.append(row["sys_id"])
        if i % 50 == 49:  # between pages, someone inserts records anywhere in sys_id order
            for _ in range(25):
                _random_insert(client, f"{tag}-late")
    duplicates = len(seen) - len(set(seen))
    missed = len(existing - set(seen))
    if mode is PagingMode.KEYSET:
        assert duplicates == 0 and missed == 0
    else:  # why keyset is the default: offset paging repeats rows when others insert
        assert duplicates > 0


def test_offset_paging_with_another_order_and_a_limit(client: ServiceNowAPIClient) -> None:
    _seed(client, "incident", 30, "ord")
    rows = list(
        client.query(
            "incident",
            Query().starts_with("short_description", "ord-"),
            fields=["short_description"],
            order_by="-short_description",
            page_size=7,
            limit=12,
        )
    )
    assert len(rows) == 12
    values = [r["short_description"] for r in rows]
    assert values == sorted(values, reverse=True)


def test_explicit_offset_mode_and_display_values(client: ServiceNowAPIClient) -> None:
    _seed(client, "incident", 5, "disp")
    rows = list(
        client.query(
            "incident",
            "short_descriptionSTARTSWITHdisp-",
            fields=["short_description", "priority"],
            page_size=2,
            display_value="all",
            paging=PagingMode.OFFSET,
        )
    )
    assert len(rows) == 5
    assert all(set(r["priority"]) == {"value", "display_value"} for r in rows)


@pytest.mark.parametrize("paging", [PagingMode.KEYSET, PagingMode.OFFSET])
def test_the_embedded_instances_last_page_ends_the_scan_by_itself(
    client: ServiceNowAPIClient, paging: PagingMode
) -> None:
    tag = f"last-{paging.value}"
    _seed(client, "incident", 7, tag)
    query = f"short_descriptionSTARTSWITH{tag}-"
    before = requests_sent(client, "GET", "query")
    assert len(list(client.query("incident", query, page_size=5, paging=paging))) == 7
    assert requests_sent(client, "GET", "query") - before == 2  # a full page, then a short one
    assert len(list(client.query("incident", query, page_size=7, paging=paging))) == 7
    assert requests_sent(client, "GET", "query") - before == 3  # the count says nothing follows
