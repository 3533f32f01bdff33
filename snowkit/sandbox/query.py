"""ServiceNow encoded queries (``sysparm_query``): parser and reference evaluator.

No library parses this language, so we do. ``parse()`` turns a string into an ``EncodedQuery``
(OR'd ``^NQ`` groups of AND'd terms, each term one condition or several joined by ``^OR``, plus
``ORDERBY`` keys); it never raises. ``evaluate()`` decides one record in pure Python: it is the
executable definition of the semantics, used by tests to check the store's SQL translation
(``matches()`` is its core, which the store uses directly for queries too big for SQLite).

Grammar and semantics (reference §2.3):

- Separators: ``^`` AND, ``^OR`` OR with the previous condition, ``^NQ`` new OR'd group.
  ``ORDERBY<f>`` / ``ORDERBYDESC<f>`` anywhere, several times (first mention of a field wins).
  ``EQ`` (the UI's terminator) and empty parts are no-ops; ``RLQUERY…^ENDRLQUERY`` blocks,
  ``JOIN…``, ``123TEXTQUERY321`` and ``GOTO`` parts are recognised and ignored.
- A condition is ``<field><OPERATOR><value>``. Field names are lowercase platform names
  (``[a-z0-9_]``, dot-walk with ``.``: ``opened_by.user_name``); operators are upper case;
  names, operators and values are case-sensitive. A part that is not a valid condition (e.g.
  ``AAAA=BBBB``) is dropped, as the platform drops invalid parts; so is a condition on a field
  the table lacks (the store decides that, it knows the schema).
- Operators: ``= != < <= > >=`` (numeric when both sides are numbers, else string order, which
  also orders ``YYYY-MM-DD HH:MM:SS`` dates), ``LIKE``/``CONTAINS``/``*`` (contains),
  ``NOT LIKE``/``NOTLIKE``/``DOES NOT CONTAIN``/``!*``, ``STARTSWITH``, ``ENDSWITH``/``%``,
  ``IN``/``NOT IN`` (comma list), ``ISEMPTY``, ``ISNOTEMPTY``, ``EMPTYSTRING``, ``ANYTHING``,
  ``BETWEEN a@b`` (inclusive; ``javascript:gs.dateGenerate('2024-01-01','start')`` bounds are
  understood), ``INSTANCEOF`` (on ``sys_class_name``: the class and its subclasses),
  ``SAMEAS``/``NSAMEAS``/``GT_FIELD``/``LT_FIELD``/``GT_OR_EQUALS_FIELD``/``LT_OR_EQUALS_FIELD``
  (compare with another field). Other platform operators (date helpers, ``DYNAMIC``…) are dropped.
- Empty values are stored as ``""`` (never NULL), so ``!=`` and ``NOT IN`` match empty fields and
  ``IN``/``NOT IN`` are exact complements.
- If every condition of a ``^NQ`` group is dropped the group is dropped; a query left with no
  group matches every record.

Escaping: **none exists.** The platform has no escape for ``^`` inside a value (confirmed in the
ServiceNow community: "there is no way to escape the caret character in encoded query search
values"), so ``^`` always separates parts, and a value containing ``^`` cannot be expressed.
A client-side query builder must refuse such a value (or split the work into several queries);
likewise a value containing ``,`` cannot be an ``IN`` member and ``@`` cannot be a ``BETWEEN``
bound. Everything else (``=``, spaces, ``&``, non-ASCII…) is literal in a value, because the field
name ends at the first operator and the value runs to the next ``^``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

# Longest first, so "NOT LIKE" wins over nothing and "<=" over "<".
OPERATORS: tuple[str, ...] = (
    "GT_OR_EQUALS_FIELD",
    "LT_OR_EQUALS_FIELD",
    "DOES NOT CONTAIN",
    "EMPTYSTRING",
    "STARTSWITH",
    "INSTANCEOF",
    "ISNOTEMPTY",
    "ENDSWITH",
    "NOT LIKE",
    "ANYTHING",
    "CONTAINS",
    "GT_FIELD",
    "LT_FIELD",
    "BETWEEN",
    "ISEMPTY",
    "NOTLIKE",
    "NSAMEAS",
    "NOT IN",
    "SAMEAS",
    "LIKE",
    "IN",
    "!=",
    "<=",
    ">=",
    "!*",
    "=",
    "<",
    ">",
    "*",
    "%",
)

ALIASES: Mapping[str, str] = {
    "CONTAINS": "LIKE",
    "*": "LIKE",
    "DOES NOT CONTAIN": "NOT LIKE",
    "NOTLIKE": "NOT LIKE",
    "!*": "NOT LIKE",
    "%": "ENDSWITH",
}
"""Alternative spellings, mapped to the canonical operator ``Condition.operator`` holds."""

NO_VALUE_OPERATORS = frozenset({"ISEMPTY", "ISNOTEMPTY", "EMPTYSTRING", "ANYTHING"})
FIELD_OPERATORS: Mapping[str, str] = {
    "SAMEAS": "=",
    "NSAMEAS": "!=",
    "GT_FIELD": ">",
    "LT_FIELD": "<",
    "GT_OR_EQUALS_FIELD": ">=",
    "LT_OR_EQUALS_FIELD": "<=",
}
"""Field-to-field operators: the value names another field; mapped to the comparison."""

_FIELD = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
_OPERATOR = re.compile("|".join(re.escape(op) for op in OPERATORS))  # in order: longest first
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_DATE_GENERATE = re.compile(
    r"javascript:gs\.dateGenerate\(\s*'(\d{4}-\d{2}-\d{2})'\s*,\s*'(start|end|\d{2}:\d{2}:\d{2})'\s*\)"
)


@dataclass(frozen=True, slots=True)
class Condition:
    """``field`` ``operator`` ``value``; ``operator`` is canonical (aliases resolved)."""

    field: str
    operator: str
    value: str

    @property
    def path(self) -> tuple[str, ...]:
        """The dot-walk path: ``("opened_by", "user_name")``."""
        return tuple(self.field.split("."))


@dataclass(frozen=True, slots=True)
class OrderBy:
    field: str
    descending: bool = False


Term = tuple[Condition, ...]
"""Conditions joined by ``^OR``: the term holds when any of them does."""
Group = tuple[Term, ...]
"""Terms joined by ``^``: the group holds when all of them do."""


@dataclass(frozen=True, slots=True)
class EncodedQuery:
    """A parsed query: the record matches when any group matches (``^NQ``)."""

    groups: tuple[Group, ...] = ()
    order_by: tuple[OrderBy, ...] = ()

    def conditions(self) -> list[Condition]:
        return [c for g in self.groups for t in g for c in t]

    def filter(self, keep: Callable[[Condition], bool]) -> EncodedQuery:
        """The same query without the conditions ``keep`` rejects (and without emptied parts)."""
        groups = []
        for g in self.groups:
            terms = tuple(t for t in (tuple(c for c in term if keep(c)) for term in g) if t)
            if terms:
                groups.append(terms)
        return EncodedQuery(tuple(groups), self.order_by)


def parse_condition(text: str) -> Condition | None:
    """``nameSTARTSWITHsw-`` → Condition("name", "STARTSWITH", "sw-"); None when not a condition."""
    m = _FIELD.match(text)
    if m is None:
        return None
    op_match = _OPERATOR.match(text, m.end())
    if op_match is None:
        return None
    op = op_match.group()
    canonical = ALIASES.get(op, op)
    value = "" if canonical in NO_VALUE_OPERATORS else text[op_match.end() :]
    if _malformed(canonical, value):
        return None
    return Condition(m.group(), canonical, value)


def _malformed(operator: str, value: str) -> bool:
    if operator in FIELD_OPERATORS:
        return _FIELD.fullmatch(value) is None
    return operator == "BETWEEN" and "@" not in value


@lru_cache(maxsize=512)
def parse(query: str) -> EncodedQuery:
    """Parse an encoded query; never raises (invalid parts are dropped). Cached: pysnc repeats
    the same query for every page."""
    groups: list[Group] = []
    terms: list[list[Condition]] = []
    orders: list[OrderBy] = []
    seen_order: set[str] = set()
    parts = query.split("^")
    i = 0
    while i < len(parts):
        part = parts[i]
        i += 1
        if part.startswith("RLQUERY"):
            while i < len(parts) and parts[i] != "ENDRLQUERY":
                i += 1
            i += 1
            continue
        if part.startswith("NQ"):
            if terms:
                groups.append(tuple(tuple(t) for t in terms))
            terms = []
            part = part[2:]
        if part.startswith("ORDERBY"):
            desc = part.startswith("ORDERBYDESC")
            name = part[len("ORDERBYDESC") :] if desc else part[len("ORDERBY") :]
            if _FIELD.fullmatch(name) and name not in seen_order:
                seen_order.add(name)
                orders.append(OrderBy(name, desc))
            continue
        if part in ("", "EQ") or part.startswith(("JOIN", "123TEXTQUERY321", "GOTO")):
            continue
        is_or = part.startswith("OR")
        if is_or:
            part = part[2:]
        cond = parse_condition(part)
        if cond is None:
            continue
        if is_or and terms:
            terms[-1].append(cond)
        else:
            terms.append([cond])
    if terms:
        groups.append(tuple(tuple(t) for t in terms))
    return EncodedQuery(tuple(groups), tuple(orders))


# -- semantics ------------------------------------------------------------------------------


def as_number(value: str) -> float | None:
    """The number a string spells (``"3"``, ``"-1.5e3"``), else None; strict, no spaces/inf."""
    if not (value.isascii() and value.isdigit()) and _NUMBER.fullmatch(value) is None:
        return None  # plain ASCII digits (counts, ids: the common case) skip the regex
    number = float(value)
    return number if math.isfinite(number) else None


def compare(left: str, op: str, right: str) -> bool:
    """``left op right`` for ``< <= > >= = !=``: numeric when both are numbers, else string."""
    a: float | str
    b: float | str
    na, nb = as_number(left), as_number(right)
    if na is not None and nb is not None:
        a, b = na, nb
    else:
        a, b = left, right
    if op == "<":
        return a < b  # type: ignore[operator]
    if op == "<=":
        return a <= b  # type: ignore[operator]
    if op == ">":
        return a > b  # type: ignore[operator]
    if op == ">=":
        return a >= b  # type: ignore[operator]
    if op == "=":
        return a == b
    return a != b


def between_bounds(value: str) -> tuple[str, str]:
    """``"1@3"`` → ("1", "3"); ``gs.dateGenerate`` bounds become ``YYYY-MM-DD HH:MM:SS``."""
    low, _, high = value.partition("@")
    return _date_generate(low), _date_generate(high)


def _date_generate(bound: str) -> str:
    m = _DATE_GENERATE.fullmatch(bound.strip())
    if m is None:
        return bound
    time = {"start": "00:00:00", "end": "23:59:59"}.get(m.group(2), m.group(2))
    return f"{m.group(1)} {time}"


def matches_condition(
    cond: Condition,
    value: str,
    *,
    other: str = "",
    is_instance: Callable[[str, str], bool] | None = None,
) -> bool:
    """Whether a field holding ``value`` satisfies ``cond`` (``other``: the compared field's
    value for field-to-field operators; ``is_instance(cls, ancestor)`` for INSTANCEOF)."""
    op, ref = cond.operator, cond.value
    if op == "=":
        return value == ref
    if op == "!=":
        return value != ref
    if op in ("<", "<=", ">", ">="):
        return compare(value, op, ref)
    if op == "LIKE":
        return ref in value
    if op == "NOT LIKE":
        return ref not in value
    if op == "STARTSWITH":
        return value.startswith(ref)
    if op == "ENDSWITH":
        return value.endswith(ref)
    if op == "IN":
        return value in ref.split(",")
    if op == "NOT IN":
        return value not in ref.split(",")
    if op in ("ISEMPTY", "EMPTYSTRING"):
        return value == ""
    if op == "ISNOTEMPTY":
        return value != ""
    if op == "ANYTHING":
        return True
    if op == "BETWEEN":
        low, high = between_bounds(ref)
        return compare(value, ">=", low) and compare(value, "<=", high)
    if op == "INSTANCEOF":
        return is_instance(value, ref) if is_instance else value == ref
    if op in FIELD_OPERATORS:
        return compare(value, FIELD_OPERATORS[op], other)
    return True


def evaluate(
    query: EncodedQuery,
    record: Mapping[str, str],
    *,
    resolve: Callable[[Mapping[str, str], str], str | None] | None = None,
    is_instance: Callable[[str, str], bool] | None = None,
) -> bool:
    """Whether ``record`` matches ``query``. ``resolve(record, dotted_field)`` reads a field
    (default: ``record.get``); it returns None for a field the table lacks, and such conditions
    are dropped, as on the platform."""

    def read(name: str) -> str | None:
        return resolve(record, name) if resolve else record.get(name)

    def known(cond: Condition) -> bool:
        if read(cond.field) is None:
            return False
        return cond.operator not in FIELD_OPERATORS or read(cond.value) is not None

    return matches(query.filter(known), lambda name: read(name) or "", is_instance=is_instance)


def matches(
    query: EncodedQuery,
    read: Callable[[str], str],
    *,
    is_instance: Callable[[str, str], bool] | None = None,
) -> bool:
    """``evaluate`` for a query whose conditions are all known to exist (``read`` returns the
    value of a, possibly dotted, field). A query without groups matches everything."""
    if not query.groups:
        return True
    for group in query.groups:
        if all(
            any(
                matches_condition(
                    c,
                    read(c.field),
                    other=read(c.value) if c.operator in FIELD_OPERATORS else "",
                    is_instance=is_instance,
                )
                for c in term
            )
            for term in group
        ):
            return True
    return False
