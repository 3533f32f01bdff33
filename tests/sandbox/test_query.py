"""The encoded-query language: parsing, and the reference semantics of every operator."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snowkit.sandbox.query import (
    Condition,
    EncodedQuery,
    OrderBy,
    compare,
    evaluate,
    matches_condition,
    parse,
    parse_condition,
)


def conds(query: str) -> list[tuple[str, str, str]]:
    return [(c.field, c.operator, c.value) for c in parse(query).conditions()]


# -- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("active=true", ("active", "=", "true")),
        ("state!=7", ("state", "!=", "7")),
        ("short_descriptionLIKESAP", ("short_description", "LIKE", "SAP")),
        ("short_descriptionNOT LIKEa b", ("short_description", "NOT LIKE", "a b")),
        ("nameNOTLIKEx", ("name", "NOT LIKE", "x")),
        ("nameCONTAINSa", ("name", "LIKE", "a")),
        ("nameDOES NOT CONTAINa", ("name", "NOT LIKE", "a")),
        ("nameSTARTSWITHsw-", ("name", "STARTSWITH", "sw-")),
        ("nameENDSWITH-01", ("name", "ENDSWITH", "-01")),
        ("priorityIN1,2", ("priority", "IN", "1,2")),
        ("subcategoryNOT INdb2,oracle", ("subcategory", "NOT IN", "db2,oracle")),
        ("caller_idISEMPTY", ("caller_id", "ISEMPTY", "")),
        ("caller_idISNOTEMPTY", ("caller_id", "ISNOTEMPTY", "")),
        ("nameEMPTYSTRING", ("name", "EMPTYSTRING", "")),
        ("nameANYTHING", ("name", "ANYTHING", "")),
        ("reassignment_count>2", ("reassignment_count", ">", "2")),
        ("reassignment_count>=2", ("reassignment_count", ">=", "2")),
        ("reassignment_count<2", ("reassignment_count", "<", "2")),
        ("sys_updated_on<=2024-01-01 00:00:00", ("sys_updated_on", "<=", "2024-01-01 00:00:00")),
        ("impactBETWEEN1@3", ("impact", "BETWEEN", "1@3")),
        (
            "sys_class_nameINSTANCEOFcmdb_ci_netgear",
            ("sys_class_name", "INSTANCEOF", "cmdb_ci_netgear"),
        ),
        ("opened_by.user_name=admin", ("opened_by.user_name", "=", "admin")),
        ("caller_idSAMEASassigned_to", ("caller_id", "SAMEAS", "assigned_to")),
        ("short_description=a=b&c d", ("short_description", "=", "a=b&c d")),
        ("name=", ("name", "=", "")),
    ],
)
def test_parse_condition(text: str, expected: tuple[str, str, str]) -> None:
    assert conds(text) == [expected]


@pytest.mark.parametrize(
    "text",
    [
        "AAAA=BBBB",  # upper-case names are not platform field names
        "=x",
        "name",
        "nameUNKNOWNOPx",
        "namelike",  # operators are case-sensitive: this is just a (bad) field name
        "impactBETWEEN1",  # BETWEEN needs a@b
        "caller_idSAMEASnot a field",
    ],
)
def test_invalid_parts_are_dropped(text: str) -> None:
    assert parse(text) == EncodedQuery()
    assert parse_condition(text) is None


def test_and_or_nq_structure() -> None:
    q = parse("a=1^b=2^ORc=3^NQd=4")
    assert q.groups == (
        ((Condition("a", "=", "1"),), (Condition("b", "=", "2"), Condition("c", "=", "3"))),
        ((Condition("d", "=", "4"),),),
    )


def test_order_by_anywhere_first_mention_wins_and_eq_is_a_no_op() -> None:
    q = parse("ORDERBYname^active=true^ORDERBYDESCnumber^ORDERBYDESCname^EQ")
    assert q.order_by == (OrderBy("name"), OrderBy("number", descending=True))
    assert conds("ORDERBYname^active=true^ORDERBYDESCnumber^EQ") == [("active", "=", "true")]


def test_leading_or_is_an_and_term_and_empty_parts_are_ignored() -> None:
    assert parse("^^ORa=1^^b=2^").groups == (
        ((Condition("a", "=", "1"),), (Condition("b", "=", "2"),)),
    )


def test_related_list_join_and_text_queries_are_ignored() -> None:
    q = parse("active=true^RLQUERYtask_ci.task,>=1^ci_item=x^ENDRLQUERY^JOINa.b=c.d!x^state=1")
    assert conds("active=true^123TEXTQUERY321=foo") == [("active", "=", "true")]
    assert [(c.field, c.value) for c in q.conditions()] == [("active", "true"), ("state", "1")]


def test_caret_always_separates() -> None:
    """No escape exists for ^ in a value: the rest becomes a separate (here invalid) part."""
    assert conds("name=a^b") == [("name", "=", "a")]
    assert conds("name=a^^b=2") == [("name", "=", "a"), ("b", "=", "2")]


def test_pysnc_long_query_keeps_only_the_valid_condition() -> None:
    q = parse("^".join(["AAAA=BBBB"] * 2300) + "^sys_id=abc")
    assert q.conditions() == [Condition("sys_id", "=", "abc")]


@given(st.text())
def test_parse_never_raises(text: str) -> None:
    q = parse(text)
    for c in q.conditions():
        assert c.field
        assert all(part for part in c.field.split("."))


@given(st.lists(st.sampled_from(["a=1", "b!=2", "^", "^OR", "^NQ", "ORDERBYx", "^EQ", "IN", "@"])))
def test_parse_never_raises_on_query_like_text(parts: list[str]) -> None:
    parse("".join(parts))


# -- semantics ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "op", "right", "expected"),
    [
        ("10", ">", "9", True),  # numeric
        ("10", "<", "9", False),
        ("1.5", "<=", "1.50", True),
        ("-3", "<", "2e1", True),
        ("b", ">", "a", True),  # string
        ("10", ">", "abc", False),  # mixed: string order ("1" < "a")
        ("2024-02-01 00:00:00", ">", "2024-01-31 23:59:59", True),
        ("", "<", "1", True),
        ("nan", ">", "1", True),  # not a number: string compare
    ],
)
def test_compare(left: str, op: str, right: str, expected: bool) -> None:
    assert compare(left, op, right) is expected


def test_operators_on_values() -> None:
    def m(op: str, value: str, field: str) -> bool:
        return matches_condition(Condition("f", op, value), field)

    assert m("LIKE", "ell", "hello") and not m("LIKE", "ELL", "hello")  # case-sensitive
    assert m("NOT LIKE", "x", "hello")
    assert m("STARTSWITH", "he", "hello") and not m("STARTSWITH", "lo", "hello")
    assert m("ENDSWITH", "lo", "hello") and m("ENDSWITH", "", "hello")
    assert m("IN", "a,b", "b") and not m("IN", "a,b", "a,b")
    assert m("ISEMPTY", "", "") and not m("ISEMPTY", "", "x")
    assert m("ISNOTEMPTY", "", "x") and m("ANYTHING", "", "")
    assert m("BETWEEN", "1@3", "2") and m("BETWEEN", "1@3", "3") and not m("BETWEEN", "1@3", "10")
    assert m(
        "BETWEEN",
        "javascript:gs.dateGenerate('2024-01-01','start')@javascript:gs.dateGenerate('2024-01-31','end')",
        "2024-01-31 23:00:00",
    )
    assert not m("=", "True", "true")


_VALUES = st.text(alphabet="ab1,2", max_size=4)


@given(_VALUES, st.lists(_VALUES, min_size=1, max_size=4))
def test_in_and_not_in_are_complements(value: str, members: list[str]) -> None:
    listed = ",".join(members)
    inside = matches_condition(Condition("f", "IN", listed), value)
    outside = matches_condition(Condition("f", "NOT IN", listed), value)
    assert inside != outside


@given(st.text(alphabet=string.ascii_letters + "0123456789 -", max_size=6), _VALUES)
def test_like_and_not_like_are_complements(value: str, needle: str) -> None:
    assert matches_condition(Condition("f", "LIKE", needle), value) != matches_condition(
        Condition("f", "NOT LIKE", needle), value
    )


def test_evaluate_groups_terms_and_unknown_fields() -> None:
    rec = {"a": "1", "b": "2", "c": "3"}
    assert evaluate(parse("a=1^b=2"), rec)
    assert not evaluate(parse("a=1^b=3"), rec)
    assert evaluate(parse("a=1^b=3^ORc=3"), rec)
    assert evaluate(parse("a=9^NQb=2"), rec)
    assert evaluate(parse("zz=1^a=1"), rec)  # unknown field dropped
    assert evaluate(parse("zz=1"), rec)  # nothing left: everything matches
    assert evaluate(parse("a=9^NQzz=1"), rec) is False  # emptied group dropped, not "true"


def test_evaluate_instanceof_uses_the_class_tree() -> None:
    tree = {"b": "a", "c": "b"}

    def is_instance(cls: str, ancestor: str) -> bool:
        while cls:
            if cls == ancestor:
                return True
            cls = tree.get(cls, "")
        return False

    q = parse("sys_class_nameINSTANCEOFb")
    assert evaluate(q, {"sys_class_name": "c"}, is_instance=is_instance)
    assert not evaluate(q, {"sys_class_name": "a"}, is_instance=is_instance)


def test_field_to_field_operators() -> None:
    rec = {"a": "5", "b": "10", "c": "5"}
    assert evaluate(parse("aSAMEASc"), rec)
    assert evaluate(parse("aNSAMEASb"), rec)
    assert evaluate(parse("bGT_FIELDa"), rec)  # numeric, not "10" < "5"
    assert evaluate(parse("aLT_OR_EQUALS_FIELDc"), rec)
    assert evaluate(parse("aSAMEASmissing^a=4"), rec) is False  # unknown other field: dropped


@given(st.text(alphabet="0123456789", min_size=1, max_size=400))
def test_plain_digit_strings_read_as_the_full_rule_reads_them(digits: str) -> None:
    """The fast path for plain digits agrees with the strict number rule, infinity included
    (a 400-digit string is too big for a float: not a number)."""
    import math

    from snowkit.sandbox.query import _NUMBER, as_number

    assert _NUMBER.fullmatch(digits) is not None
    expected = float(digits) if math.isfinite(float(digits)) else None
    assert as_number(digits) == expected


def test_other_digits_go_through_the_full_rule() -> None:
    from snowkit.sandbox.query import as_number

    assert as_number("²") is None  # a superscript is not a decimal digit
    assert as_number("١٢") == 12.0  # Arabic-Indic digits are, as before
    assert as_number("9" * 400) is None and as_number("12") == 12.0
