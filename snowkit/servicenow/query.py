"""Encoded-query builder for ``sysparm_query`` that no value can subvert.

ServiceNow's encoded-query grammar has no escape character: ``^`` always separates conditions,
so a value such as ``"x^ORsys_id!=0"`` pasted into ``name=<value>`` would widen the query.
pysnc and pysnow concatenate strings and inherit that hole; we build the string ourselves so
that the rule "a value can never change the query" is enforced in one place:

- Field names must match ``^[a-z0-9_.]+$``. Operators start with an upper-case letter or one of
  ``= ! < >``, so the field ends exactly where the operator starts: ``=`` (or any other operator
  text) *inside a value* is harmless, the server reads the value up to the next ``^``.
- A value containing ``^`` is refused with :class:`QueryValueError`, with one exception:
  :meth:`Query.eq_exact` accepts any value. It sends a *superset* condition made of the value's
  ``^``-free pieces (``STARTSWITH`` the first piece, ``LIKE`` the middle ones, ``ENDSWITH`` the
  last one) and records an exact post-filter that ``ServiceNowAPIClient.query`` applies to each
  returned record. The result is exact, paging still works (the server side
  stays an ordinary encoded query), and nothing the value holds is interpreted by the server.
  (The Table API's ``field=value`` URL shorthand was the other candidate, but it is exclusive
  with ``sysparm_query``, which keyset paging needs.)
- ``IN`` / ``NOT IN`` lists are comma separated with no escape: a value containing ``,`` is refused.
- Values starting with ``javascript:`` are evaluated by the instance; they are refused unless the
  caller opts in with ``allow_script=True``.
- Control characters (NUL, CR, LF) are refused: instances and proxies treat them inconsistently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

FIELD_NAME = re.compile(r"^[a-z0-9_]+(?:\.[a-z0-9_]+)*$")

#: Every operator ServiceNow's parser knows; it matches the longest one at the field's end, so a
#: value must not extend the operator we mean into a longer one ("<" + "=5" reads as "<=" "5").
KNOWN_OPERATORS: tuple[str, ...] = (
    "GT_OR_EQUALS_FIELD", "LT_OR_EQUALS_FIELD", "DOES NOT CONTAIN", "EMPTYSTRING", "STARTSWITH",
    "INSTANCEOF", "ISNOTEMPTY", "ENDSWITH", "NOT LIKE", "ANYTHING", "CONTAINS", "GT_FIELD",
    "LT_FIELD", "BETWEEN", "ISEMPTY", "NOTLIKE", "NSAMEAS", "NOT IN", "SAMEAS", "LIKE", "IN",
    "!=", "<=", ">=", "!*", "=", "<", ">", "*", "%",
)  # fmt: skip
_CONTROL = re.compile(r"[\x00\r\n]")


class QueryValueError(ValueError):
    """A field name or value that cannot be sent safely in an encoded query."""


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``<field><operator><value>`` term; ``join`` is ``"^"`` (AND) or ``"^OR"``."""

    field: str
    operator: str
    value: str = ""
    join: str = "^"

    def encode(self) -> str:
        return f"{self.field}{self.operator}{self.value}"


@dataclass(frozen=True, slots=True)
class ExactFilter:
    """A client-side equality check backing :meth:`Query.eq_exact`."""

    field: str
    value: str


def _check_field(name: str) -> str:
    if not isinstance(name, str) or not FIELD_NAME.match(name):
        raise QueryValueError(
            f"invalid field name {name!r}: use lower-case letters, digits, '_' and '.' only "
            "(ServiceNow column names, dot-walks such as 'location.name')"
        )
    return name


def _check_value(value: Any, *, allow_script: bool = False, in_list: bool = False) -> str:
    text = value if isinstance(value, str) else str(value)
    if isinstance(value, bool):
        text = "true" if value else "false"
    if "^" in text:
        raise QueryValueError(
            f"value {text[:40]!r} contains '^', which ServiceNow cannot escape in an encoded query "
            "(it would start a new condition); use Query.eq_exact(field, value) for equality"
        )
    if _CONTROL.search(text):
        raise QueryValueError(f"value {text[:40]!r} contains a NUL, CR or LF character")
    if in_list and "," in text:
        raise QueryValueError(
            f"value {text[:40]!r} contains ',', which separates IN-list items and cannot be "
            "escaped; query it with eq()/or_() instead"
        )
    if not allow_script and text[:11].lower() == "javascript:":
        raise QueryValueError(
            f"value {text[:40]!r} would be evaluated as server-side script; pass "
            "allow_script=True if that is intended"
        )
    return text


