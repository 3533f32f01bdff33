"""Normalisation shared by the three UniFi API models.

UniFi spells the same MAC three ways (``F4E2C6C23F13``, ``f4:e2:c6:c2:3f:13``, sometimes with
dashes) and writes empty timestamps as ``""``. These helpers turn them into one form so the
APIs can be joined; they never raise, because one odd value must not sink a whole collection.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

_HEX12 = re.compile(r"^[0-9a-f]{12}$")
_NORMAL = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_SEPARATORS = re.compile(r"[:\-.\s]")


def normalize_mac(value: Any) -> str | None:
    """``aa:bb:cc:dd:ee:ff`` for any common spelling, or None when it is not a MAC."""
    if not isinstance(value, str):
        return None
    if _NORMAL.fullmatch(value):  # fast path: the form two of the three APIs already use
        return value
    text = _SEPARATORS.sub("", value.strip().lower())
    if not _HEX12.match(text):
        return None
    return ":".join(text[i : i + 2] for i in range(0, 12, 2))


def mac_or_raw(value: Any) -> str | None:
    """The normalised MAC, else the raw text (so validation can report it), else None."""
    normal = normalize_mac(value)
    if normal is not None:
        return normal
    if value is None or value == "":
        return None
    return str(value)


def is_randomized_mac(mac: str | None) -> bool:
    """True for a locally administered (private, randomised) MAC: bit 1 of the first octet."""
    if not mac or len(mac) < 2:
        return False
    try:
        return bool(int(mac[:2], 16) & 0x02)
    except ValueError:
        return False


def _empty_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _lenient_datetime(value: Any) -> Any:
    """``""`` and unparseable timestamps become None instead of failing the whole record."""
    value = _empty_to_none(value)
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value if value > 0 else None
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


OptionalTimestamp = Annotated[datetime | None, BeforeValidator(_lenient_datetime)]
"""RFC 3339 text, ``""`` or epoch seconds; None when absent or unreadable."""

Text = str | None
"""Free text; numbers are accepted as text (``coerce_numbers_to_str``: real payloads mix them)."""


class UniFiModel(BaseModel):
    """Base of every API model: unknown fields kept, names as the API spells them."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, coerce_numbers_to_str=True)
