"""Names and value handling every part of the sync engine shares.

``u_unifi_source_id`` is the field that ties a CMDB record to its UniFi source (see
``snowkit.cmdb.schema``); ``as_str`` reads a field value the way the Table API may return it
(a plain string, ``None``, or a ``{"value", "display_value"}`` pair for references).
"""

from __future__ import annotations

from typing import Any

SOURCE_ID_FIELD = "u_unifi_source_id"


def as_str(value: Any) -> str:
    """A field value as a plain string ("" for missing)."""
    if isinstance(value, dict):
        value = value.get("value", "")
    return "" if value is None else str(value)
