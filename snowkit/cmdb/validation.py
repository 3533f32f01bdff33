"""Field-level validation of CMDB records before anything is written.

Policy: problems with identity fields (``name``, ``mac_address``) or absurd values are
*errors* and quarantine the record; problems with descriptive optional fields (``ip_address``,
``serial_number``, ``firmware_version``, ...) are *warnings*: the bad value is dropped so garbage
never reaches the CMDB, and the record still loads. A randomised (private) client MAC is a
warning: the identity is unstable but the record is real.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from snowkit.unifi.models.common import is_randomized_mac

Severity = Literal["error", "warning"]

MAX_NAME = 255
MAX_FIELD = 255
VALUE_PREVIEW = 80
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
SERIAL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
SECRET_FIELD_RE = re.compile(r"pass|secret|token|key|auth|cookie", re.IGNORECASE)
RESERVED_MACS = frozenset({"00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"})
OPTIONAL_FIELDS = (
    "ip_address",
    "serial_number",
    "firmware_version",
    "model_number",
    "short_description",
    "manufacturer",
)
MAC_REQUIRED_KINDS = frozenset({"gateway", "switch", "access_point", "other", "client"})


class RecordLike(Protocol):
    table: str
    source_id: str
    kind: str
    values: dict[str, str]


@dataclass(frozen=True, slots=True)
class FieldIssue:
    source_id: str
    record_kind: str
    field: str
    value: str  # sanitised: truncated, control characters escaped, never a secret
    rule: str
    message: str
    severity: Severity = "error"


@dataclass(slots=True)
class QuarantinedRecord:
    source_id: str
    kind: str
    reasons: list[FieldIssue]
    raw: dict[str, Any] = field(default_factory=dict)  # a short summary, not the payload


def sanitize_value(value: Any, field_name: str = "", limit: int = VALUE_PREVIEW) -> str:
    """Printable, bounded, secret-free text for reports and logs."""
    if field_name and SECRET_FIELD_RE.search(field_name):
        return "***"
    text = value if isinstance(value, str) else repr(value)
    text = CONTROL_RE.sub(lambda m: repr(m.group())[1:-1], text)
    if len(text) > limit:
        text = f"{text[:limit]}…(+{len(text) - limit} chars)"
    return text


def _issue(
    record: RecordLike, name: str, value: Any, rule: str, message: str, severity: Severity = "error"
) -> FieldIssue:
    return FieldIssue(
        record.source_id, record.kind, name, sanitize_value(value, name), rule, message, severity
    )


def _has_control(value: str) -> bool:
    # isprintable() is a fast C check; only the rare non-printable text needs the regex
    return not value.isprintable() and CONTROL_RE.search(value) is not None


def valid_ip(value: str) -> bool:
    """IPv4 or IPv6 (``ipaddress``), with a fast path for the common dotted quad."""
    if IPV4_RE.fullmatch(value):
        return True
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _check_optional(record: RecordLike, name: str, value: str) -> str | None:
    """The rule a descriptive field breaks, or None."""
    if _has_control(value):
        return "control_characters"
    if len(value) > MAX_FIELD:
        return "max_length"
    if name == "ip_address" and not valid_ip(value):
        return "ip_format"
    if name == "serial_number" and not SERIAL_RE.match(value):
        return "serial_format"
    return None


#: Optional fields with a format of their own (checked by ``_check_optional`` every time).
_FORMATTED = frozenset({"ip_address", "serial_number"})

_MESSAGES = {
    "control_characters": "contains control characters",
    "max_length": f"longer than {MAX_FIELD} characters",
    "ip_format": "not an IPv4 or IPv6 address",
    "serial_format": "not a serial number (letters, digits, . _ / -, at most 64)",
}


def validate_record(record: RecordLike) -> list[FieldIssue]:
    """Issues of one record; drops invalid optional values from ``record.values`` in place."""
    issues: list[FieldIssue] = []
    values = record.values
    name = values.get("name")
    if not name or not name.strip():
        issues.append(_issue(record, "name", name, "required", "name is missing"))
    elif _has_control(name):
        issues.append(
            _issue(record, "name", name, "control_characters", "name contains control characters")
        )
    elif len(name) > MAX_NAME:
        issues.append(
            _issue(record, "name", name, "max_length", f"name is longer than {MAX_NAME} characters")
        )
    if not values.get("u_unifi_source_id"):
        issues.append(_issue(record, "u_unifi_source_id", None, "required", "no source id"))
    if record.kind in MAC_REQUIRED_KINDS:
        mac = values.get("mac_address")
        if not mac:
            issues.append(
                _issue(
                    record,
                    "mac_address",
                    mac,
                    "required",
                    "MAC address is missing: the record cannot be identified",
                )
            )
        elif not MAC_RE.match(mac):
            issues.append(
                _issue(
                    record,
                    "mac_address",
                    mac,
                    "mac_format",
                    "not a MAC address (expected aa:bb:cc:dd:ee:ff)",
                )
            )
        elif mac in RESERVED_MACS:
            issues.append(
                _issue(
                    record,
                    "mac_address",
                    mac,
                    "mac_reserved",
                    "all-zero or broadcast MAC cannot identify a device",
                )
            )
        elif int(mac[:2], 16) & 0x01:
            issues.append(
                _issue(
                    record,
                    "mac_address",
                    mac,
                    "mac_multicast",
                    "multicast MAC (group bit set): anonymised or wrong",
                    "warning",
                )
            )
        elif record.kind == "client" and is_randomized_mac(mac):
            issues.append(
                _issue(
                    record,
                    "mac_address",
                    mac,
                    "randomized_mac",
                    "randomised private MAC: the identity may change",
                    "warning",
                )
            )
    for optional in OPTIONAL_FIELDS:
        value = values.get(optional)
        if value is None:
            continue
        if optional not in _FORMATTED and len(value) <= MAX_FIELD and value.isprintable():
            continue  # the common case, decided without a call
        rule = _check_optional(record, optional, value)
        if rule is not None:
            issues.append(
                _issue(
                    record, optional, value, rule, f"{_MESSAGES[rule]}; value dropped", "warning"
                )
            )
            del values[optional]
    return issues


def has_errors(issues: list[FieldIssue]) -> bool:
    return any(i.severity == "error" for i in issues)
