"""SyncEngine: apply a plan to the CMDB exactly once, whatever the network and the instance do.

The data flow of one ``sync``:

1. replay the outbox (writes queued by an earlier run that could not reach the instance);
2. ``plan``: read what the CMDB holds — incrementally from the remembered state when it is
   valid (``snowkit.cmdb.incremental``), else in full (``snowkit.cmdb.plan.read_snapshot``) —
   and diff it with the transformed records (nothing written: a dry run stops here);
3. ``apply``: every write goes as soon as the records it references have landed, a link as
   soon as both its ends have (``stream.WriteStream``): Batch API requests of ``batch_size``
   items, at most ``workers`` in flight under the limiter, each sent by
   ``batches.BatchRunner.run_chunk``. IRE mode goes phase by phase instead
   (``writes.dependency_phases``, CIs through ``ire.IRELoader``, then ``linking.Linker``).
   Every outcome lands in the run's ``ledger.RunLedger`` (sys_ids, audit, failures, outbox,
   state);
4. verify: read back what was written and compare field by field (``snowkit.cmdb.verify``);
5. keep the incremental state for the next run only if it provably matches the CMDB.

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

import threading
import time
from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from snowkit.cmdb import companies, incremental
from snowkit.cmdb import plan as planning
from snowkit.cmdb.batches import BatchRunner
from snowkit.cmdb.classes import ALL_CLASS_TABLES
from snowkit.cmdb.intents import IntentJournal, reconcile_intents
from snowkit.cmdb.ire import IRELoader
from snowkit.cmdb.ledger import RunLedger
from snowkit.cmdb.linking import Linker, forget_links
from snowkit.cmdb.outbox import Outbox, is_unreachable_error
from snowkit.cmdb.plan import (
    CI_TABLE,
    CREATE,
    LOCATION_TABLE,
    NO_CHANGE,
    RETIRE,
    SOURCE_ID_FIELD,
    UPDATE,
    Plan,
    PlanItem,
)
from snowkit.cmdb.questions import MISSING, Question, ask, ask_one
from snowkit.cmdb.quiet_gc import quiet_gc
from snowkit.cmdb.relationships import RelTypeCache
from snowkit.cmdb.report import RunReport
from snowkit.cmdb.responsive import responsive_threads
from snowkit.cmdb.stream import WriteStream
from snowkit.cmdb.writes import (
    CLIENT_KINDS,
    RETRYABLE_STATUSES,
    WriteOp,
    dependency_phases,
    describe,
    write_rank,
)
from snowkit.ops.errors import AuthenticationError, OperationalError
from snowkit.ops.logging import StructuredLogger
from snowkit.servicenow.limiter import AdaptiveLimiter

#: Records plus links above which no incremental state is kept: it lives in memory during a
#: run (~1 KB per record), and 50,000 CIs must load within 300 MB; such estates read in full.
MAX_REMEMBERED = 20_000
#: Attempts per write before it is reported failed (``snowkit load --max-attempts``).
DEFAULT_MAX_ATTEMPTS = 3

__all__ = [
    "CLIENT_KINDS",
    "DEFAULT_MAX_ATTEMPTS",
    "RETRYABLE_STATUSES",
    "CrashSimulation",
    "SyncEngine",
    "WriteOp",
    "dependency_phases",
    "write_rank",
]


@dataclass
class FirstRound:
    """What the round before a full read found (see ``SyncEngine._first_round``)."""

    probed: set[str] = field(default_factory=set)  #: class tables asked about
    missing: set[str] = field(default_factory=set)  #: those the instance does not have
    #: per table (cmdb_ci, cmn_location): does it hold records without a source id
    unsourced: dict[str, bool] = field(default_factory=dict)
    sourced: bool = True  #: does either hold a record with a source id


class CrashSimulation(RuntimeError):
    """Raised by test hooks to stop a run half-way, as a crash would."""


class SyncEngine:
    """Plans and applies a load; see the module docstring for the data flow and guarantees.

    ``on_batch(n)`` is called after each finished batch with the number finished so far (tests
    raise from it to simulate a crash). ``audit`` is an ``AuditTrail``: every write the engine
    makes is recorded with its before-image, which is what ``rollback`` replays.
    ``state_store`` (a ``snowkit.cmdb.state.StateStore``) and ``instance_key`` turn on the
    incremental snapshot (off in IRE mode, whose answers carry no record versions, and for
    loads of more than ``max_remembered`` records plus links). ``intents`` (an
    ``IntentJournal``, used with ``audit``) notes every batch before it is sent; ``sync``
    first reconciles what a dead run left there (``snowkit.cmdb.intents``).
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
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        on_batch: Callable[[int], None] | None = None,
        ire: bool = False,
        clock: Callable[[], float] = time.perf_counter,
        state_store: Any = None,
        instance_key: str | None = None,
        max_remembered: int = MAX_REMEMBERED,
        intents: IntentJournal | None = None,
        company_cache: companies.CompanyCache | None = None,
    ) -> None:
        if batch_size < 1 or workers < 1:
            raise ValueError("batch_size and workers must be at least 1")
        self.client = client
        self.audit = audit
        self.outbox = outbox
        self.run_id = run_id or _new_run_id()
        self.batch_size = batch_size
        self.workers = workers
        # without a limiter of the caller's, a fixed one: the writer pool is wider than
        # ``workers`` (see ``snowkit.cmdb.stream``) but never more than that many sends
        self.limiter = limiter or AdaptiveLimiter(initial=workers, minimum=workers,
                                                  maximum=workers)  # fmt: skip
        self.logger = logger or StructuredLogger("snowkit.cmdb.sync")
        self.retire_after_days = retire_after_days
        self.max_attempts = max(1, max_attempts)
        self.on_batch = on_batch
        self.ire = ire
        self._clock = clock
        self.intents = intents
        self.company_cache = company_cache
        #: the plan's vendor names resolved to core_company sys_ids (``snowkit.cmdb.companies``)
        self.companies: companies.Resolution | None = None
        #: the cached companies as the first round read them (sys_id → name), if it did
        self._companies_held: dict[str, str] | None = None
        #: the vendor names looked up as soon as the inventory was in (``look_up_companies``)
        self._companies_ahead: Future[companies.LookedUp] | None = None
        self.ledger = RunLedger(run_id=self.run_id, audit=audit, outbox=outbox, intents=intents)
        self.runner = BatchRunner(
            client,
            self.ledger,
            batch_size=batch_size,
            workers=workers,
            limiter=self.limiter,
            max_attempts=self.max_attempts,
            on_batch=on_batch,
            clock=clock,
        )
        self.rel_types = RelTypeCache(client)
        self.linker = Linker(client, self.ledger, self.runner, self.rel_types)
        self.state_store = state_store if instance_key and not ire else None
        # marks the remembered state unsealed before any write, IRE mode included (its
        # writes are ours too, though it keeps no state of its own)
        self._writes_mark = state_store if instance_key else None
        self.instance_key = instance_key or ""
        self.max_remembered = max_remembered
        self._state_since: dict[str, str] = {}
        self._links_before: int | None = None  #: cmdb_rel_ci's count in the first round
        self._prefetched: Any = None
        #: the remembered state the read-ahead round is reading, once its head is in, and
        #: whether its rows are loaded (a plan can be built on them while the round runs)
        self._ahead_state: incremental.SyncState | None = None
        self._ahead_rows = threading.Event()
        self._unchanged = False  # the incremental read found nothing changed
        self._links_unchanged = False  # ... and no link either
        self._input_digest = ""  # ``incremental.input_digest`` of this run's input
        self._input_matched = False  # the plan is the state's input's (no field compared)
        self._plan_was_clean = False  # the plan noted nothing (see ``_complete``)
        #: when the plan's first read and the writes started (the engine's clock): bounds the
        #: instance's time at the first read (see ``_stamp_at_first_read``)
        self._read_started: float | None = None
        self._apply_started: float | None = None
        self._preflight: Once = Once(None)
        self._rel_type_names: tuple[str, ...] = ()  # read in the first round (``prefetch``)
        self._round_out = threading.Event()
        self._round_out.set()  # no read-ahead round: nothing to wait for

    # ------------------------------------------------------------------------------------
    # schema, plan
    # ------------------------------------------------------------------------------------
    def ensure_schema(self, create: bool = True) -> Any:
        """Check (and where allowed create) the source-id fields; see ``snowkit.cmdb.schema``."""
        from snowkit.cmdb.schema import ensure_schema

        return ensure_schema(self.client, create=create)

    def _probe(self, table: str) -> str | None:
        """``table`` when the instance does not have it, else None."""
        return table if ask_one(self.client, Question(table)) is MISSING else None

    def plan(
        self,
        result: Any,
        *,
        not_seen_since: dict[str, str] | None = None,
        preflight: Callable[[], Any] | None = None,
        create_companies: bool = True,
    ) -> Plan:
        """Read what the CMDB holds for these records and diff (no record is written).

        ``preflight`` (e.g. the schema check) runs alongside the first reads and must pass
        before any of them is used. The records' vendor names become ``core_company`` sys_ids
        first (``snowkit.cmdb.companies``; the read-ahead round is on the wire meanwhile):
        companies not found are created unless ``create_companies`` is False (a dry run)."""
        if preflight is not None:
            self._preflight = Once(preflight)
        raw = list(getattr(result, "records", result))
        resolving = self._resolve_companies(raw, create_companies)
        relationships = list(getattr(result, "relationships", ()) or ())
        if self._prefetched is None:  # a first round asked from here reads the types along
            self._rel_type_names = tuple(sorted({s.type_name for s in relationships}))
        if self.state_store is not None and len(raw) + len(relationships) > self.max_remembered:
            self.logger.event("incremental_state_off", records=len(raw),
                              links=len(relationships), limit=self.max_remembered)  # fmt: skip
            self.state_store.forget(self.instance_key)
            self.state_store, self._prefetched = None, None

        # listed by the source but quarantined by the transform: not "no longer seen"
        present = {q.source_id for q in getattr(result, "quarantined", ()) or ()}
        # a rejected device or client that names no CI: any missing CI may be that one
        unidentified = len(getattr(result, "unidentified", ()) or ())

        def diff_of(records: list[Any]) -> Callable[[planning.CMDBSnapshot], Plan]:
            return lambda snapshot: planning.build_plan(
                records,
                snapshot,
                relationships=relationships,
                retire_after_days=self.retire_after_days,
                not_seen_since=not_seen_since,
                present=present,
                unidentified=unidentified,
            )

        with responsive_threads():  # the read-ahead round may still be on the wire
            # a first run asking the instance for companies plans for an empty CMDB meanwhile,
            # with the names, which are swapped for sys_ids after (every item is a create)
            early = None if resolving.done() else self._plan_for_an_empty_cmdb(diff_of(raw))
            self.companies = resolving.result()
            records = self.companies.records
            diff = diff_of(records)
            # the state remembers the last complete run's input: the same one again against an
            # unchanged CMDB plans no change without a field compared or a link decided
            self._input_digest = (
                incremental.input_digest(records, relationships) if self.state_store else ""
            )
            self._input_matched = False
            ahead = self._plan_ahead(records, relationships, diff)
            blank = None
            if ahead is None and early is not None:
                blank = companies.swap_in_plan(early, self.companies)
            elif ahead is None:
                blank = self._plan_for_an_empty_cmdb(diff)
        missing, snapshot = self._read_cmdb(records, ahead[0] if ahead is not None else None)
        if gone := self._stale_companies():
            # a cached company is gone or renamed: resolve again, and diff what was read
            self.logger.event("companies_cache_stale", names=sorted(gone))
            assert self.company_cache is not None
            self.company_cache.forget(gone)
            self.companies = companies.resolve(self.client, raw, cache=self.company_cache,
                                               create=create_companies,
                                               audit=self.ledger.record_audit)  # fmt: skip
            records = self.companies.records
            diff = diff_of(records)
            if self.state_store is not None:
                self._input_digest = incremental.input_digest(records, relationships)
            self._input_matched, blank, ahead = False, None, None
            if snapshot is None:  # planned ahead on the remembered rows: read them as usual
                assert self.ledger.state is not None
                snapshot = incremental.snapshot_of(self.ledger.state, records, missing)
                planning.read_candidates(self.client, snapshot, records, workers=self.workers)
        for table in missing:
            self.ledger.fallbacks[table] = CI_TABLE
        if blank is not None and snapshot is not None and planning.is_empty(snapshot):
            plan = blank  # a first load into an empty CMDB: what was planned meanwhile stands
            self.logger.event("plan_built_ahead", items=len(plan.items), empty_cmdb=True)
        elif snapshot is None and ahead is not None:
            plan = ahead[1]  # nothing changed in the CMDB: the plan built ahead stands
            plan.links_settled = self._input_matched and self._links_unchanged
            self.logger.event("plan_built_ahead", items=len(plan.items),
                              same_input=self._input_matched)  # fmt: skip
        else:
            assert snapshot is not None
            plan = diff(snapshot)
        self._plan_was_clean = not plan.notes
        for table in sorted(missing):
            plan.notes.append(
                f"class table {table} is missing on the instance: its records go to cmdb_ci "
                f"with sys_class_name={table}"
            )
        plan.fallbacks = dict(self.ledger.fallbacks)
        if self.ledger.state is not None:
            self.ledger.state.class_tables = _class_tables(r.table for r in records)
            self.ledger.state.rel_type_names = sorted({s.type_name for s in relationships})
        return plan

    def _resolve_companies(self, records: list[Any], create: bool) -> Future[Any]:
        """The records' vendor names as ``core_company`` sys_ids (``snowkit.cmdb.companies``):
        at once when the cache knows them all, else in the background (a lookup, creates)."""
        ahead, self._companies_ahead = self._companies_ahead, None
        local = companies.known_locally(records, self.company_cache)
        if local:
            ahead = None  # nothing to ask: no waiting on a lookup of names no record kept

        def resolve() -> companies.Resolution:
            looked_up = ahead.result() if ahead is not None else None
            return companies.resolve(self.client, records, cache=self.company_cache,
                                     create=create, audit=self.ledger.record_audit,
                                     looked_up=looked_up,
                                     before_create=self._preflight)  # fmt: skip

        if local:
            done: Future[Any] = Future()
            done.set_result(resolve())
            return done
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snowkit-companies")
        try:
            return pool.submit(resolve)
        finally:
            pool.shutdown(wait=False)

    def look_up_companies(self, names: Iterable[str]) -> None:
        """Start looking up the vendor names the cache does not know (the inventory is in, the
        transform is still to run): :meth:`plan` then waits for no lookup of its own."""
        if companies.known_locally_names(set(names), self.company_cache):
            return
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snowkit-companies")
        try:
            self._companies_ahead = pool.submit(
                companies.look_up_ahead, self.client, list(names), self.company_cache
            )
        finally:
            pool.shutdown(wait=False)

    def prefetch(
        self, preflight: Callable[[], Any] | None = None, rel_type_names: Iterable[str] = ()
    ) -> None:
        """Start the plan's first round of reads in the background, while the caller collects
        and transforms the inventory: what changed since the last run (with a remembered
        state), else the class-table probes and adoption checks; ``preflight`` (the schema
        check) runs in the same round, and the relationship types ``rel_type_names`` (those
        the transform makes) are read along with it. Only when nothing is written before
        planning: call it with an empty outbox (``sync`` drops the round if the outbox replays
        anything)."""
        if preflight is not None:
            self._preflight = Once(preflight)
        self._rel_type_names = tuple(rel_type_names)
        self._ahead_state, self._ahead_rows = None, threading.Event()
        self._round_out = threading.Event()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snowkit-prefetch")
        self._prefetched = pool.submit(self._read_ahead)
        pool.shutdown(wait=False)

    def wait_for_first_round(self, timeout: float = 0.05) -> None:
        """Until the read-ahead round is on its way (at most ``timeout`` seconds): CPU-bound
        work started before holds the GIL while that thread builds and sends it, and on a
        rerun that round is what the run waits for."""
        self._round_out.wait(timeout)

    def _plan_for_an_empty_cmdb(self, diff: Callable[[planning.CMDBSnapshot], Plan]) -> Plan | None:
        """A first run (no remembered state) waits for its first round: meanwhile, plan as if
        the CMDB held nothing; ``plan`` uses it only if the reads then find nothing at all (no
        sourced row, no adoption candidate), when the plan is the same."""
        ahead = self._prefetched
        if ahead is None or ahead.done() or self._ahead_state is not None:
            return None
        return diff(planning.CMDBSnapshot())

    def _plan_ahead(
        self,
        records: list[Any],
        relationships: list[Any],
        diff: Callable[[planning.CMDBSnapshot], Plan],
    ) -> tuple[set[str], Plan] | None:
        """While the read-ahead round is still on the wire, ``diff`` against the remembered
        rows (a rerun's usual outcome: nothing changed). ``plan`` uses it only if the round
        then shows no change; None when there is nothing to gain or it might differ (a class
        table never probed, a record to create: adoption candidates would be read)."""
        ahead, state = self._prefetched, self._ahead_state
        if ahead is None or state is None:
            return None
        same_input = bool(self._input_digest) and self._input_digest == state.input_digest
        if ahead.done() and not same_input:
            return None  # nothing to overlap: the plan is built after the read, as usual
        self._ahead_rows.wait()
        tables = _class_tables(r.table for r in records)
        if not set(tables) <= set(state.class_tables):
            return None
        missing = {t for t in tables if t in state.missing_tables}
        if same_input:
            rows = [*state.rows["ci"].values(), *state.rows["loc"].values()]
            quick = planning.unchanged_plan(records, rows, relationships)
            if quick is not None:
                self._input_matched = True
                return missing, quick
        plan = diff(incremental.snapshot_of(state, records, missing))
        if any(item.action == CREATE for item in plan.items):
            return None
        return missing, plan

    def _read_ahead(self) -> tuple[incremental.SyncState | None, dict[str, Any], FirstRound | None]:
        """(state, listings, None) with a usable remembered state, else (None, {}, the first
        round of a full read)."""
        self._read_started = self._read_started or self._clock()
        try:
            return self._read_ahead_round()
        finally:
            self._round_out.set()  # however it ended, nobody need wait for it any longer

    def _read_ahead_round(
        self,
    ) -> tuple[incremental.SyncState | None, dict[str, Any], FirstRound | None]:
        store, key = self.state_store, self.instance_key
        state = store.load_head(key) if store else None
        # links counted are the whole table's (everyone's): only records can rule the state out
        if state is not None and state.counts.get("ci", 0) + state.counts.get("loc", 0) > (
            self.max_remembered
        ):
            state = None
        if state is not None and store is not None:

            def load_rows() -> None:
                try:
                    store.load_rows(key, state)
                finally:
                    self._ahead_rows.set()

            self._ahead_state = state
            listings = self._list_changes(state, load_rows=load_rows, sending=self._round_out.set)
            if sum(map(len, state.rows.values())) <= self.max_remembered:
                return state, listings, None
        self._round_out.set()
        return None, {}, self._first_round(sorted(ALL_CLASS_TABLES))

    def _read_cmdb(
        self, records: list[Any], planned_for: set[str] | None = None
    ) -> tuple[set[str], planning.CMDBSnapshot | None]:
        """Missing class tables and the snapshot: from the remembered state plus what changed
        when possible (one round of small requests), else read in full. The preflight (schema
        check) has passed before anything read is used. No snapshot (None) when a plan was
        built ahead for missing tables ``planned_for`` and nothing changed: it stands."""
        self._read_started = self._read_started or self._clock()
        tables = _class_tables(r.table for r in records)
        state, listings, first = None, {}, None
        self._unchanged = self._links_unchanged = False
        ahead, self._prefetched = self._prefetched, None
        if ahead is not None:
            state, listings, first = ahead.result()
        elif self.state_store is not None:
            state = self.state_store.load(self.instance_key)
            if state is not None:
                listings = self._list_changes(state)
        self._preflight()
        if state is not None:
            missing = self._missing_per_state(state, tables)
            why = incremental.refresh_records(
                self.client, state, listings, records, missing, workers=self.workers
            )
            if why is None:
                why_links = incremental.refresh_links(
                    self.client, state, listings["rel"], set(state.rows["ci"]), workers=self.workers
                )
                if why_links is not None:
                    forget_links(state)
                    # the count now is the seal's baseline (the old one did not add up)
                    incremental.take_link_marks(state, listings["rel"])
                self._adopt_state(state)
                self._unchanged = not (listings["ci"].changed or listings["loc"].changed)
                self._links_unchanged = (
                    why_links is None
                    and not listings["rel"].changed
                    and bool(state.rel_type_ids)
                    and self.rel_types.known(state.rel_type_ids) == state.rel_type_ids
                )
                self.logger.event(
                    "incremental_snapshot",
                    links=why_links or "remembered",
                    changed={k: len(v.changed) for k, v in listings.items()},
                )
                if self._unchanged and planned_for == missing:
                    return missing, None  # every record matched ahead: no candidate to read
                snapshot = incremental.snapshot_of(state, records, missing)
                planning.read_candidates(self.client, snapshot, records, workers=self.workers)
                return missing, snapshot
            self.logger.event("incremental_snapshot_skipped", reason=why)
        first = first or self._first_round(tables)
        missing = {t for t in tables if t in first.missing}
        missing |= self._missing_among(set(tables) - first.probed)
        read_from = self._clock()
        snapshot = planning.read_snapshot(
            self.client, records, missing_tables=missing, workers=self.workers,
            unsourced=first.unsourced, none_sourced=not first.sourced,
        )  # fmt: skip
        if self.state_store is not None:
            took = self._clock() - read_from
            state = incremental.state_from_full_read(snapshot, records, missing, took)
            if self._links_before is not None:
                state.counts["rel"] = self._links_before
            self._adopt_state(state)
        return missing, snapshot

    def _missing_per_state(self, state: incremental.SyncState, tables: list[str]) -> set[str]:
        """Missing class tables as the remembered state knows them (a table that vanished
        since takes its records with it: the listing's count no longer adds up); only
        tables it never probed are probed now. A write to a missing table falls back to
        ``cmdb_ci`` when it is refused anyway."""
        known = set(state.class_tables)
        # never probed, or missing last time (installed since? then the state is re-read)
        return self._missing_among(
            {t for t in tables if t not in known or t in state.missing_tables}
        )

    def _missing_among(self, tables: set[str]) -> set[str]:
        if not tables:
            return set()
        return {t for t in planning.parallel_map(self._probe, [(t,) for t in sorted(tables)],
                                                 self.workers) if t}  # fmt: skip

    def _first_round(self, tables: list[str]) -> FirstRound:
        """One round before a full read: the preflight (schema check: nothing asked here
        relies on the source-id field) beside the plan's yes/no questions, asked together
        (``snowkit.cmdb.questions``): does each class table exist; do ``cmdb_ci`` and
        ``cmn_location`` hold records without a source id (adoption candidates), any at
        all, any with a source id (none: nothing sourced to read)."""
        both = (CI_TABLE, LOCATION_TABLE)
        questions = [Question(t, f"{SOURCE_ID_FIELD}ISEMPTY") for t in both]
        # if the preflight creates the field, the question above was asked of a field that
        # did not exist yet (some instances then answer "none"): any record at all is then
        # the right question, every one of them lacking a source id
        questions += [Question(t) for t in both]
        questions += [Question(t, f"{SOURCE_ID_FIELD}ISNOTEMPTY") for t in both]
        questions += [Question(t) for t in tables]
        # as wide as the client's connection pool (8 by default) if asked one by one
        width = max(self.workers, 8) - 1
        # the relationship types go along: read later, they would hold slots the writes want
        rider = self.rel_types.rider(self._rel_type_names)
        riders = [r for r in (rider, self._company_rider()) if r]
        if self.state_store is not None:  # the links before any write: the seal's baseline
            riders.append(incremental.count_rider("rel", self._note_links_before))
        # a check run before this round (before an outbox replay, say) made its fields before
        # these questions were asked, and the writes since may have filled them
        asked_after_the_check = self._preflight.ran
        _, answers = planning.parallel_map(lambda fn: fn(), [
            (self._preflight,), (lambda: ask(self.client, questions, width=width, riders=riders),),
        ], 2)  # fmt: skip
        new = set() if asked_after_the_check else _tables_given_the_field(self._preflight.result)
        without, anything, sourced = answers[0:2], answers[2:4], answers[4:6]
        return FirstRound(
            probed=set(tables),
            missing={t for t, a in zip(tables, answers[6:], strict=True) if a is MISSING},
            unsourced={
                t: bool(any_row if t in new else lacking)
                for t, lacking, any_row in zip(both, without, anything, strict=True)
            },
            # a field created just now holds no value yet
            sourced=any(a for t, a in zip(both, sourced, strict=True) if t not in new),
        )

    def _note_links_before(self, count: int | None) -> None:
        self._links_before = count

    def _list_changes(
        self,
        state: incremental.SyncState,
        load_rows: Callable[[], None] | None = None,
        sending: Callable[[], None] | None = None,
    ) -> dict[str, incremental.Listing]:
        """One round: the listings and counts with the relationship types in one Batch API
        request, beside the preflight (and, with ``load_rows``, the loading of the remembered
        rows); ``sending()`` is called as that request goes out."""
        rider = self.rel_types.rider(state.rel_type_names)
        listings, _ = incremental.list_changes(
            self.client, state, workers=self.workers, extra=[self._preflight],
            riders=[r for r in (rider, self._company_rider()) if r], load_rows=load_rows,
            sending=sending,
        )  # fmt: skip
        return listings

    def _company_rider(self) -> Any:
        """The cached companies' check, to ride in the first round (``companies.check_rider``)."""
        self._companies_held = None

        def take(held: dict[str, str]) -> None:
            self._companies_held = held

        return companies.check_rider(self.company_cache, take)

    def _stale_companies(self) -> set[str]:
        """Names whose cached sys_id the instance does not hold under that name: read in the
        first round, or now when that answer never came (an unusable batch)."""
        found = self.companies
        if found is None or not found.cached:
            return set()
        held = self._companies_held
        if held is None:
            try:
                held = companies.read_held(self.client, found)
            except Exception as exc:
                if is_unreachable_error(exc):
                    raise
                return set(found.cached)  # not confirmed: look them up again
        return companies.stale(found, held)

    def _adopt_state(self, state: incremental.SyncState) -> None:
        self.ledger.state = state
        self._state_since = {k: v for k, v in state.watermarks.items() if v}

    # ------------------------------------------------------------------------------------
    # apply
    # ------------------------------------------------------------------------------------
    def apply(
        self, plan: Plan, *, progress: bool | None = True, report: RunReport | None = None
    ) -> RunReport:
        """Write the plan; returns the run report (status success / partial / queued)."""
        report = report or RunReport(run_id=self.run_id)
        started = self._apply_started = self._clock()
        self.ledger.fallbacks.update(plan.fallbacks)
        self.ledger.sys_ids.update(plan.sys_ids)
        report.counts = plan.counts_by_table()
        report.notes.extend(plan.notes)

        writes = plan.writes
        context = {"run_id": self.run_id, "writes": len(writes), "ire": self.ire}
        self.logger.log_operation_start("cmdb_apply", context)
        stopped: OperationalError | None = None
        try:
            if self.ire:
                self._apply_in_phases(plan, report, progress)
            else:
                stream = WriteStream(self.runner, self.ledger, self.linker, clock=self._clock)
                # no local name for the ops: the stream lets each go once it is sent
                took = stream.run([self._op_for(i) for i in sorted(writes, key=write_rank)],
                                  plan.relationships, report, progress,
                                  links_settled=plan.links_settled)  # fmt: skip
                report.timings["apply_records"] = round(took.records_s, 3)
                report.timings["relationships"] = round(took.total_s - took.records_s, 3)
        except OperationalError as exc:
            # a read the writes needed failed for good (e.g. 429s beyond every retry): what
            # landed is counted and audited; it had been lost with the run ("failed", no count)
            stopped = exc
        report.timings["apply_total"] = round(self._clock() - started, 3)
        self.ledger.fill_report(
            report,
            ire=self.ire,
            workers=self.workers,
            batch_size=self.batch_size,
            max_attempts=self.max_attempts,
        )
        if stopped is not None:
            self._stopped_early(report, stopped)
        self.logger.log_operation_complete(
            "cmdb_apply",
            report.timings["apply_total"] * 1000,
            report.status == "success",
            {**context, "status": report.status, **report.applied},
        )
        return report

    def _apply_in_phases(self, plan: Plan, report: RunReport, progress: bool | None) -> None:
        """IRE mode: locations and retires through the Table API, CIs through IRE, phase by
        phase (the
        IRE answer names the CI it matched, so each phase needs the previous one's sys_ids),
        then the relationships."""
        ire = IRELoader(self.client, self.ledger, plan.relationships)
        t0 = self._clock()
        for index, phase in enumerate(dependency_phases(plan.writes)):
            desc = f"phase {index + 1}"
            self.logger.event("sync_phase", phase=index + 1, records=len(phase))
            # locations, and retires (a PATCH of two fields by sys_id: IRE cannot identify a
            # CI from them, and refused every retire of one it had not loaded)
            direct = [i for i in phase if i.table == LOCATION_TABLE or i.action == RETIRE]
            cis = [i for i in phase if i.table != LOCATION_TABLE and i.action != RETIRE]
            self.runner.run([self._op_for(i) for i in direct], desc, progress)
            ops = [ire.prepare(self._op_for(i), plan.records.get(i.source_id)) for i in cis]
            self.runner.run(ops, desc + " (IRE)", progress, runner=ire.run_chunk)
        report.timings["apply_records"] = round(self._clock() - t0, 3)
        t0 = self._clock()
        self.linker.link(plan.relationships, report, progress)
        report.timings["relationships"] = round(self._clock() - t0, 3)

    def _op_for(self, item: PlanItem) -> WriteOp:
        """The write of one plan item: references resolved where their targets are known, the
        table after any fallback, the source id (and class) on creates."""
        extra: dict[str, str] = {}
        pending: dict[str, str] = {}
        for fld, target in item.references.items():
            sys_id = self.ledger.sys_ids.get(target)
            if sys_id:
                extra[fld] = sys_id
            else:
                pending[fld] = target
        table = item.table
        class_name = None
        if table in self.ledger.fallbacks:
            table, class_name = self.ledger.fallbacks[table], item.table
        if item.action == CREATE:
            extra[SOURCE_ID_FIELD] = item.source_id
            if class_name:
                extra["sys_class_name"] = class_name
        elif item.class_change and class_name is None and table != LOCATION_TABLE:
            table = CI_TABLE  # held under another class: address the update through cmdb_ci
        return WriteOp(
            key=self.runner.next_key(),
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

    def reconcile_intents(self, report: RunReport) -> None:
        """Audit what a dead run committed but never audited (before anything else is read)."""
        if self.intents is None or self.audit is None:
            return
        found = reconcile_intents(self.client, self.intents, self.audit, exclude_run=self.run_id)
        if not found.total and not found.stopped:
            return
        self._prefetched = None  # read again after reconciling
        report.outbox["intents"] = found.to_dict()
        if found.total:
            report.warnings.append(found.message())
            self.logger.event("intents_reconciled", **found.to_dict())
        if found.stopped:
            report.warnings.append(f"interrupted writes not reconciled yet: {found.stopped}")

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
        preflight: Callable[[], Any] | None = None,
    ) -> tuple[Plan | None, RunReport]:
        """Replay the outbox, plan, apply, verify; returns the plan and the run report.

        ``preflight`` (the schema check) runs before the outbox is replayed, or when there is
        nothing to replay, alongside the plan's first reads (see :meth:`plan`)."""
        with quiet_gc():
            return self._sync(result, dry_run, progress, verify, replay_outbox,
                              not_seen_since, preflight)  # fmt: skip

    def _sync(
        self,
        result: Any,
        dry_run: bool,
        progress: bool | None,
        verify: bool,
        replay_outbox: bool,
        not_seen_since: dict[str, str] | None,
        preflight: Callable[[], Any] | None,
    ) -> tuple[Plan | None, RunReport]:
        report = RunReport(run_id=self.run_id, dry_run=dry_run, ire=self.ire)
        started = self._clock()
        dropped = list(getattr(result, "dropped_links", ()) or ())
        if dropped:
            report.relationships.note_dropped(dropped)
            report.warnings.append(
                f"{len(dropped)} relationship(s) not made: an end was quarantined (see the "
                "data-quality issues), e.g. " + report.relationships.dropped_examples[0]
            )
        if preflight is not None:
            self._preflight = Once(preflight)
        if not dry_run:
            self.reconcile_intents(report)
        if replay_outbox and self.outbox is not None and not dry_run:
            t0 = self._clock()
            if self.outbox.count():
                self._preflight()  # the schema is checked before anything is replayed
                self._mark_writing()
                self._prefetched = None  # read before the replay's writes: read again
                replay = self.outbox.replay(self.client, audit=self.audit, intents=self.intents)
                report.outbox["replayed"] = replay.to_dict()  # beside what was reconciled
                if replay.unresolved:
                    report.warnings.append(_unresolved_warning(replay.unresolved))
                for failure in replay.failed:
                    report.warnings.append(
                        f"outbox entry {failure['seq']} ({failure['op']} {failure['table']} "
                        f"{failure['source_id']}) was rejected: {failure['error']}"
                    )
                if replay.stopped:
                    self.ledger.mark_unreachable(RuntimeError(replay.stopped))
            report.timings["outbox_replay"] = round(self._clock() - t0, 3)
        t0 = self._clock()
        try:
            plan = self.plan(result, not_seen_since=not_seen_since, create_companies=not dry_run)
        except Exception as exc:
            if not is_unreachable_error(exc) or dry_run:
                raise
            # cannot read the CMDB: every record becomes an upsert-by-source-id in the outbox
            self.ledger.mark_unreachable(exc)
            if self.companies is None:  # never without a manufacturer's name (a reference)
                self.companies = companies.resolve(self.client, list(
                    getattr(result, "records", result)), create=False)  # fmt: skip
            plan = planning.build_plan(
                self.companies.records,
                planning.CMDBSnapshot(),
                relationships=list(getattr(result, "relationships", ()) or ()),
            )
            plan.notes.append(
                "the CMDB could not be read; every record is queued as an upsert by source id"
            )
        report.timings["plan"] = round(self._clock() - t0, 3)
        self._report_companies(report)
        if dry_run:
            report.counts = plan.counts_by_table()
            report.notes.extend(plan.notes)
            report.relationships.wanted = len(plan.relationships)
            report.fallbacks.update(plan.fallbacks)
            report.finish("dry_run", clock_s=self._clock() - started)
            return plan, report
        if plan.writes or (plan.relationships and not plan.links_settled):
            self._mark_writing()  # else nothing is written: the state stays sealed
        self.apply(plan, progress=progress, report=report)
        if verify and not self.unreachable:
            t0 = self._clock()
            sealing = self._seal_ahead()  # its round trip is out while the writes are checked
            try:
                outcome = self.verify()
            except BaseException as exc:
                if sealing is not None:
                    sealing.exception()  # not left using the client after this run ends
                if not isinstance(exc, OperationalError):
                    raise
                # the writes landed and are audited: a read-back the instance refused (a spent
                # rate-limit window, an outage) must not turn the run into "failed, nothing
                # applied"; the state is forgotten, so the next load reads and checks again
                self._unverified(report, exc)
                self._settle_state(None)
                report.finish(clock_s=self._clock() - started)
                return plan, report
            report.verification = outcome.to_dict()
            report.mismatches = outcome.mismatches
            if outcome.mismatches or outcome.missing:
                report.warnings.append(
                    f"verification: {len(outcome.mismatches)} field mismatch(es), "
                    f"{len(outcome.missing)} record(s) not found after writing"
                )
                if report.status == "success":
                    report.status = "partial"
                    report.message = (
                        f"verification found {len(outcome.mismatches)} field mismatch(es) and "
                        f"{len(outcome.missing)} record(s) missing after writing (see "
                        "mismatches); rerun the load: it writes only what still differs"
                    )
            report.timings["verify"] = round(self._clock() - t0, 3)
            self._settle_state(outcome, self._complete(plan, report), sealing)
        elif not self.unreachable:
            self._settle_state(None, self._complete(plan, report))
        found = self.companies
        if found is not None and found.transient and report.status == "success":
            report.status = "partial"  # a request failed: the rerun may resolve them
            report.message = (
                f"manufacturer left out of {found.left_out} record(s): resolving "
                f"{len(found.transient)} vendor name(s) to core_company failed (see the "
                "warnings); rerun the load: it fills them in"
            )
        report.finish(clock_s=self._clock() - started)
        return plan, report

    def _stopped_early(self, report: RunReport, exc: OperationalError) -> None:
        """The writes stopped on an error: say so with the error's own guidance; what landed
        stays counted. Credentials that stopped working fail the run (they need fixing first);
        anything else leaves it partial (a rerun writes only what is missing)."""
        self.ledger.state_doubt = self.ledger.state_doubt or "the writes were interrupted"
        report.warnings.append(f"the writes stopped early: {describe(exc)}")
        if report.status not in ("success", "partial"):
            return  # queued or failed already says more
        report.status = "failed" if isinstance(exc, AuthenticationError) else "partial"
        report.message = (
            f"the writes stopped early ({type(exc).__name__}: {exc}); what landed is counted "
            "and audited; then run the load again: it writes only what is missing"
        )

    @staticmethod
    def _unverified(report: RunReport, exc: OperationalError) -> None:
        """Say that the writes landed but could not be read back, and what to do."""
        report.warnings.append(
            f"verification could not run ({type(exc).__name__}: {exc.context.error_message}); "
            "the writes counted above landed and are audited"
        )
        if report.status == "success":
            report.status = "partial"
            report.message = (
                "the writes landed but could not be read back "
                f"({type(exc).__name__}); run the load again later: it reads what it needs, "
                "checks, and writes only what still differs"
            )

    def _report_companies(self, report: RunReport) -> None:
        """The vendor names left unresolved (one warning), or a dry run's creations (a note)."""
        found = self.companies
        if found is None:
            return
        if found.created or found.unresolved or found.would_create:
            self.logger.event("companies_resolved", known=len(found.known),
                              created=len(found.created), unresolved=sorted(found.unresolved),
                              would_create=found.would_create)  # fmt: skip
        if warning := found.warning():
            report.warnings.append(warning)
        if note := found.note():
            report.notes.append(note)
        if found.created:
            report.notes.append(
                f"{len(found.created)} {companies.COMPANY_TABLE} record(s) created as "
                f"manufacturers: {', '.join(sorted(found.created))}"
            )

    def _mark_writing(self) -> None:
        """Before the first write: the remembered state is unsealed until this run saves it
        again (``StateStore.mark_writing``)."""
        if self._writes_mark is not None:
            self._writes_mark.mark_writing(self.instance_key)

    def _complete(self, plan: Plan, report: RunReport) -> bool:
        """The run left the CMDB exactly as this input wants it: every write and link landed
        or was there, and the plan noticed nothing (no CI not seen, held under another class,
        duplicated in the input, no field the instance lacks), so the same input against an
        unchanged CMDB would plan no change at all (``SyncState.input_digest``)."""
        rel = report.relationships
        settled = (CREATE, UPDATE, NO_CHANGE)
        return (
            report.status == "success"
            and not report.failures
            and self._plan_was_clean
            and rel.created + rel.existing == rel.wanted == len(plan.relationships)
            and all(i.action in settled and not i.class_change for i in plan.items)
        )

    def _wrote(self) -> bool:
        """This run changed the CMDB (a record write or a link landed)."""
        return bool(self.ledger.written) or self.ledger.stats.rel_created > 0

    def _seal_ahead(self) -> Future[str | None] | None:
        """Start the seal (``incremental.seal``: one round trip) in the background when this
        run wrote and nothing so far rules the state out; None otherwise. Its answer counts
        only if the verification then finds nothing (see :meth:`_settle_state`)."""
        state, store = self.ledger.state, self.state_store
        if state is None or store is None or not self._wrote() or self.ledger.state_doubt:
            return None
        since: dict[str, str | None] = dict(self._state_since)
        # no stamp to list from (nothing sourced was in that table when the plan read it):
        # from the instance's time at that read, less the overlap, so the listing leaves out
        # what we created rather than listing everything
        floor = self._stamp_at_first_read()
        for kind in ("ci", "loc"):
            since[kind] = since.get(kind) or floor
        if since.get("rel") is None:  # links counted in the first round: list from then
            since["rel"] = floor or since.get("ci")
        ours = set(state.rows["ci"])
        state.updater = self.ledger.updater()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snowkit-seal")
        try:
            return pool.submit(incremental.seal, self.client, state, since, ours,
                               workers=self.workers,
                               links_created=self.ledger.stats.rel_created)  # fmt: skip
        finally:
            pool.shutdown(wait=False)

    def _settle_state(
        self,
        verified: Any,
        complete: bool = False,
        sealing: Future[str | None] | None = None,
    ) -> None:
        """Keep the incremental state for the next run only if it is known to match the CMDB
        (see ``snowkit.cmdb.incremental``); otherwise forget it (the next run reads all).
        ``complete``: the run left the CMDB as its input wants it (see :meth:`_complete`).
        ``sealing``: the seal started by :meth:`_seal_ahead`, else it is made here."""
        state, store = self.ledger.state, self.state_store
        if state is None or store is None:
            return
        state.input_digest = self._input_digest if complete else ""
        state.rel_type_ids = self.rel_types.known(state.rel_type_names)
        wrote = self._wrote()
        why = self.ledger.state_doubt
        if why is None and wrote and verified is None:
            why = "writes were not verified"
        if why is None and verified is not None and (verified.mismatches or verified.missing):
            why = "verification found differences"
        if why is None and verified is not None and verified.unstored_fields:
            # the remembered rows hold what was sent, but a full read tells which columns exist
            why = "some fields were written to tables that do not hold them"
        encoded = None
        if why is None and wrote:
            sealing = sealing or self._seal_ahead()
            assert sealing is not None  # wrote, and nothing in doubt: there is a seal
            # the rows' stored form is most of a save's CPU: made while the seal is out
            encoded = store.encode_rows(state) if state.dirty else None
            try:
                why = sealing.result()
            except OperationalError as exc:  # e.g. rate limited: nothing to trust, read all
                why = f"the seal could not be read ({type(exc).__name__})"
        elif sealing is not None:
            sealing.exception()  # not used (the state is forgotten), but not left running
        if why is None:
            marks = {k: v for k, v in state.watermarks.items() if v}
            if wrote or state.dirty or not self._unchanged or marks != self._state_since:
                incremental.choose_canaries(state)  # else the canaries stand as they were
            store.save(self.instance_key, state, rows=state.dirty, encoded=encoded)
        else:
            self.logger.event("incremental_state_forgotten", reason=why)
            store.forget(self.instance_key)

    def _stamp_at_first_read(self) -> str | None:
        """The instance's time when the plan started reading, at the latest: our first
        write's stamp less the time from that read to the start of the writes (the engine's
        clock and the instance's move alike; stamps are whole seconds, so this rounds down).
        A record someone else made after that read is then listed by the seal."""
        stamp = self.ledger.first_stamp
        if stamp is None or self._read_started is None or self._apply_started is None:
            return stamp
        elapsed = max(0.0, self._apply_started - self._read_started)
        return incremental.cut(stamp, overlap=elapsed) or stamp

    def verify(self) -> Any:
        """Compare every record this engine wrote field by field: from its write's answer
        where that shows the stored record, else by reading it back (``snowkit.cmdb.verify``)."""
        from snowkit.cmdb.verify import Expectation, verify

        expectations = (
            Expectation(table, source_id, ChainMap(dict(refs), values) if refs else values)
            for table, source_id, values, refs in self.ledger.written
        )
        return verify(self.client, expectations, workers=self.workers, proven=self.ledger.proven())

    def rollback(self, run_id: str, *, audit_path: Any = None, force: bool = False) -> Any:
        """Undo ``run_id`` from the audit trail (see ``snowkit.cmdb.rollback``), after
        auditing what a dead run's last batch committed (it is in the intent journal only)."""
        from snowkit.cmdb.rollback import rollback

        path = audit_path or getattr(self.audit, "path", None)
        if self.intents is not None and self.audit is not None:
            found = reconcile_intents(self.client, self.intents, self.audit, audit_path=path)
            if found.stopped:
                raise ConnectionError(f"rollback not started: {found.stopped}")
        return rollback(self.client, run_id, audit=self.audit, audit_path=path, force=force)

    # -- results for verification --------------------------------------------------------
    @property
    def written(self) -> list[tuple[str, str, Mapping[str, str], tuple[tuple[str, str], ...]]]:
        """(table, source id, values, resolved references) of every record write that landed."""
        return list(self.ledger.written)

    @property
    def sys_ids(self) -> dict[str, str]:
        return dict(self.ledger.sys_ids)

    @property
    def fallbacks(self) -> dict[str, str]:
        return dict(self.ledger.fallbacks)

    @property
    def unreachable(self) -> bool:
        return self.ledger.unreachable


