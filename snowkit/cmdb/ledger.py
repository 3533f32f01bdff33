"""The run's ledger: what became of every write, shared by the batch, IRE and link runners.

One object, one lock: landed writes (their sys_ids feed later references, their values the
read-back verification, their versions the incremental state, their before-images the audit
trail), failures item by item, fallbacks to ``cmdb_ci``, and — once the instance cannot be
reached — the writes queued in the durable outbox. Once the instance refuses a write with
HTTP 403 the account lacks write rights: the ledger is ``forbidden``, the runners stop sending
(the rest is counted ``not_attempted``, never queued: no replay could send it) and the run
fails with what an admin must grant. ``fill_report`` turns it into the run report's
``applied`` counts, status and message. With an intent journal (``snowkit.cmdb.intents``)
every batch is noted before it is sent and forgotten once its outcomes are audited.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from snowkit.cmdb.fields import as_str
from snowkit.cmdb.incremental import SyncState
from snowkit.cmdb.intents import IntentJournal
from snowkit.cmdb.outbox import OP_CREATE, OP_RELATE, OP_UPDATE, Outbox, is_unreachable_error
from snowkit.cmdb.plan import CI_TABLE, CREATE, LOCATION_TABLE, RETIRE, SOURCE_ID_FIELD, UPDATE
from snowkit.cmdb.relationships import REL_TABLE
from snowkit.cmdb.report import ItemFailure, RunReport, suggestions_from
from snowkit.cmdb.writes import RELATE, RETRYABLE_STATUSES, WriteOp, describe, forbidden_error

#: Fields the engine adds that verification does not compare.
_META_FIELDS = frozenset({SOURCE_ID_FIELD, "sys_class_name", "sys_id"})

Written = tuple[str, str, Mapping[str, str], tuple[tuple[str, str], ...]]
#: (op, sys_id, version, the record answered) of a write that landed
Landed = tuple[WriteOp, "str | None", "str | None", Any]


@dataclass
class Stats:
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
    rel_not_attempted: int = 0
    not_attempted: int = 0


class RunLedger:
    """Thread-safe record of one run's writes (see the module docstring)."""

    def __init__(
        self,
        *,
        run_id: str,
        audit: Any = None,
        outbox: Outbox | None = None,
        intents: IntentJournal | None = None,
    ) -> None:
        self.run_id = run_id
        self.audit = audit
        self.outbox = outbox
        self.intents = intents
        self.lock = threading.Lock()
        self._audit_lock = threading.Lock()
        self._unreachable = threading.Event()
        self.unreachable_reason = ""
        self._forbidden = threading.Event()
        self.forbidden_reason = ""
        self.forbidden_write = ""
        self.stats = Stats()
        self.sys_ids: dict[str, str] = {}
        self.fallbacks: dict[str, str] = {}
        self.failures: list[ItemFailure] = []
        self.written: list[Written] = []
        self.ire_ops: dict[str, int] = {}
        #: the incremental state kept in step with every landed write (None: not kept)
        self.state: SyncState | None = None
        self.state_doubt: str | None = None
        #: creates the instance stored under another sys_id than the one chosen for them
        self.ids_not_kept = 0
        #: source ids IRE matched to another CI than the one carrying them (duplicates)
        self.other_ci_matched: list[str] = []
        self.first_stamp: str | None = None
        #: (table, source id) -> every write of the record was answered with the record
        #: holding exactly what was sent
        self._proof: dict[tuple[str, str], bool] = {}
        #: ``sys_updated_by`` of every write's answer ("" for a write known without one)
        self._updaters: set[str] = set()

    # -- counters --------------------------------------------------------------------------
    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self.stats, name, getattr(self.stats, name) + n)

    def count_ire(self, operation: str, n: int = 1) -> None:
        with self.lock:
            self.ire_ops[operation] = self.ire_ops.get(operation, 0) + n

    # -- reachability ----------------------------------------------------------------------
    @property
    def unreachable(self) -> bool:
        return self._unreachable.is_set()

    def absorb_chunk_failure(self, ops: list[WriteOp], exc: BaseException) -> bool:
        """A whole chunk failed: queue it when the instance is unreachable, refuse it on a 403.

        True when that settled the chunk; False when the caller must settle each write (the
        one policy for Batch API chunks and IRE chunks alike).
        """
        if is_unreachable_error(exc):
            self.mark_unreachable(exc)
            self.queue(ops)
            return True
        if forbidden_error(exc):
            for op in ops:
                self.forbid(op, f"HTTP 403: {describe(exc)}")
            return True
        return False

    def mark_unreachable(self, exc: BaseException) -> None:
        with self.lock:
            if not self._unreachable.is_set():
                self.unreachable_reason = describe(exc)
                self._unreachable.set()

    # -- write-ahead intents ----------------------------------------------------------------
    def intend(self, ops: list[WriteOp]) -> int | None:
        """Durably note the writes about to be sent (one fsync); None when not journaling."""
        if self.intents is None or self.audit is None or self.unreachable or self.forbidden:
            return None
        return self.intents.intend(
            self.run_id,
            (
                {
                    "action": op.action,
                    "table": op.table,
                    "source_id": op.source_id,
                    "sys_id": op.sys_id,
                    "before": op.before,
                    "after": op.body,
                }
                for op in ops
            ),
        )

    def intents_done(self, token: int | None) -> None:
        """The batch's outcomes are audited (the audit batch is fsynced): drop its intents."""
        if self.intents is not None:
            self.intents.done(token)

    # -- permission ------------------------------------------------------------------------
    @property
    def forbidden(self) -> bool:
        """A write was refused with HTTP 403: stop sending (see the module docstring)."""
        return self._forbidden.is_set()

    def forbid(self, op: WriteOp, message: str) -> None:
        """``op`` was refused with 403: it fails, and nothing more is sent this run."""
        with self.lock:
            if not self._forbidden.is_set():
                self.forbidden_reason = message
                self.forbidden_write = f"{op.action} on {op.table}"
                self._forbidden.set()
        self.fail(op, message, 403)

    def skip(self, ops: list[WriteOp]) -> None:
        """Writes left unsent because the account may not write (not failures, not queued).
        Links are counted apart: the success rate is of record writes (a 403 on the first link
        had halved the rate of a run whose every record landed)."""
        links = sum(1 for op in ops if op.action == RELATE)
        with self.lock:
            self.stats.not_attempted += len(ops) - links
            self.stats.rel_not_attempted += links

    def fall_back(self, op: WriteOp) -> None:
        """Address ``op`` to ``cmdb_ci`` (its class table is missing), keeping its class."""
        intended = op.class_name or op.table
        with self.lock:
            self.fallbacks[intended] = CI_TABLE
        op.class_name = intended
        op.table = CI_TABLE
        if op.action == CREATE:
            op.extra["sys_class_name"] = intended

    # -- outcomes --------------------------------------------------------------------------
    def succeed(
        self,
        op: WriteOp,
        sys_id: str | None,
        version: str | None = None,
        returned: Any = None,
    ) -> None:
        """``op`` landed; ``returned`` is the record the instance answered with, if any (it
        may prove the write without a read-back: see :meth:`proven`)."""
        self.succeed_many([(op, sys_id, version, returned)])

    def succeed_many(self, landed: list[Landed]) -> None:
        """Several writes landed (one chunk's): one pass under the lock, one audit append."""
        if not landed:
            return
        entries = []
        with self.lock:
            for op, sys_id, version, returned in landed:
                entries.append(self._land(op, sys_id or op.sys_id, version, returned))
        self._record_audit_many(entries)

    def _land(
        self, op: WriteOp, sys_id: str | None, version: str | None, returned: Any
    ) -> dict[str, Any]:
        """Count, remember and prepare the audit entry of one landed write (under the lock)."""
        if op.action == CREATE:
            self.stats.created += 1
        elif op.action == UPDATE:
            self.stats.updated += 1
        elif op.action == RETIRE:
            self.stats.retired += 1
        elif op.action == RELATE:
            self.stats.rel_created += 1
        if op.source_id and sys_id and op.action != RELATE:
            self.sys_ids[op.source_id] = sys_id
            chosen = op.extra.get("sys_id")
            if op.action == CREATE and chosen and chosen != sys_id:
                # the instance stored it under its own id: records sent meanwhile name the
                # chosen one; the next run reads everything and repairs those references
                self.ids_not_kept += 1
                self.state_doubt = "the instance did not keep a chosen sys_id"
        op.sys_id = sys_id
        self._updaters.add(
            as_str(returned.get("sys_updated_by")) if isinstance(returned, Mapping) else ""
        )
        if op.action != RELATE and op.source_id:
            refs = tuple((k, v) for k, v in op.extra.items() if k not in _META_FIELDS)
            self.written.append((op.table, op.source_id, op.values, refs))
            key = (op.table, op.source_id)
            shown = _answer_shows(returned, op.values, refs)
            self._proof[key] = self._proof.get(key, True) and shown
        self._remember(op, sys_id, version)
        return {
            "action": "create" if op.action in (CREATE, RELATE) else "update",
            "table": op.table,
            "sys_id": sys_id,
            "source_id": op.source_id,
            "before": op.before,
            "after": op.body,
            "outcome": "success",
            "run_id": self.run_id,
        }

    def updater(self) -> str:
        """The one account every write of this run was stamped with, or "" (none written,
        several, or a write whose answer did not say)."""
        with self.lock:
            return next(iter(self._updaters)) if len(self._updaters) == 1 else ""

    def proven(self) -> frozenset[tuple[str, str]]:
        """(table, source id) of the records whose every write this run was answered with the
        stored record holding each sent field as sent: verification need not read them back."""
        with self.lock:
            return frozenset(key for key, shown in self._proof.items() if shown)

    def _remember(self, op: WriteOp, sys_id: str | None, version: str | None) -> None:
        """Keep the incremental state in step with a write that landed (under the lock)."""
        state = self.state
        if state is None:
            return
        if not sys_id or not version or version.startswith("|"):
            self.state_doubt = self.state_doubt or "a write's new version is unknown"
            return
        state.dirty = True
        stamp = version.split("|", 1)[0]
        if self.first_stamp is None or stamp < self.first_stamp:
            self.first_stamp = stamp
        if op.action == RELATE:
            body = op.body
            state.rows["rel"][sys_id] = {
                k: str(body.get(k, "")) for k in ("parent", "child", "type")
            }
            state.versions["rel"][sys_id] = version
            return
        kind = "loc" if op.table == LOCATION_TABLE else "ci"
        row = state.rows[kind].get(sys_id)  # the planned-from row: updated in place
        if row is not None and op.action != CREATE and not _next_version(row, version):
            # someone changed the record between the plan's read and this write: the
            # version returned vouches for their change too, but the row holds only ours
            self.state_doubt = self.state_doubt or "a record changed between the plan and the write"
        if row is None:
            row = state.rows[kind][sys_id] = {
                "sys_id": sys_id,
                "sys_class_name": op.class_name or op.table,
            }
        row.update(op.values)
        row.update(op.extra)
        row["sys_id"] = sys_id  # the stored id, not the one a create chose (see ``_land``)
        row["sys_updated_on"], row["sys_mod_count"] = version.split("|", 1)
        state.versions[kind][sys_id] = version
        if op.action == CREATE and state.has_links:
            # a record this run created has no links but the ones this run makes (and
            # remembers): no later run need read its links
            state.covered_parents.add(sys_id)
            state.covered_children.add(sys_id)

    def fail(self, op: WriteOp, message: str, status: int | None) -> None:
        with self.lock:
            if op.action == RELATE:
                self.stats.rel_failed += 1
            else:
                self.stats.failed += 1
            self.failures.append(
                ItemFailure(
                    source_id=op.source_id,
                    table=op.table,
                    action=op.action,
                    error=message,
                    status_code=status,
                    sys_id=op.sys_id,
                )
            )

    def queue(self, ops: list[WriteOp]) -> None:
        """Put ``ops`` in the durable outbox (in order, one transaction); without an outbox
        they fail with the reason the instance could not be reached."""
        if not ops:
            return
        if self.outbox is None:
            for op in ops:
                self.fail(op, f"instance unreachable: {self.unreachable_reason}", None)
            return
        self.outbox.enqueue_many(self._outbox_entry(op) for op in ops)
        with self.lock:
            for op in ops:
                if op.action == RELATE:
                    self.stats.rel_queued += 1
                else:
                    self.stats.queued += 1

    def _outbox_entry(self, op: WriteOp) -> dict[str, Any]:
        if op.action == RELATE:
            return {
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
        return {
            "run_id": self.run_id,
            "op": OP_CREATE if op.action == CREATE else OP_UPDATE,
            "table": op.table,
            "source_id": op.source_id,
            "sys_id": op.sys_id,
            "values": {k: v for k, v in op.body.items() if k != SOURCE_ID_FIELD},
            # every reference is resolved again by source id when replayed (one filled with
            # a chosen sys_id too: the target may exist under another id by then)
            "references": {**(op.item.references if op.item else {}), **op.pending_refs},
            "extra": {"before": op.before} if op.before else None,
        }

    def record_audit(
        self,
        action: str,
        table: str,
        sys_id: str | None,
        source_id: str | None,
        before: dict | None,
        after: dict | None,
        outcome: str,
    ) -> None:
        self._record_audit_many(
            [
                {
                    "action": action,
                    "table": table,
                    "sys_id": sys_id,
                    "source_id": source_id,
                    "before": before,
                    "after": after,
                    "outcome": outcome,
                    "run_id": self.run_id,
                }
            ]
        )

    def _record_audit_many(self, entries: list[dict[str, Any]]) -> None:
        if self.audit is None or not entries:
            return
        with self._audit_lock:
            self.audit.record_many(entries)

    # -- report ----------------------------------------------------------------------------
    def fill_report(
        self,
        report: RunReport,
        *,
        ire: bool,
        workers: int,
        batch_size: int,
        max_attempts: int = 3,
    ) -> None:
        """``applied``, failures, fallbacks, IRE counts, status, message and suggestions."""
        s = self.stats
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
            "not_attempted": s.not_attempted,
        }
        report.failures.extend(self.failures)
        report.ire = ire
        report.ire_operations = dict(self.ire_ops)
        report.fallbacks.update(self.fallbacks)
        if self.other_ci_matched:
            shown = ", ".join(self.other_ci_matched[:5])
            report.warnings.append(
                f"IRE matched {len(self.other_ci_matched)} record(s) to another CI than the one "
                f"carrying their source id ({shown}): the CMDB holds duplicates of these "
                "devices; merge them (the next run reads the CMDB in full)"
            )
        if self.ids_not_kept:
            report.warnings.append(
                f"the instance stored {self.ids_not_kept} record(s) under another sys_id than "
                "the one sent (a business rule?); references to them written in this run point "
                "nowhere until the next load, which reads the CMDB in full and repairs them"
            )
        for table, used in self.fallbacks.items():
            warning = (
                f"class table {table} is missing: its records were written to {used} "
                f"with sys_class_name={table}"
            )
            if warning not in report.warnings:
                report.warnings.append(warning)
        if self.forbidden:
            report.status = "failed"
            report.message = forbidden_message(
                self.forbidden_write,
                refused=s.failed + s.rel_failed,
                not_attempted=s.not_attempted + s.rel_not_attempted,
                landed=s.created + s.updated + s.retired + s.rel_created,
            )
        elif self.unreachable:
            report.status = "queued"
            report.message = (
                f"{_unavailable(self.unreachable_reason)} ({self.unreachable_reason}); "
                f"{s.queued + s.rel_queued} write(s) are queued in the outbox "
                f"({self.outbox.path if self.outbox else 'no outbox'}); they are sent by "
                "`snowkit outbox replay` or at the start of the next load"
            )
        elif s.failed or s.rel_failed or report.relationships.failed:
            report.status = "partial"
            report.message = partial_message(
                self.failures,
                records=s.failed,
                relationships=report.relationships.failed,
                max_attempts=max_attempts,
                workers=workers,
            )
        else:
            report.status = "success"
        report.suggestions.extend(
            suggestions_from(
                ambiguous=s.ambiguous,
                fallbacks=self.fallbacks,
                workers=workers,
                batch_size=batch_size,
            )
        )


