"""What a write is and in which order writes go: ``WriteOp``, dependency phases, and how to
read one item of a Batch API answer.

Pure: nothing here talks to the instance. ``snowkit.cmdb.batches`` sends the ops,
``snowkit.cmdb.ledger`` records what became of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from snowkit.cmdb.fields import as_str
from snowkit.cmdb.plan import CREATE, LOCATION_TABLE, SOURCE_ID_FIELD, PlanItem
from snowkit.ops.redaction import redact_text

#: Kinds the transform gives client devices; everything else non-location is network gear.
CLIENT_KINDS = frozenset({"client", "wired_client", "wireless_client"})
#: Per-item statuses worth another attempt (after a lookup, for creates).
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
#: The action of a relationship create (``cmdb_rel_ci``).
RELATE = "relate"
#: Write answers carry the record's version, which the incremental snapshot remembers.
#: ``sys_updated_by`` names the account the instance stamps our writes with (see
#: ``snowkit.cmdb.incremental.listing_query``).
RETURN_FIELDS = (
    f"sysparm_fields=sys_id,{SOURCE_ID_FIELD},sys_updated_on,sys_mod_count,sys_updated_by"
    "&sysparm_exclude_reference_link=true"
)
_RETURNED = frozenset(
    {"sys_id", SOURCE_ID_FIELD, "sys_updated_on", "sys_mod_count", "sys_updated_by"}
)
#: ErrorContext categories meaning "the instance cannot be reached now" (queue, don't fail).
_UNREACHABLE_CATEGORIES = frozenset({"network", "circuit_open", "hibernating"})


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
        return "POST" if self.action in (CREATE, RELATE) else "PATCH"

    @property
    def url(self) -> str:
        """The write's address; a record write's answer also returns the fields it sets, so
        that the answer itself shows what the instance stored (see ``snowkit.cmdb.verify``)."""
        path = f"/api/now/table/{self.table}"
        if self.method == "PATCH":
            path += f"/{self.sys_id}"
        if self.action == RELATE:
            return f"{path}?{RETURN_FIELDS}"
        written = sorted(set(self.values).union(self.extra) - _RETURNED)
        fields = "".join(f",{name}" for name in written if _plain_name(name))
        return f"{path}?{RETURN_FIELDS.replace('&', fields + '&', 1)}"


def _plain_name(name: str) -> bool:
    """A field name safe to list in ``sysparm_fields`` (others are simply read back)."""
    return bool(name) and all(c.isalnum() or c in "_." for c in name)


# -- reading a Batch API answer -------------------------------------------------------------


def whole_batch_failure(results: Mapping[str, Any], ops: Sequence[WriteOp]) -> Any:
    """The result of a batch request that failed as a whole (every item carries it), or None."""
    first = None
    for op in ops:
        res = results.get(op.key)
        if res is None or getattr(res, "serviced", True) or getattr(res, "error", None) is None:
            return None
        first = first or res
    return first


def throttled(result: Any) -> bool:
    """A 429 on the batch or the item: the limiter should back off."""
    category = getattr(getattr(result, "error", None), "category", None)
    return result.status_code == 429 or str(getattr(category, "value", "")) == "rate_limit"


def unreachable_result(result: Any) -> bool:
    """The batch failed because the instance cannot be reached (not an ambiguous send)."""
    if getattr(result, "ambiguous", False):
        return False
    category = getattr(getattr(result, "error", None), "category", None)
    value = getattr(category, "value", category)
    return str(value).lower() in _UNREACHABLE_CATEGORIES


def forbidden_result(res: Any) -> bool:
    """The instance refused this write for lack of rights (HTTP 403 on the item or batch)."""
    if res is None:
        return False
    if res.serviced and res.status_code == 403:
        return True
    return getattr(getattr(res, "error", None), "http_status", None) == 403


def forbidden_error(exc: BaseException) -> bool:
    """An exception meaning HTTP 403 (``AuthorizationError``, or any error context with 403)."""
    if type(exc).__name__ == "AuthorizationError":
        return True
    return getattr(getattr(exc, "context", None), "http_status", None) == 403


def describe(exc: BaseException) -> str:
    """``Type: message``, secrets masked before it is cut (a cut could split one)."""
    return redact_text(f"{type(exc).__name__}: {exc}")[:500]


def result_error(res: Any) -> str:
    if res is None:
        return "no answer for this item in the batch response"
    if not getattr(res, "serviced", True):
        return res.error_message or "not serviced by the instance"
    parts = [p for p in (res.error_message, res.error_detail) if p]
    return f"HTTP {res.status_code}: " + (" — ".join(parts) if parts else "failed")


def is_invalid_table(status: int | None, message: str) -> bool:
    return status in (400, 404) and "invalid table" in message.lower()


def sys_id_of(res: Any) -> str | None:
    result = res.result
    if isinstance(result, dict):
        return as_str(result.get("sys_id")) or None
    return None


def version_of_result(res: Any) -> str | None:
    """``sys_updated_on|sys_mod_count`` of a write's answer (None when it has no record)."""
    result = res.result
    if not isinstance(result, dict):
        return None
    return f"{as_str(result.get('sys_updated_on'))}|{as_str(result.get('sys_mod_count'))}"
