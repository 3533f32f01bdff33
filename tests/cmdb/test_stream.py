"""The streaming apply: writes go out by readiness, never before what they depend on.

Black-box against the embedded instance: the engine's chunks are observed on their way to the
Batch API (``BatchRunner.run_chunk`` wrapped), and the CMDB is read back afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from snowkit.cmdb.apply import SyncEngine
from snowkit.cmdb.schema import ensure_schema
from snowkit.cmdb.transform import CMDBRecord, RelationshipSpec, TransformResult
from snowkit.cmdb.writes import RELATE, WriteOp
from snowkit.credentials import CredentialManager
from snowkit.servicenow import AdaptiveLimiter, ServiceNowAPIClient

from .test_apply import CONNECTS, SID, estate


class Recorder:
    """Wraps an engine's chunk sender: every chunk as sent, and the reads the client made."""

    def __init__(self, engine: SyncEngine) -> None:
        self.chunks: list[list[tuple[str, str | None, dict[str, str], Any]]] = []
        self.reads: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        send, query = engine.runner.run_chunk, engine.client.query

        def run_chunk(chunk: list[WriteOp]) -> None:
            with self._lock:
                self.chunks.append([(op.action, op.source_id, dict(op.body), op.spec)
                                    for op in chunk])  # fmt: skip
            send(chunk)

        def recording_query(table: str, query: Any = "", *a: Any, **kw: Any) -> Iterator[dict]:
            with self._lock:
                self.reads.append((table, str(query)))
            return query_fn(table, query, *a, **kw)

        query_fn = query
        engine.runner.run_chunk = run_chunk  # type: ignore[method-assign]
        engine.client.query = recording_query  # type: ignore[method-assign]

    def first_chunk_of(self) -> dict[str, int]:
        """Source id → index of the chunk that wrote it."""
        return {
            sid: n
            for n, chunk in enumerate(self.chunks)
            for action, sid, _body, _spec in chunk
            if action != RELATE and sid
        }


def run(client: ServiceNowAPIClient, result: TransformResult, **kw: Any) -> tuple[Any, Recorder]:
    kw.setdefault("batch_size", 4)
    kw.setdefault("workers", 3)
    eng = SyncEngine(client, **kw)
    rec = Recorder(eng)
    _plan, report = eng.sync(result, progress=False)
    assert report.status == "success", report.message
    return report, rec


def test_links_wait_for_their_ends_and_references_name_the_chosen_sys_id(
    client: ServiceNowAPIClient,
) -> None:
    result = estate(sites=2, devices=4, clients=6)
    report, rec = run(client, result)
    written_in = rec.first_chunk_of()
    bodies = {sid: body for chunk in rec.chunks for action, sid, body, _ in chunk
              if action != RELATE and sid}  # fmt: skip
    stored = {row[SID]: row for row in client.query("cmdb_ci", f"{SID}ISNOTEMPTY")}
    stored.update({row[SID]: row for row in client.query("cmn_location", f"{SID}ISNOTEMPTY")})
    records = {r.source_id: r for r in result.records}
    for n, chunk in enumerate(rec.chunks):
        for action, sid, body, spec in chunk:
            if action == RELATE:
                assert written_in[spec.parent_source_id] < n
                assert written_in[spec.child_source_id] < n
                continue
            # every create is sent with the sys_id it is stored under ...
            assert body["sys_id"] == stored[sid]["sys_id"]
            # ... so a reference to a record created in the same run needs no wait for it
            for fld, target in records[sid].references.items():
                assert body[fld] == bodies[target]["sys_id"] == stored[target]["sys_id"]
                assert stored[sid][fld] == stored[target]["sys_id"]
    assert report.relationships.created == len(result.relationships)
    assert report.applied["created"] == len(result.records)


def test_chunks_mix_records_and_links_and_fill_up(client: ServiceNowAPIClient) -> None:
    result = estate(sites=3, devices=4, clients=8)  # 3 locations, 36 CIs, 33 links
    _report, rec = run(client, result, batch_size=5, workers=1)
    sizes = [len(c) for c in rec.chunks]
    assert sum(sizes) == len(result.records) + len(result.relationships)
    # records go first (none waits for the location it references), then every chunk is
    # full but the last: links fill what the records leave
    assert [a for a, *_ in rec.chunks[0]] == ["create"] * 5
    assert all(s == 5 for s in sizes[:-1]), sizes
    kinds = [{a == RELATE for a, *_ in chunk} for chunk in rec.chunks]
    assert {True, False} in kinds, "no chunk carried a record and a link together"


