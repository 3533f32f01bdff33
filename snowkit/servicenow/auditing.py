"""Recording every write the client makes (create, update, delete) in the audit trail.

Each entry carries the before and after images, the caller's source key, the outcome
(``success``, ``failure``, or ``ambiguous`` when the answer was lost) and the correlation id of
the operation, so ``snowkit audit`` can answer "who changed this record, from what, to what".
Writes through the Batch API are recorded per item, one checkpointed block per chunk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Protocol

from snowkit.ops.errors import AmbiguousWriteError
from snowkit.ops.logging import current_correlation_id
from snowkit.servicenow.batch import BatchResult, write_target
from snowkit.servicenow.paging import KEY_FIELD
from snowkit.servicenow.query import plain_value


class AuditSink(Protocol):
    """What the client needs of an audit trail (``snowkit.ops.audit.AuditTrail`` has it).

    A sink may also offer ``batch()``, a context manager grouping entries under one fsync.
    """

    def record(
        self,
        action: str,
        table: str,
        sys_id: str | None,
        source_id: str | None = None,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        outcome: str = "success",
        run_id: str | None = None,
        correlation_id: str | None = None,
    ) -> Any: ...


def outcome_of(error: BaseException | None) -> str:
    """The audit outcome of a write that raised ``error`` (None: it succeeded)."""
    if error is None:
        return "success"
    return "ambiguous" if isinstance(error, AmbiguousWriteError) else "failure"


class WriteAudit:
    """Writes audit entries to ``trail`` (an ``AuditTrail``); does nothing without one."""

    def __init__(self, trail: AuditSink | None) -> None:
        self.trail = trail

    @property
    def enabled(self) -> bool:
        return self.trail is not None

    def record(
        self,
        action: str,
        table: str,
        sys_id: str | None,
        source_id: str | None,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        error: BaseException | None = None,
    ) -> None:
        """One Table API write; ``error`` is what the write raised, if anything."""
        if self.trail is None:
            return
        self._write(
            action,
            table,
            sys_id,
            source_id,
            dict(before) if before is not None else None,
            dict(after) if after is not None else None,
            outcome_of(error),
        )

    def batch(self) -> contextlib.AbstractContextManager[Any]:
        """A block of entries written with one fsync and checkpoint (when the trail can)."""
        batch = getattr(self.trail, "batch", None)
        return batch() if callable(batch) else contextlib.nullcontext()

    def record_batch_item(self, result: BatchResult) -> None:
        """One Batch API item, if it was a Table API write."""
        target = write_target(result.request) if self.trail is not None else None
        if target is None:
            return
        action, table, sys_id = target
        after = result.result if result.ok and isinstance(result.result, dict) else None
        if action == "delete":
            after = None
        elif after is None:  # failed or not serviced: record what we tried to write
            body = result.request.body
            after = dict(body) if isinstance(body, Mapping) else None
        sys_id = sys_id or (plain_value(after.get(KEY_FIELD)) if after and result.ok else None)
        outcome = "success" if result.ok else ("ambiguous" if result.ambiguous else "failure")
        before = dict(result.request.before) if result.request.before else None
        self._write(action, table, sys_id, result.request.source_id, before, after, outcome)

    def _write(
        self,
        action: str,
        table: str,
        sys_id: str | None,
        source_id: str | None,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        outcome: str,
    ) -> None:
        assert self.trail is not None
        self.trail.record(
            action,
            table,
            sys_id,
            source_id=source_id,
            before=before,
            after=after,
            outcome=outcome,
            correlation_id=current_correlation_id(),
        )
