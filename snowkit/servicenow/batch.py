"""Batch API (``POST /api/now/v1/batch``) encoding, size-aware chunking and result decoding.

Written here rather than taken from pysnc because pysnc sends every item in one request (no
size cap: a large load hits the 10 MB ``glide.rest.max_content_length`` limit) and only resends
unserviced items by id without telling the caller why an item finally failed. We:

- encode bodies as base64 JSON with explicit ``Content-Type``/``Accept`` headers;
- chunk by *encoded* size (each item under the 5 MB per-item cap, each batch well under the
  10 MB request cap) and by item count;
- decode every serviced item into a :class:`BatchResult` with its status, parsed body, headers
  and, for failures, the ServiceNow error envelope's message and detail;
- hand unserviced ids back to the client, which resends them for a bounded number of rounds.

Encoding and decoding run once per item (10,000+ per load, under the GIL shared with the
workers), so they avoid the obvious waste: an item's size is computed, not re-encoded, and the
base64 steps call ``binascii`` directly.
"""

from __future__ import annotations

import binascii
import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from snowkit.servicenow.transport import IDEMPOTENT_METHODS

BATCH_PATH = "/api/now/v1/batch"
MAX_ITEM_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_BATCH_BYTES = 6 * 1024 * 1024  # well under the 10 MB default request cap
DEFAULT_MAX_ITEMS = 100
_ENVELOPE_OVERHEAD = 64  # the outer {"batch_request_id":..,"rest_requests":[..]}
WRITE_ACTIONS = {"POST": "create", "PATCH": "update", "PUT": "update", "DELETE": "delete"}
_TABLE_URL = re.compile(r"^/api/now/(?:v\d+/)?table/([a-z0-9_]+)(?:/([A-Za-z0-9_-]+))?/?(?:\?|$)")


class BatchItemTooLargeError(ValueError):
    """One item is over the Batch API's per-item input cap; send it on its own instead."""


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One sub-request. ``url`` is relative (``/api/now/table/x?...``); ``body`` a JSON value."""

    method: str
    url: str
    body: Any = None
    id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    table: str | None = None
    source_id: str | None = None
    before: Mapping[str, Any] | None = None  # the record before an update/delete, for the audit


@dataclass(slots=True)
class BatchResult:
    """The outcome of one :class:`BatchRequest` (``serviced`` False: never run by the server)."""

    id: str
    request: BatchRequest
    status_code: int | None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    serviced: bool = True
    ambiguous: bool = False  # the batch was sent but its answer lost: look the item up first
    error_message: str | None = None
    error_detail: str | None = None
    error: Any = None  # the ErrorContext for failed items, when an ErrorHandler is configured
    execution_time_ms: int | None = None
    raw_body: bytes = b""
    #: a DELETE answered 404 after an earlier send of its batch may have run: done, not failed
    gone_on_retry: bool = False

    @property
    def ok(self) -> bool:
        if self.gone_on_retry:
            return self.serviced
        return self.serviced and self.status_code is not None and 200 <= self.status_code < 300

    @property
    def result(self) -> Any:
        """The ``result`` member of a successful body (a record or a list of records)."""
        return self.body.get("result") if isinstance(self.body, dict) else None

    def header(self, name: str) -> str | None:
        """A header of the item's answer, whatever its case."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return str(value)
        return None

    @property
    def total(self) -> int | None:
        """``X-Total-Count``: the rows the item's query matched (None: absent or not a count)."""
        matched = (self.header("X-Total-Count") or "").strip()
        return int(matched) if matched.isascii() and matched.isdigit() else None


@dataclass(frozen=True, slots=True)
class EncodedItem:
    id: str
    payload: dict[str, Any]
    size: int
    request: BatchRequest


_ACCEPT = {"name": "Accept", "value": "application/json"}
_CONTENT_TYPE = {"name": "Content-Type", "value": "application/json"}
# ``,"body":""`` around the base64 text (which JSON never escapes).
_BODY_MEMBER_BYTES = 10


def encode_item(request: BatchRequest, item_id: str) -> EncodedItem:
    """The wire form of one item, with its encoded size for chunking.

    Per item, this is most of the Batch API's client cost, so: the usual headers (none of the
    caller's) are built without a merge, and the size is that of the small payload without its
    body plus the base64 length, instead of encoding the whole item a second time (base64 is
    plain ASCII: its JSON form is itself in quotes).
    """
    method = request.method.upper()
    body = request.body
    if request.headers:
        merged = {"Accept": "application/json", **request.headers}
        if body is not None:
            merged.setdefault("Content-Type", "application/json")
        headers = [{"name": k, "value": v} for k, v in merged.items()]
    elif body is not None:
        headers = [dict(_ACCEPT), dict(_CONTENT_TYPE)]
    else:
        headers = [dict(_ACCEPT)]
    payload: dict[str, Any] = {"id": item_id, "method": method, "url": request.url}
    payload["headers"] = headers
    size = len(orjson.dumps(payload)) + 1
    if body is not None:
        encoded = binascii.b2a_base64(orjson.dumps(body), newline=False).decode("ascii")
        size += len(encoded) + _BODY_MEMBER_BYTES
        del payload["headers"]  # keep the wire order: id, method, url, body, headers
        payload["body"] = encoded
        payload["headers"] = headers
    if size > MAX_ITEM_BYTES:
        raise BatchItemTooLargeError(
            f"batch item {item_id} ({request.method} {request.url[:60]}) encodes to {size} bytes, "
            f"over the Batch API's {MAX_ITEM_BYTES} byte per-item limit; send it with the Table API"
        )
    return EncodedItem(item_id, payload, size, request)


