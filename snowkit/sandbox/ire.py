"""Identification & Reconciliation (``POST /api/now/identifyreconcile``) with the Hardware rule.

Real CMDB loads go through IRE so duplicates are matched rather than re-inserted. We emulate:

* source-based identification first: an item may carry ``sys_object_source_info``
  (``source_name``, ``source_native_key``); IRE looks the pair up in the Source
  [``sys_object_source``] table and, when it points at a CI that still exists, that CI is the
  match and no identification rule runs. Whatever the item was identified by, a committed item
  with source info leaves (or re-points) its ``sys_object_source`` row, so the next payload
  from that source finds the same CI even when its identifying attributes are shared with
  other CIs (several clients called "Philips-hue"). Relied on: ServiceNow's "Identification
  and Reconciliation Engine (IRE)" page, section "CI identification" (CIs "can also be uniquely
  identified using source_name and source_native_key values provided in the
  sys_object_source_info section of the payload, and the Source [sys_object_source] table. If
  identification is successful using that method, then it is not necessary to apply matching
  algorithms that rely on identification rules"). The table's columns are ``name`` and ``id``
  (the payload keys ``source_name`` / ``source_native_key``), ``target_sys_id``,
  ``target_table`` and ``last_scan`` (set when the row is written; not refreshed on every
  scan here). The property ``glide.identification_engine.skip_sys_object_source_matching`` is
  not emulated (always off);
* then the base-system Hardware identifier only: serial_number, then name (searched on
  ``cmdb_ci_hardware`` and its subclasses), then ``mac_address`` + ``name`` of a
  ``cmdb_ci_network_adapter`` ``lookup`` entry (the adapter's ``cmdb_ci`` is the match; a
  committed item leaves its adapter rows). The CI's own ``mac_address`` is no criterion, as on
  a real instance: an item with only a MAC, or a lookup without the adapter's name, gets
  ``MISSING_MATCHING_ATTRIBUTES``;
* relationships by item index.

Enough to test a loader that prefers IRE and falls back to the Table API. The caller
serialises calls (one lock).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from snowkit.sandbox.store import Store

HARDWARE = "cmdb_ci_hardware"
RULE_NAME = "Hardware Rule"
IDENTIFIER_ENTRY_SYS_ID = "556eb250c3400200d8d4bea192d3ae92"
MATCH_ATTRIBUTES = ("serial_number", "name")  # on the CI; then the adapter lookup
NETWORK_ADAPTER = "cmdb_ci_network_adapter"
ADAPTER_ATTRIBUTES = ("mac_address", "name")
UNKNOWN = "Unknown"
SOURCE_TABLE = "sys_object_source"
SOURCE_IDENTIFIER = "sys_object_source"


class IREInputError(ValueError):
    """The payload as a whole is unusable (not ``{"items": [...]}``)."""


def identify_reconcile(
    store: Store, payload: dict[str, Any], *, commit: bool, user: str
) -> dict[str, Any]:
    """Identify each item, insert or update it (when ``commit``), then create its relations."""
    items = payload.get("items")
    if not isinstance(items, list) or not items:
        raise IREInputError("The payload needs a non-empty 'items' list")
    results = [
        _reconcile_item(store, item, index, commit, user) for index, item in enumerate(items)
    ]
    relations = payload.get("relations") or []
    relation_results = [
        _reconcile_relation(store, rel, index, results, commit, user)
        for index, rel in enumerate(relations if isinstance(relations, list) else [])
    ]
    return {
        "items": results,
        "relations": relation_results,
        "additionalCommittedItems": [],
        "additionalCommittedRelations": [],
    }


def _item_result(class_name: str, index: int) -> dict[str, Any]:
    return {
        "className": class_name,
        "operation": "NO_CHANGE",
        "sysId": UNKNOWN,
        "identifierEntrySysId": UNKNOWN,
        "identificationAttempts": [],
        "relatedSysIds": [],
        "relatedItems": [],
        "additionalRelatedItems": [],
        "markers": [],
        "inputIndices": [index],
        "mergedPayloadIds": [],
        "errorCount": 0,
        "errors": [],
        "warnings": [],
        "info": [],
    }


def _fail(result: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    result["errors"].append({"error": code, "message": message})
    result["errorCount"] = len(result["errors"])
    return result


def _reconcile_item(store: Store, item: Any, index: int, commit: bool, user: str) -> dict[str, Any]:
    if not isinstance(item, dict) or not isinstance(item.get("values"), dict):
        return _fail(
            _item_result("", index), "INVALID_INPUT_DATA", f"Item {index} has no 'values' object"
        )
    values = {str(k): _as_text(v) for k, v in item["values"].items()}
    class_name = str(item.get("className") or values.get("sys_class_name") or "")
    result = _item_result(class_name, index)
    schema = store.schema()
    if not class_name:
        return _fail(result, "NO_CLASS_NAME_FOR_INDEPENDENT_CI", f"Item {index} has no className")
    if not schema.has_table(class_name) or not store.table_exists(class_name):
        # a class whose plugin is not installed: refused per item, before anything is written
        # (answered 500 after part of the payload was committed)
        return _fail(result, "INVALID_INPUT_DATA", f"Invalid className '{class_name}'")
    if not schema.is_instance_of(class_name, HARDWARE):
        return _fail(
            result,
            "IDENTIFICATION_RULE_MISSING",
            f"No identification rule for class '{class_name}' (the sandbox only has the "
            "Hardware rule, for cmdb_ci_hardware and its subclasses)",
        )
    source = _source_info(item)
    adapters = _adapters(item)
    match = _identify_by_source(store, source, result) if source is not None else None
    if match is None:
        if not any(values.get(attr) for attr in MATCH_ATTRIBUTES) and not adapters:
            return _fail(
                result,
                "MISSING_MATCHING_ATTRIBUTES",
                "In the payload, the identification rule for class "
                f"'{class_name}' needs serial_number, name, or a {NETWORK_ADAPTER} lookup "
                "with mac_address and name",
            )
        match = _identify(store, values, adapters, result)
        if match is not None:
            result["identifierEntrySysId"] = IDENTIFIER_ENTRY_SYS_ID
    values["sys_class_name"] = class_name
    if match is None:
        result["operation"] = "INSERT"
        if commit:
            record = store.insert(class_name, values, user=user)
            result["sysId"] = record["sys_id"]
            if source is not None:
                _remember_source(store, source, record["sys_id"], class_name, user)
            _keep_adapters(store, adapters, record["sys_id"], user)
        return result
    result["sysId"] = match["sys_id"]
    own_class = match.get("sys_class_name") or HARDWARE
    current = store.get(own_class, match["sys_id"]) or match  # with the subclass's columns
    changes = {k: v for k, v in values.items() if k in current and current[k] != v}
    changes.pop("sys_class_name", None)  # reclassification is not emulated
    result["operation"] = "UPDATE" if changes else "NO_CHANGE"
    if commit:
        if changes:
            store.update(own_class, match["sys_id"], changes, user=user)
        if source is not None:
            _remember_source(store, source, match["sys_id"], own_class, user)
        _keep_adapters(store, adapters, match["sys_id"], user)
    return result


def _adapters(item: dict[str, Any]) -> list[dict[str, str]]:
    """The item's network-adapter lookup entries that can identify (both name and MAC)."""
    found = []
    for entry in item.get("lookup") or []:
        if not isinstance(entry, dict) or entry.get("className") != NETWORK_ADAPTER:
            continue
        values = entry.get("values") if isinstance(entry.get("values"), dict) else {}
        adapter = {attr: _as_text(values.get(attr)) for attr in ADAPTER_ATTRIBUTES}
        if all(adapter.values()):
            found.append(adapter)
    return found