def _answer_shows(
    returned: Any, values: Mapping[str, Any], refs: tuple[tuple[str, str], ...]
) -> bool:
    """The write's answer holds every field it set, each as sent (meta fields aside)."""
    if not isinstance(returned, Mapping):
        return False
    for name, sent in (*values.items(), *refs):
        if name in _META_FIELDS:
            continue
        if name not in returned or as_str(returned[name]) != as_str(sent):
            return False
    return True


def partial_message(
    failures: list[Any], *, records: int, relationships: int, max_attempts: int, workers: int
) -> str:
    """Why a run ended partial and how to finish it: a rerun writes only what is still missing;
    transient failures (429, 5xx, timeouts) may need more attempts, or fewer workers when the
    instance throttled most of them; other refusals need the listed failures fixed first."""
    head = f"{records} record write(s) and {relationships} relationship(s) failed; see failures"
    statuses = [getattr(f, "status_code", None) for f in failures]
    throttled = sum(1 for code in statuses if code == 429)
    transient = sum(1 for code in statuses if code is None or code in RETRYABLE_STATUSES)
    steps = ["rerun the load to finish (it writes only what is still missing and never duplicates)"]
    if failures and throttled * 2 >= len(failures):
        steps.append(
            f"{throttled} of {len(failures)} failure(s) were throttled (HTTP 429): lower "
            f"--workers (now {workers}) or raise the instance's rate limit"
        )
    elif transient:
        steps.append(
            f"{transient} failure(s) were transient after {max_attempts} attempt(s): raise "
            f"--max-attempts (now {max_attempts})"
        )
    if len(failures) > transient:
        steps.append(
            f"{len(failures) - transient} failure(s) were refused by the instance: fix what "
            "their errors say first, a rerun alone will not send them"
        )
    return f"{head}. To finish: " + "; ".join(steps)


