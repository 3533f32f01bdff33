"""Shared pieces of the reliability and security drills (issue 9).

Every drill has a fast variant (part of ``make test``) and a long one marked ``@pytest.mark.drill``
that only runs with ``--run-drills`` (``make drill``). The helpers below are fixtures because the
test directory is collected in importlib mode (no package, no helper imports): a drill asks for
``drill`` and gets the sizes for its variant plus the state-comparison helpers.

The comparison reads the embedded instance's store directly (``sb.store``), never through the
faulty HTTP path, so "what the CMDB holds" cannot be disturbed by the faults under test.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

SID = "u_unifi_source_id"
LOCATION_TABLE = "cmn_location"


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--run-drills`` (also registered by tests/conftest.py so ``pytest tests`` knows it)."""
    with contextlib.suppress(ValueError):  # already added by the root conftest
        parser.addoption(
            "--run-drills",
            action="store_true",
            default=False,
            help="run the long reliability drills (make drill)",
        )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``drill`` marker (the suite runs with ``--strict-markers``)."""
    config.addinivalue_line(
        "markers", "drill: long reliability/security drill; runs only with --run-drills"
    )


def run_drills(config: pytest.Config) -> bool:
    """Whether ``--run-drills`` was given (False when the option is unknown)."""
    try:
        return bool(config.getoption("--run-drills"))
    except ValueError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the long variants unless ``--run-drills``; ``make drill`` adds ``-m drill``."""
    if run_drills(config):
        return
    skip = pytest.mark.skip(reason="long drill: run with --run-drills (make drill)")
    for item in items:
        if item.get_closest_marker("drill") is not None:
            item.add_marker(skip)


# ---------------------------------------------------------------------------------------------
# expected vs actual CMDB state
# ---------------------------------------------------------------------------------------------


@dataclass
class StateDiff:
    """How the CMDB differs from what the transform asked for (all zero = exact)."""

    expected_records: int = 0
    expected_links: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    field_mismatches: list[str] = field(default_factory=list)
    links_missing: list[tuple[str, str, str]] = field(default_factory=list)
    links_duplicated: list[tuple[str, str, str]] = field(default_factory=list)
    links_unexpected: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.unexpected
            or self.field_mismatches
            or self.links_missing
            or self.links_duplicated
            or self.links_unexpected
        )

    def summary(self) -> str:
        parts = [
            f"{name}={len(getattr(self, name))} {getattr(self, name)[:3]}"
            for name in (
                "lost",
                "duplicated",
                "unexpected",
                "field_mismatches",
                "links_missing",
                "links_duplicated",
                "links_unexpected",
            )
            if getattr(self, name)
        ]
        return "exact" if not parts else "; ".join(parts)


def _all_rows(store: Any, table: str, query: str) -> list[dict[str, str]]:
    rows, _total = store.list(table, query, limit=-1)
    return rows


def compare_state(store: Any, result: Any) -> StateDiff:
    """Compare the embedded instance's CMDB with a ``TransformResult`` (records + links)."""
    diff = StateDiff(expected_records=len(result.records), expected_links=len(result.relationships))
    held: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
    for table in (LOCATION_TABLE, "cmdb_ci"):
        for row in _all_rows(store, table, f"{SID}ISNOTEMPTY"):
            held[row[SID]].append(row)
    wanted = {r.source_id: r for r in result.records}
    diff.lost = sorted(set(wanted) - set(held))
    diff.unexpected = sorted(set(held) - set(wanted))
    diff.duplicated = sorted(sid for sid, rows in held.items() if len(rows) > 1)
    sys_to_sid: dict[str, str] = {}
    for sid, rows in held.items():
        for row in rows:
            sys_to_sid[row["sys_id"]] = sid
    # manufacturer references core_company: the record's vendor name is that company's name
    makers = {
        row["sys_id"]: row.get("name", "")
        for row in _all_rows(store, "core_company", "")
        if row.get("manufacturer") == "true"
    }
    for sid, record in wanted.items():
        rows = held.get(sid)
        if not rows:
            continue
        row = rows[0]
        for name, value in record.values.items():
            have = row.get(name, "")
            if name == "manufacturer":
                have = makers.get(have, "?" + have)
            if have != value:
                diff.field_mismatches.append(f"{sid}.{name}")
        if record.table != LOCATION_TABLE and row.get("sys_class_name") != record.table:
            diff.field_mismatches.append(f"{sid}.sys_class_name")
        for name, target in record.references.items():
            if sys_to_sid.get(row.get(name, "")) != target:
                diff.field_mismatches.append(f"{sid}.{name}->{target}")
    type_names = {
        row["sys_id"]: row.get("name", "") for row in _all_rows(store, "cmdb_rel_type", "")
    }
    links: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for row in _all_rows(store, "cmdb_rel_ci", ""):
        parent = sys_to_sid.get(row.get("parent", ""), "?" + row.get("parent", ""))
        child = sys_to_sid.get(row.get("child", ""), "?" + row.get("child", ""))
        links[(parent, child, type_names.get(row.get("type", ""), "?"))] += 1
    want_links = collections.Counter(
        (r.parent_source_id, r.child_source_id, r.type_name)
        for r in result.relationships
        if r.parent_source_id in wanted and r.child_source_id in wanted  # orphans are reported
    )
    diff.expected_links = sum(want_links.values())
    diff.links_missing = sorted(set(want_links) - set(links))
    diff.links_unexpected = sorted(set(links) - set(want_links))
    diff.links_duplicated = sorted(k for k, n in links.items() if n > max(1, want_links.get(k, 1)))
    return diff


