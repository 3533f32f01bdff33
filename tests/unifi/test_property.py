"""Broken payloads (hypothesis): never a crash, every rejected record has a reason."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snowkit.cli.inventory import SavedResponses, UnreadableFileError, build_inventory, detect
from snowkit.cmdb import transform
from snowkit.unifi.models.inventory import Provenance
from snowkit.unifi.models.normalize import from_integration, from_network, from_sitemanager

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "zz:zz",
            "FCECDA112233",
            "fc:ec:da:11:22:33",
            "999.1.1.1",
            "10.0.0.1",
            "x" * 300,
            "a\x00b",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)

DEVICE_KEYS = [
    "_id",
    "mac",
    "serial",
    "model",
    "type",
    "name",
    "ip",
    "version",
    "site_id",
    "uplink",
    "state",
    "lan_ip",
]
CLIENT_KEYS = [
    "_id",
    "mac",
    "hostname",
    "name",
    "ip",
    "oui",
    "is_wired",
    "ap_mac",
    "sw_mac",
    "site_id",
    "os_name",
]
INT_KEYS = [
    "id",
    "name",
    "model",
    "macAddress",
    "ipAddress",
    "features",
    "uplinkDeviceId",
    "type",
    "connectedAt",
    "firmwareVersion",
]
SM_KEYS = ["id", "mac", "name", "model", "shortname", "ip", "version", "isConsole", "startupTime"]


def items(keys: list[str]) -> st.SearchStrategy[list[Any]]:
    item = st.dictionaries(st.sampled_from(keys), values, max_size=len(keys))
    return st.lists(st.one_of(item, values), max_size=6)


def _check(inventory: Any) -> None:
    result = transform(inventory)
    for held in result.quarantined:
        assert held.reasons, held
        assert all(r.rule and r.message for r in held.reasons)
    kept = {r.source_id for r in result.records}
    held = {q.source_id for q in result.quarantined}
    assert not kept & held
    for rel in result.relationships:
        assert rel.parent_source_id in kept and rel.child_source_id in kept


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items(["_id", "name", "desc"]), items(DEVICE_KEYS), items(CLIENT_KEYS))
def test_network_payloads(sites: list[Any], devices: list[Any], clients: list[Any]) -> None:
    _check(from_network(sites, devices, clients, Provenance("network")))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items(["id", "internalReference", "name"]), items(INT_KEYS), items(INT_KEYS))
def test_integration_payloads(sites: list[Any], devices: list[Any], clients: list[Any]) -> None:
    _check(
        from_integration(
            sites, {"s": devices, None: devices[:1]}, {"s": clients}, Provenance("integration")
        )
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items(["id", "type", "reportedState", "registrationTime"]),
    items(["siteId", "hostId", "meta"]),
    st.lists(
        st.one_of(
            st.fixed_dictionaries({"hostId": st.text(max_size=5), "devices": items(SM_KEYS)}),
            values,
        ),
        max_size=3,
    ),
)
def test_sitemanager_payloads(hosts: list[Any], sites: list[Any], groups: list[Any]) -> None:
    _check(from_sitemanager(hosts, sites, groups, Provenance("sitemanager")))


@settings(max_examples=200, deadline=None)
@given(values)
def test_any_json_document_is_detected_or_refused_cleanly(document: Any) -> None:
    json.dumps(document)  # the strategy only makes JSON-able values
    try:
        kind, found = detect(document)
    except UnreadableFileError as exc:
        assert str(exc)
        return
    saved = SavedResponses()
    getattr(
        saved,
        {"sitemanager": "sm_", "network": "net_", "integration": "int_"}[kind.split(".")[0]]
        + kind.split(".")[1],
    ).extend(found)
    _check(build_inventory(saved))