def forbidden_message(write: str, *, refused: int, not_attempted: int, landed: int) -> str:
    """What to do when the account may read but not write the CMDB (HTTP 403 on a write)."""
    kept = (
        f"{landed} write(s) that landed before it are kept and audited"
        if landed
        else "nothing was written"
    )
    return (
        f"the account lacks write rights: the instance refused a {write} with HTTP 403 "
        f"(forbidden), so the load stopped there ({refused} write(s) refused, {not_attempted} "
        f"not attempted; {kept}; nothing was queued in the outbox, as a permission problem is "
        "not an outage). Ask a ServiceNow admin to give the integration user a role that may "
        "write the CMDB tables (cmdb_ci and its classes, cmn_location, cmdb_rel_ci): itil or "
        "asset (or cmdb_write), or admin, or an ACL granting create and write on those tables; "
        "then run `snowkit load` again. Check it with the same account: `snowkit load "
        "--dry-run` only reads."
    )


def _next_version(row: Mapping[str, Any], version: str) -> bool:
    """``version`` (a write's answer) is the one right after the row's: one modification
    more (or the row's count is unknown)."""
    planned = as_str(row.get("sys_mod_count"))
    written = version.split("|", 1)[1]
    if not planned.isdigit() or not written.isdigit():
        return True
    return int(written) == int(planned) + 1


def _unavailable(reason: str) -> str:
    """Why the instance took no more writes, in words: down, or its rate limit spent."""
    if "RateLimitError" in reason:  # itself, or the breaker it opened until the reset
        return "the instance's rate-limit window closed for longer than snowkit waits"
    return "the instance could not be reached"
