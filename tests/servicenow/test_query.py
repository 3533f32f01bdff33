"""The encoded-query builder: what it emits, what it refuses, and that no value changes a query.

The property tests check the builder against the embedded instance's own parser
(snowkit.sandbox.query.parse, which mirrors the platform's grammar): every accepted value parses
back to exactly the intended conditions. One test round-trips a hostile value over HTTP.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snowkit.sandbox.query import parse
from snowkit.servicenow import Query, QueryValueError, ServiceNowAPIClient

fields = st.from_regex(r"[a-z][a-z0-9_]{0,12}(\.[a-z][a-z0-9_]{0,8})?", fullmatch=True)
values = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8", exclude_characters="\x00"),
        st.sampled_from(list("^=,@!<>%*LIKEINSTANCEOFNQOR ")),
    ),
    max_size=30,
)

BUILDERS = {
    "eq": ("=", lambda q, f, v: q.eq(f, v)),
    "ne": ("!=", lambda q, f, v: q.ne(f, v)),
    "lt": ("<", lambda q, f, v: q.lt(f, v)),
    "le": ("<=", lambda q, f, v: q.le(f, v)),
    "gt": (">", lambda q, f, v: q.gt(f, v)),
    "ge": (">=", lambda q, f, v: q.ge(f, v)),
    "starts_with": ("STARTSWITH", lambda q, f, v: q.starts_with(f, v)),
    "ends_with": ("ENDSWITH", lambda q, f, v: q.ends_with(f, v)),
    "like": ("LIKE", lambda q, f, v: q.like(f, v)),
    "not_like": ("NOT LIKE", lambda q, f, v: q.not_like(f, v)),
}


def parsed_conditions(query: Query) -> list[list[list[tuple[str, str, str]]]]:
    parsed = parse(str(query))
    return [[[(c.field, c.operator, c.value) for c in term] for term in g] for g in parsed.groups]


@settings(max_examples=300, deadline=None)
@given(op=st.sampled_from(sorted(BUILDERS)), name=fields, value=values)
def test_single_condition_parses_back_exactly_or_is_refused(op: str, name: str, value: str) -> None:
    operator, build = BUILDERS[op]
    try:
        query = build(Query(), name, value)
    except QueryValueError:
        assert (
            "^" in value
            or "\r" in value
            or "\n" in value
            or _extends_operator(operator, value)
            or value.lower().startswith("javascript:")
        )
        return
    assert parsed_conditions(query) == [[[(name, operator, value)]]]


def _extends_operator(operator: str, value: str) -> bool:
    return any(
        len(longer) > len(operator) and (operator + value).startswith(longer)
        for longer in ("<=", ">=", "INSTANCEOF", "NOT IN", "NOT LIKE")
    )


@settings(max_examples=200, deadline=None)
@given(name=fields, items=st.lists(values, min_size=1, max_size=5), negate=st.booleans())
def test_in_lists_parse_back_exactly_or_are_refused(
    name: str, items: list[str], negate: bool
) -> None:
    try:
        query = Query().not_in(name, items) if negate else Query().in_(name, items)
    except QueryValueError:
        assert any(
            set(v) & {"^", ",", "\r", "\n"} or v.lower().startswith("javascript:") for v in items
        ) or (
            not negate and "STANCEOF".startswith(items[0][:8]) and items[0].startswith("STANCEOF")
        )
        return
    operator = "NOT IN" if negate else "IN"
    assert parsed_conditions(query) == [[[(name, operator, ",".join(items))]]]


@settings(max_examples=200, deadline=None)
@given(a=values, b=values, c=values)
def test_compound_queries_keep_their_structure(a: str, b: str, c: str) -> None:
    try:
        query = (
            Query().eq("name", a).or_().starts_with("name", b).new_query().like("serial_number", c)
        )
    except QueryValueError:
        assert any(
            "^" in v or "\r" in v or "\n" in v or v.lower().startswith("javascript:")
            for v in (a, b, c)
        )
        return
    assert parsed_conditions(query) == [
        [[("name", "=", a), ("name", "STARTSWITH", b)]],
        [[("serial_number", "LIKE", c)]],
    ]


def test_encoded_form_matches_servicenow_syntax() -> None:
    query = (
        Query()
        .eq("active", True)
        .ne("state", 7)
        .in_("priority", [1, 2])
        .is_empty("assigned_to")
        .or_()
        .is_not_empty("assignment_group")
        .new_query()
        .instance_of("cmdb_ci_netgear")
        .order_by("name")
        .order_by_desc("sys_updated_on")
    )
    assert str(query) == (
        "active=true^state!=7^priorityIN1,2^assigned_toISEMPTY^ORassignment_groupISNOTEMPTY"
        "^NQsys_class_nameINSTANCEOFcmdb_ci_netgear^ORDERBYname^ORDERBYDESCsys_updated_on"
    )


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Query().eq("name", "a^ORsys_id!=x"), "contains '^'"),
        (lambda: Query().eq("Name", "x"), "invalid field name"),
        (lambda: Query().eq("name=x^", "x"), "invalid field name"),
        (lambda: Query().eq("a..b", "x"), "invalid field name"),
        (lambda: Query().in_("name", ["a,b"]), "contains ','"),
        (lambda: Query().in_("name", "abc"), "list of values"),
        (lambda: Query().in_("name", []), "at least one"),
        (lambda: Query().lt("count", "=5"), "would read as operator '<='"),
        (lambda: Query().in_("sys_class_name", ["STANCEOFx"]), "INSTANCEOF"),
        (lambda: Query().eq("caller_id", "javascript:gs.getUserID()"), "server-side script"),
        (lambda: Query().eq("name", "a\nb"), "CR or LF"),
        (lambda: Query().or_().eq("name", "x"), "must follow a condition"),
        (lambda: Query().new_query(), "must follow"),
        (lambda: Query().eq_exact("name", "a^b").or_(), "cannot follow eq_exact"),
        (lambda: Query().eq("a", "1").new_query().eq_exact("name", "a^b"), "cannot be combined"),
    ],
)
def test_refusals_say_why(build, message: str) -> None:
    with pytest.raises(QueryValueError, match=re.escape(message)):
        build()


def test_script_values_need_an_explicit_opt_in() -> None:
    assert str(Query().eq("caller_id", "javascript:gs.getUserID()", allow_script=True)) == (
        "caller_id=javascript:gs.getUserID()"
    )


@settings(max_examples=200, deadline=None)
@given(value=st.text(max_size=25).filter(lambda v: not set(v) & {"\x00", "\r", "\n"}))
def test_eq_exact_never_lets_the_value_reach_the_parser_as_syntax(value: str) -> None:
    query = Query().eq("state", "1").eq_exact("name", value)
    parsed = parse(str(query))
    assert len(parsed.groups) == 1  # no ^NQ smuggled in
    conds = parsed.conditions()
    assert all(c.field in {"state", "name"} for c in conds)
    assert not any(c.value.lower().startswith("javascript:") for c in conds)
    if query.exact_filters:  # a superset on the server, made exact on the client
        assert query.matches_exact({"name": value})
        assert not query.matches_exact({"name": value + "x"})
        assert query.matches_exact({"name": {"value": value, "display_value": "?"}})
    else:  # a plain value: the server's own equality is exact
        assert [(c.field, c.operator, c.value) for c in conds][-1] == ("name", "=", value)


HOSTILE = "a^ORsys_id!=0^NQ=name=ü=^^b,c^ORDERBYDESCname^javascript:gs.x()^"


def test_hostile_value_round_trips_through_the_client(client: ServiceNowAPIClient) -> None:
    target = client.create("incident", {"short_description": HOSTILE})
    near = [HOSTILE[:-1], HOSTILE + "x", "a", "b,c", HOSTILE.replace("ü", "u")]
    for text in near:
        client.create("incident", {"short_description": text})
    found = list(
        client.query("incident", Query().eq_exact("short_description", HOSTILE), page_size=2)
    )
    assert [r["sys_id"] for r in found] == [target["sys_id"]]
    assert found[0]["short_description"] == HOSTILE
    assert client.count("incident", Query().eq_exact("short_description", HOSTILE)) == 1


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=st.text(min_size=1, max_size=20).filter(lambda v: not set(v) & {"\x00", "\r", "\n"}))
def test_any_value_finds_exactly_its_record_over_http(
    client: ServiceNowAPIClient, value: str
) -> None:
    created = client.create("problem", {"short_description": value})
    found = list(client.query("problem", Query().eq_exact("short_description", value)))
    assert created["sys_id"] in [r["sys_id"] for r in found]
    assert all(r["short_description"] == value for r in found)
