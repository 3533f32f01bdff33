"""Relationships between CIs (``cmdb_rel_ci``): type lookup, existence checks, what to create.

A link is written only when both ends are known to exist (their sys_ids come from the plan's
read of the CMDB or from this run's creates) and it is not there already, so a rerun creates
none. Links whose ends are missing are orphans: reported, never written half-way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from snowkit.cmdb.fields import as_str
from snowkit.cmdb.questions import Rider, table_url
from snowkit.servicenow.batch import BatchRequest
from snowkit.servicenow.query import Query

REL_TABLE = "cmdb_rel_ci"
REL_TYPE_TABLE = "cmdb_rel_type"


class QueryClient(Protocol):
    def query(
        self, table: str, query: Any = "", fields: Any = None, **kw: Any
    ) -> Iterator[dict]: ...


class UnknownRelationshipTypeError(LookupError):
    """The instance has no ``cmdb_rel_type`` of that name."""


class RelTypeCache:
    """``cmdb_rel_type`` name → sys_id, read once per name (thread-safe)."""

    def __init__(self, client: QueryClient) -> None:
        self._client = client
        self._ids: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> str | None:
        with self._lock:
            if name in self._ids:
                return self._ids[name]
        rows = list(
            self._client.query(
                REL_TYPE_TABLE, Query().eq_exact("name", name), fields=["sys_id", "name"]
            )
        )
        sys_id = as_str(rows[0].get("sys_id")) if rows else None
        with self._lock:
            self._ids[name] = sys_id
        return sys_id

    def prefetch(self, names: Iterable[str]) -> None:
        """Read many types in one query (names not found are remembered as missing)."""
        with self._lock:
            wanted = sorted({n for n in names if n and n not in self._ids and "," not in n})
        if not wanted:
            return
        rows = self._client.query(
            REL_TYPE_TABLE, Query().in_("name", wanted), fields=["sys_id", "name"]
        )
        self._remember(wanted, rows)

    def known(self, names: Iterable[str]) -> dict[str, str]:
        """The sys_ids read so far of ``names`` (nothing is read here; unknown ones left out)."""
        with self._lock:
            return {n: i for n in names if (i := self._ids.get(n))}

    def rider(self, names: Iterable[str]) -> Rider | None:
        """What :meth:`prefetch` reads, to go along in another Batch API request (an unusable
        answer is ignored: :meth:`get` reads them then); None when every name is known."""
        with self._lock:
            wanted = sorted({n for n in names if n and n not in self._ids and "," not in n})
        if not wanted:
            return None
        url = table_url(REL_TYPE_TABLE, {
            "sysparm_query": str(Query().in_("name", wanted)), "sysparm_fields": "sys_id,name",
            "sysparm_exclude_reference_link": "true",
        })  # fmt: skip

        def take(answer: Any) -> None:
            rows = answer.result if answer.ok else None
            if isinstance(rows, list) and len(rows) < 1000:  # one page: nothing left unread
                self._remember(wanted, rows)

        return Rider(BatchRequest("GET", url), take)

    def _remember(self, wanted: list[str], rows: Iterable[Mapping[str, Any]]) -> None:
        found: dict[str, str] = {}
        for row in rows:
            found.setdefault(as_str(row.get("name")), as_str(row.get("sys_id")))
        with self._lock:
            for name in wanted:
                self._ids[name] = found.get(name)

    def require(self, name: str) -> str:
        sys_id = self.get(name)
        if sys_id is None:
            raise UnknownRelationshipTypeError(
                f"relationship type {name!r} does not exist in cmdb_rel_type; "
                "ask an admin to create it (name = 'Parent descriptor::Child descriptor')"
            )
        return sys_id


LinkKey = tuple[str, str, str]  # (parent sys_id, child sys_id, type sys_id)


@dataclass
class LinkPlan:
    """Links to create (with their bodies), and what was already there or cannot be linked."""

    to_create: list[tuple[Any, dict[str, str]]] = field(default_factory=list)
    existing: int = 0
    orphans: list[Any] = field(default_factory=list)
    unknown_types: dict[str, int] = field(default_factory=dict)
    wanted: int = 0


def existing_links(
    client: QueryClient,
    parent_sys_ids: Iterable[str],
    child_sys_ids: Iterable[str] = (),
    *,
    in_chunk: int = 100,
    workers: int = 4,
) -> set[LinkKey]:
    """Links whose parent is one of ``parent_sys_ids`` (or, when ``child_sys_ids`` is the
    smaller set, whose child is one of those): batched ``IN`` queries, ``workers`` at a time.
    Many clients hang off few devices, so querying the smaller side saves most requests."""
    side, ids = smaller_side(parent_sys_ids, child_sys_ids)
    rows = existing_link_rows(client, side, ids, in_chunk=in_chunk, workers=workers)
    return {(r["parent"], r["child"], r["type"]) for r in rows.values()}


def smaller_side(parents: Iterable[str], children: Iterable[str]) -> tuple[str, list[str]]:
    """``("child", ids)`` when fewer distinct children than parents, else ``("parent", ids)``."""
    p, c = sorted(set(parents)), sorted(set(children))
    return ("child", c) if c and len(c) < len(p) else ("parent", p)


def existing_link_rows(
    client: QueryClient,
    side: str,
    ids: Sequence[str],
    *,
    in_chunk: int = 100,
    workers: int = 4,
) -> dict[str, dict[str, str]]:
    """Links whose ``side`` (parent, child or sys_id) is one of ``ids``, by sys_id, with their
    ``parent``, ``child``, ``type`` and ``version`` (``sys_updated_on|sys_mod_count``)."""
    ids = sorted(set(ids))
    chunks = [ids[i : i + in_chunk] for i in range(0, len(ids), in_chunk)]

    def read(chunk: list[str]) -> list[dict[str, str]]:
        rows = client.query(
            REL_TABLE,
            Query().in_(side, chunk),
            fields=["sys_id", "parent", "child", "type", "sys_updated_on", "sys_mod_count"],
            page_size=1000,
        )
        return [
            {
                "sys_id": as_str(r.get("sys_id")),
                "parent": as_str(r.get("parent")),
                "child": as_str(r.get("child")),
                "type": as_str(r.get("type")),
                "version": f"{as_str(r.get('sys_updated_on'))}|{as_str(r.get('sys_mod_count'))}",
            }
            for r in rows
        ]

    out: dict[str, dict[str, str]] = {}
    if len(chunks) <= 1 or workers <= 1:
        results: Iterable[list[dict[str, str]]] = map(read, chunks)
        for rows in results:
            out.update((r["sys_id"], r) for r in rows)
        return out
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="snowkit-links") as pool:
        for rows in pool.map(read, chunks):
            out.update((r["sys_id"], r) for r in rows)
    return out


def plan_links(
    specs: Sequence[Any],
    sys_ids: Mapping[str, str],
    types: RelTypeCache,
    existing: set[LinkKey],
) -> LinkPlan:
    """Decide each relationship: create, already there, orphan (an end unknown), unknown type."""
    plan = LinkPlan(wanted=len(specs))
    type_ids = {name: types.get(name) for name in _prefetched(types, specs)}
    seen: set[LinkKey] = set()
    for spec in specs:
        parent = sys_ids.get(spec.parent_source_id)
        child = sys_ids.get(spec.child_source_id)
        if not parent or not child:
            plan.orphans.append(spec)
            continue
        type_id = type_ids[spec.type_name]
        if type_id is None:
            plan.unknown_types[spec.type_name] = plan.unknown_types.get(spec.type_name, 0) + 1
            continue
        key = (parent, child, type_id)
        if key in existing or key in seen:
            plan.existing += 1
            continue
        seen.add(key)
        plan.to_create.append((spec, {"parent": parent, "child": child, "type": type_id}))
    return plan


def _prefetched(types: RelTypeCache, specs: Sequence[Any]) -> set[str]:
    """The type names ``specs`` use, read in one query (each looked up once per decision,
    not once per link: a rerun decides 5,000 links at once)."""
    names = {spec.type_name for spec in specs}
    types.prefetch(names)
    return names


def find_link(client: QueryClient, body: Mapping[str, str]) -> str | None:
    """The sys_id of an existing link with this parent, child and type (settles ambiguity)."""
    query = Query().eq("parent", body["parent"]).eq("child", body["child"]).eq("type", body["type"])
    for row in client.query(REL_TABLE, query, fields=["sys_id"]):
        return as_str(row.get("sys_id"))
    return None


def _link_key(row: dict) -> LinkKey:
    return (as_str(row.get("parent")), as_str(row.get("child")), as_str(row.get("type")))
