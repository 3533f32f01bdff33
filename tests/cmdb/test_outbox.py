"""The durable outbox: order, persistence across processes, idempotent replay, stop when down."""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snowkit import paths
from snowkit.cmdb.intents import IntentJournal
from snowkit.cmdb.outbox import (
    OP_CREATE,
    OP_RELATE,
    OP_UPDATE,
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_PENDING,
    Outbox,
    is_unreachable_error,
    stops_the_replay,
)
from snowkit.cmdb.rollback import rollback
from snowkit.credentials import CredentialManager
from snowkit.ops.audit import AuditTrail, read_audit
from snowkit.ops.errors import (
    AmbiguousWriteError,
    NetworkError,
    RateLimitError,
    TransientServerError,
)
from snowkit.servicenow import ServiceNowAPIClient

SID = "u_unifi_source_id"


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


# -- one pending entry per intent ------------------------------------------------------------


def test_a_write_queued_again_replaces_the_waiting_one(tmp_path: Path) -> None:
    """Each load retried during an outage queues the same writes: the queue holds them once,
    in the latest run's order, with the latest values."""
    link = {"parent_source_id": "d1", "child_source_id": "s1", "type_name": "Located in"}
    with Outbox(tmp_path / "ob.sqlite3") as box:
        for run, name in (("r1", "sw-old"), ("r2", "sw-new")):
            box.enqueue(run, OP_CREATE, "cmn_location", source_id="s1", values={"name": "HQ"})
            box.enqueue(
                run,
                OP_CREATE,
                "cmdb_ci_ip_switch",
                source_id="d1",
                values={"name": name},
                references={"location": "s1"},
            )
            box.enqueue(run, OP_RELATE, "cmdb_rel_ci", extra=link)
        pending = box.pending()
        assert [(e.op, e.source_id or e.payload["parent_source_id"]) for e in pending] == [
            (OP_CREATE, "s1"),
            (OP_CREATE, "d1"),
            (OP_RELATE, "d1"),
        ]
        assert {e.run_id for e in pending} == {"r2"}
        assert pending[1].payload["values"] == {"name": "sw-new"}
        assert pending[1].payload["references"] == {"location": "s1"}
        # a link of another type between the same CIs is another intent
        box.enqueue("r2", OP_RELATE, "cmdb_rel_ci", extra={**link, "type_name": "Depends on"})
        assert box.count() == 4
        assert box.breakdown() == {
            OP_CREATE: {"cmdb_ci_ip_switch": 1, "cmn_location": 1},
            OP_RELATE: {"cmdb_rel_ci": 2},
        }


def test_a_queued_create_then_an_update_merge_into_one_create(tmp_path: Path) -> None:
    with Outbox(tmp_path / "ob.sqlite3") as box:
        box.enqueue(
            "r1",
            OP_CREATE,
            "cmdb_ci_ip_switch",
            source_id="d1",
            values={"name": "sw", "ip_address": "10.0.0.1"},
            references={"location": "s1"},
        )
        box.enqueue(
            "r2",
            OP_UPDATE,
            "cmdb_ci",  # how the engine addresses a CI held under another class
            source_id="d1",
            sys_id="x1",
            values={"ip_address": "10.0.0.2", "location": "LOCSYS"},
            extra={"before": {"ip_address": "10.0.0.1", "location": ""}},
        )
        [entry] = box.pending()
        assert entry.op == OP_CREATE and entry.run_id == "r2"
        assert entry.table == "cmdb_ci_ip_switch"  # still created in the intended class
        assert entry.payload["values"] == {
            "name": "sw",
            "ip_address": "10.0.0.2",
            "location": "LOCSYS",
        }
        assert entry.payload["references"] == {}  # resolved by the update: no stale target
        client = FakeTables()
        result = box.replay(client)
        assert (result.created, result.failed) == (1, [])
        [row] = client.rows["cmdb_ci_ip_switch"]
        assert (row["ip_address"], row["location"]) == ("10.0.0.2", "LOCSYS")