def assign_ids(requests: Sequence[BatchRequest]) -> list[EncodedItem]:
    """Encode every request, giving each a unique id (the caller's, or its position)."""
    seen: set[str] = set()
    items = []
    for index, req in enumerate(requests):
        item_id = req.id if req.id is not None else str(index + 1)
        if item_id in seen:
            raise ValueError(
                f"duplicate batch item id {item_id!r}: give each BatchRequest a unique id, or "
                "none (then its position is used)"
            )
        seen.add(item_id)
        items.append(encode_item(req, item_id))
    return items


def chunk(
    items: Sequence[EncodedItem],
    *,
    max_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> Iterator[list[EncodedItem]]:
    """Greedy, order-preserving chunks that stay under ``max_bytes`` and ``max_items``."""
    current: list[EncodedItem] = []
    size = _ENVELOPE_OVERHEAD
    for item in items:
        if current and (size + item.size > max_bytes or len(current) >= max_items):
            yield current
            current, size = [], _ENVELOPE_OVERHEAD
        current.append(item)
        size += item.size
    if current:
        yield current


_batch_ids = itertools.count(1)


def envelope(items: Sequence[EncodedItem]) -> dict[str, Any]:
    """The outer request body (``batch_request_id`` sent as a string, as documented)."""
    return {
        "batch_request_id": str(next(_batch_ids)),
        "rest_requests": [item.payload for item in items],
    }


def is_idempotent(items: Sequence[EncodedItem]) -> bool:
    """A batch may be resent blindly only if every item in it may."""
    return all(item.payload["method"] in IDEMPOTENT_METHODS for item in items)


def is_read_only(items: Sequence[EncodedItem]) -> bool:
    """Every item only reads (metrics name such a batch ``batch_read``, not ``batch``)."""
    return all(item.payload["method"] in ("GET", "HEAD") for item in items)


def decode_response(
    body: Mapping[str, Any], items: Sequence[EncodedItem]
) -> tuple[list[BatchResult], list[EncodedItem]]:
    """Serviced results, and the items to resend (listed unserviced, or missing altogether)."""
    by_id = {item.id: item for item in items}
    results: list[BatchResult] = []
    answered: set[str] = set()
    for sub in body.get("serviced_requests") or []:
        item_id = str(sub.get("id"))
        item = by_id.get(item_id)
        if item is None or item_id in answered:
            continue
        answered.add(item_id)
        results.append(_decode_item(sub, item))
    pending = [item for item in items if item.id not in answered]
    return results, pending


def _decode_item(sub: Mapping[str, Any], item: EncodedItem) -> BatchResult:
    body = sub.get("body")
    # What base64.b64decode (validate=False) does, without its two Python-level calls; a str
    # must be ASCII there too (ValueError otherwise).
    raw = binascii.a2b_base64(body) if body else b""
    headers = {h.get("name", ""): h.get("value", "") for h in sub.get("headers") or ()}
    parsed: Any = None
    if raw:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = raw.decode("utf-8", "replace")
    status = sub.get("status_code")
    result = BatchResult(
        id=item.id,
        request=item.request,
        status_code=int(status) if status is not None else None,
        body=parsed,
        headers=headers,
        execution_time_ms=sub.get("execution_time"),
        raw_body=raw,
    )
    if not result.ok:
        err = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(err, dict):
            result.error_message = err.get("message")
            result.error_detail = err.get("detail")
        else:
            result.error_message = sub.get("error_message") or sub.get("status_text")
    return result


def accept_gone_deletes(results: Sequence[BatchResult]) -> None:
    """Mark DELETE items answered 404 as done: called when an earlier send of the same batch
    may have run (its answer was lost), so the record is gone because *we* deleted it, as
    ``client.delete`` already treats a 404 on such a retry."""
    for result in results:
        if result.request.method.upper() == "DELETE" and result.status_code == 404:
            result.gone_on_retry = True
            result.error_message = result.error_detail = None


def unserviced_result(item: EncodedItem, rounds: int) -> BatchResult:
    """The result for an item the server never ran, after ``rounds`` attempts."""
    return BatchResult(
        id=item.id,
        request=item.request,
        status_code=None,
        serviced=False,
        error_message=(
            f"not serviced after {rounds} batch rounds (the instance's batch time or size limit "
            "was hit each time); send it again later or through the Table API"
        ),
    )


def write_target(request: BatchRequest) -> tuple[str, str, str | None] | None:
    """``(action, table, sys_id)`` for a Table API write item, else None (reads, other APIs)."""
    action = WRITE_ACTIONS.get(request.method.upper())
    match = _TABLE_URL.match(request.url)
    if action is None or match is None:
        return None
    return action, request.table or match.group(1), match.group(2)


def failed_result(item: EncodedItem, error: Any, *, ambiguous: bool) -> BatchResult:
    """The result for an item whose whole batch request failed (``error``: an ErrorContext)."""
    return BatchResult(
        id=item.id,
        request=item.request,
        status_code=getattr(error, "http_status", None),
        serviced=False,
        ambiguous=ambiguous,
        error=error,
        error_message=getattr(error, "error_message", None) or str(error),
    )
