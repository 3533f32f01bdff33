"""Relationship planning: orphans, existing links, unknown types, the type cache."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from snowkit.cmdb.relationships import RelTypeCache, plan_links
from snowkit.cmdb.transform import RelationshipSpec


class TypeTable:
    """A query-only stand-in that counts lookups."""

    def __init__(self) -> None:
        self.lookups = 0

    def query(self, table: str, query: Any = "", fields: Any = None, **kw: Any) -> Iterator[dict]:
        self.lookups += 1
        assert table == "cmdb_rel_type"
        text = str(query)
        names = text[len("nameIN") :].split(",") if text.startswith("nameIN") else [text[5:]]
        if "Connects to::Connected by" in names:
            yield {"sys_id": "T1", "name": "Connects to::Connected by"}


C = "Connects to::Connected by"


def test_plan_links_sorts_specs_into_create_existing_orphan_unknown() -> None:
    types = RelTypeCache(TypeTable())
    sys_ids = {"a": "A", "b": "B", "c": "C"}
    specs = [
        RelationshipSpec("a", "b", C),  # new
        RelationshipSpec("a", "c", C),  # already there
        RelationshipSpec("a", "b", C),  # duplicate of the first: counted once
        RelationshipSpec("a", "zzz", C),  # orphan
        RelationshipSpec("a", "b", "Nope::Nope"),  # unknown type
    ]
    plan = plan_links(specs, sys_ids, types, existing={("A", "C", "T1")})
    assert [body for _, body in plan.to_create] == [{"parent": "A", "child": "B", "type": "T1"}]
    assert plan.existing == 2
    assert [s.child_source_id for s in plan.orphans] == ["zzz"]
    assert plan.unknown_types == {"Nope::Nope": 1}
    assert plan.wanted == 5


def test_type_cache_reads_each_name_once() -> None:
    table = TypeTable()
    types = RelTypeCache(table)
    assert types.get(C) == "T1"
    assert types.get(C) == "T1"
    assert types.get("Nope::Nope") is None
    assert types.get("Nope::Nope") is None
    assert table.lookups == 2


def test_prefetch_reads_many_types_in_one_query() -> None:
    table = TypeTable()
    types = RelTypeCache(table)
    types.prefetch([C, "Nope::Nope", C])
    assert table.lookups == 1
    assert (types.get(C), types.get("Nope::Nope")) == ("T1", None)
    assert table.lookups == 1