def _keep_adapters(store: Store, adapters: list[dict[str, str]], ci: str, user: str) -> None:
    """Leave (or re-point) an adapter row per lookup entry, as IRE commits lookup items."""
    for adapter in adapters:
        rows, _ = store.list(NETWORK_ADAPTER, "", limit=1, filters=adapter)
        if not rows:
            store.insert(NETWORK_ADAPTER, {**adapter, "cmdb_ci": ci}, user=user)
        elif rows[0].get("cmdb_ci") != ci:
            store.update(NETWORK_ADAPTER, rows[0]["sys_id"], {"cmdb_ci": ci}, user=user)


def _source_info(item: dict[str, Any]) -> tuple[str, str] | None:
    """``(source_name, source_native_key)`` of an item, when it carries both."""
    info = item.get("sys_object_source_info")
    if not isinstance(info, dict):
        return None
    name, key = _as_text(info.get("source_name")), _as_text(info.get("source_native_key"))
    return (name, key) if name and key else None


def _identify_by_source(
    store: Store, source: tuple[str, str], result: dict[str, Any]
) -> dict[str, str] | None:
    """The CI this source already reported under this native key (None: not seen, or gone)."""
    rows, _ = store.list(
        SOURCE_TABLE, "ORDERBYsys_created_on", limit=1, filters={"name": source[0], "id": source[1]}
    )
    found: dict[str, str] | None = None
    if rows and rows[0].get("target_sys_id"):
        found = store.get(HARDWARE, rows[0]["target_sys_id"])
    result["identificationAttempts"].append(
        {
            "identifierName": SOURCE_IDENTIFIER,
            "attemptResult": "MATCHED" if found else "NO_MATCH",
            "attributes": ["source_name", "source_native_key"],
            "searchOnTable": SOURCE_TABLE,
            "hybridEntryCiAttributes": [],
        }
    )
    return found