def test_updates_queued_twice_keep_the_latest_payload_and_the_first_before_image(
    tmp_path: Path,
) -> None:
    client = FakeTables()
    client.rows["cmdb_ci"] = [{"sys_id": "x1", "u_unifi_source_id": "d1", "name": "a", "ip": "1"}]
    with Outbox(tmp_path / "ob.sqlite3") as box:
        box.enqueue("r1", OP_UPDATE, "cmdb_ci", source_id="d1", sys_id="x1",
                    values={"name": "b"}, extra={"before": {"name": "a"}})  # fmt: skip
        box.enqueue("r2", OP_UPDATE, "cmdb_ci", source_id="d1", sys_id="x1",
                    values={"ip": "2"}, extra={"before": {"ip": "1", "name": "b?"}})  # fmt: skip
        [entry] = box.pending()
        assert entry.payload["values"] == {"ip": "2"}  # the source went back to name "a"
        assert entry.payload["before"] == {"ip": "1", "name": "a"}
        assert box.replay(client).updated == 1
        assert client.rows["cmdb_ci"][0] == {
            "sys_id": "x1",
            "u_unifi_source_id": "d1",
            "name": "a",
            "ip": "2",
        }
        # replayed entries are done: queuing the same intent again is a new, single entry
        box.enqueue("r3", OP_UPDATE, "cmdb_ci", source_id="d1", sys_id="x1", values={"ip": "2"})
        assert box.count() == 1 and box.count(STATUS_DONE) == 1


def test_a_queued_create_of_a_ci_held_under_another_class_updates_it_through_cmdb_ci(
    tmp_path: Path,
) -> None:
    """The device was loaded as an access point; the source now says switch. A PATCH to the
    switch table would miss it (404), leaving one update for the next run."""
    client = FakeTables()
    held = {"sys_id": "ap1", "u_unifi_source_id": "d1", "name": "old", "ip_address": "10.0.0.1"}
    client.rows["cmdb_ci_wap_network"] = [held]
    client.rows["cmdb_ci"] = client.rows["cmdb_ci_wap_network"]  # the parent table sees it
    with Outbox(tmp_path / "ob.sqlite3") as box:
        box.enqueue("r", OP_CREATE, "cmdb_ci_ip_switch", source_id="d1",
                    values={"name": "new", "ip_address": "10.0.0.1"})  # fmt: skip
        result = box.replay(client)
        assert result.failed == [] and result.updated == 1
        assert ("update", "cmdb_ci") in client.calls
        assert held["name"] == "new"
        assert "cmdb_ci_ip_switch" not in client.rows  # nothing created: no duplicate


def test_a_queued_create_keeps_its_chosen_sys_id_only_if_it_creates(tmp_path: Path) -> None:
    """A create queued mid-run carries the sys_id the loader chose for it. Replayed as a create
    it keeps that id (records queued with a reference to it stay right); if a record with its
    source id turned up meanwhile, that record keeps its own id (no PATCH of ``sys_id``)."""
    client = FakeTables()
    client.rows["cmdb_ci_ip_switch"] = [{"sys_id": "theirs", "u_unifi_source_id": "d1"}]
    chosen = {"d1": "a" * 32, "d2": "b" * 32}
    with Outbox(tmp_path / "ob.sqlite3") as box:
        for sid, sys_id in chosen.items():
            box.enqueue("r", OP_CREATE, "cmdb_ci_ip_switch", source_id=sid,
                        values={"name": sid, "sys_id": sys_id})  # fmt: skip
        result = box.replay(client)
    assert result.failed == [] and result.updated == 1 and result.created == 1
    rows = {r["u_unifi_source_id"]: r for r in client.rows["cmdb_ci_ip_switch"]}
    assert rows["d1"]["sys_id"] == "theirs" and rows["d1"]["name"] == "d1"
    assert rows["d2"]["sys_id"] == "b" * 32


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([OP_CREATE, OP_UPDATE, OP_RELATE]),
                          st.sampled_from("abc")), max_size=12))  # fmt: skip