class Once:
    """Runs a check at most once, from whichever thread asks first; later calls return at
    once or raise what it raised (the schema check may run in a read-ahead round, or not)."""

    def __init__(self, check: Callable[[], Any] | None) -> None:
        self._check = check
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self.result: Any = None  #: what the check returned

    @property
    def ran(self) -> bool:
        """The check has been run (or is running): what it finds predates what follows."""
        return self._check is None

    def __call__(self) -> Any:
        with self._lock:
            check, self._check = self._check, None
            if check is not None:
                try:
                    self.result = check()
                except BaseException as exc:
                    self._error = exc
        if self._error is not None:
            raise self._error
        return self.result


def _tables_given_the_field(status: Any) -> set[str]:
    """Tables the schema check gave their source-id field just now (a fresh instance's
    first load: all of them): none of their records can carry a source id yet, and a question
    asked of the field before it existed may have been answered "no rows"."""
    return {table for table, _field in getattr(status, "created", None) or ()}


def _class_tables(tables: Iterable[str]) -> list[str]:
    """Class tables that may be missing on an instance (not cmdb_ci, not cmn_location)."""
    return sorted(set(tables) - {CI_TABLE, LOCATION_TABLE})


def _new_run_id() -> str:
    try:
        from snowkit.ops.logging import new_run_id

        return new_run_id()
    except ImportError:  # the logging module is not there yet
        import secrets
        from datetime import UTC, datetime

        return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _unresolved_warning(unresolved: list[dict[str, Any]]) -> str:
    """One line for references the outbox replay wrote empty (target not found)."""
    shown = ", ".join(f"{u['source_id']}.{u['field']} -> {u['target']}" for u in unresolved[:5])
    more = f" and {len(unresolved) - 5} more" if len(unresolved) > 5 else ""
    return (
        f"{len(unresolved)} replayed write(s) went without a reference whose target was not "
        f"found ({shown}{more}); the next load fills them in once the target exists"
    )