def _remember_source(
    store: Store, source: tuple[str, str], sys_id: str, table: str, user: str
) -> None:
    """Point ``source`` at the CI it was reconciled to (insert the row, or re-point it)."""
    rows, _ = store.list(
        SOURCE_TABLE, "ORDERBYsys_created_on", limit=1, filters={"name": source[0], "id": source[1]}
    )
    target = {"target_sys_id": sys_id, "target_table": table}
    if not rows:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        store.insert(
            SOURCE_TABLE,
            {"name": source[0], "id": source[1], **target, "last_scan": stamp},
            user=user,
        )
    elif any(rows[0].get(k) != v for k, v in target.items()):
        store.update(SOURCE_TABLE, rows[0]["sys_id"], target, user=user)


def _identify(
    store: Store, values: dict[str, str], adapters: list[dict[str, str]], result: dict[str, Any]
) -> dict[str, str] | None:
    """Try each Hardware-rule criterion in order; record the attempts like the real engine."""
    found: dict[str, str] | None = None
    for attr in MATCH_ATTRIBUTES:
        value = values.get(attr)
        if found is not None or not value:
            outcome = "SKIPPED"
        else:
            rows, _ = store.list(HARDWARE, "ORDERBYsys_created_on", limit=2, filters={attr: value})
            outcome = "MATCHED" if rows else "NO_MATCH"
            if len(rows) > 1:
                outcome = "MULTI_MATCH"
            if rows:
                found = rows[0]
        result["identificationAttempts"].append(
            {
                "identifierName": RULE_NAME,
                "attemptResult": outcome,
                "attributes": [attr],
                "searchOnTable": HARDWARE,
                "hybridEntryCiAttributes": [],
            }
        )
    outcome = "SKIPPED"
    if found is None and adapters:
        owners: list[dict[str, str]] = []
        for adapter in adapters:
            rows, _ = store.list(NETWORK_ADAPTER, "ORDERBYsys_created_on", limit=2, filters=adapter)
            for row in rows:
                ci = store.get(HARDWARE, row.get("cmdb_ci", "")) if row.get("cmdb_ci") else None
                if ci is not None and ci["sys_id"] not in {o["sys_id"] for o in owners}:
                    owners.append(ci)
        outcome = "MULTI_MATCH" if len(owners) > 1 else "MATCHED" if owners else "NO_MATCH"
        found = owners[0] if owners else None
    result["identificationAttempts"].append(
        {
            "identifierName": RULE_NAME,
            "attemptResult": outcome,
            "attributes": list(ADAPTER_ATTRIBUTES),
            "searchOnTable": NETWORK_ADAPTER,
            "hybridEntryCiAttributes": [],
        }
    )
    return found


def _reconcile_relation(
    store: Store,
    relation: Any,
    index: int,
    items: list[dict[str, Any]],
    commit: bool,
    user: str,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "className": "cmdb_rel_ci",
        "operation": "NO_CHANGE",
        "inputIndices": [index],
        "markers": [],
        "mergedPayloadIds": [],
        "errorCount": 0,
        "errors": [],
    }
    if not isinstance(relation, dict):
        return _fail(result, "INVALID_INPUT_DATA", f"Relation {index} is not an object")
    parent_i, child_i = relation.get("parent"), relation.get("child")
    if not all(isinstance(i, int) and 0 <= i < len(items) for i in (parent_i, child_i)):
        return _fail(
            result, "INVALID_INPUT_DATA", f"Relation {index} has an invalid parent/child index"
        )
    type_name = str(relation.get("type") or "")
    types, _ = store.list("cmdb_rel_type", "", limit=1, filters={"name": type_name})
    if not type_name or not types:
        return _fail(
            result, "INVALID_INPUT_DATA", f"Relation {index}: unknown cmdb_rel_type '{type_name}'"
        )
    parent, child = items[parent_i]["sysId"], items[child_i]["sysId"]
    if items[parent_i]["errorCount"] or items[child_i]["errorCount"]:
        return _fail(result, "MISSING_DEPENDENCY", f"Relation {index} refers to a failed item")
    keys = {"parent": parent, "child": child, "type": types[0]["sys_id"]}
    if UNKNOWN not in (parent, child):
        existing, _ = store.list("cmdb_rel_ci", "", limit=1, filters=keys)
        if existing:
            return result
    result["operation"] = "INSERT"
    if commit:
        store.insert("cmdb_rel_ci", keys, user=user)
    return result


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
