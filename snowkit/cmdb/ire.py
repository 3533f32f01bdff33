"""IRE mode: load CIs through the Identification and Reconciliation API.

Instances that enforce IRE (or reconcile several discovery sources) want CIs inserted through
``/api/now/identifyreconcile`` so their identification rules, not ours, decide insert vs update.
This module turns plan items into IRE payloads (``className`` + ``values``, relations by item
index when both ends are in the same payload), reads the per-item answers back, and
``IRELoader`` sends chunks of CIs that way (locations still go through the Table API: they are
not CIs).

Identification. Every item carries ``sys_object_source_info`` (``source_name`` "UniFi",
``source_native_key`` = the record's source id): IRE looks the pair up in its Source
[``sys_object_source``] table first and, once it has seen a CI from this source, identifies it
by that key without running identification rules (ServiceNow docs, "Identification and
Reconciliation Engine (IRE)", section "CI identification"; the embedded instance emulates it in
``snowkit.sandbox.ire``). Only a CI the source has not reported yet goes through the Hardware
rule (serial_number, then name, then mac_address), which falls through to ``name`` when the
serial number finds nothing. UniFi names are labels, not identities: several clients are
called "Philips-hue", every site may have a "Core Switch 1". So a record that carries a
hardware id (serial number or MAC) is never identified by its name: the ``name`` is left out
of the IRE payload (the rule then decides on serial number and MAC only) and set right after
through the Table API (one batch per chunk) when the CI is new or its name changed. For items
without a serial number the MAC is also sent as a ``lookup`` entry on
``cmdb_ci_network_adapter`` with ``mac_address`` and ``name`` (the MAC again: UniFi names no
interface), the two attributes the base Hardware rule's MAC entry matches on. A lookup with the
MAC alone had left such items (every client) without a criterion: MISSING_MATCHING_ATTRIBUTES
on a real instance, while the embedded one matched the CI's own ``mac_address``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from snowkit.cmdb.classes import HARDWARE
from snowkit.cmdb.ledger import RunLedger
from snowkit.cmdb.outbox import is_unreachable_error
from snowkit.cmdb.plan import CI_TABLE, CREATE, RETIRE, SOURCE_ID_FIELD, UPDATE
from snowkit.cmdb.writes import (
    WriteOp,
    describe,
    forbidden_error,
    forbidden_result,
    result_error,
)
from snowkit.servicenow.batch import BatchRequest

#: Attributes the Hardware identification rule matches on; always sent so IRE can identify.
IDENTIFYING = ("serial_number", "name", "mac_address")
#: ``sys_object_source_info.source_name`` of every item this loader sends.
SOURCE_NAME = "UniFi"
#: The lookup table the base Hardware rule's MAC identifier entry searches.
NETWORK_ADAPTER = "cmdb_ci_network_adapter"
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
        item: dict[str, Any] = {
            "className": class_name,
            "values": body,
            "internal_id": source_id,
            "sys_object_source_info": {
                "source_name": SOURCE_NAME,
                "source_native_key": source_id,
            },
        }
        if body.get("mac_address") and not body.get("serial_number"):
            mac = body["mac_address"]
            # the rule's MAC entry is name + mac_address of an adapter: the MAC names it
            adapter = {"name": mac, "mac_address": mac}
            item["lookup"] = [{"className": NETWORK_ADAPTER, "values": adapter}]
        items.append(item)
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
        #: keys of ops whose planned diff changes the name (set after IRE for MAC-identified)
        self._name_changed: set[str] = set()

    def prepare(self, op: WriteOp, record: Any) -> WriteOp:
        """IRE needs the identifying attributes, not only the diff: send the whole record."""
        if "name" in op.body:
            self._name_changed.add(op.key)
        full = dict(record.values) if record is not None else {}
        full.update(op.body)
        full.pop(SOURCE_ID_FIELD, None)
        intended = op.item.table if op.item is not None else op.table
        if op.class_name:  # the class table is missing (the Table API falls back to cmdb_ci):
            # the nearest class with an identification rule (the Hardware rule: cmdb_ci has none)
            intended = HARDWARE
        op.values, op.extra, op.class_name = full, {}, intended
        return op

    @staticmethod
    def name_withheld(op: WriteOp) -> bool:
        """A named record with a hardware id: its (possibly shared) name must not identify it."""
        body = op.values
        return bool(body.get("name")) and bool(body.get("serial_number") or body.get("mac_address"))

    def _identifying_body(self, op: WriteOp) -> dict[str, str]:
        body = op.body
        if self.name_withheld(op):
            body.pop("name", None)
        return body

    def run_chunk(self, chunk: list[WriteOp]) -> None:
        audit = self.ledger.audit
        if audit is None:
            self._write(chunk)
            return
        token = self.ledger.intend(chunk)  # write-ahead (see snowkit.cmdb.intents)
        with audit.batch():
            unsure = self._write(chunk)
        if not unsure:  # else left for the next run to look up, as after a crash
            self.ledger.intents_done(token)

    def _write(self, chunk: list[WriteOp]) -> bool:
        """True when the chunk may have been committed without this run knowing (the call
        failed with no definite refusal: IRE counts as idempotent, so a lost answer is
        retried and may end in a network error after the first attempt landed)."""
        ledger = self.ledger
        if ledger.unreachable:
            ledger.queue(chunk)
            return False
        entries = [
            (op.class_name or op.table, op.source_id or "", self._identifying_body(op))
            for op in chunk
        ]
        payload = build_payload(entries, self.relationships)
        try:
            result = self.client.identify_reconcile(payload)
        except Exception as exc:
            status = getattr(getattr(exc, "context", None), "http_status", None)
            unsure = status is None or status >= 500
            if ledger.absorb_chunk_failure(chunk, exc):
                return unsure
            for op in chunk:
                ledger.fail(op, describe(exc), status)
            return unsure
        ledger.add("batches")
        names: list[tuple[WriteOp, str]] = []
        for op, outcome in zip(chunk, parse_result(result, len(chunk)), strict=True):
            ledger.count_ire(outcome.operation)
            if not outcome.ok:
                ledger.fail(op, "; ".join(outcome.errors) or outcome.operation, None)
                continue
            inserted = outcome.operation.startswith("INSERT")
            if self.name_withheld(op) and (inserted or op.key in self._name_changed):
                names.append((op, outcome.sys_id or ""))
            if outcome.operation == "NO_CHANGE":
                with ledger.lock:
                    if op.source_id and outcome.sys_id:
                        ledger.sys_ids[op.source_id] = outcome.sys_id
                continue
            if op.sys_id and outcome.sys_id and outcome.sys_id != op.sys_id:
                # IRE took an older duplicate for the CI carrying this source id: both now
                # carry it; the write landed there (audited as it is), the duplicate is said
                with ledger.lock:
                    ledger.other_ci_matched.append(op.source_id or outcome.sys_id)
                    ledger.state_doubt = "IRE matched another CI than the one remembered"
            if op.action != RETIRE:  # a retire that landed is a retire, not an update
                op.action = CREATE if inserted else UPDATE
            op.extra[SOURCE_ID_FIELD] = op.source_id or ""
            ledger.succeed(op, outcome.sys_id)
        for name, n in relation_operations(result).items():
            ledger.count_ire(f"relation_{name}", n)
        self._set_names(names)
        return False

    def _set_names(self, names: list[tuple[WriteOp, str]]) -> None:
        """Set the names left out of the IRE payload (see the module docstring), in one batch.

        A name that could not be set fails its record (the CI itself landed and is audited);
        the next run's plan sees the name differ and sets it.
        """
        if not names:
            return
        ledger = self.ledger
        requests = [
            BatchRequest(
                method="PATCH",
                url=f"/api/now/table/{CI_TABLE}/{sys_id}?sysparm_fields=sys_id",
                body={"name": op.values.get("name", "")},
                id=str(n),
                table=CI_TABLE,
                source_id=op.source_id,
            )
            for n, (op, sys_id) in enumerate(names)
        ]
        try:
            results = {str(r.id): r for r in self.client.batch(requests)}
        except Exception as exc:
            for op, _ in names:
                if forbidden_error(exc):
                    ledger.forbid(op, f"HTTP 403: {describe(exc)}")
                else:
                    ledger.fail(op, f"name not set: {describe(exc)}", None)
            if is_unreachable_error(exc):
                ledger.mark_unreachable(exc)
            return
        ledger.add("batches")
        for n, (op, _) in enumerate(names):
            res = results.get(str(n))
            if res is not None and res.ok:
                continue
            if forbidden_result(res):
                ledger.forbid(op, result_error(res))
            else:
                ledger.fail(op, f"name not set: {result_error(res)}", res and res.status_code)
