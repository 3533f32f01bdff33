"""The relationship phase: after the records, link them in ``cmdb_rel_ci``.

Which links exist already comes from the incremental state when it covers the links' ends,
otherwise from a read of ``cmdb_rel_ci`` (the smaller side, in ``IN`` chunks) that then extends
the state. ``relationships.plan_links`` decides create / existing / orphan / unknown type; the
creates go through the ``BatchRunner`` like any write (a link whose outcome is unknown is
looked up by parent, child and type before a retry). An unreachable instance queues the links
by source id in the outbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from snowkit.cmdb import incremental
from snowkit.cmdb.batches import BatchRunner
from snowkit.cmdb.ledger import RunLedger
from snowkit.cmdb.outbox import is_unreachable_error
from snowkit.cmdb.relationships import (
    REL_TABLE,
    LinkKey,
    LinkPlan,
    RelTypeCache,
    existing_link_rows,
    plan_links,
    smaller_side,
)
from snowkit.cmdb.report import RunReport
from snowkit.cmdb.writes import RELATE, WriteOp


class Linker:
    """Runs the relationship phase of one run (see the module docstring)."""

    def __init__(
        self, client: Any, ledger: RunLedger, runner: BatchRunner, rel_types: RelTypeCache
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.runner = runner
        self.rel_types = rel_types

    def link(self, specs: Sequence[Any], report: RunReport, progress: bool | None) -> None:
        stats = report.relationships
        stats.wanted = len(specs)
        if not specs:
            return
        ledger = self.ledger
        if ledger.unreachable:
            self.queue_specs(specs)
            stats.queued = ledger.stats.rel_queued
            return
        try:
            existing = self.existing(specs)
            link_plan = plan_links(specs, ledger.sys_ids, self.rel_types, existing)
        except Exception as exc:
            if not is_unreachable_error(exc):
                raise
            ledger.mark_unreachable(exc)
            self.queue_specs(specs)
            stats.queued = ledger.stats.rel_queued
            return
        report_link_decisions(report, link_plan)
        ops = [self.op_for(spec, body) for spec, body in link_plan.to_create]
        self.runner.run(ops, "relationships", progress)
        report_link_outcomes(report, ledger)

    def begin_links(self) -> None:
        """Before a streamed run (``snowkit.cmdb.stream``): the remembered state is made to
        hold links, so the records this run creates can be marked as fully linked by it."""
        state = self.ledger.state
        if state is not None and not state.has_links:
            with self.ledger.lock:
                forget_links(state)
                state.has_links = True

    def existing(self, specs: Sequence[Any]) -> set[LinkKey]:
        """The links already there between the ends of ``specs``: remembered ones, plus a read
        for ends the remembered state does not cover."""
        known = self.ledger.sys_ids
        ends = [
            (known[s.parent_source_id], known[s.child_source_id])
            for s in specs
            if s.parent_source_id in known and s.child_source_id in known
        ]
        state = self.ledger.state
        if state is not None and not state.has_links:
            forget_links(state)
        if state is not None:
            ends = [
                (p, c)
                for p, c in ends
                if p not in state.covered_parents and c not in state.covered_children
            ]
        side, ids = smaller_side((p for p, _ in ends), (c for _, c in ends))
        workers = self.runner.workers
        rows = existing_link_rows(self.client, side, ids, workers=workers) if ids else {}
        if state is None:
            return {(r["parent"], r["child"], r["type"]) for r in rows.values()}
        with self.ledger.lock:
            state.dirty = state.dirty or bool(rows) or bool(ids)
            for sys_id, row in rows.items():
                state.rows["rel"][sys_id] = {k: row[k] for k in ("parent", "child", "type")}
                state.versions["rel"][sys_id] = row["version"]
            (state.covered_children if side == "child" else state.covered_parents).update(ids)
            state.has_links = True
            return incremental.link_keys(state)

    def op_for(self, spec: Any, body: dict[str, str]) -> WriteOp:
        return WriteOp(
            key=self.runner.next_key(), action=RELATE, table=REL_TABLE, values=body, spec=spec
        )

    def queue_specs(self, specs: Sequence[Any]) -> None:
        """Queue links in the outbox by their ends' source ids (the instance is unreachable)."""
        ops = []
        for spec in specs:
            type_id = None
            try:
                type_id = self.rel_types.get(spec.type_name)
            except Exception as exc:
                if not is_unreachable_error(exc):
                    raise
            ops.append(self.op_for(spec, {"type": type_id or ""}))
        self.ledger.queue(ops)


def report_link_decisions(report: RunReport, link_plan: LinkPlan) -> None:
    """The report's relationship figures from the link decisions: links already there,
    orphans (with examples), unknown types (a warning each, counted failed)."""
    stats = report.relationships
    stats.existing = link_plan.existing
    stats.orphans = len(link_plan.orphans)
    stats.orphan_examples = [
        f"{s.parent_source_id} -> {s.child_source_id} ({s.type_name})"
        for s in link_plan.orphans[:10]
    ]
    for name, n in link_plan.unknown_types.items():
        report.warnings.append(f"relationship type {name!r} not found: {n} link(s) skipped")
        stats.failed += n


def report_link_outcomes(report: RunReport, ledger: RunLedger) -> None:
    """The report's relationship figures from what the link writes became."""
    stats = report.relationships
    stats.created = ledger.stats.rel_created
    stats.failed += ledger.stats.rel_failed
    stats.queued = ledger.stats.rel_queued
    stats.not_attempted = ledger.stats.rel_not_attempted


def forget_links(state: incremental.SyncState) -> None:
    """Drop the remembered links: the next read of them is a full one."""
    state.dirty = True
    state.has_links = False
    state.rows["rel"].clear()
    state.versions["rel"].clear()
    state.covered_parents.clear()
    state.covered_children.clear()
