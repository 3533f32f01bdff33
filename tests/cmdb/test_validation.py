"""Field-level validation: errors quarantine, warnings drop the bad value, values sanitised."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from snowkit.cmdb.transform import CMDBRecord
from snowkit.cmdb.validation import has_errors, sanitize_value, validate_record


def _record(kind: str = "switch", **values: str) -> CMDBRecord:
    base = {
        "name": "Core Switch",
        "mac_address": "fc:ec:da:11:22:33",
        "u_unifi_source_id": "unifi:device:fc:ec:da:11:22:33",
    }
    base.update(values)
    return CMDBRecord("cmdb_ci_ip_switch", base["u_unifi_source_id"], base, kind)


def _rules(record: CMDBRecord) -> dict[str, str]:
    return {i.rule: i.severity for i in validate_record(record)}


def test_valid_record_has_no_issues() -> None:
    assert validate_record(_record(ip_address="10.0.0.2", serial_number="FCECDA112233")) == []
    assert validate_record(_record(ip_address="2001:db8::1")) == []


def test_identity_problems_are_errors() -> None:
    assert _rules(_record(name="")) == {"required": "error"}
    assert _rules(_record(mac_address="zz:zz:zz:00:11:22")) == {"mac_format": "error"}
    assert _rules(_record(mac_address="00:00:00:00:00:00")) == {"mac_reserved": "error"}
    assert _rules(_record(name="X" * 256)) == {"max_length": "error"}
    assert _rules(_record(name="evil\x00name")) == {"control_characters": "error"}
    no_mac = _record()
    del no_mac.values["mac_address"]
    assert _rules(no_mac) == {"required": "error"}


def test_site_needs_no_mac() -> None:
    site = CMDBRecord(
        "cmn_location",
        "unifi:site:1",
        {"name": "Büro", "u_unifi_source_id": "unifi:site:1"},
        "location",
    )
    assert validate_record(site) == []


def test_bad_optional_values_are_warnings_and_dropped() -> None:
    record = _record(ip_address="999.1.2.3", serial_number="**REDACTED**")
    issues = validate_record(record)
    assert {(i.field, i.rule, i.severity) for i in issues} == {
        ("ip_address", "ip_format", "warning"),
        ("serial_number", "serial_format", "warning"),
    }
    assert "ip_address" not in record.values and "serial_number" not in record.values
    assert not has_errors(issues)


def test_randomized_client_mac_is_a_warning_only() -> None:
    record = CMDBRecord(
        "cmdb_ci_hardware",
        "unifi:client:4a:29:ca:c4:41:aa",
        {
            "name": "phone",
            "mac_address": "4a:29:ca:c4:41:aa",
            "u_unifi_source_id": "unifi:client:4a:29:ca:c4:41:aa",
        },
        "client",
    )
    assert _rules(record) == {"randomized_mac": "warning"}


def test_sanitize_value_escapes_truncates_and_hides_secrets() -> None:
    assert sanitize_value("a\x00b\nc") == "a\\x00b\\nc"
    long = sanitize_value("x" * 500)
    assert long.startswith("x" * 80) and "(+420 chars)" in long
    assert sanitize_value("hunter2", "password") == "***"
    assert sanitize_value(None) == "None"


@given(st.text(max_size=400))
def test_sanitized_values_are_printable_and_bounded(text: str) -> None:
    out = sanitize_value(text)
    assert len(out) <= 80 + 30 + 4 * 80  # escapes at most quadruple a character
    assert not any(ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F for ch in out)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "name",
                "mac_address",
                "ip_address",
                "serial_number",
                "firmware_version",
                "u_unifi_source_id",
            ]
        ),
        st.text(max_size=300),
    ),
    st.sampled_from(["client", "switch", "location"]),
)
def test_validation_never_crashes_and_every_error_names_a_field(
    values: dict[str, str], kind: str
) -> None:
    record = CMDBRecord("t", "unifi:x", dict(values), kind)
    for issue in validate_record(record):
        assert issue.field and issue.rule and issue.message
        assert issue.severity in ("error", "warning")