def test_links_to_records_created_in_the_run_are_not_read_first(
    client: ServiceNowAPIClient,
) -> None:
    _report, rec = run(client, estate())
    link_reads = [q for table, q in rec.reads if table == "cmdb_rel_ci"]
    assert link_reads == []
    links = list(client.query("cmdb_rel_ci", "", fields=["parent", "child", "type"]))
    keys = [(r["parent"], r["child"], r["type"]) for r in links]
    assert len(keys) == len(set(keys)) == len(estate().relationships)


def test_links_between_records_already_there_are_checked_once(
    client: ServiceNowAPIClient,
) -> None:
    first, _ = run(client, estate())
    again, rec = run(client, estate())
    assert again.relationships.created == 0
    assert again.relationships.existing == first.relationships.created
    assert rec.chunks == []
    assert client.count("cmdb_rel_ci") == first.relationships.created


def test_a_link_whose_end_failed_is_an_orphan_not_a_half_link(
    client: ServiceNowAPIClient,
) -> None:
    records = [
        CMDBRecord("cmn_location", "site:x", {"name": "X"}, "location"),
        CMDBRecord("cmdb_ci_ip_switch", "dev:ok", {"name": "ok"}, "switch", {"location": "site:x"}),
        CMDBRecord(
            "cmdb_ci_ip_switch", "dev:bad", {"name": "bad"}, "switch", {"location": "site:x"}
        ),
    ]
    rels = [RelationshipSpec("dev:ok", "dev:bad", CONNECTS)]
    eng = SyncEngine(client, batch_size=4, workers=2)
    send = eng.runner.run_chunk

    def refuse_bad(chunk: list[WriteOp]) -> None:  # the instance refuses dev:bad for good
        for op in chunk:
            if op.source_id == "dev:bad":
                eng.ledger.fail(op, "HTTP 400: refused", 400)
        send([op for op in chunk if op.source_id != "dev:bad"])

    eng.runner.run_chunk = refuse_bad  # type: ignore[method-assign]
    _plan, report = eng.sync(TransformResult(records=records, relationships=rels), progress=False)
    assert report.applied["failed"] == 1
    assert report.relationships.orphans == 1 and report.relationships.created == 0
    assert client.count("cmdb_rel_ci") == 0
    assert [r[SID] for r in client.query("cmdb_ci", f"{SID}=dev:ok", fields=[SID])] == ["dev:ok"]


def test_records_referencing_each_other_in_a_cycle_still_go(client: ServiceNowAPIClient) -> None:
    """A reference cycle needs no wait at all: each create carries the sys_id chosen for it,
    so both records go with the other's sys_id filled in."""
    records = [
        CMDBRecord("cmdb_ci_ip_switch", "dev:a", {"name": "a"}, "switch", {"location": "dev:b"}),
        CMDBRecord("cmdb_ci_ip_switch", "dev:b", {"name": "b"}, "switch", {"location": "dev:a"}),
    ]
    eng = SyncEngine(client, batch_size=4, workers=2)
    _plan, report = eng.sync(TransformResult(records=records), progress=False, verify=False)
    assert report.applied["created"] == 2, report.message
    rows = {
        r[SID]: r
        for r in client.query("cmdb_ci", f"{SID}STARTSWITHdev:", fields=[SID, "sys_id", "location"])
    }
    assert set(rows) == {"dev:a", "dev:b"}
    assert rows["dev:a"]["location"] == rows["dev:b"]["sys_id"]
    assert rows["dev:b"]["location"] == rows["dev:a"]["sys_id"]