def test_the_queue_holds_each_intent_once_in_the_order_last_queued(
    writes: list[tuple[str, str]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp, Outbox(Path(tmp) / "ob.sqlite3") as box:
        for n, (op, sid) in enumerate(writes):
            if op == OP_RELATE:
                link = {"parent_source_id": sid, "child_source_id": "z", "type_name": "T"}
                box.enqueue(f"r{n}", op, "cmdb_rel_ci", extra=link)
            else:
                box.enqueue(f"r{n}", op, "cmdb_ci", source_id=sid, values={"n": str(n)})
        keys = [("rel" if op == OP_RELATE else "rec", sid) for op, sid in writes]
        last = {k: i for i, k in enumerate(keys)}
        expected = sorted(last, key=last.__getitem__)
        pending = box.pending()
        got = [
            ("rel", e.payload["parent_source_id"]) if e.op == OP_RELATE else ("rec", e.source_id)
            for e in pending
        ]
        assert got == expected
        for entry, key in zip(pending, got, strict=True):
            assert entry.run_id == f"r{last[key]}"
            if key[0] == "rec":  # a create absorbs later updates: the record may not exist
                created = any(op == OP_CREATE and sid == key[1] for op, sid in writes)
                assert (entry.op == OP_CREATE) == created


def test_a_record_queued_again_still_replays_before_a_link_queued_earlier(
    tmp_path: Path,
) -> None:
    # Run 1 queues a CI and a link to it; run 2 (still down) queues only the CI again, which
    # moves it to the end of the queue. Replay must still create the CI before the link.
    client = FakeTables()
    client.rows["cmdb_rel_type"] = [{"sys_id": "T", "name": "Connects to::Connected by"}]
    client.rows["cmdb_ci"] = client.rows.setdefault("cmdb_ci_ip_switch", [])  # one hierarchy
    link = {"parent_source_id": "d1", "child_source_id": "d2", "type_sys_id": "T"}
    with Outbox(tmp_path / "ob.sqlite3") as box:
        box.enqueue("r1", OP_CREATE, "cmn_location", source_id="s1", values={"name": "HQ"})
        box.enqueue("r1", OP_CREATE, "cmdb_ci_ip_switch", source_id="d1", values={"name": "a"})
        box.enqueue("r1", OP_CREATE, "cmdb_ci_ip_switch", source_id="d2", values={"name": "b"})
        box.enqueue("r1", OP_RELATE, "cmdb_rel_ci", extra=link)
        box.enqueue("r2", OP_CREATE, "cmdb_ci_ip_switch", source_id="d1", values={"name": "a2"})
        box.enqueue("r2", OP_CREATE, "cmn_location", source_id="s1", values={"name": "HQ"})
        order = [
            (e.table, e.source_id or e.payload["parent_source_id"]) for e in box.replay_order()
        ]
        assert order == [
            ("cmn_location", "s1"),
            ("cmdb_ci_ip_switch", "d2"),
            ("cmdb_ci_ip_switch", "d1"),
            ("cmdb_rel_ci", "d1"),
        ]
        result = box.replay(client)
        assert result.complete and not result.failed
        assert result.related == 1


def _replay(client: Any) -> Any:
    with Outbox() as box, AuditTrail() as audit, IntentJournal() as intents:
        return box.replay(client, audit=audit, intents=intents)


def _undo(client: Any, run_id: str) -> Any:
    with AuditTrail() as audit:
        return rollback(client, run_id, audit=audit)


def test_a_queued_create_that_finds_someone_elses_record_keeps_its_before_image(
    client: Any,
) -> None:
    with Outbox() as box:  # queued while the instance was down
        box.enqueue("queued", OP_CREATE, "cmdb_ci_ip_switch", source_id="dev:x",
                    values={"name": "ours", "serial_number": "S1"})  # fmt: skip
    theirs = client.create(
        "cmdb_ci_ip_switch", {"name": "theirs", "serial_number": "S1", SID: "dev:x"}
    )  # made meanwhile by someone else
    assert _replay(client).updated == 1
    [entry] = read_audit(run_id="queued")
    assert entry["before"] == {"name": "theirs"} and entry["after"] == {"name": "ours"}
    assert _undo(client, "queued").ok
    assert client.get("cmdb_ci", theirs["sys_id"])["name"] == "theirs"


def test_a_queued_update_audits_the_record_as_the_replay_found_it(client: Any) -> None:
    switch = client.create("cmdb_ci_ip_switch", {"name": "sw", SID: "dev:u", "ip_address": "1"})
    with Outbox() as box:  # planned while the address was 1
        box.enqueue("queued", OP_UPDATE, "cmdb_ci_ip_switch", source_id="dev:u",
                    sys_id=switch["sys_id"], values={"ip_address": "2"},
                    extra={"before": {"ip_address": "1"}})  # fmt: skip
    client.update("cmdb_ci_ip_switch", switch["sys_id"], {"ip_address": "5"})  # an operator
    assert _replay(client).updated == 1
    assert [e["before"] for e in read_audit(run_id="queued")] == [{"ip_address": "5"}]
    assert _undo(client, "queued").ok
    assert client.get("cmdb_ci", switch["sys_id"])["ip_address"] == "5"


def test_refused_credentials_stop_the_replay_and_keep_the_queue(sandbox: Any, client: Any) -> None:
    """A password rotated during the outage had failed every queued entry for good."""
    with Outbox() as box:
        for n in range(3):
            box.enqueue("queued", OP_CREATE, "cmn_location", source_id=f"site:{n}",
                        values={"name": f"L{n}"})  # fmt: skip
    refused = ServiceNowAPIClient(
        sandbox.url,
        CredentialManager.static(basic=("admin", "wrong")),
        verify=str(sandbox.ca_path),
        sleep=lambda _s: None,
    )
    with refused:
        result = _replay(refused)
    assert result.sent == 0 and result.failed == [] and result.remaining == 3
    assert result.stopped and result.stopped.startswith("AuthenticationError")
    assert _replay(client).sent == 3
    assert sorted(r["name"] for r in client.query("cmn_location", "")) == ["L0", "L1", "L2"]


def test_what_stops_a_replay_and_what_fails_one_entry() -> None:
    assert stops_the_replay(NetworkError("refused"))
    assert stops_the_replay(AmbiguousWriteError("answer lost"))
    assert stops_the_replay(RateLimitError("429"))
    assert stops_the_replay(TransientServerError("503"))
    assert stops_the_replay(LookupError("no record with source id x")) is None
    assert stops_the_replay(ValueError("bad payload")) is None


def test_an_unreadable_local_file_is_named_with_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from snowkit.cli import main
    from snowkit.cmdb.intents import intents_path
    from snowkit.cmdb.local_db import LocalStoreError
    from snowkit.cmdb.state import StateStore

    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database, and longer than a header" * 4)
    for opener, said in ((Outbox, "plans again"), (IntentJournal, "no rollback undoes it"),
                         (StateStore, "reads the CMDB in full")):  # fmt: skip
        with pytest.raises(LocalStoreError) as info:
            opener(garbage)
        assert str(garbage) in str(info.value) and said in str(info.value)

    paths.outbox_path().parent.mkdir(parents=True, exist_ok=True)
    paths.outbox_path().write_bytes(garbage.read_bytes())
    assert main(["outbox", "show"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the outbox ") and "Traceback" not in err
    paths.outbox_path().unlink()
    intents_path().write_bytes(garbage.read_bytes())
    assert main(["outbox", "replay"]) == 1
    assert "the intent journal" in capsys.readouterr().err


def test_a_reference_whose_target_is_not_found_is_reported_not_dropped_silently(
    tmp_path: Path,
) -> None:
    client = FakeTables()
    with Outbox(tmp_path / "ob.sqlite3") as box:
        box.enqueue("r", OP_CREATE, "cmdb_ci_ip_switch", source_id="dev:1",
                    values={"name": "sw"}, references={"location": "site:gone"})  # fmt: skip
        result = box.replay(client)
    assert result.created == 1 and "location" not in client.rows["cmdb_ci_ip_switch"][0]
    assert result.unresolved == [
        {"seq": 1, "table": "cmdb_ci_ip_switch", "source_id": "dev:1", "field": "location",
         "target": "site:gone"}
    ]  # fmt: skip
    assert result.to_dict()["unresolved"] == result.unresolved


def test_a_lookup_takes_only_a_record_that_carries_the_source_id(tmp_path: Path) -> None:
    """An instance without the field ignores the condition and returns any record."""
    client = FakeTables()
    client.rows["cmdb_ci_ip_switch"] = [{"sys_id": "theirs", "name": "someone's switch"}]
    client.query = lambda table, query="", fields=None, **kw: iter(  # type: ignore[method-assign]
        [dict(r) for r in client.rows.get(table, [])]
    )
    with Outbox(tmp_path / "ob.sqlite3") as box:
        for n in range(2):
            box.enqueue("r", OP_CREATE, "cmdb_ci_ip_switch", source_id=f"dev:{n}",
                        values={"name": f"sw-{n}"})  # fmt: skip
        result = box.replay(client)
    assert result.created == 2 and result.updated == 0
    assert client.rows["cmdb_ci_ip_switch"][0] == {"sys_id": "theirs", "name": "someone's switch"}


@pytest.mark.parametrize(
    ("window_s", "wait_cap_s", "status", "said"),
    [(3600, 1, "queued", "rate-limit window closed"), (60, 120, "partial", "stopped early")],
)
def test_a_rate_limit_window_closing_mid_load_keeps_the_count_and_the_next_load_converges(
    window_s: int, wait_cap_s: int, status: str, said: str
) -> None:
    """A run that met a spent rule mid-way had failed with ``applied: {}``, its landed writes
    uncounted. A window closed beyond the wait cap now queues the rest in the outbox; retries
    used up within the cap (the no-op sleep here retries at once) end the run partial. The
    next load finishes either."""
    from snowkit.cmdb.job import run_load
    from snowkit.config import OperationalConfig
    from snowkit.sandbox import Sandbox

    from .conftest import FAST, LAB

    # a 1 s cap under an hourly window: the window outlasts any wait (but in its last second)
    config = OperationalConfig(retry={"max_retry_after_seconds": wait_cap_s})

    def load(sb: Sandbox) -> Any:
        return run_load(sandbox=sb, lab=LAB, progress=False, batch_size=5, workers=2,
                        client_options=FAST, config=config)  # fmt: skip

    with Sandbox.start() as sb:
        needed = load(sb).requests["total"]  # what a whole load of this lab asks
    rule = {"requests": needed - 4, "window_seconds": window_s}
    with Sandbox.start(faults={"rate_limit": rule}) as sb:
        first = load(sb)
        assert first.status == status, first.message
        assert said in first.message and "RateLimitError" in first.message
        assert first.applied["created"] > 0
        assert (first.outbox["pending"] > 0) is (status == "queued")
        sb.set_faults({})  # the window reopens
        second = load(sb)
        assert second.status == "success", second.message
        sourced = sb.store.list("cmdb_ci", "u_unifi_source_idISNOTEMPTY", limit=-1)[0]
        ids = [row["u_unifi_source_id"] for row in sourced]
        assert len(ids) == len(set(ids)) > 0  # every CI once
        with Outbox() as box:
            assert box.count() == 0
