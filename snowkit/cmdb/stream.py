"""Streaming apply: every write goes out as soon as what it depends on has landed.

Why: sending phase by phase (locations, network gear, clients, then every relationship) leaves
the instance's concurrency slots idle at each phase's tail and makes the links wait for the
last client. Here one pool of threads sends Batch API chunks of ``batch_size`` writes taken
from a ready queue, at most ``workers`` at a time (the limiter; the pool is half as wide
again, so the next chunks' local work overlaps the sends). Chunks mix tables freely (the
Batch API addresses each item on its own), records before links.

Every create carries a sys_id chosen here (ServiceNow keeps a ``sys_id`` given in a POST
body), so a create that references one created in this run goes out at once, with the
reference filled in, instead of waiting a round trip for its target to land (every CI
references a location: that wait kept 7 of 8 slots idle at the start of a load). An update
still waits for its target (a reference that works is never replaced by one to a record
whose create may yet fail), and a relationship until both its ends have landed
(``cmdb_rel_ci`` rows only between records that exist). If a referenced create fails, the
creates that named it point at nothing: once everything has settled those fields are cleared
(one update per record, reported), and the next run creates the target and fills them in,
since the plan compares references. A plan made while the CMDB could not be read
(everything queued as upserts) chooses no sys_ids. How a retry settles a create with a
chosen id: ``BatchRunner``.

What stays the same as the phased path (``BatchRunner.run`` + ``Linker.link``):
- each chunk is sent by ``BatchRunner.run_chunk``: intents, audit, lookups before any retry of
  a create or link, fallbacks, the outbox once the instance is unreachable, the stop on 403;
- a link is written only between ends that exist, never twice: links between ends that were
  already in the CMDB are checked against the remembered state or a read of ``cmdb_rel_ci``
  (one job started with the first writes); a record this run *created* has no links but
  those this run makes, so links to it need no read (``RunLedger`` marks it covered);
- a link an end of which failed is an orphan (reported); once the instance is unreachable it
  is queued by source ids, like the phased path.

A chunk goes out when it is full, or partly filled when nothing more can join it before a
slot frees up (nothing in flight, or nothing left waiting on a dependency).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from snowkit.cmdb.batches import BatchRunner
from snowkit.cmdb.ledger import RunLedger
from snowkit.cmdb.linking import Linker, report_link_decisions, report_link_outcomes
from snowkit.cmdb.outbox import is_unreachable_error
from snowkit.cmdb.plan import CREATE, UPDATE
from snowkit.cmdb.progress import bar
from snowkit.cmdb.relationships import LinkKey, LinkPlan, plan_links
from snowkit.cmdb.report import RunReport
from snowkit.cmdb.writes import RELATE, WriteOp


@dataclass(slots=True)
class _Waiting:
    """Something held back until ``remaining`` of the records it needs have settled."""

    remaining: int
    op: WriteOp | None = None
    spec: Any = None


@dataclass
class StreamTimings:
    records_s: float = 0.0  #: until the last record write settled
    total_s: float = 0.0


@dataclass
class _Links:
    """What the link decisions found (the report's relationship figures)."""

    plan: LinkPlan = field(default_factory=LinkPlan)
    seen: set[LinkKey] = field(default_factory=set)


class WriteStream:
    """Sends record writes and relationship creates by readiness (see the module docstring)."""

    def __init__(
        self,
        runner: BatchRunner,
        ledger: RunLedger,
        linker: Linker,
        *,
        clock: Callable[[], float],
    ) -> None:
        self.runner = runner
        self.ledger = ledger
        self.linker = linker
        self._clock = clock
        self._records: deque[WriteOp] = deque()
        #: links ready to go, as (spec, body): their ops are made when a chunk takes them
        #: (55,000 queued ops would cost ~20 MB at the peak of a 50,000-CI load)
        self._links: deque[tuple[Any, dict[str, str]]] = deque()
        self._waiting: dict[str, list[_Waiting]] = {}
        self._blocked = 0
        self._records_left = 0
        self._found = _Links()
        self._pbar: Any = None  # the run's progress bar (set by ``run``)
        self._had_records = False

    # -- public ----------------------------------------------------------------------------
    def run(
        self,
        ops: Sequence[WriteOp],
        specs: Sequence[Any],
        report: RunReport,
        progress: bool | None,
        *,
        links_settled: bool = False,
    ) -> StreamTimings:
        """Write ``ops`` and link ``specs``; fills ``report.relationships``. ``links_settled``:
        every link of ``specs`` is known to exist (``Plan.links_settled``), none to decide."""
        started = self._clock()
        timings = StreamTimings()
        self._found.plan.wanted = len(specs)
        if links_settled and not ops:
            self._found.plan.existing = len(specs)
            specs = ()
        self._records_left = len(ops)
        self._had_records = bool(ops)
        # a plan made while the CMDB could not be read marks every record a create: those go
        # to the outbox as upserts by source id, and may turn out to exist under another id
        chosen = {} if self.ledger.unreachable else choose_sys_ids(ops)
        created_here = {op.source_id for op in ops if op.action == CREATE and op.source_id}
        landing = {op.source_id for op in ops if op.source_id}
        self.linker.begin_links()
        for op in ops:
            self._hold_record(op, landing, chosen)
        del ops  # held or queued now: each op is freed once its chunk is done (50,000 CIs)
        with (
            self.runner.throttle_feed(),
            bar(self._records_left + len(specs), "writing", enabled=progress) as pbar,
        ):
            self._pbar = pbar
            self._drive(specs, created_here, timings, started)
            cleared = self._clear_references_to_failed_creates(chosen)
        timings.total_s = self._clock() - started
        self._fill(report)
        if cleared:
            report.warnings.append(
                f"{cleared} record(s) referenced a record whose create was refused (see "
                "failures) by the sys_id chosen for it; those references were cleared (counted "
                "as updates), and the next run fills them in once that record exists"
            )
        return timings

    # -- holding and releasing -------------------------------------------------------------
    def _hold_record(self, op: WriteOp, landing: set[str], chosen: dict[str, str]) -> None:
        # only a create is sent ahead of its target: an update would replace a reference that
        # works with one that points nowhere, should the target's create fail
        for fld, target in list(op.pending_refs.items()) if op.action == CREATE else ():
            if target in chosen:
                op.extra[fld] = chosen[target]
                del op.pending_refs[fld]
        needs = {t for t in op.pending_refs.values() if t in landing and t != op.source_id}
        if not needs:
            self._ready_record(op)
            return
        self._wait_on(needs, _Waiting(len(needs), op=op))

    def _hold_link(self, spec: Any, created_here: set[str]) -> bool:
        """Hold a link whose ends are created in this run; False for one between records
        that were already there (decided once the existing links are known)."""
        ends = {spec.parent_source_id, spec.child_source_id} & created_here
        if not ends:
            return False
        self._wait_on(ends, _Waiting(len(ends), spec=spec))
        return True

    def _wait_on(self, targets: Iterable[str], waiting: _Waiting) -> None:
        self._blocked += 1
        for target in targets:
            self._waiting.setdefault(target, []).append(waiting)

    def _settled(self, op: WriteOp) -> None:
        """``op`` has its final outcome: release what waited for it."""
        if op.action == RELATE:
            return
        self._records_left -= 1
        for waiting in self._waiting.pop(op.source_id or "", ()):
            waiting.remaining -= 1
            if waiting.remaining != 0:  # still waiting, or released by a broken cycle (< 0)
                continue
            self._blocked -= 1
            if waiting.op is not None:
                self._ready_record(waiting.op)
            else:
                self._decide_link(waiting.spec)

    def _ready_record(self, op: WriteOp) -> None:
        sys_ids = self.ledger.sys_ids
        for fld, target in list(op.pending_refs.items()):
            sys_id = sys_ids.get(target)
            if sys_id:
                op.extra[fld] = sys_id
                del op.pending_refs[fld]
        self._records.append(op)

    def _decide_link(self, spec: Any) -> None:
        """Both ends of a link to a record created in this run have settled."""
        if self.ledger.unreachable:
            self.linker.queue_specs([spec])
            self._pbar.update(1)
            return
        try:
            plan = plan_links([spec], self.ledger.sys_ids, self.linker.rel_types, self._found.seen)
        except Exception as exc:  # the type lookup could not reach the instance
            if not is_unreachable_error(exc):
                raise
            self.ledger.mark_unreachable(exc)
            self.linker.queue_specs([spec])
            self._pbar.update(1)
            return
        self._take(plan)

    def _take(self, plan: LinkPlan) -> None:
        found = self._found.plan
        found.existing += plan.existing
        found.orphans.extend(plan.orphans)
        for name, n in plan.unknown_types.items():
            found.unknown_types[name] = found.unknown_types.get(name, 0) + n
        self._pbar.update(plan.existing + len(plan.orphans) + sum(plan.unknown_types.values()))
        for spec, body in plan.to_create:
            self._found.seen.add((body["parent"], body["child"], body["type"]))
            self._links.append((spec, body))

    def _decide_old_pairs(self, specs: list[Any], existing: set[LinkKey] | None) -> None:
        self._blocked -= 1
        if existing is None:  # the instance could not be reached: queue them
            self.linker.queue_specs(specs)
            self._pbar.update(len(specs))
            return
        self._found.seen.update(existing)
        self._take(plan_links(specs, self.ledger.sys_ids, self.linker.rel_types, existing))

    def _existing_links(self, specs: list[Any]) -> set[LinkKey] | None:
        if self.ledger.unreachable:
            return None
        try:
            self.linker.rel_types.prefetch(s.type_name for s in specs)
            return self.linker.existing(specs)
        except Exception as exc:
            if not is_unreachable_error(exc):
                raise
            self.ledger.mark_unreachable(exc)
            return None

    def _prefetch_types(self, names: set[str]) -> None:
        """Read the relationship types early; if the instance cannot be reached, the writes
        find that out and each link decision queues its link."""
        try:
            self.linker.rel_types.prefetch(names)
        except Exception as exc:
            if not is_unreachable_error(exc):
                raise

    def _clear_references_to_failed_creates(self, chosen: dict[str, str]) -> int:
        """Creates that went out ahead of their target name its chosen sys_id; if the
        target's create then failed, that reference points at nothing. Clear such fields (an
        update per record, audited like any other); returns how many records were updated."""
        if self.ledger.unreachable or self.ledger.forbidden:
            return 0  # no more writes this run: the next one plans the references again
        failed = {f.source_id for f in self.ledger.failures if f.action == CREATE and refused(f)}
        lost = {chosen[s] for s in failed if s in chosen}
        if not lost:
            return 0
        repairs: list[WriteOp] = []
        for table, source_id, _values, refs in list(self.ledger.written):
            broken = {fld: "" for fld, value in refs if value in lost}
            sys_id = self.ledger.sys_ids.get(source_id)
            if broken and sys_id:
                # no before-image: the record is this run's own create, which a rollback
                # deletes (putting the reference to nothing back first would be a write more)
                repairs.append(WriteOp(
                    key=self.runner.next_key(), action=UPDATE, table=table, values={},
                    extra=broken, source_id=source_id, sys_id=sys_id,
                ))  # fmt: skip
        size = self.runner.batch_size
        before = self.ledger.stats.updated
        for start in range(0, len(repairs), size):
            self._send(repairs[start : start + size])
        return self.ledger.stats.updated - before  # one that did not land is in the failures

    # -- sending ---------------------------------------------------------------------------
    def _drive(
        self, specs: Sequence[Any], created_here: set[str], timings: StreamTimings, started: float
    ) -> None:
        # more chunks in hand than requests in flight: while ``workers`` chunks are being sent
        # (the limiter's cap), others journal their intents or record their outcomes, so no
        # send waits for that local work (measured: ~25 ms of each ~120 ms chunk)
        workers = self.runner.workers + max(2, self.runner.workers // 2)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="snowkit-sync")
        inflight: dict[Future[Any], list[WriteOp] | None] = {}
        try:
            # the first chunks of records go out before the links are sorted out
            self._fill_slots(pool, inflight, workers)
            old_pairs = [s for s in specs if not self._hold_link(s, created_here)]
            # no record to send (a rerun): decide the links here, no thread to start for it
            inline = bool(old_pairs) and not inflight and not self._records and not self._waiting
            if old_pairs:
                self._blocked += 1
            if inline:
                self._decide_old_pairs(old_pairs, self._existing_links(old_pairs))
            elif old_pairs:
                inflight[pool.submit(self._existing_links, old_pairs)] = None
            names = {s.type_name for s in old_pairs} | self._held_type_names()
            if names and not inline:  # inline, ``_existing_links`` has read them
                inflight[pool.submit(self._prefetch_types, names)] = []
            while True:
                self._fill_slots(pool, inflight, workers)
                if not inflight and self._break_cycle():
                    continue
                if not inflight:
                    break
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in done:
                    chunk = inflight.pop(fut)
                    result = fut.result()
                    if chunk is None:
                        self._decide_old_pairs(old_pairs, result)
                        continue
                    for op in chunk:
                        self._settled(op)
                    if chunk:
                        self.runner.after_batch(self._pbar, len(chunk))
                    if self._had_records and self._records_left == 0 and not timings.records_s:
                        timings.records_s = self._clock() - started
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        if self._blocked:  # cannot happen: every record settles; guard the invariant
            raise RuntimeError(f"{self._blocked} write(s) still waiting on a dependency")

    def _break_cycle(self) -> bool:
        """Nothing in flight, yet records wait: they reference each other in a cycle. Send the
        first of them with the references still unresolved (as the phased path did); the
        others follow once it has landed. False when nothing waits."""
        for waiting in (w for ws in self._waiting.values() for w in ws):
            if waiting.op is not None and waiting.remaining > 0:
                waiting.remaining = 0  # settling its targets later leaves it below zero
                self._blocked -= 1
                self._ready_record(waiting.op)
                return True
        return False

    def _held_type_names(self) -> set[str]:
        return {w.spec.type_name for ws in self._waiting.values() for w in ws if w.spec}

    def _fill_slots(
        self, pool: ThreadPoolExecutor, inflight: dict[Future[Any], Any], workers: int
    ) -> None:
        size = self.runner.batch_size
        while len(inflight) < workers:
            ready = len(self._records) + len(self._links)
            if not ready:
                return
            sending = any(chunk for chunk in inflight.values())
            if ready < size and sending and self._blocked:
                return  # more will join this chunk when a write in flight settles
            chunk = self._take_chunk(size)
            inflight[pool.submit(self._send, chunk)] = chunk

    def _take_chunk(self, size: int) -> list[WriteOp]:
        chunk: list[WriteOp] = []
        records, links = self._records, self._links
        while records and len(chunk) < size:
            chunk.append(records.popleft())
        while links and len(chunk) < size:
            chunk.append(self.linker.op_for(*links.popleft()))
        return chunk

    def _send(self, chunk: list[WriteOp]) -> None:
        if self.ledger.forbidden:  # a 403 stopped the run: do not try every other batch
            self.ledger.skip(chunk)
            return
        self.runner.run_chunk(chunk)

    # -- report ----------------------------------------------------------------------------
    def _fill(self, report: RunReport) -> None:
        found = self._found.plan
        report.relationships.wanted = found.wanted
        # decided as ends landed, in no fixed order: name unknown types alphabetically
        found.unknown_types = dict(sorted(found.unknown_types.items()))
        report_link_decisions(report, found)
        report_link_outcomes(report, self.ledger)


def refused(failure: Any) -> bool:
    """The instance answered a definite no (a 4xx that is no throttle, timeout or conflict):
    nothing was stored. A write with no such answer may have landed after all."""
    status = failure.status_code
    return status is not None and 400 <= status < 500 and status not in (408, 409, 429)


def choose_sys_ids(ops: Iterable[WriteOp]) -> dict[str, str]:
    """Give every create (with a source id) the sys_id it will be stored under: 32 lowercase
    hex digits, as the instance's own. Returns source id -> sys_id. A create that already
    carries one (a retried or replayed write) keeps it."""
    creates = [op for op in ops if op.action == CREATE and op.source_id]
    # random like uuid4, drawn at once: one call per create cost 9 ms per 5,000
    fresh = os.urandom(16 * len(creates)).hex()
    chosen: dict[str, str] = {}
    for n, op in enumerate(creates):
        chosen[op.source_id] = op.extra.setdefault("sys_id", fresh[32 * n : 32 * n + 32])
    return chosen