def test_two_cycles_sharing_a_record_still_write_each_record_once(
    client: ServiceNowAPIClient,
) -> None:
    """A references T1 and T2, T1 references A, T2 and X reference each other: breaking the
    first cycle must not leave A to be sent again when the second is broken."""

    def ci(sid: str, refs: dict[str, str]) -> CMDBRecord:
        return CMDBRecord("cmdb_ci_ip_switch", sid, {"name": sid}, "switch", refs)

    records = [
        ci("dev:a", {"location": "dev:t1", "u_peer": "dev:t2"}),
        ci("dev:t1", {"location": "dev:a"}),
        ci("dev:t2", {"location": "dev:x"}),
        ci("dev:x", {"location": "dev:t2"}),
    ]
    eng = SyncEngine(client, batch_size=1, workers=1)
    rec = Recorder(eng)
    _plan, report = eng.sync(TransformResult(records=records), progress=False, verify=False)
    sent = [sid for chunk in rec.chunks for _a, sid, _b, _s in chunk]
    assert sorted(sent) == ["dev:a", "dev:t1", "dev:t2", "dev:x"], sent
    assert report.applied["created"] == 4
    held = [r[SID] for r in client.query("cmdb_ci", f"{SID}STARTSWITHdev:", fields=[SID])]
    assert sorted(held) == ["dev:a", "dev:t1", "dev:t2", "dev:x"]


def test_chosen_sys_ids_are_new_hex_guids_and_a_chosen_one_is_kept() -> None:
    from snowkit.cmdb.stream import choose_sys_ids

    def op(action: str, sid: str | None, **extra: str) -> WriteOp:
        return WriteOp(key=sid or "k", action=action, table="cmdb_ci", values={}, extra=extra,
                       source_id=sid)  # fmt: skip

    ops = [op("create", f"dev:{n}") for n in range(500)]
    ops += [op("create", "dev:kept", sys_id="a" * 32), op("update", "dev:u"), op("create", None)]
    chosen = choose_sys_ids(ops)
    assert set(chosen) == {f"dev:{n}" for n in range(500)} | {"dev:kept"}
    assert chosen["dev:kept"] == "a" * 32
    fresh = [v for k, v in chosen.items() if k != "dev:kept"]
    assert len(set(fresh)) == len(fresh)
    assert all(len(v) == 32 and v == v.lower() and int(v, 16) >= 0 for v in fresh)
    assert all(o.extra["sys_id"] == chosen[o.source_id] for o in ops if o.source_id in chosen)
    assert "sys_id" not in ops[-2].extra and "sys_id" not in ops[-1].extra


def test_a_batch_waiting_out_a_429_lends_its_slot_to_the_next_batch(sandbox: Any) -> None:
    """One slot: while the throttled batch sleeps out its Retry-After nothing of it is at the
    instance, so its slot is free for others; the retry takes one again and lands."""
    limiter = AdaptiveLimiter(initial=1, minimum=1, maximum=1)
    during_wait: list[int] = []

    def sleep(seconds: float) -> None:
        during_wait.append(limiter.in_flight)
        sandbox.set_faults(None)

    def throttle_from_now(done: int) -> None:
        if done == 1:
            sandbox.set_faults({"rate_limit": {"requests": 0, "window_seconds": 60}})

    creds = CredentialManager.static(basic=("admin", sandbox.users["admin"]))
    with ServiceNowAPIClient(sandbox.url, creds, verify=str(sandbox.ca_path), sleep=sleep) as c:
        ensure_schema(c)
        engine = SyncEngine(c, batch_size=2, workers=1, limiter=limiter,
                            on_batch=throttle_from_now)  # fmt: skip
        # batches enough that some go after the first is done (one may be out already)
        _plan, report = engine.sync(estate(sites=1, devices=2, clients=6), progress=False)
    assert report.status == "success" and not report.failures
    # the first wait: the slot lent (a batch that took it meanwhile may wait in turn)
    assert during_wait and during_wait[0] == 0
    assert limiter.in_flight == 0


def test_a_chunk_goes_as_one_request_whatever_its_size(sandbox: Any, new_client: Any) -> None:
    """--batch-size 150 had gone out as a request of 100 and one of 50, one after the other
    (the client's default item cap split every chunk)."""
    from snowkit.ops.metrics import MetricsCollector

    metrics = MetricsCollector()
    with new_client(sandbox, metrics=metrics) as client:
        ensure_schema(client)
        records = [
            CMDBRecord("cmdb_ci_ip_switch", f"dev:{n}", {"name": f"sw-{n}"}, "switch")
            for n in range(300)
        ]
        before = metrics.get_operation_metrics("batch")
        assert before is None or before.total_requests == 0
        _, report = SyncEngine(client, batch_size=150, workers=2).sync(
            TransformResult(records=records), progress=False, verify=False
        )
    assert report.applied["created"] == 300
    sent = metrics.get_operation_metrics("batch")
    assert sent is not None and sent.total_requests == 2