@dataclass
class Query:
    """Fluent builder: ``Query().eq("active", "true").or_().starts_with("name", "sw-")``.

    ``str(query)`` gives the encoded query. Conditions are ANDed; :meth:`or_` makes the *next*
    condition an ``^OR`` of the previous one; :meth:`new_query` starts an ``^NQ`` group.
    """

    _groups: list[list[Condition]] = field(default_factory=lambda: [[]])
    _order: list[tuple[str, bool]] = field(default_factory=list)
    _exact: list[ExactFilter] = field(default_factory=list)
    _next_join: str = "^"
    _sealed_or: bool = False

    # -- building -------------------------------------------------------------------------
    def _add(self, name: str, operator: str, value: str = "") -> Query:
        self._sealed_or = False
        group = self._groups[-1]
        join = self._next_join
        if join == "^OR" and not group:
            raise QueryValueError("or_() must follow a condition in the same group")
        for longer in KNOWN_OPERATORS:
            if (
                len(longer) > len(operator)
                and longer.startswith(operator)
                and (operator + value).startswith(longer)
            ):
                raise QueryValueError(
                    f"value {value[:40]!r} after operator {operator!r} would read as "
                    f"operator {longer!r}; ServiceNow has no escape for this"
                )
        group.append(Condition(_check_field(name), operator, value, join))
        self._next_join = "^"
        return self

    def _cmp(self, name: str, operator: str, value: Any, allow_script: bool) -> Query:
        return self._add(name, operator, _check_value(value, allow_script=allow_script))

    def eq(self, name: str, value: Any, *, allow_script: bool = False) -> Query:
        return self._cmp(name, "=", value, allow_script)

    def ne(self, name: str, value: Any, *, allow_script: bool = False) -> Query:
        return self._cmp(name, "!=", value, allow_script)

    def lt(self, name: str, value: Any) -> Query:
        return self._cmp(name, "<", value, False)

    def le(self, name: str, value: Any) -> Query:
        return self._cmp(name, "<=", value, False)

    def gt(self, name: str, value: Any) -> Query:
        return self._cmp(name, ">", value, False)

    def ge(self, name: str, value: Any) -> Query:
        return self._cmp(name, ">=", value, False)

    def starts_with(self, name: str, value: Any) -> Query:
        return self._cmp(name, "STARTSWITH", value, True)

    def ends_with(self, name: str, value: Any) -> Query:
        return self._cmp(name, "ENDSWITH", value, True)

    def like(self, name: str, value: Any) -> Query:
        return self._cmp(name, "LIKE", value, True)

    def not_like(self, name: str, value: Any) -> Query:
        return self._cmp(name, "NOT LIKE", value, True)

    def in_(self, name: str, values: Iterable[Any]) -> Query:
        return self._add(name, "IN", self._in_list(values))

    def not_in(self, name: str, values: Iterable[Any]) -> Query:
        return self._add(name, "NOT IN", self._in_list(values))

    @staticmethod
    def _in_list(values: Iterable[Any]) -> str:
        if isinstance(values, str):
            raise QueryValueError("in_()/not_in() take a list of values, not one string")
        items = [_check_value(v, in_list=True) for v in values]
        if not items:
            raise QueryValueError("in_()/not_in() need at least one value")
        return ",".join(items)

    def is_empty(self, name: str) -> Query:
        return self._add(name, "ISEMPTY")

    def is_not_empty(self, name: str) -> Query:
        return self._add(name, "ISNOTEMPTY")

    def instance_of(self, class_name: str) -> Query:
        """Records of ``class_name`` and all its subclasses (``sys_class_nameINSTANCEOF...``)."""
        return self._add("sys_class_name", "INSTANCEOF", _check_field(class_name))

    def eq_exact(self, name: str, value: Any) -> Query:
        """Equality for *any* value, ``^`` included (see the module docstring for how).

        Values without ``^`` are sent as a plain ``=`` condition. Otherwise the query must be
        one AND group: :meth:`or_` and :meth:`new_query` around it are refused, because the
        exact post-filter can only be applied to a conjunction.
        """
        text = value if isinstance(value, str) else str(value)
        if "^" not in text and not _is_script(text):
            return self.eq(name, text)
        if _CONTROL.search(text):
            raise QueryValueError(f"value {text[:40]!r} contains a NUL, CR or LF character")
        if self._next_join == "^OR" or len(self._groups) > 1:
            raise QueryValueError(
                "eq_exact() with '^' in the value cannot be combined with or_() or new_query()"
            )
        _check_field(name)
        pieces = text.split("^")
        for index, piece in enumerate(pieces):
            if not piece:
                continue
            if _is_script(piece):  # never let a piece start with javascript:
                self._add(name, "LIKE", piece[1:])
            elif index == 0:
                self._add(name, "STARTSWITH", piece)
            elif index == len(pieces) - 1:
                self._add(name, "ENDSWITH", piece)
            else:
                self._add(name, "LIKE", piece)
        if not any(pieces):
            self._add(name, "ISNOTEMPTY")
        self._exact.append(ExactFilter(name, text))
        self._sealed_or = True
        return self

    def or_(self) -> Query:
        """Make the next condition an OR of the previous one (``^OR``)."""
        if self._sealed_or:
            raise QueryValueError("or_() cannot follow eq_exact() with a '^' in the value")
        self._next_join = "^OR"
        return self

    def new_query(self) -> Query:
        """Start a new OR'd group (``^NQ``): ``(A^B)^NQ(C)``."""
        if not self._groups[-1]:
            raise QueryValueError("new_query() must follow at least one condition")
        if self._exact:
            raise QueryValueError("new_query() cannot be combined with eq_exact() ('^' values)")
        self._groups.append([])
        self._next_join = "^"
        return self

    def order_by(self, name: str) -> Query:
        self._order.append((_check_field(name), False))
        return self

    def order_by_desc(self, name: str) -> Query:
        self._order.append((_check_field(name), True))
        return self

    # -- reading --------------------------------------------------------------------------
    @property
    def groups(self) -> list[str]:
        """The encoded conditions of each ``^NQ`` group (no ordering clauses)."""
        return [_encode_group(g) for g in self._groups if g]

    @property
    def ordering(self) -> list[tuple[str, bool]]:
        """``(field, descending)`` pairs in the order they were added."""
        return list(self._order)

    @property
    def exact_filters(self) -> list[ExactFilter]:
        return list(self._exact)

    def conditions(self) -> list[list[Condition]]:
        """The structured conditions per group (what the encoded string means)."""
        return [list(g) for g in self._groups if g]

    def matches_exact(self, record: Mapping[str, Any]) -> bool:
        """Apply the :meth:`eq_exact` post-filters to a returned record (plain or display=all)."""
        return all(plain_value(record.get(f.field)) == f.value for f in self._exact)

    def encoded(self) -> str:
        """The ``sysparm_query`` string: groups joined by ``^NQ``, then ORDERBY clauses."""
        text = "^NQ".join(self.groups)
        clauses = [f"ORDERBYDESC{n}" if desc else f"ORDERBY{n}" for n, desc in self._order]
        return "^".join(p for p in [text, *clauses] if p)

    def __str__(self) -> str:
        return self.encoded()

    def __bool__(self) -> bool:
        return any(self._groups) or bool(self._order)


def _is_script(text: str) -> bool:
    return text[:11].lower() == "javascript:"


def _encode_group(group: list[Condition]) -> str:
    out: list[str] = []
    for i, cond in enumerate(group):
        out.append(cond.encode() if i == 0 else f"{cond.join}{cond.encode()}")
    return "".join(out)


def plain_value(value: Any) -> str | None:
    """A field as a plain string, whether read with ``display_value`` false or ``all``."""
    if isinstance(value, Mapping):
        value = value.get("value")
    return None if value is None else str(value)
