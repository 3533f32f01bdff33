"""The Batch API (``POST /api/now/v1/batch``): many REST calls in one round trip.

pysnc's ``update_multiple``/``delete_multiple`` and long list queries go through it. Each item
is decoded from base64, run through the same dispatcher as a top-level call (with the outer
caller's identity), and its response is re-encoded. Items may be left unserviced on purpose
(fault ``batch_unserviced_rate``) so clients can prove they resubmit them.

The caller (``app.py``) runs the whole request in one store transaction, so a 100-item load
commits once; each item remains its own atomic write and its own answer. This loop is on the
per-item hot path of bulk loads, so it calls ``binascii`` directly and looks status phrases up
in a table.
"""

from __future__ import annotations

import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any


@dataclass(slots=True)
class SubResponse:
    """What the dispatcher returns for one sub-request."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


class BatchRequestError(ValueError):
    """The batch envelope itself is unusable (not an object, no ``rest_requests`` list)."""


Dispatch = Callable[[str, str, dict[str, str], bytes], SubResponse]


def run_batch(
    payload: Any,
    dispatch: Dispatch,
    *,
    leave_unserviced: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Run every item of a batch ``payload`` through ``dispatch(method, url, headers, body)``."""
    if not isinstance(payload, dict) or not isinstance(payload.get("rest_requests"), list):
        raise BatchRequestError("The batch body must be an object with a rest_requests list")
    serviced: list[dict[str, Any]] = []
    unserviced: list[str] = []
    for item in payload["rest_requests"]:
        if not isinstance(item, dict):
            raise BatchRequestError("Every rest_requests entry must be an object")
        item_id = str(item.get("id", ""))
        if leave_unserviced():
            unserviced.append(item_id)
            continue
        serviced.append(_run_item(item, item_id, dispatch, clock))
    batch_id = payload.get("batch_request_id")
    return {
        "batch_request_id": "" if batch_id is None else str(batch_id),
        "serviced_requests": serviced,
        "unserviced_requests": unserviced,
    }


def _run_item(
    item: dict[str, Any], item_id: str, dispatch: Dispatch, clock: Callable[[], float]
) -> dict[str, Any]:
    started = clock()
    method = str(item.get("method", "")).upper()
    url = str(item.get("url", ""))
    headers = {
        str(h.get("name", "")).lower(): str(h.get("value", ""))
        for h in item.get("headers") or []
        if isinstance(h, dict)
    }
    try:  # what base64.b64decode(validate=False) does, minus two Python-level calls
        body = binascii.a2b_base64(item.get("body") or "")
    except (binascii.Error, ValueError, TypeError):
        response = SubResponse(400, [], b"")
        error = "The body of the request is not valid base64"
    else:
        if not method or not url.startswith("/"):
            response = SubResponse(400, [], b"")
            error = "Each request needs a method and a relative url"
        else:
            response = dispatch(method, url, headers, body)
            error = None
    result: dict[str, Any] = {
        "id": item_id,
        "status_code": response.status,
        "status_text": _PHRASES.get(response.status) or _phrase(response.status),
        "headers": []
        if item.get("exclude_response_headers")
        else [{"name": k, "value": v} for k, v in response.headers],
        "body": binascii.b2a_base64(response.body, newline=False).decode("ascii"),
        "execution_time": int((clock() - started) * 1000),
    }
    if error:
        result["error_message"] = error
    return result


_PHRASES = {s.value: s.phrase for s in HTTPStatus}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
