"""IRE mode: load CIs through the Identification and Reconciliation API.

Instances that enforce IRE (or reconcile several discovery sources) want CIs inserted through
``/api/now/identifyreconcile`` so their identification rules, not ours, decide insert vs update.
This module turns plan items into IRE payloads (``className`` + ``values``, relations by item
index when both ends are in the same payload), reads the per-item answers back, and
``IRELoader`` sends chunks of CIs that way (locations still go through the Table API: they are
not CIs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from snowkit.cmdb.ledger import RunLedger
from snowkit.cmdb.outbox import is_unreachable_error
from snowkit.cmdb.plan import CREATE, SOURCE_ID_FIELD, UPDATE
from snowkit.cmdb.writes import WriteOp, describe

#: Attributes the Hardware identification rule matches on; always sent so IRE can identify.
IDENTIFYING = ("serial_number", "name", "mac_address")
UNKNOWN = "Unknown"
SUCCESS_OPERATIONS = frozenset(
    {
        "INSERT",
        "UPDATE",
        "NO_CHANGE",
        "UPDATE_WITH_UPGRADE",
        "UPDATE_WITH_DOWNGRADE",
        "UPDATE_WITH_SWITCH",
        "INSERT_AS_PARTIAL",
        "INSERT_AS_INCOMPLETE",
    }
)


@dataclass
class IREItemOutcome:
    """The IRE answer for one input item."""

    index: int
    operation: str
    sys_id: str | None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.operation in SUCCESS_OPERATIONS and bool(self.sys_id) and not self.errors


def build_payload(
    entries: Sequence[tuple[str, str, dict[str, str]]],
    relationships: Sequence[Any] = (),
    rel_type_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``entries`` are ``(class_name, source_id, values)``; relations whose two ends are both
    in ``entries`` are sent by index (the others are linked later through the Table API)."""
    index = {sid: n for n, (_, sid, _) in enumerate(entries)}
    items = []
    for class_name, source_id, values in entries:
        body = {k: v for k, v in values.items() if v is not None}
        body[SOURCE_ID_FIELD] = source_id
        body["sys_class_name"] = class_name
        items.append(
            {
                "className": class_name,
                "values": body,
                "internal_id": source_id,
                "sys_object_source_info": {
                    "source_name": "snowkit",
                    "source_native_key": source_id,
                },
            }
        )
    relations = []
    for spec in relationships:
        parent = index.get(spec.parent_source_id)
        child = index.get(spec.child_source_id)
        if parent is None or child is None:
            continue
        type_name = (rel_type_names or {}).get(spec.type_name, spec.type_name)
        relations.append({"parent": parent, "child": child, "type": type_name})
    payload: dict[str, Any] = {"items": items}
    if relations:
        payload["relations"] = relations
    return payload


def parse_result(result: Mapping[str, Any], count: int) -> list[IREItemOutcome]:
    """One outcome per input item (an item IRE did not answer for is an error)."""
    outcomes: dict[int, IREItemOutcome] = {}
    for entry in result.get("items") or []:
        indices = entry.get("inputIndices") or []
        sys_id = entry.get("sysId")
        errors = [
            f"{e.get('error', 'ERROR')}: {e.get('message', '')}".strip()
            for e in entry.get("errors") or []
            if isinstance(e, Mapping)
        ]
        for n in indices:
            outcomes[int(n)] = IREItemOutcome(
                index=int(n),
                operation=str(entry.get("operation") or "ERROR"),
                sys_id=None if sys_id in (None, "", UNKNOWN) else str(sys_id),
                errors=errors,
            )
    return [
        outcomes.get(n, IREItemOutcome(n, "ERROR", None, ["no answer for this item"]))
        for n in range(count)
    ]


def relation_operations(result: Mapping[str, Any]) -> dict[str, int]:
    """Counts of the operations IRE reports for the relations it was given."""
    counts: dict[str, int] = {}
    for entry in result.get("relations") or []:
        op = str(entry.get("operation") or "ERROR")
        if entry.get("errorCount"):
            op = "ERROR"
        counts[op] = counts.get(op, 0) + 1
    return counts


class IRELoader:
    """Sends chunks of CI writes through ``identify_reconcile`` and books the outcomes in the
    ledger (a ``BatchRunner`` chunk runner)."""

    def __init__(self, client: Any, ledger: RunLedger, relationships: Sequence[Any]) -> None:
        self.client = client
        self.ledger = ledger
        self.relationships = list(relationships)

    @staticmethod
    def prepare(op: WriteOp, record: Any) -> WriteOp:
        """IRE needs the identifying attributes, not only the diff: send the whole record."""
        full = dict(record.values) if record is not None else {}
        full.update(op.body)
        full.pop(SOURCE_ID_FIELD, None)
        intended = op.item.table if op.item is not None else op.table
        op.values, op.extra, op.class_name = full, {}, intended
        return op

    def run_chunk(self, chunk: list[WriteOp]) -> None:
        audit = self.ledger.audit
        if audit is None:
            self._write(chunk)
            return
        with audit.batch():
            self._write(chunk)

    def _write(self, chunk: list[WriteOp]) -> None:
        ledger = self.ledger
        if ledger.unreachable:
            ledger.queue(chunk)
            return
        entries = [(op.class_name or op.table, op.source_id or "", op.body) for op in chunk]
        payload = build_payload(entries, self.relationships)
        try:
            result = self.client.identify_reconcile(payload)
        except Exception as exc:
            if is_unreachable_error(exc):
                ledger.mark_unreachable(exc)
                ledger.queue(chunk)
                return
            status = getattr(getattr(exc, "context", None), "http_status", None)
            for op in chunk:
                ledger.fail(op, describe(exc), status)
            return
        ledger.add("batches")
        for op, outcome in zip(chunk, parse_result(result, len(chunk)), strict=True):
            ledger.count_ire(outcome.operation)
            if not outcome.ok:
                ledger.fail(op, "; ".join(outcome.errors) or outcome.operation, None)
                continue
            if outcome.operation == "NO_CHANGE":
                with ledger.lock:
                    if op.source_id and outcome.sys_id:
                        ledger.sys_ids[op.source_id] = outcome.sys_id
                continue
            op.action = CREATE if outcome.operation.startswith("INSERT") else UPDATE
            op.extra[SOURCE_ID_FIELD] = op.source_id or ""
            ledger.succeed(op, outcome.sys_id)
        for name, n in relation_operations(result).items():
            ledger.count_ire(f"relation_{name}", n)
