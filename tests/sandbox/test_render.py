"""Record rendering: every display_value × exclude_reference_link shape, fields, dot-walks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from snowkit.sandbox.render import render_record, render_records
from snowkit.sandbox.schema import ADMIN_SYS_ID
from snowkit.sandbox.store import Store

BASE = "https://127.0.0.1:8443"
ADMIN_LINK = f"{BASE}/api/now/table/sys_user/{ADMIN_SYS_ID}"


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store()
    yield s
    s.close()


@pytest.fixture
def incident(store: Store) -> dict[str, str]:
    return store.insert("incident", {"short_description": "hi", "state": "2"}, user="admin")


def render(
    store: Store, record: dict[str, str], table: str = "incident", **kw: Any
) -> dict[str, Any]:
    return render_record(record, table, store.schema(), base_url=BASE + "/", store=store, **kw)


@pytest.mark.parametrize(
    ("mode", "exclude", "state", "opened_by"),
    [
        ("false", False, "2", {"link": ADMIN_LINK, "value": ADMIN_SYS_ID}),
        ("false", True, "2", ADMIN_SYS_ID),
        (
            "true",
            False,
            "In Progress",
            {"display_value": "System Administrator", "link": ADMIN_LINK},
        ),
        ("true", True, "In Progress", "System Administrator"),
        (
            "all",
            False,
            {"display_value": "In Progress", "value": "2"},
            {"display_value": "System Administrator", "link": ADMIN_LINK, "value": ADMIN_SYS_ID},
        ),
        (
            "all",
            True,
            {"display_value": "In Progress", "value": "2"},
            {"display_value": "System Administrator", "value": ADMIN_SYS_ID},
        ),
    ],
)
def test_shapes_by_mode(
    store: Store, incident: dict[str, str], mode: str, exclude: bool, state: Any, opened_by: Any
) -> None:
    out = render(store, incident, display_value=mode, exclude_reference_link=exclude)
    assert out["state"] == state
    assert out["opened_by"] == opened_by
    assert set(out) == set(incident)


@pytest.mark.parametrize(
    ("mode", "exclude", "expected"),
    [
        ("false", False, ""),
        ("false", True, ""),
        ("true", False, ""),
        ("true", True, ""),
        ("all", False, {"display_value": "", "value": ""}),
        ("all", True, {"display_value": "", "value": ""}),
    ],
)
def test_empty_reference(
    store: Store, incident: dict[str, str], mode: str, exclude: bool, expected: Any
) -> None:
    out = render(store, incident, display_value=mode, exclude_reference_link=exclude)
    assert out["assigned_to"] == expected


def test_link_uses_the_referenced_table_and_display_field(store: Store) -> None:
    switch = store.insert("cmdb_ci_ip_switch", {"name": "sw-core"}, user="admin")
    inc = store.insert("incident", {"cmdb_ci": switch["sys_id"]}, user="admin")
    out = render(store, inc, display_value="all")
    assert out["cmdb_ci"] == {
        "display_value": "sw-core",
        "link": f"{BASE}/api/now/table/cmdb_ci/{switch['sys_id']}",
        "value": switch["sys_id"],
    }
    rel_type = "60bc4e22c0a8010e01f074cbe6bd73c3"
    rel = store.insert("cmdb_rel_ci", {"parent": switch["sys_id"], "type": rel_type}, user="admin")
    out = render(store, rel, "cmdb_rel_ci", display_value="true", exclude_reference_link=True)
    assert out["type"] == "Runs on::Runs" and out["parent"] == "sw-core"
    assert render(store, inc, display_value="all")["number"] == {
        "display_value": inc["number"],
        "value": inc["number"],
    }


def test_task_domain_is_global(store: Store, incident: dict[str, str]) -> None:
    assert render(store, incident, display_value="all", exclude_reference_link=True)[
        "sys_domain"
    ] == {"display_value": "global", "value": "global"}


def test_dangling_reference_displays_empty(store: Store) -> None:
    inc = store.insert("incident", {"caller_id": "0" * 32}, user="admin")
    assert render(store, inc, display_value="all", exclude_reference_link=True)["caller_id"] == {
        "display_value": "",
        "value": "0" * 32,
    }


def test_display_values_follow_updates(store: Store, incident: dict[str, str]) -> None:
    assert (
        render(store, incident, display_value="true", exclude_reference_link=True)["opened_by"]
        == "System Administrator"
    )
    store.update("sys_user", ADMIN_SYS_ID, {"name": "Root"}, user="admin")
    assert (
        render(store, incident, display_value="true", exclude_reference_link=True)["opened_by"]
        == "Root"
    )


def test_fields_select_order_and_ignore_unknown_names(
    store: Store, incident: dict[str, str]
) -> None:
    out = render(store, incident, fields=["sys_id", " number ", "bogus", "", "number", "state"])
    assert list(out) == ["sys_id", "number", "state"]
    assert render(store, incident, fields=[""]) == render(store, incident)  # empty means all


def test_dot_walked_fields_are_flat_keys(store: Store, incident: dict[str, str]) -> None:
    out = render(
        store,
        incident,
        display_value="all",
        exclude_reference_link=True,
        fields=[
            "sys_id",
            "opened_by.email",
            "opened_by.manager",
            "caller_id.email",
            "opened_by.bogus",
            "short_description.x",
        ],
    )
    assert out["opened_by.email"] == {
        "display_value": "admin@example.com",
        "value": "admin@example.com",
    }
    assert out["opened_by.manager"] == {"display_value": "", "value": ""}  # a reference, empty
    assert out["caller_id.email"] == {"display_value": "", "value": ""}  # empty on the way
    assert "opened_by.bogus" not in out and "short_description.x" not in out
    assert (
        render_record(
            incident, "incident", store.schema(), base_url=BASE, fields=["opened_by.email"]
        )
        == {}
    )  # no store: cannot walk


def test_display_value_mode_is_case_insensitive_and_defaults_to_false(
    store: Store, incident: dict[str, str]
) -> None:
    assert render(store, incident, display_value="True")["state"] == "In Progress"
    assert render(store, incident, display_value="bogus")["state"] == "2"


def test_parent_table_rendering_uses_parent_columns(store: Store) -> None:
    sw = store.insert("cmdb_ci_ip_switch", {"name": "a", "ports": "8"}, user="admin")
    rows, _ = store.list("cmdb_ci")
    out = render_records(
        rows, "cmdb_ci", store.schema(), base_url=BASE, display_value="all", store=store
    )
    assert out[0]["sys_class_name"] == {
        "display_value": "IP Switch",
        "value": "cmdb_ci_ip_switch",
    }
    assert "ports" not in out[0]
    assert out[0]["operational_status"] == {"display_value": "Operational", "value": "1"}
    assert sw["ports"] == "8"
