"""The durable outbox: order, persistence across processes, idempotent replay, stop when down."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snowkit import paths
from snowkit.cmdb.outbox import (
    OP_CREATE,
    OP_RELATE,
    OP_UPDATE,
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_PENDING,
    Outbox,
    is_unreachable_error,
)
from snowkit.ops.errors import NetworkError


class FakeTables:
    """A dict-backed stand-in for the client: equality and IN terms joined by ^."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, str]]] = {}
        self.ids = itertools.count(1)
        self.calls: list[tuple[str, str]] = []
        self.down_after: int | None = None

    def _tick(self, what: str, table: str) -> None:
        self.calls.append((what, table))
        writes = sum(1 for c in self.calls if c[0] != "query")
        if self.down_after is not None and what != "query" and writes > self.down_after:
            raise NetworkError("connection refused")

    def query(self, table: str, query: Any = "", fields: Any = None, **kw: Any) -> Iterator[dict]:
        self.calls.append(("query", table))
        terms = [t for t in str(query).split("^") if t]
        for r in list(self.rows.get(table, [])):
            ok = True
            for term in terms:
                if "IN" in term and "=" not in term:
                    f, vals = term.split("IN", 1)
                    ok &= r.get(f, "") in vals.split(",")
                else:
                    f, v = term.split("=", 1)
                    ok &= r.get(f, "") == v
            if ok:
                yield dict(r)

    def create(self, table: str, values: dict, *, source_id: str | None = None) -> dict:
        self._tick("create", table)
        rec = {"sys_id": f"id{next(self.ids)}", **values}
        self.rows.setdefault(table, []).append(rec)
        return dict(rec)

    def update(self, table: str, sys_id: str, values: dict, *, before: Any = None) -> dict:
        self._tick("update", table)
        for r in self.rows.get(table, []):
            if r["sys_id"] == sys_id:
                r.update(values)
                return dict(r)
        raise LookupError(sys_id)

    def delete(self, table: str, sys_id: str, *, before: Any = None) -> None:
        self._tick("delete", table)
        self.rows[table] = [r for r in self.rows.get(table, []) if r["sys_id"] != sys_id]


def test_default_location_and_persistence_across_instances() -> None:
    with Outbox() as box:
        assert box.path == paths.outbox_path()
        box.enqueue("r1", OP_CREATE, "cmn_location", source_id="s1", values={"name": "HQ"})
        box.enqueue("r1", OP_CREATE, "cmdb_ci_ip_switch", source_id="d1", values={"name": "sw"})
    with Outbox() as again:
        pending = again.pending()
        assert [e.source_id for e in pending] == ["s1", "d1"]
        assert [e.seq for e in pending] == sorted(e.seq for e in pending)
        assert pending[0].run_id == "r1"
        assert pending[0].status == STATUS_PENDING
        assert pending[1].payload["values"] == {"name": "sw"}


def test_replay_in_order_resolves_references_and_never_duplicates(tmp_path: Path) -> None:
    client = FakeTables()
    # d2 already landed before the outage (its write was ambiguous): replay must not duplicate it
    client.rows["cmdb_ci_ip_switch"] = [
        {"sys_id": "pre", "u_unifi_source_id": "d2", "name": "sw-2"}
    ]
    client.rows["cmdb_ci"] = client.rows["cmdb_ci_ip_switch"]
    client.rows["cmdb_rel_type"] = [{"sys_id": "T", "name": "Contains::Contained by"}]
    with Outbox(tmp_path / "ob.sqlite3") as box:
        box.enqueue("r", OP_CREATE, "cmn_location", source_id="s1", values={"name": "HQ"})
        box.enqueue(
            "r",
            OP_CREATE,
            "cmdb_ci_ip_switch",
            source_id="d1",
            values={"name": "sw-1"},
            references={"location": "s1"},
        )
        box.enqueue("r", OP_CREATE, "cmdb_ci_ip_switch", source_id="d2", values={"name": "sw-2"})
        box.enqueue(
            "r",
            OP_RELATE,
            "cmdb_rel_ci",
            extra={"parent_source_id": "d2", "child_source_id": "d2", "type_sys_id": "T"},
        )
        result = box.replay(client)
        assert result.complete
        assert (result.created, result.resolved_existing, result.related) == (2, 1, 1)
        hq = client.rows["cmn_location"][0]
        sw1 = next(r for r in client.rows["cmdb_ci_ip_switch"] if r.get("name") == "sw-1")
        assert sw1["location"] == hq["sys_id"]
        assert sw1["u_unifi_source_id"] == "d1"
        assert len([r for r in client.rows["cmdb_ci_ip_switch"] if r["name"] == "sw-2"]) == 1
        assert box.count() == 0
        assert box.count(STATUS_DONE) == 4
        # a second replay has nothing to do
        assert box.replay(client).sent == 0


def test_replay_stops_when_instance_is_down_and_keeps_the_rest(tmp_path: Path) -> None:
    client = FakeTables()
    client.down_after = 1
    with Outbox(tmp_path / "ob.sqlite3") as box:
        for n in range(3):
            box.enqueue("r", OP_CREATE, "cmn_location", source_id=f"s{n}", values={"name": f"L{n}"})
        result = box.replay(client)
        assert result.sent == 1
        assert result.remaining == 2
        assert result.stopped and "unreachable" in result.stopped
        assert [e.source_id for e in box.pending()] == ["s1", "s2"]
        client.down_after = None
        assert box.replay(client).complete
        assert sorted(r["name"] for r in client.rows["cmn_location"]) == ["L0", "L1", "L2"]


def test_rejected_entry_is_marked_failed_and_replay_goes_on(tmp_path: Path) -> None:
    client = FakeTables()
    with Outbox(tmp_path / "ob.sqlite3") as box:
        box.enqueue("r", OP_UPDATE, "cmdb_ci", source_id="nobody", values={"name": "x"})
        box.enqueue("r", OP_CREATE, "cmn_location", source_id="s1", values={"name": "HQ"})
        result = box.replay(client)
        assert result.sent == 1
        assert result.failed and result.failed[0]["source_id"] == "nobody"
        assert box.count(STATUS_FAILED) == 1
        assert box.summary() == {STATUS_DONE: 1, STATUS_FAILED: 1}


def test_enqueue_many_is_all_or_nothing(tmp_path: Path) -> None:
    with Outbox(tmp_path / "ob.sqlite3") as box:
        with pytest.raises(KeyError):
            box.enqueue_many([{"run_id": "r", "op": OP_CREATE, "table": "t"}, {"op": "x"}])
        assert box.count(None) == 0


def test_unreachable_classification() -> None:
    assert is_unreachable_error(NetworkError("down"))
    assert not is_unreachable_error(ValueError("bad"))
