"""SyncEngine: apply a plan to the CMDB exactly once, whatever the network and the instance do.

Writes go in dependency order (locations, network gear, clients, then relationships) so every
reference can be resolved to a sys_id before it is sent. Each phase is cut into Batch API
requests of ``batch_size`` items, sent by ``workers`` threads under the adaptive limiter.

Exactly once:
- every create carries ``u_unifi_source_id``; before any retry of a create whose outcome is
  unknown (an ambiguous write, a failed batch item) the record is looked up by source id and
  adopted if it landed;
- state lives in the CMDB (keyed by source id) and in the outbox, so a crashed run is simply
  rerun: the new plan finds what landed (no-change / update) and creates only the rest;
- when the instance is unreachable (network down, breaker open, hibernating) the remaining
  writes go to the durable outbox and the run ends ``queued``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from snowkit.cmdb import incremental
from snowkit.cmdb import ire as ire_mode
from snowkit.cmdb import plan as planning
from snowkit.cmdb.outbox import (
    OP_CREATE,
    OP_RELATE,
    OP_UPDATE,
    Outbox,
    is_unreachable_error,
)
from snowkit.cmdb.plan import (
    CI_TABLE,
    CREATE,
    LOCATION_TABLE,
    RETIRE,
    SOURCE_ID_FIELD,
    UPDATE,
    Plan,
    PlanItem,
)
from snowkit.cmdb.progress import bar
from snowkit.cmdb.relationships import (
    REL_TABLE,
    RelTypeCache,
    existing_link_rows,
    find_link,
    plan_links,
    smaller_side,
)
from snowkit.cmdb.report import ItemFailure, RunReport, suggestions_from
from snowkit.ops.logging import StructuredLogger
from snowkit.servicenow.batch import BatchRequest
from snowkit.servicenow.query import Query

#: Kinds the transform gives client devices; everything else non-location is network gear.
CLIENT_KINDS = frozenset({"client", "wired_client", "wireless_client"})
#: Fields the engine adds that verification does not compare.
_META_FIELDS = frozenset({SOURCE_ID_FIELD, "sys_class_name"})
#: Per-item statuses worth another attempt (after a lookup, for creates).
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
#: Write answers carry the record's version, which the incremental snapshot remembers.
_RETURN_FIELDS = (
    f"sysparm_fields=sys_id,{SOURCE_ID_FIELD},sys_updated_on,sys_mod_count"
    "&sysparm_exclude_reference_link=true"
)


def write_rank(item: PlanItem) -> int:
    """Base phase of a record: locations 0, network gear 1, clients 2."""
    if item.table == LOCATION_TABLE:
        return 0
    kind = (item.kind or "").lower()
    if kind in CLIENT_KINDS or "client" in kind:
        return 2
    return 1


def dependency_phases(items: Sequence[PlanItem]) -> list[list[PlanItem]]:
    """Group writes into phases so each record comes after every record it references.

    A record's level is the larger of its base rank and one more than the level of each record
    it references that is itself written in this run (reference cycles are cut).
    """
    by_sid = {i.source_id: i for i in items}
    levels: dict[str, int] = {}

    def level(item: PlanItem, stack: frozenset[str]) -> int:
        if item.source_id in levels:
            return levels[item.source_id]
        value = write_rank(item)
        for target in item.references.values():
            dep = by_sid.get(target)
            if dep is not None and target not in stack and dep is not item:
                value = max(value, level(dep, stack | {item.source_id}) + 1)
        levels[item.source_id] = value
        return value

    grouped: dict[int, list[PlanItem]] = {}
    for item in items:
        grouped.setdefault(level(item, frozenset()), []).append(item)
    return [grouped[k] for k in sorted(grouped)]


@dataclass(slots=True)
class WriteOp:
    """One write on its way: a create/update of a plan item, or a relationship create."""

    key: str
    action: str  # create | update | retire | relate
    table: str  # the table written (after any fallback)
    values: Mapping[str, str]  # shared with the plan item: never mutated, never copied
    extra: dict[str, str] = field(default_factory=dict)  # resolved references, source id...
    source_id: str | None = None
    sys_id: str | None = None
    item: PlanItem | None = None
    before: dict[str, str] | None = None
    pending_refs: dict[str, str] = field(default_factory=dict)
    spec: Any = None
    class_name: str | None = None  # the intended class when written through a fallback

    @property
    def body(self) -> dict[str, str]:
        """The JSON body, composed when sent (keeps 50,000 pending writes small)."""
        return {**self.values, **self.extra} if self.extra else dict(self.values)

    @property
    def method(self) -> str:
        return "POST" if self.action in (CREATE, "relate") else "PATCH"

    @property
    def url(self) -> str:
        path = f"/api/now/table/{self.table}"
        if self.method == "PATCH":
            path += f"/{self.sys_id}"
        return f"{path}?{_RETURN_FIELDS}"


class CrashSimulation(RuntimeError):
    """Raised by test hooks to stop a run half-way, as a crash would."""


@dataclass
class _Stats:
    created: int = 0
    updated: int = 0
    retired: int = 0
    failed: int = 0
    queued: int = 0
    adopted_after_ambiguity: int = 0
    ambiguous: int = 0
    retried: int = 0
    batches: int = 0
    rel_created: int = 0
    rel_failed: int = 0
    rel_queued: int = 0


class SyncEngine:
    """Plans and applies a load; see the module docstring for the guarantees.

    ``on_batch(n)`` is called after each finished batch with the number finished so far (tests
    raise from it to simulate a crash). ``audit`` is an ``AuditTrail``: every write the engine
    makes is recorded with its before-image, which is what ``rollback`` replays.
    """

    def __init__(
        self,
        client: Any,
        *,
        audit: Any = None,
        outbox: Outbox | None = None,
        run_id: str | None = None,
        batch_size: int = 100,
        workers: int = 4,
        limiter: Any = None,
        logger: Any = None,
        retire_after_days: float | None = None,
        max_attempts: int = 3,
        on_batch: Callable[[int], None] | None = None,
        ire: bool = False,
        clock: Callable[[], float] = time.perf_counter,
        state_store: Any = None,
        instance_key: str | None = None,
    ) -> None:
        if batch_size < 1 or workers < 1:
            raise ValueError("batch_size and workers must be at least 1")
        self.client = client
        self.audit = audit
        self.outbox = outbox
        self.run_id = run_id or _new_run_id()
        self.batch_size = batch_size
        self.workers = workers
        self.limiter = limiter
        self.logger = logger or StructuredLogger("snowkit.cmdb.sync")
        self.retire_after_days = retire_after_days
        self.max_attempts = max(1, max_attempts)
        self.on_batch = on_batch
        self.ire = ire
        self._ire_ops: dict[str, int] = {}
        self._ire_specs: list[Any] = []
        self._clock = clock
        self._lock = threading.Lock()
        self._audit_lock = threading.Lock()
        self._unreachable = threading.Event()
        self._unreachable_reason = ""
        self._keys = itertools.count(1)
        self._sys_ids: dict[str, str] = {}
        self._fallbacks: dict[str, str] = {}
        self._failures: list[ItemFailure] = []
        self._written: list[tuple[str, str, Mapping[str, str], tuple[tuple[str, str], ...]]] = []
        self._stats = _Stats()
        self._batches_done = 0
        self.rel_types = RelTypeCache(client)
        # incremental snapshot (snowkit.cmdb.incremental): off in IRE mode (no versions)
        self.state_store = state_store if instance_key and not ire else None
        self.instance_key = instance_key or ""
        self._state: incremental.SyncState | None = None
        self._state_since: dict[str, str | None] = {}
        self._state_doubt: str | None = None
        self._first_stamp: str | None = None
        self._prefetched: Any = None

    # ------------------------------------------------------------------------------------
    # schema, plan
    # ------------------------------------------------------------------------------------
    def ensure_schema(self, create: bool = True) -> Any:
        """Check (and where allowed create) the source-id fields; see ``snowkit.cmdb.schema``."""
        from snowkit.cmdb.schema import ensure_schema

        return ensure_schema(self.client, create=create)

    def missing_tables(self, tables: Iterable[str]) -> set[str]:
        """Class tables the instance does not have (plugin not installed)."""

        candidates = [(t,) for t in _class_tables(tables)]
        return {t for t in planning.parallel_map(self._probe, candidates, self.workers) if t}

    def _probe(self, table: str) -> str | None:
        """``table`` when the instance does not have it, else None."""
        try:
            for _ in self.client.query(table, "", fields=["sys_id"], page_size=1):
                break
        except Exception as exc:
            if type(exc).__name__ == "InvalidTableError":
                return table
            raise
        return None

    def plan(
        self,
        result: Any,
        *,
        not_seen_since: dict[str, str] | None = None,
    ) -> Plan:
        """Read what the CMDB holds for these records and diff (nothing is written)."""
        records = list(getattr(result, "records", result))
        relationships = list(getattr(result, "relationships", ()) or ())
        missing, snapshot = self._read_cmdb(records)
        for table in missing:
            self._fallbacks[table] = CI_TABLE
        plan = planning.build_plan(
            records,
            snapshot,
            relationships=relationships,
            retire_after_days=self.retire_after_days,
            not_seen_since=not_seen_since,
        )
        for table in sorted(missing):
            plan.notes.append(
                f"class table {table} is missing on the instance: its records go to cmdb_ci "
                f"with sys_class_name={table}"
            )
        plan.fallbacks = dict(self._fallbacks)
        if self._state is not None:
            self._state.class_tables = _class_tables(r.table for r in records)
            self._state.rel_type_names = sorted({s.type_name for s in relationships})
        return plan

    def _read_cmdb(self, records: list[Any]) -> tuple[set[str], planning.CMDBSnapshot]:
        """Missing class tables and the snapshot: from the remembered state plus what changed
        when possible (one round of small requests), else read in full."""
        missing: set[str] | None = None
        tables = _class_tables(r.table for r in records)
        ahead, self._prefetched = self._prefetched, None
        if ahead is not None:
            state, listings, found = ahead.result()
            if state.class_tables != tables:
                found = [self._probe(t) for t in tables]
        else:
            state = self.state_store.load(self.instance_key) if self.state_store else None
            if state is not None:
                listings, found = self._list_changes(state, tables)
        if state is not None:
            missing = {t for t in found[: len(tables)] if t}
            why = incremental.refresh_records(
                self.client, state, listings, records, missing, workers=self.workers
            )
            if why is None:
                ours = set(state.rows["ci"])
                why_links = incremental.refresh_links(
                    self.client, state, listings["rel"], ours, workers=self.workers
                )
                if why_links is not None:
                    _forget_links(state)
                snapshot = incremental.snapshot_of(state, records, missing)
                planning.read_candidates(self.client, snapshot, records, workers=self.workers)
                self._adopt_state(state)
                self.logger.event(
                    "incremental_snapshot",
                    links=why_links or "remembered",
                    listed={k: len(v.versions) for k, v in listings.items()},
                )
                return missing, snapshot
            self.logger.event("incremental_snapshot_skipped", reason=why)
        if missing is None:
            missing = self.missing_tables(r.table for r in records)
        snapshot = planning.read_snapshot(
            self.client, records, missing_tables=missing, workers=self.workers
        )
        if self.state_store is not None:
            self._adopt_state(incremental.state_from_full_read(snapshot, records, missing))
        return missing, snapshot

    def prefetch(self) -> None:
        """Start reading what changed in the CMDB since the last run in the background, while
        the caller collects the inventory. Only when nothing is written before planning: call
        it with an empty outbox (``sync`` drops the read if the outbox replays anything)."""
        if self.state_store is None:
            return
        state = self.state_store.load(self.instance_key)
        if state is None:
            return
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snowkit-prefetch")
        self._prefetched = pool.submit(
            lambda: (state, *self._list_changes(state, list(state.class_tables)))
        )
        pool.shutdown(wait=False)

    def _list_changes(
        self, state: incremental.SyncState, tables: list[str]
    ) -> tuple[dict[str, incremental.Listing], list[Any]]:
        """One round: the listings and counts, the class-table probes, the relationship types."""
        extra: list[Callable[[], Any]] = [lambda t=t: self._probe(t) for t in tables]
        names = list(state.rel_type_names)
        extra.append(lambda: self.rel_types.prefetch(names))
        return incremental.list_changes(self.client, state, workers=self.workers, extra=extra)

    def _adopt_state(self, state: incremental.SyncState) -> None:
        self._state = state
        self._state_since = {k: v for k, v in state.watermarks.items() if v}

    # ------------------------------------------------------------------------------------
    # apply
    # ------------------------------------------------------------------------------------
    def apply(
        self, plan: Plan, *, progress: bool | None = True, report: RunReport | None = None
    ) -> RunReport:
        """Write the plan; returns the run report (status success / partial / queued)."""
        report = report or RunReport(run_id=self.run_id)
        started = self._clock()
        self._fallbacks.update(plan.fallbacks)
        self._sys_ids.update(plan.sys_ids)
        report.counts = plan.counts_by_table()
        report.notes.extend(plan.notes)

        writes = plan.writes
        self._ire_specs = list(plan.relationships) if self.ire else []
        t0 = self._clock()
        context = {"run_id": self.run_id, "writes": len(writes), "ire": self.ire}
        self.logger.log_operation_start("cmdb_apply", context)
        for index, phase in enumerate(dependency_phases(writes)):
            desc = f"phase {index + 1}"
            self.logger.event("sync_phase", phase=index + 1, records=len(phase))
            if self.ire:
                locations = [i for i in phase if i.table == LOCATION_TABLE]
                cis = [i for i in phase if i.table != LOCATION_TABLE]
                self._run_ops([self._op_for(i) for i in locations], desc, progress)
                ire_ops = [self._ire_op_for(i, plan) for i in cis]
                self._run_ops(ire_ops, desc + " (IRE)", progress, runner=self._run_ire_chunk)
            else:
                self._run_ops([self._op_for(i) for i in phase], desc, progress)
        report.timings["apply_records"] = round(self._clock() - t0, 3)

        t0 = self._clock()
        self._link(plan.relationships, report, progress)
        report.timings["relationships"] = round(self._clock() - t0, 3)
        report.timings["apply_total"] = round(self._clock() - started, 3)
        self._fill_report(report)
        self.logger.log_operation_complete(
            "cmdb_apply",
            report.timings["apply_total"] * 1000,
            report.status == "success",
            {**context, "status": report.status, **report.applied},
        )
        return report

    def _op_for(self, item: PlanItem) -> WriteOp:
        extra: dict[str, str] = {}
        pending: dict[str, str] = {}
        for fld, target in item.references.items():
            sys_id = self._sys_ids.get(target)
            if sys_id:
                extra[fld] = sys_id
            else:
                pending[fld] = target
        table = item.table
        class_name = None
        if table in self._fallbacks:
            table, class_name = self._fallbacks[table], item.table
        if item.action == CREATE:
            extra[SOURCE_ID_FIELD] = item.source_id
            if class_name:
                extra["sys_class_name"] = class_name
        elif item.class_change and class_name is None and table != LOCATION_TABLE:
            table = CI_TABLE  # held under another class: address the update through cmdb_ci
        return WriteOp(
            key=str(next(self._keys)),
            action=item.action,
            table=table,
            values=item.values,
            extra=extra,
            source_id=item.source_id,
            sys_id=item.sys_id,
            item=item,
            before=item.before,
            pending_refs=pending,
            class_name=class_name,
        )

    # -- running ops ---------------------------------------------------------------------
    def _run_ops(
        self,
        ops: list[WriteOp],
        desc: str,
        progress: bool | None,
        runner: Callable[[list[WriteOp]], None] | None = None,
    ) -> None:
        if not ops:
            return
        run = runner or self._run_chunk
        # references to targets that failed or are queued: drop (queued: keep for the outbox)
        for op in ops:
            for fld, target in list(op.pending_refs.items()):
                sys_id = self._sys_ids.get(target)
                if sys_id:
                    op.extra[fld] = sys_id
                    del op.pending_refs[fld]
        chunks = [ops[i : i + self.batch_size] for i in range(0, len(ops), self.batch_size)]
        with bar(len(ops), desc, enabled=progress) as pbar:
            if self.workers == 1 or len(chunks) == 1:
                for chunk in chunks:
                    run(chunk)
                    self._after_batch(pbar, len(chunk))
                return
            pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="snowkit-sync")
            try:
                futures = {pool.submit(run, c): len(c) for c in chunks}
                remaining = set(futures)
                while remaining:
                    done, remaining = wait(remaining, return_when=FIRST_EXCEPTION)
                    for fut in done:
                        fut.result()
                        self._after_batch(pbar, futures[fut])
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            pool.shutdown(wait=True)

    def _after_batch(self, pbar: Any, n: int) -> None:
        pbar.update(n)
        with self._lock:
            self._batches_done += 1
            done = self._batches_done
        if self.on_batch is not None:
            self.on_batch(done)

    def _run_chunk(self, chunk: list[WriteOp]) -> None:
        if self.audit is None:
            self._write_chunk(chunk)
            return
        with self.audit.batch():  # one fsync per batch, not per record
            self._write_chunk(chunk)

    def _write_chunk(self, chunk: list[WriteOp]) -> None:
        pending = list(chunk)
        last_error: dict[str, str] = {}
        for attempt in range(self.max_attempts):
            if self._unreachable.is_set():
                self._queue(pending)
                return
            if attempt:
                with self._lock:
                    self._stats.retried += len(pending)
            try:
                results = self._send(pending)
            except Exception as exc:
                if is_unreachable_error(exc):
                    self._mark_unreachable(exc)
                    self._queue(pending)
                    return
                if type(exc).__name__ == "AmbiguousWriteError":
                    with self._lock:
                        self._stats.ambiguous += len(pending)
                message = _describe(exc)
                for op in pending:
                    last_error[op.key] = message
                pending = self._settle(pending)
                continue
            whole = _whole_batch_failure(results, pending)
            if whole is not None:
                if _unreachable_context(whole):
                    self._mark_unreachable(RuntimeError(whole.error_message))
                    self._queue(pending)
                    return
                if whole.ambiguous:
                    with self._lock:
                        self._stats.ambiguous += len(pending)
            retry: list[WriteOp] = []
            for op in pending:
                res = results.get(op.key)
                if res is not None and res.ok:
                    self._succeed(op, _sys_id_of(res), _version_of(res))
                    continue
                status = None if res is None else res.status_code
                message = _result_error(res)
                if _is_invalid_table(status, message) and op.table != CI_TABLE:
                    self._fall_back(op)
                    retry.append(op)
                    continue
                if res is None or not res.serviced or status in RETRYABLE_STATUSES:
                    last_error[op.key] = message
                    retry.append(op)
                    continue
                self._fail(op, message, status)
            if not retry:
                return
            pending = self._settle(retry)
            if not pending:
                return
        for op in pending:
            self._fail(op, last_error.get(op.key, "no outcome after retries"), None)

    def _send(self, ops: list[WriteOp]) -> dict[str, Any]:
        requests = [
            BatchRequest(
                method=op.method,
                url=op.url,
                body=op.body,
                id=op.key,
                table=op.table,
                source_id=op.source_id,
            )
            for op in ops
        ]
        throttled = False
        if self.limiter is not None:
            self.limiter.acquire()
        started = self._clock()
        try:
            results = self.client.batch(requests)
            throttled = any(_throttled(r) for r in results)
        except Exception as exc:
            throttled = type(exc).__name__ == "RateLimitError"
            raise
        finally:
            if self.limiter is not None:
                self.limiter.release(self._clock() - started, throttled)
            with self._lock:
                self._stats.batches += 1
        return {str(r.id): r for r in results}

    def _settle(self, ops: list[WriteOp]) -> list[WriteOp]:
        """Before retrying: creates that landed anyway are adopted; returns what still needs
        sending. Updates are idempotent and simply go again."""
        creates = [op for op in ops if op.action == CREATE]
        relates = [op for op in ops if op.action == "relate"]
        others = [op for op in ops if op.action not in (CREATE, "relate")]
        still: list[WriteOp] = list(others)
        if creates:
            try:
                found = self._lookup_by_source_id(creates)
            except Exception as exc:
                if is_unreachable_error(exc):
                    self._mark_unreachable(exc)
                    return ops
                raise
            for op in creates:
                sys_id = found.get(op.source_id or "")
                if sys_id:
                    with self._lock:
                        self._stats.adopted_after_ambiguity += 1
                        self._state_doubt = "a write was settled by lookup"
                    self._succeed(op, sys_id, "")
                else:
                    still.append(op)
        for op in relates:
            try:
                sys_id = find_link(self.client, op.body)
            except Exception as exc:
                if is_unreachable_error(exc):
                    self._mark_unreachable(exc)
                    return ops
                raise
            if sys_id:
                with self._lock:
                    self._stats.adopted_after_ambiguity += 1
                self._succeed(op, sys_id)
            else:
                still.append(op)
        order = {op.key: n for n, op in enumerate(ops)}
        still.sort(key=lambda op: order[op.key])
        return still

    def _lookup_by_source_id(self, ops: list[WriteOp]) -> dict[str, str]:
        found: dict[str, str] = {}
        by_table: dict[str, list[str]] = {}
        for op in ops:
            table = LOCATION_TABLE if op.table == LOCATION_TABLE else CI_TABLE
            if op.source_id:
                by_table.setdefault(table, []).append(op.source_id)
        for table, sids in by_table.items():
            for start in range(0, len(sids), 100):
                chunk = [s for s in sids[start : start + 100] if "," not in s and "^" not in s]
                if not chunk:
                    continue
                query = Query().in_(SOURCE_ID_FIELD, chunk)
                for row in self.client.query(table, query, fields=["sys_id", SOURCE_ID_FIELD]):
                    found[_str(row.get(SOURCE_ID_FIELD))] = _str(row.get("sys_id"))
        return found

    def _fall_back(self, op: WriteOp) -> None:
        intended = op.class_name or op.table
        with self._lock:
            self._fallbacks[intended] = CI_TABLE
        op.class_name = intended
        op.table = CI_TABLE
        if op.action == CREATE:
            op.extra["sys_class_name"] = intended

    def _mark_unreachable(self, exc: BaseException) -> None:
        with self._lock:
            if not self._unreachable.is_set():
                self._unreachable_reason = _describe(exc)
                self._unreachable.set()

    # -- outcomes ------------------------------------------------------------------------
    def _succeed(self, op: WriteOp, sys_id: str | None, version: str | None = None) -> None:
        sys_id = sys_id or op.sys_id
        with self._lock:
            if op.action == CREATE:
                self._stats.created += 1
            elif op.action == UPDATE:
                self._stats.updated += 1
            elif op.action == RETIRE:
                self._stats.retired += 1
            elif op.action == "relate":
                self._stats.rel_created += 1
            if op.source_id and sys_id and op.action != "relate":
                self._sys_ids[op.source_id] = sys_id
            op.sys_id = sys_id
            if op.action != "relate" and op.source_id:
                refs = tuple((k, v) for k, v in op.extra.items() if k not in _META_FIELDS)
                self._written.append((op.table, op.source_id, op.values, refs))
            self._remember(op, sys_id, version)
        action = "create" if op.action in (CREATE, "relate") else "update"
        self._audit(action, op.table, sys_id, op.source_id, op.before, op.body, "success")

    def _remember(self, op: WriteOp, sys_id: str | None, version: str | None) -> None:
        """Keep the incremental state in step with a write that landed (call under the lock)."""
        state = self._state
        if state is None:
            return
        if not sys_id or not version or version.startswith("|"):
            self._state_doubt = self._state_doubt or "a write's new version is unknown"
            return
        state.dirty = True
        stamp = version.split("|", 1)[0]
        if self._first_stamp is None or stamp < self._first_stamp:
            self._first_stamp = stamp
        if op.action == "relate":
            state.rows["rel"][sys_id] = {k: str(op.body.get(k, "")) for k in ("parent", "child",
                                                                              "type")}  # fmt: skip
            state.versions["rel"][sys_id] = version
            return
        kind = "loc" if op.table == LOCATION_TABLE else "ci"
        row = dict(state.rows[kind].get(sys_id) or {})
        if not row:
            row = {"sys_id": sys_id, "sys_class_name": op.class_name or op.table}
        row.update(op.body)
        row.update(zip(("sys_updated_on", "sys_mod_count"), version.split("|", 1), strict=True))
        state.rows[kind][sys_id] = row
        state.versions[kind][sys_id] = version

    def _fail(self, op: WriteOp, message: str, status: int | None) -> None:
        with self._lock:
            if op.action == "relate":
                self._stats.rel_failed += 1
            else:
                self._stats.failed += 1
            self._failures.append(
                ItemFailure(
                    source_id=op.source_id,
                    table=op.table,
                    action=op.action,
                    error=message,
                    status_code=status,
                    sys_id=op.sys_id,
                )
            )

    def _queue(self, ops: list[WriteOp]) -> None:
        if not ops:
            return
        if self.outbox is None:
            for op in ops:
                self._fail(op, f"instance unreachable: {self._unreachable_reason}", None)
            return
        entries = []
        for op in ops:
            if op.action == "relate":
                entries.append(
                    {
                        "run_id": self.run_id,
                        "op": OP_RELATE,
                        "table": REL_TABLE,
                        "extra": {
                            "parent_source_id": op.spec.parent_source_id,
                            "child_source_id": op.spec.child_source_id,
                            "type_sys_id": op.body.get("type") or None,
                            "type_name": op.spec.type_name,
                        },
                    }
                )
                continue
            values = {k: v for k, v in op.body.items() if k != SOURCE_ID_FIELD}
            entries.append(
                {
                    "run_id": self.run_id,
                    "op": OP_CREATE if op.action == CREATE else OP_UPDATE,
                    "table": op.table,
                    "source_id": op.source_id,
                    "sys_id": op.sys_id,
                    "values": values,
                    "references": op.pending_refs,
                    "extra": {"before": op.before} if op.before else None,
                }
            )
        self.outbox.enqueue_many(entries)
        with self._lock:
            for op in ops:
                if op.action == "relate":
                    self._stats.rel_queued += 1
                else:
                    self._stats.queued += 1

    def _audit(
        self,
        action: str,
        table: str,
        sys_id: str | None,
        source_id: str | None,
        before: dict | None,
        after: dict | None,
        outcome: str,
    ) -> None:
        if self.audit is None:
            return
        with self._audit_lock:
            self.audit.record(
                action,
                table,
                sys_id,
                source_id=source_id,
                before=before,
                after=after,
                outcome=outcome,
                run_id=self.run_id,
            )

    # -- IRE mode ------------------------------------------------------------------------
    def _ire_op_for(self, item: PlanItem, plan: Plan) -> WriteOp:
        op = self._op_for(item)
        record = plan.records.get(item.source_id)
        full = dict(record.values) if record is not None else {}
        full.update(op.body)  # IRE needs the identifying attributes, not only the diff
        full.pop(SOURCE_ID_FIELD, None)
        op.values, op.extra = full, {}
        op.class_name = item.table
        return op

    def _run_ire_chunk(self, chunk: list[WriteOp]) -> None:
        if self.audit is None:
            self._write_ire_chunk(chunk)
            return
        with self.audit.batch():
            self._write_ire_chunk(chunk)

    def _write_ire_chunk(self, chunk: list[WriteOp]) -> None:
        if self._unreachable.is_set():
            self._queue(chunk)
            return
        entries = [(op.class_name or op.table, op.source_id or "", op.body) for op in chunk]
        payload = ire_mode.build_payload(entries, self._ire_specs)
        try:
            result = self.client.identify_reconcile(payload)
        except Exception as exc:
            if is_unreachable_error(exc):
                self._mark_unreachable(exc)
                self._queue(chunk)
                return
            status = getattr(getattr(exc, "context", None), "http_status", None)
            for op in chunk:
                self._fail(op, _describe(exc), status)
            return
        with self._lock:
            self._stats.batches += 1
        for op, outcome in zip(chunk, ire_mode.parse_result(result, len(chunk)), strict=True):
            with self._lock:
                self._ire_ops[outcome.operation] = self._ire_ops.get(outcome.operation, 0) + 1
            if not outcome.ok:
                self._fail(op, "; ".join(outcome.errors) or outcome.operation, None)
                continue
            if outcome.operation == "NO_CHANGE":
                with self._lock:
                    if op.source_id and outcome.sys_id:
                        self._sys_ids[op.source_id] = outcome.sys_id
                continue
            op.action = CREATE if outcome.operation.startswith("INSERT") else UPDATE
            op.extra[SOURCE_ID_FIELD] = op.source_id or ""
            self._succeed(op, outcome.sys_id)
        for name, n in ire_mode.relation_operations(result).items():
            with self._lock:
                key = f"relation_{name}"
                self._ire_ops[key] = self._ire_ops.get(key, 0) + n

    # -- relationships -------------------------------------------------------------------
    def _link(self, specs: Sequence[Any], report: RunReport, progress: bool | None) -> None:
        stats = report.relationships
        stats.wanted = len(specs)
        if not specs:
            return
        if self._unreachable.is_set():
            self._queue_relationships(specs)
            stats.queued = self._stats.rel_queued
            return
        try:
            existing = self._existing_links(specs)
            link_plan = plan_links(specs, self._sys_ids, self.rel_types, existing)
        except Exception as exc:
            if not is_unreachable_error(exc):
                raise
            self._mark_unreachable(exc)
            self._queue_relationships(specs)
            stats.queued = self._stats.rel_queued
            return
        stats.existing = link_plan.existing
        stats.orphans = len(link_plan.orphans)
        stats.orphan_examples = [
            f"{s.parent_source_id} -> {s.child_source_id} ({s.type_name})"
            for s in link_plan.orphans[:10]
        ]
        for name, n in link_plan.unknown_types.items():
            report.warnings.append(f"relationship type {name!r} not found: {n} link(s) skipped")
            stats.failed += n
        ops = [
            WriteOp(
                key=str(next(self._keys)),
                action="relate",
                table=REL_TABLE,
                values=body,
                spec=spec,
            )
            for spec, body in link_plan.to_create
        ]
        self._run_ops(ops, "relationships", progress)
        stats.created = self._stats.rel_created
        stats.failed += self._stats.rel_failed
        stats.queued = self._stats.rel_queued

    def _existing_links(self, specs: Sequence[Any]) -> set[tuple[str, str, str]]:
        """The links already there between the ends of ``specs``: remembered ones, plus a read
        (the smaller side, in ``IN`` chunks) for ends the remembered state does not cover."""
        known = self._sys_ids
        ends = [
            (known[s.parent_source_id], known[s.child_source_id])
            for s in specs
            if s.parent_source_id in known and s.child_source_id in known
        ]
        state = self._state
        if state is not None and not state.has_links:
            _forget_links(state)
        if state is not None:
            ends = [
                (p, c)
                for p, c in ends
                if p not in state.covered_parents and c not in state.covered_children
            ]
        side, ids = smaller_side((p for p, _ in ends), (c for _, c in ends))
        rows = existing_link_rows(self.client, side, ids, workers=self.workers) if ids else {}
        if state is None:
            return {(r["parent"], r["child"], r["type"]) for r in rows.values()}
        with self._lock:
            state.dirty = True
            for sys_id, row in rows.items():
                state.rows["rel"][sys_id] = {k: row[k] for k in ("parent", "child", "type")}
                state.versions["rel"][sys_id] = row["version"]
            (state.covered_children if side == "child" else state.covered_parents).update(ids)
            state.has_links = True
            return incremental.link_keys(state)

    def _queue_relationships(self, specs: Sequence[Any]) -> None:
        ops = []
        for spec in specs:
            type_id = None
            try:
                type_id = self.rel_types.get(spec.type_name)
            except Exception as exc:
                if not is_unreachable_error(exc):
                    raise
            ops.append(
                WriteOp(
                    key=str(next(self._keys)),
                    action="relate",
                    table=REL_TABLE,
                    values={"type": type_id or ""},
                    spec=spec,
                )
            )
        self._queue(ops)

    # -- report --------------------------------------------------------------------------
    def _fill_report(self, report: RunReport) -> None:
        s = self._stats
        report.applied = {
            "created": s.created,
            "updated": s.updated,
            "retired": s.retired,
            "failed": s.failed,
            "queued": s.queued,
            "ambiguous": s.ambiguous,
            "resolved_by_lookup": s.adopted_after_ambiguity,
            "retried": s.retried,
            "batches": s.batches,
        }
        report.failures.extend(self._failures)
        report.ire = self.ire
        report.ire_operations = dict(self._ire_ops)
        report.fallbacks.update(self._fallbacks)
        for table, used in self._fallbacks.items():
            warning = (
                f"class table {table} is missing: its records were written to {used} "
                f"with sys_class_name={table}"
            )
            if warning not in report.warnings:
                report.warnings.append(warning)
        if self._unreachable.is_set():
            report.status = "queued"
            report.message = (
                f"the instance could not be reached ({self._unreachable_reason}); "
                f"{s.queued + s.rel_queued} write(s) are queued in the outbox "
                f"({self.outbox.path if self.outbox else 'no outbox'}); they are sent by "
                "`snowkit outbox replay` or at the start of the next load"
            )
        elif s.failed or s.rel_failed or report.relationships.failed:
            report.status = "partial"
            report.message = (
                f"{s.failed} record write(s) and {report.relationships.failed} relationship(s) "
                "failed; see failures"
            )
        else:
            report.status = "success"
        report.suggestions.extend(
            suggestions_from(
                ambiguous=s.ambiguous,
                fallbacks=self._fallbacks,
                workers=self.workers,
                batch_size=self.batch_size,
            )
        )

    # -- the whole sync --------------------------------------------------------------------
    def sync(
        self,
        result: Any,
        *,
        dry_run: bool = False,
        progress: bool | None = True,
        verify: bool = True,
        replay_outbox: bool = True,
        not_seen_since: dict[str, str] | None = None,
    ) -> tuple[Plan | None, RunReport]:
        """Replay the outbox, plan, apply, verify; returns the plan and the run report."""
        report = RunReport(run_id=self.run_id, dry_run=dry_run, ire=self.ire)
        started = self._clock()
        if replay_outbox and self.outbox is not None and not dry_run:
            t0 = self._clock()
            if self.outbox.count():
                self._prefetched = None  # read before the replay's writes: read again
                replay = self.outbox.replay(self.client, audit=self.audit)
                report.outbox = {"replayed": replay.to_dict()}
                for failure in replay.failed:
                    report.warnings.append(
                        f"outbox entry {failure['seq']} ({failure['op']} {failure['table']} "
                        f"{failure['source_id']}) was rejected: {failure['error']}"
                    )
                if replay.stopped:
                    self._mark_unreachable(RuntimeError(replay.stopped))
            report.timings["outbox_replay"] = round(self._clock() - t0, 3)
        t0 = self._clock()
        try:
            plan = self.plan(result, not_seen_since=not_seen_since)
        except Exception as exc:
            if not is_unreachable_error(exc) or dry_run:
                raise
            # cannot read the CMDB: every record becomes an upsert-by-source-id in the outbox
            self._mark_unreachable(exc)
            plan = planning.build_plan(
                list(getattr(result, "records", result)),
                planning.CMDBSnapshot(),
                relationships=list(getattr(result, "relationships", ()) or ()),
            )
            plan.notes.append(
                "the CMDB could not be read; every record is queued as an upsert by source id"
            )
        report.timings["plan"] = round(self._clock() - t0, 3)
        if dry_run:
            report.counts = plan.counts_by_table()
            report.notes.extend(plan.notes)
            report.relationships.wanted = len(plan.relationships)
            report.fallbacks.update(plan.fallbacks)
            report.finish("dry_run", clock_s=self._clock() - started)
            return plan, report
        self.apply(plan, progress=progress, report=report)
        if verify and not self.unreachable:
            t0 = self._clock()
            outcome = self.verify()
            report.verification = outcome.to_dict()
            report.mismatches = outcome.mismatches
            if outcome.mismatches or outcome.missing:
                report.warnings.append(
                    f"verification: {len(outcome.mismatches)} field mismatch(es), "
                    f"{len(outcome.missing)} record(s) not found after writing"
                )
                if report.status == "success":
                    report.status = "partial"
            report.timings["verify"] = round(self._clock() - t0, 3)
            self._settle_state(outcome)
        elif not self.unreachable:
            self._settle_state(None)
        report.finish(clock_s=self._clock() - started)
        return plan, report

    def _settle_state(self, verified: Any) -> None:
        """Keep the incremental state for the next run only if it is known to match the CMDB
        (see ``snowkit.cmdb.incremental``); otherwise forget it (the next run reads all)."""
        state, store = self._state, self.state_store
        if state is None or store is None:
            return
        wrote = bool(self._written) or self._stats.rel_created > 0
        why = self._state_doubt
        if why is None and wrote and verified is None:
            why = "writes were not verified"
        if why is None and verified is not None and (verified.mismatches or verified.missing):
            why = "verification found differences"
        if why is None and verified is not None:
            state.dirty = state.dirty or bool(verified.unstored_fields)
            for table, flds in verified.unstored_fields.items():
                kind = "loc" if table == LOCATION_TABLE else "ci"
                for row in state.rows[kind].values():
                    for fld in flds:
                        row.pop(fld, None)
        if why is None and wrote:
            since = dict(self._state_since)
            if since.get("rel") is None:
                since["rel"] = since.get("ci") or self._first_stamp
            ours = set(state.rows["ci"])
            why = incremental.seal(self.client, state, since, ours, workers=self.workers)
        if why is None:
            store.save(self.instance_key, state, rows=state.dirty)
        else:
            self.logger.event("incremental_state_forgotten", reason=why)
            store.forget(self.instance_key)

    def verify(self) -> Any:
        """Read back every record this engine wrote and compare field by field."""
        from snowkit.cmdb.verify import Expectation, verify

        expectations = (
            Expectation(table, source_id, ChainMap(dict(refs), values) if refs else values)
            for table, source_id, values, refs in self._written
        )
        return verify(self.client, expectations, workers=self.workers)

    def rollback(self, run_id: str, *, audit_path: Any = None) -> Any:
        """Undo ``run_id`` from the audit trail (see ``snowkit.cmdb.rollback``)."""
        from snowkit.cmdb.rollback import rollback

        path = audit_path or getattr(self.audit, "path", None)
        return rollback(self.client, run_id, audit=self.audit, audit_path=path)

    # -- results for verification --------------------------------------------------------
    @property
    def written(self) -> list[tuple[str, str, Mapping[str, str], tuple[tuple[str, str], ...]]]:
        """(table, source id, values, resolved references) of every record write that landed."""
        return list(self._written)

    @property
    def sys_ids(self) -> dict[str, str]:
        return dict(self._sys_ids)

    @property
    def fallbacks(self) -> dict[str, str]:
        return dict(self._fallbacks)

    @property
    def unreachable(self) -> bool:
        return self._unreachable.is_set()


def _class_tables(tables: Iterable[str]) -> list[str]:
    """Class tables that may be missing on an instance (not cmdb_ci, not cmn_location)."""
    return sorted(set(tables) - {CI_TABLE, LOCATION_TABLE})


def _forget_links(state: incremental.SyncState) -> None:
    state.dirty = True
    state.has_links = False
    state.rows["rel"].clear()
    state.versions["rel"].clear()
    state.covered_parents.clear()
    state.covered_children.clear()


def _version_of(res: Any) -> str | None:
    result = res.result
    return incremental.version_of(result) if isinstance(result, dict) else None


def _new_run_id() -> str:
    try:
        from snowkit.ops.logging import new_run_id

        return new_run_id()
    except ImportError:  # the logging module is not there yet
        import secrets
        from datetime import UTC, datetime

        return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


#: ErrorContext categories meaning "the instance cannot be reached now" (queue, don't fail).
_UNREACHABLE_CATEGORIES = frozenset({"network", "circuit_open", "hibernating"})


def _whole_batch_failure(results: dict[str, Any], ops: list[WriteOp]) -> Any:
    """The context of a batch request that failed as a whole (every item carries it)."""
    first = None
    for op in ops:
        res = results.get(op.key)
        if res is None or getattr(res, "serviced", True) or getattr(res, "error", None) is None:
            return None
        first = first or res
    return first


def _throttled(result: Any) -> bool:
    """A 429 on the batch or the item: the limiter should back off."""
    category = getattr(getattr(result, "error", None), "category", None)
    return result.status_code == 429 or str(getattr(category, "value", "")) == "rate_limit"


def _unreachable_context(result: Any) -> bool:
    if getattr(result, "ambiguous", False):
        return False
    category = getattr(getattr(result, "error", None), "category", None)
    value = getattr(category, "value", category)
    return str(value).lower() in _UNREACHABLE_CATEGORIES


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _result_error(res: Any) -> str:
    if res is None:
        return "no answer for this item in the batch response"
    if not getattr(res, "serviced", True):
        return res.error_message or "not serviced by the instance"
    parts = [p for p in (res.error_message, res.error_detail) if p]
    return f"HTTP {res.status_code}: " + (" — ".join(parts) if parts else "failed")


def _is_invalid_table(status: int | None, message: str) -> bool:
    return status in (400, 404) and "invalid table" in message.lower()


def _sys_id_of(res: Any) -> str | None:
    result = res.result
    if isinstance(result, dict):
        return _str(result.get("sys_id")) or None
    return None


def _str(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("value", "")
    return "" if value is None else str(value)