def record_figures(name: str, **figures: Any) -> None:
    """Print one ``DRILL-FIGURES`` JSON line (``-s`` shows it) and append it to the file named
    by ``$SNOWKIT_DRILL_FIGURES`` if set: the source of the table in docs/reliability.md."""
    import json

    line = json.dumps({"drill": name, **figures}, sort_keys=True, default=str)
    print("DRILL-FIGURES " + line)
    target = os.environ.get("SNOWKIT_DRILL_FIGURES")
    if target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


# ---------------------------------------------------------------------------------------------
# sandbox and clients
# ---------------------------------------------------------------------------------------------


def no_sleep(_seconds: float) -> None:
    """Injected into clients: back-offs and Retry-After waits cost no wall time."""


def admin_client(sb: Any, **kw: Any) -> Any:
    from snowkit.credentials import CredentialManager
    from snowkit.servicenow import ServiceNowAPIClient

    creds = CredentialManager.static(basic=("admin", sb.users["admin"]))
    kw.setdefault("sleep", no_sleep)
    return ServiceNowAPIClient(sb.url, creds, verify=str(sb.ca_path), **kw)


def setup_schema(sb: Any) -> None:
    """Create the source-id fields (an admin's one-off `snowkit setup`) before the faults."""
    from snowkit.cmdb.schema import ensure_schema

    with admin_client(sb) as client:
        ensure_schema(client)


@pytest.fixture
def sandbox() -> Iterator[Any]:
    """A fresh in-memory embedded instance with the source-id fields set up."""
    from snowkit.sandbox import Sandbox

    with Sandbox.start() as sb:
        setup_schema(sb)
        yield sb


def lab_result(sb: Any, lab: Any) -> tuple[Any, Any]:
    """(inventory, transform result) of a generated lab, collected through the sandbox mount."""
    from snowkit.cmdb.job import Connection, collect_inventory
    from snowkit.cmdb.transform import transform

    inventory = collect_inventory("lab", lab=lab, connection=Connection(None, sb, str(sb.ca_path)))
    return inventory, transform(inventory)


@contextlib.contextmanager
def reaped(proc: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    """Always kill and wait for a subprocess (its whole process group) when the block ends."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drill:
    """The variant being run (``long``) and the helpers above (fixture ``drill``)."""

    long: bool

    def size(self, fast: Any, long: Any) -> Any:
        return long if self.long else fast

    compare = staticmethod(compare_state)
    figures = staticmethod(record_figures)
    admin_client = staticmethod(admin_client)
    setup_schema = staticmethod(setup_schema)
    lab_result = staticmethod(lab_result)
    reaped = staticmethod(reaped)
    no_sleep = staticmethod(no_sleep)


@pytest.fixture
def drill(request: pytest.FixtureRequest) -> Drill:
    """Fast sizes unless this test is a ``@pytest.mark.drill`` long variant."""
    return Drill(long=request.node.get_closest_marker("drill") is not None)
